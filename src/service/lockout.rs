//! Login lockout: a password is checked only while the email and the client IP are under
//! their failure limits, counting the checks still in flight.
//!
//! Only proven failures are stored. A check in flight is held here, in memory, so a
//! crash, a 503 or a dropped request can never leave it counted against a user; yet
//! concurrent guesses cannot slip past the limit, because an attempt that could be the
//! one too many waits until those in flight have resolved. With a limit of 5, fifty
//! concurrent guesses cost exactly five Argon2 verifies; fifty concurrent right
//! passwords all log in, five at a time.
//!
//! The in-flight count is per process. Several processes sharing one database would each
//! admit up to the limit in flight; the stored failures still stop all of them after it.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::audit::event;
use super::{AppState, ClientMeta, ServiceError};
use crate::domain::{AuditKind, Email, FamilyId, User};
use crate::storage::{
    AuditEvent, Store, StoreError, email_attempt_key, ip_attempt_key, password_check_key,
};

/// How long an attempt waits for the checks in flight on its keys before it gives up
/// with 503. Each of them is one queued Argon2 verify.
const WAIT_FOR_IN_FLIGHT: Duration = Duration::from_secs(10);

/// The password checks in flight, by lockout key.
#[derive(Default)]
pub struct AttemptGate {
    in_flight: parking_lot::Mutex<HashMap<String, u32>>,
    resolved: tokio::sync::Notify,
}

enum Admission {
    Go(Attempt),
    Wait,
    Locked { retry_after_secs: i64 },
}

impl AttemptGate {
    /// Reads the stored failures and admits the attempt when every key has room for it
    /// beside the checks in flight. The gate's lock is held across the read: a failure
    /// is stored before its check leaves the in-flight count, so the two are never both
    /// missed (counted twice, at worst, which only makes an attempt wait).
    ///
    /// The admitted `Attempt` is built here, on the blocking pool: if the request is
    /// dropped while this runs, the attempt is dropped with the job's output and leaves.
    fn admit(
        self: &Arc<Self>,
        store: &dyn Store,
        limits: &[(String, u32)],
        window_secs: i64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Admission, StoreError> {
        let mut in_flight = self.in_flight.lock();
        let keys: Vec<String> = limits.iter().map(|(k, _)| k.clone()).collect();
        let counts = store.login_failures(&keys, window_secs, now)?;
        let mut wait = false;
        let mut retry_after_secs = 0;
        for ((key, max), count) in limits.iter().zip(&counts) {
            if count.failures >= *max {
                retry_after_secs = retry_after_secs.max(count.window_left_secs);
            } else if count.failures + in_flight.get(key).copied().unwrap_or(0) >= *max {
                wait = true;
            }
        }
        if retry_after_secs > 0 {
            return Ok(Admission::Locked { retry_after_secs });
        }
        if wait {
            return Ok(Admission::Wait);
        }
        for key in &keys {
            *in_flight.entry(key.clone()).or_default() += 1;
        }
        Ok(Admission::Go(Attempt {
            gate: Arc::clone(self),
            keys,
            own_failures: counts.first().map_or(0, |c| c.failures),
        }))
    }

    fn leave(&self, keys: &[String]) {
        let mut in_flight = self.in_flight.lock();
        for key in keys {
            if let Some(n) = in_flight.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    in_flight.remove(key);
                }
            }
        }
        drop(in_flight);
        self.resolved.notify_waiters();
    }
}

/// One admitted password check. Dropping it without a verdict (an error, a cancelled
/// request) counts nothing.
pub struct Attempt {
    gate: Arc<AttemptGate>,
    /// The key of the account (email or session) first, then the IP key, if any.
    keys: Vec<String>,
    own_failures: u32,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.gate.leave(&self.keys);
    }
}

impl Attempt {
    /// The password was wrong (or the account disabled): one failure on every key.
    pub async fn failed(self, state: &AppState) -> Result<(), ServiceError> {
        let window = state.settings.lockout.window.as_secs() as i64;
        let now = state.now();
        // `self` drops inside the job, after the failure is stored.
        state
            .db(move |s| s.record_login_failure(&self.keys, window, now))
            .await
    }

    /// The password was right: the account's earlier failures are forgiven. The IP's
    /// stay: one account's success says nothing of the guesses at others.
    pub async fn succeeded(self, state: &AppState) -> Result<(), ServiceError> {
        if self.own_failures == 0 {
            return Ok(());
        }
        state
            .db(move |s| s.clear_login_failures(&self.keys[0]))
            .await
    }
}

/// Admits a password check for `email` from the caller, waiting (bounded) for the checks
/// in flight, or refuses it with 429 while the email or the IP is locked out.
pub async fn begin(
    state: &AppState,
    email: &Email,
    meta: &ClientMeta,
) -> Result<Attempt, ServiceError> {
    let lockout = state.settings.lockout;
    let limits = vec![
        (email_attempt_key(email), lockout.max_failures),
        (
            ip_attempt_key(meta.ip_bucket.as_deref().unwrap_or("unknown")),
            lockout.max_failures_per_ip,
        ),
    ];
    let refused = event(state, AuditKind::LoginLocked, None, meta, "refused");
    admit(state, limits, refused).await
}

/// Admits a check of a signed-in caller's current password (password change, account
/// deletion). It counts against the caller's session only, never against the email or
/// the IP: strangers' wrong logins cannot block the owner, and a stolen access token
/// still buys only `max_failures` guesses per window.
pub async fn begin_password_check(
    state: &AppState,
    user: &User,
    session: FamilyId,
    meta: &ClientMeta,
) -> Result<Attempt, ServiceError> {
    let limits = vec![(
        password_check_key(session),
        state.settings.lockout.max_failures,
    )];
    let refused = AuditEvent {
        family_id: Some(session),
        ..event(state, AuditKind::LoginLocked, Some(user), meta, "refused")
    };
    admit(state, limits, refused).await
}

async fn admit(
    state: &AppState,
    limits: Vec<(String, u32)>,
    refused: AuditEvent,
) -> Result<Attempt, ServiceError> {
    let window = state.settings.lockout.window.as_secs() as i64;
    let deadline = tokio::time::Instant::now() + WAIT_FOR_IN_FLIGHT;
    loop {
        // Registered before the check, so a check resolving in between still wakes us.
        let resolved = state.attempts.resolved.notified();
        tokio::pin!(resolved);
        resolved.as_mut().enable();
        let gate = Arc::clone(&state.attempts);
        let job_limits = limits.clone();
        let now = state.now();
        let admission = state
            .db(move |s| gate.admit(s, &job_limits, window, now))
            .await?;
        match admission {
            Admission::Go(attempt) => return Ok(attempt),
            Admission::Locked { retry_after_secs } => {
                state.metrics.login("locked");
                state
                    .audit(AuditEvent {
                        detail: Some(format!("retry after {retry_after_secs}s")),
                        ..refused
                    })
                    .await;
                return Err(ServiceError::TooManyAttempts {
                    retry_after_secs: retry_after_secs.max(1) as u64,
                });
            }
            Admission::Wait => {
                if tokio::time::timeout_at(deadline, resolved).await.is_err() {
                    return Err(ServiceError::Unavailable(
                        "timed out waiting for login attempts in flight".into(),
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::storage::sqlite::{SqliteStore, Synchronous};

    const WINDOW: i64 = 900;
    const EMAIL: &str = "email:victim@example.com";
    const IP: &str = "ip:192.0.2.7";

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("timestamp")
    }

    /// A real store in a temporary directory (kept alive by the returned guard).
    fn store() -> (SqliteStore, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("gatehouse.db"), Synchronous::Normal, 1)
            .expect("open the store");
        (store, dir)
    }

    fn limits(email_max: u32, ip_max: u32) -> Vec<(String, u32)> {
        vec![(EMAIL.into(), email_max), (IP.into(), ip_max)]
    }

    fn fail(store: &SqliteStore, keys: &[&str], times: u32, now: DateTime<Utc>) {
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        for _ in 0..times {
            store
                .record_login_failure(&keys, WINDOW, now)
                .expect("record a failure");
        }
    }

    fn admit(
        gate: &Arc<AttemptGate>,
        store: &SqliteStore,
        limits: &[(String, u32)],
        now: DateTime<Utc>,
    ) -> Admission {
        gate.admit(store, limits, WINDOW, now).expect("admit")
    }

    fn go(admission: Admission) -> Attempt {
        match admission {
            Admission::Go(attempt) => attempt,
            Admission::Wait => panic!("told to wait, expected to go"),
            Admission::Locked { retry_after_secs } => {
                panic!("locked for {retry_after_secs}s, expected to go")
            }
        }
    }

    fn in_flight(gate: &AttemptGate, key: &str) -> u32 {
        gate.in_flight.lock().get(key).copied().unwrap_or(0)
    }

    #[test]
    fn an_admitted_attempt_is_in_flight_until_dropped_and_a_drop_counts_no_failure() {
        let (store, _dir) = store();
        let gate = Arc::new(AttemptGate::default());
        let attempt = go(admit(&gate, &store, &limits(5, 20), t(0)));
        assert_eq!((in_flight(&gate, EMAIL), in_flight(&gate, IP)), (1, 1));

        drop(attempt);
        assert!(gate.in_flight.lock().is_empty());
        let counts = store
            .login_failures(&[EMAIL.into(), IP.into()], WINDOW, t(0))
            .expect("counts");
        assert!(counts.iter().all(|c| c.failures == 0));
    }

    #[test]
    fn an_attempt_that_could_be_one_too_many_waits_for_the_checks_in_flight() {
        let (store, _dir) = store();
        let gate = Arc::new(AttemptGate::default());
        fail(&store, &[EMAIL], 3, t(0));

        // 3 stored + 0 in flight < 5; 3 + 1 < 5; 3 + 2 = 5 could be the sixth guess.
        let first = go(admit(&gate, &store, &limits(5, 20), t(1)));
        assert_eq!(first.own_failures, 3);
        let second = go(admit(&gate, &store, &limits(5, 20), t(1)));
        assert!(matches!(
            admit(&gate, &store, &limits(5, 20), t(1)),
            Admission::Wait
        ));

        drop(second);
        go(admit(&gate, &store, &limits(5, 20), t(1)));
        drop(first);
    }

    #[test]
    fn the_ip_limit_holds_across_accounts() {
        let (store, _dir) = store();
        let gate = Arc::new(AttemptGate::default());
        let other = vec![
            ("email:other@example.com".to_owned(), 5),
            (IP.to_owned(), 2),
        ];
        let _first = go(admit(&gate, &store, &limits(5, 2), t(0)));
        let _second = go(admit(&gate, &store, &other, t(0)));
        assert!(matches!(
            admit(&gate, &store, &limits(5, 2), t(0)),
            Admission::Wait
        ));
    }

    #[test]
    fn failures_at_the_limit_lock_for_the_rest_of_their_window_then_expire() {
        let (store, _dir) = store();
        let gate = Arc::new(AttemptGate::default());
        fail(&store, &[EMAIL], 5, t(0));

        match admit(&gate, &store, &limits(5, 20), t(100)) {
            Admission::Locked { retry_after_secs } => assert_eq!(retry_after_secs, WINDOW - 100),
            _ => panic!("five stored failures must lock"),
        }
        assert!(gate.in_flight.lock().is_empty(), "a refusal holds nothing");
        // One second before the window ends it is still locked; at its end, admitted.
        assert!(matches!(
            admit(&gate, &store, &limits(5, 20), t(WINDOW - 1)),
            Admission::Locked {
                retry_after_secs: 1
            }
        ));
        let attempt = go(admit(&gate, &store, &limits(5, 20), t(WINDOW)));
        assert_eq!(
            attempt.own_failures, 0,
            "an ended window forgets its failures"
        );
    }

    #[test]
    fn a_lock_wins_over_a_wait_and_the_longest_lock_is_reported() {
        let (store, _dir) = store();
        let gate = Arc::new(AttemptGate::default());
        fail(&store, &[IP], 20, t(0));
        fail(&store, &[EMAIL], 4, t(300));
        let _in_flight = go(admit(&gate, &store, &[(EMAIL.to_owned(), 5)], t(300)));

        // The email would wait (4 stored + 1 in flight), the IP is locked: locked.
        match admit(&gate, &store, &limits(5, 20), t(400)) {
            Admission::Locked { retry_after_secs } => assert_eq!(retry_after_secs, 500),
            _ => panic!("the IP is at its limit"),
        }
        // Both locked: the IP for 500 s more, the email for 800 s; the caller waits 800.
        fail(&store, &[EMAIL], 1, t(400));
        match admit(&gate, &store, &limits(5, 20), t(400)) {
            Admission::Locked { retry_after_secs } => assert_eq!(retry_after_secs, 800),
            _ => panic!("both keys are at their limit"),
        }
    }
}
