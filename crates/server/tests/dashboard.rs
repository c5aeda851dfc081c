//! The dashboard's access control on a broker in this process: nothing but the login page
//! without a session, the session cookie's attributes, wrong tokens refused and rate
//! limited, forged cookies refused, logout, the event stream, and its end at shutdown.
//! (The page itself is driven in a real browser by `tests/tests/e2e/dashboard.rs`.)

mod support;

use std::time::{Duration, Instant};

use fluxgate_e2e::harness::http_client;
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, TestBroker};

/// A client that shows redirects instead of following them, and keeps no cookies.
fn client() -> reqwest::Client {
    let _ = http_client();
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn login(broker: &TestBroker, token: &str) -> reqwest::Response {
    client()
        .post(broker.http_url("/login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap()
}

/// The session cookie (`name=value`) a right login sets.
async fn session(broker: &TestBroker) -> String {
    let response = login(broker, ADMIN_TOKEN).await;
    assert_eq!(response.status(), 303);
    let set_cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    set_cookie.split(';').next().unwrap().to_owned()
}

async fn get(broker: &TestBroker, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut request = client().get(broker.http_url(path));
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn nothing_but_the_login_page_without_a_session() {
    let broker = TestBroker::start(true).await;
    let response = get(&broker, "/", None).await;
    assert_eq!(response.status(), 200);
    let csp = response.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let page = response.text().await.unwrap();
    assert!(page.contains(r#"action="/login""#), "{page}");
    assert!(
        !page.contains(r#"id="agents""#),
        "no dashboard before login"
    );

    for path in ["/dashboard/snapshot", "/dashboard/events"] {
        let response = get(&broker, path, None).await;
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["code"], "unauthenticated", "{body}");
    }
    // A forged or foreign cookie is no session.
    let cookie = session(&broker).await;
    let forged = format!("{}0", &cookie[..cookie.len() - 1]);
    let forged = if forged == cookie {
        format!("{}1", &cookie[..cookie.len() - 1])
    } else {
        forged
    };
    assert_eq!(
        get(&broker, "/dashboard/snapshot", Some(&forged))
            .await
            .status(),
        401
    );
    let other = format!("fluxgate-session={ADMIN_TOKEN}");
    assert_eq!(
        get(&broker, "/dashboard/snapshot", Some(&other))
            .await
            .status(),
        401
    );
    broker.handle.stop().await.unwrap();
}

#[tokio::test]
async fn the_admin_token_opens_a_session_and_logout_ends_it() {
    let broker = TestBroker::start(true).await;
    let wrong = login(&broker, "not-the-admin-token").await;
    assert_eq!(wrong.status(), 401);
    assert!(wrong.headers().get("set-cookie").is_none());
    assert!(
        wrong
            .text()
            .await
            .unwrap()
            .contains("That is not the admin token")
    );

    let right = login(&broker, ADMIN_TOKEN).await;
    assert_eq!(right.status(), 303);
    assert_eq!(right.headers()["location"], "/");
    let set_cookie = right.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=43200"] {
        assert!(set_cookie.contains(attribute), "{set_cookie}");
    }
    assert!(
        !set_cookie.contains("Secure"),
        "no TLS, no Secure: {set_cookie}"
    );
    assert!(!set_cookie.contains(ADMIN_TOKEN), "never the token itself");
    let cookie = set_cookie.split(';').next().unwrap().to_owned();

    // The bearer API works as before, and what it changes shows on the dashboard.
    let created = client()
        .post(broker.http_url("/api/v1/agents"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"name": "edge", "config_project": "ops/edge"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let page = get(&broker, "/", Some(&cookie)).await.text().await.unwrap();
    assert!(page.contains(r#"id="agents""#), "{page}");
    let snapshot = get(&broker, "/dashboard/snapshot", Some(&cookie)).await;
    assert_eq!(snapshot.status(), 200);
    let snapshot: Value = snapshot.json().await.unwrap();
    assert_eq!(snapshot["agents"][0]["name"], "edge", "{snapshot}");
    assert_eq!(snapshot["agents"][0]["connected"], false, "{snapshot}");
    assert_eq!(
        snapshot["latency"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["stage"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["delivered", "triggered", "fetched", "applied"]
    );

    let logout = client()
        .post(broker.http_url("/logout"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    let cleared = logout.headers()["set-cookie"].to_str().unwrap();
    assert!(
        cleared.starts_with("fluxgate-session=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );
    broker.handle.stop().await.unwrap();
}

#[tokio::test]
async fn login_attempts_are_rate_limited() {
    let broker = TestBroker::start(true).await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(login(&broker, "guess").await.status().as_u16());
    }
    assert_eq!(&statuses[..10], &[401; 10]);
    assert_eq!(&statuses[10..], &[429; 2]);
    // Over the limit, even the right token waits.
    let limited = login(&broker, ADMIN_TOKEN).await;
    assert_eq!(limited.status(), 429);
    assert!(limited.headers().contains_key("retry-after"));
    assert!(limited.headers().get("set-cookie").is_none());
    assert!(
        limited
            .text()
            .await
            .unwrap()
            .contains("Too many login attempts")
    );
    broker.handle.stop().await.unwrap();
}

#[tokio::test]
async fn the_event_stream_sends_a_snapshot_and_ends_at_shutdown() {
    let broker = TestBroker::start(true).await;
    let cookie = session(&broker).await;
    let mut events = get(&broker, "/dashboard/events", Some(&cookie)).await;
    assert_eq!(events.status(), 200);
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let first = tokio::time::timeout(Duration::from_secs(5), events.chunk())
        .await
        .expect("a first event within seconds")
        .unwrap()
        .unwrap();
    let first = String::from_utf8_lossy(&first);
    assert!(first.contains("event: snapshot"), "{first}");
    assert!(first.contains(r#""agents":[]"#), "{first}");

    // An open stream does not hold the drain up: it ends with the HTTP listener.
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(10), broker.handle.stop())
        .await
        .expect("the broker stops with an event stream open")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "shutdown waited {:?} for the event stream",
        started.elapsed()
    );
    let rest = tokio::time::timeout(Duration::from_secs(2), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(rest.is_ok(), "the stream ended");
}

#[tokio::test]
async fn without_an_admin_token_the_dashboard_says_how_to_turn_it_on() {
    let broker = TestBroker::start(false).await;
    let response = get(&broker, "/", None).await;
    assert_eq!(response.status(), 404);
    let page = response.text().await.unwrap();
    assert!(page.contains("--admin-token-file"), "{page}");
    assert_eq!(
        get(&broker, "/dashboard/snapshot", None).await.status(),
        404
    );
    broker.handle.stop().await.unwrap();
}
