//! TLS with the real binaries: a broker with TLS on every listener, agents that trust its
//! CA (or not), a certificate rotated on disk, and client certificates on the agent port.
//! Certificates are made in the test with rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fluxgate_e2e::flux_receiver::{FluxReceiverStandIn, Receiver, ReceiverType};
use fluxgate_e2e::harness::payloads::{push, sha};
use fluxgate_e2e::harness::{
    AgentProcess, Broker, BrokerOptions, BrokerTls, PATIENCE, Project, ReceiverConfig, eventually,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, ServerName};

/// A certificate authority made for one test.
struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
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

    /// A certificate for `names` (DNS names or IP addresses), as PEM files in `dir` named
    /// `<stem>.crt` and `<stem>.key`; returns the certificate's DER.
    fn issue(&self, dir: &Path, stem: &str, names: &[&str]) -> CertificateDer<'static> {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, stem);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        // Written aside and renamed, as cert-manager's atomic updates do.
        for (extension, text) in [("crt", cert.pem()), ("key", key.serialize_pem())] {
            let staged = dir.join(format!(".{stem}.{extension}.new"));
            std::fs::write(&staged, text).unwrap();
            std::fs::rename(&staged, dir.join(format!("{stem}.{extension}"))).unwrap();
        }
        cert.der().clone()
    }

    fn write_pem(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, self.pem()).unwrap();
        path
    }
}

/// The broker's certificate is for 127.0.0.1, where the harness binds it.
const BROKER_NAMES: &[&str] = &["127.0.0.1", "localhost"];

async fn tls_broker(dir: &Path, ca: &TestCa, client_ca: Option<&TestCa>) -> Broker {
    ca.issue(dir, "broker", BROKER_NAMES);
    let mut options = BrokerOptions::embedded(dir.join("data"));
    options.tls = Some(BrokerTls {
        cert_file: dir.join("broker.crt"),
        key_file: dir.join("broker.key"),
        client_ca_file: client_ca.map(|ca| ca.write_pem(dir, "client-ca.crt")),
        ca_pem: ca.pem(),
    });
    Broker::start(options).await
}

fn tls_yaml(lines: &[(&str, &Path)]) -> String {
    let mut yaml = "tls:\n".to_owned();
    for (key, path) in lines {
        yaml.push_str(&format!("  {key}: {}\n", path.display()));
    }
    yaml
}

/// The leaf certificate a fresh TLS handshake with `address` sees (offering `alpn`), and
/// the protocol it agreed.
async fn handshake(
    address: SocketAddr,
    ca: &TestCa,
    alpn: &[u8],
) -> (CertificateDer<'static>, Vec<u8>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.issuer.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .expect("a TLS handshake with the broker");
    let session = stream.get_ref().1;
    (
        session.peer_certificates().unwrap()[0].clone(),
        session.alpn_protocol().unwrap_or_default().to_vec(),
    )
}

const H2: &[u8] = b"h2";
const HTTP11: &[u8] = b"http/1.1";

/// Waits for the agent's log line with `message`, and returns its `cause` field.
async fn logged_cause(agent: &mut AgentProcess, message: &str) -> String {
    let line = agent.process().wait_for_log(message, PATIENCE).await;
    line["cause"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_hook_reaches_the_receiver_through_tls_on_every_listener() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("fluxgate test CA");
    let broker = tls_broker(dir.path(), &ca, None).await;
    let ca_file = ca.write_pem(dir.path(), "ca.crt");
    let flux =
        FluxReceiverStandIn::start([Receiver::new("app", ReceiverType::GenericHmac, "app-token")])
            .await;
    let token = broker.create_agent("tls-cluster", "team/app", &[]).await;
    let mut agent = AgentProcess::start_with_yaml(
        &[&broker.agent_url()],
        &token,
        &[ReceiverConfig::flux(
            "app",
            "team/app",
            "generic-hmac",
            "app-token",
            &flux.base_url(),
        )],
        &tls_yaml(&[("ca_file", &ca_file)]),
    )
    .await;
    assert!(broker.agent_url().starts_with("https://"));
    agent
        .process()
        .wait_for_log("connected to the broker", PATIENCE)
        .await;

    let project = Project::private(7, "team/app");
    let response = broker
        .post_hook(&push(&project, "refs/heads/main", &sha(0), &sha(1)), &[])
        .await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    let hits = flux.wait_for_hits("app", 1, PATIENCE).await;
    assert_eq!(hits[0].status, 200);
    assert_eq!(hits[0].json()["seq"], response.seqs()[0]);

    // The operations listener speaks TLS too, and plain HTTP is not answered there.
    let ready = broker
        .client()
        .get(broker.metrics_url("/readyz"))
        .send()
        .await
        .expect("readyz over https");
    assert_eq!(ready.status(), 200);
    let plain = fluxgate_e2e::harness::http_client()
        .get(format!("http://{}/readyz", broker.metrics))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");
    // The agent port offers HTTP/2 by ALPN.
    assert_eq!(handshake(broker.agent, &ca, H2).await.1, b"h2");
}

#[tokio::test]
async fn an_agent_that_does_not_trust_the_broker_ca_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("the broker's CA");
    let broker = tls_broker(dir.path(), &ca, None).await;
    let other_ca_file = TestCa::new("some other CA").write_pem(dir.path(), "other-ca.crt");
    let token = broker.create_agent("wrong-ca", "team/app", &[]).await;
    let mut agent = AgentProcess::start_with_yaml(
        &[&broker.agent_url()],
        &token,
        &[ReceiverConfig::new(
            "app",
            "team/app",
            "generic",
            "t",
            "http://127.0.0.1:9/hook",
        )],
        &tls_yaml(&[("ca_file", &other_ca_file)]),
    )
    .await;
    let cause = logged_cause(&mut agent, "TLS handshake with the broker failed").await;
    assert!(cause.contains("unknown CA"), "{cause}");
    assert!(cause.contains("tls.ca_file"), "{cause}");
    assert!(
        agent
            .process()
            .log_line("connected to the broker")
            .is_none(),
        "connected despite the wrong CA"
    );
}

#[tokio::test]
async fn a_certificate_rotated_on_disk_is_served_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("rotation CA");
    let mut broker = tls_broker(dir.path(), &ca, None).await;
    let (first, _) = handshake(broker.agent, &ca, H2).await;
    let pid = broker.pid();

    let second = ca.issue(dir.path(), "broker", BROKER_NAMES);
    assert_ne!(first, second);
    for (listener, address, alpn) in [
        ("agent", broker.agent, H2),
        ("http", broker.http, HTTP11),
        ("metrics", broker.metrics, HTTP11),
    ] {
        eventually(
            PATIENCE,
            &format!("the {listener} listener to serve the new certificate"),
            || async { (handshake(address, &ca, alpn).await.0 == second).then_some(()) },
        )
        .await;
    }
    assert_eq!(broker.pid(), pid, "the same process");
    assert!(broker.process().is_running());

    // A broken update (a key that does not go with the certificate) is refused; the
    // certificate in use stays.
    std::fs::write(
        dir.path().join("broker.key"),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    broker
        .process()
        .wait_for_log(
            "the new TLS files do not load; keeping the certificate in use",
            PATIENCE,
        )
        .await;
    assert_eq!(handshake(broker.agent, &ca, H2).await.0, second);
    let response = broker
        .post_hook(
            &push(
                &Project::private(3, "team/x"),
                "refs/heads/main",
                &sha(0),
                &sha(1),
            ),
            &[],
        )
        .await;
    assert_eq!(response.status, 200, "{:?}", response.body);
}

#[tokio::test]
async fn agents_need_a_certificate_from_the_client_ca_when_one_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("server CA");
    let client_ca = TestCa::new("agent CA");
    let broker = tls_broker(dir.path(), &ca, Some(&client_ca)).await;
    let ca_file = ca.write_pem(dir.path(), "ca.crt");
    let receivers = [ReceiverConfig::new(
        "app",
        "team/app",
        "generic",
        "t",
        "http://127.0.0.1:9/hook",
    )];

    let token = broker.create_agent("no-cert", "team/app", &[]).await;
    let mut without = AgentProcess::start_with_yaml(
        &[&broker.agent_url()],
        &token,
        &receivers,
        &tls_yaml(&[("ca_file", &ca_file)]),
    )
    .await;
    let cause = logged_cause(&mut without, "TLS handshake with the broker failed").await;
    assert!(cause.contains("requires a client certificate"), "{cause}");
    assert!(
        without
            .process()
            .log_line("connected to the broker")
            .is_none()
    );

    let stranger = TestCa::new("stranger CA");
    stranger.issue(dir.path(), "stranger", &["stranger"]);
    let token = broker.create_agent("stranger", "team/app", &[]).await;
    let mut stranger_agent = AgentProcess::start_with_yaml(
        &[&broker.agent_url()],
        &token,
        &receivers,
        &tls_yaml(&[
            ("ca_file", &ca_file),
            ("cert_file", &dir.path().join("stranger.crt")),
            ("key_file", &dir.path().join("stranger.key")),
        ]),
    )
    .await;
    let cause = logged_cause(&mut stranger_agent, "TLS handshake with the broker failed").await;
    assert!(
        cause.contains("refused this agent's client certificate"),
        "{cause}"
    );

    client_ca.issue(dir.path(), "agent", &["agent"]);
    let token = broker.create_agent("with-cert", "team/app", &[]).await;
    let mut with = AgentProcess::start_with_yaml(
        &[&broker.agent_url()],
        &token,
        &receivers,
        &tls_yaml(&[
            ("ca_file", &ca_file),
            ("cert_file", &dir.path().join("agent.crt")),
            ("key_file", &dir.path().join("agent.key")),
        ]),
    )
    .await;
    with.process()
        .wait_for_log("connected to the broker", PATIENCE)
        .await;
    assert!(
        broker.metric("fluxgate_listener_tls_failures_total").await >= 2.0,
        "the broker counted the refused handshakes"
    );
}
