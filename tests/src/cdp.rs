//! A real headless Chromium, driven over the Chrome DevTools Protocol: enough to load a
//! page, type into it, read it back with JavaScript and take a screenshot.
//!
//! [`Browser::launch`] starts `chromium --headless=new --remote-debugging-port=0` with a
//! fresh profile and reads the DevTools address from its stderr; [`Browser::page`] attaches
//! to its first tab over a WebSocket. Each command waits for its answer (events are
//! ignored) within [`COMMAND_TIMEOUT`]. Chromium is found as `$FLUXGATE_CHROMIUM`, then
//! `chromium` or `chromium-browser` on `PATH`; if it is missing, launching panics saying
//! how to install it: the dashboard's browser test never skips.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long one DevTools command may take.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Chromium may take to start listening.
const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);

/// A running headless Chromium; killed when dropped.
pub struct Browser {
    child: Child,
    /// `ws://127.0.0.1:<port>/devtools/browser/<id>`.
    browser_url: String,
    port: u16,
    stderr: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
    _profile: tempfile::TempDir,
}

/// One tab.
pub struct Page {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
    next_id: u64,
}

/// Where Chromium is, or a panic that says how to install it.
pub fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("FLUXGATE_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "Chromium is not installed: the dashboard test drives a real headless browser. \
         Install it with `apt-get install chromium` (Debian, Ubuntu: `chromium-browser`), \
         or point FLUXGATE_CHROMIUM at a Chromium or Chrome binary."
    );
}

impl Browser {
    /// Starts a headless Chromium with an empty profile and a `width`×`height` window.
    pub async fn launch(width: u32, height: u32) -> Self {
        let binary = chromium();
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut child = Command::new(&binary)
            .args([
                "--headless=new",
                "--remote-debugging-port=0",
                "--remote-debugging-address=127.0.0.1",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--hide-scrollbars",
                &format!("--window-size={width},{height}"),
                &format!("--user-data-dir={}", profile.path().display()),
                "about:blank",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
        let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let stderr = std::sync::Arc::new(parking_lot::Mutex::new(Vec::new()));
        let browser_url = tokio::time::timeout(LAUNCH_TIMEOUT, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(url) = line.strip_prefix("DevTools listening on ") {
                    return Some(url.trim().to_owned());
                }
                stderr.lock().push(line);
            }
            None
        })
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| {
            panic!(
                "{} did not say where DevTools listen within {LAUNCH_TIMEOUT:?}; stderr:\n{}",
                binary.display(),
                stderr.lock().join("\n")
            )
        });
        // Keep draining stderr so that Chromium never blocks on it.
        let kept = stderr.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut kept = kept.lock();
                if kept.len() < 1000 {
                    kept.push(line);
                }
            }
        });
        let port = browser_url
            .strip_prefix("ws://")
            .and_then(|rest| rest.split('/').next())
            .and_then(|authority| authority.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .unwrap_or_else(|| panic!("no port in the DevTools address {browser_url:?}"));
        Self {
            child,
            browser_url,
            port,
            stderr,
            _profile: profile,
        }
    }

    /// Chromium's stderr so far (for failure messages).
    pub fn stderr(&self) -> String {
        self.stderr.lock().join("\n")
    }

    /// The first tab.
    pub async fn page(&self) -> Page {
        let targets: Value = reqwest::get(format!("http://127.0.0.1:{}/json/list", self.port))
            .await
            .expect("DevTools answers /json/list")
            .json()
            .await
            .expect("a JSON list of targets");
        let url = targets
            .as_array()
            .and_then(|targets| {
                targets
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            })
            .unwrap_or_else(|| panic!("no page among the targets: {targets}"))
            .to_owned();
        let (socket, _) = tokio_tungstenite::connect_async(url.as_str())
            .await
            .expect("the page's DevTools WebSocket");
        Page { socket, next_id: 0 }
    }

    /// Closes the browser (through DevTools, so that its helper processes go with it).
    pub async fn close(mut self) {
        if let Ok((mut socket, _)) =
            tokio_tungstenite::connect_async(self.browser_url.as_str()).await
        {
            let close = json!({"id": 1, "method": "Browser.close"}).to_string();
            let _ = socket.send(Message::text(close)).await;
        }
        if tokio::time::timeout(Duration::from_secs(5), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

impl Page {
    /// Sends one command and returns its `result`; panics on an error answer.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let command = json!({"id": id, "method": method, "params": params}).to_string();
        self.socket
            .send(Message::text(command))
            .await
            .unwrap_or_else(|err| panic!("DevTools {method}: {err}"));
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, async {
            while let Some(message) = self.socket.next().await {
                let message = message.unwrap_or_else(|err| panic!("DevTools {method}: {err}"));
                let Message::Text(text) = message else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).expect("DevTools sends JSON");
                if value["id"] == id {
                    return value;
                }
            }
            panic!("DevTools closed the connection during {method}");
        })
        .await
        .unwrap_or_else(|_| panic!("DevTools {method} took over {COMMAND_TIMEOUT:?}"));
        if let Some(error) = answer.get("error") {
            panic!("DevTools {method} failed: {error}");
        }
        answer["result"].clone()
    }

    /// Loads `url` and waits until the document has loaded.
    pub async fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({"url": url})).await;
        if let Some(error) = result.get("errorText") {
            panic!("cannot load {url}: {error}");
        }
        self.wait_for(
            "document.readyState === 'complete'",
            COMMAND_TIMEOUT,
            "the page loaded",
        )
        .await;
    }

    /// The value of a JavaScript expression (promises awaited); panics if it throws.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy (a navigation in between is retried), or
    /// panics after `patience` naming `what` and the page's text.
    pub async fn wait_for(&mut self, expression: &str, patience: Duration, what: &str) -> Value {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let result = self
                .call(
                    "Runtime.evaluate",
                    json!({"expression": expression, "returnByValue": true}),
                )
                .await;
            let value = result["result"]["value"].clone();
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if result.get("exceptionDetails").is_none() && truthy {
                return value;
            }
            if tokio::time::Instant::now() > deadline {
                let text = self
                    .call(
                        "Runtime.evaluate",
                        json!({"expression": "document.body ? document.body.innerText : ''", "returnByValue": true}),
                    )
                    .await;
                panic!(
                    "{what}: not within {patience:?} ({expression}); the page shows:\n{}",
                    text["result"]["value"].as_str().unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A PNG of the whole page.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        let result = self
            .call(
                "Page.captureScreenshot",
                json!({"format": "png", "captureBeyondViewport": true}),
            )
            .await;
        base64::engine::general_purpose::STANDARD
            .decode(result["data"].as_str().expect("screenshot data"))
            .expect("base64 PNG")
    }
}
