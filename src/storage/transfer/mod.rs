//! Moving an install from SQLite to PostgreSQL (`gatehouse migrate-data`).
//!
//! The one module that knows both schemas, because its job is the mapping between them:
//! integer seconds become `timestamptz`, UUID text becomes `uuid`, 0/1 becomes `boolean`,
//! blobs become `bytea`. Every row keeps its identity (user, family and token hashes,
//! audit ids when the target has none), so a refresh token issued before the move is the
//! same token after it: live ones refresh, spent ones are reuse, revoked ones stay dead.
//!
//! The source is opened read-only and read in one transaction, so the copy is one
//! consistent snapshot. A snapshot is not enough: whatever a server wrote after it
//! (a revocation, a rotation) would be lost, so the copy refuses to run while a
//! `gatehouse serve` holds the file (`storage::serving`), and keeps servers from
//! starting on it until it is done. The target receives
//! everything in one transaction that first locks the tables against writers, and
//! commits only after the counts in the target match what was read: a failure at any
//! point leaves the target as it was.

mod tables;

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use self::tables::{Attempts, Audit, ClientSecrets, Clients, Columns, Families, Tokens, Users};
use super::DatabaseSettings;
use super::postgres::PostgresUrl;
use super::serving;

/// The SQLite schema whose columns this module reads (migrations/sqlite/0001-0008). A new
/// SQLite migration must teach this module its columns, then raise this. Of 0005 (mail)
/// only `users.email_verified` is copied: mail tokens and the outbox are short-lived and
/// hold links to the source's service; a user asks for a new mail after the move. 0006's
/// second factors are refused rather than left behind (see `copy`); 0007's clients are
/// copied. 0008's passkeys are second factors too, refused alike; its flows live five
/// minutes and are not copied.
pub const SOURCE_SCHEMA: i64 = 8;
/// The PostgreSQL schema it writes (migrations/postgres/0001-0008), for the same reason.
/// The keys (0003) are not its business: `gatehouse keys import` moves them; the order
/// families were opened in (0004) is numbered by the target as the copy inserts them,
/// read in the source's order. The families' tombstones (0007) list deleted users'
/// sessions in the revocation feed for one access-token lifetime: the source is stopped
/// for the copy, so they are not copied.
pub const TARGET_SCHEMA: &str = "8";

/// The tables copied, in an order that satisfies the foreign keys. SQLite's
/// `health_probe` is readiness scratch, not data; PostgreSQL has no such table.
/// `login_leases` are checks in flight on the source, which is stopped: none is live.
pub const TABLES: [&str; 7] = [
    "users",
    "refresh_families",
    "refresh_tokens",
    "login_attempts",
    "clients",
    "client_secrets",
    "audit_events",
];

/// Rows sent per INSERT: few round trips for a large install, and a bounded amount of
/// memory whatever its size (the source is streamed).
const BATCH: usize = 5_000;

/// How long the copy waits for a writer on the target to finish before it gives up;
/// a gatehouse still serving from the target would otherwise make it wait forever.
const LOCK_TIMEOUT: &str = "10s";

#[derive(Clone, Debug)]
pub struct Options {
    /// Copy even when the target already holds rows (they must not collide).
    pub into_non_empty: bool,
    pub connect_timeout: Duration,
}

/// What was copied, table by table, once committed.
#[derive(Debug)]
pub struct Report {
    pub tables: Vec<TableCount>,
    /// Audit events kept their ids (the target had none); otherwise they were numbered
    /// after the target's own, in the source's order.
    pub audit_ids_kept: bool,
    pub target_schema: String,
    pub elapsed: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableCount {
    pub table: &'static str,
    /// Rows in the source snapshot, all of them copied.
    pub copied: u64,
    /// Rows in the target before the copy (0 unless `into_non_empty`).
    pub target_before: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Nothing was written (or the target's transaction rolled back), and the operator
    /// can fix the cause: a missing file, not a gatehouse database, an outdated schema,
    /// an unreachable server, a non-empty target.
    #[error("{0}")]
    Refused(String),
    /// The copy failed midway and rolled back: the target is as it was.
    #[error("{0}")]
    Failed(String),
}

use TransferError::{Failed, Refused};

/// Copies the SQLite database at `from` into the PostgreSQL database `to`, after bringing
/// `to`'s schema to the latest version (as `gatehouse migrate` does).
pub fn copy(from: &Path, to: &PostgresUrl, options: &Options) -> Result<Report, TransferError> {
    let started = Instant::now();
    let mut source = open_source(from)?;
    let _quiet = serving::quiet(from).map_err(Refused)?;
    // Connected first: a wrong host, port or password fails here with the server's own
    // words, before the pool's retries would blur them into a timeout.
    let mut client = connect(to, options.connect_timeout)?;
    let target_schema = migrate_target(to, options.connect_timeout)?;

    let snapshot = source
        .transaction()
        .map_err(|e| Failed(format!("cannot start reading {}: {e}", from.display())))?;
    let mut expected = Vec::with_capacity(TABLES.len());
    for table in TABLES {
        let n: i64 = snapshot
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .map_err(|e| Failed(format!("cannot count the source's {table}: {e}")))?;
        expected.push(u64::try_from(n).unwrap_or(0));
    }
    // Second factors are not copied yet: a copy without them would turn MFA off for
    // every user who has it, silently. (Families copy without their `amr`, which reads
    // as `pwd`: less than the login proved, never more.)
    let mfa_users: i64 = snapshot
        .query_row(
            "SELECT count(*) FROM (SELECT user_id FROM mfa_totp UNION SELECT user_id FROM passkeys)",
            [],
            |r| r.get(0),
        )
        .map_err(|e| Failed(format!("cannot count the source's second factors: {e}")))?;
    if mfa_users > 0 {
        return Err(Refused(format!(
            "{} holds second factors (TOTP or passkeys) of {mfa_users} users, which \
             migrate-data does not copy yet; nothing was copied",
            from.display()
        )));
    }

    let mut tx = client
        .transaction()
        .map_err(|e| Failed(pg_failure("cannot start the target's transaction", &e)))?;
    // EXCLUSIVE lets readers on, keeps writers out until commit: the counts checked
    // below are then exactly this copy's doing.
    tx.batch_execute(&format!(
        "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}';
         LOCK TABLE {} IN EXCLUSIVE MODE",
        TABLES.join(", ")
    ))
    .map_err(|e| {
        Refused(pg_failure(
            "cannot lock the target's tables (is a gatehouse serving from it? stop it first)",
            &e,
        ))
    })?;
    let before = target_counts(&mut tx)?;
    if !options.into_non_empty && before.iter().any(|&n| n > 0) {
        let held: Vec<String> = TABLES
            .iter()
            .zip(&before)
            .filter(|(_, n)| **n > 0)
            .map(|(t, n)| format!("{t}: {n}"))
            .collect();
        return Err(Refused(format!(
            "the target {to} already holds data ({}); nothing was copied. Copy into an empty \
             database, or pass --into-non-empty to add this install's rows to it",
            held.join(", ")
        )));
    }
    // audit_events is the last of TABLES.
    let audit_ids_kept = before[TABLES.len() - 1] == 0;

    // In the order of TABLES, which the checks below index by.
    let copied = [
        copy_table::<Users>(&snapshot, &mut tx, Users::default())?,
        copy_table::<Families>(&snapshot, &mut tx, Families::default())?,
        copy_table::<Tokens>(&snapshot, &mut tx, Tokens::default())?,
        copy_table::<Attempts>(&snapshot, &mut tx, Attempts::default())?,
        copy_table::<Clients>(&snapshot, &mut tx, Clients::default())?,
        copy_table::<ClientSecrets>(&snapshot, &mut tx, ClientSecrets::default())?,
        copy_table::<Audit>(&snapshot, &mut tx, Audit::keeping_ids(audit_ids_kept))?,
    ];
    if audit_ids_kept {
        // Ids were given explicitly, so the identity's sequence never moved: new events
        // must be numbered after the copied ones.
        tx.execute(
            "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), max(id))
             FROM audit_events HAVING count(*) > 0",
            &[],
        )
        .map_err(|e| Failed(pg_failure("cannot advance the audit id sequence", &e)))?;
    }

    let after = target_counts(&mut tx)?;
    let mut tables = Vec::with_capacity(TABLES.len());
    for (i, table) in TABLES.into_iter().enumerate() {
        if copied[i] != expected[i] || after[i] != before[i] + expected[i] {
            // Dropping `tx` rolls back.
            return Err(Failed(format!(
                "{table}: the source holds {} rows, {} were read, and the target would hold \
                 {} instead of {}; rolled back, the target is unchanged",
                expected[i],
                copied[i],
                after[i],
                before[i] + expected[i]
            )));
        }
        tables.push(TableCount {
            table,
            copied: copied[i],
            target_before: before[i],
        });
    }
    tx.commit()
        .map_err(|e| Failed(pg_failure("the target refused the commit", &e)))?;
    drop(snapshot);
    Ok(Report {
        tables,
        audit_ids_kept,
        target_schema,
        elapsed: started.elapsed(),
    })
}

/// Opens `path` read-only and checks it is a gatehouse database at [`SOURCE_SCHEMA`].
fn open_source(path: &Path) -> Result<Connection, TransferError> {
    let shown = path.display();
    match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Refused(format!("the source {shown} does not exist")));
        }
        Err(e) => return Err(Refused(format!("cannot read the source {shown}: {e}"))),
        Ok(m) if !m.is_file() => {
            return Err(Refused(format!("the source {shown} is not a file")));
        }
        Ok(_) => {}
    }
    let not_sqlite = |e: rusqlite::Error| {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) {
            Refused(format!("the source {shown} is not a SQLite database"))
        } else {
            Refused(format!("cannot read the source {shown}: {e}"))
        }
    };
    // Read-only at the file level, and `query_only` besides: nothing here can change it.
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(not_sqlite)?;
    conn.busy_timeout(Duration::from_secs(5))
        .and_then(|()| conn.pragma_update(None, "query_only", true))
        .map_err(not_sqlite)?;
    let mut tables = Vec::new();
    {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
            .map_err(not_sqlite)?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(not_sqlite)?;
        for name in names {
            tables.push(name.map_err(not_sqlite)?);
        }
    }
    // Only the tables schema 1 had already (the client tables came later): an older
    // source is told to migrate (below), not that it is no gatehouse database.
    if let Some(missing) = TABLES
        .iter()
        .filter(|t| !t.starts_with("client"))
        .find(|t| !tables.iter().any(|n| n == *t))
    {
        return Err(Refused(format!(
            "the source {shown} is not a gatehouse database (it has no {missing} table)"
        )));
    }
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(not_sqlite)?;
    if version < SOURCE_SCHEMA {
        return Err(Refused(format!(
            "the source {shown} is at schema {version}, and this gatehouse copies from schema \
             {SOURCE_SCHEMA}: upgrade it first with `GATEHOUSE_DATABASE={shown} gatehouse \
             migrate`, then run migrate-data again"
        )));
    }
    if version > SOURCE_SCHEMA {
        return Err(Refused(format!(
            "the source {shown} is at schema {version}, newer than this gatehouse knows \
             ({SOURCE_SCHEMA}): run migrate-data with the gatehouse that wrote it"
        )));
    }
    Ok(conn)
}

/// Brings the target's schema to the latest version through the same code as
/// `gatehouse migrate`, and checks it is the one this module writes.
fn migrate_target(to: &PostgresUrl, connect_timeout: Duration) -> Result<String, TransferError> {
    let settings = DatabaseSettings::Postgres {
        url: Box::new(to.clone()),
        pool_size: 1,
        connect_timeout,
        // The operator is at the terminal: an unreachable target fails at once.
        start_timeout: Duration::ZERO,
        // It migrates and reads the version, on connections of its own.
        prepared_statements: false,
    };
    let store = super::open(&settings).map_err(|e| Refused(format!("{e:#}")))?;
    let version = store
        .schema_version()
        .map_err(|e| Refused(format!("cannot read the schema version of {to}: {e}")))?;
    if version != TARGET_SCHEMA {
        return Err(Refused(format!(
            "the target {to} is at schema {version}; this gatehouse copies into schema \
             {TARGET_SCHEMA}"
        )));
    }
    Ok(version)
}

fn connect(
    to: &PostgresUrl,
    connect_timeout: Duration,
) -> Result<::postgres::Client, TransferError> {
    let mut config = to.config().clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(connect_timeout);
    }
    config.application_name("gatehouse migrate-data");
    let connector = to
        .connector()
        .map_err(|e| Refused(format!("cannot set up TLS for {to}: {e:#}")))?;
    config.connect(connector).map_err(|e| {
        Refused(pg_failure(
            &format!("cannot connect to PostgreSQL at {to}"),
            &e,
        ))
    })
}

fn target_counts(tx: &mut ::postgres::Transaction<'_>) -> Result<Vec<u64>, TransferError> {
    TABLES
        .iter()
        .map(|table| {
            let n: i64 = tx
                .query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .and_then(|r| r.try_get(0))
                .map_err(|e| {
                    Failed(pg_failure(
                        &format!("cannot count the target's {table}"),
                        &e,
                    ))
                })?;
            Ok(u64::try_from(n).unwrap_or(0))
        })
        .collect()
}

/// A PostgreSQL error without its DETAIL: for a unique violation that quotes the key,
/// which may be a token hash or an email, and neither belongs in a terminal or a log.
fn pg_failure(what: &str, e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{what}: {} (SQLSTATE {}{})",
            db.message(),
            db.code().code(),
            db.constraint()
                .map(|c| format!(", constraint {c}"))
                .unwrap_or_default()
        ),
        None => {
            // The driver's own message ("error connecting to server") leaves the cause,
            // which the operator needs (refused, timed out, no such host), to its source.
            let mut text = format!("{what}: {e}");
            let mut cause = std::error::Error::source(e);
            while let Some(c) = cause {
                text.push_str(&format!(": {c}"));
                cause = c.source();
            }
            text
        }
    }
}

/// Streams `C::TABLE` from the snapshot into the target, `BATCH` rows per statement;
/// returns the number of rows copied.
fn copy_table<C: Columns>(
    source: &Connection,
    tx: &mut ::postgres::Transaction<'_>,
    mut batch: C,
) -> Result<u64, TransferError> {
    let table = C::TABLE;
    let read = |e: rusqlite::Error| Failed(format!("cannot read the source's {table}: {e}"));
    let insert = tx.prepare(batch.insert()).map_err(|e| {
        Failed(pg_failure(
            &format!("cannot prepare the copy of {table}"),
            &e,
        ))
    })?;
    let mut flush = |batch: &mut C| -> Result<(), TransferError> {
        if batch.len() > 0 {
            tx.execute(&insert, &batch.params()).map_err(|e| {
                // Class 23 (a key taken, a reference missing): the rows collide with the
                // target's, which only `--into-non-empty` allows; the operator's call.
                if e.code().is_some_and(|c| c.code().starts_with("23")) {
                    Refused(pg_failure(
                        &format!(
                            "the source's {table} collides with the target's rows; rolled \
                             back, nothing was copied"
                        ),
                        &e,
                    ))
                } else {
                    Failed(pg_failure(&format!("cannot copy {table}"), &e))
                }
            })?;
            batch.clear();
        }
        Ok(())
    };
    let mut stmt = source.prepare(C::SELECT).map_err(read)?;
    let mut rows = stmt.query([]).map_err(read)?;
    let mut copied = 0u64;
    while let Some(row) = rows.next().map_err(read)? {
        batch
            .push(row)
            .map_err(|e| Failed(format!("the source's {table} holds {e}")))?;
        copied += 1;
        if batch.len() >= BATCH {
            flush(&mut batch)?;
        }
    }
    flush(&mut batch)?;
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The copy reads the columns of one SQLite schema: a new SQLite migration must
    /// update this module (and `SOURCE_SCHEMA`) before the copy runs again.
    #[test]
    fn the_source_schema_is_the_one_sqlite_migrates_to() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("g.db");
        drop(
            super::super::sqlite::SqliteStore::open(
                &path,
                super::super::sqlite::Synchronous::Normal,
                1,
            )
            .expect("open"),
        );
        let version: i64 = Connection::open(&path)
            .and_then(|c| c.pragma_query_value(None, "user_version", |r| r.get(0)))
            .expect("user_version");
        assert_eq!(version, SOURCE_SCHEMA);
        open_source(&path).expect("a freshly migrated database is a valid source");
    }

    #[test]
    fn a_missing_file_an_empty_file_and_an_old_schema_are_refused_untouched() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing.db");
        let e = open_source(&missing).expect_err("refused");
        assert!(e.to_string().contains("does not exist"), "{e}");
        assert!(!missing.exists(), "the missing source was created");

        let empty = dir.path().join("empty.db");
        std::fs::write(&empty, b"").expect("write");
        let e = open_source(&empty).expect_err("refused");
        assert!(e.to_string().contains("not a gatehouse database"), "{e}");

        let junk = dir.path().join("junk.db");
        std::fs::write(&junk, vec![b'x'; 4096]).expect("write");
        let e = open_source(&junk).expect_err("refused");
        assert!(e.to_string().contains("not a SQLite database"), "{e}");

        let old = dir.path().join("old.db");
        {
            let conn = Connection::open(&old).expect("create");
            conn.execute_batch(include_str!("../../../migrations/sqlite/0001_init.sql"))
                .expect("schema 1");
            conn.pragma_update(None, "user_version", 1)
                .expect("version");
        }
        let bytes = std::fs::read(&old).expect("read");
        let e = open_source(&old).expect_err("refused");
        assert!(e.to_string().contains("gatehouse migrate"), "{e}");
        assert_eq!(
            std::fs::read(&old).expect("read"),
            bytes,
            "the source changed"
        );
    }
}
