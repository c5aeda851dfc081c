//! The connection to the broker, as an explicit state machine that reconnects forever.
//!
//! ```text
//!            connect ok                 session ends
//! Disconnected ───────────► Connected ───────────────► Disconnected(delay)
//!      ▲  │ connect fails                                   │
//!      │  └──────────► Disconnected(next backoff)           │
//!      └────────────────────── after delay ─────────────────┘
//! ```
//!
//! Delays come from one [`Backoff`] (jittered, doubling up to `reconnect.max_backoff`):
//!
//! - A stream the broker had welcomed that then closed cleanly, or failed with
//!   `UNAVAILABLE` or `RESOURCE_EXHAUSTED` (a replica draining or shedding load), was
//!   healthy: the backoff starts over, so the agent is back within about
//!   `initial_backoff`.
//! - `UNAUTHENTICATED` or `PERMISSION_DENIED`: the token is wrong, revoked or rotated.
//!   This is logged as an error, and the agent keeps retrying at the maximum delay.
//! - Anything else (connect failures, other statuses, protocol errors, silence): the next
//!   backoff step.
//!
//! The dispatcher and its receiver workers live across states, so deliveries continue
//! while the agent reconnects; the cursor too, so the next Hello resumes after it.

use std::sync::Arc;
use std::time::Duration;

use fluxgate_core::Backoff;
use fluxgate_proto::v1::agent_service_client::AgentServiceClient;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::metadata::AsciiMetadataValue;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity as TlsIdentity};

use crate::config::{AgentConfig, BrokerTls};
use crate::cursor::Cursor;
use crate::dispatch::Dispatcher;
use crate::kubernetes::sync_watch::SyncReports;
use crate::readiness::Readiness;
use crate::receiver::ReceiverSet;
use crate::session::{self, EndReason, SessionContext, SessionEnd};
use crate::wire::Identity;

/// TCP (and TLS) connect deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive on the broker connection. The agent sends no HTTP/2 PINGs of its own:
/// the broker sends a keepalive on every stream (and PINGs it) every `keepalive_seconds`,
/// so a dead broker shows as silence, which ends the session after three keepalives
/// (`session::MISSED_KEEPALIVES`); a PING from every agent would cost each broker a read
/// and a write per agent for nothing more.
const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// Why the connection cannot even be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    #[error("broker address {address:?}: {source}")]
    Address {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the agent token cannot be sent as gRPC metadata")]
    Token,
}

enum State {
    Disconnected {
        retry_in: Duration,
    },
    Connected {
        client: AgentServiceClient<Channel>,
        /// Boxed: the state stays small while disconnected.
        uri: Box<http::Uri>,
    },
}

pub struct Connection {
    /// One per broker address; the next one is tried after every disconnect.
    endpoints: Vec<Endpoint>,
    next_endpoint: usize,
    authorization: AsciiMetadataValue,
    identity: Identity,
    receivers: watch::Receiver<ReceiverSet>,
    readiness: Arc<Readiness>,
    backoff: Backoff,
    cursor: Cursor,
    dispatcher: Dispatcher,
    generation: u64,
    /// The sync watch's reports, shared by the connections of successive leadership terms.
    sync_reports: Option<SharedSyncReports>,
}

/// The sync watch's reports; one connection at a time holds them.
pub type SharedSyncReports = Arc<tokio::sync::Mutex<SyncReports>>;

impl Connection {
    /// A connection serving the receivers `receivers` holds, now and as they change.
    pub fn new(
        config: &AgentConfig,
        dispatcher: Dispatcher,
        receivers: watch::Receiver<ReceiverSet>,
        readiness: Arc<Readiness>,
        sync_reports: Option<SharedSyncReports>,
    ) -> Result<Self, ConnectionError> {
        Ok(Self {
            endpoints: config
                .brokers
                .iter()
                .map(|broker| endpoint(broker, &config.tls))
                .collect::<Result<_, _>>()?,
            next_endpoint: 0,
            authorization: session::authorization(config.token.reveal())
                .map_err(|_| ConnectionError::Token)?,
            identity: Identity::new(&config.cluster_name),
            receivers,
            readiness,
            backoff: Backoff::new(
                config.reconnect.initial_backoff,
                config.reconnect.max_backoff,
            ),
            cursor: Cursor::default(),
            dispatcher,
            generation: 0,
            sync_reports,
        })
    }

    /// Connects, streams and reconnects until `shutdown` fires.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut state = State::Disconnected {
            retry_in: Duration::ZERO,
        };
        let mut sync_reports = match self.sync_reports.clone() {
            Some(shared) => Some(shared.lock_owned().await),
            None => None,
        };
        loop {
            state = match state {
                State::Disconnected { retry_in } => {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        () = tokio::time::sleep(retry_in) => {}
                    }
                    self.connect().await
                }
                State::Connected { client, uri } => {
                    let end = self
                        .stream(client, &shutdown, sync_reports.as_deref_mut())
                        .await;
                    if matches!(end.reason, EndReason::Shutdown) {
                        return;
                    }
                    let retry_in = match misdialled(&uri, &end).await {
                        Some(advice) => {
                            let retry_in = self.backoff.next_delay();
                            tracing::error!(
                                broker = %uri,
                                reason = %end.reason,
                                fix = %advice,
                                ?retry_in,
                                "the broker address is not fluxgate's agent (gRPC) port"
                            );
                            self.readiness.set_broker_problem(advice);
                            retry_in
                        }
                        None => self.delay_after(&end),
                    };
                    State::Disconnected { retry_in }
                }
            };
        }
    }

    async fn connect(&mut self) -> State {
        let endpoint = self.endpoints[self.next_endpoint % self.endpoints.len()].clone();
        // Whatever happens to this connection, the next attempt goes to the next replica.
        self.next_endpoint = (self.next_endpoint + 1) % self.endpoints.len();
        let uri = endpoint.uri().clone();
        match endpoint.connect().await {
            Ok(channel) => {
                tracing::debug!(broker = %uri, "connection established");
                State::Connected {
                    client: AgentServiceClient::new(channel),
                    uri: Box::new(uri),
                }
            }
            Err(error) => {
                let retry_in = self.backoff.next_delay();
                let tls_cause = crate::tls_error::explain(&error);
                let description = format!("{:#}", anyhow::Error::new(error));
                match tls_cause {
                    Some(cause) => tracing::error!(
                        broker = %uri,
                        %cause,
                        error = %description,
                        ?retry_in,
                        "TLS handshake with the broker failed"
                    ),
                    None => tracing::warn!(
                        broker = %uri,
                        error = %description,
                        ?retry_in,
                        "cannot connect to the broker"
                    ),
                }
                State::Disconnected { retry_in }
            }
        }
    }

    async fn stream(
        &mut self,
        client: AgentServiceClient<Channel>,
        shutdown: &CancellationToken,
        sync_reports: Option<&mut SyncReports>,
    ) -> SessionEnd {
        self.generation += 1;
        let context = SessionContext {
            identity: &self.identity,
            receivers: &mut self.receivers,
            authorization: &self.authorization,
            generation: self.generation,
            dispatcher: &mut self.dispatcher,
            cursor: &mut self.cursor,
            readiness: &self.readiness,
            sync_reports,
            shutdown,
        };
        session::run(client, context).await
    }

    /// The delay before reconnecting after `end`, with the log line that explains it.
    fn delay_after(&mut self, end: &SessionEnd) -> Duration {
        let (kind, retry_in) = plan_reconnect(&mut self.backoff, end);
        let reason = &end.reason;
        // Under TLS 1.3 the broker refuses a client certificate after the handshake, so
        // the refusal ends the first request instead of the connect.
        if let EndReason::Status(status) = reason
            && let Some(cause) = crate::tls_error::explain(status)
        {
            tracing::error!(
                %cause,
                error = %format!("{:#}", anyhow::Error::new(status.clone())),
                ?retry_in,
                "TLS handshake with the broker failed"
            );
            return retry_in;
        }
        match kind {
            EndKind::Healthy => {
                tracing::info!(%reason, ?retry_in, "disconnected from the broker");
            }
            EndKind::Failed => {
                tracing::warn!(%reason, ?retry_in, "disconnected from the broker");
            }
            EndKind::TokenRejected => tracing::error!(
                %reason,
                ?retry_in,
                "the broker rejected this agent's token: it may be wrong, revoked or \
                 rotated; check token_file / token_env"
            ),
        }
        retry_in
    }
}

/// What to tell the operator if the stream to `uri` failed before a Welcome because the
/// address is an HTTP/1 server (fluxgate's HTTP port) rather than a gRPC listener; `None`
/// for any other failure, and for `https://` addresses (not probed).
async fn misdialled(uri: &http::Uri, end: &SessionEnd) -> Option<String> {
    let protocol_failure = matches!(
        &end.reason,
        EndReason::Status(status)
            if matches!(status.code(), Code::Unknown | Code::Internal | Code::Unavailable | Code::Cancelled)
    );
    if end.welcomed || !protocol_failure || uri.scheme_str() != Some("http") {
        return None;
    }
    let authority = uri.authority()?.as_str();
    crate::wrong_port::answers_http1(authority)
        .await
        .then(|| crate::wrong_port::advice(&uri.to_string()))
}

/// How a session's end is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EndKind {
    /// A normal end of a stream the broker had accepted.
    Healthy,
    Failed,
    TokenRejected,
}

/// Classifies `end` and picks the delay before the next connection attempt.
fn plan_reconnect(backoff: &mut Backoff, end: &SessionEnd) -> (EndKind, Duration) {
    let code = match &end.reason {
        EndReason::Status(status) => Some(status.code()),
        _ => None,
    };
    if matches!(code, Some(Code::Unauthenticated | Code::PermissionDenied)) {
        return (EndKind::TokenRejected, backoff.max_delay());
    }
    let normal_end = matches!(end.reason, EndReason::Closed)
        || matches!(code, Some(Code::Unavailable | Code::ResourceExhausted));
    if end.welcomed && normal_end {
        backoff.reset();
        return (EndKind::Healthy, backoff.next_delay());
    }
    (EndKind::Failed, backoff.next_delay())
}

fn endpoint(broker: &str, tls: &BrokerTls) -> Result<Endpoint, ConnectionError> {
    let address_error = |source| ConnectionError::Address {
        address: broker.to_owned(),
        source,
    };
    let mut endpoint = Endpoint::from_shared(broker.to_owned())
        .map_err(address_error)?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_keepalive(Some(TCP_KEEPALIVE))
        .tcp_nodelay(true);
    if broker.starts_with("https://") {
        endpoint = endpoint
            .tls_config(client_tls(tls))
            .map_err(address_error)?;
    }
    Ok(endpoint)
}

/// The configured CA (or else the system roots), client certificate and server name.
fn client_tls(tls: &BrokerTls) -> ClientTlsConfig {
    let mut config = ClientTlsConfig::new();
    config = match &tls.ca_pem {
        Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
        None => config.with_native_roots(),
    };
    if let Some(identity) = &tls.identity {
        config = config.identity(TlsIdentity::from_pem(&identity.cert_pem, &identity.key_pem));
    }
    if let Some(name) = &tls.server_name {
        config = config.domain_name(name.clone());
    }
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn end(welcomed: bool, reason: EndReason) -> SessionEnd {
        SessionEnd { welcomed, reason }
    }

    fn grown_backoff() -> Backoff {
        let mut backoff = Backoff::new(100 * MS, 10_000 * MS);
        for _ in 0..5 {
            backoff.next_delay();
        }
        backoff
    }

    #[test]
    fn a_healthy_stream_resets_the_backoff() {
        for reason in [
            EndReason::Closed,
            EndReason::Status(tonic::Status::unavailable("draining")),
            EndReason::Status(tonic::Status::resource_exhausted("busy")),
        ] {
            let (kind, delay) = plan_reconnect(&mut grown_backoff(), &end(true, reason));
            assert_eq!(kind, EndKind::Healthy);
            assert!(delay <= 100 * MS, "{delay:?}");
        }
    }

    #[test]
    fn failures_keep_growing_the_backoff() {
        let cases = [
            end(false, EndReason::Closed),
            end(false, EndReason::Status(tonic::Status::unavailable("down"))),
            end(true, EndReason::Status(tonic::Status::internal("bug"))),
            end(true, EndReason::Protocol("a second Welcome")),
            end(true, EndReason::Silent(90 * 1000 * MS)),
        ];
        for case in cases {
            let (kind, delay) = plan_reconnect(&mut grown_backoff(), &case);
            assert_eq!(kind, EndKind::Failed, "{case:?}");
            assert!(delay >= 1600 * MS, "{case:?}: {delay:?}");
        }
    }

    #[test]
    fn a_rejected_token_waits_the_maximum() {
        for status in [
            tonic::Status::unauthenticated("bad token"),
            tonic::Status::permission_denied("revoked"),
        ] {
            let mut backoff = Backoff::new(100 * MS, 10_000 * MS);
            let (kind, delay) =
                plan_reconnect(&mut backoff, &end(false, EndReason::Status(status)));
            assert_eq!(kind, EndKind::TokenRejected);
            assert!(delay >= 5_000 * MS, "{delay:?}");
        }
    }

    #[test]
    fn plain_endpoints_are_built_without_tls() {
        let plain = BrokerTls::default();
        assert!(endpoint("http://127.0.0.1:8150", &plain).is_ok());
        assert!(endpoint("http://[::1]:8150", &plain).is_ok());
    }
}
