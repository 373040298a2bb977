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

use std::path::Path;
use std::time::{Duration, Instant};

use ::postgres::types::ToSql;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};
use uuid::Uuid;

use super::DatabaseSettings;
use super::postgres::PostgresUrl;
use super::serving;

/// The SQLite schema whose columns this module reads (migrations/sqlite/0001-0007). A new
/// SQLite migration must teach this module its columns, then raise this. Of 0005 (mail)
/// only `users.email_verified` is copied: mail tokens and the outbox are short-lived and
/// hold links to the source's service; a user asks for a new mail after the move. 0006's
/// second factors are refused rather than left behind (see `copy`); 0007's clients are
/// copied.
pub const SOURCE_SCHEMA: i64 = 7;
/// The PostgreSQL schema it writes (migrations/postgres/0001-0007), for the same reason.
/// The keys (0003) are not its business: `gatehouse keys import` moves them; the order
/// families were opened in (0004) is numbered by the target as the copy inserts them,
/// read in the source's order. The families' tombstones (0007) list deleted users'
/// sessions in the revocation feed for one access-token lifetime: the source is stopped
/// for the copy, so they are not copied.
pub const TARGET_SCHEMA: &str = "7";

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
        .query_row("SELECT count(*) FROM mfa_totp", [], |r| r.get(0))
        .map_err(|e| Failed(format!("cannot count the source's mfa_totp: {e}")))?;
    if mfa_users > 0 {
        return Err(Refused(format!(
            "{} holds second factors (TOTP) of {mfa_users} users, which migrate-data does not \
             copy yet; nothing was copied",
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
        copy_table::<Audit>(
            &snapshot,
            &mut tx,
            Audit {
                keep_ids: audit_ids_kept,
                ..Audit::default()
            },
        )?,
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

/// One table's rows, column by column, as arrays for one `INSERT … SELECT FROM unnest`:
/// a batch is one statement, whatever its size, and every value a parameter.
trait Columns {
    const TABLE: &'static str;
    /// Reads the source's columns in the order `push` takes them.
    const SELECT: &'static str;
    fn insert(&self) -> &'static str;
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String>;
    fn len(&self) -> usize;
    fn params(&self) -> Vec<&(dyn ToSql + Sync)>;
    fn clear(&mut self);
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

fn time(row: &rusqlite::Row<'_>, idx: usize) -> Result<DateTime<Utc>, String> {
    let secs: i64 = row.get(idx).map_err(|e| e.to_string())?;
    DateTime::from_timestamp(secs, 0).ok_or_else(|| format!("a time out of range ({secs})"))
}

fn opt_time(row: &rusqlite::Row<'_>, idx: usize) -> Result<Option<DateTime<Utc>>, String> {
    let secs: Option<i64> = row.get(idx).map_err(|e| e.to_string())?;
    secs.map(|s| DateTime::from_timestamp(s, 0).ok_or_else(|| format!("a time out of range ({s})")))
        .transpose()
}

fn id(row: &rusqlite::Row<'_>, idx: usize) -> Result<Uuid, String> {
    let text: String = row.get(idx).map_err(|e| e.to_string())?;
    Uuid::parse_str(&text).map_err(|_| "an id that is not a UUID".to_owned())
}

fn opt_id(row: &rusqlite::Row<'_>, idx: usize) -> Result<Option<Uuid>, String> {
    let text: Option<String> = row.get(idx).map_err(|e| e.to_string())?;
    text.map(|t| Uuid::parse_str(&t).map_err(|_| "an id that is not a UUID".to_owned()))
        .transpose()
}

fn get<T: rusqlite::types::FromSql>(row: &rusqlite::Row<'_>, idx: usize) -> Result<T, String> {
    row.get(idx).map_err(|e| e.to_string())
}

#[derive(Default)]
struct Users {
    id: Vec<Uuid>,
    email: Vec<String>,
    password_hash: Vec<String>,
    role: Vec<String>,
    disabled: Vec<bool>,
    created_at: Vec<DateTime<Utc>>,
    updated_at: Vec<DateTime<Utc>>,
    password_generation: Vec<i64>,
    email_verified: Vec<bool>,
}

impl Columns for Users {
    const TABLE: &'static str = "users";
    const SELECT: &'static str = "SELECT id, email, password_hash, role, disabled, created_at,
                                         updated_at, password_generation, email_verified
                                  FROM users";
    fn insert(&self) -> &'static str {
        "INSERT INTO users (id, email, password_hash, role, disabled, created_at, updated_at,
                            password_generation, email_verified)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bool[],
                              $6::timestamptz[], $7::timestamptz[], $8::int8[], $9::bool[])"
    }
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String> {
        self.id.push(id(row, 0)?);
        self.email.push(get(row, 1)?);
        self.password_hash.push(get(row, 2)?);
        self.role.push(get(row, 3)?);
        self.disabled.push(get::<i64>(row, 4)? != 0);
        self.created_at.push(time(row, 5)?);
        self.updated_at.push(time(row, 6)?);
        self.password_generation.push(get(row, 7)?);
        self.email_verified.push(get::<i64>(row, 8)? != 0);
        Ok(())
    }
    fn len(&self) -> usize {
        self.id.len()
    }
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.id,
            &self.email,
            &self.password_hash,
            &self.role,
            &self.disabled,
            &self.created_at,
            &self.updated_at,
            &self.password_generation,
            &self.email_verified,
        ]
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[derive(Default)]
struct Families {
    id: Vec<Uuid>,
    user_id: Vec<Uuid>,
    created_at: Vec<DateTime<Utc>>,
    last_used_at: Vec<DateTime<Utc>>,
    expires_at: Vec<DateTime<Utc>>,
    revoked_at: Vec<Option<DateTime<Utc>>>,
    revoked_reason: Vec<Option<String>>,
    user_agent: Vec<Option<String>>,
    ip: Vec<Option<String>>,
    password_generation: Vec<i64>,
}

impl Columns for Families {
    const TABLE: &'static str = "refresh_families";
    const SELECT: &'static str = "SELECT id, user_id, created_at, last_used_at, expires_at,
                                         revoked_at, revoked_reason, user_agent, ip,
                                         password_generation
                                  FROM refresh_families ORDER BY rowid";
    fn insert(&self) -> &'static str {
        "INSERT INTO refresh_families (id, user_id, created_at, last_used_at, expires_at,
                                       revoked_at, revoked_reason, user_agent, ip,
                                       password_generation)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::timestamptz[], $4::timestamptz[],
                              $5::timestamptz[], $6::timestamptz[], $7::text[], $8::text[],
                              $9::text[], $10::int8[])"
    }
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String> {
        self.id.push(id(row, 0)?);
        self.user_id.push(id(row, 1)?);
        self.created_at.push(time(row, 2)?);
        self.last_used_at.push(time(row, 3)?);
        self.expires_at.push(time(row, 4)?);
        self.revoked_at.push(opt_time(row, 5)?);
        self.revoked_reason.push(get(row, 6)?);
        self.user_agent.push(get(row, 7)?);
        self.ip.push(get(row, 8)?);
        self.password_generation.push(get(row, 9)?);
        Ok(())
    }
    fn len(&self) -> usize {
        self.id.len()
    }
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.id,
            &self.user_id,
            &self.created_at,
            &self.last_used_at,
            &self.expires_at,
            &self.revoked_at,
            &self.revoked_reason,
            &self.user_agent,
            &self.ip,
            &self.password_generation,
        ]
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[derive(Default)]
struct Tokens {
    hash: Vec<Vec<u8>>,
    family_id: Vec<Uuid>,
    parent_hash: Vec<Option<Vec<u8>>>,
    issued_at: Vec<DateTime<Utc>>,
    expires_at: Vec<DateTime<Utc>>,
    spent_at: Vec<Option<DateTime<Utc>>>,
}

impl Columns for Tokens {
    const TABLE: &'static str = "refresh_tokens";
    const SELECT: &'static str = "SELECT hash, family_id, parent_hash, issued_at, expires_at,
                                         spent_at
                                  FROM refresh_tokens";
    fn insert(&self) -> &'static str {
        "INSERT INTO refresh_tokens (hash, family_id, parent_hash, issued_at, expires_at,
                                     spent_at)
         SELECT * FROM unnest($1::bytea[], $2::uuid[], $3::bytea[], $4::timestamptz[],
                              $5::timestamptz[], $6::timestamptz[])"
    }
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String> {
        self.hash.push(get(row, 0)?);
        self.family_id.push(id(row, 1)?);
        self.parent_hash.push(get(row, 2)?);
        self.issued_at.push(time(row, 3)?);
        self.expires_at.push(time(row, 4)?);
        self.spent_at.push(opt_time(row, 5)?);
        Ok(())
    }
    fn len(&self) -> usize {
        self.hash.len()
    }
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.hash,
            &self.family_id,
            &self.parent_hash,
            &self.issued_at,
            &self.expires_at,
            &self.spent_at,
        ]
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[derive(Default)]
struct Attempts {
    key: Vec<String>,
    window_start: Vec<DateTime<Utc>>,
    failures: Vec<i32>,
}

impl Columns for Attempts {
    const TABLE: &'static str = "login_attempts";
    const SELECT: &'static str = "SELECT key, window_start, failures FROM login_attempts";
    fn insert(&self) -> &'static str {
        "INSERT INTO login_attempts (key, window_start, failures)
         SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::int4[])"
    }
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String> {
        self.key.push(get(row, 0)?);
        self.window_start.push(time(row, 1)?);
        let failures: i64 = get(row, 2)?;
        self.failures.push(
            i32::try_from(failures)
                .map_err(|_| format!("a failure count out of range ({failures})"))?,
        );
        Ok(())
    }
    fn len(&self) -> usize {
        self.key.len()
    }
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![&self.key, &self.window_start, &self.failures]
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[derive(Default)]
struct Audit {
    keep_ids: bool,
    id: Vec<i64>,
    at: Vec<DateTime<Utc>>,
    kind: Vec<String>,
    user_id: Vec<Option<Uuid>>,
    family_id: Vec<Option<Uuid>>,
    actor_id: Vec<Option<Uuid>>,
    ip: Vec<Option<String>>,
    user_agent: Vec<Option<String>>,
    outcome: Vec<String>,
    detail: Vec<Option<String>>,
}

impl Columns for Audit {
    const TABLE: &'static str = "audit_events";
    // In id order: when ids are not kept, the target numbers them in this order, so
    // "newest first" still holds.
    const SELECT: &'static str = "SELECT id, at, type, user_id, family_id, actor_id, ip,
                                         user_agent, outcome, detail
                                  FROM audit_events ORDER BY id";
    fn insert(&self) -> &'static str {
        if self.keep_ids {
            "INSERT INTO audit_events (id, at, type, user_id, family_id, actor_id, ip,
                                       user_agent, outcome, detail)
             OVERRIDING SYSTEM VALUE
             SELECT * FROM unnest($1::int8[], $2::timestamptz[], $3::text[], $4::uuid[],
                                  $5::uuid[], $6::uuid[], $7::text[], $8::text[], $9::text[],
                                  $10::text[])"
        } else {
            "INSERT INTO audit_events (at, type, user_id, family_id, actor_id, ip, user_agent,
                                       outcome, detail)
             SELECT at, kind, user_id, family_id, actor_id, ip, user_agent, outcome, detail
             FROM unnest($1::timestamptz[], $2::text[], $3::uuid[], $4::uuid[], $5::uuid[],
                         $6::text[], $7::text[], $8::text[], $9::text[])
                  WITH ORDINALITY AS e(at, kind, user_id, family_id, actor_id, ip,
                                       user_agent, outcome, detail, n)
             ORDER BY n"
        }
    }
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String> {
        self.id.push(get(row, 0)?);
        self.at.push(time(row, 1)?);
        self.kind.push(get(row, 2)?);
        self.user_id.push(opt_id(row, 3)?);
        self.family_id.push(opt_id(row, 4)?);
        self.actor_id.push(opt_id(row, 5)?);
        self.ip.push(get(row, 6)?);
        self.user_agent.push(get(row, 7)?);
        self.outcome.push(get(row, 8)?);
        self.detail.push(get(row, 9)?);
        Ok(())
    }
    fn len(&self) -> usize {
        self.at.len()
    }
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        let mut params: Vec<&(dyn ToSql + Sync)> = Vec::with_capacity(10);
        if self.keep_ids {
            params.push(&self.id);
        }
        params.extend([
            &self.at as &(dyn ToSql + Sync),
            &self.kind,
            &self.user_id,
            &self.family_id,
            &self.actor_id,
            &self.ip,
            &self.user_agent,
            &self.outcome,
            &self.detail,
        ]);
        params
    }
    fn clear(&mut self) {
        *self = Self {
            keep_ids: self.keep_ids,
            ..Self::default()
        };
    }
}

#[derive(Default)]
struct Clients {
    id: Vec<Uuid>,
    name: Vec<String>,
    scopes: Vec<String>,
    audience: Vec<Option<String>>,
    created_at: Vec<DateTime<Utc>>,
    last_used_at: Vec<Option<DateTime<Utc>>>,
    disabled: Vec<bool>,
}

impl Columns for Clients {
    const TABLE: &'static str = "clients";
    const SELECT: &'static str = "SELECT id, name, scopes, audience, created_at, last_used_at,
                                         disabled
                                  FROM clients";
    fn insert(&self) -> &'static str {
        "INSERT INTO clients (id, name, scopes, audience, created_at, last_used_at, disabled)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[],
                              $5::timestamptz[], $6::timestamptz[], $7::bool[])"
    }
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String> {
        self.id.push(id(row, 0)?);
        self.name.push(get(row, 1)?);
        self.scopes.push(get(row, 2)?);
        self.audience.push(get(row, 3)?);
        self.created_at.push(time(row, 4)?);
        self.last_used_at.push(opt_time(row, 5)?);
        self.disabled.push(get::<i64>(row, 6)? != 0);
        Ok(())
    }
    fn len(&self) -> usize {
        self.id.len()
    }
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.id,
            &self.name,
            &self.scopes,
            &self.audience,
            &self.created_at,
            &self.last_used_at,
            &self.disabled,
        ]
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
}

#[derive(Default)]
struct ClientSecrets {
    client_id: Vec<Uuid>,
    hash: Vec<Vec<u8>>,
    created_at: Vec<DateTime<Utc>>,
    not_after: Vec<Option<DateTime<Utc>>>,
}

impl Columns for ClientSecrets {
    const TABLE: &'static str = "client_secrets";
    const SELECT: &'static str = "SELECT client_id, hash, created_at, not_after
                                  FROM client_secrets";
    fn insert(&self) -> &'static str {
        "INSERT INTO client_secrets (client_id, hash, created_at, not_after)
         SELECT * FROM unnest($1::uuid[], $2::bytea[], $3::timestamptz[], $4::timestamptz[])"
    }
    fn push(&mut self, row: &rusqlite::Row<'_>) -> Result<(), String> {
        self.client_id.push(id(row, 0)?);
        self.hash.push(get(row, 1)?);
        self.created_at.push(time(row, 2)?);
        self.not_after.push(opt_time(row, 3)?);
        Ok(())
    }
    fn len(&self) -> usize {
        self.client_id.len()
    }
    fn params(&self) -> Vec<&(dyn ToSql + Sync)> {
        vec![
            &self.client_id,
            &self.hash,
            &self.created_at,
            &self.not_after,
        ]
    }
    fn clear(&mut self) {
        *self = Self::default();
    }
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
            conn.execute_batch(include_str!("../../migrations/sqlite/0001_init.sql"))
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
