//! Passkeys (WebAuthn credentials) and the ceremonies between a WebAuthn options answer
//! and its response.
//!
//! Two rules are conditional writes whose row count decides, on one process or ten: a
//! flow is taken by a `DELETE` of its row (the first use spends it, whatever comes of
//! it), and a login moves a credential's signature counter with `UPDATE … WHERE
//! sign_count = <the value the signature was checked against>`, so one counter value
//! opens one session.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{StoreError, TokenHashBytes};
use crate::domain::UserId;

/// A credential a registration ceremony proved.
#[derive(Debug, Clone)]
pub struct NewPasskey {
    pub id: Uuid,
    pub user_id: UserId,
    /// The authenticator's credential id: unique across every user.
    pub credential_id: Vec<u8>,
    /// The relying party's serialized credential (public key, algorithm, flags).
    pub credential: String,
    pub sign_count: u32,
    pub backup_eligible: bool,
    pub backup_state: bool,
    pub name: String,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredPasskey {
    pub id: Uuid,
    pub user_id: UserId,
    pub credential_id: Vec<u8>,
    pub credential: String,
    pub sign_count: i64,
    pub backup_eligible: bool,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A login's use of a passkey, to record if the counter it was checked against is still
/// the stored one.
#[derive(Debug, Clone)]
pub struct PasskeyUse {
    pub id: Uuid,
    /// The stored counter the signature's counter was compared with.
    pub checked_against: i64,
    pub sign_count: u32,
    pub backup_state: bool,
    /// The credential as updated by the relying party (counter, flags).
    pub credential: String,
    pub now: DateTime<Utc>,
}

/// What a WebAuthn flow was opened for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowKind {
    /// A signed-in user registering a passkey.
    Register,
    /// A passwordless login (discoverable credential).
    Login,
    /// The second step of a password login.
    Mfa,
}

impl FlowKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowKind::Register => "register",
            FlowKind::Login => "login",
            FlowKind::Mfa => "mfa",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "register" => Some(FlowKind::Register),
            "login" => Some(FlowKind::Login),
            "mfa" => Some(FlowKind::Mfa),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewFlow {
    pub hash: TokenHashBytes,
    pub kind: FlowKind,
    pub user_id: Option<UserId>,
    /// For `Mfa`: the hash of the `mfa_token` the flow belongs to.
    pub mfa_token_hash: Option<TokenHashBytes>,
    /// The relying party's ceremony state (challenge, expected credentials).
    pub state: String,
    pub expires_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TakenFlow {
    pub kind: FlowKind,
    pub user_id: Option<UserId>,
    pub mfa_token_hash: Option<TokenHashBytes>,
    pub state: String,
}

pub trait PasskeyStore {
    /// `false`, and nothing written, when the credential id is registered already.
    fn add_passkey(&self, passkey: NewPasskey) -> Result<bool, StoreError>;
    /// Oldest first.
    fn passkeys_of(&self, user: UserId) -> Result<Vec<StoredPasskey>, StoreError>;
    fn passkey_by_credential_id(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<StoredPasskey>, StoreError>;
    /// `true` when this call deleted the user's passkey `id`.
    fn remove_passkey(&self, user: UserId, id: Uuid) -> Result<bool, StoreError>;
    /// Removes every passkey of the user (an admin's MFA reset); how many there were.
    fn remove_passkeys(&self, user: UserId) -> Result<u64, StoreError>;
    /// Records a login's use: `true` exactly when the stored counter was still
    /// `checked_against` (one conditional UPDATE), so a counter value is accepted once.
    fn record_passkey_use(&self, used: PasskeyUse) -> Result<bool, StoreError>;

    /// Stores a flow, and deletes expired ones.
    fn create_flow(&self, flow: NewFlow) -> Result<(), StoreError>;
    /// Takes (deletes) the flow: its contents when this call deleted it before its expiry.
    fn take_flow(
        &self,
        hash: &TokenHashBytes,
        now: DateTime<Utc>,
    ) -> Result<Option<TakenFlow>, StoreError>;
}
