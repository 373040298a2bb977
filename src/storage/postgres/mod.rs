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

pub mod keys;
mod migrate;
mod pool;
mod statements;
pub mod url;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::postgres::error::SqlState;
use ::postgres::types::Type;
use ::postgres::{Client, Row};
use chrono::{DateTime, Utc};
use r2d2::Pool;
use r2d2_postgres::PostgresConnectionManager;
use uuid::Uuid;

use super::*;
use crate::domain::{Email, FamilyId, RevokeReason, Role, Session, User, UserId};
pub use url::{PostgresUrl, TlsMode};

use pool::{Check, Manager, Reachability};
use statements::{Conn, Connection, Driver, Params, Statements, Tx};

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
        use anyhow::Context as _;
        let mut config = url.config().clone();
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("gatehouse");
        }
        let inner = PostgresConnectionManager::new(config, url.connector()?);
        let reach = Arc::new(Reachability::default());
        let manager = Manager::new(inner, reach.clone());
        wait_for_server(&manager, url, start_timeout)
            .with_context(|| format!("cannot connect to PostgreSQL at {url}"))?;
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
            .ok_or_else(|| StoreError::Unavailable("the store is closing".into()))
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
            let mut conn =
                got.map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))?;
            match pool::check(&mut conn, self.connect_timeout) {
                Check::Usable => return Ok(conn),
                Check::Stale => continue,
                Check::Unresponsive => {
                    return Err(StoreError::Unavailable(
                        "the database did not answer a liveness check in time".into(),
                    ));
                }
            }
        }
        Err(StoreError::Unavailable(
            "every pooled connection was closed by the server".into(),
        ))
    }

    /// Runs `f` on a pooled connection, retrying serialization failures and deadlocks
    /// within `ATTEMPTS`, and, for `Reads`, a connection lost under it once.
    fn run<T>(
        &self,
        kind: Kind,
        mut f: impl FnMut(&mut Conn<'_>) -> Result<T, ::postgres::Error>,
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
            let result = f(&mut Connection::new(&mut conn, statements.as_mut()));
            if let Some(statements) = statements {
                r2d2::PooledConnection::extensions_mut(&mut conn).insert::<Statements>(statements);
            }
            let error = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
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
                return Err(map_err(&error));
            }
            drop(conn);
            if classify(&error) == Class::Contention {
                std::thread::sleep(Duration::from_millis(2 << attempt));
            }
        }
    }

    fn read<T>(
        &self,
        f: impl FnMut(&mut Conn<'_>) -> Result<T, ::postgres::Error>,
    ) -> Result<T, StoreError> {
        self.run(Kind::Read, f)
    }

    /// One statement: atomic without BEGIN/COMMIT round trips.
    fn write<T>(
        &self,
        f: impl FnMut(&mut Conn<'_>) -> Result<T, ::postgres::Error>,
    ) -> Result<T, StoreError> {
        self.run(Kind::Write, f)
    }

    /// Several statements in one transaction, for the rare writes whose later statement
    /// must see rows committed while an earlier one waited for a lock (see
    /// `change_password`).
    fn transaction<T>(
        &self,
        mut f: impl FnMut(&mut Tx<'_>) -> Result<T, ::postgres::Error>,
    ) -> Result<T, StoreError> {
        self.run(Kind::Transaction, |c| {
            // READ COMMITTED, named in the BEGIN (see `Conn::transaction`).
            let mut tx = c.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

/// The first connection, retried while the server cannot be reached and `start_timeout`
/// lasts; every other failure is final at once.
fn wait_for_server(
    manager: &Manager,
    url: &PostgresUrl,
    start_timeout: Duration,
) -> anyhow::Result<()> {
    use r2d2::ManageConnection as _;
    let deadline = Instant::now() + start_timeout;
    let mut pause = Duration::from_millis(250);
    loop {
        let error = match manager.connect() {
            Ok(_) => return Ok(()),
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

fn map_err(e: &::postgres::Error) -> StoreError {
    match classify(e) {
        Class::EmailTaken => StoreError::EmailTaken,
        Class::Connection | Class::Busy | Class::Contention => {
            StoreError::Unavailable(e.to_string())
        }
        // Once is a server that dropped the session's statements (retried); again and
        // again is a pooler that moves sessions between server connections.
        Class::Forgotten => StoreError::Internal(format!(
            "{}: behind a pooler that cannot carry prepared statements (PgBouncer before \
             1.21 in transaction pooling), set GATEHOUSE_DB_PREPARED_STATEMENTS=off",
            e.as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned())
        )),
        Class::Other => StoreError::Internal(e.to_string()),
    }
}

/// Times are stored in whole seconds, as SQLite stores them, so both backends answer
/// with the same values.
fn sec(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

fn internal(e: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(e.to_string())
}

fn col<'a, T: ::postgres::types::FromSql<'a>>(row: &'a Row, idx: usize) -> Result<T, StoreError> {
    row.try_get(idx).map_err(internal)
}

fn hash_col(row: &Row, idx: usize) -> Result<TokenHashBytes, StoreError> {
    let bytes: Vec<u8> = col(row, idx)?;
    bytes
        .try_into()
        .map_err(|_| internal("a stored token hash is not 32 bytes"))
}

const ACCOUNT_COLUMNS: &str =
    "u.id, u.email, u.role, u.disabled, u.created_at, u.password_hash, u.password_generation";

/// A row that starts with `ACCOUNT_COLUMNS`.
fn account(row: &Row) -> Result<Account, StoreError> {
    let role: String = col(row, 2)?;
    Ok(Account {
        user: User {
            id: UserId::from(col::<Uuid>(row, 0)?),
            email: Email::from_trusted(col(row, 1)?),
            role: Role::parse(&role).ok_or_else(|| internal("unknown role in users.role"))?,
            disabled: col(row, 3)?,
            created_at: col(row, 4)?,
        },
        password_hash: col(row, 5)?,
        password_generation: col(row, 6)?,
    })
}

fn one_account(
    store: &PgStore,
    sql: &str,
    params: &Params<'_>,
) -> Result<Option<Account>, StoreError> {
    store
        .read(|c| c.query_typed_opt(sql, params))?
        .as_ref()
        .map(account)
        .transpose()
}

impl Store for PgStore {
    fn ping(&self) -> Result<(), StoreError> {
        let standby: bool = self
            .read(|c| c.query_typed_one("SELECT pg_is_in_recovery()", &[]))
            .and_then(|r| col(&r, 0))?;
        if standby {
            // Reads would work, but every login and refresh writes.
            return Err(StoreError::Unavailable(
                "the database is a read-only standby".into(),
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
        let (id, now) = (new.id.as_uuid(), sec(new.now));
        let (email, role) = (new.email.as_str(), new.role.as_str());
        self.write(|c| {
            c.query_typed(
                "INSERT INTO users (id, email, password_hash, role, disabled, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, false, $5, $5)",
                &[
                    (&id, Type::UUID),
                    (&email, Type::TEXT),
                    (&new.password_hash, Type::TEXT),
                    (&role, Type::TEXT),
                    (&now, Type::TIMESTAMPTZ),
                ],
            )
        })?;
        Ok(User {
            id: new.id,
            email: new.email.clone(),
            role: new.role,
            disabled: false,
            created_at: now,
        })
    }

    fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError> {
        let email = email.as_str();
        one_account(
            self,
            &format!("SELECT {ACCOUNT_COLUMNS} FROM users u WHERE u.email = $1"),
            &[(&email, Type::TEXT)],
        )
    }

    fn account_by_id(&self, id: UserId) -> Result<Option<Account>, StoreError> {
        let id = id.as_uuid();
        one_account(
            self,
            &format!("SELECT {ACCOUNT_COLUMNS} FROM users u WHERE u.id = $1"),
            &[(&id, Type::UUID)],
        )
    }

    fn account_for_session(
        &self,
        user_id: UserId,
        session: FamilyId,
        now: DateTime<Utc>,
    ) -> Result<Option<Account>, StoreError> {
        let (user_id, session, now) = (user_id.as_uuid(), session.as_uuid(), sec(now));
        one_account(
            self,
            &format!(
                "SELECT {ACCOUNT_COLUMNS}
                 FROM refresh_families f JOIN users u ON u.id = f.user_id
                 WHERE f.id = $1 AND f.user_id = $2 AND f.revoked_at IS NULL
                       AND f.expires_at > $3
                       AND f.password_generation = u.password_generation"
            ),
            &[
                (&session, Type::UUID),
                (&user_id, Type::UUID),
                (&now, Type::TIMESTAMPTZ),
            ],
        )
    }

    fn search_users(&self, query: Option<&str>, limit: u32) -> Result<Vec<User>, StoreError> {
        let limit = i64::from(limit);
        let rows = match query {
            // PostgreSQL text cannot hold NUL, so no stored email has this prefix; and the
            // server would refuse the parameter (a 500 where SQLite finds nobody).
            Some(q) if q.contains('\0') => Vec::new(),
            // A prefix as a range on the unique index (byte-ordered, see the migration):
            // every string starting with `q` sorts in [q, q || U+10FFFF). No LIKE, so `%`
            // and `_` are plain characters.
            Some(q) => {
                let upper = format!("{q}\u{10FFFF}");
                self.read(|c| {
                    c.query_typed(
                        &format!(
                            "SELECT {ACCOUNT_COLUMNS} FROM users u
                             WHERE u.email >= $1 AND u.email < $2
                                   AND left(u.email, length($1)) = $1
                             ORDER BY u.email LIMIT $3"
                        ),
                        &[(&q, Type::TEXT), (&upper, Type::TEXT), (&limit, Type::INT8)],
                    )
                })?
            }
            None => self.read(|c| {
                c.query_typed(
                    &format!(
                        "SELECT {ACCOUNT_COLUMNS} FROM users u
                         ORDER BY u.created_at DESC, u.email LIMIT $1"
                    ),
                    &[(&limit, Type::INT8)],
                )
            })?,
        };
        rows.iter().map(|r| account(r).map(|a| a.user)).collect()
    }

    fn update_user(
        &self,
        id: UserId,
        role: Option<Role>,
        disabled: Option<bool>,
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StoreError> {
        let (id, now) = (id.as_uuid(), sec(now));
        let role = role.map(Role::as_str);
        let reason = RevokeReason::Admin.as_str();
        // Two statements in one transaction, not one: the UPDATE waits for a login that
        // holds the row `FOR SHARE` while it opens a family, and only a later statement
        // sees that family once it committed (READ COMMITTED), so the revocation ends it.
        // A login that comes after the UPDATE re-reads the row and finds it disabled.
        let row = self.transaction(|tx| {
            let row = tx.query_typed_opt(
                &format!(
                    "WITH u AS (
                         UPDATE users SET role = COALESCE($2, role),
                                disabled = COALESCE($3, disabled), updated_at = $4
                         WHERE id = $1
                         RETURNING *
                     )
                     SELECT {ACCOUNT_COLUMNS} FROM u"
                ),
                &[
                    (&id, Type::UUID),
                    (&role, Type::TEXT),
                    (&disabled, Type::BOOL),
                    (&now, Type::TIMESTAMPTZ),
                ],
            )?;
            if row.is_some() && disabled == Some(true) {
                tx.query_typed(
                    "UPDATE refresh_families SET revoked_at = $2, revoked_reason = $3
                     WHERE user_id = $1 AND revoked_at IS NULL",
                    &[
                        (&id, Type::UUID),
                        (&now, Type::TIMESTAMPTZ),
                        (&reason, Type::TEXT),
                    ],
                )?;
            }
            Ok(row)
        })?;
        row.as_ref().map(|r| account(r).map(|a| a.user)).transpose()
    }

    fn change_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        family: NewFamily,
    ) -> Result<bool, StoreError> {
        let user = user_id.as_uuid();
        let now = sec(family.now);
        let generation = family.password_generation;
        let reason = RevokeReason::PasswordChange.as_str();
        // A transaction of separate statements, not one: the revocation must see every
        // family committed while the UPDATE waited for the user's row (a login holding
        // it `FOR SHARE`), and under READ COMMITTED only a later statement does.
        self.transaction(|tx| {
            let changed = tx.query_typed(
                "UPDATE users SET password_hash = $2, updated_at = $3,
                        password_generation = password_generation + 1
                 WHERE id = $1 AND password_generation = $4
                 RETURNING id",
                &[
                    (&user, Type::UUID),
                    (&password_hash, Type::TEXT),
                    (&now, Type::TIMESTAMPTZ),
                    (&generation, Type::INT8),
                ],
            )?;
            if changed.len() != 1 {
                return Ok(false);
            }
            tx.query_typed(
                "UPDATE refresh_families SET revoked_at = $2, revoked_reason = $3
                 WHERE user_id = $1 AND revoked_at IS NULL",
                &[
                    (&user, Type::UUID),
                    (&now, Type::TIMESTAMPTZ),
                    (&reason, Type::TEXT),
                ],
            )?;
            insert_family(
                tx,
                &family,
                generation + 1,
                // The user's row is ours until commit: no need to lock it again.
                false,
            )?;
            Ok(true)
        })
    }

    fn delete_user(&self, id: UserId, email: &Email) -> Result<bool, StoreError> {
        let id = id.as_uuid();
        let key = email_attempt_key(email);
        // Families and token hashes go with the user (ON DELETE CASCADE). Audit events
        // keep the bare user id and lose what could identify the person. The DELETE comes
        // first: it waits for a login holding the row `FOR SHARE`, and the scrub, a later
        // statement, then sees the event that login committed.
        self.transaction(|tx| {
            let deleted = tx.query_typed(
                "DELETE FROM users WHERE id = $1 RETURNING 1",
                &[(&id, Type::UUID)],
            )?;
            if deleted.is_empty() {
                return Ok(false);
            }
            tx.query_typed(
                "WITH lockout AS (DELETE FROM login_attempts WHERE key = $2)
                 UPDATE audit_events SET ip = NULL, user_agent = NULL, detail = NULL
                 WHERE user_id = $1",
                &[(&id, Type::UUID), (&key, Type::TEXT)],
            )?;
            Ok(true)
        })
    }

    fn create_family(&self, family: NewFamily) -> Result<bool, StoreError> {
        self.write(|c| insert_family(c, &family, family.password_generation, true))
    }

    fn find_refresh_token(&self, hash: TokenHashBytes) -> Result<Option<StoredToken>, StoreError> {
        let hash = &hash[..];
        let row = self.read(|c| {
            c.query_typed_opt(
                "SELECT t.family_id, t.expires_at, t.spent_at, f.expires_at,
                        f.revoked_at IS NOT NULL,
                        u.id, u.email, u.role, u.disabled, u.created_at,
                        f.password_generation <> u.password_generation,
                        c.hash, c.spent_at IS NOT NULL, c.expires_at
                 FROM refresh_tokens t
                 JOIN refresh_families f ON f.id = t.family_id
                 JOIN users u ON u.id = f.user_id
                 -- `$1`, not `t.hash`: the same value, but a constant the planner
                 -- looks up in the parent index instead of filtering a join.
                 LEFT JOIN refresh_tokens c ON c.parent_hash = $1
                 WHERE t.hash = $1",
                &[(&hash, Type::BYTEA)],
            )
        })?;
        let Some(row) = row else {
            return Ok(None);
        };
        let role: String = col(&row, 7)?;
        let child = match col::<Option<Vec<u8>>>(&row, 11)? {
            Some(_) => Some(StoredChild {
                hash: hash_col(&row, 11)?,
                spent: col(&row, 12)?,
                expires_at: col(&row, 13)?,
            }),
            None => None,
        };
        Ok(Some(StoredToken {
            family_id: FamilyId::from(col::<Uuid>(&row, 0)?),
            expires_at: col(&row, 1)?,
            spent_at: col(&row, 2)?,
            family_expires_at: col(&row, 3)?,
            family_revoked: col(&row, 4)?,
            user: User {
                id: UserId::from(col::<Uuid>(&row, 5)?),
                email: Email::from_trusted(col(&row, 6)?),
                role: Role::parse(&role).ok_or_else(|| internal("unknown role in users.role"))?,
                disabled: col(&row, 8)?,
                created_at: col(&row, 9)?,
            },
            family_stale: col(&row, 10)?,
            child,
        }))
    }

    fn spend_refresh_token(&self, spend: Spend) -> Result<bool, StoreError> {
        let (presented, child) = (&spend.presented[..], &spend.child[..]);
        let family = spend.family_id.as_uuid();
        let (now, child_expires) = (sec(spend.now), sec(spend.child_expires_at));
        // The claim in one round trip. `family` locks the family row, so a revocation
        // committed meanwhile is seen (the lock waits for it, then re-reads the row);
        // `claimed` is the compare-and-set: under READ COMMITTED a second claim waits for
        // the first's row lock, re-checks `spent_at IS NULL` on the row it committed, and
        // matches nothing. Only a claim that changed the row inserts the child.
        let row = self.write(|c| {
            c.query_typed_one(
                "WITH family AS (
                     SELECT id FROM refresh_families
                     WHERE id = $3 AND revoked_at IS NULL
                     FOR NO KEY UPDATE
                 ), claimed AS (
                     UPDATE refresh_tokens SET spent_at = $2
                     WHERE hash = $1 AND spent_at IS NULL
                           AND family_id IN (SELECT id FROM family)
                     RETURNING family_id
                 ), child AS (
                     INSERT INTO refresh_tokens (hash, family_id, parent_hash, issued_at, expires_at)
                     SELECT $4, family_id, $1, $2, $5 FROM claimed
                     RETURNING family_id
                 ), touched AS (
                     UPDATE refresh_families SET last_used_at = $2
                     WHERE id IN (SELECT family_id FROM child)
                 )
                 SELECT count(*) FROM claimed",
                &[
                    (&presented, Type::BYTEA),
                    (&now, Type::TIMESTAMPTZ),
                    (&family, Type::UUID),
                    (&child, Type::BYTEA),
                    (&child_expires, Type::TIMESTAMPTZ),
                ],
            )
        })?;
        Ok(col::<i64>(&row, 0)? == 1)
    }

    fn revoke_family_of_token(
        &self,
        token: TokenHashBytes,
        reason: RevokeReason,
        now: DateTime<Utc>,
    ) -> Result<Option<(UserId, FamilyId)>, StoreError> {
        let (token, now, reason) = (&token[..], sec(now), reason.as_str());
        let row = self.write(|c| {
            c.query_typed_opt(
                "WITH found AS (
                     SELECT f.id, f.user_id FROM refresh_tokens t
                     JOIN refresh_families f ON f.id = t.family_id
                     WHERE t.hash = $1
                 ), revoked AS (
                     UPDATE refresh_families SET revoked_at = $2, revoked_reason = $3
                     WHERE id IN (SELECT id FROM found) AND revoked_at IS NULL
                 )
                 SELECT user_id, id FROM found",
                &[
                    (&token, Type::BYTEA),
                    (&now, Type::TIMESTAMPTZ),
                    (&reason, Type::TEXT),
                ],
            )
        })?;
        row.map(|r| {
            Ok((
                UserId::from(col::<Uuid>(&r, 0)?),
                FamilyId::from(col::<Uuid>(&r, 1)?),
            ))
        })
        .transpose()
    }

    fn revoke_family(
        &self,
        family_id: FamilyId,
        owner: Option<UserId>,
        reason: RevokeReason,
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>, StoreError> {
        let (family, owner) = (family_id.as_uuid(), owner.map(UserId::as_uuid));
        let (now, reason) = (sec(now), reason.as_str());
        // A revoked family keeps its first revocation: only `revoked_at IS NULL` rows
        // change, but a revoked one still counts as found.
        let row = self.write(|c| {
            c.query_typed_opt(
                "WITH found AS (
                     SELECT id, user_id FROM refresh_families
                     WHERE id = $1 AND ($2::uuid IS NULL OR user_id = $2)
                 ), revoked AS (
                     UPDATE refresh_families SET revoked_at = $3, revoked_reason = $4
                     WHERE id IN (SELECT id FROM found) AND revoked_at IS NULL
                 )
                 SELECT user_id FROM found",
                &[
                    (&family, Type::UUID),
                    (&owner, Type::UUID),
                    (&now, Type::TIMESTAMPTZ),
                    (&reason, Type::TEXT),
                ],
            )
        })?;
        row.map(|r| Ok(UserId::from(col::<Uuid>(&r, 0)?)))
            .transpose()
    }

    fn revoke_user_families(
        &self,
        user_id: UserId,
        reason: RevokeReason,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (user, now, reason) = (user_id.as_uuid(), sec(now), reason.as_str());
        let row = self.write(|c| {
            c.query_typed_one(
                "WITH revoked AS (
                     UPDATE refresh_families SET revoked_at = $2, revoked_reason = $3
                     WHERE user_id = $1 AND revoked_at IS NULL
                 )
                 SELECT count(*) FROM users WHERE id = $1",
                &[
                    (&user, Type::UUID),
                    (&now, Type::TIMESTAMPTZ),
                    (&reason, Type::TEXT),
                ],
            )
        })?;
        Ok(col::<i64>(&row, 0)? > 0)
    }

    fn list_sessions(
        &self,
        user_id: UserId,
        include_ended: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<Session>, StoreError> {
        let (user, now) = (user_id.as_uuid(), sec(now));
        // Live: not revoked, before its absolute expiry, and holding an unspent token
        // that has not idled out.
        let rows = self.read(|c| {
            c.query_typed(
                "SELECT id, created_at, last_used_at, expires_at, revoked_at, revoked_reason,
                        user_agent, ip
                 FROM refresh_families f
                 WHERE user_id = $1 AND ($2 OR (revoked_at IS NULL AND expires_at > $3 AND EXISTS (
                     SELECT 1 FROM refresh_tokens t
                     WHERE t.family_id = f.id AND t.spent_at IS NULL AND t.expires_at > $3)))
                 ORDER BY created_at DESC, opened_seq DESC",
                &[
                    (&user, Type::UUID),
                    (&include_ended, Type::BOOL),
                    (&now, Type::TIMESTAMPTZ),
                ],
            )
        })?;
        rows.iter()
            .map(|row| {
                let reason: Option<String> = col(row, 5)?;
                Ok(Session {
                    id: FamilyId::from(col::<Uuid>(row, 0)?),
                    created_at: col(row, 1)?,
                    last_used_at: col(row, 2)?,
                    expires_at: col(row, 3)?,
                    revoked_at: col(row, 4)?,
                    revoked_reason: reason.as_deref().and_then(RevokeReason::parse),
                    user_agent: col(row, 6)?,
                    ip: col(row, 7)?,
                })
            })
            .collect()
    }

    fn reserve_attempt(
        &self,
        lease: &Lease,
        admit: &(dyn Fn(&[KeyLoad]) -> bool + Sync),
    ) -> Result<Reservation, StoreError> {
        let locks = sorted_distinct(&lease.keys);
        let (id, now) = (lease.id.0, sec(lease.now));
        // Lease times are the server's (see `Lease`): microseconds, as an interval.
        let ttl = lease.ttl.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
        self.transaction(|tx| {
            // A lock per key, held to the commit, taken in one order (no deadlock
            // between two logins sharing both keys). The read is a later statement, so
            // under READ COMMITTED it sees every lease committed before the lock was
            // granted; one statement would read from before it waited.
            tx.query_typed(
                "SELECT pg_advisory_xact_lock(hashtextextended(k, 0))
                 FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
                &[(&locks, Type::TEXT_ARRAY)],
            )?;
            let rows = tx.query_typed(
                "SELECT t.k, a.window_start, a.failures,
                        (SELECT count(*) FROM login_leases l
                         WHERE l.key = t.k AND l.expires_at > statement_timestamp())
                 FROM unnest($1::text[]) AS t(k)
                 LEFT JOIN login_attempts a ON a.key = t.k",
                &[(&locks, Type::TEXT_ARRAY)],
            )?;
            let mut found = std::collections::HashMap::new();
            for row in &rows {
                let key: String = row.try_get(0)?;
                let start: Option<DateTime<Utc>> = row.try_get(1)?;
                let failures: Option<i32> = row.try_get(2)?;
                let leases: i64 = row.try_get(3)?;
                let stored = match (start, failures) {
                    (Some(start), Some(n)) => in_window(start, n, lease.window_secs, now),
                    _ => AttemptCount::default(),
                };
                let in_flight = u32::try_from(leases).unwrap_or(u32::MAX);
                found.insert(key, KeyLoad { stored, in_flight });
            }
            let loads: Vec<KeyLoad> = lease
                .keys
                .iter()
                .map(|k| found.get(k).copied().unwrap_or_default())
                .collect();
            let leased = admit(&loads);
            if leased {
                tx.query_typed(
                    "WITH expired AS (
                         DELETE FROM login_leases
                         WHERE key = ANY($2) AND expires_at <= statement_timestamp()
                     )
                     INSERT INTO login_leases (key, id, expires_at)
                     SELECT k, $1, statement_timestamp() + make_interval(secs => $3)
                     FROM unnest($2::text[]) AS k",
                    &[
                        (&id, Type::UUID),
                        (&locks, Type::TEXT_ARRAY),
                        (&ttl, Type::FLOAT8),
                    ],
                )?;
            }
            Ok(Reservation { loads, leased })
        })
    }

    fn settle_attempt(&self, lease: LeaseId, how: Settle<'_>) -> Result<(), StoreError> {
        let id = lease.0;
        self.write(|c| match how {
            Settle::Failed {
                keys,
                window_secs,
                now,
            } => {
                let (keys, now, window) = (sorted_distinct(keys), sec(now), window_secs as f64);
                c.query_typed(
                    &format!(
                        "WITH released AS (DELETE FROM login_leases WHERE id = $4)
                         {RECORD_FAILURES}"
                    ),
                    &[
                        (&keys, Type::TEXT_ARRAY),
                        (&now, Type::TIMESTAMPTZ),
                        (&window, Type::FLOAT8),
                        (&id, Type::UUID),
                    ],
                )
            }
            Settle::Succeeded { forgive } => c.query_typed(
                "WITH released AS (DELETE FROM login_leases WHERE id = $1)
                 DELETE FROM login_attempts WHERE key = $2",
                &[(&id, Type::UUID), (&forgive, Type::TEXT)],
            ),
            Settle::Abandoned => c.query_typed(
                "DELETE FROM login_leases WHERE id = $1",
                &[(&id, Type::UUID)],
            ),
        })?;
        Ok(())
    }

    fn release_orphaned_leases(&self) -> Result<(), StoreError> {
        // Other replicas may hold live leases: only the expired ones are nobody's, and
        // only the server's clock, which they all share, says which those are.
        self.write(|c| {
            c.query_typed(
                "DELETE FROM login_leases WHERE expires_at <= statement_timestamp()",
                &[],
            )
        })?;
        Ok(())
    }

    fn login_failures(
        &self,
        keys: &[String],
        window_secs: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<AttemptCount>, StoreError> {
        let now = sec(now);
        let rows = self.read(|c| {
            c.query_typed(
                "SELECT key, window_start, failures FROM login_attempts WHERE key = ANY($1)",
                &[(&keys, Type::TEXT_ARRAY)],
            )
        })?;
        let mut found = std::collections::HashMap::new();
        for row in &rows {
            let key: String = col(row, 0)?;
            found.insert(key, in_window(col(row, 1)?, col(row, 2)?, window_secs, now));
        }
        Ok(keys
            .iter()
            .map(|key| found.get(key).copied().unwrap_or_default())
            .collect())
    }

    fn record_audit(&self, e: AuditEvent) -> Result<(), StoreError> {
        let at = sec(e.at);
        let kind = e.kind.as_str();
        let (user, family, actor) = (
            e.user_id.map(UserId::as_uuid),
            e.family_id.map(FamilyId::as_uuid),
            e.actor_id.map(UserId::as_uuid),
        );
        self.write(|c| {
            c.query_typed(
                "INSERT INTO audit_events
                     (at, type, user_id, family_id, actor_id, ip, user_agent, outcome, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    (&at, Type::TIMESTAMPTZ),
                    (&kind, Type::TEXT),
                    (&user, Type::UUID),
                    (&family, Type::UUID),
                    (&actor, Type::UUID),
                    (&e.ip, Type::TEXT),
                    (&e.user_agent, Type::TEXT),
                    (&e.outcome, Type::TEXT),
                    (&e.detail, Type::TEXT),
                ],
            )
        })?;
        Ok(())
    }

    fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        // As in `search_users`: no stored type holds NUL, and the server would refuse it.
        if filter.kind.as_deref().is_some_and(|k| k.contains('\0')) {
            return Ok(Vec::new());
        }
        let user = filter.user_id.map(UserId::as_uuid);
        let limit = i64::from(filter.limit);
        let rows = self.read(|c| {
            c.query_typed(
                "SELECT id, at, type, user_id, family_id, actor_id, ip, user_agent, outcome, detail
                 FROM audit_events
                 WHERE ($1::uuid IS NULL OR user_id = $1) AND ($2::text IS NULL OR type = $2)
                   AND ($4::int8 IS NULL OR id < $4)
                 ORDER BY id DESC LIMIT $3",
                &[
                    (&user, Type::UUID),
                    (&filter.kind, Type::TEXT),
                    (&limit, Type::INT8),
                    (&filter.before, Type::INT8),
                ],
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(AuditRecord {
                    id: col(r, 0)?,
                    at: col(r, 1)?,
                    kind: col(r, 2)?,
                    user_id: col::<Option<Uuid>>(r, 3)?.map(UserId::from),
                    family_id: col::<Option<Uuid>>(r, 4)?.map(FamilyId::from),
                    actor_id: col::<Option<Uuid>>(r, 5)?.map(UserId::from),
                    ip: col(r, 6)?,
                    user_agent: col(r, 7)?,
                    outcome: col(r, 8)?,
                    detail: col(r, 9)?,
                })
            })
            .collect()
    }

    fn count_audit_by_hour(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<AuditCount>, StoreError> {
        // The three-argument date_trunc truncates in UTC whatever the session's TimeZone.
        let rows = self.read(|c| {
            c.query_typed(
                "SELECT date_trunc('hour', at, 'UTC') AS hour, type, COUNT(*)
                 FROM audit_events
                 WHERE at >= $1 AND at < $2
                 GROUP BY 1, 2
                 ORDER BY 1, 2",
                &[(&from, Type::TIMESTAMPTZ), (&to, Type::TIMESTAMPTZ)],
            )
        })?;
        rows.iter()
            .map(|r| {
                Ok(AuditCount {
                    hour: col(r, 0)?,
                    kind: col(r, 1)?,
                    count: col::<i64>(r, 2)?.max(0) as u64,
                })
            })
            .collect()
    }

    fn last_logins(&self, users: &[UserId]) -> Result<Vec<Option<DateTime<Utc>>>, StoreError> {
        let ids: Vec<Uuid> = users.iter().map(|u| u.as_uuid()).collect();
        // One statement; each user's newest family by the (user_id, created_at) index.
        let rows = self.read(|c| {
            c.query_typed(
                "SELECT (SELECT max(f.created_at) FROM refresh_families f WHERE f.user_id = x.u)
                 FROM unnest($1::uuid[]) WITH ORDINALITY AS x(u, n)
                 ORDER BY x.n",
                &[(&ids, Type::UUID_ARRAY)],
            )
        })?;
        rows.iter().map(|r| col(r, 0)).collect()
    }

    fn prune(
        &self,
        now: DateTime<Utc>,
        lockout_window_secs: i64,
        audit_before: DateTime<Utc>,
    ) -> Result<Pruned, StoreError> {
        // Small batches, each its own statement, so pruning a backlog never holds locks
        // long enough to stall a login or refresh.
        const BATCH: i64 = 500;
        let (now, audit_before) = (sec(now), sec(audit_before));
        let stale_before = now - chrono::Duration::seconds(lockout_window_secs);
        let batch = |sql: &str, at: &DateTime<Utc>| -> Result<usize, StoreError> {
            let mut total = 0;
            loop {
                let n = self.write(|c| {
                    c.query_typed_one(sql, &[(at, Type::TIMESTAMPTZ), (&BATCH, Type::INT8)])
                })?;
                let n: i64 = col(&n, 0)?;
                total += usize::try_from(n).unwrap_or(0);
                if n < BATCH {
                    return Ok(total);
                }
            }
        };
        let pruned = Pruned {
            families: batch(
                "WITH gone AS (DELETE FROM refresh_families WHERE id IN
                     (SELECT id FROM refresh_families WHERE expires_at <= $1 LIMIT $2)
                     RETURNING 1)
                 SELECT count(*) FROM gone",
                &now,
            )?,
            login_attempts: batch(
                "WITH gone AS (DELETE FROM login_attempts WHERE key IN
                     (SELECT key FROM login_attempts WHERE window_start <= $1 LIMIT $2)
                     RETURNING 1)
                 SELECT count(*) FROM gone",
                &stale_before,
            )?,
            audit_events: batch(
                "WITH gone AS (DELETE FROM audit_events WHERE id IN
                     (SELECT id FROM audit_events WHERE at < $1 ORDER BY id LIMIT $2)
                     RETURNING 1)
                 SELECT count(*) FROM gone",
                &audit_before,
            )?,
        };
        // Not reported: each lease lives for one check, and a reservation on its key
        // drops it once expired anyway. Expired by the server's clock, like every lease.
        loop {
            let n = self.write(|c| {
                c.query_typed_one(
                    "WITH gone AS (DELETE FROM login_leases WHERE (key, id) IN
                         (SELECT key, id FROM login_leases
                          WHERE expires_at <= statement_timestamp() LIMIT $1)
                         RETURNING 1)
                     SELECT count(*) FROM gone",
                    &[(&BATCH, Type::INT8)],
                )
            })?;
            if col::<i64>(&n, 0)? < BATCH {
                break;
            }
        }
        Ok(pruned)
    }
}

/// One failure on each of `$1`'s keys at `$2`, opening a new window of `$3` seconds where
/// the last one has ended. The keys must be sorted and distinct: one upsert may touch a
/// row once, and concurrent upserts that lock the same keys in the same order cannot
/// deadlock.
const RECORD_FAILURES: &str = "INSERT INTO login_attempts (key, window_start, failures)
     SELECT k, $2, 1 FROM unnest($1::text[]) AS k ORDER BY k
     ON CONFLICT (key) DO UPDATE SET
         failures = CASE
             WHEN login_attempts.window_start + make_interval(secs => $3) <= $2
             THEN 1 ELSE login_attempts.failures + 1 END,
         window_start = CASE
             WHEN login_attempts.window_start + make_interval(secs => $3) <= $2
             THEN $2 ELSE login_attempts.window_start END";

fn sorted_distinct(keys: &[String]) -> Vec<String> {
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    keys
}

/// A key's failures as counted at `now`: none once its window has ended.
fn in_window(
    start: DateTime<Utc>,
    failures: i32,
    window_secs: i64,
    now: DateTime<Utc>,
) -> AttemptCount {
    let (start, now) = (start.timestamp(), now.timestamp());
    if start.saturating_add(window_secs) > now {
        AttemptCount {
            failures: u32::try_from(failures).unwrap_or(0),
            window_left_secs: start.saturating_add(window_secs) - now,
        }
    } else {
        AttemptCount::default()
    }
}

/// Opens `family` and its first token, records the event that opened it and forgives
/// its key's failures: one statement, so one round trip and one transaction. With `lock_user`, only while its user exists, is
/// enabled and is at `generation`: `FOR SHARE` holds the user's row until commit, so a
/// password change, disable or delete either committed first (and the re-checked row no
/// longer matches: nothing is inserted) or waits for this login and then ends its family.
fn insert_family<C: Driver>(
    c: &mut Connection<'_, C>,
    family: &NewFamily,
    generation: i64,
    lock_user: bool,
) -> Result<bool, ::postgres::Error> {
    let (id, user) = (family.id.as_uuid(), family.user_id.as_uuid());
    let now = sec(family.now);
    let (token_expires, family_expires) =
        (sec(family.token_expires_at), sec(family.family_expires_at));
    let first = &family.first_token[..];
    let e = &family.opened_by;
    let (at, kind, actor) = (sec(e.at), e.kind.as_str(), e.actor_id.map(UserId::as_uuid));
    let user_check = if lock_user {
        "SELECT id FROM users WHERE id = $2 AND password_generation = $7 AND NOT disabled
         FOR SHARE"
    } else {
        "SELECT id FROM users WHERE id = $2"
    };
    let rows = c.query_typed(
        &format!(
            "WITH u AS ({user_check}), f AS (
                 INSERT INTO refresh_families
                     (id, user_id, created_at, last_used_at, expires_at, user_agent, ip,
                      password_generation)
                 SELECT $1, u.id, $3, $3, $4, $5, $6, $7 FROM u
                 RETURNING id
             ), opened AS (
                 INSERT INTO audit_events
                     (at, type, user_id, family_id, actor_id, ip, user_agent, outcome, detail)
                 SELECT $10, $11, $2, f.id, $12, $13, $14, $15, $16 FROM f
             ), forgiven AS (
                 -- A NULL key matches nothing: no failures to forgive.
                 DELETE FROM login_attempts WHERE key = $17 AND EXISTS (SELECT 1 FROM f)
             ), released AS (
                 DELETE FROM login_leases WHERE id = $18 AND EXISTS (SELECT 1 FROM f)
             )
             INSERT INTO refresh_tokens (hash, family_id, parent_hash, issued_at, expires_at)
             SELECT $8, f.id, NULL, $3, $9 FROM f
             RETURNING 1"
        ),
        &[
            (&id, Type::UUID),
            (&user, Type::UUID),
            (&now, Type::TIMESTAMPTZ),
            (&family_expires, Type::TIMESTAMPTZ),
            (&family.user_agent, Type::TEXT),
            (&family.ip, Type::TEXT),
            (&generation, Type::INT8),
            (&first, Type::BYTEA),
            (&token_expires, Type::TIMESTAMPTZ),
            (&at, Type::TIMESTAMPTZ),
            (&kind, Type::TEXT),
            (&actor, Type::UUID),
            (&e.ip, Type::TEXT),
            (&e.user_agent, Type::TEXT),
            (&e.outcome, Type::TEXT),
            (&e.detail, Type::TEXT),
            (&family.forgives, Type::TEXT),
            (&family.settles.map(|l| l.0), Type::UUID),
        ],
    )?;
    Ok(rows.len() == 1)
}
