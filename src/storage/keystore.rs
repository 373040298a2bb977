//! Where a PostgreSQL install keeps its key ring: sealed signing keys with their stages,
//! and sealed secrets, behind `SealedKeyStore`. The service (`service::keystore`) seals,
//! unseals and applies the lifecycle rules; a backend stores bytes.
//!
//! Not `Store` methods: only an install whose data is shared by replicas keeps keys in
//! the database (SQLite installs keep them in the keys directory,
//! `crypto::keystore::FileKeyStore`), and no request path touches them.

use std::time::Duration;

use super::StoreError;
use super::postgres::PostgresUrl;

/// One stored signing key. Times are unix seconds.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyRow {
    pub kid: String,
    pub name: String,
    /// `next`, `current` or `retired`.
    pub stage: String,
    pub published_at: i64,
    pub activated_at: Option<i64>,
    pub retired_at: Option<i64>,
    /// The private key, sealed.
    pub sealed_key: Vec<u8>,
}

impl std::fmt::Debug for KeyRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRow")
            .field("kid", &self.kid)
            .field("name", &self.name)
            .field("stage", &self.stage)
            .finish_non_exhaustive()
    }
}

/// What an edit of the ring writes: new rows, and new stages and times of existing ones.
#[derive(Debug, Default)]
pub struct KeyChanges {
    pub insert: Vec<KeyRow>,
    /// Rows (by kid) whose stage and times become these; `sealed_key` is ignored.
    pub update: Vec<KeyRow>,
    /// Delete every stored key and secret (but the KEK check) first: `keys import
    /// --replace`.
    pub replace_all: bool,
    /// Secrets to store by purpose (insert, or overwrite with `replace_all`).
    pub secrets: Vec<(String, Vec<u8>)>,
}

/// What `SealedKeyStore::edit` runs under the ring's lock: the stored rows in, the
/// changes to write out.
pub type Decide<'a> = Box<dyn FnOnce(Vec<KeyRow>) -> anyhow::Result<KeyChanges> + 'a>;

/// Sealed key rows and secrets, shared by every replica.
pub trait SealedKeyStore: Send + Sync {
    /// Every stored key, by name.
    fn keys(&self) -> Result<Vec<KeyRow>, StoreError>;
    /// The sealed secret stored for `purpose`.
    fn secret(&self, purpose: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `sealed` for `purpose` unless a value is there already; either way returns
    /// the stored one, so replicas racing to create a secret all end up using one.
    fn secret_or_insert(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError>;
    /// Runs `decide` on the stored keys under the ring's lock, then writes what it
    /// returns, all in one transaction: a concurrent edit waits, then sees this one.
    /// `decide` may run slow work (generating a key): only other edits wait for it.
    fn edit(&self, decide: Decide<'_>) -> anyhow::Result<()>;
}

/// `SealedKeyStore::edit` for a `decide` that also returns a value.
pub fn edit<T>(
    store: &dyn SealedKeyStore,
    decide: impl FnOnce(Vec<KeyRow>) -> anyhow::Result<(KeyChanges, T)>,
) -> anyhow::Result<T> {
    let mut out = None;
    store.edit(Box::new(|rows| {
        let (changes, value) = decide(rows)?;
        out = Some(value);
        Ok(changes)
    }))?;
    out.ok_or_else(|| anyhow::anyhow!("the key store did not run the edit"))
}

/// Connects to the key store of the PostgreSQL database at `url` (two connections at
/// most: reloads and the CLI are rare) and migrates it when needed.
pub fn connect(
    url: &PostgresUrl,
    connect_timeout: Duration,
    start_timeout: Duration,
) -> anyhow::Result<Box<dyn SealedKeyStore>> {
    Ok(Box::new(super::postgres::keys::PgKeyStore::connect(
        url,
        connect_timeout,
        start_timeout,
    )?))
}
