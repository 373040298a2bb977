use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::ts;
use crate::storage::{AttemptCount, KeyLoad, Lease, LeaseId, Reservation, Settle};

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

pub(super) fn reserve(
    tx: &Connection,
    lease: &Lease,
    admit: &(dyn Fn(&[KeyLoad]) -> bool + Sync),
) -> rusqlite::Result<Reservation> {
    // The write transaction is the lock: SQLite has one writer.
    let stored = failures(tx, &lease.keys, lease.window_secs, lease.now)?;
    let now = ts(lease.now);
    let mut live =
        tx.prepare_cached("SELECT count(*) FROM login_leases WHERE key = ?1 AND expires_at > ?2")?;
    let loads = lease
        .keys
        .iter()
        .zip(stored)
        .map(|(key, stored)| {
            let n: i64 = live.query_row(params![key, now], |r| r.get(0))?;
            Ok(KeyLoad {
                stored,
                in_flight: u32::try_from(n).unwrap_or(u32::MAX),
            })
        })
        .collect::<rusqlite::Result<Vec<_>>>()?;
    let leased = admit(&loads);
    if leased {
        let mut expired =
            tx.prepare_cached("DELETE FROM login_leases WHERE key = ?1 AND expires_at <= ?2")?;
        let mut insert = tx.prepare_cached(
            "INSERT OR IGNORE INTO login_leases (key, id, expires_at) VALUES (?1, ?2, ?3)",
        )?;
        let id = lease.id.0.to_string();
        for key in &lease.keys {
            expired.execute(params![key, now])?;
            insert.execute(params![key, id, ts(lease.now + lease.ttl)])?;
        }
    }
    Ok(Reservation { loads, leased })
}

pub(super) fn settle(tx: &Connection, lease: LeaseId, how: Settle<'_>) -> rusqlite::Result<()> {
    match how {
        Settle::Failed {
            keys,
            window_secs,
            now,
        } => record_failure(tx, keys, window_secs, now)?,
        Settle::Succeeded { forgive: Some(key) } => forget(tx, key)?,
        Settle::Succeeded { forgive: None } | Settle::Abandoned => {}
    }
    release(tx, lease)
}

pub(super) fn release(tx: &Connection, lease: LeaseId) -> rusqlite::Result<()> {
    tx.prepare_cached("DELETE FROM login_leases WHERE id = ?1")?
        .execute([lease.0.to_string()])?;
    Ok(())
}

pub(super) fn delete_expired_leases(tx: &Connection, now: DateTime<Utc>) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM login_leases WHERE expires_at <= ?1",
        params![ts(now)],
    )?;
    Ok(())
}
