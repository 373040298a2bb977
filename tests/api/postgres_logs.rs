//! The real binary's log on PostgreSQL: what the server says to the client (NOTICEs)
//! is not news for the operator.

use crate::kit::pgdb::TestDatabase;
use crate::kit::process::Binary;

#[tokio::test]
async fn a_restart_logs_no_postgresql_notice_at_info() {
    let Some(db) = TestDatabase::new("pg_notices") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let binary = Binary::in_dir(dir.path())
        .on_postgres(&db.url_text())
        .with("RUST_LOG", "info");
    // The first start creates the schema; the second finds every table there.
    binary.start().await.stop_and_collect().await;
    let second = binary.start().await.stop_and_collect().await;
    assert!(
        second.contains("gatehouse listening"),
        "INFO lines are logged:\n{second}"
    );
    let notices: Vec<&str> = second
        .lines()
        .filter(|l| l.contains("already exists"))
        .collect();
    assert!(
        notices.is_empty(),
        "PostgreSQL's NOTICEs are logged at INFO:\n{}",
        notices.join("\n")
    );
    // Not lost: at debug they are there, so the search above looks for the right words.
    let debug = binary
        .clone()
        .with("RUST_LOG", "gatehouse=debug")
        .start()
        .await
        .stop_and_collect()
        .await;
    assert!(
        debug
            .lines()
            .any(|l| l.contains("DEBUG") && l.contains("\"schema_migrations\" already exists")),
        "no NOTICE at debug level:\n{debug}"
    );
}

/// Runs `sql` on the test server as its admin (off the async runtime: the synchronous
/// client drives a runtime of its own).
async fn admin_sql(sql: String) {
    tokio::task::spawn_blocking(move || {
        let admin =
            gatehouse::storage::postgres::PostgresUrl::parse(&crate::kit::pgdb::server_url())
                .expect("the test server's URL");
        let mut client = crate::kit::pgdb::admin_client(&admin).expect("an admin connection");
        client
            .batch_execute(&sql)
            .unwrap_or_else(|e| panic!("`{sql}`: {e}"));
    })
    .await
    .expect("the admin job");
}

/// `default_transaction_read_only` on the database, and the server sessions gatehouse
/// holds ended so that its next ones take it: what a primary demoted under a replica
/// looks like from the outside.
async fn set_read_only(db: &TestDatabase, on: bool) {
    let name = &db.name;
    let setting = if on {
        "SET default_transaction_read_only = on"
    } else {
        "RESET default_transaction_read_only"
    };
    admin_sql(format!(
        "ALTER DATABASE \"{name}\" {setting};
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = '{name}' AND application_name = 'gatehouse';"
    ))
    .await;
}

/// Polls `/readyz` until it answers `want` (or 15 s pass): the status it ended on.
async fn readyz_becomes(server: &crate::kit::process::Server, want: u16) -> u16 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let status = server
            .client
            .get(server.url("/readyz"))
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0);
        if status == want || std::time::Instant::now() > deadline {
            return status;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A database that takes no writes is not ready, though it answers every read: a
/// replica that said ready there drew traffic it could only answer with 503. Ready
/// again by itself once the database takes writes, and the log says why it was not,
/// with the server's SQLSTATE and message.
#[tokio::test]
async fn readyz_is_503_while_the_database_is_read_only_and_200_again_by_itself() {
    let Some(db) = TestDatabase::new("pg_read_only") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let binary = Binary::in_dir(dir.path())
        .on_postgres(&db.url_text())
        .with("GATEHOUSE_DB_POOL_SIZE", "2");
    let server = binary.start().await;
    let signup = |n: u32| {
        let body = serde_json::json!({
            "email": format!("read-only-{n}@example.com"),
            "password": crate::kit::password::PASSWORD,
        });
        let server = &server;
        async move { server.post_json("/v1/signup", &body).await }
    };
    assert_eq!(signup(1).await.0, 201, "a signup before");
    assert_eq!(readyz_becomes(&server, 200).await, 200);

    set_read_only(&db, true).await;
    // Past the pool's idle check, so the sessions that were ended are found and replaced
    // (their 57P01 is not the point here); every new one is read-only.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for _ in 0..3 {
        assert_eq!(
            readyz_becomes(&server, 503).await,
            503,
            "/readyz on a read-only database"
        );
    }
    for n in 2..5 {
        let (status, body) = signup(n).await;
        assert_eq!(status, 503, "a write on a read-only database: {body}");
        assert_eq!(body["error"], "service_unavailable");
    }

    set_read_only(&db, false).await;
    assert_eq!(
        readyz_becomes(&server, 200).await,
        200,
        "/readyz once the database takes writes again, without a restart"
    );
    assert_eq!(signup(3).await.0, 201, "a signup after");

    let log = server.stop_and_collect().await;
    let not_ready: Vec<&str> = log.lines().filter(|l| l.contains("not ready")).collect();
    assert!(
        not_ready
            .iter()
            .any(|l| l.contains("transaction_read_only")),
        "no readiness line names the read-only database:\n{log}"
    );
    let refused_write: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("answering 503"))
        .collect();
    assert!(
        refused_write
            .iter()
            .any(|l| l.contains("25006") && l.contains("read-only transaction")),
        "the refused write's line lacks the SQLSTATE and the server's message:\n{log}"
    );
}
