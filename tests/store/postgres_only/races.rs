//! Races the server's locks decide: reservations under any default isolation, a
//! disable or a deletion waiting for a login, leases by the server's clock.

use super::*;

/// A store on `db` with room for the threads of a race.
fn store_on(db: &TestDatabase) -> std::sync::Arc<dyn gatehouse::storage::Store> {
    storage::open(&DatabaseSettings::Postgres {
        url: Box::new(db.url()),
        pool_size: 8,
        connect_timeout: Duration::from_secs(10),
        start_timeout: Duration::ZERO,
        prepared_statements: true,
    })
    .expect("open the store")
}

/// The lockout's reservation reads the leases committed while it waited for its lock,
/// whatever isolation level the role or the database would give a transaction: forty
/// guessers on one key are admitted exactly the limit, five, under both defaults that
/// would otherwise read from before the wait.
#[test]
fn reservations_hold_the_limit_whatever_the_databases_default_isolation() {
    for level in ["repeatable read", "serializable"] {
        let Some(db) = TestDatabase::new("reservations_whatever_isolation") else {
            return;
        };
        let mut admin = admin_client(&db.url()).expect("connect");
        admin
            .batch_execute(&format!(
                "ALTER DATABASE \"{}\" SET default_transaction_isolation TO '{level}'",
                db.name
            ))
            .expect("set the default");
        let mut fresh = admin_client(&db.url()).expect("connect");
        let seen: String = fresh
            .query_one("SHOW default_transaction_isolation", &[])
            .and_then(|r| r.try_get(0))
            .expect("show");
        assert_eq!(seen, level, "the database default applies to new sessions");
        let store = store_on(&db);
        crate::cases::reservation_race(&store, 40);
    }
}

/// Waits until `n` sessions of `db` wait for a lock: the sessions under test have reached
/// the statement the test holds them at.
fn until_waiting_for_locks(observer: &mut postgres::Client, db: &TestDatabase, n: i64) {
    for _ in 0..500 {
        let waiting: i64 = observer
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = $1 AND wait_event_type = 'Lock'",
                &[&db.name],
            )
            .and_then(|r| r.try_get(0))
            .expect("pg_stat_activity");
        if waiting >= n {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{n} sessions never waited for a lock");
}

/// Holds a login inside its transaction (after it locked the user's row and inserted
/// its family, at the forgiving of its email's failures, whose row the test locks),
/// runs `act` on the user while the login waits, then lets the login commit: `act`
/// waits for it and must see what it wrote.
fn with_a_login_held_open(
    test: &str,
    act: impl FnOnce(&std::sync::Arc<dyn gatehouse::storage::Store>, &gatehouse::domain::User) + Send,
    check: impl FnOnce(
        &std::sync::Arc<dyn gatehouse::storage::Store>,
        &gatehouse::domain::User,
        (
            gatehouse::domain::FamilyId,
            gatehouse::storage::TokenHashBytes,
        ),
    ),
) {
    use gatehouse::storage::{LeaseId, Settle, email_attempt_key};
    let Some(db) = TestDatabase::new(test) else {
        return;
    };
    let store = store_on(&db);
    let u = crate::cases::user(&store, "held@example.com");
    let key = email_attempt_key(&u.email);
    let failed = Settle::Failed {
        keys: std::slice::from_ref(&key),
        window_secs: 600,
        now: chrono::Utc::now(),
    };
    store
        .settle_attempt(LeaseId::random(), failed)
        .expect("a failure to forgive");
    let family = gatehouse::storage::NewFamily {
        forgives: Some(key.clone()),
        ..crate::cases::new_family(u.id, crate::cases::token(7), 0, chrono::Utc::now())
    };
    let opened = (family.id, family.first_token);

    let mut holder = admin_client(&db.url()).expect("connect");
    let mut observer = admin_client(&db.url()).expect("connect");
    let mut hold = holder.transaction().expect("begin");
    hold.query(
        "SELECT 1 FROM login_attempts WHERE key = $1 FOR UPDATE",
        &[&key],
    )
    .expect("lock the row the login forgives");
    std::thread::scope(|scope| {
        let store = &store;
        let login = scope.spawn(move || store.create_family(family).expect("login"));
        until_waiting_for_locks(&mut observer, &db, 1);
        let u = &u;
        let acting = scope.spawn(move || act(store, u));
        until_waiting_for_locks(&mut observer, &db, 2);
        hold.rollback().expect("let the login go");
        assert!(
            login.join().expect("login thread"),
            "the login held the row first"
        );
        acting.join().expect("act thread");
    });
    check(&store, &u, opened);
}

#[test]
fn a_disable_waiting_for_a_login_revokes_the_family_it_opened() {
    with_a_login_held_open(
        "disable_waits_for_login",
        |store, u| {
            store
                .update_user(u.id, None, Some(true), chrono::Utc::now())
                .expect("disable")
                .expect("found");
        },
        |store, u, (_, first)| {
            let token = store
                .find_refresh_token(first)
                .expect("read")
                .expect("the login's token");
            assert!(token.family_revoked, "the login's family stayed live");
            assert!(
                store
                    .list_sessions(u.id, false, chrono::Utc::now())
                    .expect("sessions")
                    .is_empty()
            );
        },
    );
}

#[test]
fn a_deletion_waiting_for_a_login_scrubs_the_event_it_wrote() {
    with_a_login_held_open(
        "delete_waits_for_login",
        |store, u| {
            assert!(
                store
                    .delete_user(u.id, &u.email, chrono::Utc::now())
                    .expect("delete")
            )
        },
        |store, u, (family, first)| {
            let events = crate::cases::audit_of(store, u.id);
            let opened: Vec<_> = events
                .iter()
                .filter(|e| e.family_id == Some(family))
                .collect();
            assert_eq!(opened.len(), 1, "the login's event is kept: {events:?}");
            assert_eq!(
                (&opened[0].ip, &opened[0].user_agent, &opened[0].detail),
                (&None, &None, &None),
                "the login's event keeps what identifies the person"
            );
            assert!(store.find_refresh_token(first).expect("read").is_none());
        },
    );
}

/// A lease's life is the server's to measure: a replica whose clock runs an hour ahead
/// or behind sees the lease of another as live, and neither its start-up release nor
/// its pruning deletes it.
#[test]
fn leases_live_by_the_servers_clock_whatever_a_replicas_clock_says() {
    use chrono::Duration as Days;
    use gatehouse::storage::{Lease, LeaseId};
    let Some(db) = TestDatabase::new("leases_by_the_servers_clock") else {
        return;
    };
    let store = store_on(&db);
    let keys = vec!["email:skewed@example.com".to_owned()];
    let now = chrono::Utc::now();
    let lease = |at| Lease {
        id: LeaseId::random(),
        keys: keys.clone(),
        window_secs: 600,
        now: at,
        ttl: Days::seconds(60),
    };
    assert!(
        store
            .reserve_attempt(&lease(now), &|_| true)
            .expect("reserve")
            .leased
    );
    let in_flight = |at| {
        store
            .reserve_attempt(&lease(at), &|_| false)
            .expect("probe")
            .loads[0]
            .in_flight
    };
    for skew in [Days::hours(1), Days::hours(-1), Days::days(3)] {
        assert_eq!(
            in_flight(now + skew),
            1,
            "a replica {skew} off sees the lease"
        );
    }
    store.release_orphaned_leases().expect("a replica's start");
    store
        .prune(now + Days::days(3), 600, now - Days::days(90))
        .expect("a skewed replica's prune");
    assert_eq!(in_flight(now + Days::hours(1)), 1, "the lease survived");
}
