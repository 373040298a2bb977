use std::collections::BTreeSet;
use std::time::Duration;

use aws_lc_rs::signature::KeyPair as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    PASSWORD, access_of, b64url, b64url_decode, expect_json, header, pem_to_der, spawn_app,
    spawn_app_with, unique_email,
};

/// RFC 7638 §3: SHA-256 over the required members in lexicographic order, no whitespace.
fn thumbprint(n: &str, e: &str) -> String {
    let canonical = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
    b64url(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

#[both_backends]
async fn jwks_publishes_the_signing_key() {
    let app = spawn_app().await;

    let response = app.get("/.well-known/jwks.json").await;

    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        header(&response, "content-type").is_some_and(|ct| ct.starts_with("application/json")),
        "JWKS content type: {:?}",
        header(&response, "content-type")
    );
    let jwks: Value = response.json().await.unwrap();
    let keys = jwks["keys"].as_array().expect("keys is not an array");
    assert_eq!(keys.len(), 1, "{jwks}");
    let key = &keys[0];
    let members: BTreeSet<&str> = key
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        members,
        BTreeSet::from(["kty", "use", "alg", "kid", "n", "e"]),
        "a public JWK must not carry anything else (least of all private members): {key}"
    );
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["use"], "sig");
    assert_eq!(key["alg"], "RS256");
    assert_eq!(key["e"], "AQAB");
    let n = key["n"].as_str().unwrap();
    let modulus = b64url_decode(n);
    assert_eq!(
        modulus.len(),
        256,
        "not a 2048-bit modulus without a leading zero"
    );
    assert_eq!(
        key["kid"],
        thumbprint(n, "AQAB").as_str(),
        "kid is not the RFC 7638 thumbprint"
    );

    // It is the public half of the key the service signs with.
    let pair = aws_lc_rs::rsa::KeyPair::from_pkcs8(&pem_to_der(&app.signing_key_pem()))
        .expect("the signing key is not a PKCS#8 RSA key");
    assert_eq!(
        pair.public_key()
            .modulus()
            .big_endian_without_leading_zero(),
        modulus.as_slice()
    );
}

#[tokio::test]
async fn jwks_is_cacheable_with_a_strong_etag() {
    let app = spawn_app().await;

    let first = app.get("/.well-known/jwks.json").await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(
        header(&first, "cache-control").as_deref(),
        Some("public, max-age=300")
    );
    let etag = header(&first, "etag").expect("JWKS without ETag");
    assert!(!etag.starts_with("W/"), "ETag is weak: {etag}");
    assert!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "ETag is not a quoted string: {etag}"
    );
    let body = first.bytes().await.unwrap();

    // Stable while the key ring does not change.
    let second = app.get("/.well-known/jwks.json").await;
    assert_eq!(header(&second, "etag").as_deref(), Some(etag.as_str()));
    assert_eq!(second.bytes().await.unwrap(), body);

    // A matching If-None-Match gets 304 and no body.
    let revalidated = app
        .api_client
        .get(app.url("/.well-known/jwks.json"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(header(&revalidated, "etag").as_deref(), Some(etag.as_str()));
    assert!(revalidated.bytes().await.unwrap().is_empty());

    // A stale one gets the full set.
    let stale = app
        .api_client
        .get(app.url("/.well-known/jwks.json"))
        .header("if-none-match", "\"stale-etag\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::OK);
    assert_eq!(stale.bytes().await.unwrap(), body);
}

#[tokio::test]
async fn if_none_match_accepts_a_list_of_etags() {
    let app = spawn_app().await;
    let etag = header(&app.get("/.well-known/jwks.json").await, "etag").expect("no ETag");

    let response = app
        .api_client
        .get(app.url("/.well-known/jwks.json"))
        .header("if-none-match", format!("\"older\", {etag}"))
        .send()
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn jwks_max_age_follows_the_settings() {
    let app = spawn_app_with(|s| s.http.jwks_max_age = Duration::from_secs(60)).await;

    let response = app.get("/.well-known/jwks.json").await;

    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("public, max-age=60")
    );
}

#[both_backends]
async fn two_apps_have_different_keys() {
    let one = spawn_app().await;
    let two = spawn_app().await;

    assert_ne!(one.current_kid().await, two.current_kid().await);
}

#[tokio::test]
async fn openid_configuration_describes_the_issuer() {
    let app = spawn_app().await;

    let response = app.get("/.well-known/openid-configuration").await;

    let config = expect_json(response, StatusCode::OK).await;
    assert_eq!(config["issuer"], app.settings.tokens.issuer.as_str());
    assert_eq!(
        config["jwks_uri"],
        format!("{}/.well-known/jwks.json", app.settings.tokens.issuer)
    );
    assert_eq!(
        config["id_token_signing_alg_values_supported"],
        json!(["RS256"])
    );
}

#[both_backends]
async fn an_access_token_verifies_offline_with_the_jwks() {
    let app = spawn_app().await;
    let email = unique_email("offline");
    let tokens = app.signup_ok(&email, PASSWORD).await;
    let token = access_of(&tokens);

    // Exactly what a separate service would do: header kid → JWKS key → RS256 only.
    let header = decode_header(token).expect("undecodable JWT header");
    assert_eq!(header.alg, Algorithm::RS256);
    assert_eq!(header.typ.as_deref(), Some("JWT"));
    let kid = header.kid.expect("access token without kid");
    let jwks = app.jwks_ok().await;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} is not in the JWKS: {jwks}"));
    let key =
        DecodingKey::from_rsa_components(jwk["n"].as_str().unwrap(), jwk["e"].as_str().unwrap())
            .unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&app.settings.tokens.audience]);
    validation.set_issuer(&[&app.settings.tokens.issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "nbf", "iss", "aud", "sub"]);
    validation.validate_nbf = true;
    validation.leeway = 0;
    let data = decode::<Value>(token, &key, &validation).expect("offline verification failed");
    let claims = data.claims;

    let names: BTreeSet<&str> = claims
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "role", "amr"
        ]),
        "{claims}"
    );
    // RFC 8176: a password alone.
    assert_eq!(claims["amr"], serde_json::json!(["pwd"]), "{claims}");
    assert_eq!(claims["iss"], app.settings.tokens.issuer.as_str());
    assert_eq!(claims["aud"], app.settings.tokens.audience.as_str());
    assert_eq!(claims["sub"], tokens["user"]["id"]);
    for uuid_claim in ["sub", "sid", "jti"] {
        let value = claims[uuid_claim].as_str().unwrap();
        Uuid::parse_str(value).unwrap_or_else(|e| panic!("{uuid_claim} is not a UUID ({e})"));
    }
    assert_eq!(claims["role"], "user");
    let iat = claims["iat"].as_i64().unwrap();
    assert_eq!(claims["exp"].as_i64().unwrap() - iat, 900);
    assert_eq!(claims["nbf"].as_i64().unwrap(), iat);
    assert!((iat - app.now().timestamp()).abs() <= 5, "iat is not now");
    let text = claims.to_string();
    assert!(
        !text.contains(&email),
        "the email leaks into the token: {text}"
    );
    assert!(
        !text.contains("argon2"),
        "password material in the token: {text}"
    );

    // A verifier expecting another audience rejects it.
    let mut other = Validation::new(Algorithm::RS256);
    other.set_audience(&["some-other-service"]);
    assert!(decode::<Value>(token, &key, &other).is_err());
}

#[tokio::test]
async fn access_ttl_follows_the_settings() {
    let app = spawn_app_with(|s| s.tokens.access_ttl = Duration::from_secs(5 * 60)).await;

    let tokens = app.signup_ok(&unique_email("ttl"), PASSWORD).await;

    assert_eq!(tokens["expires_in"], 300);
    let claims = crate::helpers::jwt_claims(access_of(&tokens));
    assert_eq!(
        claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(),
        300
    );
}
