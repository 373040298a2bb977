//! The CLI on a PostgreSQL URL, which it must never print with its password.

use super::*;

fn gatehouse(db: &TestDatabase, keys: &std::path::Path, url: &str) -> Command {
    // PostgreSQL keeps the keys in the database, sealed under a key-encryption key.
    let kek = keys.join("kek");
    if !kek.exists() {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::write(&kek, gatehouse::crypto::random_bytes::<32>()).expect("write the KEK");
        std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gatehouse"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", &kek)
        .env("GATEHOUSE_DATABASE", url)
        .env("GATEHOUSE_KEYS_DIR", keys)
        .env("GATEHOUSE_LOG_FORMAT", "text")
        .env("RUST_LOG", "warn");
    let _ = db;
    cmd
}

fn run(mut cmd: Command, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = cmd
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run gatehouse");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    let out = child.wait_with_output().expect("gatehouse exits");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The password the URL carries for the CLI: a made-up one under trust auth, which the
/// output must never show.
const FAKE_PASSWORD: &str = "n0t-Shown-anywhere";

#[test]
fn the_cli_works_on_a_postgres_url_and_never_prints_its_password() {
    let Some(db) = TestDatabase::new("the_cli_works_on_a_postgres_url") else {
        return;
    };
    let mut url = db.url_text();
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    let with_password = match authority.split_once('@') {
        Some((user, host)) if !user.contains(':') => {
            Some(format!("{scheme}://{user}:{FAKE_PASSWORD}@{host}/{path}"))
        }
        _ => None,
    };
    if let Some(w) = with_password {
        url = w;
    }
    let keys = tempfile::tempdir().expect("temp dir");
    let cli = || gatehouse(&db, keys.path(), &url);

    let (code, out, err) = run(cli(), &["config", "check"], None);
    assert_eq!(code, 0, "{err}");
    let line = out
        .lines()
        .find(|l| l.starts_with("GATEHOUSE_DATABASE="))
        .expect("config check prints the database");
    assert!(line.contains("***@"), "{line}");
    for text in [&out, &err] {
        assert!(
            !text.contains(FAKE_PASSWORD),
            "the password was printed: {text}"
        );
    }

    let (code, out, err) = run(cli(), &["migrate"], None);
    assert_eq!(code, 0, "{err}");
    // The newest schema is the number of migration files.
    let latest = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
        .expect("migrations")
        .count();
    assert!(
        out.contains("PostgreSQL") && out.contains(&format!("schema {latest}")),
        "{out}"
    );
    assert!(!out.contains(FAKE_PASSWORD) && !err.contains(FAKE_PASSWORD));

    let (code, out, err) = run(
        cli(),
        &["users", "create", "--email", "ops@example.com", "--admin"],
        Some("Long-enough-Passphrase-42!\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ops@example.com"), "{out}");
    let (code, out, err) = run(cli(), &["users", "list"], None);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ops@example.com\tadmin"), "{out}");
    let (code, out, err) = run(cli(), &["audit", "--limit", "5"], None);
    assert_eq!(code, 0, "{err}");
    assert!(!out.trim().is_empty(), "the user's creation is audited");

    let target = keys.path().join("copy.db");
    let (code, _, err) = run(
        cli(),
        &["backup", "--to", target.to_str().expect("utf-8 path")],
        None,
    );
    assert_eq!(
        code, 1,
        "backup on PostgreSQL is the user's to do elsewhere: {err}"
    );
    assert!(err.contains("pg_dump"), "{err}");
    assert!(!target.exists());
}
