use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::ts;
use crate::storage::{AttemptDecision, AttemptLimit};

pub(super) fn reserve(
    conn: &Connection,
    limits: &[AttemptLimit],
    window_secs: i64,
    now: DateTime<Utc>,
) -> rusqlite::Result<AttemptDecision> {
    let now = ts(now);
    let mut wait = 0i64;
    for limit in limits {
        let row: Option<(i64, i64)> = conn
            .prepare_cached("SELECT window_start, failures FROM login_attempts WHERE key = ?1")?
            .query_row([&limit.key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((start, failures)) = row {
            let ends = start + window_secs;
            if ends > now && failures >= i64::from(limit.max_failures) {
                wait = wait.max(ends - now);
            }
        }
    }
    if wait > 0 {
        return Ok(AttemptDecision::Locked {
            retry_after_secs: wait,
        });
    }
    // Counted before the password is checked, inside the same write transaction as the
    // check above: concurrent guesses queue here one by one, so none slips past the limit.
    let mut upsert = conn.prepare_cached(
        "INSERT INTO login_attempts (key, window_start, failures) VALUES (?1, ?2, 1)
         ON CONFLICT (key) DO UPDATE SET
             failures = CASE WHEN window_start + ?3 <= ?2 THEN 1 ELSE failures + 1 END,
             window_start = CASE WHEN window_start + ?3 <= ?2 THEN ?2 ELSE window_start END",
    )?;
    for limit in limits {
        upsert.execute(params![limit.key, now, window_secs])?;
    }
    Ok(AttemptDecision::Reserved)
}

pub(super) fn release(conn: &Connection, clear: &str, refund: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM login_attempts WHERE key = ?1")?
        .execute([clear])?;
    conn.prepare_cached(
        "UPDATE login_attempts SET failures = MAX(failures - 1, 0) WHERE key = ?1",
    )?
    .execute([refund])?;
    Ok(())
}

pub(super) fn forget(conn: &Connection, key: &str) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM login_attempts WHERE key = ?1", [key])?;
    Ok(())
}

pub(super) fn delete_stale(
    conn: &Connection,
    now: DateTime<Utc>,
    window_secs: i64,
) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM login_attempts WHERE window_start + ?2 <= ?1",
        params![ts(now), window_secs],
    )
}
