//! Watch streams: chunked JSON lines `{"type", "object"}` from a `resourceVersion`, with
//! periodic bookmarks, a timeout, and `410 Expired` when the history no longer reaches back.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::Shared;
use super::resources::ResourceType;
use super::selector::{FieldSelector, LabelSelector};
use super::status::ApiError;
use super::store::ChangeEvent;

/// What a watch asked for.
pub struct WatchRequest {
    pub resource: ResourceType,
    pub version: String,
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// `None` or `"0"`: start with the current objects as `ADDED` events.
    pub resource_version: Option<String>,
    pub bookmarks: bool,
    pub timeout: Duration,
}

impl WatchRequest {
    fn wants(&self, event: &ChangeEvent) -> bool {
        event.group == self.resource.group
            && event.plural == self.resource.plural
            && self.wants_object(&event.object)
    }

    fn wants_object(&self, object: &Value) -> bool {
        let in_namespace = self.namespace.as_deref().is_none_or(|ns| {
            !self.resource.namespaced || object["metadata"]["namespace"].as_str() == Some(ns)
        });
        in_namespace && self.labels.matches_object(object) && self.fields.matches_object(object)
    }

    fn line(&self, event_type: &str, mut object: Value) -> Bytes {
        object["apiVersion"] = json!(self.resource.api_version(&self.version));
        let mut line = serde_json::to_vec(&json!({"type": event_type, "object": object}))
            .expect("JSON values serialise");
        line.push(b'\n');
        Bytes::from(line)
    }

    fn bookmark(&self, resource_version: u64) -> Bytes {
        let object = json!({
            "kind": self.resource.kind,
            "metadata": {"resourceVersion": resource_version.to_string()},
        });
        self.line("BOOKMARK", object)
    }
}

fn error_line(error: &ApiError) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": error.to_status()}))
        .expect("JSON values serialise");
    line.push(b'\n');
    Bytes::from(line)
}

/// Starts a watch: the body streams until the timeout, `end_all_watches`, an error, or
/// the client going away.
pub fn serve(shared: Arc<Shared>, request: WatchRequest) -> Result<Body, ApiError> {
    let start_from =
        match request.resource_version.as_deref() {
            None | Some("" | "0") => None,
            Some(text) => Some(text.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!("invalid resource version: {text:?}"))
            })?),
        };
    let (first_lines, live, start_rv, mut epoch) = {
        let state = shared.state.lock();
        let mut lines = Vec::new();
        match start_from {
            None => {
                for object in state.list(
                    &request.resource,
                    &request.version,
                    request.namespace.as_deref(),
                    &request.labels,
                    &request.fields,
                ) {
                    lines.push(request.line("ADDED", object));
                }
            }
            Some(from) => match state.events_since(from) {
                Ok(events) => {
                    for event in events.into_iter().filter(|e| request.wants(e)) {
                        lines.push(request.line(event.event_type.as_str(), event.object));
                    }
                }
                Err(expired) => lines.push(error_line(&expired)),
            },
        }
        let expired = start_from.is_some_and(|from| state.events_since(from).is_err());
        let live = (!expired).then(|| state.subscribe());
        (
            lines,
            live,
            state.resource_version(),
            state.watch_epoch.subscribe(),
        )
    };
    let (sender, receiver) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    let bookmark_interval = shared.options.bookmark_interval;
    tokio::spawn(async move {
        for line in first_lines {
            if sender.send(Ok(line)).await.is_err() {
                return;
            }
        }
        let Some(mut live) = live else {
            return;
        };
        epoch.mark_unchanged();
        let deadline = tokio::time::Instant::now() + request.timeout;
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + bookmark_interval,
            bookmark_interval,
        );
        let mut sent_up_to = start_rv;
        loop {
            let (lines, ends): (Vec<Bytes>, bool) = tokio::select! {
                () = tokio::time::sleep_until(deadline) => return,
                _ = epoch.changed() => return,
                () = sender.closed() => return,
                event = live.recv() => match event {
                    Ok(event) => (forward(&request, &mut sent_up_to, vec![event]), false),
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        // This watch fell too far behind: like an API server that
                        // cannot serve it from its cache any more, send 410 and end.
                        (vec![error_line(&ApiError::expired(sent_up_to))], true)
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                _ = ticker.tick(), if request.bookmarks => {
                    // Changes are broadcast under the lock, so after draining under the lock
                    // every event up to the current resourceVersion has been seen.
                    let (pending, current) = {
                        let state = shared.state.lock();
                        let mut pending = Vec::new();
                        while let Ok(event) = live.try_recv() {
                            pending.push(event);
                        }
                        (pending, state.resource_version())
                    };
                    let mut lines = forward(&request, &mut sent_up_to, pending);
                    sent_up_to = sent_up_to.max(current);
                    lines.push(request.bookmark(sent_up_to));
                    (lines, false)
                }
            };
            for line in lines {
                if sender.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            if ends {
                return;
            }
        }
    });
    Ok(Body::from_stream(ReceiverStream::new(receiver)))
}

fn forward(request: &WatchRequest, sent_up_to: &mut u64, events: Vec<ChangeEvent>) -> Vec<Bytes> {
    let mut lines = Vec::new();
    for event in events {
        if event.resource_version <= *sent_up_to {
            continue;
        }
        *sent_up_to = event.resource_version;
        if request.wants(&event) {
            lines.push(request.line(event.event_type.as_str(), event.object));
        }
    }
    lines
}
