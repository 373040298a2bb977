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
//!
//! ## Why the gate's lock is never held across the database read
//!
//! Every login takes the gate's lock, so a lock held over `login_failures` (a network
//! round trip on PostgreSQL) would serialize all logins of the process. An admission
//! instead works in three steps, per key:
//!
//! 1. under the lock, it notes each key's `failures_landed` generation and registers as a
//!    reader, which keeps the key's entry (and so its generation) alive;
//! 2. without the lock, it reads the stored failures `F`;
//! 3. under the lock again, if no generation moved, it decides on `F` plus the checks in
//!    flight `I`, and counts itself in flight when admitted; if one moved, it starts over.
//!
//! An attempt that failed stores its failure first and leaves the in-flight count second,
//! bumping its keys' generations as it leaves. Take any such attempt `P` and an admission
//! deciding at step 3. If `P` left before step 1, its write finished before the read
//! began, so `F` counts it (SQLite, and PostgreSQL at any isolation level, show a read
//! every write committed before it started). If `P` left between steps 1 and 3, a generation moved and the admission reads
//! again. Otherwise `P` is still in `I`. So no failure is missed, and `F + I` bounds the
//! checks that can have failed, exactly as when the read was made under the lock (a
//! failure in both `F` and `I` counts twice, which only makes an attempt wait).
//!
//! Only a failure moves a generation, so successful logins never make each other read
//! again, and a key takes at most its limit of failures per window, which bounds the
//! rereads. Still, after `OPTIMISTIC_READS` attempts the admission reads under the lock as
//! it used to, so none can starve.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::audit::event;
use super::{AppState, ClientMeta, ServiceError};
use crate::domain::{AuditKind, Email, FamilyId, User};
use crate::storage::{
    AttemptCount, AuditEvent, Store, StoreError, email_attempt_key, ip_attempt_key,
    password_check_key,
};

/// How long an attempt waits for the checks in flight on its keys before it gives up
/// with 503. Each of them is one queued Argon2 verify.
const WAIT_FOR_IN_FLIGHT: Duration = Duration::from_secs(10);

/// Reads made without the lock before an admission falls back to reading under it.
const OPTIMISTIC_READS: usize = 3;

/// The password checks in flight, by lockout key.
#[derive(Default)]
pub struct AttemptGate {
    keys: parking_lot::Mutex<HashMap<String, KeyState>>,
    resolved: tokio::sync::Notify,
}

/// A key's entry lives while a check is in flight on it or an admission is reading it.
#[derive(Default)]
struct KeyState {
    in_flight: u32,
    /// Moves when an attempt that stored (or tried to store) a failure on this key leaves.
    failures_landed: u64,
    readers: u32,
}

enum Admission {
    Go(Attempt),
    Wait,
    Locked { retry_after_secs: i64 },
}

impl AttemptGate {
    /// Admits the attempt when every key has room for it beside its stored failures and
    /// the checks in flight (see the module doc for why the read is made unlocked).
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
        self.admit_reading(limits, |keys| store.login_failures(keys, window_secs, now))
    }

    /// `admit`, with the store's read passed in, so a test can hold a real read open.
    fn admit_reading(
        self: &Arc<Self>,
        limits: &[(String, u32)],
        mut read_failures: impl FnMut(&[String]) -> Result<Vec<AttemptCount>, StoreError>,
    ) -> Result<Admission, StoreError> {
        let keys: Vec<String> = limits.iter().map(|(k, _)| k.clone()).collect();
        for _ in 0..OPTIMISTIC_READS {
            let snapshot = Snapshot::take(self, &keys);
            let counts = read_failures(&keys)?;
            let mut table = self.keys.lock();
            if snapshot.finish(&mut table) {
                return Ok(self.decide(&mut table, limits, keys, &counts));
            }
        }
        let mut table = self.keys.lock();
        let counts = read_failures(&keys)?;
        Ok(self.decide(&mut table, limits, keys, &counts))
    }

    /// The verdict on fresh enough counts; an admitted attempt is in flight on return.
    fn decide(
        self: &Arc<Self>,
        table: &mut HashMap<String, KeyState>,
        limits: &[(String, u32)],
        keys: Vec<String>,
        counts: &[AttemptCount],
    ) -> Admission {
        let mut wait = false;
        let mut retry_after_secs = 0;
        for ((key, max), count) in limits.iter().zip(counts) {
            let in_flight = table.get(key).map_or(0, |state| state.in_flight);
            if count.failures >= *max {
                retry_after_secs = retry_after_secs.max(count.window_left_secs);
            } else if count.failures + in_flight >= *max {
                wait = true;
            }
        }
        if retry_after_secs > 0 {
            return Admission::Locked { retry_after_secs };
        }
        if wait {
            return Admission::Wait;
        }
        for key in &keys {
            table.entry(key.clone()).or_default().in_flight += 1;
        }
        Admission::Go(Attempt {
            gate: Arc::clone(self),
            keys,
            own_failures: counts.first().map_or(0, |c| c.failures),
            failure_stored: false,
        })
    }

    fn leave(&self, keys: &[String], failure_stored: bool) {
        let mut table = self.keys.lock();
        for key in keys {
            if let Some(state) = table.get_mut(key) {
                state.in_flight -= 1;
                if failure_stored {
                    state.failures_landed += 1;
                }
                if state.in_flight == 0 && state.readers == 0 {
                    table.remove(key);
                }
            }
        }
        drop(table);
        self.resolved.notify_waiters();
    }
}

/// The generations an admission saw before its unlocked read. Dropped unfinished (the
/// read failed or panicked), it still unregisters, so no entry outlives its use.
struct Snapshot<'a> {
    gate: &'a AttemptGate,
    keys: &'a [String],
    generations: Vec<u64>,
    finished: bool,
}

impl<'a> Snapshot<'a> {
    fn take(gate: &'a AttemptGate, keys: &'a [String]) -> Self {
        let mut table = gate.keys.lock();
        let generations = keys
            .iter()
            .map(|key| {
                let state = table.entry(key.clone()).or_default();
                state.readers += 1;
                state.failures_landed
            })
            .collect();
        Self {
            gate,
            keys,
            generations,
            finished: false,
        }
    }

    /// Unregisters; `true` when no failure left the in-flight count since `take`.
    fn finish(mut self, table: &mut HashMap<String, KeyState>) -> bool {
        self.unregister(table)
    }

    fn unregister(&mut self, table: &mut HashMap<String, KeyState>) -> bool {
        self.finished = true;
        let mut current = true;
        for (key, seen) in self.keys.iter().zip(&self.generations) {
            if let Some(state) = table.get_mut(key) {
                current &= state.failures_landed == *seen;
                state.readers -= 1;
                if state.in_flight == 0 && state.readers == 0 {
                    table.remove(key);
                }
            }
        }
        current
    }
}

impl Drop for Snapshot<'_> {
    fn drop(&mut self) {
        if !self.finished {
            let gate = self.gate;
            self.unregister(&mut gate.keys.lock());
        }
    }
}

/// One admitted password check. Dropping it without a verdict (an error, a cancelled
/// request) counts nothing.
pub struct Attempt {
    gate: Arc<AttemptGate>,
    /// The key of the account (email or session) first, then the IP key, if any.
    keys: Vec<String>,
    own_failures: u32,
    /// Set before the failure is written: a write that reports an error may still have
    /// landed, and a needless reread is cheaper than a missed failure.
    failure_stored: bool,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        self.gate.leave(&self.keys, self.failure_stored);
    }
}

impl Attempt {
    /// The password was wrong (or the account disabled): one failure on every key.
    pub async fn failed(self, state: &AppState) -> Result<(), ServiceError> {
        let window = state.settings.lockout.window.as_secs() as i64;
        let now = state.now();
        state.db(move |s| self.record_failure(s, window, now)).await
    }

    /// Stores the failure, then leaves the in-flight count (when `self` drops at the
    /// end): the order the module doc's argument rests on.
    fn record_failure(
        mut self,
        store: &dyn Store,
        window_secs: i64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), StoreError> {
        self.failure_stored = true;
        store.record_login_failure(&self.keys, window_secs, now)
    }

    /// The key whose failures a right password forgives, when it has any: the login
    /// clears it in the transaction that opens its family. The IP's stay, as in
    /// `succeeded`.
    pub fn forgives(&self) -> Option<String> {
        (self.own_failures > 0).then(|| self.keys[0].clone())
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
        gate.keys.lock().get(key).map_or(0, |state| state.in_flight)
    }

    fn idle(gate: &AttemptGate) -> bool {
        gate.keys.lock().is_empty()
    }

    #[test]
    fn an_admitted_attempt_is_in_flight_until_dropped_and_a_drop_counts_no_failure() {
        let (store, _dir) = store();
        let gate = Arc::new(AttemptGate::default());
        let attempt = go(admit(&gate, &store, &limits(5, 20), t(0)));
        assert_eq!((in_flight(&gate, EMAIL), in_flight(&gate, IP)), (1, 1));

        drop(attempt);
        assert!(idle(&gate));
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
        assert!(idle(&gate), "a refusal holds nothing");
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

    /// The store's read, held open on one key until an admission on another key has gone
    /// through: a gate locked across the read would keep that admission out until this
    /// one gave up. A closure around the real store's read rather than a `Store` wrapper,
    /// so the test does not restate the whole trait.
    #[test]
    fn the_gate_is_not_locked_while_the_store_reads() {
        let (store, _dir) = store();
        let store = Arc::new(store);
        let gate = Arc::new(AttemptGate::default());
        let (reading, read_started) = std::sync::mpsc::channel();
        let (other_admitted, other_went_through) = std::sync::mpsc::channel::<()>();

        let slow = {
            let (gate, store) = (Arc::clone(&gate), Arc::clone(&store));
            std::thread::spawn(move || {
                gate.admit_reading(&[(EMAIL.to_owned(), 5)], |keys| {
                    let counts = store.login_failures(keys, WINDOW, t(0));
                    reading.send(()).expect("the test is waiting");
                    other_went_through
                        .recv_timeout(Duration::from_secs(10))
                        .map_err(|_| {
                            StoreError::Unavailable("the other admission never went through".into())
                        })?;
                    counts
                })
            })
        };
        read_started
            .recv_timeout(Duration::from_secs(10))
            .expect("the slow read never started");
        let other = go(admit(
            &gate,
            &store,
            &[("email:other@example.com".to_owned(), 5)],
            t(0),
        ));
        other_admitted.send(()).expect("the slow read is waiting");

        let slow = go(slow
            .join()
            .expect("the slow admission panicked")
            .expect("the slow admission failed"));
        assert_eq!(in_flight(&gate, EMAIL), 1);
        drop((slow, other));
        assert!(idle(&gate));
    }

    /// With a limit of 1: the one check in flight fails and leaves between another
    /// admission's read (no failures yet) and its decision (nothing in flight any more).
    /// Deciding on that read would admit a second guess; the moved generation makes it
    /// read again and see the lock.
    #[test]
    fn a_failure_that_lands_during_the_unlocked_read_is_seen() {
        let (store, _dir) = store();
        let store = Arc::new(store);
        let gate = Arc::new(AttemptGate::default());
        let one = [(EMAIL.to_owned(), 1)];
        let mut first = Some(go(admit(&gate, &store, &one, t(0))));
        let mut reads = 0;

        let admission = gate
            .admit_reading(&one, |keys| {
                reads += 1;
                let counts = store.login_failures(keys, WINDOW, t(0));
                if let Some(attempt) = first.take() {
                    // On another thread, bounded: a gate locked across this read would
                    // keep the attempt from leaving, and the test must fail, not hang.
                    let store = Arc::clone(&store);
                    let (done, left) = std::sync::mpsc::channel();
                    std::thread::spawn(move || {
                        let stored = attempt.record_failure(store.as_ref(), WINDOW, t(0));
                        let _ = done.send(stored);
                    });
                    if let Ok(stored) = left.recv_timeout(Duration::from_secs(10)) {
                        stored.expect("record the failure");
                    }
                }
                counts
            })
            .expect("admit");

        assert!(
            matches!(admission, Admission::Locked { .. }),
            "a second guess was admitted past a limit of one"
        );
        assert_eq!(reads, 2);
        assert!(idle(&gate));
    }

    #[test]
    fn a_failed_read_leaves_nothing_behind() {
        let gate = Arc::new(AttemptGate::default());
        let result = gate.admit_reading(&limits(5, 20), |_| {
            Err(StoreError::Unavailable("the database is down".into()))
        });
        assert!(matches!(result, Err(StoreError::Unavailable(_))));
        assert!(idle(&gate));
    }

    /// Many threads guessing on one key through the real store: exactly the limit is
    /// admitted, however the unlocked reads interleave with failures landing.
    #[test]
    fn concurrent_guesses_from_many_threads_stop_at_the_limit() {
        let (store, _dir) = store();
        let store = Arc::new(store);
        let gate = Arc::new(AttemptGate::default());
        let admitted = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let (gate, store, admitted) =
                    (Arc::clone(&gate), Arc::clone(&store), Arc::clone(&admitted));
                let limits = vec![(EMAIL.to_owned(), 5), (format!("ip:192.0.2.{i}"), 20)];
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        match admit(&gate, &store, &limits, t(0)) {
                            Admission::Go(attempt) => {
                                admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                attempt
                                    .record_failure(store.as_ref(), WINDOW, t(0))
                                    .expect("record the failure");
                            }
                            Admission::Wait => std::thread::yield_now(),
                            Admission::Locked { .. } => return,
                        }
                    }
                    panic!("never locked out");
                })
            })
            .collect();
        for thread in threads {
            thread.join().expect("a guessing thread panicked");
        }
        assert_eq!(admitted.load(std::sync::atomic::Ordering::SeqCst), 5);
        assert!(idle(&gate));
    }
}
