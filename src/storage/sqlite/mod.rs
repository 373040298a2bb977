//! The SQLite implementation of `Store`: WAL, one writer connection, a pool of readers.
//!
//! SQLite admits one writer at a time. Rather than let several pooled connections race
//! for the write lock (and back off in the busy handler, sleeping), every write goes
//! through one connection behind a mutex, so writers queue in order and each transaction
//! starts the moment the previous one commits. Reads run in parallel on the pool.

mod accounts;
mod audit;
mod checkpoint;
mod clients;
mod disk;
mod families;
mod lockout;
mod mail;
mod mfa;
mod passkeys;
mod probe;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use r2d2::Pool;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, ErrorCode, Transaction, TransactionBehavior};
use rusqlite_migration::{M, Migrations};

use super::*;
use crate::domain::{Email, FamilyId, RevokeReason, Role, Session, User, UserId};

/// How long a request waits for a pooled connection or a locked database before it
/// gives up with 503: bounded, so an exhausted pool never hangs a client.
const WAIT: Duration = Duration::from_secs(5);

/// SQLite's `synchronous` setting, which decides what survives a power loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Synchronous {
    /// In WAL mode: every committed transaction survives a process crash; a power loss
    /// may roll back the last transactions before the latest checkpoint (never corrupt).
    Normal,
    /// Every commit is on disk before it returns: survives power loss too; slower.
    Full,
}

impl Synchronous {
    fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "normal" => Some(Self::Normal),
            "full" => Some(Self::Full),
            _ => None,
        }
    }
}

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(include_str!("../../../migrations/sqlite/0001_init.sql")),
        M::up(include_str!(
            "../../../migrations/sqlite/0002_health_probe.sql"
        )),
        M::up(include_str!(
            "../../../migrations/sqlite/0003_password_generation.sql"
        )),
        M::up(include_str!(
            "../../../migrations/sqlite/0004_login_leases.sql"
        )),
        M::up_with_hook(
            include_str!("../../../migrations/sqlite/0005_mail.sql"),
            |tx: &Transaction<'_>| Ok(mail::allow_password_reset_reason(tx)?),
        ),
        M::up(include_str!("../../../migrations/sqlite/0006_mfa.sql")),
        M::up(include_str!("../../../migrations/sqlite/0007_clients.sql")),
        M::up(include_str!("../../../migrations/sqlite/0008_passkeys.sql")),
    ])
}

/// Page-cache budgets, in KiB. SQLite (built with memory management, as bundled here)
/// pools every connection's pages in one LRU whose size is the sum of their budgets, and
/// a connection at its own budget takes the pool's oldest page, whoever holds it. With
/// SQLite's default of 2 MiB each, the writer slowly absorbed the unused budgets of the
/// readers and the checkpointer (up to ~20 MiB; measured: SQLite's heap still rising
/// after ten minutes of load). Readers only look up a user or a few lockout rows, and the
/// checkpointer copies WAL frames without the cache, so they get small budgets and the
/// pool stays near the writer's 2 MiB.
const WRITER_CACHE_KIB: u32 = 2000;
const READER_CACHE_KIB: u32 = 256;
const CHECKPOINTER_CACHE_KIB: u32 = 64;

fn configure(conn: &Connection, synchronous: Synchronous, cache_kib: u32) -> rusqlite::Result<()> {
    conn.busy_timeout(WAIT)?;
    let _mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {}; PRAGMA foreign_keys = ON; PRAGMA cache_size = -{cache_kib};",
        synchronous.pragma()
    ))?;
    Ok(())
}

pub struct SqliteStore {
    path: PathBuf,
    /// The one connection that writes. A timed lock: a request that cannot start its
    /// write within `WAIT` gets 503 instead of queueing without bound.
    writer: parking_lot::Mutex<Connection>,
    /// Whether the last write failed for lack of the database (full, read-only,
    /// locked); readiness then probes with a real write until one succeeds.
    write_failing: std::sync::atomic::AtomicBool,
    readers: Pool<SqliteConnectionManager>,
    _checkpointer: checkpoint::Checkpointer,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it to the latest
    /// schema.
    pub fn open(path: &Path, synchronous: Synchronous, readers: u32) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            use std::os::unix::fs::DirBuilderExt as _;
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
        }
        create_private(path)?;
        let mut writer = Connection::open(path)
            .with_context(|| format!("cannot open database {}", path.display()))?;
        // SQLite opens the file read-only, for good, when the file system refuses
        // writes; such a writer never recovers (every connection of the process shares
        // the read-only WAL index), so refuse to start, and a supervisor's restart
        // succeeds once the fault is gone.
        anyhow::ensure!(
            !writer.is_readonly(rusqlite::MAIN_DB).unwrap_or(true),
            "the database {} is read-only (a read-only file system, or no write permission \
             on the file or its directory); gatehouse must be able to write it",
            path.display()
        );
        configure(&writer, synchronous, WRITER_CACHE_KIB)
            .with_context(|| format!("cannot configure {}", path.display()))?;
        migrations()
            .to_latest(&mut writer)
            .with_context(|| format!("cannot migrate {}", path.display()))?;
        let manager = SqliteConnectionManager::file(path)
            .with_init(move |c| configure(c, synchronous, READER_CACHE_KIB));
        let readers = Pool::builder()
            .max_size(readers.max(1))
            .min_idle(Some(1))
            .connection_timeout(WAIT)
            .build(manager)
            .context("cannot open the database connection pool")?;
        writer.execute_batch(&format!(
            "PRAGMA wal_autocheckpoint = {};",
            checkpoint::WRITER_BACKSTOP_PAGES
        ))?;
        let checkpointer = checkpoint::Checkpointer::start(path, CHECKPOINTER_CACHE_KIB)
            .context("cannot start the WAL checkpoint thread")?;
        Ok(Self {
            path: path.to_owned(),
            writer: parking_lot::Mutex::new(writer),
            write_failing: std::sync::atomic::AtomicBool::new(false),
            readers,
            _checkpointer: checkpointer,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, StoreError> {
        let conn = self
            .readers
            .get()
            .map_err(|e| StoreError::unavailable_because("no database connection", e))?;
        f(&conn).map_err(map_err)
    }

    /// Runs `f` in one `BEGIN IMMEDIATE` transaction on the writer; commits when it
    /// returns `Ok`, rolls back otherwise.
    fn write<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        use std::sync::atomic::Ordering;
        let mut conn = self
            .writer
            .try_lock_for(WAIT)
            .ok_or_else(|| StoreError::unavailable("timed out waiting for the database writer"))?;
        let result = (|| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })()
        .map_err(map_err);
        match &result {
            Ok(_) => self.write_failing.store(false, Ordering::Relaxed),
            Err(StoreError::Unavailable { .. }) => {
                self.write_failing.store(true, Ordering::Relaxed)
            }
            Err(_) => {}
        }
        result
    }

    /// Copies the live database into `to` with SQLite's online backup API. The copy is
    /// one step: it reads a single WAL snapshot, so the server's writes go on meanwhile
    /// (WAL readers never block the writer). Small steps would restart the copy after
    /// every write from another connection and never finish under a steady load. The copy
    /// is written beside `to` and renamed into place once its integrity check passes.
    pub fn online_backup(&self, to: &Path) -> anyhow::Result<()> {
        anyhow::ensure!(!to.exists(), "{} already exists", to.display());
        let tmp = to.with_extension("partial");
        let _ = std::fs::remove_file(&tmp);
        create_private(&tmp)?;
        {
            let src = self.readers.get().context("no database connection")?;
            let mut dst = Connection::open(&tmp)
                .with_context(|| format!("cannot create {}", tmp.display()))?;
            let backup = rusqlite::backup::Backup::new(&src, &mut dst)?;
            backup.run_to_completion(i32::MAX, Duration::ZERO, None)?;
        }
        let copy = Connection::open(&tmp)?;
        let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        anyhow::ensure!(check == "ok", "the copy fails its integrity check: {check}");
        drop(copy);
        std::fs::rename(&tmp, to).with_context(|| format!("cannot create {}", to.display()))?;
        Ok(())
    }

    /// `PRAGMA integrity_check`: "ok" when the file is sound.
    pub fn integrity_check(&self) -> Result<String, StoreError> {
        self.read(|c| c.query_row("PRAGMA integrity_check", [], |r| r.get(0)))
    }
}

/// Creates the database file readable by its owner only: it holds password hashes.
/// SQLite gives the `-wal` and `-shm` files the same mode.
fn create_private(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if path.exists() {
        return Ok(());
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create database {}", path.display()))?;
    Ok(())
}

/// A UNIQUE constraint refused the write: recognised by SQLite's extended result code,
/// never by the message (the primary key has a code of its own, 1555).
pub(super) fn is_unique_violation(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _)
        if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE)
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::OutOfMemory,
        ) => StoreError::unavailable_because("SQLite cannot answer", cause(e)),
        _ => StoreError::internal_because("a SQLite statement failed", cause(e)),
    }
}

/// The error without what it may quote: an input error's statement text.
fn cause(e: rusqlite::Error) -> Cause {
    match e {
        rusqlite::Error::SqlInputError { error, msg, .. } => Box::new(DriverError {
            code: error.extended_code.to_string(),
            message: msg,
        }),
        other => Box::new(other),
    }
}

/// A migration's error without the statement text it quotes.
fn migration_cause(e: rusqlite_migration::Error) -> Cause {
    match e {
        rusqlite_migration::Error::RusqliteError { err, .. } => cause(err),
        other => Box::new(other),
    }
}

pub(super) fn ts(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

pub(super) fn time(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).unwrap_or_default()
}

/// An id column (UUID text) as the id type the caller expects.
pub(super) fn uuid_col<T: From<uuid::Uuid>>(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(idx)?;
    parse_uuid(idx, &text)
}

pub(super) fn opt_uuid_col<T: From<uuid::Uuid>>(
    row: &rusqlite::Row<'_>,
    idx: usize,
) -> rusqlite::Result<Option<T>> {
    let text: Option<String> = row.get(idx)?;
    text.map(|t| parse_uuid(idx, &t)).transpose()
}

/// A family, its first token, the event that opened it and the failures it forgives:
/// one transaction's writes.
fn open_family(tx: &Transaction<'_>, family: &NewFamily) -> rusqlite::Result<()> {
    families::insert(tx, family)?;
    audit::insert(
        tx,
        &AuditEvent {
            user_id: Some(family.user_id),
            family_id: Some(family.id),
            ..family.opened_by.clone()
        },
    )?;
    if let Some(key) = &family.forgives {
        lockout::forget(tx, key)?;
    }
    if let Some(lease) = family.settles {
        lockout::release(tx, lease)?;
    }
    Ok(())
}

fn parse_uuid<T: From<uuid::Uuid>>(idx: usize, text: &str) -> rusqlite::Result<T> {
    uuid::Uuid::parse_str(text).map(T::from).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
    })
}

impl Store for SqliteStore {
    fn ping(&self) -> Result<(), StoreError> {
        self.read(|c| {
            c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                .map(|_| ())
        })?;
        // Some writes still fit in room the WAL already holds (see `disk`), so a full
        // file system is asked about directly rather than inferred from one write.
        if disk::free_bytes(&self.path).is_some_and(|free| free < disk::MIN_FREE_BYTES) {
            return Err(StoreError::unavailable(
                "the database's file system is full",
            ));
        }
        if self
            .write_failing
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            // The last write failed: prove a write works before calling ourselves ready.
            self.write(|tx| {
                tx.execute(
                    "INSERT OR REPLACE INTO health_probe (id, at) VALUES (1, unixepoch())",
                    [],
                )
            })?;
        }
        Ok(())
    }

    fn pool_status(&self) -> PoolStatus {
        let state = self.readers.state();
        PoolStatus {
            connections: state.connections,
            idle: state.idle_connections,
            // SAFETY: sqlite3_memory_used only reads SQLite's own allocation counter.
            engine_bytes: u64::try_from(unsafe { rusqlite::ffi::sqlite3_memory_used() })
                .unwrap_or(0),
        }
    }

    fn migrate(&self) -> Result<String, StoreError> {
        let mut writer = self
            .writer
            .try_lock_for(WAIT)
            .ok_or_else(|| StoreError::unavailable("timed out waiting for the database writer"))?;
        migrations()
            .to_latest(&mut writer)
            .map_err(|e| StoreError::internal_because("cannot migrate", migration_cause(e)))?;
        drop(writer);
        self.schema_version()
    }

    fn schema_version(&self) -> Result<String, StoreError> {
        let conn = self
            .readers
            .get()
            .map_err(|e| StoreError::unavailable_because("no database connection", e))?;
        migrations()
            .current_version(&conn)
            .map(|v| v.to_string())
            .map_err(|e| {
                StoreError::internal_because("cannot read the schema version", migration_cause(e))
            })
    }

    fn backup_to(&self, to: &Path) -> Result<(), BackupError> {
        Ok(self.online_backup(to)?)
    }

    fn create_user(&self, new: NewUser<'_>) -> Result<User, StoreError> {
        self.write(|tx| accounts::insert(tx, &new))?
            .ok_or(StoreError::EmailTaken)
    }

    fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError> {
        self.read(|c| accounts::by_email(c, email))
    }

    fn account_by_id(&self, id: UserId) -> Result<Option<Account>, StoreError> {
        self.read(|c| accounts::by_id(c, id))
    }

    fn account_for_session(
        &self,
        user_id: UserId,
        session: FamilyId,
        now: DateTime<Utc>,
    ) -> Result<Option<Account>, StoreError> {
        self.read(|c| accounts::by_session(c, user_id, session, now))
    }

    fn search_users(&self, query: Option<&str>, limit: u32) -> Result<Vec<User>, StoreError> {
        self.read(|c| accounts::search(c, query, limit))
    }

    fn update_user(
        &self,
        id: UserId,
        role: Option<Role>,
        disabled: Option<bool>,
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StoreError> {
        self.write(|tx| {
            let Some(user) = accounts::update(tx, id, role, disabled, now)? else {
                return Ok(None);
            };
            if disabled == Some(true) {
                families::revoke_all(tx, id, RevokeReason::Admin, now)?;
            }
            Ok(Some(user))
        })
    }

    fn change_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        family: NewFamily,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let generation = family.password_generation;
            if !accounts::set_password(tx, user_id, password_hash, generation, family.now)? {
                return Ok(false);
            }
            families::revoke_all(tx, user_id, RevokeReason::PasswordChange, family.now)?;
            open_family(
                tx,
                &NewFamily {
                    password_generation: generation + 1,
                    ..family
                },
            )?;
            Ok(true)
        })
    }

    fn delete_user(
        &self,
        id: UserId,
        email: &Email,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            lockout::forget(tx, &email_attempt_key(email))?;
            clients::tombstone_families(tx, id, now)?;
            accounts::delete(tx, id)
        })
    }

    fn create_family(&self, family: NewFamily) -> Result<bool, StoreError> {
        self.write(|tx| {
            if !accounts::may_open_family(tx, family.user_id, family.password_generation)? {
                return Ok(false);
            }
            open_family(tx, &family)?;
            Ok(true)
        })
    }

    fn find_refresh_token(&self, hash: TokenHashBytes) -> Result<Option<StoredToken>, StoreError> {
        self.read(|c| families::find(c, &hash))
    }

    fn spend_refresh_token(&self, spend: Spend) -> Result<bool, StoreError> {
        self.write(|tx| families::spend(tx, &spend))
    }

    fn revoke_family_of_token(
        &self,
        token: TokenHashBytes,
        reason: RevokeReason,
        now: DateTime<Utc>,
    ) -> Result<Option<(UserId, FamilyId)>, StoreError> {
        self.write(|tx| families::revoke_by_token(tx, &token, reason, now))
    }

    fn revoke_family(
        &self,
        family_id: FamilyId,
        owner: Option<UserId>,
        reason: RevokeReason,
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>, StoreError> {
        self.write(|tx| families::revoke_one(tx, family_id, owner, reason, now))
    }

    fn revoke_user_families(
        &self,
        user_id: UserId,
        reason: RevokeReason,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            if accounts::by_id(tx, user_id)?.is_none() {
                return Ok(false);
            }
            families::revoke_all(tx, user_id, reason, now)?;
            Ok(true)
        })
    }

    fn list_sessions(
        &self,
        user_id: UserId,
        include_ended: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<Session>, StoreError> {
        self.read(|c| families::list(c, user_id, include_ended, now))
    }

    fn reserve_attempt(
        &self,
        lease: &Lease,
        admit: &(dyn Fn(&[KeyLoad]) -> bool + Sync),
    ) -> Result<Reservation, StoreError> {
        self.write(|tx| lockout::reserve(tx, lease, admit))
    }

    fn settle_attempt(&self, lease: LeaseId, how: Settle<'_>) -> Result<(), StoreError> {
        self.write(|tx| lockout::settle(tx, lease, how))
    }

    fn release_orphaned_leases(&self) -> Result<(), StoreError> {
        // One process serves a SQLite database, and it is starting: no lease is held.
        self.write(|tx| tx.execute("DELETE FROM login_leases", []).map(drop))
    }

    fn login_failures(
        &self,
        keys: &[String],
        window_secs: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<AttemptCount>, StoreError> {
        self.read(|c| lockout::failures(c, keys, window_secs, now))
    }

    fn record_audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.write(|tx| audit::insert(tx, &event))
    }

    fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(|c| audit::list(c, filter))
    }

    fn count_audit_by_hour(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<AuditCount>, StoreError> {
        self.read(|c| audit::count_by_hour(c, from, to))
    }

    fn last_logins(&self, users: &[UserId]) -> Result<Vec<Option<DateTime<Utc>>>, StoreError> {
        self.read(|c| families::last_opened(c, users))
    }

    fn prune(
        &self,
        now: DateTime<Utc>,
        lockout_window_secs: i64,
        audit_before: DateTime<Utc>,
    ) -> Result<Pruned, StoreError> {
        // Small batches, each its own transaction, so pruning a large backlog never
        // holds the write lock long enough to stall a login or refresh.
        const BATCH: usize = 500;
        let mut pruned = Pruned::default();
        loop {
            let n = self.write(|tx| families::delete_expired(tx, now, BATCH))?;
            pruned.families += n;
            if n < BATCH {
                break;
            }
        }
        pruned.login_attempts =
            self.write(|tx| lockout::delete_stale(tx, now, lockout_window_secs))?;
        // Leases are not reported: each lives for one check, and a reservation on its
        // key drops it once expired anyway.
        self.write(|tx| lockout::delete_expired_leases(tx, now))?;
        loop {
            let n = self.write(|tx| audit::delete_before(tx, audit_before, BATCH))?;
            pruned.audit_events += n;
            if n < BATCH {
                break;
            }
        }
        Ok(pruned)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_connection_gets_its_page_cache_budget() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("gatehouse.db"), Synchronous::Normal, 2)
            .expect("open");
        let budget = |c: &Connection| -> i64 {
            c.query_row("PRAGMA cache_size", [], |r| r.get(0))
                .expect("cache_size")
        };
        assert_eq!(budget(&store.writer.lock()), -i64::from(WRITER_CACHE_KIB));
        let reader = store.readers.get().expect("reader");
        assert_eq!(budget(&reader), -i64::from(READER_CACHE_KIB));
    }

    fn family(user_id: UserId, first_token: TokenHashBytes, generation: i64) -> NewFamily {
        let now = Utc::now();
        NewFamily {
            id: FamilyId::random(),
            user_id,
            first_token,
            now,
            token_expires_at: now + chrono::Duration::hours(1),
            family_expires_at: now + chrono::Duration::days(1),
            user_agent: None,
            ip: None,
            password_generation: generation,
            opened_by: AuditEvent::new(now, crate::domain::AuditKind::LoginSucceeded, "ok"),
            forgives: None,
            settles: None,
            amr: crate::domain::Amr::Pwd,
        }
    }

    /// A fresh store in a temp dir (kept alive by the returned guard) with one user.
    fn store_with_user(tag: &str) -> (tempfile::TempDir, SqliteStore, Email, User) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("gatehouse.db"), Synchronous::Normal, 2)
            .expect("open");
        let email = Email::parse(&format!("{tag}@example.com")).expect("email");
        let user = store
            .create_user(NewUser {
                id: UserId::random(),
                email: &email,
                password_hash: "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA",
                role: Role::User,
                now: Utc::now(),
            })
            .expect("user");
        (dir, store, email, user)
    }

    /// The claim is the store's whole promise for rotation: of two spends of one token,
    /// one wins; a revoked family's token cannot be spent.
    #[test]
    fn a_token_is_spent_by_exactly_one_claim() {
        let (_dir, store, _, user) = store_with_user("claim");
        let f = family(user.id, [1; 32], 0);
        let family_id = f.id;
        assert!(store.create_family(f).expect("open"));
        let spend = |presented: TokenHashBytes, child: TokenHashBytes| Spend {
            presented,
            child,
            family_id,
            now: Utc::now(),
            child_expires_at: Utc::now() + chrono::Duration::hours(1),
        };
        assert!(
            store
                .spend_refresh_token(spend([1; 32], [2; 32]))
                .expect("first")
        );
        assert!(
            !store
                .spend_refresh_token(spend([1; 32], [3; 32]))
                .expect("second")
        );
        let stored = store
            .find_refresh_token([1; 32])
            .expect("read")
            .expect("known");
        let child = stored.child.expect("child");
        assert_eq!((child.hash, child.spent), ([2; 32], false));
        assert!(store.find_refresh_token([3; 32]).expect("read").is_none());

        assert!(
            store
                .revoke_family(family_id, None, RevokeReason::Logout, Utc::now())
                .expect("revoke")
                .is_some()
        );
        assert!(
            !store
                .spend_refresh_token(spend([2; 32], [4; 32]))
                .expect("revoked")
        );
    }

    /// The password generation is checked where it is written: a family opens only under
    /// the user's current password, and one that falls behind refreshes no more.
    #[test]
    fn families_live_and_die_with_the_password_generation() {
        let (_dir, store, email, user) = store_with_user("generation");
        let live = family(user.id, [1; 32], 0);
        let live_id = live.id;
        assert!(store.create_family(live).expect("open"));
        assert!(
            !store
                .create_family(family(user.id, [2; 32], 1))
                .expect("ahead")
        );

        // Two changes that both checked generation 0: only the first commits.
        assert!(
            store
                .change_password(user.id, "h1", family(user.id, [3; 32], 0))
                .expect("first")
        );
        assert!(
            !store
                .change_password(user.id, "h2", family(user.id, [4; 32], 0))
                .expect("second")
        );
        assert!(
            !store
                .create_family(family(user.id, [5; 32], 0))
                .expect("stale")
        );
        assert!(
            store
                .create_family(family(user.id, [6; 32], 1))
                .expect("current")
        );
        let account = store.account_by_id(user.id).expect("read").expect("user");
        assert_eq!(
            (account.password_hash.as_str(), account.password_generation),
            ("h1", 1)
        );

        // A family left behind (un-revoked here by hand) still cannot refresh or
        // authenticate.
        store
            .write(|tx| {
                tx.execute(
                    "UPDATE refresh_families SET revoked_at = NULL WHERE id = ?1",
                    [live_id.to_string()],
                )
            })
            .expect("unrevoke");
        let stale = store
            .find_refresh_token([1; 32])
            .expect("read")
            .expect("known");
        assert!(stale.family_stale && !stale.family_revoked);
        assert!(
            store
                .account_for_session(user.id, live_id, Utc::now())
                .expect("read")
                .is_none()
        );

        // Deleted users open nothing either (no foreign-key error reaches the caller).
        assert!(
            store
                .delete_user(user.id, &email, Utc::now())
                .expect("delete")
        );
        assert!(
            !store
                .create_family(family(user.id, [8; 32], 1))
                .expect("gone")
        );
    }

    /// What the console's overview and user list rely on; any backend must answer the
    /// same.
    #[test]
    fn audit_counts_group_by_hour_and_kind_and_last_logins_follow_the_asked_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("gatehouse.db"), Synchronous::Normal, 2)
            .expect("open");
        // 500,000 hours after the epoch: on the hour.
        let hour = DateTime::from_timestamp(1_800_000_000, 0).expect("t");
        let at =
            |secs: i64, kind| AuditEvent::new(hour + chrono::Duration::seconds(secs), kind, "ok");
        for event in [
            at(-1, AuditKind::LoginSucceeded),
            at(0, AuditKind::LoginSucceeded),
            at(10, AuditKind::LoginFailed),
            at(3599, AuditKind::LoginSucceeded),
            at(3600, AuditKind::RefreshReuseDetected),
            at(7200, AuditKind::LoginSucceeded),
        ] {
            store.record_audit(event).expect("record");
        }
        let counts = store
            .count_audit_by_hour(hour, hour + chrono::Duration::seconds(7200))
            .expect("counts");
        let got: Vec<(i64, &str, u64)> = counts
            .iter()
            .map(|c| ((c.hour - hour).num_seconds(), c.kind.as_str(), c.count))
            .collect();
        assert_eq!(
            got,
            [
                (0, "login_failed", 1),
                (0, "login_succeeded", 2),
                (3600, "refresh_reuse_detected", 1),
            ],
            "from is inclusive, to exclusive, hours on the hour"
        );

        let email = Email::parse("seen@example.com").expect("email");
        let seen = store
            .create_user(NewUser {
                id: UserId::random(),
                email: &email,
                password_hash: "x",
                role: Role::User,
                now: Utc::now(),
            })
            .expect("user");
        let mut older = family(seen.id, [1; 32], 0);
        older.now -= chrono::Duration::hours(2);
        let newer = family(seen.id, [2; 32], 0);
        let newest_login = newer.now;
        assert!(store.create_family(older).expect("older"));
        assert!(store.create_family(newer).expect("newer"));
        let unknown = UserId::random();
        let logins = store
            .last_logins(&[unknown, seen.id, unknown])
            .expect("logins");
        assert_eq!(
            logins,
            [None, Some(time(ts(newest_login))), None],
            "one answer per id asked, in order"
        );
        assert_eq!(store.last_logins(&[]).expect("none asked"), []);
    }
}
