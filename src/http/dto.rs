//! The contract's JSON bodies. Request fields are `Option` so that a missing field is
//! reported by validation, together with every other failing field, not by serde alone.

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use validator::{Validate, ValidationError, ValidationErrors};

use crate::crypto::lifecycle::{KeyStatus, Stage};
use crate::domain::{Email, NewPassword, Role, Session, User};
use crate::service::FieldError;
use crate::service::admin::{AuditStats, UserView};
use crate::service::tokens::TokenPair;
use crate::storage::AuditRecord;

/// Passwords longer than this are refused before any hashing: nobody types more, and
/// Argon2 over megabytes would be a cheap way to burn our CPU.
const MAX_PASSWORD_CHARS: u64 = 128;

fn rule(message: impl Into<Cow<'static, str>>) -> ValidationError {
    ValidationError::new("invalid").with_message(message.into())
}

pub(super) fn email_rule(value: &str) -> Result<(), ValidationError> {
    Email::parse(value).map(|_| ()).map_err(rule)
}

pub(super) fn new_password_rule(value: &str) -> Result<(), ValidationError> {
    NewPassword::parse(value).map(|_| ()).map_err(rule)
}

/// `validator`'s errors as the contract's `details`, one entry per failing field.
pub fn field_errors(errors: &ValidationErrors) -> Vec<FieldError> {
    let mut out: Vec<FieldError> = errors
        .field_errors()
        .into_iter()
        .map(|(field, errs)| {
            let message = errs
                .first()
                .and_then(|e| e.message.clone())
                .unwrap_or(Cow::Borrowed("is invalid"));
            FieldError::new(&field, message)
        })
        .collect();
    out.sort_by(|a, b| a.field.cmp(&b.field));
    out
}

#[derive(Deserialize, Validate)]
pub struct SignupRequest {
    #[validate(required(message = "is required"), custom(function = "email_rule"))]
    pub email: Option<String>,
    #[validate(
        required(message = "is required"),
        custom(function = "new_password_rule")
    )]
    pub password: Option<String>,
}

#[derive(Deserialize, Validate)]
pub struct LoginRequest {
    #[validate(required(message = "is required"), custom(function = "email_rule"))]
    pub email: Option<String>,
    #[validate(
        required(message = "is required"),
        length(min = 1, max = MAX_PASSWORD_CHARS, message = "must be 1 to 128 characters")
    )]
    pub password: Option<String>,
}

#[derive(Deserialize, Validate)]
pub struct RefreshRequest {
    #[validate(
        required(message = "is required"),
        length(min = 1, message = "must not be empty")
    )]
    pub refresh_token: Option<String>,
}

#[derive(Deserialize, Validate)]
pub struct PasswordChangeRequest {
    #[validate(
        required(message = "is required"),
        length(min = 1, max = MAX_PASSWORD_CHARS, message = "must be 1 to 128 characters")
    )]
    pub current_password: Option<String>,
    #[validate(
        required(message = "is required"),
        custom(function = "new_password_rule")
    )]
    pub new_password: Option<String>,
}

#[derive(Deserialize, Validate)]
pub struct DeleteAccountRequest {
    #[validate(
        required(message = "is required"),
        length(min = 1, max = MAX_PASSWORD_CHARS, message = "must be 1 to 128 characters")
    )]
    pub password: Option<String>,
}

#[derive(Deserialize)]
pub struct AdminUserPatch {
    pub role: Option<String>,
    pub disabled: Option<bool>,
}

#[derive(Deserialize)]
pub struct UserQuery {
    pub email: Option<String>,
    pub limit: Option<u32>,
}

#[derive(Deserialize)]
pub struct AuditQuery {
    pub user_id: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub limit: Option<u32>,
    /// The id of the last event of the previous page.
    pub before: Option<i64>,
}

/// A passkey as its owner and admins see it (never its key or credential id).
#[derive(Serialize)]
pub struct PasskeyDto {
    pub id: String,
    pub name: String,
    pub created_at: String,
    pub last_used_at: Option<String>,
}

impl From<crate::service::passkeys::PasskeyInfo> for PasskeyDto {
    fn from(p: crate::service::passkeys::PasskeyInfo) -> Self {
        Self {
            id: p.id.to_string(),
            name: p.name,
            created_at: rfc3339(p.created_at),
            last_used_at: p.last_used_at.map(rfc3339),
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

#[derive(Serialize)]
pub struct UserDto {
    pub id: String,
    pub email: String,
    pub role: Role,
    pub disabled: bool,
    pub email_verified: bool,
    pub created_at: String,
    pub mfa_enabled: bool,
}

impl From<User> for UserDto {
    fn from(u: User) -> Self {
        Self {
            id: u.id.to_string(),
            email: u.email.as_str().to_owned(),
            role: u.role,
            disabled: u.disabled,
            email_verified: u.email_verified,
            created_at: rfc3339(u.created_at),
            mfa_enabled: u.mfa_enabled,
        }
    }
}

#[derive(Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: u64,
    pub refresh_token: String,
    pub refresh_expires_in: u64,
    pub user: UserDto,
}

impl From<TokenPair> for TokenResponse {
    fn from(p: TokenPair) -> Self {
        Self {
            access_token: p.access_token,
            token_type: "Bearer",
            expires_in: p.expires_in,
            refresh_token: p.refresh_token.expose().to_owned(),
            refresh_expires_in: p.refresh_expires_in,
            user: p.user.into(),
        }
    }
}

#[derive(Serialize)]
pub struct SessionDto {
    pub id: String,
    pub created_at: String,
    pub last_used_at: String,
    pub expires_at: String,
    pub revoked_at: Option<String>,
    pub revoked_reason: Option<&'static str>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// How the login was authenticated (RFC 8176).
    pub amr: &'static [&'static str],
}

impl From<Session> for SessionDto {
    fn from(s: Session) -> Self {
        Self {
            id: s.id.to_string(),
            created_at: rfc3339(s.created_at),
            last_used_at: rfc3339(s.last_used_at),
            expires_at: rfc3339(s.expires_at),
            revoked_at: s.revoked_at.map(rfc3339),
            revoked_reason: s.revoked_reason.map(|r| r.as_str()),
            user_agent: s.user_agent,
            ip: s.ip,
            amr: s.amr.methods(),
        }
    }
}

#[derive(Serialize)]
pub struct SessionList {
    pub sessions: Vec<SessionDto>,
}

impl SessionList {
    pub fn new(sessions: Vec<Session>) -> Self {
        Self {
            sessions: sessions.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Serialize)]
pub struct UserList {
    pub users: Vec<UserDto>,
}

#[derive(Serialize)]
pub struct AuditEventDto {
    pub id: i64,
    pub at: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub user_id: Option<String>,
    pub family_id: Option<String>,
    pub actor_id: Option<String>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

impl From<AuditRecord> for AuditEventDto {
    fn from(r: AuditRecord) -> Self {
        Self {
            id: r.id,
            at: rfc3339(r.at),
            kind: r.kind,
            user_id: r.user_id.map(|u| u.to_string()),
            family_id: r.family_id.map(|u| u.to_string()),
            actor_id: r.actor_id.map(|u| u.to_string()),
            ip: r.ip,
            user_agent: r.user_agent,
            outcome: r.outcome,
            detail: r.detail,
        }
    }
}

#[derive(Serialize)]
pub struct AuditList {
    pub events: Vec<AuditEventDto>,
}

#[derive(Deserialize)]
pub struct StatsQuery {
    pub since: Option<String>,
}

/// A user as the admin endpoints show them: the contract's user and the last login.
#[derive(Serialize)]
pub struct AdminUserDto {
    #[serde(flatten)]
    pub user: UserDto,
    pub last_login_at: Option<String>,
}

impl From<UserView> for AdminUserDto {
    fn from(v: UserView) -> Self {
        Self {
            user: v.user.into(),
            last_login_at: v.last_login_at.map(rfc3339),
        }
    }
}

#[derive(Serialize)]
pub struct AdminUserList {
    pub users: Vec<AdminUserDto>,
}

fn unix_rfc3339(secs: Option<i64>) -> Option<String> {
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
        .map(rfc3339)
}

#[derive(Serialize)]
pub struct KeyDto {
    pub kid: String,
    pub stage: Stage,
    pub hand_placed: bool,
    pub published_at: Option<String>,
    pub activated_at: Option<String>,
    pub retired_at: Option<String>,
    pub unpublish_at: Option<String>,
}

impl From<KeyStatus> for KeyDto {
    fn from(k: KeyStatus) -> Self {
        Self {
            kid: k.kid,
            stage: k.stage,
            hand_placed: k.hand_placed,
            published_at: unix_rfc3339(k.published_at),
            activated_at: unix_rfc3339(k.activated_at),
            retired_at: unix_rfc3339(k.retired_at),
            unpublish_at: unix_rfc3339(k.unpublish_at),
        }
    }
}

#[derive(Serialize)]
pub struct KeyList {
    pub keys: Vec<KeyDto>,
}

#[derive(Serialize)]
pub struct StatsDto {
    pub from: String,
    pub to: String,
    pub hours: Vec<String>,
    pub counts: std::collections::BTreeMap<&'static str, Vec<u64>>,
}

impl From<AuditStats> for StatsDto {
    fn from(s: AuditStats) -> Self {
        Self {
            from: rfc3339(s.from),
            to: rfc3339(s.to),
            hours: s.hours.into_iter().map(rfc3339).collect(),
            counts: s.counts.into_iter().map(|(k, v)| (k.as_str(), v)).collect(),
        }
    }
}
