//! The contract's shapes, asserted: error bodies, token responses, users, sessions.

use std::collections::BTreeSet;

use chrono::DateTime;
use reqwest::{Response, StatusCode};
use serde_json::Value;
use uuid::Uuid;

use super::body::TokenBody;
use super::jwt::b64url_decode;

/// Asserts the status and returns the JSON body.
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.expect("failed to read the body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

/// Asserts an error response: status, `Content-Type: application/json`, the shape
/// `{error, message, details?}` with `details` only on `validation_failed`, and the code.
/// Returns the body.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    let actual = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let text = response.text().await.expect("failed to read the body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    assert!(
        content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("application/json")),
        "error Content-Type is {content_type:?}; body: {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    assert_error_shape(&body);
    assert_eq!(body["error"], code, "unexpected error code: {body}");
    body
}

/// The contract's error shape, whatever the code.
pub fn assert_error_shape(body: &Value) {
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {body}"));
    // Login's `mfa_required` (401) carries the second step's token and methods.
    let challenge = body["error"] == "mfa_required" && object.contains_key("mfa_token");
    for key in object.keys() {
        assert!(
            ["error", "message", "details"].contains(&key.as_str())
                || (challenge && ["mfa_token", "methods"].contains(&key.as_str())),
            "unexpected key `{key}` in error body: {body}"
        );
    }
    let code = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("`error` is not a string: {body}"));
    assert!(
        !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
        "`error` is not a machine-readable code: {body}"
    );
    let message = body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("`message` is not a string: {body}"));
    assert!(!message.is_empty(), "empty message: {body}");
    if code == "validation_failed" {
        let details = body["details"]
            .as_array()
            .unwrap_or_else(|| panic!("validation_failed without a details array: {body}"));
        assert!(
            !details.is_empty(),
            "validation_failed with no details: {body}"
        );
        for detail in details {
            let detail_object = detail
                .as_object()
                .unwrap_or_else(|| panic!("detail is not an object: {body}"));
            assert!(
                detail_object.keys().all(|k| k == "field" || k == "message"),
                "detail has unexpected keys: {body}"
            );
            assert!(
                detail["field"].is_string(),
                "detail.field is not a string: {body}"
            );
            assert!(
                detail["message"].as_str().is_some_and(|m| !m.is_empty()),
                "detail.message is not a non-empty string: {body}"
            );
        }
    } else {
        assert!(
            object.get("details").is_none(),
            "`details` is only for validation_failed: {body}"
        );
    }
}

/// Asserts a 400 `validation_failed` whose details name exactly `fields`.
pub async fn assert_validation_failed(response: Response, fields: &[&str]) -> Value {
    let body = assert_error(response, StatusCode::BAD_REQUEST, "validation_failed").await;
    let actual: BTreeSet<&str> = body["details"]
        .as_array()
        .expect("details checked above")
        .iter()
        .map(|d| d["field"].as_str().expect("field checked above"))
        .collect();
    let expected: BTreeSet<&str> = fields.iter().copied().collect();
    assert_eq!(actual, expected, "failing fields differ: {body}");
    body
}

/// Asserts 401 `invalid_token` with a `WWW-Authenticate: Bearer …` challenge.
/// When `token_presented`, the challenge must also carry `error="invalid_token"`.
pub async fn assert_invalid_token(response: Response, token_presented: bool) -> Value {
    let challenge = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .map(|v| {
            v.to_str()
                .expect("WWW-Authenticate is not ASCII")
                .to_owned()
        });
    let body = assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let challenge = challenge.unwrap_or_else(|| panic!("no WWW-Authenticate header; body: {body}"));
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate is not a Bearer challenge: {challenge}"
    );
    if token_presented {
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "WWW-Authenticate lacks error=\"invalid_token\": {challenge}"
        );
    }
    body
}

/// Asserts a well-formed token response (status already checked) for `email`.
pub fn assert_token_response(body: &impl TokenBody, email: &str, role: &str) {
    let body = body.token_json();
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["expires_in"], 900, "{body}");
    let access = body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token: {body}"));
    assert_eq!(
        access.split('.').count(),
        3,
        "access token is not a JWS: {access}"
    );
    let refresh = body["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh_token: {body}"));
    assert_eq!(
        refresh.len(),
        43,
        "refresh token is not 43 chars: {refresh}"
    );
    assert_eq!(
        b64url_decode(refresh).len(),
        32,
        "refresh token is not 32 bytes of base64url: {refresh}"
    );
    let refresh_expires_in = body["refresh_expires_in"]
        .as_i64()
        .unwrap_or_else(|| panic!("refresh_expires_in is not an integer: {body}"));
    assert!(
        refresh_expires_in > 0 && refresh_expires_in <= 43_200,
        "refresh_expires_in out of range: {body}"
    );
    assert_user(&body["user"], email, role);
}

/// Asserts a User object.
pub fn assert_user(user: &Value, email: &str, role: &str) {
    let object = user
        .as_object()
        .unwrap_or_else(|| panic!("user is not an object: {user}"));
    let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "id",
            "email",
            "role",
            "disabled",
            "email_verified",
            "created_at",
            "mfa_enabled"
        ]),
        "user has unexpected fields: {user}"
    );
    let id = user["id"].as_str().expect("user.id is not a string");
    Uuid::parse_str(id).unwrap_or_else(|e| panic!("user.id is not a UUID ({e}): {user}"));
    assert_eq!(user["email"], email, "{user}");
    assert_eq!(user["role"], role, "{user}");
    assert!(user["disabled"].is_boolean(), "{user}");
    assert!(user["mfa_enabled"].is_boolean(), "{user}");
    assert!(user["email_verified"].is_boolean(), "{user}");
    let created_at = user["created_at"]
        .as_str()
        .expect("created_at is not a string");
    DateTime::parse_from_rfc3339(created_at)
        .unwrap_or_else(|e| panic!("created_at is not RFC 3339 ({e}): {user}"));
}

/// A user as the admin endpoints show them: the contract's user and `last_login_at`
/// (RFC 3339 or null).
pub fn assert_admin_user(user: &Value, email: &str, role: &str) {
    let mut plain = user.clone();
    let last_login = plain
        .as_object_mut()
        .and_then(|o| o.remove("last_login_at"))
        .unwrap_or_else(|| panic!("an admin's view of a user has last_login_at: {user}"));
    if let Some(at) = last_login.as_str() {
        DateTime::parse_from_rfc3339(at)
            .unwrap_or_else(|e| panic!("last_login_at is not RFC 3339 ({e}): {user}"));
    } else {
        assert!(last_login.is_null(), "last_login_at: {user}");
    }
    assert_user(&plain, email, role);
}

/// Asserts a Session object and returns its id.
pub fn assert_session_shape(session: &Value) -> String {
    let object = session
        .as_object()
        .unwrap_or_else(|| panic!("session is not an object: {session}"));
    let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "id",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "revoked_reason",
            "user_agent",
            "ip",
            "amr"
        ]),
        "session has unexpected fields: {session}"
    );
    for field in ["created_at", "last_used_at", "expires_at"] {
        let value = session[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is not a string: {session}"));
        DateTime::parse_from_rfc3339(value)
            .unwrap_or_else(|e| panic!("{field} is not RFC 3339 ({e}): {session}"));
    }
    let id = session["id"].as_str().expect("session id is not a string");
    Uuid::parse_str(id).unwrap_or_else(|e| panic!("session id is not a UUID ({e})"));
    id.to_owned()
}

pub fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("header is not ASCII").to_owned())
}
