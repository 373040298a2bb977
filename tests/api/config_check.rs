//! `gatehouse config check` against the database it names: OK only where `serve` would
//! start, and otherwise one line naming the problem, exit 1.

use crate::kit::pg_private::PrivatePostgres;
use crate::kit::pgdb::TestDatabase;
use crate::kit::process::Binary;

/// One line, exit 1, naming `words`.
fn refused(code: i32, text: &str, words: &str) {
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(words), "does not say {words:?}: {text}");
    assert!(!text.contains("configuration OK"), "{text}");
    assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
}

#[tokio::test]
async fn config_check_refuses_a_sqlite_database_that_cannot_be_created() {
    let dir = tempfile::tempdir().expect("tmp");
    // A file where the database's directory should be: no user, root included, can
    // create the database there.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").expect("write");
    let database = blocker.join("gatehouse.db");
    let binary =
        Binary::in_dir(dir.path()).with("GATEHOUSE_DATABASE", &database.display().to_string());
    let (code, text) = binary.cli(&["config", "check"]).await;
    refused(code, &text, "not a directory");
    let (code, text) = binary.cli(&["serve"]).await;
    assert_eq!(code, 1, "serve agrees: {text}");

    // A file that is not a database.
    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, vec![7u8; 4096]).expect("write");
    let (code, text) = Binary::in_dir(dir.path())
        .with("GATEHOUSE_DATABASE", &garbage.display().to_string())
        .cli(&["config", "check"])
        .await;
    refused(code, &text, "garbage.db");

    // An existing database opens: OK, and nothing is added beside it.
    let fine = Binary::in_dir(dir.path());
    fine.cli_ok(&["migrate"], None).await;
    let (code, text) = fine.cli(&["config", "check"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("opens for writing"), "{text}");
    assert!(
        !fine.keys_dir.exists(),
        "config check created the keys directory"
    );
}

#[tokio::test]
async fn config_check_and_serve_refuse_a_wrong_postgres_password_and_an_unreachable_server() {
    let pg = PrivatePostgres::start(&[]);
    pg.require_passwords();
    pg.sql(
        "CREATE ROLE gh LOGIN PASSWORD 'right-horse-battery'; ALTER DATABASE postgres OWNER TO gh",
    );
    let dir = tempfile::tempdir().expect("tmp");
    let url = |password: &str| format!("postgres://gh:{password}@127.0.0.1:{}/postgres", pg.port);

    let wrong = Binary::in_dir(dir.path()).on_postgres(&url("wrong-staple"));
    let (code, text) = wrong.cli(&["config", "check"]).await;
    refused(code, &text, "password authentication failed");
    assert!(
        !text.contains("wrong-staple"),
        "the password is printed: {text}"
    );

    let right = wrong
        .clone()
        .with("GATEHOUSE_DATABASE", &url("right-horse-battery"));
    let (code, text) = right.cli(&["config", "check"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("# configuration OK"), "{text}");
    assert!(
        !text.contains("right-horse-battery"),
        "the password is printed: {text}"
    );

    // Nobody listens: one try (GATEHOUSE_DB_START_TIMEOUT=0), then the reason.
    let port = crate::kit::ports::free_port();
    let (code, text) = Binary::in_dir(dir.path())
        .on_postgres(&format!("postgres://gh:x@127.0.0.1:{port}/postgres"))
        .with("GATEHOUSE_DB_START_TIMEOUT", "0")
        .cli(&["config", "check"])
        .await;
    refused(code, &text, "cannot connect to PostgreSQL");
}

#[tokio::test]
async fn config_check_proves_the_kek_opens_the_keys_a_server_stored() {
    let Some(db) = TestDatabase::new("config_check_kek") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let binary = Binary::in_dir(dir.path()).on_postgres(&db.url_text());
    let (code, text) = binary.cli(&["config", "check"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no keys in the database yet"), "{text}");
    assert!(
        text.contains("migrates it"),
        "an empty database is migrated by serve: {text}"
    );

    binary.start().await.stop_and_collect().await;
    let (code, text) = binary.cli(&["config", "check"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("which opens them"), "{text}");

    // A replica given another KEK would not start: neither may the check pass.
    let other = binary.clone().on_postgres(&db.url_text());
    let (code, text) = other.cli(&["config", "check"]).await;
    refused(code, &text, "does not open the stored keys");
    let (code, text) = other.cli(&["serve"]).await;
    assert_eq!(code, 1, "serve agrees: {text}");
}

#[tokio::test]
async fn config_check_and_serve_warn_about_an_unknown_gatehouse_variable() {
    let dir = tempfile::tempdir().expect("tmp");
    let binary = Binary::in_dir(dir.path()).with("GATEHOUSE_ACESS_TTL", "5m");
    let (code, text) = binary.cli(&["config", "check"]).await;
    assert_eq!(code, 0, "a warning, not an error: {text}");
    assert!(
        text.contains("# warning: GATEHOUSE_ACESS_TTL is not a gatehouse setting and is ignored: did you mean GATEHOUSE_ACCESS_TTL?"),
        "{text}"
    );
    let log = binary.start().await.stop_and_collect().await;
    assert_eq!(
        log.matches("GATEHOUSE_ACESS_TTL is not a gatehouse setting")
            .count(),
        1,
        "logged once at start: {log}"
    );
}

/// A replica started without the KEK on a database where keys are already sealed is
/// told to copy the KEK the others use: a new one would never open them. Only a first
/// install is told how to create one.
#[tokio::test]
async fn a_replica_without_the_kek_is_told_to_copy_it_and_only_a_first_install_to_create_it() {
    let Some(db) = TestDatabase::new("missing_kek") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tmp");
    let with_kek = Binary::in_dir(dir.path()).on_postgres(&db.url_text());
    let without = with_kek
        .clone()
        .with("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", "");

    let (code, first) = without.cli(&["serve"]).await;
    assert_eq!(code, 1, "{first}");
    assert!(first.contains("head -c 32"), "a first install: {first}");
    assert!(!first.contains("copy the key-encryption key"), "{first}");

    with_kek.start().await.stop_and_collect().await;
    for command in [&["serve"][..], &["config", "check"]] {
        let (code, replica) = without.cli(command).await;
        assert_eq!(code, 1, "{replica}");
        assert!(
            replica.contains("copy the key-encryption key file the other replicas use"),
            "`{}` on a database with keys: {replica}",
            command.join(" ")
        );
        assert!(
            !replica.contains("head -c 32"),
            "told to create a new KEK where one is in use: {replica}"
        );
    }
}
