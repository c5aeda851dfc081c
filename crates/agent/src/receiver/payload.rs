//! What the agent sends a Receiver: a small JSON body and the headers its type checks.
//!
//! The body has the fields of a GitLab push payload that Flux CEL filters commonly use
//! (`req.project.path_with_namespace`, `req.ref`), plus the broker's `seq` and `event_id`:
//!
//! ```json
//! {"after":"…","before":"…","event_id":"…","object_kind":"push",
//!  "project":{"id":42,"path_with_namespace":"group/app"},"ref":"refs/heads/main","seq":17}
//! ```
//!
//! A resync (the broker no longer held every event after the agent's cursor, so every
//! receiver is triggered once: `cursor_expired`) names no commit: it has no `before` and
//! `after`, `seq` is 0, `ref` is the receiver's ref when it follows exactly one (else
//! empty: kept so that a CEL filter on `req.ref` evaluates to false instead of failing),
//! and `resync` says why:
//!
//! ```json
//! {"event_id":"…","object_kind":"push","project":{"id":0,"path_with_namespace":"group/app"},
//!  "ref":"refs/heads/main","resync":{"reason":"cursor_expired","message":"…"},"seq":0}
//! ```
//!
//! Flux caps bodies at 3 MiB; this one stays under a kilobyte. For `generic-hmac` the
//! signature covers these exact bytes, so the body is built once and sent as is.

use fluxgate_core::EventKind;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, InvalidHeaderValue};
use sha2::Sha256;

use super::{Receiver, ReceiverKind};
use crate::event::TriggerEvent;

pub const SIGNATURE_HEADER: &str = "x-signature";
pub const GITLAB_TOKEN_HEADER: &str = "x-gitlab-token";
pub const GITLAB_EVENT_HEADER: &str = "x-gitlab-event";

/// A request ready to send, as often as retries need.
#[derive(Debug, Clone)]
pub struct TriggerRequest {
    pub body: Vec<u8>,
    pub headers: HeaderMap,
}

/// The token cannot be put in a header (it holds a line break or a control character).
#[derive(Debug, thiserror::Error)]
#[error("the receiver token cannot be sent in an HTTP header: {0}")]
pub struct TokenNotSendable(#[from] InvalidHeaderValue);

impl TriggerRequest {
    pub fn build(receiver: &Receiver, event: &TriggerEvent) -> Result<Self, TokenNotSendable> {
        let body = body(event);
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let token = receiver.token.expose();
        match receiver.kind {
            ReceiverKind::Generic => {}
            ReceiverKind::GenericHmac => {
                let signature = HeaderValue::from_str(&sha256_signature(token.as_bytes(), &body))?;
                headers.insert(HeaderName::from_static(SIGNATURE_HEADER), signature);
            }
            ReceiverKind::Gitlab => {
                let mut token = HeaderValue::from_str(token)?;
                token.set_sensitive(true);
                headers.insert(HeaderName::from_static(GITLAB_TOKEN_HEADER), token);
                headers.insert(
                    HeaderName::from_static(GITLAB_EVENT_HEADER),
                    HeaderValue::from_static(gitlab_event(event.kind)),
                );
            }
        }
        Ok(Self { body, headers })
    }
}

/// The JSON body for `event`; an artifact event also carries what the pipeline published
/// (`artifact.url`, `artifact.tag`, `artifact.digest`, `artifact.pipeline_id`,
/// `artifact.job_id`).
pub fn body(event: &TriggerEvent) -> Vec<u8> {
    let mut body = serde_json::json!({
        "object_kind": event.kind.as_str(),
        "ref": event.ref_str(),
        "before": event.before,
        "after": event.after,
        "project": {
            "id": event.project_id,
            "path_with_namespace": event.project_path.as_str(),
        },
        "seq": event.seq,
        "event_id": event.event_id,
    });
    if let Some(artifact) = &event.artifact {
        body["artifact"] = serde_json::to_value(artifact).unwrap_or_default();
    }
    if event.is_resync()
        && let Some(fields) = body.as_object_mut()
    {
        fields.remove("before");
        fields.remove("after");
        fields.insert(
            "resync".to_owned(),
            serde_json::json!({"reason": "cursor_expired", "message": RESYNC_MESSAGE}),
        );
    }
    body.to_string().into_bytes()
}

/// Why a resync body names no commit.
pub const RESYNC_MESSAGE: &str = "the broker no longer holds every event after this agent's \
     cursor (its retention removed them), so pushes may have been missed: every receiver is \
     triggered once to reconcile its sources";

/// `sha256=<hex HMAC-SHA256(key, body)>`, the `X-Signature` Flux's `generic-hmac` checks.
pub fn sha256_signature(key: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length, so `new_from_slice` cannot fail.
    let mut mac =
        <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The `X-Gitlab-Event` GitLab sends for a project hook of this kind: a project push is a
/// push; an artifact comes from a pipeline.
pub fn gitlab_event(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Push | EventKind::ProjectPush => "Push Hook",
        EventKind::TagPush => "Tag Push Hook",
        EventKind::Artifact => "Pipeline Hook",
    }
}

#[cfg(test)]
mod tests {
    use fluxgate_core::{FullPath, GitRef, RefPattern};

    use super::*;
    use crate::flux_path::WebhookUrl;
    use crate::secret::Secret;

    fn event(git_ref: &str) -> TriggerEvent {
        let git_ref = GitRef::parse(git_ref).unwrap();
        TriggerEvent {
            seq: 17,
            event_id: "0190-e".to_owned(),
            project_id: 42,
            project_path: FullPath::parse("Group/App").unwrap(),
            matched_projects: Vec::new(),
            kind: EventKind::for_ref(&git_ref),
            artifact: None,
            received_at: None,
            git_ref: Some(git_ref),
            before: "a".repeat(40),
            after: "b".repeat(40),
        }
    }

    fn receiver(kind: ReceiverKind, token: &str) -> Receiver {
        Receiver {
            name: "app".to_owned(),
            project: FullPath::parse("group/app").unwrap(),
            also_projects: Vec::new(),
            ref_pattern: Some(RefPattern::parse("main").unwrap()),
            accepts: crate::receiver::Accepts::Pushes,
            kind,
            url: WebhookUrl::parse("http://flux/hook/x").unwrap(),
            token: Secret::new(token),
            route: crate::receiver::Route::Direct,
            synced_source: None,
        }
    }

    #[test]
    fn hmac_matches_the_reference_vector() {
        assert_eq!(
            sha256_signature(b"my-token", b"{}"),
            "sha256=8d7b81f27d3cf16729a74a4ba76461de972545d495142cd604f903735fe33d53"
        );
    }

    #[test]
    fn body_has_the_gitlab_fields_cel_filters_use() {
        let json: serde_json::Value =
            serde_json::from_slice(&body(&event("refs/heads/main"))).expect("body is JSON");
        assert_eq!(
            json,
            serde_json::json!({
                "object_kind": "push",
                "ref": "refs/heads/main",
                "before": "a".repeat(40),
                "after": "b".repeat(40),
                "project": {"id": 42, "path_with_namespace": "Group/App"},
                "seq": 17,
                "event_id": "0190-e",
            })
        );
        let tag: serde_json::Value =
            serde_json::from_slice(&body(&event("refs/tags/v1"))).expect("body is JSON");
        assert_eq!(tag["object_kind"], "tag_push");
    }

    #[test]
    fn a_resync_says_why_and_names_no_commit() {
        let mut on_main = receiver(ReceiverKind::Generic, "t");
        on_main.ref_pattern = Some(RefPattern::parse("refs/heads/main").unwrap());
        let json: serde_json::Value =
            serde_json::from_slice(&body(&TriggerEvent::resync(&on_main))).expect("body is JSON");
        let event_id = json["event_id"].clone();
        assert_eq!(
            json,
            serde_json::json!({
                "object_kind": "push",
                "ref": "refs/heads/main",
                "project": {"id": 0, "path_with_namespace": "group/app"},
                "seq": 0,
                "event_id": event_id,
                "resync": {"reason": "cursor_expired", "message": RESYNC_MESSAGE},
            })
        );
        let mut any_ref = on_main;
        any_ref.ref_pattern = None;
        let json: serde_json::Value =
            serde_json::from_slice(&body(&TriggerEvent::resync(&any_ref))).expect("body is JSON");
        assert_eq!(json["ref"], "", "kept for CEL filters on req.ref");
        assert!(json.get("after").is_none() && json.get("before").is_none());
    }

    #[test]
    fn headers_follow_the_receiver_type() {
        let generic = TriggerRequest::build(
            &receiver(ReceiverKind::Generic, "t"),
            &event("refs/heads/main"),
        )
        .unwrap();
        assert_eq!(generic.headers.len(), 1);
        assert_eq!(generic.headers[CONTENT_TYPE], "application/json");

        let hmac = TriggerRequest::build(
            &receiver(ReceiverKind::GenericHmac, "t"),
            &event("refs/heads/main"),
        )
        .unwrap();
        assert_eq!(
            hmac.headers[SIGNATURE_HEADER].to_str().unwrap(),
            sha256_signature(b"t", &hmac.body)
        );

        let gitlab =
            TriggerRequest::build(&receiver(ReceiverKind::Gitlab, "t"), &event("refs/tags/v1"))
                .unwrap();
        assert_eq!(gitlab.headers[GITLAB_TOKEN_HEADER], "t");
        assert!(gitlab.headers[GITLAB_TOKEN_HEADER].is_sensitive());
        assert_eq!(gitlab.headers[GITLAB_EVENT_HEADER], "Tag Push Hook");
    }

    #[test]
    fn a_token_with_a_line_break_cannot_go_in_a_header() {
        let result = TriggerRequest::build(
            &receiver(ReceiverKind::Gitlab, "t\n"),
            &event("refs/heads/main"),
        );
        assert!(result.is_err());
    }
}
