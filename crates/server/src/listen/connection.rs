//! One accepted connection: the TLS handshake (with its deadline), then HTTP/1 or HTTP/2
//! through hyper, watched for idleness and drained on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use fluxgate_stream::keepalive_grid;
use http_body_util::BodyExt as _;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::Request;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use super::grid_timer::GridTimer;
use super::limits::{Activity, InFlight};
use super::{BoxError, Protocol, ReloadingTls, Settings};
use super::{HttpService, ResponseBody};
use crate::metric_names;

/// Why a connection ended before its client closed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reaped {
    TlsHandshakeTimeout,
    TlsHandshakeFailed,
    HeaderReadTimeout,
    FirstRequestTimeout,
    IdleTimeout,
}

impl Reaped {
    fn label(self) -> &'static str {
        match self {
            Reaped::TlsHandshakeTimeout => "tls_handshake_timeout",
            Reaped::TlsHandshakeFailed => "tls_handshake_failed",
            Reaped::HeaderReadTimeout => "header_read_timeout",
            Reaped::FirstRequestTimeout => "first_request_timeout",
            Reaped::IdleTimeout => "idle_timeout",
        }
    }
}

/// Serves one connection to its end. `_slot` is its place under the connection cap.
pub(super) async fn serve<S, B>(
    tcp: TcpStream,
    peer: SocketAddr,
    service: S,
    settings: Arc<Settings>,
    shutdown: CancellationToken,
    _slot: OwnedSemaphorePermit,
) where
    S: HttpService<B>,
    B: ResponseBody,
{
    // Each path's future is boxed where it starts: this future lives as long as its
    // connection (thousands of idle agents), and unboxed it would be as large as its
    // largest path (the TLS handshake and a TLS connection, ~8 KiB) on every connection,
    // plain ones included.
    let reaped = match &settings.tls {
        None => Box::pin(drive(tcp, peer, service, &settings, &shutdown)).await,
        Some(tls) => Box::pin(serve_tls(tls, tcp, peer, service, &settings, &shutdown)).await,
    };
    if let Some(reaped) = reaped {
        tracing::debug!(listener = settings.name, %peer, reason = reaped.label(), "connection closed");
        metrics::counter!(
            metric_names::LISTENER_CONNECTIONS_REAPED,
            "listener" => settings.name,
            "reason" => reaped.label(),
        )
        .increment(1);
    }
}

/// The TLS handshake (with its deadline), then HTTP on the TLS stream ([`drive`]): why the
/// connection was reaped, or `None` when it ended normally or shutdown came first.
async fn serve_tls<S, B>(
    tls: &ReloadingTls,
    tcp: TcpStream,
    peer: SocketAddr,
    service: S,
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Option<Reaped>
where
    S: HttpService<B>,
    B: ResponseBody,
{
    let handshake = tokio::time::timeout(
        settings.limits.tls_handshake_timeout,
        tls.acceptor().accept(tcp),
    );
    let stream = tokio::select! {
        () = shutdown.cancelled() => return None,
        result = handshake => result,
    };
    match stream {
        Ok(Ok(stream)) => Box::pin(drive(stream, peer, service, settings, shutdown)).await,
        Ok(Err(error)) => {
            tracing::debug!(
                listener = settings.name,
                %peer,
                %error,
                "TLS handshake failed"
            );
            metrics::counter!(
                metric_names::LISTENER_TLS_FAILURES,
                "listener" => settings.name,
                "reason" => tls_failure_reason(&error),
            )
            .increment(1);
            Some(Reaped::TlsHandshakeFailed)
        }
        Err(_elapsed) => Some(Reaped::TlsHandshakeTimeout),
    }
}

/// Runs HTTP on an established (plain or TLS) stream. Each request carries the peer's
/// address as axum's `ConnectInfo` (refusal logs name the source).
async fn drive<I, S, B>(
    io: I,
    peer: SocketAddr,
    service: S,
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Option<Reaped>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: HttpService<B>,
    B: ResponseBody,
{
    let activity = Activity::new();
    let tracked = activity.clone();
    let hyper_service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(peer));
        let in_flight = tracked.begin_request();
        let call = service.clone().oneshot(request);
        async move {
            let response = call.await?;
            Ok::<_, Infallible>(response.map(|body| TrackedBody {
                inner: body.map_err(Into::into).boxed_unsync(),
                _in_flight: in_flight,
            }))
        }
    });
    let io = TokioIo::new(io);
    let limits = settings.limits;
    match settings.protocol {
        Protocol::Http1 => {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout)
                .serve_connection(io, hyper_service);
            watch(
                connection,
                http1::Connection::graceful_shutdown,
                &activity,
                None,
                limits.idle_timeout,
                shutdown,
            )
            .await
        }
        Protocol::Http2 {
            keepalive_interval,
            keepalive_timeout,
        } => {
            let mut builder = http2::Builder::new(TokioExecutor::new());
            // PINGs on the streams' keepalive grid, when the interval fits it.
            if keepalive_grid::fits(keepalive_interval) {
                builder.timer(GridTimer::default());
            } else {
                builder.timer(TokioTimer::new());
            }
            let connection = builder
                .keep_alive_interval(keepalive_interval)
                .keep_alive_timeout(keepalive_timeout)
                .serve_connection(io, hyper_service);
            watch(
                connection,
                http2::Connection::graceful_shutdown,
                &activity,
                Some(limits.header_read_timeout),
                limits.idle_timeout,
                shutdown,
            )
            .await
        }
    }
}

/// Drives `connection` until it ends, closing it when its deadline passes with no request
/// in flight, and draining it (`graceful`) once `shutdown` fires.
async fn watch<C>(
    connection: C,
    graceful: impl Fn(Pin<&mut C>),
    activity: &Arc<Activity>,
    first_request: Option<Duration>,
    idle: Duration,
    shutdown: &CancellationToken,
) -> Option<Reaped>
where
    C: Future<Output = Result<(), hyper::Error>>,
{
    tokio::pin!(connection);
    let mut draining = false;
    loop {
        let deadline = activity.deadline(first_request, idle);
        let check = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                // Busy: look again when the last request in flight ends.
                None => activity.went_idle().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                return match result {
                    Err(error) if error.is_timeout() => Some(Reaped::HeaderReadTimeout),
                    _ => None,
                };
            }
            () = shutdown.cancelled(), if !draining => {
                graceful(connection.as_mut());
                draining = true;
            }
            () = check => {
                if let Some(deadline) = activity.deadline(first_request, idle)
                    && tokio::time::Instant::now() >= deadline
                {
                    // Nothing is in flight: dropping the connection loses nothing.
                    return Some(if first_request.is_some() && !activity.any_request() {
                        Reaped::FirstRequestTimeout
                    } else {
                        Reaped::IdleTimeout
                    });
                }
            }
        }
    }
}

/// A response body that keeps its request in flight until hyper drops it (for a gRPC
/// stream, until the stream ends).
struct TrackedBody {
    inner: UnsyncBoxBody<Bytes, BoxError>,
    _in_flight: InFlight,
}

impl Body for TrackedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A short, bounded label for a failed handshake (the metric's `reason`).
fn tls_failure_reason(error: &std::io::Error) -> &'static str {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return "io";
    };
    match tls {
        rustls::Error::NoCertificatesPresented => "no_client_certificate",
        rustls::Error::InvalidCertificate(_) => "invalid_client_certificate",
        rustls::Error::AlertReceived(_) => "alert_received",
        rustls::Error::PeerIncompatible(_) | rustls::Error::NoApplicationProtocol => "incompatible",
        _ => "protocol",
    }
}
