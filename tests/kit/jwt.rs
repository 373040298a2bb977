//! JWTs taken apart, and forged: any header (it may lie about `alg`), any claims.

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
