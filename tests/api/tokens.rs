//! Forged, tampered and expired access tokens: every one is 401 `invalid_token`.

use std::time::Duration;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    PASSWORD, TestApp, Tokens, access_of, assert_invalid_token, b64url, jwt_claims, jwt_header,
    pem, pem_to_der, sid_of, sign_jwt, spawn_app, unique_email, user_id_of,
};

struct Fixture {
    app: TestApp,
    tokens: Tokens,
    kid: String,
}

impl Fixture {
    async fn new() -> Self {
        let app = spawn_app().await;
        let tokens = app.signup_ok(&unique_email("forgery"), PASSWORD).await;
        let kid = app.current_kid().await;
        Fixture { app, tokens, kid }
    }

    fn real_token(&self) -> &str {
        access_of(&self.tokens)
    }

    /// Claims a real token of this user would carry, freshly dated.
    fn claims(&self) -> Value {
        self.app
            .valid_claims(user_id_of(&self.tokens), &sid_of(&self.tokens), "user")
    }

    fn header(&self) -> Value {
        json!({ "alg": "RS256", "typ": "JWT", "kid": self.kid })
    }

    /// Signs with the service's own key.
    fn sign(&self, header: &Value, claims: &Value) -> String {
        sign_jwt(header, claims, &self.app.signing_key(), Algorithm::RS256)
    }

    /// The service's public key: (SPKI DER, PKCS#1 DER, modulus).
    fn public_key(&self) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let pair = KeyPair::from_pkcs8(&pem_to_der(&self.app.signing_key_pem())).unwrap();
        let public = pair.public_key();
        let spki = public.as_der().unwrap().as_ref().to_vec();
        let pkcs1 = public.as_ref().to_vec();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        (spki, pkcs1, n)
    }

    /// /v1/me must accept `token` (a control for the forgeries built the same way).
    async fn assert_accepted(&self, token: &str) {
        let response = self.app.get_me(token).await;
        let status = response.status();
        let body = response.text().await.unwrap();
        assert_eq!(status, StatusCode::OK, "control token refused: {body}");
    }

    /// /v1/me must refuse `token` with 401 invalid_token and a Bearer challenge.
    async fn assert_refused(&self, what: &str, token: &str) {
        let response = self.app.get_me(token).await;
        let status = response.status();
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{what}: accepted or mis-answered"
        );
        assert_invalid_token(response, true).await;
    }
}

struct Attacker {
    key: EncodingKey,
    n: String,
    kid: String,
}

fn attacker() -> Attacker {
    let pair = KeyPair::generate(KeySize::Rsa2048).expect("RSA key generation failed");
    let pkcs8 = pair.as_der().unwrap();
    let key = EncodingKey::from_rsa_pem(pem("PRIVATE KEY", pkcs8.as_ref()).as_bytes()).unwrap();
    let n = b64url(
        pair.public_key()
            .modulus()
            .big_endian_without_leading_zero(),
    );
    let canonical = format!(r#"{{"e":"AQAB","kty":"RSA","n":"{n}"}}"#);
    let kid = b64url(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ));
    Attacker { key, n, kid }
}

#[both_backends]
async fn a_token_minted_with_the_service_key_is_accepted() {
    // The control for everything below: the minting code itself is right.
    let f = Fixture::new().await;
    f.assert_accepted(f.real_token()).await;
    let minted = f.sign(&f.header(), &f.claims());
    f.assert_accepted(&minted).await;
    f.assert_accepted(&f.app.mint(&f.claims()).await).await;
}

#[tokio::test]
async fn a_tampered_payload_is_refused() {
    let f = Fixture::new().await;
    let real = f.real_token();
    let parts: Vec<&str> = real.split('.').collect();

    let mut claims = jwt_claims(real);
    claims["exp"] = json!(claims["exp"].as_i64().unwrap() + 3600);
    let longer = format!("{}.{}.{}", parts[0], b64url(claims.to_string()), parts[2]);
    f.assert_refused("exp extended", &longer).await;

    let other = f.app.signup_ok(&unique_email("other"), PASSWORD).await;
    let mut claims = jwt_claims(real);
    claims["sub"] = other["user"]["id"].clone();
    let swapped = format!("{}.{}.{}", parts[0], b64url(claims.to_string()), parts[2]);
    f.assert_refused("sub swapped", &swapped).await;

    // One flipped character in the signature.
    let mut signature: Vec<char> = parts[2].chars().collect();
    let i = signature.len() / 2;
    signature[i] = if signature[i] == 'A' { 'B' } else { 'A' };
    let flipped = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        signature.iter().collect::<String>()
    );
    f.assert_refused("signature flipped", &flipped).await;

    // Signature of another token.
    let second = f
        .app
        .login_ok(other["user"]["email"].as_str().unwrap(), PASSWORD)
        .await;
    let other_signature = access_of(&second).split('.').nth(2).unwrap().to_owned();
    let spliced = format!("{}.{}.{}", parts[0], parts[1], other_signature);
    f.assert_refused("spliced signature", &spliced).await;
}

#[both_backends]
async fn a_role_edited_to_admin_is_refused() {
    let f = Fixture::new().await;
    let real = f.real_token();
    let parts: Vec<&str> = real.split('.').collect();
    let mut claims = jwt_claims(real);
    claims["role"] = json!("admin");
    let forged = format!("{}.{}.{}", parts[0], b64url(claims.to_string()), parts[2]);

    let response = f.app.get_with_token("/v1/admin/users", &forged).await;

    assert_invalid_token(response, true).await;
    f.assert_refused("role edited", &forged).await;
}

#[tokio::test]
async fn alg_none_is_refused_in_every_spelling() {
    let f = Fixture::new().await;
    for alg in ["none", "None", "NONE", "nOnE"] {
        for with_kid in [true, false] {
            let mut header = json!({ "alg": alg, "typ": "JWT" });
            if with_kid {
                header["kid"] = json!(f.kid);
            }
            let unsigned = format!(
                "{}.{}.",
                b64url(header.to_string()),
                b64url(f.claims().to_string())
            );
            f.assert_refused(&format!("alg {alg}"), &unsigned).await;
            // Without the trailing dot, and with the real signature left on.
            let no_dot = unsigned.trim_end_matches('.').to_owned();
            f.assert_refused(&format!("alg {alg}, two segments"), &no_dot)
                .await;
            let real_signature = f.real_token().split('.').nth(2).unwrap();
            f.assert_refused(
                &format!("alg {alg}, stale signature"),
                &format!("{unsigned}{real_signature}"),
            )
            .await;
        }
    }
}

#[tokio::test]
async fn hs256_signed_with_the_public_key_is_refused() {
    let f = Fixture::new().await;
    let (spki, pkcs1, n) = f.public_key();
    let n_b64 = b64url(&n);
    let spki_pem = pem("PUBLIC KEY", &spki);
    let pkcs1_pem = pem("RSA PUBLIC KEY", &pkcs1);
    let secrets: Vec<(&str, Vec<u8>)> = vec![
        ("SPKI PEM", spki_pem.clone().into_bytes()),
        (
            "SPKI PEM without newline",
            spki_pem.trim_end().as_bytes().to_vec(),
        ),
        ("PKCS#1 PEM", pkcs1_pem.into_bytes()),
        ("SPKI DER", spki),
        ("PKCS#1 DER", pkcs1),
        ("n bytes", n),
        ("n base64url", n_b64.into_bytes()),
    ];
    for (what, secret) in secrets {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let header = json!({ "alg": format!("{alg:?}"), "typ": "JWT", "kid": f.kid });
            let token = sign_jwt(
                &header,
                &f.claims(),
                &EncodingKey::from_secret(&secret),
                alg,
            );
            f.assert_refused(&format!("{alg:?} with {what}"), &token)
                .await;
        }
    }
}

#[tokio::test]
async fn other_rsa_algorithms_with_the_right_key_are_refused() {
    // The service pins RS256: the header's alg is never trusted.
    let f = Fixture::new().await;
    for alg in [Algorithm::RS384, Algorithm::RS512, Algorithm::PS256] {
        let header = json!({ "alg": format!("{alg:?}"), "typ": "JWT", "kid": f.kid });
        let token = sign_jwt(&header, &f.claims(), &f.app.signing_key(), alg);
        f.assert_refused(&format!("{alg:?}"), &token).await;
    }
}

#[tokio::test]
async fn unknown_missing_and_path_like_kids_are_refused() {
    let f = Fixture::new().await;
    let claims = f.claims();
    for kid in [
        json!("unknown-kid"),
        json!("../../etc/passwd"),
        json!("/dev/null"),
        json!(format!("{}x", f.kid)),
        json!(""),
        json!(42),
        Value::Null,
    ] {
        let header = json!({ "alg": "RS256", "typ": "JWT", "kid": kid });
        f.assert_refused(&format!("kid {kid}"), &f.sign(&header, &claims))
            .await;
    }
    let header = json!({ "alg": "RS256", "typ": "JWT" });
    f.assert_refused("no kid", &f.sign(&header, &claims)).await;
}

#[tokio::test]
async fn an_attacker_key_is_refused_wherever_the_header_points() {
    let f = Fixture::new().await;
    let attacker = attacker();
    let claims = f.claims();
    // Points at a path the attacker might control on the service's own host.
    let elsewhere = format!("http://127.0.0.1:{}/attacker/jwks.json", f.app.port);
    let jwk = json!({ "kty": "RSA", "use": "sig", "alg": "RS256", "kid": attacker.kid, "n": attacker.n, "e": "AQAB" });
    let headers = [
        (
            "plain, real kid",
            json!({ "alg": "RS256", "typ": "JWT", "kid": f.kid }),
        ),
        (
            "attacker kid",
            json!({ "alg": "RS256", "typ": "JWT", "kid": attacker.kid }),
        ),
        (
            "jku",
            json!({ "alg": "RS256", "typ": "JWT", "kid": attacker.kid, "jku": elsewhere }),
        ),
        (
            "jku, real kid",
            json!({ "alg": "RS256", "typ": "JWT", "kid": f.kid, "jku": elsewhere }),
        ),
        (
            "x5u",
            json!({ "alg": "RS256", "typ": "JWT", "kid": attacker.kid, "x5u": elsewhere }),
        ),
        (
            "jwk",
            json!({ "alg": "RS256", "typ": "JWT", "kid": attacker.kid, "jwk": jwk }),
        ),
        (
            "jwk, real kid",
            json!({ "alg": "RS256", "typ": "JWT", "kid": f.kid, "jwk": jwk }),
        ),
        (
            "jwk, no kid",
            json!({ "alg": "RS256", "typ": "JWT", "jwk": jwk }),
        ),
    ];
    for (what, header) in headers {
        let token = sign_jwt(&header, &claims, &attacker.key, Algorithm::RS256);
        f.assert_refused(what, &token).await;
    }
}

#[tokio::test]
async fn an_expired_token_is_refused() {
    let f = Fixture::new().await;
    let now = f.app.now().timestamp();
    let mut claims = f.claims();
    claims["iat"] = json!(now - 1200);
    claims["nbf"] = json!(now - 1200);
    claims["exp"] = json!(now - 300);

    f.assert_refused("expired", &f.sign(&f.header(), &claims))
        .await;
}

#[tokio::test]
async fn a_token_not_yet_valid_is_refused() {
    let f = Fixture::new().await;
    let now = f.app.now().timestamp();
    let mut claims = f.claims();
    claims["nbf"] = json!(now + 300);
    claims["exp"] = json!(now + 1200);

    f.assert_refused("nbf in the future", &f.sign(&f.header(), &claims))
        .await;
}

#[tokio::test]
async fn wrong_audience_or_issuer_is_refused() {
    let f = Fixture::new().await;
    let cases = [
        ("aud", json!("some-other-service")),
        ("aud", json!(["some-other-service"])),
        ("aud", json!("")),
        ("iss", json!("https://evil.example")),
        ("iss", json!(format!("{}/", f.app.settings.tokens.issuer))),
        ("iss", json!("")),
    ];
    for (claim, value) in cases {
        let mut claims = f.claims();
        claims[claim] = value.clone();
        f.assert_refused(&format!("{claim} = {value}"), &f.sign(&f.header(), &claims))
            .await;
    }
}

#[tokio::test]
async fn tokens_missing_a_required_claim_are_refused() {
    let f = Fixture::new().await;
    for claim in ["exp", "iss", "aud", "sub"] {
        let mut claims = f.claims();
        claims.as_object_mut().unwrap().remove(claim);
        f.assert_refused(&format!("no {claim}"), &f.sign(&f.header(), &claims))
            .await;
    }
}

#[both_backends]
async fn a_valid_signature_for_an_unknown_user_is_refused() {
    let f = Fixture::new().await;
    for sub in [Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let mut claims = f.claims();
        claims["sub"] = json!(sub);
        f.assert_refused(&format!("sub {sub}"), &f.sign(&f.header(), &claims))
            .await;
    }
}

#[tokio::test]
async fn garbage_is_refused() {
    let f = Fixture::new().await;
    let real = f.real_token().to_owned();
    let parts: Vec<&str> = real.split('.').collect();
    let garbage = [
        "garbage".to_owned(),
        "a.b.c".to_owned(),
        "..".to_owned(),
        "e30.e30.".to_owned(),
        "e30.e30.e30".to_owned(),
        "eyJhbGciOiJSUzI1NiJ9".to_owned(),
        "!!!.???.***".to_owned(),
        format!("{real}.{}", parts[2]),
        format!("{}.{}.{}", parts[1], parts[0], parts[2]),
        format!("{}.{}", parts[0], parts[1]),
        real.to_uppercase(),
    ];
    for token in &garbage {
        f.assert_refused(&format!("garbage {token:.40}"), token)
            .await;
    }
}

#[tokio::test]
async fn a_very_long_header_is_refused() {
    let f = Fixture::new().await;
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": f.kid, "pad": "x".repeat(6000) });
    let token = f.sign(&header, &f.claims());
    assert!(token.len() > 8000);

    f.assert_refused("long header", &token).await;

    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": "k".repeat(6000) });
    f.assert_refused("long kid", &f.sign(&header, &f.claims()))
        .await;
}

#[tokio::test]
async fn malformed_authorization_headers_are_refused() {
    let f = Fixture::new().await;
    let real = f.real_token();
    for value in [
        real.to_owned(),
        format!("Basic {real}"),
        format!("Token {real}"),
        format!("Bearer{real}"),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
    ] {
        let response = f.app.get_with_authorization("/v1/me", &value).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "Authorization: {value:.30}"
        );
        assert_invalid_token(response, false).await;
    }
}

#[both_backends]
async fn a_real_access_token_expires_on_the_service_clock() {
    let f = Fixture::new().await;
    let token = f.real_token();

    f.app.advance(Duration::from_secs(14 * 60));
    f.assert_accepted(token).await;

    f.app.advance(Duration::from_secs(2 * 60));
    f.assert_refused("expired by the clock", token).await;
    assert_eq!(jwt_header(token)["alg"], "RS256");
}
