//! `login_attempts` and `login_leases`: failed logins per key and window, and the leases
//! of the checks in flight. The mirror of `sqlite/lockout.rs`.

use std::collections::HashMap;

use ::postgres::types::Type;
use chrono::{DateTime, Utc};

use super::statements::{Conn, Tx};
use super::{Failure, col, sec};
use crate::storage::{AttemptCount, KeyLoad, Lease, LeaseId, Reservation, Settle};

/// One failure on each of `$1`'s keys at `$2`, opening a new window of `$3` seconds where
/// the last one has ended. The keys must be sorted and distinct: one upsert may touch a
/// row once, and concurrent upserts that lock the same keys in the same order cannot
/// deadlock.
const RECORD_FAILURES: &str = "INSERT INTO login_attempts (key, window_start, failures)
     SELECT k, $2, 1 FROM unnest($1::text[]) AS k ORDER BY k
     ON CONFLICT (key) DO UPDATE SET
         failures = CASE
             WHEN login_attempts.window_start + make_interval(secs => $3) <= $2
             THEN 1 ELSE login_attempts.failures + 1 END,
         window_start = CASE
             WHEN login_attempts.window_start + make_interval(secs => $3) <= $2
             THEN $2 ELSE login_attempts.window_start END";

fn sorted_distinct(keys: &[String]) -> Vec<String> {
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    keys
}

/// A key's failures as counted at `now`: none once its window has ended.
fn in_window(
    start: DateTime<Utc>,
    failures: i32,
    window_secs: i64,
    now: DateTime<Utc>,
) -> AttemptCount {
    let (start, now) = (start.timestamp(), now.timestamp());
    if start.saturating_add(window_secs) > now {
        AttemptCount {
            failures: u32::try_from(failures).unwrap_or(0),
            window_left_secs: start.saturating_add(window_secs) - now,
        }
    } else {
        AttemptCount::default()
    }
}

pub(super) fn failures(
    c: &mut Conn<'_>,
    keys: &[String],
    window_secs: i64,
    now: DateTime<Utc>,
) -> Result<Vec<AttemptCount>, Failure> {
    let now = sec(now);
    let rows = c.query_typed(
        "SELECT key, window_start, failures FROM login_attempts WHERE key = ANY($1)",
        &[(&keys, Type::TEXT_ARRAY)],
    )?;
    let mut found = HashMap::new();
    for row in &rows {
        let key: String = col(row, 0)?;
        found.insert(key, in_window(col(row, 1)?, col(row, 2)?, window_secs, now));
    }
    Ok(keys
        .iter()
        .map(|key| found.get(key).copied().unwrap_or_default())
        .collect())
}

pub(super) fn reserve(
    tx: &mut Tx<'_>,
    lease: &Lease,
    admit: &(dyn Fn(&[KeyLoad]) -> bool + Sync),
) -> Result<Reservation, Failure> {
    let locks = sorted_distinct(&lease.keys);
    let (id, now) = (lease.id.0, sec(lease.now));
    // Lease times are the server's (see `Lease`): microseconds, as an interval.
    let ttl = lease.ttl.num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6;
    // A lock per key, held to the commit, taken in one order (no deadlock between two
    // logins sharing both keys). The read is a later statement, so under READ COMMITTED
    // it sees every lease committed before the lock was granted; one statement would
    // read from before it waited.
    tx.query_typed(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 0))
         FROM unnest($1::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
        &[(&locks, Type::TEXT_ARRAY)],
    )?;
    let rows = tx.query_typed(
        "SELECT t.k, a.window_start, a.failures,
                (SELECT count(*) FROM login_leases l
                 WHERE l.key = t.k AND l.expires_at > statement_timestamp())
         FROM unnest($1::text[]) AS t(k)
         LEFT JOIN login_attempts a ON a.key = t.k",
        &[(&locks, Type::TEXT_ARRAY)],
    )?;
    let mut found = HashMap::new();
    for row in &rows {
        let key: String = row.try_get(0)?;
        let start: Option<DateTime<Utc>> = row.try_get(1)?;
        let failures: Option<i32> = row.try_get(2)?;
        let leases: i64 = row.try_get(3)?;
        let stored = match (start, failures) {
            (Some(start), Some(n)) => in_window(start, n, lease.window_secs, now),
            _ => AttemptCount::default(),
        };
        let in_flight = u32::try_from(leases).unwrap_or(u32::MAX);
        found.insert(key, KeyLoad { stored, in_flight });
    }
    let loads: Vec<KeyLoad> = lease
        .keys
        .iter()
        .map(|k| found.get(k).copied().unwrap_or_default())
        .collect();
    let leased = admit(&loads);
    if leased {
        tx.query_typed(
            "WITH expired AS (
                 DELETE FROM login_leases
                 WHERE key = ANY($2) AND expires_at <= statement_timestamp()
             )
             INSERT INTO login_leases (key, id, expires_at)
             SELECT k, $1, statement_timestamp() + make_interval(secs => $3)
             FROM unnest($2::text[]) AS k",
            &[
                (&id, Type::UUID),
                (&locks, Type::TEXT_ARRAY),
                (&ttl, Type::FLOAT8),
            ],
        )?;
    }
    Ok(Reservation { loads, leased })
}

/// Ends a lease and stores what its check concluded, in one statement.
pub(super) fn settle(c: &mut Conn<'_>, lease: LeaseId, how: Settle<'_>) -> Result<(), Failure> {
    let id = lease.0;
    match how {
        Settle::Failed {
            keys,
            window_secs,
            now,
        } => {
            let (keys, now, window) = (sorted_distinct(keys), sec(now), window_secs as f64);
            c.query_typed(
                &format!(
                    "WITH released AS (DELETE FROM login_leases WHERE id = $4)
                     {RECORD_FAILURES}"
                ),
                &[
                    (&keys, Type::TEXT_ARRAY),
                    (&now, Type::TIMESTAMPTZ),
                    (&window, Type::FLOAT8),
                    (&id, Type::UUID),
                ],
            )?
        }
        Settle::Succeeded { forgive } => c.query_typed(
            "WITH released AS (DELETE FROM login_leases WHERE id = $1)
             DELETE FROM login_attempts WHERE key = $2",
            &[(&id, Type::UUID), (&forgive, Type::TEXT)],
        )?,
        Settle::Abandoned => c.query_typed(
            "DELETE FROM login_leases WHERE id = $1",
            &[(&id, Type::UUID)],
        )?,
    };
    Ok(())
}

/// Deletes up to `batch` leases expired by the server's clock, which every replica
/// shares: another replica's live lease is never taken for an orphan. Returns how many.
pub(super) fn delete_expired_leases(
    c: &mut Conn<'_>,
    batch: Option<i64>,
) -> Result<usize, Failure> {
    let row = c.query_typed_one(
        "WITH gone AS (DELETE FROM login_leases WHERE (key, id) IN
             (SELECT key, id FROM login_leases
              WHERE expires_at <= statement_timestamp() LIMIT $1)
             RETURNING 1)
         SELECT count(*) FROM gone",
        &[(&batch, Type::INT8)],
    )?;
    Ok(usize::try_from(col::<i64>(&row, 0)?).unwrap_or(0))
}

/// Deletes up to `batch` windows that started at or before `before`.
pub(super) fn delete_stale(
    c: &mut Conn<'_>,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<usize, Failure> {
    super::deleted_in_batch(
        c,
        "WITH gone AS (DELETE FROM login_attempts WHERE key IN
             (SELECT key FROM login_attempts WHERE window_start <= $1 LIMIT $2)
             RETURNING 1)
         SELECT count(*) FROM gone",
        before,
        batch,
    )
}
