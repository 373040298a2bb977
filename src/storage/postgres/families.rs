//! `refresh_families` and `refresh_tokens`: logins, their token chains, and the claim
//! that spends a token. The mirror of `sqlite/families.rs`.

use ::postgres::types::Type;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::accounts::user_at;
use super::statements::{Conn, Connection, Driver};
use super::{Failure, col, hash_col, sec};
use crate::domain::{Amr, FamilyId, RevokeReason, Session, UserId};
use crate::storage::sql::{USER_COLUMNS, USER_WIDTH, revoke_user_families, sessions_of_user};

/// Where `find`'s columns after the user's start: the token's five, then the user's.
const STALE: usize = 5 + USER_WIDTH;
use crate::storage::{NewFamily, Spend, StoredChild, StoredToken, TokenHashBytes};

/// How opening a family makes sure its user may still have one.
#[derive(Clone, Copy)]
pub(super) enum UserCheck {
    /// Check the user's row and hold it `FOR SHARE` until commit (see `open`).
    Lock,
    /// The caller's transaction holds the user's row already (a password change): only
    /// that it exists.
    HeldByCaller,
}

/// Opens `family` and its first token, records the event that opened it, forgives its
/// key's failures and releases its lease: one statement, so one round trip and one
/// transaction. With `UserCheck::Lock`, only while its user exists, is enabled and is at
/// `generation`: `FOR SHARE` holds the user's row until commit, so a password change,
/// disable or delete either committed first (and the re-checked row no longer matches:
/// nothing is inserted) or waits for this login and then ends its family.
pub(super) fn open<C: Driver>(
    c: &mut Connection<'_, C>,
    family: &NewFamily,
    generation: i64,
    check: UserCheck,
) -> Result<bool, Failure> {
    let (id, user) = (family.id.as_uuid(), family.user_id.as_uuid());
    let now = sec(family.now);
    let (token_expires, family_expires) =
        (sec(family.token_expires_at), sec(family.family_expires_at));
    let first = &family.first_token[..];
    let e = &family.opened_by;
    let (at, kind, actor) = (sec(e.at), e.kind.as_str(), e.actor_id.map(UserId::as_uuid));
    let user_check = match check {
        UserCheck::Lock => {
            "SELECT id FROM users WHERE id = $2 AND password_generation = $7 AND NOT disabled
             FOR SHARE"
        }
        UserCheck::HeldByCaller => "SELECT id FROM users WHERE id = $2",
    };
    let rows = c.query_typed(
        &format!(
            "WITH u AS ({user_check}), f AS (
                 INSERT INTO refresh_families
                     (id, user_id, created_at, last_used_at, expires_at, user_agent, ip,
                      password_generation, amr)
                 SELECT $1, u.id, $3, $3, $4, $5, $6, $7, $19 FROM u
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
            (&family.amr.as_str(), Type::TEXT),
        ],
    )?;
    Ok(rows.len() == 1)
}

/// The presented token, its family and user, and its child if it has one, in one read.
pub(super) fn find<C: Driver>(
    c: &mut Connection<'_, C>,
    hash: &TokenHashBytes,
) -> Result<Option<StoredToken>, Failure> {
    let hash = &hash[..];
    let row = c.query_typed_opt(
        &format!(
            "SELECT t.family_id, t.expires_at, t.spent_at, f.expires_at,
                    f.revoked_at IS NOT NULL,
                    {USER_COLUMNS},
                    f.password_generation <> u.password_generation,
                    c.hash, c.spent_at IS NOT NULL, c.expires_at, f.amr
             FROM refresh_tokens t
             JOIN refresh_families f ON f.id = t.family_id
             JOIN users u ON u.id = f.user_id
             -- `$1`, not `t.hash`: the same value, but a constant the planner
             -- looks up in the parent index instead of filtering a join.
             LEFT JOIN refresh_tokens c ON c.parent_hash = $1
             WHERE t.hash = $1"
        ),
        &[(&hash, Type::BYTEA)],
    )?;
    let Some(row) = row else {
        return Ok(None);
    };
    let child = match col::<Option<Vec<u8>>>(&row, STALE + 1)? {
        Some(_) => Some(StoredChild {
            hash: hash_col(&row, STALE + 1)?,
            spent: col(&row, STALE + 2)?,
            expires_at: col(&row, STALE + 3)?,
        }),
        None => None,
    };
    Ok(Some(StoredToken {
        family_id: FamilyId::from(col::<Uuid>(&row, 0)?),
        expires_at: col(&row, 1)?,
        spent_at: col(&row, 2)?,
        family_expires_at: col(&row, 3)?,
        family_revoked: col(&row, 4)?,
        user: user_at(&row, 5)?,
        family_stale: col(&row, STALE)?,
        child,
        amr: stored_amr(col(&row, STALE + 4)?)?,
    }))
}

/// The claim in one round trip. `family` locks the family row, so a revocation committed
/// meanwhile is seen (the lock waits for it, then re-reads the row); `claimed` is the
/// compare-and-set: under READ COMMITTED a second claim waits for the first's row lock,
/// re-checks `spent_at IS NULL` on the row it committed, and matches nothing. Only a
/// claim that changed the row inserts the child.
pub(super) fn spend(c: &mut Conn<'_>, s: &Spend) -> Result<bool, Failure> {
    let (presented, child) = (&s.presented[..], &s.child[..]);
    let family = s.family_id.as_uuid();
    let (now, child_expires) = (sec(s.now), sec(s.child_expires_at));
    let row = c.query_typed_one(
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
    )?;
    Ok(col::<i64>(&row, 0)? == 1)
}

pub(super) fn revoke_by_token(
    c: &mut Conn<'_>,
    token: &TokenHashBytes,
    reason: RevokeReason,
    now: DateTime<Utc>,
) -> Result<Option<(UserId, FamilyId)>, Failure> {
    let (token, now, reason) = (&token[..], sec(now), reason.as_str());
    let row = c.query_typed_opt(
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
    )?;
    let Some(r) = row else {
        return Ok(None);
    };
    Ok(Some((
        UserId::from(col::<Uuid>(&r, 0)?),
        FamilyId::from(col::<Uuid>(&r, 1)?),
    )))
}

/// A revoked family keeps its first revocation: only `revoked_at IS NULL` rows change,
/// but a revoked one still counts as found.
pub(super) fn revoke_one(
    c: &mut Conn<'_>,
    family: FamilyId,
    owner: Option<UserId>,
    reason: RevokeReason,
    now: DateTime<Utc>,
) -> Result<Option<UserId>, Failure> {
    let (family, owner) = (family.as_uuid(), owner.map(UserId::as_uuid));
    let (now, reason) = (sec(now), reason.as_str());
    let row = c.query_typed_opt(
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
    )?;
    Ok(row
        .map(|r| col::<Uuid>(&r, 0).map(UserId::from))
        .transpose()?)
}

pub(super) fn revoke_all<C: Driver>(
    c: &mut Connection<'_, C>,
    user: UserId,
    reason: RevokeReason,
    now: DateTime<Utc>,
) -> Result<(), Failure> {
    let (user, now, reason) = (user.as_uuid(), sec(now), reason.as_str());
    c.query_typed(
        &revoke_user_families("$1", "$2", "$3"),
        &[
            (&user, Type::UUID),
            (&now, Type::TIMESTAMPTZ),
            (&reason, Type::TEXT),
        ],
    )?;
    Ok(())
}

/// Revokes every open family of a user in one statement; `false` when the user does
/// not exist.
pub(super) fn revoke_all_of_existing(
    c: &mut Conn<'_>,
    user: UserId,
    reason: RevokeReason,
    now: DateTime<Utc>,
) -> Result<bool, Failure> {
    let (user, now, reason) = (user.as_uuid(), sec(now), reason.as_str());
    let row = c.query_typed_one(
        &format!(
            "WITH revoked AS ({})
             SELECT count(*) FROM users WHERE id = $1",
            revoke_user_families("$1", "$2", "$3")
        ),
        &[
            (&user, Type::UUID),
            (&now, Type::TIMESTAMPTZ),
            (&reason, Type::TEXT),
        ],
    )?;
    Ok(col::<i64>(&row, 0)? > 0)
}

/// For each of `users`, in order, when their newest family still stored was opened: one
/// statement, each user's newest family by the (user_id, created_at) index.
pub(super) fn last_opened(
    c: &mut Conn<'_>,
    users: &[UserId],
) -> Result<Vec<Option<DateTime<Utc>>>, Failure> {
    let ids: Vec<Uuid> = users.iter().map(|u| u.as_uuid()).collect();
    let rows = c.query_typed(
        "SELECT (SELECT max(f.created_at) FROM refresh_families f WHERE f.user_id = x.u)
         FROM unnest($1::uuid[]) WITH ORDINALITY AS x(u, n)
         ORDER BY x.n",
        &[(&ids, Type::UUID_ARRAY)],
    )?;
    Ok(rows.iter().map(|r| col(r, 0)).collect::<Result<_, _>>()?)
}

pub(super) fn list(
    c: &mut Conn<'_>,
    user: UserId,
    include_ended: bool,
    now: DateTime<Utc>,
) -> Result<Vec<Session>, Failure> {
    let (user, now) = (user.as_uuid(), sec(now));
    // Within one second, newest first by `opened_seq`, numbered as families are inserted
    // (migrations/postgres/0004_family_order.sql).
    let rows = c.query_typed(
        &sessions_of_user("$1", "$2", "$3", "f.opened_seq"),
        &[
            (&user, Type::UUID),
            (&include_ended, Type::BOOL),
            (&now, Type::TIMESTAMPTZ),
        ],
    )?;
    let session = |row: &::postgres::Row| -> Result<Session, crate::storage::StoreError> {
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
            amr: stored_amr(col(row, 8)?)?,
        })
    };
    Ok(rows.iter().map(session).collect::<Result<_, _>>()?)
}

/// Deletes up to `batch` families past their absolute expiry, with their token hashes:
/// past that point no token of theirs can be valid, so replay detection no longer needs
/// them.
pub(super) fn delete_expired(
    c: &mut Conn<'_>,
    now: DateTime<Utc>,
    batch: i64,
) -> Result<usize, Failure> {
    super::deleted_in_batch(
        c,
        "WITH gone AS (DELETE FROM refresh_families WHERE id IN
             (SELECT id FROM refresh_families WHERE expires_at <= $1 LIMIT $2)
             RETURNING 1)
         SELECT count(*) FROM gone",
        now,
        batch,
    )
}

/// A family's `amr` as stored; one this code did not write is an internal error.
fn stored_amr(text: &str) -> Result<Amr, crate::storage::StoreError> {
    Amr::parse(text).ok_or_else(|| {
        crate::storage::StoreError::internal(
            "refresh_families.amr holds a value gatehouse does not know",
        )
    })
}
