//! `audit_events`: the audit log. The mirror of `sqlite/audit.rs`.

use ::postgres::types::Type;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::statements::{Conn, Connection, Driver};
use super::{Failure, col, sec};
use crate::domain::{FamilyId, UserId};
use crate::storage::{AuditCount, AuditEvent, AuditFilter, AuditRecord, StoreError};

/// Generic over the session, so a transaction of another table's file records its event too.
pub(super) fn insert<C: Driver>(c: &mut Connection<'_, C>, e: &AuditEvent) -> Result<(), Failure> {
    let at = sec(e.at);
    let kind = e.kind.as_str();
    let (user, family, actor) = (
        e.user_id.map(UserId::as_uuid),
        e.family_id.map(FamilyId::as_uuid),
        e.actor_id.map(UserId::as_uuid),
    );
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
    )?;
    Ok(())
}

pub(super) fn list(c: &mut Conn<'_>, filter: &AuditFilter) -> Result<Vec<AuditRecord>, Failure> {
    // As in `accounts::search`: no stored type holds NUL, and the server would refuse it.
    if filter.kind.as_deref().is_some_and(|k| k.contains('\0')) {
        return Ok(Vec::new());
    }
    let user = filter.user_id.map(UserId::as_uuid);
    let limit = i64::from(filter.limit);
    let rows = c.query_typed(
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
    )?;
    let record = |r: &::postgres::Row| -> Result<AuditRecord, StoreError> {
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
    };
    Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
}

pub(super) fn count_by_hour(
    c: &mut Conn<'_>,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<AuditCount>, Failure> {
    // The three-argument date_trunc truncates in UTC whatever the session's TimeZone.
    let rows = c.query_typed(
        "SELECT date_trunc('hour', at, 'UTC') AS hour, type, COUNT(*)
         FROM audit_events
         WHERE at >= $1 AND at < $2
         GROUP BY 1, 2
         ORDER BY 1, 2",
        &[(&from, Type::TIMESTAMPTZ), (&to, Type::TIMESTAMPTZ)],
    )?;
    let count = |r: &::postgres::Row| -> Result<AuditCount, StoreError> {
        Ok(AuditCount {
            hour: col(r, 0)?,
            kind: col(r, 1)?,
            count: col::<i64>(r, 2)?.max(0) as u64,
        })
    };
    Ok(rows.iter().map(count).collect::<Result<_, _>>()?)
}

/// Deletes up to `batch` of the oldest events from before `before`.
pub(super) fn delete_before(
    c: &mut Conn<'_>,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<usize, Failure> {
    super::deleted_in_batch(
        c,
        "WITH gone AS (DELETE FROM audit_events WHERE id IN
             (SELECT id FROM audit_events WHERE at < $1 ORDER BY id LIMIT $2)
             RETURNING 1)
         SELECT count(*) FROM gone",
        before,
        batch,
    )
}
