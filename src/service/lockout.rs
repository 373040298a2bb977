//! Login lockout: a password is checked only while the email and the client IP are under
//! their failure limits, counting the checks still in flight on every process that
//! shares the database.
//!
//! A check in flight holds a lease on each of its keys, in the database. A reservation
//! takes them under a lock per key (the store's), reading each key's stored failures `F`
//! and live leases `I`: it is admitted only when `F + I` is under the limit of every key,
//! refused with 429 when `F` alone has reached one, and told to wait otherwise. A wrong
//! password stores its failure and drops its lease in one transaction, so every check is
//! always counted once, in flight or failed, and `F + I` bounds the checks that can have
//! failed. With a limit of 5, fifty concurrent guesses spread over any number of
//! replicas cost exactly five Argon2 verifies; fifty concurrent right passwords all log
//! in, five at a time.
//!
//! A lease ends with its check (a right password drops it in the transaction that opens
//! the family; an error or a cancelled request drops it without counting anything). One
//! whose process died ends by itself after `LEASE`, and a SQLite store, which one process
//! serves, drops all of them at start: a crash never leaves a check counted against a
//! user. Waiters are woken at once by checks of their own process and look again every
//! `POLL` for the others'.

use std::sync::Arc;
use std::time::Duration;

use super::audit::event;
use super::{AppState, ClientMeta, ServiceError};
use crate::domain::{AuditKind, Email, FamilyId, User};
use crate::storage::{
    AuditEvent, KeyLoad, Lease, LeaseId, Settle, Store, email_attempt_key, ip_attempt_key,
    password_check_key,
};

/// How long an attempt waits for the checks in flight on its keys before it gives up
/// with 503. Each of them is one queued Argon2 verify.
const WAIT_FOR_IN_FLIGHT: Duration = Duration::from_secs(10);

/// How often a waiting attempt looks again for checks resolved by other processes.
const POLL: Duration = Duration::from_millis(100);

/// How long a lease outlives a process that died holding it, by the database's clock.
/// Longer than any check runs: an admitted check must be taken up by a hashing thread
/// within `START_CHECK_WITHIN` (or it is refused with 503, uncounted), and one verify
/// takes well under a second.
const LEASE: chrono::Duration = chrono::Duration::seconds(60);

/// How long an admitted check may wait in the hashing queue. Well under `LEASE`, so that
/// a lease always outlives the check it admitted: a verify run on an expired lease is
/// one the limit no longer counts.
const START_CHECK_WITHIN: Duration = Duration::from_secs(20);

/// Wakes the attempts of this process that wait for checks in flight.
#[derive(Default)]
pub struct AttemptSignals {
    resolved: tokio::sync::Notify,
}

/// What the lockout rule says about the loads a reservation saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LockoutVerdict {
    Go,
    Wait,
    Locked { retry_after_secs: i64 },
}

/// The rule, for keys with these limits and loads: locked while any key's stored
/// failures reach its limit (until the longest such window ends); wait while the
/// checks in flight could take any key there; go otherwise.
fn verdict(limits: &[(String, u32)], loads: &[KeyLoad]) -> LockoutVerdict {
    let mut wait = false;
    let mut retry_after_secs = 0;
    for ((_, max), load) in limits.iter().zip(loads) {
        if load.stored.failures >= *max {
            retry_after_secs = retry_after_secs.max(load.stored.window_left_secs);
        } else if load.stored.failures.saturating_add(load.in_flight) >= *max {
            wait = true;
        }
    }
    if retry_after_secs > 0 {
        LockoutVerdict::Locked { retry_after_secs }
    } else if wait {
        LockoutVerdict::Wait
    } else {
        LockoutVerdict::Go
    }
}

/// What a reservation came to.
enum Admission {
    Go(Attempt),
    Wait,
    Locked { retry_after_secs: i64 },
}

/// Asks the store for a lease on `limits`' keys; the attempt when admitted.
///
/// The `Attempt` is built here, on the blocking pool: if the request is dropped while
/// this runs, the attempt is dropped with the job's output and its lease released.
fn reserve(
    store: Arc<dyn Store>,
    signals: Arc<AttemptSignals>,
    limits: &[(String, u32)],
    window_secs: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Admission, crate::storage::StoreError> {
    let lease = Lease {
        id: LeaseId::random(),
        keys: limits.iter().map(|(k, _)| k.clone()).collect(),
        window_secs,
        now,
        ttl: LEASE,
    };
    let reservation = store.reserve_attempt(&lease, &|loads| {
        verdict(limits, loads) == LockoutVerdict::Go
    })?;
    if !reservation.leased {
        return Ok(match verdict(limits, &reservation.loads) {
            LockoutVerdict::Locked { retry_after_secs } => Admission::Locked { retry_after_secs },
            LockoutVerdict::Wait | LockoutVerdict::Go => Admission::Wait,
        });
    }
    let own_failures = reservation.loads.first().map_or(0, |l| l.stored.failures);
    Ok(Admission::Go(Attempt {
        store,
        signals,
        start_by: std::time::Instant::now() + START_CHECK_WITHIN,
        lease: lease.id,
        keys: lease.keys,
        own_failures,
        settled: false,
    }))
}

/// One admitted password check, holding its lease. Dropping it without a verdict (an
/// error, a cancelled request) releases the lease and counts nothing.
pub struct Attempt {
    store: Arc<dyn Store>,
    signals: Arc<AttemptSignals>,
    /// When a hashing thread must have taken up the check (see `START_CHECK_WITHIN`).
    start_by: std::time::Instant,
    lease: LeaseId,
    /// The key of the account (email or session) first, then the IP key, if any.
    keys: Vec<String>,
    own_failures: u32,
    /// The store has been asked to end the lease (it may have failed to: then the
    /// lease expires by itself).
    settled: bool,
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.settled {
            let (store, lease) = (Arc::clone(&self.store), self.lease);
            let release = move || {
                if let Err(e) = store.settle_attempt(lease, Settle::Abandoned) {
                    tracing::warn!(error = %e, "could not release a login lease; it expires by itself");
                }
            };
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => drop(runtime.spawn_blocking(release)),
                Err(_) => release(),
            }
        }
        self.signals.resolved.notify_waiters();
    }
}

impl Attempt {
    /// Verifies `password` against `phc` (the dummy hash for `None`) while this lease
    /// covers it: a check still queued at `start_by` is refused with 503 and not run,
    /// and dropping the attempt then releases its lease uncounted.
    pub async fn verify(
        &self,
        state: &AppState,
        password: String,
        phc: Option<String>,
    ) -> Result<bool, ServiceError> {
        let verified = state
            .hasher
            .verify_by(password, phc, Some(self.start_by))
            .await;
        if matches!(verified, Err(crate::crypto::password::HashError::TooLate)) {
            state.metrics.login("check_too_late");
        }
        Ok(verified?)
    }

    /// The password was wrong (or the account disabled): one failure on every key,
    /// stored as the lease ends.
    pub async fn failed(self, state: &AppState) -> Result<(), ServiceError> {
        let window_secs = state.policy.lockout.window.as_secs() as i64;
        let now = state.now();
        state
            .db(move |_| self.record_failure(window_secs, now))
            .await
    }

    /// `failed`, on the blocking pool. `self` drops after the write, so the waiters it
    /// wakes see the failure.
    fn record_failure(
        mut self,
        window_secs: i64,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), crate::storage::StoreError> {
        self.settled = true;
        self.store.settle_attempt(
            self.lease,
            Settle::Failed {
                keys: &self.keys,
                window_secs,
                now,
            },
        )
    }

    /// The key whose failures a right password forgives, when it has any, and the lease
    /// to end: the login hands both to the transaction that opens its family. The IP's
    /// failures stay: one account's success says nothing of the guesses at others.
    pub fn settled_by_login(&self) -> (Option<String>, LeaseId) {
        (
            (self.own_failures > 0).then(|| self.keys[0].clone()),
            self.lease,
        )
    }

    /// The family opened and ended the lease with it.
    pub fn opened(mut self) {
        self.settled = true;
    }

    /// The password was right: the key's earlier failures are forgiven as the lease ends.
    pub async fn succeeded(mut self, state: &AppState) -> Result<(), ServiceError> {
        self.settled = true;
        let lease = self.lease;
        let forgive = (self.own_failures > 0).then(|| self.keys[0].clone());
        state
            .db(move |s| {
                let _attempt = self;
                s.settle_attempt(
                    lease,
                    Settle::Succeeded {
                        forgive: forgive.as_deref(),
                    },
                )
            })
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
    let lockout = state.policy.lockout;
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
        state.policy.lockout.max_failures,
    )];
    let refused = AuditEvent {
        family_id: Some(session),
        ..event(state, AuditKind::LoginLocked, Some(user), meta, "refused")
    };
    admit(state, limits, refused).await
}

/// Admits a check of a service client's secret: counted against the client id (when the
/// presented one has the form of one) and the caller's address, each with the per-IP
/// limit, since a service retries harder than a person and a stranger's guesses at its
/// id must not lock it out as quickly as an email.
pub async fn begin_client_check(
    state: &AppState,
    client: Option<crate::domain::ClientId>,
    meta: &ClientMeta,
) -> Result<Attempt, ServiceError> {
    let per_ip = state.policy.lockout.max_failures_per_ip;
    let mut limits = Vec::with_capacity(2);
    if let Some(id) = client {
        limits.push((format!("client:{id}"), per_ip));
    }
    limits.push((
        ip_attempt_key(meta.ip_bucket.as_deref().unwrap_or("unknown")),
        per_ip,
    ));
    let refused = event(state, AuditKind::ClientAuthLocked, None, meta, "refused");
    admit(state, limits, refused).await
}

/// Admits one check of a passkey login: counted against the credential (when the
/// response names one) with the per-account limit, and against the caller's address.
pub async fn begin_passkey_check(
    state: &AppState,
    credential_key: Option<String>,
    meta: &ClientMeta,
) -> Result<Attempt, ServiceError> {
    let lockout = state.policy.lockout;
    let limits: Vec<(String, u32)> = credential_key
        .map(|key| (key, lockout.max_failures))
        .into_iter()
        .chain(std::iter::once((
            ip_attempt_key(meta.ip_bucket.as_deref().unwrap_or("unknown")),
            lockout.max_failures_per_ip,
        )))
        .collect();
    let refused = event(state, AuditKind::LoginLocked, None, meta, "refused");
    admit(state, limits, refused).await
}

/// The lockout key of a user's wrong second-factor codes: a counter of its own, apart
/// from wrong passwords (one kind of failure must not lock out the other).
pub fn mfa_user_key(user: crate::domain::UserId) -> String {
    format!("mfa:user:{user}")
}

/// Admits one check of a second-factor code for `user`: counted per user
/// (`GATEHOUSE_MFA_MAX_FAILURES` per window) and, for a login, per `mfa_token` too
/// (`token`: its key and limit). Checks in flight count like passwords' do, so parallel
/// guesses over any number of tokens and replicas are checked at most the limit's worth.
pub async fn begin_mfa_check(
    state: &AppState,
    user: &User,
    token: Option<(String, u32)>,
    meta: &ClientMeta,
) -> Result<Attempt, ServiceError> {
    let limits: Vec<(String, u32)> =
        std::iter::once((mfa_user_key(user.id), state.policy.mfa.max_failures))
            .chain(token)
            .collect();
    let refused = event(state, AuditKind::MfaLocked, Some(user), meta, "refused");
    admit(state, limits, refused).await
}

async fn admit(
    state: &AppState,
    limits: Vec<(String, u32)>,
    refused: AuditEvent,
) -> Result<Attempt, ServiceError> {
    let window = state.policy.lockout.window.as_secs() as i64;
    let deadline = tokio::time::Instant::now() + WAIT_FOR_IN_FLIGHT;
    loop {
        // Registered before the check, so a check resolving in between still wakes us.
        let resolved = state.attempts.resolved.notified();
        tokio::pin!(resolved);
        resolved.as_mut().enable();
        let (store, signals) = (Arc::clone(&state.store), Arc::clone(&state.attempts));
        let job_limits = limits.clone();
        let now = state.now();
        let admission = state
            .db(move |_| reserve(store, signals, &job_limits, window, now))
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
                let next = (tokio::time::Instant::now() + POLL).min(deadline);
                tokio::select! {
                    () = &mut resolved => {}
                    () = tokio::time::sleep_until(next) => {}
                }
                if tokio::time::Instant::now() >= deadline {
                    return Err(ServiceError::unavailable(
                        "timed out waiting for login attempts in flight",
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
    use crate::storage::AttemptCount;
    use crate::storage::sqlite::{SqliteStore, Synchronous};

    const WINDOW: i64 = 900;
    const EMAIL: &str = "email:victim@example.com";
    const IP: &str = "ip:192.0.2.7";

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).expect("timestamp")
    }

    /// A real store in a temporary directory (kept alive by the returned guard).
    fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("gatehouse.db"), Synchronous::Normal, 1)
            .expect("open the store");
        (Arc::new(store), dir)
    }

    fn limits(email_max: u32, ip_max: u32) -> Vec<(String, u32)> {
        vec![(EMAIL.into(), email_max), (IP.into(), ip_max)]
    }

    fn fail(store: &Arc<dyn Store>, keys: &[&str], times: u32, now: DateTime<Utc>) {
        let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
        for _ in 0..times {
            let how = Settle::Failed {
                keys: &keys,
                window_secs: WINDOW,
                now,
            };
            store
                .settle_attempt(LeaseId::random(), how)
                .expect("record a failure");
        }
    }

    fn ask(store: &Arc<dyn Store>, limits: &[(String, u32)], now: DateTime<Utc>) -> Admission {
        reserve(Arc::clone(store), Arc::default(), limits, WINDOW, now).expect("reserve")
    }

    fn go(store: &Arc<dyn Store>, limits: &[(String, u32)], now: DateTime<Utc>) -> Attempt {
        match ask(store, limits, now) {
            Admission::Go(attempt) => attempt,
            Admission::Wait => panic!("told to wait, expected to go"),
            Admission::Locked { retry_after_secs } => {
                panic!("locked for {retry_after_secs}s, expected to go")
            }
        }
    }

    /// What a refused reservation was told, as the rule's verdict.
    fn ruled(
        store: &Arc<dyn Store>,
        limits: &[(String, u32)],
        now: DateTime<Utc>,
    ) -> LockoutVerdict {
        match ask(store, limits, now) {
            Admission::Go(_) => panic!("admitted, expected a refusal"),
            Admission::Wait => LockoutVerdict::Wait,
            Admission::Locked { retry_after_secs } => LockoutVerdict::Locked { retry_after_secs },
        }
    }

    /// In flight on `key` as a reservation sees it (an unlimited probe, never leased).
    fn in_flight(store: &Arc<dyn Store>, key: &str, now: DateTime<Utc>) -> u32 {
        let lease = Lease {
            id: LeaseId::random(),
            keys: vec![key.into()],
            window_secs: WINDOW,
            now,
            ttl: chrono::Duration::zero(),
        };
        store
            .reserve_attempt(&lease, &|_| false)
            .expect("probe")
            .loads[0]
            .in_flight
    }

    #[test]
    fn an_admitted_attempt_is_in_flight_until_dropped_and_a_drop_counts_no_failure() {
        let (store, _dir) = store();
        let attempt = go(&store, &limits(5, 20), t(0));
        assert_eq!(
            (in_flight(&store, EMAIL, t(0)), in_flight(&store, IP, t(0))),
            (1, 1)
        );

        drop(attempt);
        assert_eq!(
            (in_flight(&store, EMAIL, t(0)), in_flight(&store, IP, t(0))),
            (0, 0)
        );
        let counts = store
            .login_failures(&[EMAIL.into(), IP.into()], WINDOW, t(0))
            .expect("counts");
        assert!(counts.iter().all(|c| c.failures == 0));
    }

    #[test]
    fn an_attempt_that_could_be_one_too_many_waits_for_the_checks_in_flight() {
        let (store, _dir) = store();
        fail(&store, &[EMAIL], 3, t(0));

        // 3 stored + 0 in flight < 5; 3 + 1 < 5; 3 + 2 = 5 could be the sixth guess.
        let first = go(&store, &limits(5, 20), t(1));
        assert_eq!(first.own_failures, 3);
        let second = go(&store, &limits(5, 20), t(1));
        assert_eq!(ruled(&store, &limits(5, 20), t(1)), LockoutVerdict::Wait);

        drop(second);
        go(&store, &limits(5, 20), t(1));
        drop(first);
    }

    #[test]
    fn a_failure_is_stored_as_its_lease_ends() {
        let (store, _dir) = store();
        fail(&store, &[EMAIL], 3, t(0));
        let first = go(&store, &limits(5, 20), t(1));
        let second = go(&store, &limits(5, 20), t(1));
        first.record_failure(WINDOW, t(1)).expect("fail");
        // 4 stored + 1 in flight: still a wait, never a slot.
        assert_eq!(ruled(&store, &limits(5, 20), t(1)), LockoutVerdict::Wait);
        second.record_failure(WINDOW, t(1)).expect("fail");
        assert!(matches!(
            ruled(&store, &limits(5, 20), t(1)),
            LockoutVerdict::Locked { .. }
        ));
        assert_eq!(in_flight(&store, EMAIL, t(1)), 0);
    }

    #[test]
    fn the_ip_limit_holds_across_accounts() {
        let (store, _dir) = store();
        let other = vec![
            ("email:other@example.com".to_owned(), 5),
            (IP.to_owned(), 2),
        ];
        let _first = go(&store, &limits(5, 2), t(0));
        let _second = go(&store, &other, t(0));
        assert_eq!(ruled(&store, &limits(5, 2), t(0)), LockoutVerdict::Wait);
    }

    #[test]
    fn failures_at_the_limit_lock_for_the_rest_of_their_window_then_expire() {
        let (store, _dir) = store();
        fail(&store, &[EMAIL], 5, t(0));
        assert_eq!(
            ruled(&store, &limits(5, 20), t(100)),
            LockoutVerdict::Locked {
                retry_after_secs: WINDOW - 100
            }
        );
        go(&store, &limits(5, 20), t(WINDOW));
    }

    #[test]
    fn a_lock_wins_over_a_wait_and_the_longest_lock_is_reported() {
        let load = |failures, window_left_secs, in_flight| KeyLoad {
            stored: AttemptCount {
                failures,
                window_left_secs,
            },
            in_flight,
        };
        let limits = limits(5, 5);
        assert_eq!(
            verdict(&limits, &[load(4, 10, 1), load(5, 30, 0)]),
            LockoutVerdict::Locked {
                retry_after_secs: 30
            }
        );
        assert_eq!(
            verdict(&limits, &[load(5, 40, 0), load(6, 30, 0)]),
            LockoutVerdict::Locked {
                retry_after_secs: 40
            }
        );
        assert_eq!(
            verdict(&limits, &[load(4, 10, 1), load(0, 0, 0)]),
            LockoutVerdict::Wait
        );
        assert_eq!(
            verdict(&limits, &[load(3, 10, 1), load(0, 0, 4)]),
            LockoutVerdict::Go
        );
    }

    /// A process that died holding a lease: the lease counts until it expires, then not.
    #[test]
    fn an_expired_lease_stops_counting() {
        let (store, _dir) = store();
        let held = go(&store, &limits(1, 20), t(0));
        std::mem::forget(held);
        assert_eq!(ruled(&store, &limits(1, 20), t(1)), LockoutVerdict::Wait);
        let later = t(0) + LEASE;
        go(&store, &limits(1, 20), later);
    }

    /// Many threads guessing on one key through the real store: exactly the limit is
    /// admitted, however the reservations interleave with failures landing.
    #[test]
    fn concurrent_guesses_from_many_threads_stop_at_the_limit() {
        const THREADS: usize = 8;
        const MAX: u32 = 5;
        let (store, _dir) = store();
        let admitted = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                scope.spawn(|| {
                    // Bounded, so a bug that never locks fails instead of hanging.
                    for _ in 0..100_000 {
                        match ask(&store, &limits(MAX, 1000), t(0)) {
                            Admission::Go(attempt) => {
                                admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                                attempt.record_failure(WINDOW, t(0)).expect("fail");
                            }
                            Admission::Locked { .. } => return,
                            Admission::Wait => std::thread::yield_now(),
                        }
                    }
                });
            }
        });
        assert_eq!(admitted.into_inner(), MAX);
    }
}
