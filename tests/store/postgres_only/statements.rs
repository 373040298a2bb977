//! Statements prepared once per connection, and prepared again when the server forgot
//! them.

use super::*;

/// A store on `db` with a pool of one connection, so that every statement it runs and
/// every look at the session (`with_pooled_client`) share one server session.
fn one_connection(db: &TestDatabase, prepared: bool) -> gatehouse::storage::postgres::PgStore {
    use gatehouse::storage::Store as _;
    let store = gatehouse::storage::postgres::PgStore::connect(
        &db.url(),
        1,
        Duration::from_secs(5),
        Duration::ZERO,
    )
    .expect("connect")
    .prepared_statements(prepared);
    store.migrate().expect("migrate");
    store
}

/// The session's prepared statements: (text, when prepared), by text.
fn prepared_in_session(
    store: &gatehouse::storage::postgres::PgStore,
) -> Vec<(String, chrono::DateTime<chrono::Utc>)> {
    store
        .with_pooled_client(|c| {
            c.query_typed(
                // Typed: the driver prepares an untyped text under a name of its own,
                // which would list this very query.
                "SELECT statement, prepare_time FROM pg_prepared_statements ORDER BY statement",
                &[],
            )
        })
        .expect("a pooled connection")
        .expect("pg_prepared_statements")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn lease_on(keys: &[&str]) -> gatehouse::storage::Lease {
    let now = chrono::Utc::now();
    gatehouse::storage::Lease {
        id: gatehouse::storage::LeaseId::random(),
        keys: keys.iter().map(|k| (*k).to_owned()).collect(),
        window_secs: 600,
        now,
        ttl: chrono::Duration::seconds(60),
    }
}

/// Each statement is prepared on its connection's first call and run by name after: one
/// prepared statement per text in the server session, prepared once whatever the calls.
/// Off, the session holds none.
#[test]
fn statements_are_prepared_once_per_connection_and_reused() {
    use gatehouse::domain::{Email, Role, UserId};
    use gatehouse::storage::{NewUser, Store as _};

    for prepared in [true, false] {
        let Some(db) = TestDatabase::new("statements_are_prepared_once") else {
            return;
        };
        let store = one_connection(&db, prepared);
        let email = Email::parse("prepared@example.com").expect("email");
        store
            .create_user(NewUser {
                id: UserId::random(),
                email: &email,
                password_hash: "x",
                role: Role::User,
                now: chrono::Utc::now(),
            })
            .expect("user");
        store
            .account_by_email(&email)
            .expect("read")
            .expect("found");
        store.find_refresh_token([7; 32]).expect("find");
        let after_first = prepared_in_session(&store);
        if !prepared {
            assert_eq!(after_first, [], "off: nothing prepared");
            continue;
        }
        assert_eq!(after_first.len(), 3, "one per text: {after_first:?}");
        for (text, _) in &after_first {
            assert!(
                text.contains("INSERT INTO users")
                    || text.contains("WHERE u.email = $1")
                    || text.contains("FROM refresh_tokens t"),
                "an unexpected statement: {text}"
            );
        }
        // Sleeps so that a statement prepared again would show a later prepare_time.
        std::thread::sleep(Duration::from_millis(20));
        for _ in 0..5 {
            store
                .account_by_email(&email)
                .expect("read")
                .expect("found");
            store.find_refresh_token([7; 32]).expect("find");
        }
        assert_eq!(
            prepared_in_session(&store),
            after_first,
            "the same statements, not prepared again"
        );
    }
}

/// A server that dropped the session's statements (`DEALLOCATE ALL`; a pooler's
/// `DISCARD ALL` does the same) costs no request an error: a statement outside a
/// transaction is prepared again and run, a transaction runs again from its start.
#[test]
fn statements_the_server_forgot_are_prepared_again() {
    use gatehouse::domain::{Email, Role, UserId};
    use gatehouse::storage::{NewUser, Store as _};

    let Some(db) = TestDatabase::new("statements_the_server_forgot") else {
        return;
    };
    let store = one_connection(&db, true);
    let forget = || {
        store
            .with_pooled_client(|c| c.batch_execute("DEALLOCATE ALL"))
            .expect("a pooled connection")
            .expect("DEALLOCATE ALL");
        assert_eq!(prepared_in_session(&store), [], "forgotten");
    };
    let email = Email::parse("forgot@example.com").expect("email");
    let user = store
        .create_user(NewUser {
            id: UserId::random(),
            email: &email,
            password_hash: "x",
            role: Role::User,
            now: chrono::Utc::now(),
        })
        .expect("user");
    store
        .account_by_email(&email)
        .expect("read")
        .expect("found");
    assert!(
        store
            .reserve_attempt(&lease_on(&["a"]), &|_| true)
            .expect("reserve")
            .leased
    );

    forget();
    let found = store
        .account_by_email(&email)
        .expect("a read after DEALLOCATE ALL");
    assert_eq!(found.map(|a| a.user.id), Some(user.id));
    assert!(
        !prepared_in_session(&store).is_empty(),
        "prepared again, not sent unnamed from now on"
    );

    // The reservation's statements were dropped with the rest: cached again first.
    assert!(
        store
            .reserve_attempt(&lease_on(&["b"]), &|_| true)
            .expect("reserve")
            .leased
    );
    forget();
    // The first statement of the reservation's transaction fails and aborts it.
    let reserved = store
        .reserve_attempt(&lease_on(&["c"]), &|_| true)
        .expect("a transaction after DEALLOCATE ALL");
    assert!(reserved.leased);
    assert_eq!(reserved.loads.len(), 1);
    assert_eq!(
        reserved.loads[0].in_flight, 0,
        "no lease from the aborted attempt"
    );
}
