//! `POST /api/v1/notify` on an in-process broker, with the GitLab OIDC stand-in as the
//! instance: every refusal answers 401 (503 while keys are unavailable) with a message
//! naming the reason; an accepted token becomes one artifact event in the log with the
//! claims' project, ref and sha and the body's artifact; a replayed token is a duplicate.

mod support;

use fluxgate_core::{EventKind, LogEntry, PushEvent, Seq};
use fluxgate_e2e::gitlab_oidc::{GitLabOidc, IdTokenClaims, tamper, unix_now};
use fluxgate_e2e::harness::{PATIENCE, eventually, http_client};
use fluxgate_server::{Config, Handle, Listeners};
use fluxgate_store::{SqlStore, Store, StoreOptions};
use serde_json::{Value, json};

const AUD: &str = "https://fluxgate.example.com";
const SHA: &str = "714a629c0b401fdce83e847fc9589983fc6f46bc";
const ARTIFACT: &str = "oci://registry.example.com/group/app/manifests";
const DIGEST: &str = "sha256:4d3c2b1a00000000000000000000000000000000000000000000000000000000";

/// A broker whose pipeline notifications trust `gitlab`.
struct NotifyBroker {
    handle: Handle,
    gitlab: GitLabOidc,
    config: Config,
    _dir: tempfile::TempDir,
}

impl NotifyBroker {
    async fn start() -> Self {
        let gitlab = GitLabOidc::start(0).await;
        let dir = tempfile::tempdir().unwrap();
        let mut config = support::config(dir.path(), false);
        config.gitlab_url = Some(gitlab.issuer().to_owned());
        config.ci_audience = Some(AUD.to_owned());
        let listeners = Listeners::ephemeral().await.unwrap();
        let mut handle =
            fluxgate_server::run(config.clone(), listeners, Default::default()).unwrap();
        handle.ready().await.unwrap();
        let broker = Self {
            handle,
            gitlab,
            config,
            _dir: dir,
        };
        // Keys load in the background: wait until a valid token is no longer a 503.
        let probe = broker.gitlab.mint(&broker.job());
        eventually(PATIENCE, "the broker to load GitLab's keys", || async {
            let (status, _) = broker.notify(Some(&probe), None).await;
            (status != 503).then_some(())
        })
        .await;
        broker
    }

    fn job(&self) -> IdTokenClaims {
        self.gitlab.claims(AUD, 28, "group/app", "main", SHA)
    }

    async fn notify(&self, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut request = http_client().post(format!(
            "http://{}/api/v1/notify",
            self.handle.addresses().http
        ));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the broker answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Asserts a 401 whose message contains `reason`.
    async fn refused(&self, token: &str, body: Option<Value>, reason: &str) {
        let (status, answer) = self.notify(Some(token), body).await;
        assert_eq!(status, 401, "{answer}");
        assert_eq!(answer["code"], "unauthenticated", "{answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(reason), "{message:?} names {reason:?}");
        assert!(!message.contains(token), "the token is not echoed");
    }

    async fn log(&self) -> Vec<LogEntry> {
        let store = SqlStore::connect(&self.config.database_url(), StoreOptions::default())
            .await
            .unwrap();
        store.read_log(Seq::ZERO, 1000).await.unwrap()
    }

    async fn artifact_events(&self) -> Vec<(Seq, PushEvent)> {
        self.log()
            .await
            .into_iter()
            .filter_map(|entry| Some((entry.seq, entry.as_push()?.clone())))
            .filter(|(_, event)| event.kind == EventKind::Artifact)
            .collect()
    }
}

#[tokio::test]
async fn a_valid_token_becomes_an_artifact_event_with_the_claims_project() {
    let broker = NotifyBroker::start().await;
    let claims = broker.job();
    let body = json!({"artifact": ARTIFACT, "tag": "v1.2.0", "digest": DIGEST});
    let (status, answer) = broker
        .notify(Some(&broker.gitlab.mint(&claims)), Some(body))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "accepted");
    assert_eq!(answer["project"], "group/app");
    assert_eq!(answer["ref"], "refs/heads/main");
    let seq = answer["seq"].as_u64().unwrap();

    let events = broker.artifact_events().await;
    let (logged_seq, event) = events
        .iter()
        .find(|(logged_seq, _)| logged_seq.get() == seq)
        .expect("the answered seq is an artifact event");
    assert_eq!(logged_seq.get(), seq);
    assert_eq!(event.project.id.get(), 28);
    assert_eq!(event.project.path.as_str(), "group/app");
    assert_eq!(event.git_ref.as_ref().unwrap().as_str(), "refs/heads/main");
    assert_eq!(event.after.as_str(), SHA);
    assert!(event.before.is_zero());
    let artifact = event.artifact.as_ref().expect("the body's artifact");
    assert_eq!(artifact.url.as_deref(), Some(ARTIFACT));
    assert_eq!(artifact.tag.as_deref(), Some("v1.2.0"));
    assert_eq!(artifact.digest.as_deref(), Some(DIGEST));
    assert_eq!(artifact.pipeline_id, "1212");
    assert_eq!(artifact.job_id, "7010");
}

#[tokio::test]
async fn a_replayed_token_is_a_duplicate_with_the_original_seq() {
    let broker = NotifyBroker::start().await;
    let token = broker.gitlab.mint(&broker.job());
    let (status, first) = broker.notify(Some(&token), None).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "accepted");
    let before = broker.artifact_events().await.len();

    let (status, replay) = broker
        .notify(Some(&token), Some(json!({"tag": "other"})))
        .await;
    assert_eq!(status, 200, "{replay}");
    assert_eq!(replay["status"], "duplicate");
    assert_eq!(replay["seq"], first["seq"]);
    assert_eq!(broker.artifact_events().await.len(), before, "no new event");

    // A new token of the same job (a new jti) is a new event.
    let (status, again) = broker
        .notify(Some(&broker.gitlab.mint(&broker.job())), None)
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["status"], "accepted");
    assert!(again["seq"].as_u64() > first["seq"].as_u64());
}

#[tokio::test]
async fn every_bad_token_is_refused_with_401_and_its_reason() {
    let broker = NotifyBroker::start().await;
    let gitlab = &broker.gitlab;
    let before = broker.log().await.len();

    let expired = broker.job().issued_at(unix_now() - 7200);
    broker
        .refused(&gitlab.mint(&expired), None, "the token expired at ")
        .await;
    let early = broker.job().issued_at(unix_now() + 600);
    broker
        .refused(&gitlab.mint(&early), None, "the token is not valid before ")
        .await;
    let mut other_audience = broker.job();
    other_audience.aud = "https://other.example.com".to_owned();
    broker
        .refused(
            &gitlab.mint(&other_audience),
            None,
            &format!("audience [\"https://other.example.com\"] is not \"{AUD}\""),
        )
        .await;
    let mut other_issuer = broker.job();
    other_issuer.iss = "https://gitlab.evil.example".to_owned();
    broker
        .refused(
            &gitlab.mint(&other_issuer),
            None,
            "issuer \"https://gitlab.evil.example\" is not",
        )
        .await;
    broker
        .refused(
            &gitlab.mint_with_kid(0, "unknown-kid", &broker.job()),
            None,
            "unknown kid \"unknown-kid\" after refreshing GitLab's keys",
        )
        .await;
    broker
        .refused(
            &gitlab.mint_alg_none(&broker.job()),
            None,
            "algorithm none is not allowed",
        )
        .await;
    for pem in [true, false] {
        broker
            .refused(
                &gitlab.mint_hs256_with_public_key(&broker.job(), pem),
                None,
                "algorithm HS256 is not allowed",
            )
            .await;
    }
    let tampered = tamper(&gitlab.mint(&broker.job()), |claims| {
        claims.insert("project_id".to_owned(), json!("29"));
        claims.insert("project_path".to_owned(), json!("group/other"));
    });
    broker.refused(&tampered, None, "bad signature").await;
    // A valid token with a body naming another project.
    broker
        .refused(
            &gitlab.mint(&broker.job()),
            Some(json!({"project_path": "group/other", "tag": "v1"})),
            "the body names a \"project_path\": a pipeline notifies only for its own project",
        )
        .await;
    broker
        .refused(
            &gitlab.mint(&broker.job()),
            Some(json!({"project_id": 29})),
            "the body names a \"project_id\"",
        )
        .await;

    let (status, answer) = broker.notify(None, None).await;
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("missing \"Authorization: Bearer <ID token>\""),
        "{answer}"
    );
    assert_eq!(broker.log().await.len(), before, "nothing was appended");
}

#[tokio::test]
async fn bodies_are_validated() {
    let broker = NotifyBroker::start().await;
    for (body, reason) in [
        (json!({"tags": "v1"}), "unknown field `tags`"),
        (
            json!({"artifact": "https://registry.example.com/x"}),
            "oci://",
        ),
        (json!({"digest": "sha256:abc"}), "digest"),
        (json!({"tag": "-bad"}), "tag"),
    ] {
        let (status, answer) = broker
            .notify(Some(&broker.gitlab.mint(&broker.job())), Some(body.clone()))
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(reason), "{body}: {message}");
    }
}

#[tokio::test]
async fn without_gitlab_url_the_endpoint_is_off_and_says_how_to_enable_it() {
    let broker = support::TestBroker::start(false).await;
    let response = http_client()
        .post(broker.http_url("/api/v1/notify"))
        .bearer_auth("x.y.z")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 404);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("start the broker with --gitlab-url and --ci-audience"),
        "{answer}"
    );
}

#[tokio::test]
async fn while_gitlab_is_down_valid_tokens_get_503() {
    let gitlab = GitLabOidc::start(0).await;
    gitlab.set_down(true);
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config(dir.path(), false);
    config.gitlab_url = Some(gitlab.issuer().to_owned());
    config.ci_audience = Some(AUD.to_owned());
    let listeners = Listeners::ephemeral().await.unwrap();
    let mut handle = fluxgate_server::run(config, listeners, Default::default()).unwrap();
    handle
        .ready()
        .await
        .expect("the broker starts while GitLab is down");
    let token = gitlab.mint(&gitlab.claims(AUD, 28, "group/app", "main", SHA));
    let response = http_client()
        .post(format!("http://{}/api/v1/notify", handle.addresses().http))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 503);
    let answer: Value = response.json().await.unwrap();
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("GitLab's signing keys are not available yet"),
        "{answer}"
    );
}
