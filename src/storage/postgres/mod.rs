//! The PostgreSQL implementation of `Store`: a pool of synchronous connections, used on
//! the blocking pool like SQLite's.
//!
//! Safe under READ COMMITTED by construction: every decision that races is one
//! conditional statement whose row count is the answer (the spend, the password change),
//! or takes the row lock it depends on (`FOR SHARE` on the user when a family opens), so
//! no rule relies on a single writer. Hot statements are one round trip each: prepared
//! once per connection and run by name after (`statements`; or, with the setting off,
//! sent unnamed with their parameter types), and written as one statement
//! (data-modifying CTEs) where SQLite runs a transaction.

mod accounts;
mod audit;
mod clients;
mod families;
pub mod keys;
mod lockout;
mod mail;
mod mfa;
mod migrate;
mod passkeys;
mod pool;
mod probe;
mod statements;
pub mod url;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::postgres::error::SqlState;
use ::postgres::{Client, Row};
use chrono::{DateTime, Utc};
use r2d2::Pool;
use r2d2_postgres::PostgresConnectionManager;

use super::*;
use crate::domain::{Email, FamilyId, RevokeReason, Role, Session, User, UserId};
use families::UserCheck;
pub use probe::{Probe, probe};
pub use url::{PostgresUrl, TlsMode};

use pool::{Check, Manager, Reachability};
use statements::{Conn, Connection, Statements, Tx};

/// Attempts of one operation that PostgreSQL aborted as a serialization failure or a
/// deadlock: each is safe to repeat (it rolled back), and a few tries settle any
/// realistic contention; past that, the caller gets 503 rather than a hang.
const ATTEMPTS: u32 = 4;

/// The unique constraint on `users.email` (migrations/postgres/0001_init.sql).
const EMAIL_CONSTRAINT: &str = "users_email_key";

/// While the server refuses connections and the pool holds none, a request waits this
/// long for one (a restart in progress may hand it one) before answering 503.
const REFUSED_CHECKOUT: Duration = Duration::from_millis(250);

pub struct PgStore {
    /// `None` only while the store drops (see `Drop`).
    pool: Option<Pool<Manager>>,
    reach: Arc<Reachability>,
    connect_timeout: Duration,
    /// Prepare each statement once per connection (`GATEHOUSE_DB_PREPARED_STATEMENTS`).
    prepared: bool,
}

/// Closing a connection blocks on the driver's own runtime, which panics on a thread
/// that drives another (the server drops its state inside actix's): the pool, and with
/// it every idle connection, is closed on a thread of its own.
impl Drop for PgStore {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.take() {
            let closing = std::thread::Builder::new()
                .name("pg-pool-close".into())
                .spawn(move || drop(pool));
            if let Ok(handle) = closing {
                let _ = handle.join();
            }
        }
    }
}

impl PgStore {
    /// Connects a pool of up to `pool_size` connections; waits at most `connect_timeout`
    /// for a connection, for every request. Does not migrate.
    ///
    /// A server that cannot be reached yet (down, starting, refusing) is retried for up
    /// to `start_timeout`, so that gatehouse and its database may start in any order; a
    /// server that answers with anything else (a wrong password, an unknown database, a
    /// TLS failure) fails at once: waiting would not fix it.
    pub fn connect(
        url: &PostgresUrl,
        pool_size: u32,
        connect_timeout: Duration,
        start_timeout: Duration,
    ) -> anyhow::Result<Self> {
        let reach = Arc::new(Reachability::default());
        let manager = manager(url, connect_timeout, reach.clone())?;
        first_connection(&manager, url, start_timeout)?;
        let pool = Pool::builder()
            .max_size(pool_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(connect_timeout)
            // A round trip per checkout would double a refresh's; `connection` checks
            // only connections that idled (see `pool::check`).
            .test_on_check_out(false)
            // `pool::Reachability` logs when the server goes and comes back; r2d2's own
            // handler would log every failed attempt and every stale connection replaced.
            .error_handler(Box::new(r2d2::NopErrorHandler))
            .build_unchecked(manager);
        Ok(Self {
            pool: Some(pool),
            reach,
            connect_timeout,
            prepared: true,
        })
    }

    /// Whether statements are prepared once per connection (the default) or sent unnamed
    /// every time, for a pooler that cannot carry named statements between transactions.
    pub fn prepared_statements(mut self, on: bool) -> Self {
        self.prepared = on;
        self
    }

    /// Runs `f` on a connection of the pool, as the store's statements use it: for
    /// tests that look at the server session a store's statements ran in (with a pool
    /// of one, always the same).
    #[doc(hidden)]
    pub fn with_pooled_client<T>(&self, f: impl FnOnce(&mut Client) -> T) -> Result<T, StoreError> {
        Ok(f(&mut *self.connection()?))
    }

    fn pool(&self) -> Result<&Pool<Manager>, StoreError> {
        self.pool
            .as_ref()
            .ok_or_else(|| StoreError::unavailable("the store is closing"))
    }

    /// A pooled connection the server has not closed: each stale one found is dropped
    /// and the next taken, so a restart costs no request a 503.
    fn connection(&self) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
        let pool = self.pool()?;
        for _ in 0..=pool.max_size() {
            let got = if self.reach.refused() && pool.state().connections == 0 {
                // The server is down: the pool keeps retrying in the background, and a
                // request that waited the whole checkout timeout would only hold a worker.
                pool.get_timeout(REFUSED_CHECKOUT)
            } else {
                pool.get()
            };
            let mut conn = got.map_err(|e| match self.reach.why() {
                // The pool's error holds only the driver's top line: the cause is the
                // server's own answer to the last attempt.
                Some(why) => StoreError::unavailable_because(
                    "no database connection",
                    format!("{e}; the last attempt: {why}"),
                ),
                None => StoreError::unavailable_because("no database connection", e),
            })?;
            match pool::check(&mut conn, self.connect_timeout) {
                Check::Usable => return Ok(conn),
                Check::Stale => continue,
                Check::Unresponsive => {
                    return Err(StoreError::unavailable(
                        "the database did not answer a liveness check in time",
                    ));
                }
            }
        }
        Err(StoreError::unavailable(
            "every pooled connection was closed by the server",
        ))
    }

    /// Runs `f` on a pooled connection, retrying serialization failures and deadlocks
    /// within `ATTEMPTS`, and, for `Reads`, a connection lost under it once.
    fn run<T, E: Into<Failure>>(
        &self,
        kind: Kind,
        mut f: impl FnMut(&mut Conn<'_>) -> Result<T, E>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut conn = self.connection()?;
            // Taken out for the call and put back after, so that `Connection` can borrow
            // it beside the client; lost with the connection when that is dropped.
            let mut statements = self
                .prepared
                .then(|| r2d2::PooledConnection::extensions_mut(&mut conn).remove())
                .map(Option::unwrap_or_default);
            let result =
                f(&mut Connection::new(&mut conn, statements.as_mut())).map_err(Into::into);
            if let Some(statements) = statements {
                r2d2::PooledConnection::extensions_mut(&mut conn).insert::<Statements>(statements);
            }
            let error = match result {
                Ok(v) => return Ok(v),
                Err(Failure::Row(e)) => return Err(e),
                Err(Failure::Db(e)) => e,
            };
            let retry = match classify(&error) {
                Class::Contention => attempt < ATTEMPTS,
                // A read changed nothing, so it may run again on another connection; a
                // write may have committed before the connection died, so it may not.
                Class::Connection => kind == Kind::Read && attempt < 2,
                // The session lost its prepared statements: one run outside a transaction
                // prepares again by itself (`statements`), but in one the failure aborted
                // it, and it rolled back: it may run again, prepared anew.
                Class::Forgotten => kind == Kind::Transaction && attempt < ATTEMPTS,
                _ => false,
            };
            if !retry {
                return Err(map_err(error));
            }
            drop(conn);
            if classify(&error) == Class::Contention {
                std::thread::sleep(Duration::from_millis(2 << attempt));
            }
        }
    }

    fn read<T, E: Into<Failure>>(
        &self,
        f: impl FnMut(&mut Conn<'_>) -> Result<T, E>,
    ) -> Result<T, StoreError> {
        self.run(Kind::Read, f)
    }

    /// One statement: atomic without BEGIN/COMMIT round trips.
    fn write<T, E: Into<Failure>>(
        &self,
        f: impl FnMut(&mut Conn<'_>) -> Result<T, E>,
    ) -> Result<T, StoreError> {
        self.run(Kind::Write, f)
    }

    /// Several statements in one transaction, for the rare writes whose later statement
    /// must see rows committed while an earlier one waited for a lock (see
    /// `change_password`).
    fn transaction<T, E: Into<Failure>>(
        &self,
        mut f: impl FnMut(&mut Tx<'_>) -> Result<T, E>,
    ) -> Result<T, StoreError> {
        self.run(Kind::Transaction, |c| -> Result<T, Failure> {
            // READ COMMITTED, named in the BEGIN (see `Conn::transaction`).
            let mut tx = c.transaction()?;
            let out = f(&mut tx).map_err(Into::into)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

/// The connection manager for `url`: its connect timeout and application name unless
/// the URL sets them.
fn manager(
    url: &PostgresUrl,
    connect_timeout: Duration,
    reach: Arc<Reachability>,
) -> anyhow::Result<Manager> {
    let mut config = url.config().clone();
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(connect_timeout);
    }
    if config.get_application_name().is_none() {
        config.application_name("gatehouse");
    }
    let inner = PostgresConnectionManager::new(config, url.connector()?);
    Ok(Manager::new(inner, reach))
}

/// [`wait_for_server`], naming the server in the error.
fn first_connection(
    manager: &Manager,
    url: &PostgresUrl,
    start_timeout: Duration,
) -> anyhow::Result<Client> {
    use anyhow::Context as _;
    wait_for_server(manager, url, start_timeout)
        .with_context(|| format!("cannot connect to PostgreSQL at {url}"))
}

/// The first connection, retried while the server cannot be reached and `start_timeout`
/// lasts; every other failure is final at once.
fn wait_for_server(
    manager: &Manager,
    url: &PostgresUrl,
    start_timeout: Duration,
) -> anyhow::Result<Client> {
    let deadline = Instant::now() + start_timeout;
    let mut pause = Duration::from_millis(250);
    loop {
        let error = match manager.connect_unrecorded() {
            Ok(client) => return Ok(client),
            Err(e) => e,
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if classify(&error) != Class::Connection || left.is_zero() {
            return Err(error.into());
        }
        tracing::warn!(
            error = %error,
            "PostgreSQL at {url} cannot be reached yet; retrying for up to {} s more \
             (GATEHOUSE_DB_START_TIMEOUT)",
            left.as_secs()
        );
        std::thread::sleep(pause.min(left));
        pause = (pause * 2).min(Duration::from_secs(2));
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    /// Writes, in one transaction: all of it committed, or none.
    Transaction,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Class {
    /// 40001, 40P01: the transaction was rolled back and may simply run again.
    Contention,
    /// The server is gone, going, or refusing: 503, never a verdict on a token.
    Connection,
    /// A statement or lock timeout cut a wait short (the statement rolled back): 503,
    /// and not retried, which would only double the wait on a database that is busy.
    Busy,
    EmailTaken,
    /// 26000: a prepared statement the session no longer has (see `statements`); 42P05:
    /// a name the session has already, which only a pooler sharing one server session
    /// between clients causes.
    Forgotten,
    Other,
}

fn classify(e: &::postgres::Error) -> Class {
    let Some(code) = e.code() else {
        // No SQLSTATE: the connection closed or its socket failed; anything else without
        // one (a row count, a conversion) is a bug here, not an outage.
        let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
        return if e.is_closed() || io {
            Class::Connection
        } else {
            Class::Other
        };
    };
    if *code == SqlState::T_R_SERIALIZATION_FAILURE || *code == SqlState::T_R_DEADLOCK_DETECTED {
        return Class::Contention;
    }
    if *code == SqlState::INVALID_SQL_STATEMENT_NAME || *code == SqlState::DUPLICATE_PSTATEMENT {
        return Class::Forgotten;
    }
    if *code == SqlState::UNIQUE_VIOLATION
        && e.as_db_error().and_then(|d| d.constraint()) == Some(EMAIL_CONSTRAINT)
    {
        return Class::EmailTaken;
    }
    let code = code.code();
    // 08: connection exceptions. 57P01-57P03: admin/crash shutdown, cannot connect now.
    // 53: insufficient resources (disk full, too many connections). 25006: a read-only
    // transaction, as on a standby after a failover.
    if e.is_closed()
        || code.starts_with("08")
        || code.starts_with("53")
        || matches!(code, "57P01" | "57P02" | "57P03" | "25006")
    {
        return Class::Connection;
    }
    // 57014, 55P03: a statement or lock timeout the operator set (`ALTER ROLE … SET
    // statement_timeout`) ended a wait; a database too busy to answer is an outage.
    if matches!(code, "57014" | "55P03") {
        return Class::Busy;
    }
    Class::Other
}

fn map_err(e: ::postgres::Error) -> StoreError {
    match classify(&e) {
        Class::EmailTaken => StoreError::EmailTaken,
        Class::Connection if e.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) => {
            StoreError::unavailable_because(
                "PostgreSQL is read-only (a standby not promoted, or \
                 default_transaction_read_only)",
                cause(e),
            )
        }
        Class::Connection => {
            StoreError::unavailable_because("PostgreSQL cannot be reached", cause(e))
        }
        Class::Busy => StoreError::unavailable_because(
            "a PostgreSQL statement or lock timeout ended a wait",
            cause(e),
        ),
        Class::Contention => StoreError::unavailable_because(
            "PostgreSQL kept aborting the transaction for contention",
            cause(e),
        ),
        // Once is a server that dropped the session's statements (retried); again and
        // again is a pooler that moves sessions between server connections.
        Class::Forgotten => StoreError::internal_because(
            "a prepared statement went missing: behind a pooler that cannot carry prepared \
             statements (PgBouncer before 1.21 in transaction pooling), set \
             GATEHOUSE_DB_PREPARED_STATEMENTS=off",
            cause(e),
        ),
        Class::Other => StoreError::internal_because("a PostgreSQL statement failed", cause(e)),
    }
}

/// The server's error by its SQLSTATE and message: its DETAIL would quote the row that
/// failed (hashes included). Errors without one (a socket, a conversion) quote nothing.
fn cause(e: ::postgres::Error) -> Cause {
    match e.as_db_error() {
        Some(db) => Box::new(DriverError {
            code: db.code().code().to_owned(),
            message: db.message().to_owned(),
        }),
        None => Box::new(e),
    }
}

/// `e` in one line for a log: the server's SQLSTATE and message when it answered, else
/// the driver's words and each cause (`connection refused`, a TLS failure), which the
/// driver's own `Display` leaves out.
fn describe(e: &::postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => DriverError {
            code: db.code().code().to_owned(),
            message: db.message().to_owned(),
        }
        .to_string(),
        None => crate::domain::error_chain(e),
    }
}

/// Runs a batch delete written as `WITH gone AS (DELETE … LIMIT $2 RETURNING 1) SELECT
/// count(*) FROM gone`, whose `$1` is a time: how many rows it deleted.
fn deleted_in_batch(
    c: &mut Conn<'_>,
    sql: &str,
    at: DateTime<Utc>,
    batch: i64,
) -> Result<usize, Failure> {
    let at = sec(at);
    let row = c.query_typed_one(
        sql,
        &[
            (&at, ::postgres::types::Type::TIMESTAMPTZ),
            (&batch, ::postgres::types::Type::INT8),
        ],
    )?;
    Ok(usize::try_from(col::<i64>(&row, 0)?).unwrap_or(0))
}

/// Times are stored in whole seconds, as SQLite stores them, so both backends answer
/// with the same values.
fn sec(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

fn internal(reason: &'static str) -> StoreError {
    StoreError::internal(reason)
}

fn col<'a, T: ::postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx)
        .map_err(|e| StoreError::internal_because("a stored value cannot be read", e))
}

fn hash_col(row: &Row, idx: usize) -> Result<TokenHashBytes, StoreError> {
    let bytes: Vec<u8> = col(row, idx)?;
    bytes
        .try_into()
        .map_err(|_| internal("a stored token hash is not 32 bytes"))
}

/// What a statement closure given to `PgStore::run` fails with: the server's error,
/// which `classify` judges (retried, or mapped to a `StoreError`), or a row this code
/// cannot read back, final at once.
enum Failure {
    Db(::postgres::Error),
    Row(StoreError),
}

impl From<::postgres::Error> for Failure {
    fn from(e: ::postgres::Error) -> Self {
        Self::Db(e)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Self::Row(e)
    }
}

/// Small batches, each its own statement, so pruning a backlog never holds locks long
/// enough to stall a login or refresh.
const PRUNE_BATCH: i64 = 500;

impl PgStore {
    /// Runs `step` (one batch of a prune) until a batch deletes fewer than
    /// `PRUNE_BATCH`; returns how many it deleted in all.
    fn in_batches(
        &self,
        mut step: impl FnMut(&mut Conn<'_>) -> Result<usize, Failure>,
    ) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let n = self.write(&mut step)?;
            total += n;
            if (n as i64) < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }
}

/// Each method is one call of a table module, on a connection the way it needs it:
/// `read` (retried once on a lost connection), `write` (one statement) or `transaction`.
impl Store for PgStore {
    /// Ready only on a server that takes writes: reads would work on a standby or a
    /// read-only database, but every login and refresh writes, so a replica that says
    /// ready there draws traffic it can only answer with 503.
    fn ping(&self) -> Result<(), StoreError> {
        let row = self.read(|c| {
            c.query_typed_one(
                "SELECT pg_is_in_recovery(), current_setting('transaction_read_only') = 'on'",
                &[],
            )
        })?;
        let (standby, read_only): (bool, bool) = (col(&row, 0)?, col(&row, 1)?);
        if standby {
            return Err(StoreError::unavailable(
                "the database is a standby not promoted (pg_is_in_recovery): it takes no writes",
            ));
        }
        if read_only {
            return Err(StoreError::unavailable(
                "the database takes no writes (transaction_read_only is on: \
                 default_transaction_read_only on the database or role)",
            ));
        }
        Ok(())
    }

    fn pool_status(&self) -> PoolStatus {
        let Some(state) = self.pool.as_ref().map(Pool::state) else {
            return PoolStatus::default();
        };
        PoolStatus {
            connections: state.connections,
            idle: state.idle_connections,
            engine_bytes: 0,
        }
    }

    fn migrate(&self) -> Result<String, StoreError> {
        migrate::to_latest(&mut *self.connection()?)
    }

    fn schema_version(&self) -> Result<String, StoreError> {
        migrate::current(&mut *self.connection()?).map(|v| v.to_string())
    }

    fn backup_to(&self, _to: &Path) -> Result<(), BackupError> {
        Err(BackupError::Unsupported(
            "on PostgreSQL, back up with the database's own tools: \
             `pg_dump --format=custom --file=gatehouse.dump \"$GATEHOUSE_DATABASE\"` \
             (see deploy/README.md)",
        ))
    }

    fn create_user(&self, new: NewUser<'_>) -> Result<User, StoreError> {
        self.write(|c| accounts::insert(c, &new))
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
        // Two statements in one transaction, not one: the UPDATE waits for a login that
        // holds the row `FOR SHARE` while it opens a family, and only a later statement
        // sees that family once it committed (READ COMMITTED), so the revocation ends it.
        // A login that comes after the UPDATE re-reads the row and finds it disabled.
        self.transaction(|tx| {
            let Some(user) = accounts::update(tx, id, role, disabled, now)? else {
                return Ok(None);
            };
            if disabled == Some(true) {
                families::revoke_all(tx, id, RevokeReason::Admin, now)?;
            }
            Ok::<_, Failure>(Some(user))
        })
    }

    fn change_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        family: NewFamily,
    ) -> Result<bool, StoreError> {
        let generation = family.password_generation;
        // A transaction of separate statements, not one: the revocation must see every
        // family committed while the UPDATE waited for the user's row (a login holding
        // it `FOR SHARE`), and under READ COMMITTED only a later statement does.
        self.transaction(|tx| {
            if !accounts::set_password(tx, user_id, password_hash, generation, family.now)? {
                return Ok(false);
            }
            families::revoke_all(tx, user_id, RevokeReason::PasswordChange, family.now)?;
            families::open(tx, &family, generation + 1, UserCheck::HeldByCaller)?;
            Ok::<_, Failure>(true)
        })
    }

    fn delete_user(
        &self,
        id: UserId,
        email: &Email,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let key = email_attempt_key(email);
        self.transaction(|tx| {
            clients::tombstone_families(tx, id, now)?;
            accounts::delete(tx, id, &key)
        })
    }

    fn create_family(&self, family: NewFamily) -> Result<bool, StoreError> {
        let generation = family.password_generation;
        self.write(|c| families::open(c, &family, generation, UserCheck::Lock))
    }

    fn find_refresh_token(&self, hash: TokenHashBytes) -> Result<Option<StoredToken>, StoreError> {
        self.read(|c| families::find(c, &hash))
    }

    fn spend_refresh_token(&self, spend: Spend) -> Result<bool, StoreError> {
        self.write(|c| families::spend(c, &spend))
    }

    fn revoke_family_of_token(
        &self,
        token: TokenHashBytes,
        reason: RevokeReason,
        now: DateTime<Utc>,
    ) -> Result<Option<(UserId, FamilyId)>, StoreError> {
        self.write(|c| families::revoke_by_token(c, &token, reason, now))
    }

    fn revoke_family(
        &self,
        family_id: FamilyId,
        owner: Option<UserId>,
        reason: RevokeReason,
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>, StoreError> {
        self.write(|c| families::revoke_one(c, family_id, owner, reason, now))
    }

    fn revoke_user_families(
        &self,
        user_id: UserId,
        reason: RevokeReason,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.write(|c| families::revoke_all_of_existing(c, user_id, reason, now))
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
        self.transaction(|tx| lockout::reserve(tx, lease, admit))
    }

    fn settle_attempt(&self, lease: LeaseId, how: Settle<'_>) -> Result<(), StoreError> {
        self.write(|c| lockout::settle(c, lease, how))
    }

    fn release_orphaned_leases(&self) -> Result<(), StoreError> {
        // Other replicas may hold live leases: only the expired ones are nobody's, and
        // only the server's clock, which they all share, says which those are.
        self.write(|c| lockout::delete_expired_leases(c, None))?;
        Ok(())
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
        self.write(|c| audit::insert(c, &event))
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
        let stale_before = sec(now) - chrono::Duration::seconds(lockout_window_secs);
        let pruned = Pruned {
            families: self.in_batches(|c| families::delete_expired(c, now, PRUNE_BATCH))?,
            login_attempts: self
                .in_batches(|c| lockout::delete_stale(c, stale_before, PRUNE_BATCH))?,
            audit_events: self
                .in_batches(|c| audit::delete_before(c, audit_before, PRUNE_BATCH))?,
        };
        // Not reported: each lease lives for one check, and a reservation on its key
        // drops it once expired anyway. Expired by the server's clock, like every lease.
        self.in_batches(|c| lockout::delete_expired_leases(c, Some(PRUNE_BATCH)))?;
        Ok(pruned)
    }
}
