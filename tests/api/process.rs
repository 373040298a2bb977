//! The real `gatehouse` binary as an operator runs it: its logs, its signals, its CLI.

use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{OTHER_PASSWORD, PASSWORD, unique_email};
use crate::kit::process::{Binary, Server};

async fn post(server: &Server, path: &str, body: Value) -> (StatusCode, Value) {
    server.post_json(path, &body).await
}

/// Runs a full signup → login → refresh → reuse → password change → logout flow and
/// returns every secret the flow handled.
async fn flow(server: &Server) -> Vec<String> {
    let email = unique_email("logs");
    let mut secrets = vec![PASSWORD.to_owned(), OTHER_PASSWORD.to_owned()];
    let (s, signup) = post(
        server,
        "/v1/signup",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{signup}");
    let (s, _) = post(
        server,
        "/v1/login",
        json!({"email": email, "password": "Wrong-Password-1!"}),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    secrets.push("Wrong-Password-1!".into());
    let (s, login) = post(
        server,
        "/v1/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{login}");
    let first = login["refresh_token"].as_str().expect("refresh").to_owned();
    let (s, rotated) = post(server, "/v1/refresh", json!({"refresh_token": first})).await;
    assert_eq!(s, StatusCode::OK, "{rotated}");
    let access = rotated["access_token"].as_str().expect("access").to_owned();
    let r = server
        .client
        .get(format!("{}/v1/me", server.base))
        .bearer_auth(&access)
        .send()
        .await
        .expect("me");
    assert_eq!(r.status(), StatusCode::OK);
    let r = server
        .client
        .post(format!("{}/v1/me/password", server.base))
        .bearer_auth(&access)
        .json(&json!({"current_password": PASSWORD, "new_password": OTHER_PASSWORD}))
        .send()
        .await
        .expect("password");
    assert_eq!(r.status(), StatusCode::OK);
    let changed: Value = r.json().await.expect("json");
    // Reuse of a spent token (grace is 10 s, but the child was used: reuse).
    let second = rotated["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let (s, _) = post(server, "/v1/refresh", json!({"refresh_token": second})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let last = changed["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let (s, _) = post(server, "/v1/logout", json!({"refresh_token": last})).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for body in [&signup, &login, &rotated, &changed] {
        for field in ["access_token", "refresh_token"] {
            let token = body[field].as_str().expect("token").to_owned();
            // The signature alone is as secret as the whole token.
            if let Some(sig) = token.rsplit('.').next() {
                secrets.push(sig.to_owned());
            }
            secrets.push(token);
        }
    }
    secrets
}

fn key_material(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir.join("keys")).expect("keys dir") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("read key");
        if path.extension().is_some_and(|e| e == "pem") {
            let text = String::from_utf8(bytes).expect("pem text");
            // Every full line of the PEM body (64 base64 characters of private key).
            out.extend(
                text.lines()
                    .filter(|l| l.len() == 64 && !l.starts_with("-----"))
                    .map(str::to_owned),
            );
        } else {
            out.push(bytes.iter().map(|b| format!("{b:02x}")).collect());
            out.push(base64::Engine::encode(
                &base64::engine::general_purpose::STANDARD,
                &bytes,
            ));
        }
    }
    out
}

#[tokio::test]
async fn logs_never_contain_passwords_tokens_or_key_material() {
    for format in ["text", "json"] {
        let dir = tempfile::tempdir().expect("tmp");
        let server = Binary::in_dir(dir.path())
            .with("GATEHOUSE_LOG_FORMAT", format)
            .with("RUST_LOG", "debug")
            .start()
            .await;
        let mut secrets = flow(&server).await;
        let logs = server.stop_and_collect().await;
        secrets.extend(key_material(dir.path()));
        assert!(
            logs.contains("/v1/refresh"),
            "request lines are logged:\n{logs}"
        );
        if format == "json" {
            let line = logs
                .lines()
                .find(|l| l.contains("\"path\":\"/v1/login\""))
                .unwrap_or_else(|| panic!("no JSON request line:\n{logs}"));
            let v: Value = serde_json::from_str(line).expect("log line is JSON");
            for field in ["request_id", "method", "path", "status", "latency_ms"] {
                assert!(v.get(field).is_some(), "{field} missing in {line}");
            }
        }
        for secret in &secrets {
            assert!(
                !logs.contains(secret.as_str()),
                "{format} logs leak a secret ({}…)",
                &secret[..secret.len().min(8)]
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let dir = tempfile::tempdir().expect("tmp");
    let binary = Binary::in_dir(dir.path());
    let server = binary.start().await;
    let email = unique_email("drain");
    let (s, _) = post(
        &server,
        "/v1/signup",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    // Production Argon2: a dozen logins keep both hashing workers busy for a while.
    let logins: Vec<_> = (0..12)
        .map(|_| {
            let client = server.client.clone();
            let url = format!("{}/v1/login", server.base);
            let body = json!({"email": email, "password": PASSWORD});
            tokio::spawn(async move {
                client
                    .post(url)
                    .json(&body)
                    .send()
                    .await
                    .map(|r| r.status())
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(80)).await;
    server.terminate();
    for login in logins {
        let status = login.await.expect("task").expect("the request was cut off");
        assert!(
            status == StatusCode::OK || status == StatusCode::TOO_MANY_REQUESTS,
            "in-flight login got {status}"
        );
    }
    server.stop_and_collect().await;
}

#[tokio::test]
async fn unsafe_configuration_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let binary = Binary::in_dir(dir.path());
    for (key, value, words) in [
        ("GATEHOUSE_ACCESS_TTL", "2h", "GATEHOUSE_ACCESS_TTL"),
        ("GATEHOUSE_CORS_ORIGINS", "*", "wildcards are refused"),
        ("GATEHOUSE_ISSUER", "http://auth.example.com", "plain http"),
    ] {
        let (code, text) = Binary::in_dir(dir.path())
            .with(key, value)
            .cli(&["config", "check"])
            .await;
        assert_eq!(code, 1, "{key}={value}: {text}");
        assert!(text.contains(words), "{key}={value}: {text}");
        assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
    }

    // A key file others can read stops `serve`.
    let (code, text) = binary.cli(&["keys", "generate"]).await;
    assert_eq!(code, 0, "{text}");
    let key = std::fs::read_dir(dir.path().join("keys"))
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "pem"))
        .expect("a key");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, text) = binary.cli(&["serve"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("readable by other users"), "{text}");
    let (code, text) = binary.cli(&["config", "check"]).await;
    assert_eq!(code, 1, "{text}");
}

#[tokio::test]
async fn cli_manages_users_and_sessions_with_documented_exit_codes() {
    let dir = tempfile::tempdir().expect("tmp");
    let binary = Binary::in_dir(dir.path());
    let server = binary.start().await;
    let email = unique_email("cli");
    let (s, signup) = post(
        &server,
        "/v1/signup",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let refresh = signup["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();

    let (code, text) = binary.cli(&["users", "list", "--email", &email[..6]]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&email), "{text}");
    let (code, text) = binary.cli(&["sessions", "list", "--user", &email]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("live"), "{text}");
    let (code, text) = binary.cli(&["sessions", "revoke", "--user", &email]).await;
    assert_eq!(code, 0, "{text}");
    let (s, body) = post(&server, "/v1/refresh", json!({"refresh_token": refresh})).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_refresh_token");

    let (code, text) = binary.cli(&["users", "disable", &email]).await;
    assert_eq!(code, 0, "{text}");
    let (s, _) = post(
        &server,
        "/v1/login",
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (code, text) = binary.cli(&["audit", "--user", &email]).await;
    assert_eq!(code, 0, "{text}");
    for kind in ["signup", "session_revoked", "user_updated", "login_failed"] {
        assert!(
            text.contains(kind),
            "{kind} missing from the audit log:\n{text}"
        );
    }

    // User errors exit 1 with one line.
    let (code, text) = binary.cli(&["users", "show", "nobody@example.com"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no user"), "{text}");
    let (code, text) = binary
        .cli(&["sessions", "revoke", "--family", "not-a-uuid"])
        .await;
    assert_eq!(code, 1, "{text}");
    // A password on argv is impossible: there is no flag for it.
    let (code, _) = binary
        .cli(&[
            "users",
            "create",
            "--email",
            "x@example.com",
            "--password",
            "p",
        ])
        .await;
    assert_eq!(code, 1, "an unknown flag is a user error");
    server.stop_and_collect().await;
}

/// `serve` in a fresh directory on a port already taken: it generates a key (an INFO line
/// in the log) and then exits 1, so the whole log of a start is one finite command.
fn failing_start(dir: &Path, taken: &std::net::TcpListener) -> Binary {
    let port = taken.local_addr().expect("port").port();
    Binary::in_dir(dir)
        .with("RUST_LOG", "info")
        .with("GATEHOUSE_BIND", &format!("127.0.0.1:{port}"))
}

#[tokio::test]
async fn logs_carry_colours_only_on_a_terminal_and_never_with_no_color() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let run = |env: Option<(&'static str, &'static str)>, terminal: bool| {
        let taken = &taken;
        async move {
            let dir = tempfile::tempdir().expect("tmp");
            let mut binary = failing_start(dir.path(), taken);
            if let Some((k, v)) = env {
                binary = binary.with(k, v);
            }
            let (code, text) = if terminal {
                binary.cli_in_terminal(&["serve"]).await
            } else {
                binary.cli(&["serve"]).await
            };
            assert_eq!(code, 1, "{text}");
            assert!(text.contains("cannot listen"), "{text}");
            assert!(
                text.contains("generated an RSA-2048 key"),
                "the INFO line to look at is missing:\n{text}"
            );
            text
        }
    };
    // Piped, as under systemd, Docker or `2>file`: plain text.
    let piped = run(None, false).await;
    assert!(
        !piped.contains('\x1b'),
        "escape codes in piped logs:\n{piped:?}"
    );
    // The server's own log file (the kit's `start` writes it) too.
    let dir = tempfile::tempdir().expect("tmp");
    let logs = Binary::in_dir(dir.path())
        .with("RUST_LOG", "info")
        .start()
        .await
        .stop_and_collect()
        .await;
    assert!(logs.contains("gatehouse listening"), "{logs}");
    assert!(
        !logs.contains('\x1b'),
        "escape codes in the log file:\n{logs:?}"
    );
    // A person at a terminal gets colours, unless they set NO_COLOR.
    let coloured = run(None, true).await;
    assert!(
        coloured.contains('\x1b'),
        "no colours on a terminal:\n{coloured:?}"
    );
    let plain = run(Some(("NO_COLOR", "1")), true).await;
    assert!(
        !plain.contains('\x1b'),
        "colours despite NO_COLOR:\n{plain:?}"
    );
}

/// Every entry of `dir`, by name, but SQLite's `-wal` and `-shm` side files, which come
/// and go with its connections.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|name| !name.ends_with("-wal") && !name.ends_with("-shm"))
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn read_only_commands_create_neither_keys_nor_a_database() {
    let dir = tempfile::tempdir().expect("tmp");
    let binary = Binary::in_dir(dir.path());
    let backup = dir.path().join("copy.db");
    let backup = backup.to_str().expect("utf-8");
    let reads: [&[&str]; 5] = [
        &["users", "list"],
        &["users", "show", "ada@example.com"],
        &["sessions", "list", "--user", "ada@example.com"],
        &["audit"],
        &["audit", "--user", "ada@example.com"],
    ];

    // A fresh directory: each read says there is nothing yet, exits 1, creates nothing.
    for args in reads
        .iter()
        .copied()
        .chain([&["backup", "--to", backup][..]])
    {
        let (code, text) = binary.cli(args).await;
        assert_eq!(code, 1, "`{}`: {text}", args.join(" "));
        assert!(
            text.contains("no database at") && text.contains("yet"),
            "`{}` does not say the database is not there: {text}",
            args.join(" ")
        );
        assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
        assert_eq!(
            entries(dir.path()),
            Vec::<String>::new(),
            "`{}`",
            args.join(" ")
        );
    }
    let (code, text) = binary.cli(&["keys", "list"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no signing key in"), "{text}");
    let (code, text) = binary.cli(&["config", "check"]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("no keys directory yet"), "{text}");
    assert!(text.contains("# configuration OK"), "{text}");
    assert_eq!(
        entries(dir.path()),
        Vec::<String>::new(),
        "keys list / config check"
    );

    // A database without keys (as `migrate` leaves it): reads answer, and still
    // generate no key and no refresh secret.
    binary.cli_ok(&["migrate"], None).await;
    let made = entries(dir.path());
    assert!(made.contains(&"gatehouse.db".to_owned()), "{made:?}");
    for args in [&["users", "list"][..], &["audit"]] {
        let (code, text) = binary.cli(args).await;
        assert_eq!(code, 0, "`{}`: {text}", args.join(" "));
    }
    let (code, text) = binary.cli(&["users", "show", "ada@example.com"]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no user with email"), "{text}");
    assert!(
        !binary.keys_dir.exists(),
        "a read created {}: {:?}",
        binary.keys_dir.display(),
        std::fs::read_dir(&binary.keys_dir).map(|d| d.count())
    );
    assert_eq!(entries(dir.path()), made, "a read added files");
}
