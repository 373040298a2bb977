use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{time, ts, uuid_col};
use crate::domain::{Email, FamilyId, Role, User, UserId};
use crate::storage::sql::{ACCOUNT_COLUMNS, USER_WIDTH, session_current};
use crate::storage::{Account, NewUser, stored_role};

/// The user in a row's columns `at..`, in `sql::USER_COLUMNS` order: the one mapping of
/// a `users` row, wherever it is read.
pub(super) fn user_at(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<User> {
    let role: String = row.get(at + 2)?;
    Ok(User {
        id: uuid_col(row, at)?,
        email: Email::from_trusted(row.get(at + 1)?),
        role: stored_role(&role).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(
                at + 2,
                rusqlite::types::Type::Text,
                Box::new(e),
            )
        })?,
        disabled: row.get(at + 3)?,
        created_at: time(row.get(at + 4)?),
        email_verified: row.get(at + 5)?,
        mfa_enabled: row.get(at + 6)?,
    })
}

/// A row in `sql::ACCOUNT_COLUMNS` order.
fn account(row: &rusqlite::Row<'_>) -> rusqlite::Result<Account> {
    Ok(Account {
        user: user_at(row, 0)?,
        password_hash: row.get(USER_WIDTH)?,
        password_generation: row.get(USER_WIDTH + 1)?,
    })
}

/// `None` when the email is taken: `email` is the only UNIQUE column of `users`.
pub(super) fn insert(conn: &Connection, new: &NewUser<'_>) -> rusqlite::Result<Option<User>> {
    let inserted = conn.execute(
        "INSERT INTO users (id, email, password_hash, role, disabled, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 0, ?5, ?5)",
        params![
            new.id.to_string(),
            new.email.as_str(),
            new.password_hash,
            new.role.as_str(),
            ts(new.now)
        ],
    );
    match inserted {
        Err(e) if super::is_unique_violation(&e) => return Ok(None),
        other => other?,
    };
    Ok(Some(User {
        id: new.id,
        email: new.email.clone(),
        role: new.role,
        disabled: false,
        email_verified: false,
        created_at: super::time(ts(new.now)),
        mfa_enabled: false,
    }))
}

pub(super) fn by_email(conn: &Connection, email: &Email) -> rusqlite::Result<Option<Account>> {
    conn.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM users u WHERE u.email = ?1"
    ))?
    .query_row([email.as_str()], account)
    .optional()
}

pub(super) fn by_id(conn: &Connection, id: UserId) -> rusqlite::Result<Option<Account>> {
    conn.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM users u WHERE u.id = ?1"
    ))?
    .query_row([id.to_string()], account)
    .optional()
}

/// One read by two primary keys: the family decides, the user rides along.
pub(super) fn by_session(
    conn: &Connection,
    id: UserId,
    session: FamilyId,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<Account>> {
    conn.prepare_cached(&format!(
        "SELECT {ACCOUNT_COLUMNS}
         FROM refresh_families f JOIN users u ON u.id = f.user_id
         WHERE f.id = ?1 AND f.user_id = ?2 AND {}",
        session_current("?3")
    ))?
    .query_row(
        params![session.to_string(), id.to_string(), ts(now)],
        account,
    )
    .optional()
}

/// Whether a login checked against `generation` may still open a family.
pub(super) fn may_open_family(
    conn: &Connection,
    id: UserId,
    generation: i64,
) -> rusqlite::Result<bool> {
    let found: Option<(i64, bool)> = conn
        .prepare_cached("SELECT password_generation, disabled FROM users WHERE id = ?1")?
        .query_row([id.to_string()], |row| Ok((row.get(0)?, row.get(1)?)))
        .optional()?;
    Ok(found.is_some_and(|(current, disabled)| current == generation && !disabled))
}

pub(super) fn search(
    conn: &Connection,
    query: Option<&str>,
    limit: u32,
) -> rusqlite::Result<Vec<User>> {
    let rows = match query {
        // A prefix match as a range on the unique index: every string that starts with
        // `q` sorts in [q, q + U+10FFFF). No LIKE, so `%` and `_` are plain characters.
        Some(q) => {
            let upper = format!("{q}\u{10FFFF}");
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM users u
                 WHERE u.email >= ?1 AND u.email < ?2 AND substr(u.email, 1, length(?1)) = ?1
                 ORDER BY u.email LIMIT ?3"
            ))?;
            stmt.query_map(params![q, upper, limit], account)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        }
        None => {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ACCOUNT_COLUMNS} FROM users u ORDER BY u.created_at DESC, u.email LIMIT ?1"
            ))?;
            stmt.query_map(params![limit], account)?
                .collect::<rusqlite::Result<Vec<_>>>()?
        }
    };
    Ok(rows.into_iter().map(|a| a.user).collect())
}

pub(super) fn update(
    conn: &Connection,
    id: UserId,
    role: Option<Role>,
    disabled: Option<bool>,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<User>> {
    let changed = conn.execute(
        "UPDATE users SET role = COALESCE(?2, role), disabled = COALESCE(?3, disabled),
                updated_at = ?4
         WHERE id = ?1",
        params![id.to_string(), role.map(Role::as_str), disabled, ts(now)],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    Ok(by_id(conn, id)?.map(|a| a.user))
}

/// Replaces the hash and moves to the next generation, only from `generation`:
/// `false` when the user is gone or another change came first.
pub(super) fn set_password(
    conn: &Connection,
    id: UserId,
    password_hash: &str,
    generation: i64,
    now: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    let changed = conn.execute(
        "UPDATE users SET password_hash = ?2, updated_at = ?3,
                password_generation = password_generation + 1
         WHERE id = ?1 AND password_generation = ?4",
        params![id.to_string(), password_hash, ts(now), generation],
    )?;
    Ok(changed == 1)
}

pub(super) fn delete(conn: &Connection, id: UserId) -> rusqlite::Result<bool> {
    // Families and token hashes go with the user (ON DELETE CASCADE). Audit events keep
    // the bare user id and lose what could identify the person.
    conn.execute(
        "UPDATE audit_events SET ip = NULL, user_agent = NULL, detail = NULL WHERE user_id = ?1",
        [id.to_string()],
    )?;
    Ok(conn.execute("DELETE FROM users WHERE id = ?1", [id.to_string()])? > 0)
}
