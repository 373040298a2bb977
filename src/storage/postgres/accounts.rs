//! `users`: accounts, their roles and password generations. The mirror of
//! `sqlite/accounts.rs`.

use ::postgres::Row;
use ::postgres::types::Type;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::statements::{Conn, Connection, Driver};
use super::{Failure, col, sec};
use crate::domain::{Email, FamilyId, Role, User, UserId};
use crate::storage::sql::{ACCOUNT_COLUMNS, USER_WIDTH, session_current};
use crate::storage::{Account, NewUser, StoreError, stored_role};

/// The user in a row's columns `at..`, in `sql::USER_COLUMNS` order: the one mapping of
/// a `users` row, wherever it is read.
pub(super) fn user_at(row: &Row, at: usize) -> Result<User, StoreError> {
    Ok(User {
        id: UserId::from(col::<Uuid>(row, at)?),
        email: Email::from_trusted(col(row, at + 1)?),
        role: stored_role(col(row, at + 2)?)?,
        disabled: col(row, at + 3)?,
        created_at: col(row, at + 4)?,
        email_verified: col(row, at + 5)?,
        mfa_enabled: col(row, at + 6)?,
    })
}

/// A row in `sql::ACCOUNT_COLUMNS` order.
fn account(row: &Row) -> Result<Account, StoreError> {
    Ok(Account {
        user: user_at(row, 0)?,
        password_hash: col(row, USER_WIDTH)?,
        password_generation: col(row, USER_WIDTH + 1)?,
    })
}

fn one(row: Option<Row>) -> Result<Option<Account>, Failure> {
    Ok(row.as_ref().map(account).transpose()?)
}

/// A taken email is the unique constraint's violation (`Class::EmailTaken`).
pub(super) fn insert(c: &mut Conn<'_>, new: &NewUser<'_>) -> Result<User, Failure> {
    insert_in(c, new)
}

/// `insert` in any session, a transaction too.
pub(super) fn insert_in<C: Driver>(
    c: &mut Connection<'_, C>,
    new: &NewUser<'_>,
) -> Result<User, Failure> {
    let (id, now) = (new.id.as_uuid(), sec(new.now));
    let (email, role) = (new.email.as_str(), new.role.as_str());
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
    )?;
    Ok(User {
        id: new.id,
        email: new.email.clone(),
        role: new.role,
        disabled: false,
        email_verified: false,
        created_at: now,
        mfa_enabled: false,
    })
}

pub(super) fn by_email(c: &mut Conn<'_>, email: &Email) -> Result<Option<Account>, Failure> {
    let email = email.as_str();
    one(c.query_typed_opt(
        &format!("SELECT {ACCOUNT_COLUMNS} FROM users u WHERE u.email = $1"),
        &[(&email, Type::TEXT)],
    )?)
}

pub(super) fn by_id(c: &mut Conn<'_>, id: UserId) -> Result<Option<Account>, Failure> {
    by_id_in(c, id)
}

/// `by_id` in any session, a transaction too.
pub(super) fn by_id_in<C: Driver>(
    c: &mut Connection<'_, C>,
    id: UserId,
) -> Result<Option<Account>, Failure> {
    let id = id.as_uuid();
    one(c.query_typed_opt(
        &format!("SELECT {ACCOUNT_COLUMNS} FROM users u WHERE u.id = $1"),
        &[(&id, Type::UUID)],
    )?)
}

/// One read by two primary keys: the family decides, the user rides along.
pub(super) fn by_session(
    c: &mut Conn<'_>,
    id: UserId,
    session: FamilyId,
    now: DateTime<Utc>,
) -> Result<Option<Account>, Failure> {
    let (id, session, now) = (id.as_uuid(), session.as_uuid(), sec(now));
    one(c.query_typed_opt(
        &format!(
            "SELECT {ACCOUNT_COLUMNS}
             FROM refresh_families f JOIN users u ON u.id = f.user_id
             WHERE f.id = $1 AND f.user_id = $2 AND {}",
            session_current("$3")
        ),
        &[
            (&session, Type::UUID),
            (&id, Type::UUID),
            (&now, Type::TIMESTAMPTZ),
        ],
    )?)
}

pub(super) fn search(
    c: &mut Conn<'_>,
    query: Option<&str>,
    limit: u32,
) -> Result<Vec<User>, Failure> {
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
            c.query_typed(
                &format!(
                    "SELECT {ACCOUNT_COLUMNS} FROM users u
                     WHERE u.email >= $1 AND u.email < $2
                           AND left(u.email, length($1)) = $1
                     ORDER BY u.email LIMIT $3"
                ),
                &[(&q, Type::TEXT), (&upper, Type::TEXT), (&limit, Type::INT8)],
            )?
        }
        None => c.query_typed(
            &format!(
                "SELECT {ACCOUNT_COLUMNS} FROM users u
                 ORDER BY u.created_at DESC, u.email LIMIT $1"
            ),
            &[(&limit, Type::INT8)],
        )?,
    };
    Ok(rows
        .iter()
        .map(|r| account(r).map(|a| a.user))
        .collect::<Result<_, _>>()?)
}

/// Sets role and/or disabled; `None` when the user does not exist.
pub(super) fn update<C: Driver>(
    c: &mut Connection<'_, C>,
    id: UserId,
    role: Option<Role>,
    disabled: Option<bool>,
    now: DateTime<Utc>,
) -> Result<Option<User>, Failure> {
    let (id, now, role) = (id.as_uuid(), sec(now), role.map(Role::as_str));
    let row = c.query_typed_opt(
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
    Ok(one(row)?.map(|a| a.user))
}

/// Replaces the hash and moves to the next generation, only from `generation`:
/// `false` when the user is gone or another change came first.
pub(super) fn set_password<C: Driver>(
    c: &mut Connection<'_, C>,
    id: UserId,
    password_hash: &str,
    generation: i64,
    now: DateTime<Utc>,
) -> Result<bool, Failure> {
    let (id, now) = (id.as_uuid(), sec(now));
    let changed = c.query_typed(
        "UPDATE users SET password_hash = $2, updated_at = $3,
                password_generation = password_generation + 1
         WHERE id = $1 AND password_generation = $4
         RETURNING id",
        &[
            (&id, Type::UUID),
            (&password_hash, Type::TEXT),
            (&now, Type::TIMESTAMPTZ),
            (&generation, Type::INT8),
        ],
    )?;
    Ok(changed.len() == 1)
}

/// Deletes the user, then scrubs their audit events and forgets `lockout_key`.
///
/// Families and token hashes go with the user (ON DELETE CASCADE). Audit events keep
/// the bare user id and lose what could identify the person. The DELETE comes first: it
/// waits for a login holding the row `FOR SHARE`, and the scrub, a later statement, then
/// sees the event that login committed.
pub(super) fn delete<C: Driver>(
    c: &mut Connection<'_, C>,
    id: UserId,
    lockout_key: &str,
) -> Result<bool, Failure> {
    let id = id.as_uuid();
    let deleted = c.query_typed(
        "DELETE FROM users WHERE id = $1 RETURNING 1",
        &[(&id, Type::UUID)],
    )?;
    if deleted.is_empty() {
        return Ok(false);
    }
    c.query_typed(
        "WITH lockout AS (DELETE FROM login_attempts WHERE key = $2)
         UPDATE audit_events SET ip = NULL, user_agent = NULL, detail = NULL
         WHERE user_id = $1",
        &[(&id, Type::UUID), (&lockout_key, Type::TEXT)],
    )?;
    Ok(true)
}
