//! Persistence behind one narrow trait that speaks in domain terms.
//!
//! Handlers and services never see SQL. `sqlite` and `postgres` each implement `Store`;
//! [`open`] is the one place that picks between them. Every method is blocking: the
//! service layer calls them on the blocking pool.
//!
//! The two backends mirror each other file by file, so they read side by side: `mod.rs`
//! (connections, errors, the `Store` impl, which only calls a table module) and one
//! file per table: `accounts` (users), `families` (refresh families and tokens),
//! `lockout` (login attempts and leases), `audit`; PostgreSQL adds `keys` (the key ring)
//! and its plumbing (`pool`, `statements`, `migrate`, `url`). SQL both dialects share is
//! written once in `sql` (column lists, the session predicates); each backend has one
//! row → domain mapping per type, and both parse stored values the same way
//! (`stored_role`).
//!
//! A new table or query touches:
//! - the `Store` trait here: the method, with the guarantee it makes in its doc;
//! - a conformance case in `tests/store/cases/` (and its name in the `conformance!` list
//!   of `tests/store/main.rs`), which runs on every backend;
//! - both backends' table files, `sqlite/<table>.rs` and `postgres/<table>.rs`, and a
//!   line in each `Store` impl;
//! - a migration for each backend, `migrations/sqlite/` and `migrations/postgres/`
//!   (listed in `sqlite::migrations` and `postgres/migrate.rs`);
//! - `transfer.rs`, which copies every table for `gatehouse migrate-data`: its
//!   `TABLES`, the column mapping, and `SOURCE_SCHEMA`/`TARGET_SCHEMA`;
//! - for key material, `keystore` (the `SealedKeyStore` trait) and `postgres/keys.rs`.
//!
//! A new backend implements `Store` (and `SealedKeyStore`, if it keeps keys), gets its
//! own migrations, an arm in [`open`] and in `DatabaseSettings`, and a module in
//! `tests/store/main.rs`'s `conformance!` macro; it is done when it passes them all.

pub mod clients;
pub mod keystore;
pub mod mail;
pub mod mfa;
pub mod passkeys;
pub mod postgres;
pub mod serving;
mod sql;
pub mod sqlite;
pub mod transfer;

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::domain::{Amr, AuditKind, Email, FamilyId, RevokeReason, Role, Session, User, UserId};

pub use self::mfa::{MfaStore, NewMfaToken, StoredMfaToken, StoredTotp};
pub use self::passkeys::{
    FlowKind, NewFlow, NewPasskey, PasskeyStore, PasskeyUse, StoredPasskey, TakenFlow,
};

/// SHA-256 of a refresh token; storage never sees a token in plaintext.
pub type TokenHashBytes = [u8; 32];

/// What went wrong underneath a `StoreError`, kept for the log (`StoreError::chain`).
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The three outcomes a caller branches on. `Unavailable` and `Internal` carry a fixed
/// reason and the driver's error as their source, so the log shows the whole chain;
/// neither ever holds SQL text, a token hash or a password (see `DriverError`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The email is already registered (a unique-key violation).
    #[error("email already registered")]
    EmailTaken,
    /// The database cannot answer now (locked, full, read-only, pool exhausted). Retrying
    /// later may succeed; it is never a reason to tell a client its token is invalid.
    #[error("database unavailable: {reason}")]
    Unavailable {
        reason: Cow<'static, str>,
        #[source]
        source: Option<Cause>,
    },
    #[error("database error: {reason}")]
    Internal {
        reason: Cow<'static, str>,
        #[source]
        source: Option<Cause>,
    },
}

impl StoreError {
    pub fn unavailable(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    pub fn unavailable_because(
        reason: impl Into<Cow<'static, str>>,
        source: impl Into<Cause>,
    ) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    pub fn internal(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Internal {
            reason: reason.into(),
            source: None,
        }
    }

    pub fn internal_because(
        reason: impl Into<Cow<'static, str>>,
        source: impl Into<Cause>,
    ) -> Self {
        Self::Internal {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }

    /// This error and each of its causes, outermost first, joined by ": ": for a log
    /// line, or a caller whose own error holds text.
    pub fn chain(&self) -> String {
        crate::domain::error_chain(self)
    }
}

/// A database's error as kept in a `StoreError`'s chain: its code and its message only.
/// What else a driver carries stays out of logs and `Debug`: PostgreSQL's DETAIL quotes
/// the failing row (a password hash, a token hash), SQLite's input errors quote the
/// statement.
#[derive(Debug)]
pub struct DriverError {
    /// SQLSTATE on PostgreSQL, the extended result code on SQLite.
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for DriverError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for DriverError {}

/// A role as stored. An unknown one is a row this code did not write (a hand edit, or a
/// newer gatehouse): an internal error on every backend, never a silent `user`, which
/// could hand a tampered row a role nobody gave it.
pub(crate) fn stored_role(text: &str) -> Result<Role, StoreError> {
    Role::parse(text)
        .ok_or_else(|| StoreError::internal("users.role holds a role gatehouse does not know"))
}

/// A user with the hash its password is checked against.
#[derive(Clone)]
pub struct Account {
    pub user: User,
    pub password_hash: String,
    /// How many times the password has changed. A family opened after a check of the
    /// password carries the generation that was checked, and dies when it falls behind.
    pub password_generation: i64,
}

/// The hash is not secret the way a password is, but it is what an offline guesser
/// needs: it never reaches a log.
impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("user", &self.user)
            .field("password_hash", &"<redacted>")
            .field("password_generation", &self.password_generation)
            .finish()
    }
}

pub struct NewUser<'a> {
    pub id: UserId,
    pub email: &'a Email,
    pub password_hash: &'a str,
    pub role: Role,
    pub now: DateTime<Utc>,
}

impl std::fmt::Debug for NewUser<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("id", &self.id)
            .field("email", &self.email)
            .field("password_hash", &"<redacted>")
            .field("role", &self.role)
            .field("now", &self.now)
            .finish()
    }
}

/// A new login: the family and its first token.
#[derive(Debug)]
pub struct NewFamily {
    pub id: FamilyId,
    pub user_id: UserId,
    pub first_token: TokenHashBytes,
    pub now: DateTime<Utc>,
    pub token_expires_at: DateTime<Utc>,
    pub family_expires_at: DateTime<Utc>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// The user's password generation when the login checked the password (0 for a
    /// signup). The family opens only while it is still the user's.
    pub password_generation: i64,
    /// What opened it (signup, login, password change): recorded in the same
    /// transaction as the family, with the family's and its user's ids, so the audit log never misses a
    /// session nor names one that was never stored.
    pub opened_by: AuditEvent,
    /// A lockout key whose stored failures the opening forgives (a login's own email,
    /// after a right password), in the same transaction.
    pub forgives: Option<String>,
    /// The login's lockout lease, released in the same transaction when the family
    /// opens (left in place when it does not: the login then settles it as failed).
    pub settles: Option<LeaseId>,
    /// How the login was authenticated; every access token of the family carries it.
    pub amr: Amr,
}

/// A presented refresh token as stored, with what the rotation rule needs to judge it:
/// its family, its user and, once spent, its child. Read in one query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub family_id: FamilyId,
    pub user: User,
    pub expires_at: DateTime<Utc>,
    pub spent_at: Option<DateTime<Utc>>,
    pub family_expires_at: DateTime<Utc>,
    pub family_revoked: bool,
    /// The family was opened under an earlier password than the user's.
    pub family_stale: bool,
    /// The child issued when this token was spent.
    pub child: Option<StoredChild>,
    /// How the family's login was authenticated.
    pub amr: Amr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredChild {
    pub hash: TokenHashBytes,
    pub spent: bool,
    pub expires_at: DateTime<Utc>,
}

/// Spending a live token: the claim one caller makes, and the child it stores.
#[derive(Debug, Clone)]
pub struct Spend {
    pub presented: TokenHashBytes,
    pub child: TokenHashBytes,
    pub family_id: FamilyId,
    pub now: DateTime<Utc>,
    pub child_expires_at: DateTime<Utc>,
}

/// Names one password check's reservation (its lease) on its lockout keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LeaseId(pub uuid::Uuid);

impl LeaseId {
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4())
    }
}

/// A reservation asked for: one lease on each of `keys`, live for `ttl`, so a check whose
/// process died stops counting by itself.
///
/// `now` dates failures and their windows. A lease's life is measured by the clock of
/// the database that every process sharing it reads: on PostgreSQL the server's
/// (`statement_timestamp()`), so a replica whose clock is skewed can neither see the
/// live leases of others as expired nor delete them; on SQLite, which one process
/// serves, that process's `now`.
#[derive(Debug, Clone)]
pub struct Lease {
    pub id: LeaseId,
    pub keys: Vec<String>,
    pub window_secs: i64,
    pub now: DateTime<Utc>,
    pub ttl: chrono::Duration,
}

/// One lockout key as a reservation sees it: its stored failures and the checks in
/// flight on it (live leases), from every process sharing the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyLoad {
    pub stored: AttemptCount,
    pub in_flight: u32,
}

/// What a reservation saw, and whether it took the lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// In the lease's `keys` order.
    pub loads: Vec<KeyLoad>,
    pub leased: bool,
}

/// How a password check ended; settled with its lease, in one transaction.
#[derive(Debug, Clone, Copy)]
pub enum Settle<'a> {
    /// A wrong password: one failure on each of `keys`, stored as the lease goes, so no
    /// reservation can see the check neither in flight nor failed.
    Failed {
        keys: &'a [String],
        window_secs: i64,
        now: DateTime<Utc>,
    },
    /// A right one: `forgive`'s failures go with the lease.
    Succeeded { forgive: Option<&'a str> },
    /// No verdict (an error, a cancelled request): nothing counts.
    Abandoned,
}

/// The failed logins counted against one key in its current window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AttemptCount {
    /// 0 when the key has no window or its window has ended.
    pub failures: u32,
    /// Seconds until the window ends (0 when `failures` is 0).
    pub window_left_secs: i64,
}

#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub at: DateTime<Utc>,
    pub kind: AuditKind,
    pub user_id: Option<UserId>,
    pub family_id: Option<FamilyId>,
    pub actor_id: Option<UserId>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: &'static str,
    pub detail: Option<String>,
}

impl AuditEvent {
    /// An event with only its time, kind and outcome; callers fill in the rest.
    pub fn new(at: DateTime<Utc>, kind: AuditKind, outcome: &'static str) -> Self {
        Self {
            at,
            kind,
            user_id: None,
            family_id: None,
            actor_id: None,
            ip: None,
            user_agent: None,
            outcome,
            detail: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub kind: String,
    pub user_id: Option<UserId>,
    pub family_id: Option<FamilyId>,
    pub actor_id: Option<UserId>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user_id: Option<UserId>,
    pub kind: Option<String>,
    pub limit: u32,
    /// Only events older than this event id: the next page after a page ending there.
    /// Ids only grow, so a page never repeats or skips an event written meanwhile.
    pub before: Option<i64>,
}

/// How many audit events of one kind began in one hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditCount {
    /// The start of the hour (UTC, on the hour).
    pub hour: DateTime<Utc>,
    pub kind: String,
    pub count: u64,
}

/// What one pruning pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub families: usize,
    pub login_attempts: usize,
    pub audit_events: usize,
}

/// The lockout counter key of an email.
pub fn email_attempt_key(email: &Email) -> String {
    format!("email:{}", email.as_str())
}

/// The counter of wrong current passwords given through one session (password change,
/// account deletion), kept apart from the login counters.
pub fn password_check_key(session: FamilyId) -> String {
    format!("session:{session}")
}

/// The lockout counter key of a client, given the bucket its address counts under (an
/// IPv6 client's /64, as the rate limiter counts it, so rotating addresses inside one's
/// own network buys no guesses), or "unknown".
pub fn ip_attempt_key(bucket: &str) -> String {
    format!("ip:{bucket}")
}

/// Connection pool usage, for metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct PoolStatus {
    pub connections: u32,
    pub idle: u32,
    /// Heap the storage engine holds inside this process (page caches, schemas,
    /// statements); 0 for an engine that runs elsewhere.
    pub engine_bytes: u64,
}

/// Where the data lives, from `GATEHOUSE_DATABASE` (its scheme picks the backend) and
/// the settings that tune each backend.
#[derive(Clone, Debug)]
pub enum DatabaseSettings {
    Sqlite {
        path: PathBuf,
        synchronous: sqlite::Synchronous,
        /// Pooled reader connections (writes go through one connection).
        readers: u32,
    },
    Postgres {
        url: Box<postgres::PostgresUrl>,
        pool_size: u32,
        /// For a new connection, and for a request waiting for a pooled one.
        connect_timeout: Duration,
        /// How long opening keeps retrying a server that cannot be reached yet.
        start_timeout: Duration,
        /// Prepare statements once per connection (off: unnamed, for poolers that
        /// cannot carry named statements).
        prepared_statements: bool,
    },
}

/// Prints where the data is, never a password.
impl std::fmt::Display for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite { path, .. } => write!(f, "SQLite {}", path.display()),
            Self::Postgres { url, .. } => write!(f, "PostgreSQL {url}"),
        }
    }
}

/// Opens the store `settings` name and brings its schema to the latest version.
///
/// Callable from async code too (the server builds its state inside actix's runtime):
/// the work runs on a thread of its own, because the synchronous PostgreSQL client
/// drives a runtime of its own, which cannot start on a thread already driving one.
pub fn open(settings: &DatabaseSettings) -> anyhow::Result<Arc<dyn Store>> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("storage-open".into())
            .spawn_scoped(scope, || open_here(settings))?
            .join()
            .map_err(|_| anyhow::anyhow!("opening {settings} panicked"))?
    })
}

fn open_here(settings: &DatabaseSettings) -> anyhow::Result<Arc<dyn Store>> {
    use anyhow::Context as _;
    let store: Arc<dyn Store> = match settings {
        DatabaseSettings::Sqlite {
            path,
            synchronous,
            readers,
        } => Arc::new(sqlite::SqliteStore::open(path, *synchronous, *readers)?),
        DatabaseSettings::Postgres {
            url,
            pool_size,
            connect_timeout,
            start_timeout,
            prepared_statements,
        } => Arc::new(
            postgres::PgStore::connect(url, *pool_size, *connect_timeout, *start_timeout)?
                .prepared_statements(*prepared_statements),
        ),
    };
    store
        .migrate()
        .with_context(|| format!("cannot migrate {settings}"))?;
    Ok(store)
}

/// Why `Store::backup_to` made no copy.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// The engine has no online copy of its own; the message says what to use instead.
    #[error("{0}")]
    Unsupported(&'static str),
    #[error(transparent)]
    Failed(#[from] anyhow::Error),
}

pub use clients::ClientStore;

pub trait Store:
    ClientStore + MfaStore + PasskeyStore + mail::MailStore + Send + Sync + 'static
{
    /// Answers when the database can serve a query.
    fn ping(&self) -> Result<(), StoreError>;

    fn pool_status(&self) -> PoolStatus;

    /// Applies the pending migrations (none is a no-op); returns the schema version.
    fn migrate(&self) -> Result<String, StoreError>;
    /// The schema version the database is at.
    fn schema_version(&self) -> Result<String, StoreError>;
    /// A consistent copy of the live database in the file `to`, which must not exist,
    /// while the server keeps serving; `Unsupported` for an engine that is backed up
    /// with its own tools.
    fn backup_to(&self, to: &Path) -> Result<(), BackupError>;

    // Users.
    fn create_user(&self, new: NewUser<'_>) -> Result<User, StoreError>;
    fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError>;
    fn account_by_id(&self, id: UserId) -> Result<Option<Account>, StoreError>;
    /// The caller behind an access token: the account, when family `session` is the
    /// user's, not revoked, before its absolute expiry, and opened under the user's
    /// current password. One indexed read; `None` otherwise.
    fn account_for_session(
        &self,
        user_id: UserId,
        session: FamilyId,
        now: DateTime<Utc>,
    ) -> Result<Option<Account>, StoreError>;
    /// Users whose email equals `query` or starts with it; `None` lists all, newest first.
    fn search_users(&self, query: Option<&str>, limit: u32) -> Result<Vec<User>, StoreError>;
    /// Sets role and/or disabled; disabling revokes every live family in the same
    /// transaction. `None` when the user does not exist. A family being opened at the
    /// same time (`create_family`, `change_password`) either sees the user disabled and
    /// is not opened, or commits first and is revoked here: none stays live.
    fn update_user(
        &self,
        id: UserId,
        role: Option<Role>,
        disabled: Option<bool>,
        now: DateTime<Utc>,
    ) -> Result<Option<User>, StoreError>;
    /// Replaces the password hash, moves the user to the next password generation,
    /// revokes every family (reason `password_change`) and opens `family` under the new
    /// generation, in one transaction. Nothing changes, and the answer is `false`, when
    /// the user is gone or their generation is no longer `family.password_generation`
    /// (another change won the race since the current password was checked).
    fn change_password(
        &self,
        user_id: UserId,
        password_hash: &str,
        family: NewFamily,
    ) -> Result<bool, StoreError>;
    /// Deletes the user, their families and tokens, and the lockout counter of `email`,
    /// and scrubs what could identify them from their audit events, including the event
    /// of a login that committed while this call waited for it. Leaves a tombstone
    /// (`family_tombstones`, listed from `now` or from its revocation) for each family
    /// whose access tokens may still be live, for the revocation feed.
    fn delete_user(
        &self,
        id: UserId,
        email: &Email,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    // Refresh-token families.
    /// Opens a family, in one transaction with the check that its user still exists, is
    /// enabled and is at `family.password_generation`. `false` (nothing stored) when not:
    /// the password changed, or the account was disabled or deleted, while the login
    /// that verified it waited for Argon2.
    fn create_family(&self, family: NewFamily) -> Result<bool, StoreError>;
    /// The stored state of a presented token (see `StoredToken`); `None` when unknown.
    fn find_refresh_token(&self, hash: TokenHashBytes) -> Result<Option<StoredToken>, StoreError>;
    /// Claims a token: marks `spend.presented` spent and stores its child, in one
    /// transaction, only while the token is unspent and its family unrevoked. `true`
    /// exactly when this call changed the token's row, so of any number of concurrent
    /// claims on one token, on any backend and isolation level, at most one is `true`
    /// (a conditional `UPDATE … WHERE spent_at IS NULL` whose row count is checked).
    /// `false`: someone else spent it or revoked the family first; nothing was written.
    fn spend_refresh_token(&self, spend: Spend) -> Result<bool, StoreError>;
    /// Revokes the family a token (spent or not) belongs to; the family's owner, if found.
    fn revoke_family_of_token(
        &self,
        token: TokenHashBytes,
        reason: RevokeReason,
        now: DateTime<Utc>,
    ) -> Result<Option<(UserId, FamilyId)>, StoreError>;
    /// Revokes one family, if it exists (and belongs to `owner` when given). Revoking a
    /// revoked family keeps its first revocation. Returns the family's owner when it was
    /// found, so the revocation can be audited against that user.
    fn revoke_family(
        &self,
        family_id: FamilyId,
        owner: Option<UserId>,
        reason: RevokeReason,
        now: DateTime<Utc>,
    ) -> Result<Option<UserId>, StoreError>;
    /// Revokes every live family of a user; `false` when the user does not exist.
    fn revoke_user_families(
        &self,
        user_id: UserId,
        reason: RevokeReason,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// A user's families: all of them, or only live ones, newest first.
    fn list_sessions(
        &self,
        user_id: UserId,
        include_ended: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<Session>, StoreError>;

    // Login lockout: failures per key and window, and leases for the checks in flight.
    /// Under a lock on each of `lease.keys` (so two reservations on one key never both
    /// see room for one more check), reads each key's failures and live leases and,
    /// when `admit` accepts those loads, stores the lease on every key.
    fn reserve_attempt(
        &self,
        lease: &Lease,
        admit: &(dyn Fn(&[KeyLoad]) -> bool + Sync),
    ) -> Result<Reservation, StoreError>;
    /// Ends a lease as `how` says (see `Settle`).
    fn settle_attempt(&self, lease: LeaseId, how: Settle<'_>) -> Result<(), StoreError>;
    /// At start: drops the leases no running process can hold. On a store that one
    /// process serves (SQLite) that is all of them, so the checks a crash cut short
    /// stop counting at once; on a shared one, those expired by the database's clock.
    fn release_orphaned_leases(&self) -> Result<(), StoreError>;
    /// The failures counted against each key in its current window, in `keys`' order.
    fn login_failures(
        &self,
        keys: &[String],
        window_secs: i64,
        now: DateTime<Utc>,
    ) -> Result<Vec<AttemptCount>, StoreError>;

    // Audit log.
    fn record_audit(&self, event: AuditEvent) -> Result<(), StoreError>;
    fn list_audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;
    /// Audit events with `from <= at < to`, counted per UTC hour and kind (a `GROUP BY`),
    /// ordered by hour then kind; hours without events are absent.
    fn count_audit_by_hour(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<AuditCount>, StoreError>;

    /// For each of `users`, in that order, when their newest family still stored was
    /// opened (a login, a signup or a password change); `None` when none is stored.
    fn last_logins(&self, users: &[UserId]) -> Result<Vec<Option<DateTime<Utc>>>, StoreError>;

    /// Deletes what no rule needs any more: families past their absolute expiry (with
    /// their token hashes), stale lockout windows, audit events older than
    /// `audit_before`.
    fn prune(
        &self,
        now: DateTime<Utc>,
        lockout_window_secs: i64,
        audit_before: DateTime<Utc>,
    ) -> Result<Pruned, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The cause survives to the log line: the reason, then each source in turn.
    #[test]
    fn a_store_error_keeps_its_cause_chain() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = StoreError::unavailable_because("PostgreSQL cannot be reached", io);
        assert_eq!(
            e.chain(),
            "database unavailable: PostgreSQL cannot be reached: refused"
        );
        assert!(std::error::Error::source(&e).is_some());
        let bare = StoreError::internal("no cause");
        assert_eq!(bare.chain(), "database error: no cause");
    }

    #[test]
    fn debug_output_never_carries_a_password_hash() {
        const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA";
        let email = Email::parse("debug@example.com").expect("email");
        let user = User {
            id: UserId::random(),
            email: email.clone(),
            role: Role::User,
            disabled: false,
            email_verified: false,
            created_at: Utc::now(),
            mfa_enabled: false,
        };
        let account = Account {
            user,
            password_hash: HASH.into(),
            password_generation: 3,
        };
        let new = NewUser {
            id: UserId::random(),
            email: &email,
            password_hash: HASH,
            role: Role::User,
            now: Utc::now(),
        };
        for printed in [format!("{account:?}"), format!("{new:?}")] {
            assert!(!printed.contains("argon2id"), "{printed}");
            assert!(printed.contains("<redacted>"), "{printed}");
        }
    }
}
