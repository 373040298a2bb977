//! Response bodies as types. A `*_ok` helper deserializes into these, so a body that has
//! lost a field fails where it is received; the JSON is kept for tests that look at
//! exactly what was sent.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;

/// A token response: signup, login, refresh, password change.
#[derive(Clone, Debug, Deserialize)]
pub struct Tokens {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_expires_in: u64,
    pub user: UserBody,
    #[serde(skip)]
    json: Value,
}

/// The contract's User object; an unknown field is a contract change, so it fails here.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserBody {
    pub id: String,
    pub email: String,
    pub role: String,
    pub disabled: bool,
    pub email_verified: bool,
    pub created_at: DateTime<Utc>,
    pub mfa_enabled: bool,
}

impl Tokens {
    /// Panics, naming the body, unless `json` is a token response.
    pub fn from_json(json: Value) -> Self {
        let mut tokens: Self = serde_json::from_value(json.clone())
            .unwrap_or_else(|e| panic!("not a token response ({e}): {json}"));
        tokens.json = json;
        tokens
    }

    pub fn json(&self) -> &Value {
        &self.json
    }
}

/// `tokens["user"]["id"]`, as on the JSON, for tests written against it.
impl std::ops::Index<&str> for Tokens {
    type Output = Value;

    fn index(&self, key: &str) -> &Value {
        &self.json[key]
    }
}

impl fmt::Display for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.json.fmt(f)
    }
}

/// A token response either typed or as raw JSON (a test that read the body itself).
pub trait TokenBody {
    fn token_json(&self) -> &Value;
}

impl TokenBody for Value {
    fn token_json(&self) -> &Value {
        self
    }
}

impl TokenBody for Tokens {
    fn token_json(&self) -> &Value {
        &self.json
    }
}

pub fn access_of(body: &impl TokenBody) -> &str {
    let json = body.token_json();
    json["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {json}"))
}

pub fn refresh_of(body: &impl TokenBody) -> &str {
    let json = body.token_json();
    json["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh_token in {json}"))
}

pub fn user_id_of(body: &impl TokenBody) -> &str {
    let json = body.token_json();
    json["user"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no user.id in {json}"))
}

/// The refresh-token family (`sid`) the access token belongs to.
pub fn sid_of(body: &impl TokenBody) -> String {
    sid_in(access_of(body)).unwrap_or_else(|| panic!("no sid in the access token"))
}

/// The `sid` claim of an access token, without verifying it; `None` when the text is not
/// a JWT carrying one.
pub fn sid_in(access_token: &str) -> Option<String> {
    let payload = access_token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&super::jwt::try_b64url_decode(payload)?).ok()?;
    claims["sid"].as_str().map(str::to_owned)
}
