//! Numbered SQL files from `migrations/postgres/`, applied in order and recorded in
//! `schema_migrations`, as `rusqlite_migration` does for SQLite with `user_version`.
//!
//! PostgreSQL's DDL is transactional, so all pending files run in one transaction: a
//! failed migration leaves the schema as it was. An advisory lock makes replicas that
//! start together wait for each other instead of applying a file twice.

use ::postgres::Client;

use super::{StoreError, map_err};

/// The files in order; a file's version is its position (1-based).
const MIGRATIONS: &[&str] = &[
    include_str!("../../../migrations/postgres/0001_init.sql"),
    include_str!("../../../migrations/postgres/0002_login_leases.sql"),
    include_str!("../../../migrations/postgres/0003_keys.sql"),
    include_str!("../../../migrations/postgres/0004_family_order.sql"),
    include_str!("../../../migrations/postgres/0005_mail.sql"),
    include_str!("../../../migrations/postgres/0006_mfa.sql"),
    include_str!("../../../migrations/postgres/0007_clients.sql"),
    include_str!("../../../migrations/postgres/0008_passkeys.sql"),
];

/// An arbitrary constant naming gatehouse's migration lock among the database's
/// advisory locks ("gatehous" in ASCII).
const LOCK: i64 = 0x6761_7465_686f_7573;

/// Applies every pending migration; returns the version reached.
pub(super) fn to_latest(conn: &mut Client) -> Result<String, StoreError> {
    let run = |conn: &mut Client| -> Result<Result<i64, StoreError>, ::postgres::Error> {
        let mut tx = conn.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version    integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )?;
        let current: i32 = tx
            .query_one(
                "SELECT COALESCE(max(version), 0) FROM schema_migrations",
                &[],
            )?
            .try_get(0)?;
        let known = MIGRATIONS.len() as i32;
        if current > known {
            return Ok(Err(newer(current, known)));
        }
        for (version, sql) in (1..).zip(MIGRATIONS).skip(current as usize) {
            tx.batch_execute(sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (version) VALUES ($1)",
                &[&version],
            )?;
        }
        tx.commit()?;
        Ok(Ok(i64::from(known)))
    };
    run(conn).map_err(map_err)?.map(|v| v.to_string())
}

/// The version `to_latest` brings a database to.
pub(super) fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

/// The version the database is at (0 before the first migration).
pub(super) fn current(conn: &mut Client) -> Result<i64, StoreError> {
    let read = |conn: &mut Client| -> Result<i32, ::postgres::Error> {
        // A missing table fails a statement at parse time, so ask for it first.
        let exists: bool = conn
            .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
            .try_get(0)?;
        if !exists {
            return Ok(0);
        }
        conn.query_one(
            "SELECT COALESCE(max(version), 0) FROM schema_migrations",
            &[],
        )?
        .try_get(0)
    };
    read(conn).map(i64::from).map_err(map_err)
}

pub(super) fn newer(current: i32, known: i32) -> StoreError {
    StoreError::internal(format!(
        "the database is at schema {current}, newer than this gatehouse knows ({known}): \
         run the newer gatehouse, or restore a backup taken before it migrated"
    ))
}
