use chrono::{DateTime, Utc};
use rusqlite::{Connection, params};

use super::{opt_uuid_col, time, ts};
use crate::storage::{AuditCount, AuditEvent, AuditFilter, AuditRecord};

pub(super) fn insert(conn: &Connection, e: &AuditEvent) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO audit_events
             (at, type, user_id, family_id, actor_id, ip, user_agent, outcome, detail)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?
    .execute(params![
        ts(e.at),
        e.kind.as_str(),
        e.user_id.map(|u| u.to_string()),
        e.family_id.map(|u| u.to_string()),
        e.actor_id.map(|u| u.to_string()),
        e.ip,
        e.user_agent,
        e.outcome,
        e.detail,
    ])?;
    Ok(())
}

pub(super) fn list(conn: &Connection, f: &AuditFilter) -> rusqlite::Result<Vec<AuditRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, at, type, user_id, family_id, actor_id, ip, user_agent, outcome, detail
         FROM audit_events
         WHERE (?1 IS NULL OR user_id = ?1) AND (?2 IS NULL OR type = ?2)
           AND (?4 IS NULL OR id < ?4)
         ORDER BY id DESC LIMIT ?3",
    )?;
    stmt.query_map(
        params![f.user_id.map(|u| u.to_string()), f.kind, f.limit, f.before],
        |r| {
            Ok(AuditRecord {
                id: r.get(0)?,
                at: time(r.get(1)?),
                kind: r.get(2)?,
                user_id: opt_uuid_col(r, 3)?,
                family_id: opt_uuid_col(r, 4)?,
                actor_id: opt_uuid_col(r, 5)?,
                ip: r.get(6)?,
                user_agent: r.get(7)?,
                outcome: r.get(8)?,
                detail: r.get(9)?,
            })
        },
    )?
    .collect()
}

pub(super) fn count_by_hour(
    conn: &Connection,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> rusqlite::Result<Vec<AuditCount>> {
    let mut stmt = conn.prepare_cached(
        "SELECT at - at % 3600 AS hour, type, COUNT(*)
         FROM audit_events
         WHERE at >= ?1 AND at < ?2
         GROUP BY hour, type
         ORDER BY hour, type",
    )?;
    stmt.query_map(params![ts(from), ts(to)], |r| {
        Ok(AuditCount {
            hour: time(r.get(0)?),
            kind: r.get(1)?,
            count: r.get::<_, i64>(2)?.max(0) as u64,
        })
    })?
    .collect()
}

pub(super) fn delete_before(
    conn: &Connection,
    before: DateTime<Utc>,
    batch: usize,
) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM audit_events WHERE id IN
             (SELECT id FROM audit_events WHERE at < ?1 ORDER BY id LIMIT ?2)",
        params![ts(before), batch as i64],
    )
}
