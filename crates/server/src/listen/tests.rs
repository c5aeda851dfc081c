//! The listener against real sockets: slow and idle clients are closed on time, the
//! connection cap lets hooks through once idle sockets are reaped, busy streams are never
//! reaped, TLS (with client certificates) works and reloads.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::Stream;
use tokio_util::sync::CancellationToken;

use super::tls::{Check, ReloadingTls, TlsFiles};
use super::{Limits, Protocol, Settings, spawn};

/// Longest any test waits for something that must happen.
const PATIENCE: Duration = Duration::from_secs(10);

fn limits() -> Limits {
    Limits {
        max_connections: 64,
        header_read_timeout: Duration::from_secs(30),
        idle_timeout: Duration::from_secs(30),
        tls_handshake_timeout: Duration::from_secs(30),
    }
}

fn http1(limits: Limits) -> Settings {
    Settings {
        name: "test",
        protocol: Protocol::Http1,
        limits,
        tls: None,
    }
}

fn http2(limits: Limits) -> Settings {
    Settings {
        name: "test",
        protocol: Protocol::Http2 {
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
        },
        limits,
        tls: None,
    }
}

/// Stands in for the broker's routers: `/ok`, a `/hooks` POST, and `/stream`, a response
/// body that trickles for `STREAM_FOR`.
fn router() -> Router {
    Router::new()
        .route("/ok", get(|| async { "ok" }))
        .route(
            "/hooks",
            post(|body: String| async move { format!("accepted {}", body.len()) }),
        )
        .route("/stream", get(|| async { Body::from_stream(trickle()) }))
}

const STREAM_FOR: Duration = Duration::from_millis(1200);

/// Ten chunks spread over `STREAM_FOR`.
fn trickle() -> impl Stream<Item = Result<String, std::io::Error>> + Send {
    let step = STREAM_FOR / 10;
    tokio_stream::StreamExt::then(tokio_stream::iter(0..10), move |n| async move {
        tokio::time::sleep(step).await;
        Ok(format!("chunk {n}\n"))
    })
}

struct Running {
    address: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

async fn start(settings: Settings) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let task = spawn(listener, router(), settings, shutdown.clone());
    Running {
        address,
        shutdown,
        task,
    }
}

/// Reads until the peer closes; returns when that happened. Fails after `PATIENCE`.
async fn wait_for_close(stream: &mut (impl AsyncRead + Unpin)) -> Instant {
    let mut buffer = [0_u8; 1024];
    tokio::time::timeout(PATIENCE, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the listener closes the connection")
}

/// Sends one HTTP/1.1 request and reads its response (headers and a `Content-Length`
/// body), leaving the connection open.
async fn exchange(stream: &mut (impl AsyncRead + AsyncWrite + Unpin), request: &str) -> String {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let mut buffer = [0_u8; 1024];
    tokio::time::timeout(PATIENCE, async {
        loop {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "closed before the response ended: {response:?}");
            response.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&response);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(str::to_owned)
                    })
                    .and_then(|l| l.trim().parse::<usize>().ok())
                    .expect("a content-length");
                if body.len() >= length {
                    return text.into_owned();
                }
            }
        }
    })
    .await
    .expect("a response")
}

const GET_OK: &str = "GET /ok HTTP/1.1\r\nHost: test\r\n\r\n";

#[tokio::test]
async fn a_slow_header_socket_is_closed_by_the_header_read_timeout() {
    let header_read_timeout = Duration::from_millis(400);
    let running = start(http1(Limits {
        header_read_timeout,
        idle_timeout: Duration::from_secs(30),
        ..limits()
    }))
    .await;
    let stream = TcpStream::connect(running.address).await.unwrap();
    let started = Instant::now();
    let (mut reader, mut writer) = stream.into_split();
    // Slowloris: a header line every 50 ms, never the blank line that ends the head.
    let dripping = tokio::spawn(async move {
        writer.write_all(b"GET /ok HTTP/1.1\r\n").await?;
        for n in 0.. {
            tokio::time::sleep(Duration::from_millis(50)).await;
            writer
                .write_all(format!("x-drip-{n}: 1\r\n").as_bytes())
                .await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let closed = wait_for_close(&mut reader).await - started;
    dripping.abort();
    assert!(closed >= header_read_timeout, "closed after {closed:?}");
    assert!(
        closed < Duration::from_secs(5),
        "closed after {closed:?}: not by the header timeout"
    );
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_by_the_idle_timeout() {
    let idle_timeout = Duration::from_millis(300);
    let header_read_timeout = Duration::from_secs(5);
    let running = start(http1(Limits {
        header_read_timeout,
        idle_timeout,
        ..limits()
    }))
    .await;
    let mut stream = TcpStream::connect(running.address).await.unwrap();
    let response = exchange(&mut stream, GET_OK).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let answered = Instant::now();
    let closed = wait_for_close(&mut stream).await - answered;
    assert!(closed >= idle_timeout, "closed after {closed:?}");
    assert!(
        closed < header_read_timeout,
        "closed after {closed:?}: by hyper's header timer, not the idle timeout"
    );
}

#[tokio::test]
async fn a_raw_socket_that_never_sends_the_http2_preface_is_closed() {
    let header_read_timeout = Duration::from_millis(300);
    let running = start(http2(Limits {
        header_read_timeout,
        idle_timeout: Duration::from_secs(30),
        ..limits()
    }))
    .await;
    let mut silent = TcpStream::connect(running.address).await.unwrap();
    let started = Instant::now();
    let closed = wait_for_close(&mut silent).await - started;
    assert!(closed >= header_read_timeout, "closed after {closed:?}");
    assert!(closed < Duration::from_secs(5), "closed after {closed:?}");

    // The preface alone is not a request either.
    let mut preface_only = TcpStream::connect(running.address).await.unwrap();
    preface_only
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    let started = Instant::now();
    let closed = wait_for_close(&mut preface_only).await - started;
    assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
}

#[tokio::test]
async fn at_the_connection_cap_a_hook_is_answered_once_idle_sockets_are_reaped() {
    let cap = 4;
    let header_read_timeout = Duration::from_millis(500);
    let running = start(http1(Limits {
        max_connections: cap,
        header_read_timeout,
        idle_timeout: Duration::from_secs(30),
        ..limits()
    }))
    .await;
    // Fill every slot with a kept-alive connection (its answer proves it holds a slot),
    // then queue more silent sockets in the backlog behind them.
    let mut holders = Vec::new();
    for _ in 0..cap {
        let mut stream = TcpStream::connect(running.address).await.unwrap();
        exchange(&mut stream, GET_OK).await;
        holders.push(stream);
    }
    let mut flood = Vec::new();
    for _ in 0..2 * cap {
        flood.push(TcpStream::connect(running.address).await.unwrap());
    }
    let started = Instant::now();
    let mut hook = TcpStream::connect(running.address).await.unwrap();
    let response = exchange(
        &mut hook,
        "POST /hooks HTTP/1.1\r\nHost: test\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}",
    )
    .await;
    let waited = started.elapsed();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("accepted 2"), "{response}");
    assert!(
        waited >= header_read_timeout / 2,
        "answered after {waited:?}: the cap did not hold the hook back"
    );
    for stream in holders.iter_mut().chain(flood.iter_mut()) {
        wait_for_close(stream).await;
    }
}

#[tokio::test]
async fn a_long_response_is_not_reaped_by_the_idle_timeout() {
    let idle_timeout = Duration::from_millis(200);
    let running = start(http1(Limits {
        idle_timeout,
        ..limits()
    }))
    .await;
    let mut stream = TcpStream::connect(running.address).await.unwrap();
    stream
        .write_all(b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    let mut buffer = [0_u8; 1024];
    tokio::time::timeout(PATIENCE, async {
        while !String::from_utf8_lossy(&response).contains("chunk 9") {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(
                n > 0,
                "closed mid-response: {}",
                String::from_utf8_lossy(&response)
            );
            response.extend_from_slice(&buffer[..n]);
        }
    })
    .await
    .expect("the whole stream");
    assert!(STREAM_FOR > idle_timeout * 4);
    // Once the response is over, the connection is idle and closed.
    wait_for_close(&mut stream).await;
}

#[tokio::test]
async fn shutdown_stops_accepting_and_closes_idle_connections() {
    let running = start(http1(limits())).await;
    let mut kept_alive = TcpStream::connect(running.address).await.unwrap();
    exchange(&mut kept_alive, GET_OK).await;
    running.shutdown.cancel();
    tokio::time::timeout(PATIENCE, running.task)
        .await
        .expect("the listener drains")
        .unwrap();
    wait_for_close(&mut kept_alive).await;
    assert!(
        TcpStream::connect(running.address).await.is_err(),
        "still accepting"
    );
}

// --- TLS ---

/// A certificate authority made for one test.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A PEM certificate and key, with the certificate's DER to compare with what a client saw.
struct Leaf {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl TestCa {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        Self {
            issuer: CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap(),
        }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    fn leaf(&self, name: &str) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
}

fn files(dir: &Path, client_ca: bool) -> TlsFiles {
    TlsFiles {
        listener: "test",
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
        client_ca: client_ca.then(|| dir.join("ca.crt")),
    }
}

fn install(dir: &Path, leaf: &Leaf) {
    write(&dir.join("tls.crt"), &leaf.cert_pem);
    write(&dir.join("tls.key"), &leaf.key_pem);
}

/// A rustls client trusting `ca`, presenting `identity` if given.
fn client(ca: &TestCa, identity: Option<&Leaf>) -> tokio_rustls::TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.der.clone()],
                PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

async fn tls_connect(
    address: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(address).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// The leaf certificate a fresh handshake sees.
async fn served_certificate(
    address: SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> CertificateDer<'static> {
    let stream = tls_connect(address, connector).await.unwrap();
    stream.get_ref().1.peer_certificates().unwrap()[0].clone()
}

#[tokio::test]
async fn https_answers_and_a_rotated_certificate_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("rotation CA");
    let first = ca.leaf("localhost");
    install(dir.path(), &first);
    let (tls, mut watcher) = ReloadingTls::load(files(dir.path(), false), &[b"http/1.1"]).unwrap();
    let running = start(Settings {
        tls: Some(tls),
        ..http1(limits())
    })
    .await;
    let connector = client(&ca, None);

    let mut stream = tls_connect(running.address, &connector).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), None, "no ALPN asked");
    let response = exchange(&mut stream, GET_OK).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_eq!(
        served_certificate(running.address, &connector).await,
        first.der
    );

    assert_eq!(watcher.check(), Check::Unchanged);
    let second = ca.leaf("localhost");
    install(dir.path(), &second);
    assert_eq!(watcher.check(), Check::Reloaded);
    assert_eq!(
        served_certificate(running.address, &connector).await,
        second.der,
        "the next handshake has the new certificate"
    );

    // A key that does not go with the certificate: the second pair stays in use.
    let third = ca.leaf("localhost");
    write(&dir.path().join("tls.crt"), &third.cert_pem);
    match watcher.check() {
        Check::Kept(error) => assert!(error.contains("does not go with"), "{error}"),
        other => panic!("a mismatched pair was {other:?}"),
    }
    assert_eq!(
        served_certificate(running.address, &connector).await,
        second.der
    );
    // A missing file, likewise.
    std::fs::remove_file(dir.path().join("tls.key")).unwrap();
    assert!(matches!(watcher.check(), Check::Kept(_)));
    assert_eq!(
        served_certificate(running.address, &connector).await,
        second.der
    );
    // The matching key arrives: the third pair loads.
    write(&dir.path().join("tls.key"), &third.key_pem);
    assert_eq!(watcher.check(), Check::Reloaded);
    assert_eq!(
        served_certificate(running.address, &connector).await,
        third.der
    );
}

#[tokio::test]
async fn the_reload_task_picks_up_a_new_certificate_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("reload CA");
    install(dir.path(), &ca.leaf("localhost"));
    let stop = CancellationToken::new();
    let tls = ReloadingTls::start(
        files(dir.path(), false),
        &[b"http/1.1"],
        Duration::from_millis(50),
        stop.clone(),
    )
    .unwrap();
    let running = start(Settings {
        tls: Some(tls),
        ..http1(limits())
    })
    .await;
    let connector = client(&ca, None);
    let next = ca.leaf("localhost");
    install(dir.path(), &next);
    let deadline = Instant::now() + PATIENCE;
    while served_certificate(running.address, &connector).await != next.der {
        assert!(
            Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
}

#[tokio::test]
async fn client_certificates_from_the_configured_ca_are_required_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = TestCa::new("server CA");
    let client_ca = TestCa::new("client CA");
    let stranger_ca = TestCa::new("stranger CA");
    install(dir.path(), &server_ca.leaf("localhost"));
    write(&dir.path().join("ca.crt"), &client_ca.pem());
    let (tls, _watcher) = ReloadingTls::load(files(dir.path(), true), &[b"http/1.1"]).unwrap();
    let running = start(Settings {
        tls: Some(tls),
        ..http1(limits())
    })
    .await;

    let accepted = client(&server_ca, Some(&client_ca.leaf("agent")));
    let mut stream = tls_connect(running.address, &accepted).await.unwrap();
    let response = exchange(&mut stream, GET_OK).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");

    for (who, connector) in [
        ("no certificate", client(&server_ca, None)),
        (
            "a certificate from another CA",
            client(&server_ca, Some(&stranger_ca.leaf("agent"))),
        ),
    ] {
        // TLS 1.3: the client finishes its side first; the refusal arrives as an alert.
        let refused = async {
            let mut stream = tls_connect(running.address, &connector).await?;
            stream.write_all(GET_OK.as_bytes()).await?;
            let mut buffer = [0_u8; 64];
            match stream.read(&mut buffer).await? {
                0 => Err(std::io::Error::other("closed without an answer")),
                _ => Ok(String::from_utf8_lossy(&buffer).into_owned()),
            }
        };
        match tokio::time::timeout(PATIENCE, refused).await.unwrap() {
            Ok(answer) => panic!("{who}: answered {answer:?}"),
            Err(error) => assert!(
                error.to_string().contains("CertificateRequired")
                    || error.to_string().contains("UnknownCA")
                    || error.to_string().contains("BadCertificate")
                    || error.to_string().contains("closed without an answer"),
                "{who}: {error}"
            ),
        }
    }
}

#[tokio::test]
async fn a_stalled_tls_handshake_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("handshake CA");
    install(dir.path(), &ca.leaf("localhost"));
    let (tls, _watcher) = ReloadingTls::load(files(dir.path(), false), &[b"h2"]).unwrap();
    let tls_handshake_timeout = Duration::from_millis(300);
    let running = start(Settings {
        tls: Some(tls),
        ..http2(Limits {
            tls_handshake_timeout,
            ..limits()
        })
    })
    .await;
    let mut silent = TcpStream::connect(running.address).await.unwrap();
    let started = Instant::now();
    let closed = wait_for_close(&mut silent).await - started;
    assert!(closed >= tls_handshake_timeout, "closed after {closed:?}");
    assert!(closed < Duration::from_secs(5), "closed after {closed:?}");
}

#[test]
fn tls_keys_must_come_in_pairs() {
    let p = Path::new("/x");
    assert!(
        TlsFiles::from_keys("http", None, None, None)
            .unwrap()
            .is_none()
    );
    let err = TlsFiles::from_keys("http", Some(p), None, None).unwrap_err();
    assert!(
        err.to_string().contains("http_tls_key_file is not"),
        "{err}"
    );
    let err = TlsFiles::from_keys("agent", None, Some(p), None).unwrap_err();
    assert!(
        err.to_string().contains("agent_tls_cert_file is not"),
        "{err}"
    );
    let err = TlsFiles::from_keys("agent", None, None, Some(p)).unwrap_err();
    assert!(
        err.to_string().contains("agent_tls_client_ca_file"),
        "{err}"
    );
}

#[test]
fn unreadable_or_wrong_tls_files_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let missing = ReloadingTls::load(files(dir.path(), false), &[])
        .err()
        .unwrap();
    assert!(
        format!("{missing:#}").contains("test_tls_cert_file"),
        "{missing:#}"
    );
    write(&dir.path().join("tls.crt"), "not pem");
    write(&dir.path().join("tls.key"), "not pem");
    let garbage = ReloadingTls::load(files(dir.path(), false), &[])
        .err()
        .unwrap();
    assert!(
        format!("{garbage:#}").contains("no certificate"),
        "{garbage:#}"
    );
}
