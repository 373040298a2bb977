//! The suite runs where it says: a `<name>::postgres` variant of `#[both_backends]` stores
//! in PostgreSQL and counts its rate limits in Redis, a `<name>::sqlite` one in a file and
//! in memory, and a storage test cannot quietly start its app on the default backend.
//! What a variant runs on is read from libtest's name for the test, not from the kit's
//! scope that these tests check.

use crate::helpers::{Backend, PASSWORD, TestApp, spawn_app, unique_email};
use crate::kit::pgdb::admin_client;
use gatehouse::config::Database;

/// The variant this test is, by the name libtest runs it under.
fn variant() -> Backend {
    let thread = std::thread::current();
    let name = thread.name().expect("libtest names each test's thread");
    if name.ends_with("::postgres") {
        Backend::Postgres
    } else if name.ends_with("::sqlite") {
        Backend::Sqlite
    } else {
        panic!("{name} is not a per-backend variant")
    }
}

fn env_is(name: &str, value: &str) -> bool {
    std::env::var(name).is_ok_and(|v| v.eq_ignore_ascii_case(value))
}

/// How many users with `email` the table holds, read by a client of the test's own.
fn users_in_postgres(app: &TestApp, email: &str) -> i64 {
    let url = postgres_url(app).expect("the app's settings name its database");
    let email = email.to_owned();
    // Off the runtime's thread: the synchronous client runs a runtime of its own.
    std::thread::spawn(move || {
        admin_client(&url)
            .expect("connect to the app's database")
            .query_one("SELECT count(*) FROM users WHERE email = $1", &[&email])
            .expect("count the users")
            .get(0)
    })
    .join()
    .expect("the counting thread")
}

/// The PostgreSQL database the app's settings name, if they name one.
fn postgres_url(app: &TestApp) -> Option<gatehouse::storage::postgres::PostgresUrl> {
    match &app.settings.storage.database {
        Database::Postgres(url) => Some((**url).clone()),
        Database::Sqlite(_) => None,
    }
}

fn users_in_sqlite(app: &TestApp, email: &str) -> i64 {
    let Database::Sqlite(path) = &app.settings.storage.database else {
        panic!("the app's settings name no SQLite file");
    };
    rusqlite::Connection::open(path)
        .expect("open the app's database file")
        .query_row(
            "SELECT count(*) FROM users WHERE email = ?1",
            [email],
            |row| row.get(0),
        )
        .expect("count the users")
}

#[both_backends]
async fn each_variant_stores_on_the_backend_its_name_says() {
    let app = spawn_app().await;
    let email = unique_email("where");
    app.signup_ok(&email, PASSWORD).await;

    // GATEHOUSE_TEST_POSTGRES=off runs the PostgreSQL variants on SQLite, said loudly.
    let expected = match variant() {
        Backend::Postgres if env_is("GATEHOUSE_TEST_POSTGRES", "off") => Backend::Sqlite,
        named => named,
    };
    assert_eq!(app.backend, expected);
    match expected {
        Backend::Postgres => {
            let database = app.database.as_ref().expect("a database of its own");
            let url = postgres_url(&app).expect("a database URL");
            assert_eq!(url.config().get_dbname(), Some(database.name.as_str()));
            assert_eq!(users_in_postgres(&app, &email), 1);
        }
        Backend::Sqlite => {
            assert!(app.database.is_none() && postgres_url(&app).is_none());
            assert_eq!(users_in_sqlite(&app, &email), 1);
        }
    }
}

#[both_backends]
async fn postgres_variants_count_in_redis_and_sqlite_variants_in_memory() {
    let app = spawn_app().await;
    let redis = match std::env::var("GATEHOUSE_TEST_RATE_LIMIT_STORE").as_deref() {
        Ok("redis") => true,
        Ok("memory") => false,
        _ => variant() == Backend::Postgres,
    } && !env_is("GATEHOUSE_TEST_REDIS", "off");
    assert_eq!(
        app.settings.rate_limits.store.is_some(),
        redis,
        "{:?} counts in {:?}",
        app.backend,
        app.settings.rate_limits.store
    );
}

/// A task spawned by the test does not inherit the variant's backend: asking for it
/// there (as `spawn_app()` does) is refused rather than answered with the default one.
#[both_backends]
async fn the_backend_asked_outside_the_variants_scope_is_refused() {
    assert_eq!(Backend::from_env(), variant());
    let outside = tokio::spawn(async { Backend::from_env() }).await;
    assert!(outside.is_err_and(|e| e.is_panic()));
}

/// The modules whose every test depends on storage. A plain `#[tokio::test]` in them
/// that starts its app with `spawn_app`/`spawn_app_with` would run on SQLite alone
/// (the default) while reading as if it covered both backends.
const STORAGE_MODULES: &[&str] = &[
    "admin",
    "admin_views",
    "attacks",
    "audit",
    "health",
    "keys",
    "limits_shared",
    "login",
    "logout",
    "me",
    "refresh",
    "session_bound",
    "signup",
];

#[test]
fn storage_modules_start_no_app_on_a_default_backend() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/api");
    let mut single = Vec::new();
    for module in STORAGE_MODULES {
        let path = dir.join(format!("{module}.rs"));
        let source =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Each test attribute opens a section that runs to the next one.
        let mut plain = false;
        let mut section = String::new();
        let mut check = |plain: bool, section: &str| {
            let starts_default =
                section.contains("spawn_app(") || section.contains("spawn_app_with(");
            if plain && starts_default && !section.contains("spawn_app_on(") {
                let name = section
                    .split("fn ")
                    .nth(1)
                    .and_then(|rest| rest.split('(').next())
                    .unwrap_or("?");
                single.push(format!("{module}::{name}"));
            }
        };
        for line in source.lines() {
            let attribute = ["#[tokio::test", "#[both_backends", "#[test]"]
                .iter()
                .find(|a| line.starts_with(**a));
            if let Some(attribute) = attribute {
                check(plain, &section);
                plain = *attribute == "#[tokio::test";
                section.clear();
            }
            section.push_str(line);
            section.push('\n');
        }
        check(plain, &section);
    }
    assert!(
        single.is_empty(),
        "these storage tests run on SQLite alone: mark them #[both_backends] (or name \
         their backend with spawn_app_on): {single:#?}"
    );
}
