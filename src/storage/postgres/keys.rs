//! `signing_keys` and `sealed_secrets` (migrations/postgres/0003_keys.sql): the
//! PostgreSQL `SealedKeyStore`. Storage sees only sealed bytes; sealing, the lifecycle
//! rules and the KEK belong to the caller (`service::keystore`).
//!
//! It shares the PostgreSQL pool code, on a small pool of its own.

use ::postgres::types::Type;
use chrono::{DateTime, Utc};

use super::{PgStore, PostgresUrl, StoreError, col, map_err};
use crate::storage::keystore::{Decide, KeyChanges, KeyRow, SealedKeyStore};

/// Serializes changes to the ring across replicas and operators ("gatekeys" in ASCII),
/// so a read-decide-write (rotate, first key at start) is never interleaved.
const LOCK: i64 = 0x6761_7465_6b65_7973;

/// The key store of a PostgreSQL install.
pub struct PgKeyStore {
    store: PgStore,
}

fn ts(secs: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp(secs, 0).ok_or_else(|| StoreError::internal("a key time out of range"))
}

fn row(r: &::postgres::Row) -> Result<KeyRow, StoreError> {
    let at = |i| col::<Option<DateTime<Utc>>>(r, i).map(|t| t.map(|t| t.timestamp()));
    Ok(KeyRow {
        kid: col(r, 0)?,
        name: col(r, 1)?,
        stage: col(r, 2)?,
        published_at: col::<DateTime<Utc>>(r, 3)?.timestamp(),
        activated_at: at(4)?,
        retired_at: at(5)?,
        sealed_key: col(r, 6)?,
    })
}

const SELECT_KEYS: &str = "SELECT kid, name, stage, published_at, activated_at, retired_at, \
                           sealed_key FROM signing_keys ORDER BY name";

impl PgKeyStore {
    /// Connects (two connections at most: reloads and the CLI are rare) and migrates.
    pub fn connect(
        url: &PostgresUrl,
        connect_timeout: std::time::Duration,
        start_timeout: std::time::Duration,
    ) -> anyhow::Result<Self> {
        // Unprepared: a reload every half minute gains nothing from keeping statements,
        // and this pool then works behind any pooler whatever the setting says.
        let store =
            PgStore::connect(url, 2, connect_timeout, start_timeout)?.prepared_statements(false);
        // The server has migrated already (`storage::open`); a CLI run may come first.
        if super::migrate::current(&mut *store.connection()?)? < super::migrate::latest() {
            crate::storage::Store::migrate(&store)?;
        }
        Ok(Self { store })
    }
}

impl SealedKeyStore for PgKeyStore {
    fn keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        self.store
            .read(|c| c.query_typed(SELECT_KEYS, &[]))?
            .iter()
            .map(row)
            .collect()
    }

    fn secret(&self, purpose: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store
            .read(|c| {
                c.query_typed_opt(
                    "SELECT sealed FROM sealed_secrets WHERE purpose = $1",
                    &[(&purpose, Type::TEXT)],
                )
            })?
            .map(|r| col(&r, 0))
            .transpose()
    }

    fn secret_or_insert(&self, purpose: &str, sealed: &[u8]) -> Result<Vec<u8>, StoreError> {
        // Typed, so sent unnamed in one round trip: an untyped call makes the driver
        // prepare a named statement first, which a transaction pooler may not carry to
        // the connection that runs it.
        self.store.write(|c| {
            c.query_typed(
                "INSERT INTO sealed_secrets (purpose, sealed) VALUES ($1, $2) \
                 ON CONFLICT (purpose) DO NOTHING",
                &[(&purpose, Type::TEXT), (&sealed, Type::BYTEA)],
            )
        })?;
        self.secret(purpose)?
            .ok_or_else(|| StoreError::internal(format!("secret {purpose} vanished")))
    }

    fn edit(&self, decide: Decide<'_>) -> anyhow::Result<()> {
        let mut conn = self.store.connection()?;
        // READ COMMITTED whatever the database's default: the read after the lock must
        // see the edit that held it.
        let mut tx = conn
            .build_transaction()
            .isolation_level(::postgres::IsolationLevel::ReadCommitted)
            .start()
            .map_err(map_err)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
            .map_err(map_err)?;
        let rows = tx
            .query(SELECT_KEYS, &[])
            .map_err(map_err)?
            .iter()
            .map(row)
            .collect::<Result<Vec<_>, _>>()?;
        let changes = decide(rows)?;
        apply(&mut tx, changes)?;
        tx.commit().map_err(map_err)?;
        Ok(())
    }
}

fn apply(tx: &mut ::postgres::Transaction<'_>, changes: KeyChanges) -> Result<(), StoreError> {
    let e = map_err;
    if changes.replace_all {
        tx.execute("DELETE FROM signing_keys", &[]).map_err(e)?;
        tx.execute(
            "DELETE FROM sealed_secrets WHERE purpose <> 'kek-check'",
            &[],
        )
        .map_err(e)?;
    }
    // Demotions before promotions: at most one row is `current` after every statement.
    let mut update = changes.update;
    update.sort_by_key(|r| r.stage == "current");
    for r in &update {
        let (activated, retired) = (opt_ts(r.activated_at)?, opt_ts(r.retired_at)?);
        tx.execute(
            "UPDATE signing_keys SET stage = $2, published_at = $3, activated_at = $4, \
             retired_at = $5 WHERE kid = $1",
            &[&r.kid, &r.stage, &ts(r.published_at)?, &activated, &retired],
        )
        .map_err(e)?;
    }
    let mut insert = changes.insert;
    insert.sort_by_key(|r| r.stage == "current");
    for r in &insert {
        let (activated, retired) = (opt_ts(r.activated_at)?, opt_ts(r.retired_at)?);
        tx.execute(
            "INSERT INTO signing_keys \
             (kid, name, stage, published_at, activated_at, retired_at, sealed_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &r.kid,
                &r.name,
                &r.stage,
                &ts(r.published_at)?,
                &activated,
                &retired,
                &r.sealed_key,
            ],
        )
        .map_err(e)?;
    }
    for (purpose, sealed) in &changes.secrets {
        tx.execute(
            "INSERT INTO sealed_secrets (purpose, sealed) VALUES ($1, $2) \
             ON CONFLICT (purpose) DO UPDATE SET sealed = EXCLUDED.sealed, created_at = now()",
            &[purpose, sealed],
        )
        .map_err(e)?;
    }
    Ok(())
}

fn opt_ts(secs: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    secs.map(ts).transpose()
}
