//! Login lockout: failure windows, reservations and their leases.

use super::*;

pub fn lockout_windows_count_expire_and_clear(store: &S) {
    const WINDOW: i64 = 600;
    let keys = ["email:a@example.com".to_owned(), "ip:192.0.2.9".to_owned()];
    let unknown = ["email:none@example.com".to_owned()];
    assert_eq!(
        store.login_failures(&unknown, WINDOW, t0()).expect("read"),
        [AttemptCount::default()]
    );
    for s in 0..3 {
        fail(store, &keys, WINDOW, t0() + Duration::seconds(s));
    }
    let at = t0() + Duration::seconds(100);
    assert_eq!(
        store.login_failures(&keys, WINDOW, at).expect("read"),
        [AttemptCount {
            failures: 3,
            window_left_secs: 500
        }; 2],
        "a fixed window from the first failure"
    );
    // In `keys`' order, whatever the store's.
    let reversed = [keys[1].clone(), unknown[0].clone(), keys[0].clone()];
    let counts = store.login_failures(&reversed, WINDOW, at).expect("read");
    assert_eq!(
        counts.iter().map(|c| c.failures).collect::<Vec<_>>(),
        [3, 0, 3]
    );

    // The window ends: nothing counts, and the next failure opens a new window.
    let end = t0() + Duration::seconds(WINDOW);
    assert_eq!(
        store.login_failures(&keys, WINDOW, end).expect("read"),
        [AttemptCount::default(); 2]
    );
    fail(store, &keys[..1], WINDOW, end);
    assert_eq!(
        store
            .login_failures(&keys[..1], WINDOW, end + Duration::seconds(10))
            .expect("read"),
        [AttemptCount {
            failures: 1,
            window_left_secs: WINDOW - 10
        }]
    );

    store
        .settle_attempt(
            LeaseId::random(),
            Settle::Succeeded {
                forgive: Some(&keys[0]),
            },
        )
        .expect("clear");
    store
        .settle_attempt(
            LeaseId::random(),
            Settle::Succeeded {
                forgive: Some(&unknown[0]),
            },
        )
        .expect("clear a key never seen");
    let counts = store
        .login_failures(&keys, WINDOW, t0() + Duration::seconds(1))
        .expect("read");
    assert_eq!(counts[0], AttemptCount::default(), "cleared");
    assert_eq!(counts[1].failures, 3, "the other key keeps its failures");
}

pub fn concurrent_failures_are_all_counted(store: &S) {
    const THREADS: u32 = 8;
    const EACH: u32 = 5;
    let keys = ["email:busy@example.com".to_owned(), "ip:unknown".to_owned()];
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            let (store, keys) = (Arc::clone(store), keys.clone());
            scope.spawn(move || {
                for _ in 0..EACH {
                    fail(&store, &keys, 600, t0());
                }
            });
        }
    });
    let counts = store.login_failures(&keys, 600, t0()).expect("read");
    assert!(
        counts.iter().all(|c| c.failures == THREADS * EACH),
        "{counts:?}"
    );
}

fn lease(keys: &[String], now: DateTime<Utc>) -> Lease {
    Lease {
        id: LeaseId::random(),
        keys: keys.to_vec(),
        window_secs: 600,
        now,
        ttl: Duration::seconds(60),
    }
}

/// The lockout rule in its simplest form: room while failures plus checks in flight are
/// under `max` on every key.
fn room(max: u32) -> impl Fn(&[KeyLoad]) -> bool + Sync {
    move |loads: &[KeyLoad]| loads.iter().all(|l| l.stored.failures + l.in_flight < max)
}

/// Threads on their own connections reserving one key, each failing what it got: the
/// store's per-key lock admits exactly `MAX` checks, however they interleave.
pub fn reservations_from_many_connections_admit_exactly_the_limit(store: &S) {
    reservation_race(store, 12);
}

/// `THREADS` guessers on one key, each failing what it was admitted for: exactly `MAX`.
pub fn reservation_race(store: &S, threads: usize) {
    const MAX: u32 = 5;
    let keys = [
        "email:raced@example.com".to_owned(),
        "ip:192.0.2.99".to_owned(),
    ];
    let admitted = std::sync::atomic::AtomicU32::new(0);
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                barrier.wait();
                for _ in 0..100_000 {
                    let asked = lease(&keys, t0());
                    let r = store.reserve_attempt(&asked, &room(MAX)).expect("reserve");
                    if r.leased {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let how = Settle::Failed {
                            keys: &keys,
                            window_secs: 600,
                            now: t0(),
                        };
                        store.settle_attempt(asked.id, how).expect("settle");
                    } else if r.loads[0].stored.failures >= MAX {
                        return;
                    }
                }
            });
        }
    });
    assert_eq!(admitted.into_inner(), MAX);
    let counts = store.login_failures(&keys, 600, t0()).expect("read");
    assert!(counts.iter().all(|c| c.failures == MAX), "{counts:?}");
}

/// A lease counts while live, ends as its check is settled or its family opens, and
/// stops counting once expired; failures and forgiveness land with it.
pub fn leases_count_until_settled_opened_or_expired(store: &S) {
    let u = user(store, "leased@example.com");
    let keys = [email_attempt_key(&u.email), "ip:192.0.2.5".to_owned()];
    let in_flight = |store: &S, at: DateTime<Utc>| -> Vec<u32> {
        let probe = lease(&keys, at);
        let r = store.reserve_attempt(&probe, &|_| false).expect("probe");
        assert!(!r.leased);
        r.loads.iter().map(|l| l.in_flight).collect()
    };
    let take = |store: &S| -> LeaseId {
        let asked = lease(&keys, t0());
        assert!(
            store
                .reserve_attempt(&asked, &room(5))
                .expect("reserve")
                .leased
        );
        asked.id
    };

    let abandoned = take(store);
    let failed = take(store);
    assert_eq!(in_flight(store, t0()), [2, 2]);
    store
        .settle_attempt(abandoned, Settle::Abandoned)
        .expect("abandon");
    let how = Settle::Failed {
        keys: &keys,
        window_secs: 600,
        now: t0(),
    };
    store.settle_attempt(failed, how).expect("fail");
    assert_eq!(in_flight(store, t0()), [0, 0]);
    let counts = store.login_failures(&keys, 600, t0()).expect("read");
    assert_eq!(
        counts.iter().map(|c| c.failures).collect::<Vec<_>>(),
        [1, 1]
    );

    // A refused family leaves its lease (the login then settles it as failed)...
    let login = take(store);
    let stale = NewFamily {
        settles: Some(login),
        forgives: Some(keys[0].clone()),
        ..new_family(u.id, token(1), 9, t0())
    };
    assert!(!store.create_family(stale).expect("refused"));
    assert_eq!(in_flight(store, t0()), [1, 1]);
    // ...an opened one ends it and forgives the email, not the IP.
    let opened = NewFamily {
        settles: Some(login),
        forgives: Some(keys[0].clone()),
        ..new_family(u.id, token(2), 0, t0())
    };
    assert!(store.create_family(opened).expect("opened"));
    assert_eq!(in_flight(store, t0()), [0, 0]);
    let counts = store.login_failures(&keys, 600, t0()).expect("read");
    assert_eq!(
        counts.iter().map(|c| c.failures).collect::<Vec<_>>(),
        [0, 1]
    );

    let right = take(store);
    store
        .settle_attempt(right, Settle::Succeeded { forgive: None })
        .expect("succeed");
    assert_eq!(in_flight(store, t0()), [0, 0]);

    // A lease whose process died counts until it expires, and is released then. Its
    // life runs on the database's clock (the server's on PostgreSQL, the caller's on
    // SQLite), so the test lets both pass.
    let short = Lease {
        ttl: Duration::seconds(1),
        ..lease(&keys, t0())
    };
    assert!(
        store
            .reserve_attempt(&short, &room(5))
            .expect("reserve")
            .leased
    );
    assert_eq!(in_flight(store, t0()), [1, 1]);
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    assert_eq!(in_flight(store, t0() + Duration::seconds(1)), [0, 0]);
    store.release_orphaned_leases().expect("release");
    assert_eq!(in_flight(store, t0()), [0, 0], "expired leases are gone");
}
