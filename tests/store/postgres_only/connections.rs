//! The pool's connections: replaced when the server killed them, opened and closed
//! inside an async runtime.

use super::*;

/// A connection killed while it idled in the pool (a server restart, a failover, an
/// operator's `pg_terminate_backend`) is found at checkout and replaced before any
/// statement is sent on it: the write that comes next succeeds, on a fresh connection,
/// without a restart of gatehouse. (A connection killed under a statement in flight is
/// a 503 for a write: tests/reliability/pg_faults.rs.)
#[test]
fn killed_connections_are_replaced_before_use() {
    use gatehouse::domain::{Email, Role, UserId};
    use gatehouse::storage::NewUser;

    let Some(db) = TestDatabase::new("killed_connections_are_replaced_before_use") else {
        return;
    };
    let store = storage::open(&DatabaseSettings::Postgres {
        url: Box::new(db.url()),
        pool_size: 1,
        connect_timeout: Duration::from_secs(5),
        start_timeout: Duration::ZERO,
        prepared_statements: true,
    })
    .expect("open");
    let mut admin = admin_client(&db.url()).expect("connect");
    let kill = |admin: &mut postgres::Client| {
        let killed = admin
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = $1 AND pid <> pg_backend_pid()",
                &[&db.name],
            )
            .expect("terminate");
        assert_eq!(killed.len(), 1, "the pool's one connection");
        // The server closes the socket after its FATAL message.
        std::thread::sleep(Duration::from_millis(200));
    };
    let new_user = |address: &str| {
        store.create_user(NewUser {
            id: UserId::random(),
            email: &Email::parse(address).expect("email"),
            password_hash: "x",
            role: Role::User,
            now: chrono::Utc::now(),
        })
    };
    new_user("before@example.com").expect("a write before");

    kill(&mut admin);
    new_user("after@example.com").expect("a write after the kill gets a new connection");

    kill(&mut admin);
    // A read changes nothing, so it is retried on a fresh connection at once.
    store.ping().expect("a read survives a killed connection");
    assert!(
        store
            .account_by_email(&Email::parse("after@example.com").expect("email"))
            .expect("read")
            .is_some()
    );
}

/// The server opens its store inside actix's runtime and drops it there at shutdown;
/// the synchronous driver must neither start nor close its own runtime on that thread.
#[test]
fn the_store_opens_and_closes_inside_an_async_runtime() {
    let Some(db) = TestDatabase::new("the_store_opens_and_closes_inside_an_async_runtime") else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = storage::open(&DatabaseSettings::Postgres {
            url: Box::new(db.url()),
            pool_size: 2,
            connect_timeout: Duration::from_secs(5),
            start_timeout: Duration::ZERO,
            prepared_statements: true,
        })
        .expect("open inside a runtime");
        let on_pool = std::sync::Arc::clone(&store);
        tokio::task::spawn_blocking(move || on_pool.ping())
            .await
            .expect("join")
            .expect("ping on the blocking pool");
        drop(store);
    });
}
