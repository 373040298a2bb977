//! Second factors: TOTP secrets (sealed), recovery codes (hashed) and the `mfa_token`s
//! that carry a login from its password to its code.
//!
//! Every "accepted once" rule is a conditional write whose row count decides: a TOTP step
//! is claimed by `UPDATE … WHERE last_totp_step IS NULL OR last_totp_step < step`, a
//! recovery code by a `DELETE` of its row, an `mfa_token` by `UPDATE … WHERE spent_at IS
//! NULL`. Of any number of concurrent callers, on any number of processes sharing the
//! database, exactly one sees the row change.

use chrono::{DateTime, Utc};

use super::{StoreError, TokenHashBytes};
use crate::domain::UserId;

/// A user's TOTP enrolment as stored.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredTotp {
    /// The secret sealed by the service (it never reaches storage in plaintext).
    pub sealed_secret: Vec<u8>,
    /// Confirmed with a code: MFA is on. `false`: an enrolment pending confirmation.
    pub enabled: bool,
    /// The last time step a code was accepted for.
    pub last_step: Option<i64>,
}

impl std::fmt::Debug for StoredTotp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredTotp")
            .field("sealed_secret", &"<sealed>")
            .field("enabled", &self.enabled)
            .field("last_step", &self.last_step)
            .finish()
    }
}

/// A login waiting for its second factor.
#[derive(Debug, Clone)]
pub struct NewMfaToken {
    pub hash: TokenHashBytes,
    pub user_id: UserId,
    /// The password generation the login checked: the session opens under it, so a
    /// password change in between ends the login.
    pub password_generation: i64,
    pub now: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMfaToken {
    pub user_id: UserId,
    pub password_generation: i64,
    pub expires_at: DateTime<Utc>,
    pub spent: bool,
}

pub trait MfaStore {
    /// Stores a pending TOTP enrolment (replacing a pending one, and forgetting its
    /// claimed steps). `false`, and nothing written, while the user's TOTP is enabled.
    fn put_pending_totp(
        &self,
        user: UserId,
        sealed_secret: &[u8],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    fn totp_of(&self, user: UserId) -> Result<Option<StoredTotp>, StoreError>;
    /// Confirms the pending enrolment whose secret is `sealed_secret` (not one that
    /// replaced it meanwhile): enables it, claims `step` and stores `recovery` as the
    /// user's recovery codes, in one transaction. `false` (nothing written) when that
    /// enrolment is not pending any more, or `step` is not above its last claimed step.
    fn enable_totp(
        &self,
        user: UserId,
        sealed_secret: &[u8],
        step: i64,
        recovery: &[TokenHashBytes],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Claims time step `step` of the user's enabled TOTP: `true` exactly when this call
    /// moved `last_totp_step` up to `step` (one conditional UPDATE, one row affected), so
    /// a code, or an older one, is accepted once across every process.
    fn claim_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError>;
    /// Spends one of the user's recovery codes: `true` exactly when this call deleted it.
    fn use_recovery_code(&self, user: UserId, hash: &TokenHashBytes) -> Result<bool, StoreError>;
    /// Replaces the user's recovery codes with `recovery`, in one transaction; `false`
    /// (nothing written) unless the user's TOTP is enabled.
    fn replace_recovery_codes(
        &self,
        user: UserId,
        recovery: &[TokenHashBytes],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    fn recovery_codes_left(&self, user: UserId) -> Result<u32, StoreError>;
    /// Removes the user's TOTP (pending or enabled) and recovery codes and voids their
    /// outstanding `mfa_token`s, in one transaction; `true` when TOTP was enabled.
    fn remove_mfa(&self, user: UserId, now: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Stores a new token, and deletes the user's expired ones.
    fn create_mfa_token(&self, token: NewMfaToken) -> Result<(), StoreError>;
    fn find_mfa_token(&self, hash: &TokenHashBytes) -> Result<Option<StoredMfaToken>, StoreError>;
    /// Spends a token: `true` exactly when this call marked it spent, before its expiry.
    fn spend_mfa_token(
        &self,
        hash: &TokenHashBytes,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Spends every outstanding `mfa_token` of the user (a password change, a disable,
    /// an MFA reset), and deletes those past their expiry.
    fn void_mfa_tokens(&self, user: UserId, now: DateTime<Utc>) -> Result<(), StoreError>;
}
