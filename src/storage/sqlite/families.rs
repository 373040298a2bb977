use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::accounts::user_at;
use super::{time, ts, uuid_col};
use crate::domain::{Amr, FamilyId, RevokeReason, Session, UserId};
use crate::storage::sql::{USER_COLUMNS, USER_WIDTH, revoke_user_families, sessions_of_user};

/// Where `find`'s columns after the user's start: the token's five, then the user's.
const STALE: usize = 5 + USER_WIDTH;
use crate::storage::{NewFamily, Spend, StoredChild, StoredToken, TokenHashBytes};

pub(super) fn insert(conn: &Connection, f: &NewFamily) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO refresh_families
             (id, user_id, created_at, last_used_at, expires_at, user_agent, ip,
              password_generation, amr)
         VALUES (?1, ?2, ?3, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        f.id.to_string(),
        f.user_id.to_string(),
        ts(f.now),
        ts(f.family_expires_at),
        f.user_agent,
        f.ip,
        f.password_generation,
        f.amr.as_str()
    ])?;
    conn.prepare_cached(
        "INSERT INTO refresh_tokens (hash, family_id, parent_hash, issued_at, expires_at)
         VALUES (?1, ?2, NULL, ?3, ?4)",
    )?
    .execute(params![
        &f.first_token[..],
        f.id.to_string(),
        ts(f.now),
        ts(f.token_expires_at)
    ])?;
    Ok(())
}

/// The presented token, its family and user, and its child if it has one, in one read.
pub(super) fn find(
    conn: &Connection,
    hash: &TokenHashBytes,
) -> rusqlite::Result<Option<StoredToken>> {
    conn.prepare_cached(&format!(
        "SELECT t.family_id, t.expires_at, t.spent_at, f.expires_at, f.revoked_at,
                {USER_COLUMNS},
                f.password_generation <> u.password_generation,
                c.hash, c.spent_at, c.expires_at, f.amr
         FROM refresh_tokens t
         JOIN refresh_families f ON f.id = t.family_id
         JOIN users u ON u.id = f.user_id
         LEFT JOIN refresh_tokens c ON c.parent_hash = t.hash
         WHERE t.hash = ?1"
    ))?
    .query_row([&hash[..]], |row| {
        let child_hash: Option<Vec<u8>> = row.get(STALE + 1)?;
        let child = match child_hash {
            Some(bytes) => Some(StoredChild {
                hash: bytes.try_into().map_err(|_| {
                    rusqlite::Error::FromSqlConversionFailure(
                        STALE + 1,
                        rusqlite::types::Type::Blob,
                        "a token hash is 32 bytes".into(),
                    )
                })?,
                spent: row.get::<_, Option<i64>>(STALE + 2)?.is_some(),
                expires_at: time(row.get(STALE + 3)?),
            }),
            None => None,
        };
        Ok(StoredToken {
            family_id: uuid_col(row, 0)?,
            expires_at: time(row.get(1)?),
            spent_at: row.get::<_, Option<i64>>(2)?.map(time),
            family_expires_at: time(row.get(3)?),
            family_revoked: row.get::<_, Option<i64>>(4)?.is_some(),
            family_stale: row.get(STALE)?,
            user: user_at(row, 5)?,
            child,
            amr: stored_amr(row, STALE + 4)?,
        })
    })
    .optional()
}

/// The claim: one conditional UPDATE decides who spent the token; only its winner
/// writes the child. The unique index on `parent_hash` makes a second child impossible
/// even for a bug.
pub(super) fn spend(conn: &Connection, s: &Spend) -> rusqlite::Result<bool> {
    let now = ts(s.now);
    let claimed = conn
        .prepare_cached(
            "UPDATE refresh_tokens SET spent_at = ?2
             WHERE hash = ?1 AND spent_at IS NULL AND family_id IN
                   (SELECT id FROM refresh_families WHERE id = ?3 AND revoked_at IS NULL)",
        )?
        .execute(params![&s.presented[..], now, s.family_id.to_string()])?;
    if claimed != 1 {
        return Ok(false);
    }
    conn.prepare_cached(
        "INSERT INTO refresh_tokens (hash, family_id, parent_hash, issued_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        &s.child[..],
        s.family_id.to_string(),
        &s.presented[..],
        now,
        ts(s.child_expires_at)
    ])?;
    conn.prepare_cached("UPDATE refresh_families SET last_used_at = ?2 WHERE id = ?1")?
        .execute(params![s.family_id.to_string(), now])?;
    Ok(true)
}

fn revoke_family(
    conn: &Connection,
    family_id: FamilyId,
    reason: RevokeReason,
    now: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "UPDATE refresh_families SET revoked_at = ?2, revoked_reason = ?3
         WHERE id = ?1 AND revoked_at IS NULL",
    )?
    .execute(params![family_id.to_string(), ts(now), reason.as_str()])
}

pub(super) fn revoke_by_token(
    conn: &Connection,
    token: &TokenHashBytes,
    reason: RevokeReason,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<(UserId, FamilyId)>> {
    let found: Option<(UserId, FamilyId)> = conn
        .prepare_cached(
            "SELECT f.user_id, f.id FROM refresh_tokens t
             JOIN refresh_families f ON f.id = t.family_id WHERE t.hash = ?1",
        )?
        .query_row([&token[..]], |row| {
            Ok((uuid_col(row, 0)?, uuid_col(row, 1)?))
        })
        .optional()?;
    if let Some((_, family_id)) = found {
        revoke_family(conn, family_id, reason, now)?;
    }
    Ok(found)
}

pub(super) fn revoke_one(
    conn: &Connection,
    family_id: FamilyId,
    owner: Option<UserId>,
    reason: RevokeReason,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<UserId>> {
    let found: Option<UserId> = conn
        .prepare_cached("SELECT user_id FROM refresh_families WHERE id = ?1")?
        .query_row([family_id.to_string()], |row| uuid_col(row, 0))
        .optional()?;
    match found {
        Some(user) if owner.is_none_or(|o| o == user) => {
            revoke_family(conn, family_id, reason, now)?;
            Ok(Some(user))
        }
        _ => Ok(None),
    }
}

pub(super) fn revoke_all(
    conn: &Connection,
    user_id: UserId,
    reason: RevokeReason,
    now: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    conn.prepare_cached(&revoke_user_families("?1", "?2", "?3"))?
        .execute(params![user_id.to_string(), ts(now), reason.as_str()])
}

pub(super) fn last_opened(
    conn: &Connection,
    users: &[UserId],
) -> rusqlite::Result<Vec<Option<DateTime<Utc>>>> {
    // One index lookup per user on (user_id, created_at).
    let mut stmt =
        conn.prepare_cached("SELECT MAX(created_at) FROM refresh_families WHERE user_id = ?1")?;
    users
        .iter()
        .map(|u| {
            stmt.query_row(params![u.to_string()], |r| r.get::<_, Option<i64>>(0))
                .map(|t| t.map(time))
        })
        .collect()
}

pub(super) fn list(
    conn: &Connection,
    user_id: UserId,
    include_ended: bool,
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<Session>> {
    // Within one second, newest first by the rowid SQLite gives each new row (one above
    // the largest): the order the families were opened in.
    let mut stmt = conn.prepare_cached(&sessions_of_user("?1", "?2", "?3", "f.rowid"))?;
    stmt.query_map(
        params![user_id.to_string(), include_ended, ts(now)],
        |row| {
            let reason: Option<String> = row.get(5)?;
            Ok(Session {
                id: uuid_col(row, 0)?,
                created_at: time(row.get(1)?),
                last_used_at: time(row.get(2)?),
                expires_at: time(row.get(3)?),
                revoked_at: row.get::<_, Option<i64>>(4)?.map(time),
                revoked_reason: reason.as_deref().and_then(RevokeReason::parse),
                user_agent: row.get(6)?,
                ip: row.get(7)?,
                amr: stored_amr(row, 8)?,
            })
        },
    )?
    .collect()
}

/// Deletes up to `batch` families past their absolute expiry, with their token hashes:
/// past that point no token of theirs can be valid, so replay detection no longer needs
/// them.
pub(super) fn delete_expired(
    conn: &Connection,
    now: DateTime<Utc>,
    batch: usize,
) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM refresh_families WHERE id IN
             (SELECT id FROM refresh_families WHERE expires_at <= ?1 LIMIT ?2)",
        params![ts(now), batch as i64],
    )
}

/// A family's `amr` as stored; one this code did not write is an error, never a
/// weaker or stronger claim than the login made.
fn stored_amr(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Amr> {
    let text: String = row.get(at)?;
    Amr::parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            at,
            rusqlite::types::Type::Text,
            "refresh_families.amr holds a value gatehouse does not know".into(),
        )
    })
}
