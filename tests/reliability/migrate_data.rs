//! `gatehouse migrate-data`: a SQLite install built through the real service is moved to
//! PostgreSQL by the real binary, and the service started on PostgreSQL (same keys and
//! refresh secret) keeps every promise the SQLite one made: live sessions refresh, a
//! token spent before the move is reuse, revoked sessions stay revoked, passwords, roles
//! and lockout counters hold, the audit log is all there. A second run is refused and
//! changes nothing; a bad source or target is a clear error.

use std::collections::HashSet;
use std::path::Path;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::kit::password::PASSWORD;
use crate::kit::pgdb::{TestDatabase, admin_client};
use crate::kit::process::{Binary, Server};

const ADMIN: &str = "admin@migrate.example.com";
const ALICE: &str = "alice@migrate.example.com";
const BOB: &str = "bob@migrate.example.com";
const CAROL: &str = "carol@migrate.example.com";
/// Failed logins that lock an email (set low so the test provokes it quickly).
const MAX_FAILURES: u32 = 3;

async fn post(server: &Server, path: &str, body: Value) -> (StatusCode, Value) {
    server.post_json(path, &body).await
}

async fn get(server: &Server, path: &str, access: &str) -> (StatusCode, Value) {
    let r = server
        .client
        .get(server.url(path))
        .bearer_auth(access)
        .send()
        .await
        .expect("request");
    let status = r.status();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn login(server: &Server, email: &str) -> Value {
    let (s, body) = post(
        server,
        "/v1/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "login {email}: {body}");
    body
}

async fn refresh(server: &Server, token: &str) -> (StatusCode, Value) {
    post(server, "/v1/refresh", json!({"refresh_token": token})).await
}

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v[name]
        .as_str()
        .unwrap_or_else(|| panic!("no {name} in {v}"))
}

/// A user's sessions as the admin API lists them: id → revoked_reason.
async fn sessions(server: &Server, admin: &str, user_id: &str) -> Vec<(String, Option<String>)> {
    let (s, body) = get(
        server,
        &format!("/v1/admin/users/{user_id}/sessions"),
        admin,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .map(|s| {
            (
                field(s, "id").to_owned(),
                s["revoked_reason"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// Every audit event the admin API returns, as (id, type, user_id) triples, all pages.
async fn audit(server: &Server, admin: &str) -> Vec<(i64, String, Option<String>)> {
    let mut out = Vec::new();
    let mut before = String::new();
    loop {
        let (s, body) = get(server, &format!("/v1/admin/audit?limit=500{before}"), admin).await;
        assert_eq!(s, StatusCode::OK, "{body}");
        let events = body["events"].as_array().expect("events");
        for e in events {
            out.push((
                e["id"].as_i64().expect("id"),
                field(e, "type").to_owned(),
                e["user_id"].as_str().map(str::to_owned),
            ));
        }
        match events.last() {
            Some(last) if events.len() == 500 => {
                before = format!("&before={}", last["id"].as_i64().expect("id"));
            }
            _ => return out,
        }
    }
}

/// `copied` per table from the command's report.
fn reported(out: &str) -> Vec<(String, u64)> {
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let table = words.next()?;
            let n = words.next()?.parse().ok()?;
            Some((table.to_owned(), n))
        })
        .collect()
}

/// Row counts of the copied tables, read straight from the SQLite file (the point of
/// this test is the tables, so it reads them).
fn sqlite_counts(path: &Path) -> Vec<(String, u64)> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .expect("open the source");
    gatehouse::storage::transfer::TABLES
        .iter()
        .map(|t| {
            let n: i64 = conn
                .query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
                .expect("count");
            ((*t).to_owned(), n as u64)
        })
        .collect()
}

/// The same counts in the PostgreSQL database, on a thread of its own (the synchronous
/// client runs a runtime inside, which cannot start on the test's).
fn pg_counts(db: &TestDatabase) -> Vec<(String, u64)> {
    let url = db.url();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut c = admin_client(&url).expect("connect to the target");
            let exists: bool = c
                .query_one("SELECT to_regclass('users') IS NOT NULL", &[])
                .expect("regclass")
                .get(0);
            gatehouse::storage::transfer::TABLES
                .iter()
                .map(|t| {
                    let n: i64 = if exists {
                        c.query_one(&format!("SELECT count(*) FROM {t}"), &[])
                            .expect("count")
                            .get(0)
                    } else {
                        0
                    };
                    ((*t).to_owned(), n as u64)
                })
                .collect()
        })
        .join()
        .expect("count thread")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_install_moves_to_postgres_with_its_sessions_lockouts_and_audit() {
    let Some(db) = TestDatabase::new("migrate_data") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let on_sqlite = Binary::in_dir(dir.path())
        .with("GATEHOUSE_LOCKOUT_MAX_FAILURES", &MAX_FAILURES.to_string());
    let on_postgres = on_sqlite.clone().on_postgres(&db.url_text());

    // ---- An install with history, built through the service on SQLite.
    on_sqlite
        .cli_ok(
            &["users", "create", "--email", ADMIN, "--admin"],
            Some(&format!("{PASSWORD}\n")),
        )
        .await;
    let server = on_sqlite.start().await;
    for email in [ALICE, BOB, CAROL] {
        let (s, body) = post(
            &server,
            "/v1/signup",
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
        assert_eq!(s, StatusCode::CREATED, "signup {email}: {body}");
    }
    let admin = field(&login(&server, ADMIN).await, "access_token").to_owned();

    // Alice, live: one rotation; her newest token must still refresh after the move.
    let live = login(&server, ALICE).await;
    let live_user = live["user"]["id"].as_str().expect("user id").to_owned();
    let (s, body) = refresh(&server, field(&live, "refresh_token")).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    let live_token = field(&body, "refresh_token").to_owned();
    let live_access = field(&body, "access_token").to_owned();

    // Alice, a chain: t1 -> t2 -> t3. t1 is spent and so is its child, so presenting t1
    // is reuse whatever the grace period.
    let chain = login(&server, ALICE).await;
    let spent = field(&chain, "refresh_token").to_owned();
    let (s, t2) = refresh(&server, &spent).await;
    assert_eq!(s, StatusCode::OK, "{t2}");
    let (s, t3) = refresh(&server, field(&t2, "refresh_token")).await;
    assert_eq!(s, StatusCode::OK, "{t3}");
    let chain_newest = field(&t3, "refresh_token").to_owned();
    let chain_sid = crate::kit::body::sid_in(field(&t3, "access_token")).expect("sid");

    // Bob: one session ended by logout, one by an admin.
    let logged_out = login(&server, BOB).await;
    let bob_id = logged_out["user"]["id"].as_str().expect("id").to_owned();
    let r = server
        .client
        .post(server.url("/v1/logout"))
        .json(&json!({"refresh_token": field(&logged_out, "refresh_token")}))
        .send()
        .await
        .expect("logout");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let admin_revoked = login(&server, BOB).await;
    let revoked_sid = crate::kit::body::sid_in(field(&admin_revoked, "access_token")).expect("sid");
    let r = server
        .client
        .delete(server.url(&format!("/v1/admin/sessions/{revoked_sid}")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("admin revoke");
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    // Carol: locked out by failed logins; her right password is refused for the window.
    for _ in 0..MAX_FAILURES {
        let (s, _) = post(
            &server,
            "/v1/login",
            json!({"email": CAROL, "password": "Wrong-Password-1!"}),
        )
        .await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, body) = post(
        &server,
        "/v1/login",
        json!({"email": CAROL, "password": PASSWORD}),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "carol is not locked: {body}"
    );

    // A service client whose secret was rotated: the old secret still in its overlap.
    let created = server
        .client
        .post(server.url("/v1/admin/clients"))
        .bearer_auth(&admin)
        .json(&json!({"name": "billing", "scopes": ["introspect"]}))
        .send()
        .await
        .expect("create a client");
    assert_eq!(created.status(), StatusCode::CREATED);
    let created: Value = created.json().await.expect("client");
    let client_id = created["client_id"].as_str().expect("id").to_owned();
    let old_secret = created["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let rotated = server
        .client
        .post(server.url(&format!("/v1/admin/clients/{client_id}/secret")))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("rotate");
    assert_eq!(rotated.status(), StatusCode::OK);
    let rotated: Value = rotated.json().await.expect("secret");
    let new_secret = rotated["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();

    let bob_sessions_before = sessions(&server, &admin, &bob_id).await;
    let audit_before = audit(&server, &admin).await;
    assert!(
        audit_before.iter().any(|e| e.1 == "login_failed")
            && audit_before.iter().any(|e| e.1 == "session_revoked"),
        "the history lacks the events this test provoked: {audit_before:?}"
    );
    server.stop_and_collect().await;

    // ---- The move.
    let source = on_sqlite.database.clone();
    let source_bytes = std::fs::read(&source).expect("read the source");
    let source_counts = sqlite_counts(&source);
    let to = db.url_text();
    let from = source.to_str().expect("utf-8 path");
    // One command for data and keys; the target comes from GATEHOUSE_DATABASE.
    let keys_dir = on_sqlite.keys_dir.display().to_string();
    let out = on_postgres
        .cli_ok(
            &["migrate-data", "--from", from, "--keys-from", &keys_dir],
            None,
        )
        .await;
    assert!(
        out.contains("current"),
        "the keys were not imported:\n{out}"
    );
    assert_eq!(
        reported(&out),
        source_counts,
        "the report's counts are not the source's:\n{out}"
    );
    // The key import that followed the copy records one event of its own.
    let source_counts_and_import: Vec<(String, u64)> = source_counts
        .iter()
        .map(|(t, n)| (t.clone(), n + u64::from(t == "audit_events")))
        .collect();
    assert_eq!(
        pg_counts(&db),
        source_counts_and_import,
        "the target's counts are not the source's"
    );
    assert_eq!(
        source_counts[0].1, 4,
        "four users were created: {source_counts:?}"
    );
    assert!(
        source_counts.iter().all(|(_, n)| *n > 0),
        "every table has rows to copy: {source_counts:?}"
    );
    assert!(
        !out.contains(PASSWORD) && !out.contains("$argon2"),
        "the report shows a secret:\n{out}"
    );
    assert_eq!(
        std::fs::read(&source).expect("read the source"),
        source_bytes,
        "migrate-data changed the source"
    );

    // ---- A second run is refused and changes nothing.
    let (code, again) = on_sqlite
        .cli(&["migrate-data", "--from", from, "--to", &to])
        .await;
    assert_eq!(code, 1, "a non-empty target was not refused:\n{again}");
    assert!(again.contains("--into-non-empty"), "{again}");
    assert_eq!(
        pg_counts(&db),
        source_counts_and_import,
        "the refused run wrote"
    );
    // Even when told to, rows that collide roll the whole copy back.
    let (code, merged) = on_sqlite
        .cli(&[
            "migrate-data",
            "--from",
            from,
            "--to",
            &to,
            "--into-non-empty",
        ])
        .await;
    assert_eq!(code, 1, "colliding rows were not refused:\n{merged}");
    assert!(!merged.contains("DETAIL"), "{merged}");
    assert_eq!(
        pg_counts(&db),
        source_counts_and_import,
        "the failed merge wrote"
    );

    // ---- The service on PostgreSQL, with the install's keys moved in (signing keys and
    // refresh secret) by the move.
    let server = on_postgres.start().await;
    // The client and both of its secrets came along.
    for secret in [&old_secret, &new_secret] {
        let r = server
            .client
            .post(server.url("/oauth/token"))
            .basic_auth(&client_id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .expect("token");
        assert_eq!(
            r.status(),
            StatusCode::OK,
            "a moved client secret is refused"
        );
    }
    // An access token minted on SQLite still verifies, and its session is still live.
    let (s, me) = get(&server, "/v1/me", &live_access).await;
    assert_eq!(s, StatusCode::OK, "{me}");
    let (s, body) = refresh(&server, &live_token).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the live session does not refresh: {body}"
    );
    assert_eq!(body["user"]["id"].as_str(), Some(live_user.as_str()));
    let (s, body) = refresh(&server, field(&body, "refresh_token")).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "the rotated token does not refresh: {body}"
    );

    let admin = field(&login(&server, ADMIN).await, "access_token").to_owned();
    // Reuse of a token spent before the move: 401, and its whole family revoked.
    let (s, body) = refresh(&server, &spent).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    let (s, body) = refresh(&server, &chain_newest).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the family survived the reuse: {body}"
    );
    let alice = sessions(&server, &admin, &live_user).await;
    assert!(
        alice
            .iter()
            .any(|(id, r)| *id == chain_sid && r.as_deref() == Some("reuse_detected")),
        "the reused family is not revoked for reuse: {alice:?}"
    );

    // Revoked sessions stay revoked, with their reasons.
    for token in [&logged_out, &admin_revoked] {
        let (s, body) = refresh(&server, field(token, "refresh_token")).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    }
    assert_eq!(
        sessions(&server, &admin, &bob_id).await,
        bob_sessions_before,
        "bob's sessions changed in the move"
    );

    // Passwords and lockout counters came along.
    login(&server, BOB).await;
    let (s, body) = post(
        &server,
        "/v1/login",
        json!({"email": CAROL, "password": PASSWORD}),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::TOO_MANY_REQUESTS,
        "the lockout did not carry over: {body}"
    );

    // The audit log holds every event from before, with its id, type and user.
    let after: HashSet<_> = audit(&server, &admin).await.into_iter().collect();
    let missing: Vec<_> = audit_before
        .iter()
        .filter(|e| !after.contains(*e))
        .collect();
    assert!(missing.is_empty(), "audit events lost: {missing:?}");
    // New events are numbered after the copied ones.
    let newest_before = audit_before.iter().map(|e| e.0).max().expect("events");
    assert!(
        after
            .iter()
            .any(|e| e.0 > newest_before && e.1 == "refresh_reuse_detected"),
        "the reuse after the move was not audited after the copied events"
    );
    server.stop_and_collect().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_data_refuses_a_bad_source_or_target_clearly() {
    let Some(db) = TestDatabase::new("migrate_data_errors") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = Binary::in_dir(dir.path());
    let to = db.url_text();

    let missing = dir.path().join("nothing-here.db");
    let (code, out) = bin
        .cli(&[
            "migrate-data",
            "--from",
            missing.to_str().expect("utf-8"),
            "--to",
            &to,
        ])
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("does not exist"), "{out}");
    assert!(!missing.exists(), "the missing source was created");

    let not_gatehouse = dir.path().join("other.db");
    rusqlite::Connection::open(&not_gatehouse)
        .and_then(|c| c.execute_batch("CREATE TABLE notes (body TEXT)"))
        .expect("another SQLite database");
    let (code, out) = bin
        .cli(&[
            "migrate-data",
            "--from",
            not_gatehouse.to_str().expect("utf-8"),
            "--to",
            &to,
        ])
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("not a gatehouse database"), "{out}");

    // A real install to copy from, for the target errors.
    bin.cli_ok(&["migrate"], None).await;
    let from = bin.database.to_str().expect("utf-8").to_owned();
    let (code, out) = bin
        .cli(&["migrate-data", "--from", &from, "--to", "mysql://x/y"])
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("--to"), "{out}");

    // Keys asked for without a key-encryption key: refused before any data moves.
    let keys = bin.keys_dir.to_str().expect("utf-8").to_owned();
    let (code, out) = bin
        .cli(&[
            "migrate-data",
            "--from",
            &from,
            "--to",
            &to,
            "--keys-from",
            &keys,
        ])
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE"), "{out}");

    let port = crate::kit::ports::free_port();
    let (code, out) = bin
        .cli(&[
            "migrate-data",
            "--from",
            &from,
            "--to",
            &format!("postgres://postgres:s3cret-pw@127.0.0.1:{port}/gatehouse"),
        ])
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("cannot connect"), "{out}");
    assert!(
        !out.contains("s3cret-pw"),
        "the password was printed: {out}"
    );

    // None of it touched the target.
    assert!(
        pg_counts(&db).iter().all(|(_, n)| *n == 0),
        "a refused run wrote to the target"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn into_non_empty_adds_a_second_install_after_the_first() {
    let Some(db) = TestDatabase::new("migrate_data_merge") else {
        return;
    };
    let to = db.url_text();
    let (first_dir, second_dir) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    let mut installs = Vec::new();
    for (dir, email) in [
        (&first_dir, "first@merge.example.com"),
        (&second_dir, "second@merge.example.com"),
    ] {
        let bin = Binary::in_dir(dir.path());
        bin.cli_ok(
            &["users", "create", "--email", email],
            Some(&format!("{PASSWORD}\n")),
        )
        .await;
        installs.push(bin);
    }
    let from = |b: &Binary| b.database.to_str().expect("utf-8").to_owned();
    let first = sqlite_counts(&installs[0].database);
    let second = sqlite_counts(&installs[1].database);

    installs[0]
        .cli_ok(
            &["migrate-data", "--from", &from(&installs[0]), "--to", &to],
            None,
        )
        .await;
    let out = installs[1]
        .cli_ok(
            &[
                "migrate-data",
                "--from",
                &from(&installs[1]),
                "--to",
                &to,
                "--into-non-empty",
            ],
            None,
        )
        .await;
    assert_eq!(reported(&out), second, "{out}");
    assert!(out.contains("numbered after the target's own"), "{out}");
    let sum: Vec<(String, u64)> = first
        .iter()
        .zip(&second)
        .map(|((t, a), (_, b))| (t.clone(), a + b))
        .collect();
    assert_eq!(pg_counts(&db), sum);

    // Both installs' users sign in from the merged database.
    let server = installs[0].clone().on_postgres(&to).start().await;
    for email in ["first@merge.example.com", "second@merge.example.com"] {
        login(&server, email).await;
    }
    server.stop_and_collect().await;
}

/// A server still serving the SQLite file would take revocations (and logins, and
/// rotations) after the copy's snapshot, which the new database would never see: a
/// revoked session would live again there. So the copy refuses while one runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_data_refuses_while_a_server_uses_the_source() {
    let Some(db) = TestDatabase::new("migrate_data_in_use") else {
        return;
    };
    let to = db.url_text();
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = Binary::in_dir(dir.path());
    let server = bin.start().await;
    let (s, body) = post(
        &server,
        "/v1/signup",
        json!({"email": ALICE, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{body}");
    let from = bin.database.to_str().expect("utf-8").to_owned();

    let (code, out) = bin
        .cli(&["migrate-data", "--from", &from, "--to", &to])
        .await;
    assert_eq!(code, 1, "copied under a running server:\n{out}");
    assert!(
        out.contains("in use by a running gatehouse server") && out.contains("Stop the service"),
        "the refusal does not say why:\n{out}"
    );
    assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    assert!(
        pg_counts(&db).iter().all(|(_, n)| *n == 0),
        "the refused copy wrote to the target"
    );

    // Stopped, the same command copies.
    server.stop_and_collect().await;
    let out = bin
        .cli_ok(&["migrate-data", "--from", &from, "--to", &to], None)
        .await;
    assert_eq!(reported(&out), sqlite_counts(&bin.database), "{out}");
}

/// Second factors are not copied yet: a source holding one is refused whole, rather than
/// moved with its users' MFA silently turned off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_data_refuses_a_source_holding_second_factors() {
    let Some(db) = TestDatabase::new("migrate_data_mfa") else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let bin = Binary::in_dir(dir.path());
    bin.cli_ok(&["migrate"], None).await;
    let from = bin.database.to_str().expect("utf-8").to_owned();
    rusqlite::Connection::open(&bin.database)
        .and_then(|c| {
            c.execute_batch(
                "INSERT INTO users (id, email, password_hash, role, disabled, created_at, updated_at)
                 VALUES ('6f1c1d3e-0000-4000-8000-000000000001', 'mfa@example.com', 'x', 'user', 0, 1, 1);
                 INSERT INTO mfa_totp (user_id, sealed_secret, created_at, enabled_at)
                 VALUES ('6f1c1d3e-0000-4000-8000-000000000001', x'01', 1, 1);",
            )
        })
        .expect("seed a user with TOTP");
    let (code, out) = bin
        .cli(&["migrate-data", "--from", &from, "--to", &db.url_text()])
        .await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("second factors") && out.contains("nothing was copied"),
        "{out}"
    );
}
