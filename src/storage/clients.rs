//! Service clients, and the reads that introspection and the revocation feed make.
//!
//! A trait of its own, a supertrait of `Store`: each backend implements it in
//! `<backend>/clients.rs`. No row is written per client token (nothing to prune): a
//! client's tokens die with the client (deleted or disabled) or at their `exp`.

use chrono::{DateTime, Utc};

use super::{StoreError, StoredToken, TokenHashBytes};
use crate::domain::{Client, ClientId, FamilyId};

/// SHA-256 of a client secret.
pub type SecretHash = [u8; 32];

/// A new client and its first secret.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub client: Client,
    pub secret: SecretHash,
}

/// A client with the secrets it may authenticate with at some time.
#[derive(Debug, Clone)]
pub struct StoredClient {
    pub client: Client,
    pub secrets: Vec<StoredSecret>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecret {
    pub hash: SecretHash,
    /// `None` for the current secret; a replaced one works until then.
    pub not_after: Option<DateTime<Utc>>,
}

/// The longest access-token lifetime a setting allows (`GATEHOUSE_ACCESS_TTL`, 60 min):
/// a tombstone older than this lists nothing any more and is pruned.
pub const TOMBSTONE_KEEP: chrono::Duration = chrono::Duration::hours(1);

pub trait ClientStore {
    /// Stores a client and its secret.
    fn create_client(&self, new: &NewClient) -> Result<(), StoreError>;
    /// Every client, oldest first.
    fn list_clients(&self) -> Result<Vec<Client>, StoreError>;
    /// A client with its secrets, `None` when unknown.
    fn client_by_id(&self, id: ClientId) -> Result<Option<StoredClient>, StoreError>;
    /// Deletes a client and its secrets; `false` when unknown.
    fn delete_client(&self, id: ClientId) -> Result<bool, StoreError>;
    /// In one transaction: every secret still current gets `old_not_after` (a secret
    /// replaced earlier keeps its own, earlier end), secrets already ended are dropped,
    /// and `secret` becomes the current one. `false` (nothing written) when unknown.
    fn rotate_client_secret(
        &self,
        id: ClientId,
        secret: SecretHash,
        now: DateTime<Utc>,
        old_not_after: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Records a use; writes only when the stored `last_used_at` is older than
    /// `now - 60 s`, so a busy client costs one write a minute, not one a token.
    fn touch_client(&self, id: ClientId, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// The stored state of a refresh token, read as a refresh reads it but never
    /// spending it. Takes the family's row lock in the mode a refresh's claim and a
    /// revocation conflict with (PostgreSQL `FOR SHARE`; SQLite's single writer is the
    /// lock there), then reads: a revocation or a claim that committed before this call,
    /// or that held the lock while it waited, is seen. With the token, when it was issued.
    fn introspect_refresh_token(
        &self,
        hash: TokenHashBytes,
    ) -> Result<Option<(StoredToken, DateTime<Utc>)>, StoreError>;
    /// Ids of families revoked at or after `since`, and of families deleted with their
    /// user whose tombstone is listed from `since` on; sorted, each once.
    fn revoked_since(&self, since: DateTime<Utc>) -> Result<Vec<FamilyId>, StoreError>;
    /// Drops tombstones listed before `before`; how many.
    fn prune_tombstones(&self, before: DateTime<Utc>) -> Result<usize, StoreError>;
}
