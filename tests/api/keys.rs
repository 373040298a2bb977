//! Key rotation as verifiers see it: the JWKS keeps every key whose tokens may be live.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{PASSWORD, access_of, expect_json, jwt_header, spawn_app, unique_email};

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap_or_else(|| panic!("keys is not an array: {jwks}"))
        .iter()
        .map(|k| k["kid"].as_str().expect("kid is not a string").to_owned())
        .collect()
}

/// Verifies `token` offline exactly as another service would, with the given JWK Set.
fn verify_with(jwks: &Value, token: &str, issuer: &str, audience: &str) -> Value {
    let kid = decode_header(token).unwrap().kid.expect("no kid");
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not published: {jwks}"));
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&[issuer]);
    decode::<Value>(token, &key, &validation)
        .unwrap_or_else(|e| panic!("offline verification failed: {e}"))
        .claims
}

#[both_backends]
async fn after_a_rotation_old_tokens_still_verify_and_new_ones_use_the_new_key() {
    let app = spawn_app().await;
    let email = unique_email("rotation");
    let before = app.signup_ok(&email, PASSWORD).await;
    let old_kid = app.current_kid().await;
    assert_eq!(jwt_header(access_of(&before))["kid"], old_kid.as_str());
    let old_etag =
        crate::helpers::header(&app.get("/.well-known/jwks.json").await, "etag").expect("no ETag");

    app.cli_ok(&["keys", "generate"], None).await;
    app.cli_ok(&["keys", "rotate", "--force"], None).await;
    // A replica started after the rotation (or this one, restarted).
    let replica = app.spawn_replica().await;

    let response = app
        .api_client
        .get(format!("{replica}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    let jwks = expect_json(response, StatusCode::OK).await;
    let published = kids(&jwks);
    assert_eq!(published.len(), 2, "current and retired key: {jwks}");
    assert!(
        published.contains(&old_kid),
        "the retired key is gone: {jwks}"
    );

    // New tokens are signed with the new key.
    let response = app
        .api_client
        .post(format!("{replica}/v1/login"))
        .json(&serde_json::json!({ "email": email, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let after = expect_json(response, StatusCode::OK).await;
    let new_kid = jwt_header(access_of(&after))["kid"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new_kid, old_kid, "still signing with the retired key");
    assert!(published.contains(&new_kid));

    // Both verify offline against the one published set, and on the service itself.
    let (issuer, audience) = (&app.settings.tokens.issuer, &app.settings.tokens.audience);
    verify_with(&jwks, access_of(&before), issuer, audience);
    verify_with(&jwks, access_of(&after), issuer, audience);
    for token in [access_of(&before), access_of(&after)] {
        let response = app
            .api_client
            .get(format!("{replica}/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
    }

    // The set changed, so its ETag did too.
    let response = app
        .api_client
        .get(format!("{replica}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    let new_etag = crate::helpers::header(&response, "etag").expect("no ETag");
    assert_ne!(new_etag, old_etag, "a different key set kept its ETag");
}

#[both_backends]
async fn a_generated_next_key_is_published_before_it_signs() {
    let app = spawn_app().await;
    let old_kid = app.current_kid().await;

    app.cli_ok(&["keys", "generate"], None).await;
    let replica = app.spawn_replica().await;

    let response = app
        .api_client
        .get(format!("{replica}/.well-known/jwks.json"))
        .send()
        .await
        .unwrap();
    let jwks = expect_json(response, StatusCode::OK).await;
    let published = kids(&jwks);
    assert_eq!(
        published.len(),
        2,
        "the next key is published at once: {jwks}"
    );
    let response = app
        .api_client
        .post(format!("{replica}/v1/signup"))
        .json(&serde_json::json!({ "email": unique_email("next"), "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let tokens = expect_json(response, StatusCode::CREATED).await;
    assert_eq!(
        jwt_header(access_of(&tokens))["kid"],
        old_kid.as_str(),
        "a next key must not sign before `keys rotate`"
    );
}

#[both_backends]
async fn keys_generate_says_servers_publish_the_next_key_within_the_reload_interval() {
    // A running server publishes a key the CLI made at its next reload, not at once: the
    // message must say so, naming the setting and its value, or an operator rotates
    // before every replica (or the one SQLite server) publishes the key.
    let app = spawn_app().await;

    let out = app
        .binary()
        .with("GATEHOUSE_KEYS_RELOAD_INTERVAL", "45")
        .cli_ok(&["keys", "generate"], None)
        .await;

    assert!(out.contains("next:"), "{out}");
    assert!(!out.contains("published now"), "{out}");
    for wanted in ["within 45s", "GATEHOUSE_KEYS_RELOAD_INTERVAL", "SIGHUP"] {
        assert!(out.contains(wanted), "{wanted:?} missing: {out}");
    }
}
