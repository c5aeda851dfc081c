//! The admin API of a broker in this process: every operation, its errors, and its bearer
//! token (moved from the end-to-end suite: a separate process adds nothing here).

mod support;

use fluxgate_e2e::harness::{PATIENCE, RawStream, eventually, http_client};
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, TestBroker};

struct Admin<'a> {
    broker: &'a TestBroker,
    client: reqwest::Client,
}

impl<'a> Admin<'a> {
    fn new(broker: &'a TestBroker) -> Self {
        Self {
            broker,
            client: http_client(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: &str,
    ) -> (u16, Value) {
        let url = self.broker.http_url(path);
        let mut request = self
            .client
            .request(method.parse().unwrap(), url)
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn ok(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, body, ADMIN_TOKEN).await
    }
}

#[tokio::test]
async fn agents_are_managed_through_the_admin_api() {
    let broker = TestBroker::start(true).await;
    let admin = Admin::new(&broker);

    let (status, created) = admin
        .ok(
            "POST",
            "/api/v1/agents",
            Some(json!({"name": "edge", "config_project": "ops/edge", "grant_groups": ["apps"]})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("fgat_"));
    assert_eq!(
        created["grants"],
        json!({"projects": [], "groups": ["apps"]})
    );

    let (status, listed) = admin.ok("GET", "/api/v1/agents", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert!(
        listed[0].get("token").is_none(),
        "the token is shown only once"
    );

    let (status, granted) = admin
        .ok(
            "POST",
            "/api/v1/agents/edge/grant",
            Some(json!({"projects": ["infra/base"], "internal": true})),
        )
        .await;
    assert_eq!(status, 200, "{granted}");
    assert_eq!(granted["grants"]["projects"], json!(["infra/base"]));
    assert_eq!(granted["allow_internal"], true);

    let (status, revoked) = admin
        .ok(
            "POST",
            "/api/v1/agents/edge/revoke",
            Some(json!({"groups": ["apps"]})),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(revoked["grants"]["groups"], json!([]));

    // A connected agent shows as connected (the admin's change reached the hub through
    // the bus: the stream is accepted with the new token at once).
    let _stream = RawStream::open(&broker.agent_url(), &token, &[("ops/edge", "")], None)
        .await
        .unwrap();
    eventually(PATIENCE, "the agent to show as connected", || async {
        let (_, shown) = admin.ok("GET", "/api/v1/agents/edge", None).await;
        (shown["connected"] == true).then_some(())
    })
    .await;

    let (status, rotated) = admin
        .ok("POST", "/api/v1/agents/edge/rotate-token", None)
        .await;
    assert_eq!(status, 200);
    assert_ne!(rotated["token"].as_str().unwrap(), token);

    let (status, _) = admin.ok("DELETE", "/api/v1/agents/edge", None).await;
    assert_eq!(status, 204);
    let (status, missing) = admin.ok("GET", "/api/v1/agents/edge", None).await;
    assert_eq!(
        (status, missing),
        (
            404,
            json!({"code": "not_found", "message": "no agent named \"edge\""})
        )
    );
    broker.handle.stop().await.unwrap();
}

/// A stream that ends shows as disconnected within a couple of seconds, far less than the
/// keepalive interval (15 s) that last-seen times go by, with and without Redis.
#[tokio::test]
async fn an_agent_that_leaves_shows_as_disconnected_at_once() {
    let prefix = format!("fluxgate-presence-test-{}", std::process::id());
    for redis in [None, Some("redis://127.0.0.1:6379/")] {
        let broker = TestBroker::start_with(true, |config| {
            config.redis_url = redis.map(str::to_owned);
            config.redis_key_prefix = prefix.clone();
        })
        .await;
        let admin = Admin::new(&broker);
        let (status, created) = admin
            .ok(
                "POST",
                "/api/v1/agents",
                Some(json!({"name": "leaves", "config_project": "ops/leaves"})),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        let token = created["token"].as_str().unwrap().to_owned();
        let connected = || async {
            let (_, shown) = admin.ok("GET", "/api/v1/agents/leaves", None).await;
            shown["connected"].as_bool().unwrap()
        };
        let stream = RawStream::open(&broker.agent_url(), &token, &[("ops/leaves", "")], None)
            .await
            .unwrap();
        eventually(PATIENCE, "the agent to show as connected", || async {
            connected().await.then_some(())
        })
        .await;
        drop(stream);
        let left = std::time::Instant::now();
        eventually(
            std::time::Duration::from_secs(5),
            &format!("the agent to show as disconnected (redis: {redis:?})"),
            || async { (!connected().await).then_some(()) },
        )
        .await;
        let (_, listed) = admin.ok("GET", "/api/v1/agents", None).await;
        assert_eq!(listed[0]["connected"], false, "{listed}");
        assert!(left.elapsed() < std::time::Duration::from_secs(5));
        broker.handle.stop().await.unwrap();
    }
}

/// A TCP proxy that can go silent: it stops passing bytes either way but keeps both
/// sockets open, as a network that drops packets does (no FIN, no RST).
struct SilentProxy {
    address: std::net::SocketAddr,
    silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl SilentProxy {
    async fn start(upstream: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let silent = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = silent.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = tokio::net::TcpStream::connect(upstream).await.unwrap();
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(Self::pump(client_read, server_write, flag.clone()));
                tokio::spawn(Self::pump(server_read, client_write, flag.clone()));
            }
        });
        Self { address, silent }
    }

    async fn pump(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let mut buffer = vec![0_u8; 16 * 1024];
        loop {
            let Ok(read) = from.read(&mut buffer).await else {
                return;
            };
            if read == 0 {
                return;
            }
            if silent.load(std::sync::atomic::Ordering::SeqCst) {
                // Hold both sockets open and pass nothing, ever.
                let _held = (from, to);
                std::future::pending::<()>().await;
                return;
            }
            if to.write_all(&buffer[..read]).await.is_err() {
                return;
            }
        }
    }

    fn go_silent(&self) {
        self.silent.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A connection lost without a close (the network goes silent) ends the agent's stream at
/// the agent listener's HTTP/2 PING, sent every keepalive (here 1 s) and answered within
/// 10 s: the agent shows as disconnected well before the 30 s PING interval of before.
#[tokio::test]
async fn an_agent_whose_network_goes_silent_shows_as_disconnected_within_the_keepalive_window() {
    let broker = TestBroker::start_with(true, |config| {
        config.keepalive_interval = std::time::Duration::from_secs(1);
    })
    .await;
    let admin = Admin::new(&broker);
    let (status, created) = admin
        .ok(
            "POST",
            "/api/v1/agents",
            Some(json!({"name": "unplugged", "config_project": "ops/unplugged"})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let token = created["token"].as_str().unwrap().to_owned();
    let proxy = SilentProxy::start(broker.handle.addresses().agent).await;
    let _stream = RawStream::open(
        &format!("http://{}", proxy.address),
        &token,
        &[("ops/unplugged", "")],
        None,
    )
    .await
    .unwrap();
    let connected = || async {
        let (_, shown) = admin.ok("GET", "/api/v1/agents/unplugged", None).await;
        shown["connected"].as_bool().unwrap()
    };
    eventually(PATIENCE, "the agent to show as connected", || async {
        connected().await.then_some(())
    })
    .await;
    proxy.go_silent();
    let lost = std::time::Instant::now();
    eventually(
        std::time::Duration::from_secs(20),
        "the silent agent to show as disconnected",
        || async { (!connected().await).then_some(()) },
    )
    .await;
    eprintln!(
        "a silent agent showed as disconnected after {:?}",
        lost.elapsed()
    );
    broker.handle.stop().await.unwrap();
}

#[tokio::test]
async fn admin_api_errors_are_precise() {
    let broker = TestBroker::start(true).await;
    let admin = Admin::new(&broker);

    let (status, body) = admin
        .call("GET", "/api/v1/agents", None, "wrong-token")
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("the admin token does not match"))
    );
    let unauthenticated = http_client()
        .get(broker.http_url("/api/v1/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);

    let (status, body) = admin
        .ok(
            "POST",
            "/api/v1/agents",
            Some(json!({"name": "Bad Name", "config_project": "a/b"})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("agent name \"Bad Name\" is invalid"),
        "{body}"
    );

    let (status, body) = admin
        .ok(
            "POST",
            "/api/v1/agents",
            Some(json!({"name": "ok", "config_project": "a b"})),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            400,
            Some("config_project: path \"a b\" has a forbidden character ' '")
        )
    );

    let (status, body) = admin
        .ok("POST", "/api/v1/agents", Some(json!({"name": "ok"})))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        "invalid JSON body: missing field `config_project` at line 1 column 13"
    );

    let (status, body) = admin
        .ok(
            "POST",
            "/api/v1/agents",
            Some(json!({"name": "ok", "config_project": "a/b", "colour": "red"})),
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("unknown field `colour`"),
        "{body}"
    );

    admin
        .ok(
            "POST",
            "/api/v1/agents",
            Some(json!({"name": "twice", "config_project": "a/b"})),
        )
        .await;
    let (status, body) = admin
        .ok(
            "POST",
            "/api/v1/agents",
            Some(json!({"name": "twice", "config_project": "a/b"})),
        )
        .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("already_exists"))
    );

    let (status, body) = admin
        .ok(
            "POST",
            "/api/v1/agents/twice/revoke",
            Some(json!({"projects": ["x/y"]})),
        )
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (400, Some("agent \"twice\" has no grant for project x/y"))
    );

    let (status, body) = admin
        .ok("POST", "/api/v1/agents/twice/grant", Some(json!({})))
        .await;
    assert_eq!(
        (status, body["message"].as_str()),
        (
            400,
            Some("nothing to grant: give projects, groups or internal")
        )
    );

    let huge =
        json!({"name": "big", "config_project": "a/b", "grant_projects": vec!["x/y"; 20_000]});
    let (status, body) = admin.ok("POST", "/api/v1/agents", Some(huge)).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    broker.handle.stop().await.unwrap();
}

#[tokio::test]
async fn without_a_token_file_the_admin_api_is_off() {
    let broker = TestBroker::start(false).await;
    let response = http_client()
        .get(broker.http_url("/api/v1/agents"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["message"],
        "the admin API is off; start the broker with --admin-token-file to enable it"
    );
    broker.handle.stop().await.unwrap();
}
