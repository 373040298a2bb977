use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::ts;
use crate::storage::AttemptCount;

pub(super) fn failures(
    conn: &Connection,
    keys: &[String],
    window_secs: i64,
    now: DateTime<Utc>,
) -> rusqlite::Result<Vec<AttemptCount>> {
    let now = ts(now);
    let mut select =
        conn.prepare_cached("SELECT window_start, failures FROM login_attempts WHERE key = ?1")?;
    keys.iter()
        .map(|key| {
            let row: Option<(i64, i64)> = select
                .query_row([key], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?;
            Ok(match row {
                Some((start, failures)) if start + window_secs > now => AttemptCount {
                    failures: u32::try_from(failures).unwrap_or(u32::MAX),
                    window_left_secs: start + window_secs - now,
                },
                _ => AttemptCount::default(),
            })
        })
        .collect()
}

pub(super) fn record_failure(
    conn: &Connection,
    keys: &[String],
    window_secs: i64,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    let mut upsert = conn.prepare_cached(
        "INSERT INTO login_attempts (key, window_start, failures) VALUES (?1, ?2, 1)
         ON CONFLICT (key) DO UPDATE SET
             failures = CASE WHEN window_start + ?3 <= ?2 THEN 1 ELSE failures + 1 END,
             window_start = CASE WHEN window_start + ?3 <= ?2 THEN ?2 ELSE window_start END",
    )?;
    for key in keys {
        upsert.execute(params![key, ts(now), window_secs])?;
    }
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
