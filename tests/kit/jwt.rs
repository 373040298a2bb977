//! JWTs taken apart, and forged: any header (it may lie about `alg`), any claims; and
//! verified offline with a JWK Set, as a resource server does.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey};
use serde_json::Value;

pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(text)
        .unwrap_or_else(|e| panic!("not base64url ({e}): {text}"))
}

pub fn try_b64url_decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

/// `base64url(header).base64url(claims)`
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string()),
        b64url(claims.to_string())
    )
}

/// Builds a JWT from an arbitrary header (which may lie about `alg`) and claims.
pub fn sign_jwt(header: &Value, claims: &Value, key: &EncodingKey, algorithm: Algorithm) -> String {
    let input = signing_input(header, claims);
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, algorithm)
        .expect("failed to sign the token");
    format!("{input}.{signature}")
}

/// The decoded JSON header of a JWT (no verification).
pub fn jwt_header(token: &str) -> Value {
    let segment = token.split('.').next().expect("token has no header");
    serde_json::from_slice(&b64url_decode(segment)).expect("JWT header is not JSON")
}

/// The decoded JSON claims of a JWT (no verification).
pub fn jwt_claims(token: &str) -> Value {
    let segment = token.split('.').nth(1).expect("token has no payload");
    serde_json::from_slice(&b64url_decode(segment)).expect("JWT payload is not JSON")
}

/// PEM-armours DER bytes.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside a PEM file.
pub fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).expect("PEM is not UTF-8");
    let body: String = text
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).expect("PEM body is not base64")
}

/// The `kid` in a token's header.
pub fn kid_of(token: &str) -> String {
    jsonwebtoken::decode_header(token)
        .expect("a JWT header")
        .kid
        .expect("a kid")
}

/// The kids of a JWK Set, in its order.
pub fn jwks_kids(set: &Value) -> Vec<String> {
    set["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

/// Verifies `token` offline with the JWK Set `set` (RS256, the issuer and audience the
/// test binaries use), as a resource server does.
pub fn verify_with_jwks(set: &Value, token: &str) -> Result<(), String> {
    use jsonwebtoken::{DecodingKey, Validation, decode};
    let kid = kid_of(token);
    let jwk = set["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or_else(|| format!("kid {kid} not published"))?;
    let key = DecodingKey::from_rsa_components(
        jwk["n"].as_str().expect("n"),
        jwk["e"].as_str().expect("e"),
    )
    .map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["gatehouse"]);
    validation.set_issuer(&["http://127.0.0.1"]);
    decode::<Value>(token, &key, &validation)
        .map(drop)
        .map_err(|e| e.to_string())
}
