//! `DatabaseKeyStore`: the key ring and the refresh secret in the database (PostgreSQL
//! installs). The lifecycle rules of `crypto::lifecycle` over the rows of a
//! `storage::keystore::SealedKeyStore`, every private byte sealed under the
//! key-encryption key before it leaves this process.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use crate::crypto::keys::{self, KeyRing, SigningKey};
use crate::crypto::keystore::{Generated, KeyLine, KeyStore};
use crate::crypto::lifecycle::{self, HandPlaced, KeyRecord, Lifecycle, Stage, Timing};
use crate::crypto::refresh::RefreshSecret;
use crate::crypto::sealing::KeyEncryptionKey;
use crate::storage::keystore::{self as sealed, KeyChanges, KeyRow, SealedKeyStore};
use crate::storage::postgres::{self, PostgresUrl};

const REFRESH: &str = "refresh";
const KEK_CHECK: &str = "kek-check";

/// What a replica with another KEK than the one that sealed the rows is told.
pub const WRONG_KEK: &str = "the key-encryption key does not open the stored keys: \
     GATEHOUSE_KEY_ENCRYPTION_KEY_FILE must be the same 32 bytes on every replica and \
     every run of the CLI against this database";

/// Associated data of a sealed key: its kid, so a sealed key copied into another row
/// does not open there.
fn key_label(kid: &str) -> String {
    format!("signing-key:{kid}")
}

fn secret_label(purpose: &str) -> String {
    format!("secret:{purpose}")
}

/// Whether the database at `url` already holds sealed keys (its KEK check value), for
/// advice to a process started without a KEK; does not wait for a server that is down.
pub fn keys_stored(url: &PostgresUrl, connect_timeout: Duration) -> anyhow::Result<bool> {
    let probe = postgres::probe(url, connect_timeout, Duration::ZERO, KEK_CHECK)?;
    Ok(probe.secret.is_some())
}

pub struct DatabaseKeyStore {
    rows: Box<dyn SealedKeyStore>,
    kek: KeyEncryptionKey,
}

/// What [`DatabaseKeyStore::check`] found.
#[derive(Debug)]
pub struct Checked {
    /// The schema version, and the one `serve` migrates to.
    pub schema: i64,
    pub latest: i64,
    /// A server started on this database before: its keys are sealed under the KEK
    /// that opened the check value.
    pub keys_stored: bool,
}

/// What `keys import` moved in.
#[derive(Debug)]
pub struct Imported {
    /// (kid, stage, name) of every key, by name.
    pub keys: Vec<(String, Stage, String)>,
    pub refresh_secret: bool,
    /// Keys and a secret that `--replace` removed.
    pub replaced: usize,
}

impl DatabaseKeyStore {
    /// Reads the KEK file, connects, and proves the KEK is the one this database's rows
    /// are sealed under: the first process to get here stores a check value, every later
    /// one must open it.
    pub fn open(
        url: &PostgresUrl,
        connect_timeout: Duration,
        start_timeout: Duration,
        kek_file: &Path,
    ) -> anyhow::Result<Self> {
        let kek = KeyEncryptionKey::load(kek_file)?;
        let rows = sealed::connect(url, connect_timeout, start_timeout)?;
        let check = rows.secret_or_insert(KEK_CHECK, &kek.check_value()?)?;
        anyhow::ensure!(kek.opens_check_value(&check), "{WRONG_KEK}");
        Ok(Self { rows, kek })
    }

    /// What `config check` proves without changing the database: it answers, takes the
    /// credentials, can be migrated and written (see [`postgres::probe`]), and the KEK
    /// in `kek_file` opens the check value the first server stored, if one did.
    pub fn check(
        url: &PostgresUrl,
        connect_timeout: Duration,
        start_timeout: Duration,
        kek_file: &Path,
    ) -> anyhow::Result<Checked> {
        let kek = KeyEncryptionKey::load(kek_file)?;
        let probe = postgres::probe(url, connect_timeout, start_timeout, KEK_CHECK)?;
        if let Some(check) = &probe.secret {
            anyhow::ensure!(kek.opens_check_value(check), "{WRONG_KEK}");
        }
        Ok(Checked {
            schema: probe.schema,
            latest: probe.latest,
            keys_stored: probe.secret.is_some(),
        })
    }

    fn seal_key(&self, key: &SigningKey) -> anyhow::Result<Vec<u8>> {
        Ok(self.kek.seal(&key_label(&key.kid), &key.pkcs8_der()?)?)
    }

    /// Opens every row: the keys, and their stages by name.
    fn unseal(&self, rows: &[KeyRow]) -> anyhow::Result<(Vec<SigningKey>, Lifecycle)> {
        let mut found = Vec::with_capacity(rows.len());
        for row in rows {
            let der = self
                .kek
                .open(&key_label(&row.kid), &row.sealed_key)
                .map_err(|_| {
                    // The KEK opened the check value, so this row itself is wrong.
                    anyhow::anyhow!(
                        "signing key {} in the database does not open: its row was altered, or \
                     its sealed key was copied from another row",
                        row.kid
                    )
                })?;
            let key = SigningKey::from_pkcs8_der(&der, PathBuf::from(&row.name))?;
            anyhow::ensure!(
                key.kid == row.kid,
                "the key stored as {} is the key {}",
                row.kid,
                key.kid
            );
            found.push(key);
        }
        Ok((found, records(rows)?))
    }

    /// The rows whose stage or times differ between `before` and `after`.
    fn updates(rows: &[KeyRow], before: &Lifecycle, after: &Lifecycle) -> Vec<KeyRow> {
        rows.iter()
            .filter_map(|row| {
                let new = after.keys.get(&row.name)?;
                (before.keys.get(&row.name) != Some(new))
                    .then(|| with_record(row.kid.clone(), row.name.clone(), new, Vec::new()))
            })
            .collect()
    }

    fn change(
        &self,
        edit: impl FnOnce(Vec<SigningKey>, &mut Lifecycle) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        sealed::edit(self.rows.as_ref(), |rows| {
            let (found, before) = self.unseal(&rows)?;
            let mut after = before.clone();
            edit(found, &mut after)?;
            let changes = KeyChanges {
                update: Self::updates(&rows, &before, &after),
                ..KeyChanges::default()
            };
            Ok((changes, ()))
        })
    }

    /// A new key in the ring: current when it is the first, else next.
    fn add_key(
        &self,
        now: DateTime<Utc>,
        only_if_empty: bool,
    ) -> anyhow::Result<Option<Generated>> {
        sealed::edit(self.rows.as_ref(), |rows| {
            if only_if_empty && !rows.is_empty() {
                return Ok((KeyChanges::default(), None));
            }
            let key = keys::generate(now)?;
            let name = lifecycle::file_name(&key.path);
            let mut life = Lifecycle::default();
            let stage = life.add(&name, rows.is_empty(), now);
            let record = &life.keys[&name];
            let row = with_record(key.kid.clone(), name.clone(), record, self.seal_key(&key)?);
            let changes = KeyChanges {
                insert: vec![row],
                ..KeyChanges::default()
            };
            let generated = Generated {
                kid: key.kid,
                place: format!("{name} in the database"),
                stage,
            };
            Ok((changes, Some(generated)))
        })
    }

    /// Moves a keys directory in: its keys with the stages and times of its `keys.json`
    /// (keys it does not know get the stage the directory's ring gives them) and its
    /// `refresh.secret`, so tokens signed and refresh tokens issued before still work.
    /// Refuses when the database holds keys or a refresh secret, unless `replace`.
    pub fn import(
        &self,
        dir: &Path,
        secret_file: &Path,
        now: DateTime<Utc>,
        timing: Timing,
        replace: bool,
    ) -> anyhow::Result<Imported> {
        let life = Lifecycle::load(dir)?;
        let found = keys::load_dir(dir)?;
        anyhow::ensure!(!found.is_empty(), "{} holds no *.pem key", dir.display());
        let signer = lifecycle::assemble(found, &life, now, timing)?
            .signer()
            .kid
            .clone();
        let secret = RefreshSecret::read_file(secret_file)?;
        let had_secret = self.rows.secret(REFRESH)?.is_some();
        let mut inserts = Vec::new();
        let mut report = Vec::new();
        for key in keys::load_dir(dir)? {
            let name = lifecycle::file_name(&key.path);
            let mut record = life.record(&key).cloned().unwrap_or(KeyRecord {
                stage: Stage::Next,
                published_at: now.timestamp(),
                activated_at: None,
                retired_at: None,
            });
            // The ring's signer signs here too; any other key marked current in
            // `keys.json` was not signing there, and must not compete with it here.
            if key.kid == signer && record.stage != Stage::Current {
                record.stage = Stage::Current;
                record.activated_at = Some(now.timestamp());
            } else if key.kid != signer && record.stage == Stage::Current {
                record.stage = Stage::Retired;
                record.retired_at = Some(now.timestamp());
            }
            report.push((key.kid.clone(), record.stage, name.clone()));
            inserts.push(with_record(
                key.kid.clone(),
                name,
                &record,
                self.seal_key(&key)?,
            ));
        }
        let secrets = match &secret {
            Some(bytes) => vec![(
                REFRESH.to_owned(),
                self.kek.seal(&secret_label(REFRESH), bytes)?,
            )],
            None => Vec::new(),
        };
        let replaced = sealed::edit(self.rows.as_ref(), |rows| {
            let held = rows.len() + usize::from(had_secret);
            anyhow::ensure!(
                held == 0 || replace,
                "the database already holds {} key(s){}; `keys import --replace` replaces \
                 them (tokens they signed stop verifying, and refresh tokens issued under \
                 the replaced secret stop refreshing)",
                rows.len(),
                if had_secret {
                    " and a refresh secret"
                } else {
                    ""
                }
            );
            let changes = KeyChanges {
                insert: inserts,
                replace_all: true,
                secrets,
                ..KeyChanges::default()
            };
            Ok((changes, held))
        })?;
        Ok(Imported {
            keys: report,
            refresh_secret: secret.is_some(),
            replaced,
        })
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Next => "next",
        Stage::Current => "current",
        Stage::Retired => "retired",
    }
}

fn with_record(kid: String, name: String, record: &KeyRecord, sealed_key: Vec<u8>) -> KeyRow {
    KeyRow {
        kid,
        name,
        stage: stage_name(record.stage).to_owned(),
        published_at: record.published_at,
        activated_at: record.activated_at,
        retired_at: record.retired_at,
        sealed_key,
    }
}

/// The stages of the stored keys, without opening them.
fn records(rows: &[KeyRow]) -> anyhow::Result<Lifecycle> {
    let mut life = Lifecycle::default();
    for row in rows {
        let stage = match row.stage.as_str() {
            "next" => Stage::Next,
            "current" => Stage::Current,
            "retired" => Stage::Retired,
            other => anyhow::bail!("key {} has an unknown stage {other:?}", row.kid),
        };
        life.keys.insert(
            row.name.clone(),
            KeyRecord {
                stage,
                published_at: row.published_at,
                activated_at: row.activated_at,
                retired_at: row.retired_at,
            },
        );
    }
    Ok(life)
}

impl KeyStore for DatabaseKeyStore {
    fn describe_place(&self) -> String {
        "the database".into()
    }

    fn load(
        &self,
        now: DateTime<Utc>,
        timing: Timing,
    ) -> anyhow::Result<(KeyRing, Vec<HandPlaced>)> {
        let rows = self.rows.keys()?;
        anyhow::ensure!(
            !rows.is_empty(),
            "the database holds no signing key: start `gatehouse serve` once, or run \
             `gatehouse keys generate` or `gatehouse keys import`"
        );
        let (found, life) = self.unseal(&rows)?;
        lifecycle::assemble_reporting(found, &life, now, timing)
    }

    fn ensure_signing_key(&self, now: DateTime<Utc>) -> anyhow::Result<Option<Generated>> {
        self.add_key(now, true)
    }

    fn lifecycle(&self) -> anyhow::Result<Lifecycle> {
        records(&self.rows.keys()?)
    }

    fn generate(&self, now: DateTime<Utc>) -> anyhow::Result<Generated> {
        self.add_key(now, false)?.context("no key was generated")
    }

    fn rotate(
        &self,
        now: DateTime<Utc>,
        timing: Timing,
        force: bool,
    ) -> anyhow::Result<(Option<String>, String)> {
        let mut out = None;
        self.change(|found, life| {
            out = Some(lifecycle::rotate_in(found, life, now, timing, force)?);
            Ok(())
        })?;
        out.context("the rotation did not run")
    }

    fn retire(
        &self,
        kid: &str,
        now: DateTime<Utc>,
        timing: Timing,
        immediately: bool,
    ) -> anyhow::Result<()> {
        self.change(|found, life| lifecycle::retire_in(found, life, kid, now, timing, immediately))
    }

    fn list(&self, now: DateTime<Utc>, timing: Timing) -> anyhow::Result<Vec<KeyLine>> {
        let rows = self.rows.keys()?;
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let (found, life) = self.unseal(&rows)?;
        Ok(lifecycle::describe_in(found, &life, now, timing)?
            .into_iter()
            .map(|(kid, state, bits, path)| KeyLine {
                kid,
                state,
                bits,
                place: format!("database:{}", path.display()),
            })
            .collect())
    }

    fn refresh_secret(&self) -> anyhow::Result<(RefreshSecret, bool)> {
        let label = secret_label(REFRESH);
        let (stored, created) = match self.rows.secret(REFRESH)? {
            Some(sealed) => (sealed, false),
            None => {
                let mine = self.kek.seal(&label, &RefreshSecret::new_bytes())?;
                let stored = self.rows.secret_or_insert(REFRESH, &mine)?;
                let created = stored == mine;
                (stored, created)
            }
        };
        let bytes = self.kek.open(&label, &stored).map_err(|_| {
            anyhow::anyhow!(
                "the refresh secret in the database does not open: its row was altered or \
                 copied from another"
            )
        })?;
        Ok((RefreshSecret::from_bytes(&bytes), created))
    }
}
