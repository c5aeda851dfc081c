//! The listeners: one accept loop, built on hyper, for the HTTP port (hooks, admin API),
//! the agent port (gRPC over HTTP/2), the operations port and, when enabled, GitLab KAS's
//! internal API port (gRPC over HTTP/2).
//!
//! Every accepted socket gets TCP_NODELAY, an optional TLS handshake with a deadline
//! ([`tls`]), and hyper with the limits of [`limits`]: a cap on connections, a deadline
//! for the request head (HTTP/1) or for the preface and first request (HTTP/2), an idle
//! timeout, HTTP/2 keepalive pings. A client cannot hold a slot for long without sending
//! requests, so idle or slow sockets cannot starve hooks, agents or `/readyz`.
//!
//! [`spawn`] returns a task that ends once the listener has stopped: when its token is
//! cancelled it stops accepting, asks every connection to finish (HTTP/1: after the
//! response in progress; HTTP/2: GOAWAY, open streams run to their end) and waits for
//! them. The broker cancels the agent, HTTP and operations tokens in that order.

mod connection;
mod grid_timer;
pub mod limits;
pub mod tls;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use hyper::body::{Body, Incoming};
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::Service;

use crate::config::Config;
use crate::metric_names;
pub use limits::Limits;
pub use tls::{ReloadingTls, TlsFiles};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// HTTP/2 PING interval on agent connections, at most: the agent listener pings at the
/// stream keepalive interval when that is shorter, so that a connection lost without a
/// close (a cable, a dead node) ends its stream, and the agent shows as disconnected,
/// within one keepalive and a PING timeout.
const AGENT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a PING may go unanswered before the connection is closed.
const AGENT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one "connection cap reached" warning per listener this often.
const CAP_WARNING_INTERVAL: Duration = Duration::from_secs(60);
/// Pause after a failed accept (such as EMFILE), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The HTTP protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    /// HTTP/2 only (gRPC), with keepalive pings.
    Http2 {
        keepalive_interval: Duration,
        keepalive_timeout: Duration,
    },
}

/// How one listener serves.
pub struct Settings {
    /// `http`, `agent` or `metrics`: in logs, metrics and configuration keys.
    pub name: &'static str,
    pub protocol: Protocol,
    pub limits: Limits,
    pub tls: Option<ReloadingTls>,
}

/// What the listeners serve: a service from hyper requests to HTTP responses that never
/// fails (errors are responses), shared by every connection.
pub trait HttpService<B>:
    Service<Request<Incoming>, Response = Response<B>, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + 'static
{
}

impl<T, B> HttpService<B> for T where
    T: Service<
            Request<Incoming>,
            Response = Response<B>,
            Error = Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// A response body the listeners can send.
pub trait ResponseBody: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

impl<T> ResponseBody for T where T: Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static {}

/// File descriptors the broker keeps for itself beyond its connections (database, Redis,
/// logs, TLS files).
const RESERVED_DESCRIPTORS: u64 = 256;

/// Raises the open-file limit to what the connection caps need (up to the hard limit), and
/// says so loudly when even the hard limit is too low: at the limit, accepting fails for
/// every listener at once (hooks, agents and `/readyz` alike), which the caps exist to
/// prevent.
fn check_file_limit(config: &Config) {
    let kas = if config.kas_secret_file.is_some() {
        config.kas_max_connections
    } else {
        0
    };
    let wanted = (config.http_max_connections
        + config.agent_max_connections
        + config.metrics_max_connections
        + kas) as u64
        + RESERVED_DESCRIPTORS;
    match rlimit::increase_nofile_limit(wanted) {
        Ok(limit) if limit < wanted => tracing::warn!(
            limit,
            wanted,
            "the open-file limit is below what the connection caps allow: lower \
             http_max_connections / agent_max_connections, or raise the limit (ulimit -n)"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!(%error, "cannot read or raise the open-file limit"),
    }
}

/// The settings of the broker's listeners, from its configuration.
pub struct Plan {
    pub http: Settings,
    pub agent: Settings,
    pub metrics: Settings,
    /// GitLab KAS's internal API (gRPC, no TLS); used only when it is enabled.
    pub kas: Settings,
}

impl Plan {
    /// Reads the TLS files (an error stops the start) and starts watching them until
    /// `stop_reloading`.
    pub fn from_config(config: &Config, stop_reloading: CancellationToken) -> anyhow::Result<Self> {
        validate(config)?;
        check_file_limit(config);
        let limits = |max_connections| Limits {
            max_connections,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            tls_handshake_timeout: config.tls_handshake_timeout,
        };
        let tls = |files: Option<TlsFiles>, alpn: &[&[u8]]| {
            files
                .map(|files| {
                    ReloadingTls::start(
                        files,
                        alpn,
                        config.tls_reload_interval,
                        stop_reloading.clone(),
                    )
                })
                .transpose()
        };
        let http11: &[&[u8]] = &[b"http/1.1"];
        let http_files = TlsFiles::from_keys(
            "http",
            config.http_tls_cert_file.as_deref(),
            config.http_tls_key_file.as_deref(),
            None,
        )?;
        let agent_files = TlsFiles::from_keys(
            "agent",
            config.agent_tls_cert_file.as_deref(),
            config.agent_tls_key_file.as_deref(),
            config.agent_tls_client_ca_file.as_deref(),
        )?;
        let metrics_files = TlsFiles::from_keys(
            "metrics",
            config.metrics_tls_cert_file.as_deref(),
            config.metrics_tls_key_file.as_deref(),
            None,
        )?;
        Ok(Self {
            http: Settings {
                name: "http",
                protocol: Protocol::Http1,
                limits: limits(config.http_max_connections),
                tls: tls(http_files, http11)?,
            },
            agent: Settings {
                name: "agent",
                protocol: Protocol::Http2 {
                    keepalive_interval: AGENT_KEEPALIVE_INTERVAL.min(config.keepalive_interval),
                    keepalive_timeout: AGENT_KEEPALIVE_TIMEOUT,
                },
                limits: limits(config.agent_max_connections),
                tls: tls(agent_files, &[b"h2"])?,
            },
            metrics: Settings {
                name: "metrics",
                protocol: Protocol::Http1,
                limits: limits(config.metrics_max_connections),
                tls: tls(metrics_files, http11)?,
            },
            kas: Settings {
                name: "kas",
                protocol: Protocol::Http2 {
                    keepalive_interval: AGENT_KEEPALIVE_INTERVAL,
                    keepalive_timeout: AGENT_KEEPALIVE_TIMEOUT,
                },
                limits: limits(config.kas_max_connections),
                tls: None,
            },
        })
    }
}

/// Rejects limits that would make a listener unusable, naming the key.
fn validate(config: &Config) -> anyhow::Result<()> {
    let counts = [
        ("http_max_connections", config.http_max_connections),
        ("agent_max_connections", config.agent_max_connections),
        ("metrics_max_connections", config.metrics_max_connections),
        ("kas_max_connections", config.kas_max_connections),
    ];
    for (key, value) in counts {
        anyhow::ensure!(value > 0, "{key} must be at least 1");
    }
    let durations = [
        ("header_read_timeout", config.header_read_timeout),
        ("idle_timeout", config.idle_timeout),
        ("tls_handshake_timeout", config.tls_handshake_timeout),
        ("tls_reload_interval", config.tls_reload_interval),
    ];
    for (key, value) in durations {
        anyhow::ensure!(!value.is_zero(), "{key} must be longer than zero");
    }
    Ok(())
}

/// Serves `service` on `listener` until `shutdown`, then drains (see the module's doc), in a
/// task of its own (the tests' shape; the broker supervises [`serve`] itself).
#[cfg(test)]
pub fn spawn<S, B>(
    listener: TcpListener,
    service: S,
    settings: Settings,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    S: HttpService<B>,
    B: ResponseBody,
{
    tokio::spawn(serve(listener, service, settings, shutdown))
}

/// Serves `service` on `listener` until `shutdown`, then drains: the future to run (and
/// supervise) in a task of the caller's.
pub fn serve<S, B>(
    listener: TcpListener,
    service: S,
    settings: Settings,
    shutdown: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static
where
    S: HttpService<B>,
    B: ResponseBody,
{
    accept_loop(listener, service, Arc::new(settings), shutdown)
}

async fn accept_loop<S, B>(
    listener: TcpListener,
    service: S,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
) where
    S: HttpService<B>,
    B: ResponseBody,
{
    let name = settings.name;
    let max = settings.limits.max_connections.max(1);
    let slots = Arc::new(Semaphore::new(max));
    let connections = TaskTracker::new();
    let open = metrics::gauge!(metric_names::LISTENER_CONNECTIONS, "listener" => name);
    let mut last_cap_warning: Option<tokio::time::Instant> = None;
    loop {
        if slots.available_permits() == 0 {
            metrics::counter!(metric_names::LISTENER_AT_CAPACITY, "listener" => name).increment(1);
            if last_cap_warning.is_none_or(|at| at.elapsed() >= CAP_WARNING_INTERVAL) {
                last_cap_warning = Some(tokio::time::Instant::now());
                tracing::warn!(
                    listener = name,
                    max_connections = max,
                    "connection cap reached; new connections wait in the backlog until one \
                     closes"
                );
            }
        }
        let slot = tokio::select! {
            () = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => break,
            },
        };
        let accepted = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(listener = name, %error, "cannot accept a connection");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => continue,
                }
            }
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(listener = name, %peer, %error, "cannot set TCP_NODELAY");
        }
        open.set((max - slots.available_permits()) as f64);
        let slots = slots.clone();
        let open = open.clone();
        let connection = connection::serve(
            tcp,
            peer,
            service.clone(),
            settings.clone(),
            shutdown.clone(),
            slot,
        );
        connections.spawn(async move {
            connection.await;
            // The slot was released when the connection's future ended.
            open.set((max - slots.available_permits()) as f64);
        });
    }
    drop(listener);
    connections.close();
    tracing::debug!(
        listener = name,
        open = connections.len(),
        "stopped accepting; draining connections"
    );
    connections.wait().await;
    open.set(0.0);
}

#[cfg(test)]
mod tests;
