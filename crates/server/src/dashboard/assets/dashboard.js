// fluxgate dashboard: renders the snapshots /dashboard/events sends. No framework; data
// goes into the page as text only.
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function ms(value) {
  if (value === null || value === undefined) return "–";
  return (value / 1000).toFixed(3) + " s";
}

function replaceRows(table, rows) {
  const body = table.querySelector("tbody");
  body.replaceChildren(...rows);
}

function renderAgents(agents) {
  replaceRows(document.getElementById("agents"), agents.map((agent) => {
    const since = agent.connected
      ? el("td", { class: "yes" }, agent.connected_since || "connected")
      : el("td", { class: "no" }, "disconnected" + (agent.last_seen_at ? " (last seen " + agent.last_seen_at + ")" : ""));
    let sync = el("td", { class: "note" }, "–");
    if (agent.last_sync) {
      const s = agent.last_sync;
      sync = el("td", { class: s.stage === "applied" ? "yes" : "failed" },
        s.stage + " seq " + s.seq + " " + s.at,
        s.message ? el("span", { class: "detail" }, s.message) : null);
    }
    return el("tr", { "data-agent": agent.name, "data-connected": agent.connected ? "yes" : "no" },
      el("td", {}, agent.name),
      el("td", {}, agent.clusters.join(", ") || "–"),
      el("td", {}, agent.replicas.join(", ") || "–"),
      since,
      el("td", {}, String(agent.cursor)),
      el("td", {}, String(agent.lag)),
      sync);
  }));
}

function renderLatency(latency) {
  replaceRows(document.getElementById("latency"), latency.map((row) =>
    el("tr", { "data-stage": row.stage },
      el("td", {}, row.stage),
      el("td", {}, String(row.samples)),
      el("td", {}, ms(row.p50_ms)),
      el("td", {}, ms(row.p90_ms)),
      el("td", {}, ms(row.p99_ms)))));
}

function renderPush(push) {
  const title = el("h3", {},
    el("b", {}, "seq " + push.seq), " " + push.kind + " ",
    el("b", {}, push.project), " " + (push.ref || "(every ref)") + " ",
    el("span", { class: "mono" }, push.after), " · received " + push.received_at);
  const rows = [];
  for (const cluster of push.clusters) {
    rows.push(el("tr", { "data-agent": cluster.agent },
      el("td", {}, cluster.agent),
      ...cluster.stages.map((cell) => el("td", { class: "stage-" + cell.state, "data-stage": cell.stage, "data-state": cell.state },
        cell.stage + (cell.after_push_ms !== undefined ? " +" + ms(cell.after_push_ms) : ""),
        cell.note ? el("span", { class: "detail" }, cell.note) : null))));
    if (cluster.failure) {
      rows.push(el("tr", { class: "failure", "data-agent": cluster.agent },
        el("td", { colspan: "5" },
          cluster.failure.stage + (cluster.failure.object ? " " + cluster.failure.object : "") + ": " + cluster.failure.message)));
    }
  }
  if (rows.length === 0) {
    rows.push(el("tr", {}, el("td", { class: "note", colspan: "5" }, "no agent has reported this push yet")));
  }
  return el("div", { class: "push", "data-seq": String(push.seq) }, title, el("table", {}, el("tbody", {}, ...rows)));
}

function render(snapshot, version) {
  document.getElementById("head").textContent = "log head " + snapshot.head;
  renderAgents(snapshot.agents);
  renderLatency(snapshot.latency);
  document.getElementById("pushes").replaceChildren(...snapshot.pushes.map(renderPush));
  document.getElementById("truncated").hidden = !snapshot.records_truncated;
  document.body.dataset.version = version;
}

function setStatus(state, text) {
  const status = document.getElementById("status");
  status.dataset.state = state;
  status.textContent = text;
}

function connect() {
  const source = new EventSource("/dashboard/events");
  source.addEventListener("open", () => setStatus("live", "live"));
  source.addEventListener("snapshot", (event) => {
    setStatus("live", "live");
    render(JSON.parse(event.data), event.lastEventId);
  });
  source.addEventListener("problem", (event) => setStatus("lost", "broker: " + event.data));
  source.addEventListener("error", () => {
    if (source.readyState === EventSource.CLOSED) {
      // Refused (the session ended) or the broker went: the page decides.
      setStatus("lost", "disconnected; reload the page");
    } else {
      setStatus("lost", "reconnecting…");
    }
  });
}

document.addEventListener("DOMContentLoaded", connect);
