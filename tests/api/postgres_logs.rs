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
