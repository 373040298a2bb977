//! Passkeys (WebAuthn): registering, listing and removing a user's passkeys, and the
//! ceremonies' flows. Logging in with one is `login`.
//!
//! The relying party is `webauthn-rs`: it builds the options and checks a response
//! (challenge, origin, RP ID hash, signature, user verification). What it cannot know
//! is kept here and in the store: a ceremony's state waits in the database under its
//! `flow_id` (any replica may receive the response) and is spent by its first use, and a
//! login's signature counter is accepted once across replicas (see
//! `storage::passkeys`).

pub mod login;
pub mod settings;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;
use webauthn_rs::prelude::{
    Credential, CredentialID, Passkey, PasskeyRegistration, RegisterPublicKeyCredential, Webauthn,
    WebauthnBuilder,
};

pub use self::settings::WebauthnSettings;
use super::audit::event;
use super::caller::Caller;
use super::{AppState, ClientMeta, FieldError, ServiceError};
use crate::crypto::{b64url, random_bytes, sha256};
use crate::domain::{AuditKind, User, UserId};
use crate::storage::{
    AuditEvent, FlowKind, NewFlow, NewPasskey, StoredPasskey, TakenFlow, TokenHashBytes,
};

/// 256 bits, base64url: the shape of a refresh token.
const FLOW_ID_BYTES: usize = 32;
const FLOW_ID_CHARS: usize = 43;
/// How long a ceremony may take (the contract's five minutes), also the options'
/// `timeout` a browser shows.
const FLOW_TTL: std::time::Duration = std::time::Duration::from_secs(300);
pub const MAX_NAME_CHARS: usize = 64;

/// The relying party, built once from the settings.
pub struct RelyingParty {
    webauthn: Webauthn,
}

impl RelyingParty {
    /// `None` when passkeys are off (no RP ID). The settings' checks have run: an error
    /// here is the library refusing what they passed.
    pub fn new(settings: &WebauthnSettings) -> Result<Option<Self>, String> {
        let (Some(rp_id), Some((first, others))) =
            (settings.rp_id.as_deref(), settings.origins.split_first())
        else {
            return Ok(None);
        };
        let mut builder = WebauthnBuilder::new(rp_id, first)
            .map_err(|e| format!("the WebAuthn relying party refused {rp_id:?}: {e}"))?
            .rp_name(rp_id)
            .timeout(FLOW_TTL);
        for origin in others {
            builder = builder.append_allowed_origin(origin);
        }
        let webauthn = builder
            .build()
            .map_err(|e| format!("the WebAuthn relying party refused its settings: {e}"))?;
        Ok(Some(Self { webauthn }))
    }
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelyingParty")
    }
}

/// The relying party, or 404 for every passkey endpoint while passkeys are off.
fn relying_party(state: &AppState) -> Result<&Webauthn, ServiceError> {
    state
        .passkeys
        .as_deref()
        .map(|rp| &rp.webauthn)
        .ok_or(ServiceError::NotFound)
}

/// What an options endpoint answers: the flow to send back, and the WebAuthn options
/// JSON itself (not wrapped in `publicKey`).
#[derive(Debug)]
pub struct FlowOptions {
    pub flow_id: String,
    pub options: serde_json::Value,
}

/// A passkey as its owner and admins see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyInfo {
    pub id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

impl From<&StoredPasskey> for PasskeyInfo {
    fn from(p: &StoredPasskey) -> Self {
        Self {
            id: p.id,
            name: p.name.clone(),
            created_at: p.created_at,
            last_used_at: p.last_used_at,
        }
    }
}

fn internal(reason: &'static str) -> impl FnOnce(serde_json::Error) -> ServiceError {
    move |e| ServiceError::internal_because(reason, e)
}

/// Stores a ceremony's state under a new `flow_id`.
async fn open_flow(
    state: &AppState,
    kind: FlowKind,
    user: Option<UserId>,
    mfa_token_hash: Option<TokenHashBytes>,
    ceremony: &impl Serialize,
    options: serde_json::Value,
) -> Result<FlowOptions, ServiceError> {
    let flow_id = b64url(&random_bytes::<FLOW_ID_BYTES>());
    let now = state.now();
    let flow = NewFlow {
        hash: sha256(flow_id.as_bytes()),
        kind,
        user_id: user,
        mfa_token_hash,
        state: serde_json::to_string(ceremony).map_err(internal("serializing a ceremony"))?,
        expires_at: now + chrono::Duration::seconds(FLOW_TTL.as_secs() as i64),
        now,
    };
    state.db(move |s| s.create_flow(flow)).await?;
    Ok(FlowOptions { flow_id, options })
}

/// Takes (spends) the flow `presented` names: `InvalidFlow` unless it exists, is
/// current and was opened for `kind`.
async fn take_flow(
    state: &AppState,
    presented: &str,
    kind: FlowKind,
) -> Result<TakenFlow, ServiceError> {
    let shaped = presented.len() == FLOW_ID_CHARS
        && presented
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !shaped {
        return Err(ServiceError::InvalidFlow);
    }
    let (hash, now) = (sha256(presented.as_bytes()), state.now());
    state
        .db(move |s| s.take_flow(&hash, now))
        .await?
        .filter(|flow| flow.kind == kind)
        .ok_or(ServiceError::InvalidFlow)
}

fn ceremony<T: DeserializeOwned>(flow: &TakenFlow) -> Result<T, ServiceError> {
    serde_json::from_str(&flow.state).map_err(internal("reading a stored ceremony"))
}

fn passkey_of(stored: &StoredPasskey) -> Result<Passkey, ServiceError> {
    serde_json::from_str(&stored.credential).map_err(internal("reading a stored passkey"))
}

fn credential_id(stored: &StoredPasskey) -> CredentialID {
    CredentialID::from(stored.credential_id.clone())
}

/// The user's passkeys, oldest first.
pub async fn list(state: &AppState, user: UserId) -> Result<Vec<PasskeyInfo>, ServiceError> {
    relying_party(state)?;
    let passkeys = state.db(move |s| s.passkeys_of(user)).await?;
    Ok(passkeys.iter().map(PasskeyInfo::from).collect())
}

/// Whether `user` can answer a second-factor challenge with a passkey now.
pub async fn usable_by(state: &AppState, user: UserId) -> Result<bool, ServiceError> {
    if state.passkeys.is_none() {
        return Ok(false);
    }
    Ok(!state.db(move |s| s.passkeys_of(user)).await?.is_empty())
}

/// `POST /v1/me/passkeys/options`: creation options for the caller, their passkeys
/// excluded (an authenticator holding one says so instead of making a second).
pub async fn registration_options(
    state: &AppState,
    caller: &Caller,
) -> Result<FlowOptions, ServiceError> {
    let webauthn = relying_party(state)?;
    let user = &caller.user;
    let id = user.id;
    let existing = state.db(move |s| s.passkeys_of(id)).await?;
    let exclude = existing.iter().map(credential_id).collect();
    let email = user.email.as_str();
    let (creation, ceremony) = webauthn
        .start_passkey_registration(id.as_uuid(), email, email, Some(exclude))
        .map_err(|e| ServiceError::internal_because("starting a registration", e))?;
    let mut options =
        serde_json::to_value(&creation.public_key).map_err(internal("serializing options"))?;
    // A discoverable credential is what makes a passwordless login possible: ask for one
    // (the library asks for none), without failing authenticators that cannot store it.
    if let Some(selection) = options
        .get_mut("authenticatorSelection")
        .and_then(|s| s.as_object_mut())
    {
        selection.insert("residentKey".into(), "preferred".into());
        selection.insert("requireResidentKey".into(), false.into());
    }
    open_flow(
        state,
        FlowKind::Register,
        Some(id),
        None,
        &ceremony,
        options,
    )
    .await
}

/// A passkey's name: trimmed, 1–64 characters, no control characters.
fn passkey_name(name: &str) -> Result<String, ServiceError> {
    let name = name.trim();
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ServiceError::Validation(vec![FieldError::new(
            "name",
            "must be 1 to 64 characters, without control characters",
        )]));
    }
    Ok(name.to_owned())
}

fn passkey_event(
    state: &AppState,
    kind: AuditKind,
    user: &User,
    meta: &ClientMeta,
    outcome: &'static str,
) -> AuditEvent {
    event(state, kind, Some(user), meta, outcome)
}

/// `POST /v1/me/passkeys`: checks the authenticator's response against the caller's
/// flow and stores the credential.
pub async fn register(
    state: &AppState,
    caller: Caller,
    flow_id: &str,
    name: &str,
    credential: serde_json::Value,
    meta: &ClientMeta,
) -> Result<PasskeyInfo, ServiceError> {
    let webauthn = relying_party(state)?;
    let name = passkey_name(name)?;
    let user = caller.user;
    let flow = take_flow(state, flow_id, FlowKind::Register).await?;
    if flow.user_id != Some(user.id) {
        return Err(ServiceError::InvalidFlow);
    }
    let ceremony: PasskeyRegistration = ceremony(&flow)?;
    let verified = serde_json::from_value::<RegisterPublicKeyCredential>(credential)
        .map_err(|e| e.to_string())
        .and_then(|response| {
            webauthn
                .finish_passkey_registration(&response, &ceremony)
                .map_err(|e| e.to_string())
        });
    let passkey = match verified {
        Ok(passkey) => passkey,
        Err(reason) => {
            tracing::info!(user = %user.id, %reason, "passkey registration refused");
            state
                .audit(AuditEvent {
                    detail: Some(reason),
                    ..passkey_event(state, AuditKind::PasskeyFailed, &user, meta, "registration")
                })
                .await;
            return Err(ServiceError::PasskeyRejected);
        }
    };
    let stored = serde_json::to_string(&passkey).map_err(internal("serializing a passkey"))?;
    let credential = Credential::from(passkey);
    let now = state.now();
    let row = NewPasskey {
        id: Uuid::new_v4(),
        user_id: user.id,
        credential_id: credential.cred_id.to_vec(),
        credential: stored,
        sign_count: credential.counter,
        backup_eligible: credential.backup_eligible,
        backup_state: credential.backup_state,
        name,
        now,
    };
    let info = PasskeyInfo {
        id: row.id,
        name: row.name.clone(),
        created_at: DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now),
        last_used_at: None,
    };
    if !state.db(move |s| s.add_passkey(row)).await? {
        return Err(ServiceError::PasskeyExists);
    }
    state
        .audit(AuditEvent {
            detail: Some(format!("passkey {}", info.id)),
            ..passkey_event(state, AuditKind::PasskeyRegistered, &user, meta, "ok")
        })
        .await;
    Ok(info)
}

/// `DELETE /v1/me/passkeys/{id}` (`admin`: none) and the admin's removal (`admin`: who
/// asked; none for the operator's CLI). 404 for a passkey that is not `user`'s.
pub async fn remove(
    state: &AppState,
    admin: Option<UserId>,
    user: UserId,
    passkey: Uuid,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    relying_party(state)?;
    if !state.db(move |s| s.remove_passkey(user, passkey)).await? {
        return Err(ServiceError::NotFound);
    }
    state
        .audit(AuditEvent {
            user_id: Some(user),
            actor_id: admin.or(Some(user)),
            detail: Some(format!("passkey {passkey}")),
            ..event(state, AuditKind::PasskeyRemoved, None, meta, "ok")
        })
        .await;
    Ok(())
}

/// The admin's view of a user's passkeys: 404 for an unknown user.
pub async fn list_for_admin(
    state: &AppState,
    user: UserId,
) -> Result<Vec<PasskeyInfo>, ServiceError> {
    relying_party(state)?;
    let found = state.db(move |s| s.account_by_id(user)).await?;
    if found.is_none() {
        return Err(ServiceError::NotFound);
    }
    let passkeys = state.db(move |s| s.passkeys_of(user)).await?;
    Ok(passkeys.iter().map(PasskeyInfo::from).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(passkey_name("  Laptop  ").ok().as_deref(), Some("Laptop"));
        assert!(passkey_name(&"é".repeat(64)).is_ok());
        for bad in ["", "   ", "a\u{0}b", "line\nbreak"] {
            assert!(passkey_name(bad).is_err(), "{bad:?}");
        }
        assert!(passkey_name(&"x".repeat(65)).is_err());
    }
}
