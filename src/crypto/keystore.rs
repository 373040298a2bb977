//! `KeyStore`: where the key ring and the refresh secret are kept. `FileKeyStore` is
//! the keys directory (SQLite installs); `service::keystore::DatabaseKeyStore` is the
//! database (PostgreSQL, sealed under a key-encryption key, over the rows of a
//! `storage::keystore::SealedKeyStore`). Both follow the same lifecycle rules
//! (`lifecycle`); only the reading and writing differ. (A `KeyRing` is the keys in force
//! in memory; a key store is where they live.)

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use super::keys::{self, KeyRing};
use super::lifecycle::{self, HandPlaced, Lifecycle, Stage, Timing};
use super::refresh::RefreshSecret;

/// A key `generate` made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Generated {
    pub kid: String,
    /// Where it is kept: its file, or its name in the database.
    pub place: String,
    pub stage: Stage,
}

/// One line of `gatehouse keys list`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyLine {
    pub kid: String,
    pub state: String,
    pub bits: usize,
    pub place: String,
}

/// The key ring's storage. Every method blocks (files or the database): call them off
/// the async executor. Each change is atomic: a reader sees the ring before or after it.
pub trait KeyStore: Send + Sync {
    /// Where the keys are, for messages ("keys dir ./keys", "the database").
    fn describe_place(&self) -> String;
    /// The ring in force at `now`, and the keys trusted without a lifecycle record.
    fn load(
        &self,
        now: DateTime<Utc>,
        timing: Timing,
    ) -> anyhow::Result<(KeyRing, Vec<HandPlaced>)>;
    /// Generates a key that signs at once, unless some key exists already. Replicas that
    /// start together on an empty store make one key between them.
    fn ensure_signing_key(&self, now: DateTime<Utc>) -> anyhow::Result<Option<Generated>>;
    /// The stages of the stored keys, for the admin view.
    fn lifecycle(&self) -> anyhow::Result<Lifecycle>;
    /// A new key: *current* if it is the first, else *next* (published, not signing).
    fn generate(&self, now: DateTime<Utc>) -> anyhow::Result<Generated>;
    /// See [`lifecycle::rotate`]: (the retired signer's kid, the new signer's kid).
    fn rotate(
        &self,
        now: DateTime<Utc>,
        timing: Timing,
        force: bool,
    ) -> anyhow::Result<(Option<String>, String)>;
    /// See [`lifecycle::retire`].
    fn retire(
        &self,
        kid: &str,
        now: DateTime<Utc>,
        timing: Timing,
        immediately: bool,
    ) -> anyhow::Result<()>;
    fn list(&self, now: DateTime<Utc>, timing: Timing) -> anyhow::Result<Vec<KeyLine>>;
    /// The refresh-child secret, created on first use (`true` when created now). Replicas
    /// that start together on an empty store get the same one.
    fn refresh_secret(&self) -> anyhow::Result<(RefreshSecret, bool)>;
}

/// The keys directory: `*.pem`, `keys.json` and `refresh.secret`.
pub struct FileKeyStore {
    pub dir: PathBuf,
    pub secret_path: PathBuf,
}

impl FileKeyStore {
    pub fn new(dir: &Path, secret_path: &Path) -> Self {
        Self {
            dir: dir.to_owned(),
            secret_path: secret_path.to_owned(),
        }
    }

    fn generated(&self, path: &Path, stage: Stage) -> anyhow::Result<Generated> {
        let kid = keys::load_dir(&self.dir)?
            .into_iter()
            .find(|k| k.path == path)
            .map(|k| k.kid)
            .unwrap_or_default();
        Ok(Generated {
            kid,
            place: path.display().to_string(),
            stage,
        })
    }
}

impl KeyStore for FileKeyStore {
    fn describe_place(&self) -> String {
        format!("keys dir {}", self.dir.display())
    }

    fn load(
        &self,
        now: DateTime<Utc>,
        timing: Timing,
    ) -> anyhow::Result<(KeyRing, Vec<HandPlaced>)> {
        lifecycle::load_reporting(&self.dir, now, timing)
    }

    fn ensure_signing_key(&self, now: DateTime<Utc>) -> anyhow::Result<Option<Generated>> {
        keys::create_dir(&self.dir)?;
        if !keys::load_dir(&self.dir)?.is_empty() {
            return Ok(None);
        }
        let (path, stage) = lifecycle::generate(&self.dir, now)?;
        self.generated(&path, stage).map(Some)
    }

    fn lifecycle(&self) -> anyhow::Result<Lifecycle> {
        Lifecycle::load(&self.dir)
    }

    fn generate(&self, now: DateTime<Utc>) -> anyhow::Result<Generated> {
        keys::create_dir(&self.dir)?;
        keys::check_dir(&self.dir)?;
        let (path, stage) = lifecycle::generate(&self.dir, now)?;
        self.generated(&path, stage)
    }

    fn rotate(
        &self,
        now: DateTime<Utc>,
        timing: Timing,
        force: bool,
    ) -> anyhow::Result<(Option<String>, String)> {
        lifecycle::rotate(&self.dir, now, timing, force)
    }

    fn retire(
        &self,
        kid: &str,
        now: DateTime<Utc>,
        timing: Timing,
        immediately: bool,
    ) -> anyhow::Result<()> {
        lifecycle::retire(&self.dir, kid, now, timing, immediately)
    }

    fn list(&self, now: DateTime<Utc>, timing: Timing) -> anyhow::Result<Vec<KeyLine>> {
        Ok(lifecycle::describe(&self.dir, now, timing)?
            .into_iter()
            .map(|(kid, state, bits, path)| KeyLine {
                kid,
                state,
                bits,
                place: path.display().to_string(),
            })
            .collect())
    }

    fn refresh_secret(&self) -> anyhow::Result<(RefreshSecret, bool)> {
        keys::create_dir(&self.dir)?;
        RefreshSecret::load_or_create(&self.secret_path)
    }
}
