//! What only a look inside the SQLite file can check, so these tests run on SQLite
//! whatever `GATEHOUSE_TEST_BACKEND` says. Each one has a backend-neutral sibling that
//! asserts what the `Store` can tell; these add what it cannot: that no table anywhere
//! holds a secret or a forgotten address, and that no token row exists outside the chain
//! of children the `Store` can walk. Keep this module to such checks.

use std::time::Duration;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    Backend, OTHER_PASSWORD, PASSWORD, TestApp, access_of, b64url_decode, refresh_of, sid_of,
    spawn_app_on, unique_email,
};

async fn spawn_on_sqlite() -> TestApp {
    spawn_app_on(Backend::Sqlite, |_| {}).await
}

/// A read-only connection to the app's database file.
fn open(app: &TestApp) -> rusqlite::Connection {
    let connection = rusqlite::Connection::open_with_flags(
        app.settings
            .storage
            .database
            .sqlite_path()
            .expect("a SQLite app"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .expect("failed to open the database read-only");
    connection
        .busy_timeout(Duration::from_secs(5))
        .expect("failed to set busy timeout");
    connection
}

/// Every text and blob cell of every table, with its table's name.
fn every_cell(app: &TestApp) -> Vec<(String, Vec<u8>)> {
    let db = open(app);
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(tables.iter().any(|t| t == "refresh_tokens"), "{tables:?}");
    let mut cells = Vec::new();
    for table in tables {
        let mut statement = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = statement.column_count();
        let mut rows = statement.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(bytes)
                    | rusqlite::types::ValueRef::Blob(bytes) => {
                        cells.push((table.clone(), bytes.to_vec()))
                    }
                    _ => {}
                }
            }
        }
    }
    cells
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// (rows, unspent rows) of `family` in `refresh_tokens`.
fn token_rows(app: &TestApp, family: &str) -> (i64, i64) {
    open(app)
        .query_row(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE spent_at IS NULL)
             FROM refresh_tokens WHERE family_id = ?1",
            [family],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap()
}

// refresh::refresh_tokens_are_stored_only_as_hashes finds the hashes through the store.
#[tokio::test]
async fn no_table_holds_a_refresh_token_in_plaintext() {
    let app = spawn_on_sqlite().await;
    let email = unique_email("plaintext");
    app.signup_ok(&email, PASSWORD).await;
    let tokens = app.login_ok(&email, PASSWORD).await;
    let rotated = app.refresh_ok(refresh_of(&tokens)).await;

    for (table, bytes) in every_cell(&app) {
        for token in [refresh_of(&tokens), refresh_of(&rotated)] {
            assert!(
                !contains(&bytes, token.as_bytes()) && !contains(&bytes, &b64url_decode(token)),
                "table {table} stores a refresh token in plaintext"
            );
        }
    }
}

// me::a_deleted_account_leaves_no_trace_of_its_email asks the store.
#[tokio::test]
async fn no_table_holds_a_deleted_users_email() {
    let app = spawn_on_sqlite().await;
    let email = unique_email("forget-me");
    let tokens = app.signup_ok(&email, PASSWORD).await;
    // A failed login leaves a lockout row for the address; a session has user agent and IP.
    let response = app.post_login(&email, OTHER_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app
        .delete_with_token(
            "/v1/me",
            access_of(&tokens),
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    for (table, bytes) in every_cell(&app) {
        assert!(
            !contains(&bytes, email.as_bytes()),
            "table {table} still holds the deleted user's email: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

// The refresh module walks each family's chain through the store (grace replays,
// concurrent refreshes with the grace on and off, rotations); these count the rows, so a
// child stored but linked to no parent would show too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rotations_replays_and_races_store_one_row_per_issued_token() {
    let app = spawn_on_sqlite().await;
    let email = unique_email("rows");
    app.signup_ok(&email, PASSWORD).await;
    let tokens = app.login_ok(&email, PASSWORD).await;
    let family = sid_of(&tokens);
    let r0 = refresh_of(&tokens).to_owned();

    let responses = join_all((0..10).map(|_| app.post_refresh(&r0))).await;
    assert!(responses.iter().all(|r| r.status() == StatusCode::OK));
    assert_eq!(
        token_rows(&app, &family),
        (2, 1),
        "ten concurrent refreshes"
    );

    app.advance(Duration::from_secs(5));
    let child = app.refresh_ok(&r0).await;
    assert_eq!(
        token_rows(&app, &family),
        (2, 1),
        "a replay inside the grace"
    );

    let mut current = refresh_of(&child).to_owned();
    for rows in 3..=5 {
        current = refresh_of(&app.refresh_ok(&current).await).to_owned();
        assert_eq!(token_rows(&app, &family), (rows, 1), "rotation to {rows}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_refreshes_with_the_grace_off_store_at_most_one_child() {
    let app = spawn_app_on(Backend::Sqlite, |s| {
        s.tokens.refresh_reuse_grace = Duration::ZERO
    })
    .await;
    let email = unique_email("rows-race");
    app.signup_ok(&email, PASSWORD).await;
    let tokens = app.login_ok(&email, PASSWORD).await;
    let r0 = refresh_of(&tokens).to_owned();

    let responses = join_all((0..10).map(|_| app.post_refresh(&r0))).await;

    let winners = responses
        .iter()
        .filter(|r| r.status() == StatusCode::OK)
        .count();
    assert_eq!(winners, 1);
    let (rows, _) = token_rows(&app, &sid_of(&tokens));
    assert!(
        rows <= 2,
        "{rows} token rows: more than one child was stored"
    );
}
