//! The ID token verifier (`fluxgate-idtoken`) against the GitLab OIDC stand-in: real RSA
//! keys, tokens minted as GitLab mints them, and the forgeries GitLab never signs.

use std::time::Duration;

use fluxgate_e2e::gitlab_oidc::{GitLabOidc, IdTokenClaims, tamper, unix_now};
use fluxgate_e2e::harness::wait::eventually;
use fluxgate_idtoken::{Issuer, KeysStatus, RefType, Verifier, VerifierConfig, VerifyError};
use serde_json::json;

const AUD: &str = "https://fluxgate.example.com";
const SHA: &str = "714a629c0b401fdce83e847fc9589983fc6f46bc";
/// How long to wait for keys that load in milliseconds when all is well.
const PATIENCE: Duration = Duration::from_secs(20);

fn config(gitlab: &GitLabOidc) -> VerifierConfig {
    VerifierConfig::new(Issuer::parse(gitlab.issuer()).unwrap(), AUD).unwrap()
}

/// A verifier with its keys loaded.
async fn verifier(gitlab: &GitLabOidc, config: VerifierConfig) -> Verifier {
    let verifier = Verifier::start(config).unwrap();
    eventually(PATIENCE, "GitLab's keys to load", || async {
        matches!(verifier.keys_status(), KeysStatus::Loaded { .. }).then_some(())
    })
    .await;
    assert!(gitlab.jwks_fetches() >= 1);
    verifier
}

fn job(gitlab: &GitLabOidc) -> IdTokenClaims {
    gitlab.claims(AUD, 28, "group/sub/app", "main", SHA)
}

async fn refusal(verifier: &Verifier, token: &str) -> VerifyError {
    verifier
        .verify(token)
        .await
        .expect_err("the token must be refused")
}

#[tokio::test]
async fn a_token_minted_by_gitlab_becomes_typed_claims() {
    let gitlab = GitLabOidc::start(0).await;
    let verifier = verifier(&gitlab, config(&gitlab)).await;
    let claims = job(&gitlab);
    let verified = verifier.verify(&gitlab.mint(&claims)).await.unwrap();
    assert_eq!(verified.project_id.get(), 28);
    assert_eq!(verified.project_path.as_str(), "group/sub/app");
    assert_eq!(verified.git_ref.as_str(), "refs/heads/main");
    assert_eq!(verified.ref_type, RefType::Branch);
    assert_eq!(verified.sha.unwrap().as_str(), SHA);
    assert_eq!(verified.pipeline_id, "1212");
    assert_eq!(verified.job_id, "7010");
    assert_eq!(verified.jti, claims.jti);
    assert_eq!(verified.user_login.as_deref(), Some("root"));

    let tag = verifier
        .verify(&gitlab.mint(&job(&gitlab).on_tag("v1.2.0")))
        .await
        .unwrap();
    assert_eq!(tag.git_ref.as_str(), "refs/tags/v1.2.0");
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused_with_their_times() {
    let gitlab = GitLabOidc::start(0).await;
    let verifier = verifier(&gitlab, config(&gitlab)).await;
    // Issued two hours ago: expired an hour ago.
    let expired = job(&gitlab).issued_at(unix_now() - 7200);
    let err = refusal(&verifier, &gitlab.mint(&expired)).await;
    assert!(matches!(err, VerifyError::Expired { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.starts_with("the token expired at ") && message.ends_with("(leeway 30s)"),
        "{message}"
    );
    // Issued in ten minutes: not valid before then.
    let early = job(&gitlab).issued_at(unix_now() + 600);
    let err = refusal(&verifier, &gitlab.mint(&early)).await;
    assert!(matches!(err, VerifyError::NotYetValid { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("the token is not valid before ")
    );
    // Within the leeway: accepted.
    let skewed = job(&gitlab).issued_at(unix_now() + 20);
    verifier.verify(&gitlab.mint(&skewed)).await.unwrap();
}

#[tokio::test]
async fn wrong_audience_and_wrong_issuer_are_refused() {
    let gitlab = GitLabOidc::start(0).await;
    let verifier = verifier(&gitlab, config(&gitlab)).await;
    let mut other_audience = job(&gitlab);
    other_audience.aud = "https://other.example.com".to_owned();
    let err = refusal(&verifier, &gitlab.mint(&other_audience)).await;
    assert_eq!(
        err.to_string(),
        format!("audience [\"https://other.example.com\"] is not \"{AUD}\"")
    );
    let mut other_issuer = job(&gitlab);
    other_issuer.iss = "https://gitlab.evil.example".to_owned();
    let err = refusal(&verifier, &gitlab.mint(&other_issuer)).await;
    assert_eq!(
        err.to_string(),
        format!(
            "issuer \"https://gitlab.evil.example\" is not \"{}\"",
            gitlab.issuer()
        )
    );
}

#[tokio::test]
async fn forgeries_are_refused_before_or_at_the_signature() {
    let gitlab = GitLabOidc::start(0).await;
    let verifier = verifier(&gitlab, config(&gitlab)).await;
    let claims = job(&gitlab);

    let err = refusal(&verifier, &gitlab.mint_alg_none(&claims)).await;
    assert_eq!(
        err,
        VerifyError::AlgorithmNotAllowed {
            alg: "none".to_owned()
        }
    );
    for pem in [true, false] {
        let err = refusal(&verifier, &gitlab.mint_hs256_with_public_key(&claims, pem)).await;
        assert_eq!(
            err.to_string(),
            "algorithm HS256 is not allowed (GitLab ID tokens are RS256)"
        );
    }
    // A real token whose payload names another project: the signature no longer matches.
    let tampered = tamper(&gitlab.mint(&claims), |payload| {
        payload.insert("project_id".to_owned(), json!("29"));
        payload.insert("project_path".to_owned(), json!("group/other"));
    });
    assert_eq!(
        refusal(&verifier, &tampered).await,
        VerifyError::BadSignature
    );
    // Signed by a key GitLab does not list, under the listed key's id.
    let wrong_key = gitlab.mint_with_kid(1, &gitlab.signing_kid(), &claims);
    assert_eq!(
        refusal(&verifier, &wrong_key).await,
        VerifyError::BadSignature
    );
    let without_jti = tamper(&gitlab.mint(&claims), |payload| {
        payload.remove("jti");
    });
    assert_eq!(
        refusal(&verifier, &without_jti).await,
        VerifyError::BadSignature,
        "removing a claim after signing breaks the signature too"
    );
}

#[tokio::test]
async fn a_token_without_jti_is_refused() {
    let gitlab = GitLabOidc::start(0).await;
    let verifier = verifier(&gitlab, config(&gitlab)).await;
    let mut claims = job(&gitlab);
    claims.jti = String::new();
    assert_eq!(
        refusal(&verifier, &gitlab.mint(&claims)).await.to_string(),
        "missing claim jti"
    );
}

#[tokio::test]
async fn an_unknown_kid_is_refused_after_one_refresh() {
    let gitlab = GitLabOidc::start(0).await;
    let verifier = verifier(&gitlab, config(&gitlab)).await;
    let before = gitlab.jwks_fetches();
    let token = gitlab.mint_with_kid(0, "made-up-kid", &job(&gitlab));
    assert_eq!(
        refusal(&verifier, &token).await.to_string(),
        "unknown kid \"made-up-kid\" after refreshing GitLab's keys"
    );
    assert_eq!(gitlab.jwks_fetches(), before + 1, "one refresh");
}

#[tokio::test]
async fn a_rotated_key_is_verified_after_one_refresh() {
    let gitlab = GitLabOidc::start(0).await;
    let verifier = verifier(&gitlab, config(&gitlab)).await;
    verifier.verify(&gitlab.mint(&job(&gitlab))).await.unwrap();
    let before = gitlab.jwks_fetches();

    let new_kid = gitlab.rotate(2);
    gitlab.retire(0);
    let token = gitlab.mint(&job(&gitlab));
    let verified = verifier.verify(&token).await.unwrap();
    assert_eq!(verified.project_path.as_str(), "group/sub/app");
    assert_eq!(gitlab.jwks_fetches(), before + 1, "exactly one refresh");
    assert_eq!(
        verifier.keys_status(),
        KeysStatus::Loaded {
            kids: vec![new_kid]
        }
    );
    // A second token with the new key needs no fetch.
    verifier.verify(&gitlab.mint(&job(&gitlab))).await.unwrap();
    assert_eq!(gitlab.jwks_fetches(), before + 1);
}

#[tokio::test]
async fn a_flood_of_unknown_kids_fetches_the_keys_at_most_once_per_interval() {
    let gitlab = GitLabOidc::start(0).await;
    let mut config = config(&gitlab);
    config.refresh_min_interval = Duration::from_secs(3600);
    let verifier = verifier(&gitlab, config).await;
    let before = gitlab.jwks_fetches();
    let claims = job(&gitlab);
    let flood = (0..200).map(|n| {
        let verifier = verifier.clone();
        let token = gitlab.mint_with_kid(0, &format!("bogus-{n}"), &claims);
        tokio::spawn(async move { verifier.verify(&token).await })
    });
    for result in futures_util::future::join_all(flood).await {
        assert!(matches!(
            result.unwrap(),
            Err(VerifyError::UnknownKid { .. })
        ));
    }
    let fetched = gitlab.jwks_fetches() - before;
    assert_eq!(fetched, 1, "{fetched} key-set fetches for 200 bad tokens");
    // A real token still verifies, from the cache.
    verifier.verify(&gitlab.mint(&claims)).await.unwrap();
}

#[tokio::test]
async fn while_gitlab_is_down_keys_are_unavailable_then_load_in_the_background() {
    let gitlab = GitLabOidc::start(0).await;
    gitlab.set_down(true);
    let verifier = Verifier::start(config(&gitlab)).unwrap();
    eventually(PATIENCE, "a failed discovery", || async {
        (gitlab.discovery_fetches() >= 1).then_some(())
    })
    .await;
    let token = gitlab.mint(&job(&gitlab));
    let err = refusal(&verifier, &token).await;
    assert!(err.is_unavailable(), "{err}");
    eventually(PATIENCE, "the reason to name GitLab's answer", || async {
        let message = verifier.verify(&token).await.err()?.to_string();
        message.contains("answered HTTP 503").then_some(())
    })
    .await;

    gitlab.set_down(false);
    let verified = eventually(
        PATIENCE,
        "the keys to load after GitLab is back",
        || async { verifier.verify(&token).await.ok() },
    )
    .await;
    assert_eq!(verified.project_id.get(), 28);
}

#[tokio::test]
async fn a_discovery_document_naming_another_issuer_keeps_keys_unavailable() {
    let gitlab = GitLabOidc::start(0).await;
    gitlab.set_advertised_issuer(Some("https://gitlab.example.com"));
    let verifier = Verifier::start(config(&gitlab)).unwrap();
    let reason = eventually(PATIENCE, "discovery to be refused", || async {
        match verifier.keys_status() {
            KeysStatus::Unavailable { reason } if reason.contains("issuer") => Some(reason),
            _ => None,
        }
    })
    .await;
    assert_eq!(
        reason,
        format!(
            "GitLab's discovery document says its issuer is \"https://gitlab.example.com\", \
             but gitlab_url is \"{}\"; set gitlab_url to GitLab's external URL",
            gitlab.issuer()
        )
    );
    assert_eq!(
        gitlab.jwks_fetches(),
        0,
        "no keys are fetched from a wrong instance"
    );
}

#[tokio::test]
async fn a_trailing_slash_in_the_configured_url_is_the_same_issuer() {
    let gitlab = GitLabOidc::start(0).await;
    let config = VerifierConfig::new(
        Issuer::parse(&format!("{}/", gitlab.issuer())).unwrap(),
        AUD,
    )
    .unwrap();
    let verifier = verifier(&gitlab, config).await;
    verifier.verify(&gitlab.mint(&job(&gitlab))).await.unwrap();
}
