//! The real `gatehouse` binary as an operator runs it: its logs, its signals, its CLI.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncReadExt as _;
use tokio::process::{Child, Command};

use crate::helpers::{OTHER_PASSWORD, PASSWORD, unique_email};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn command(dir: &Path, port: u16) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GATEHOUSE_BIND", format!("127.0.0.1:{port}"))
        .env("GATEHOUSE_ISSUER", format!("http://127.0.0.1:{port}"))
        .env("GATEHOUSE_DATABASE", dir.join("gh.db"))
        .env("GATEHOUSE_KEYS_DIR", dir.join("keys"))
        .env("GATEHOUSE_RATE_LIMITS", "off")
        .kill_on_drop(true);
    cmd
}

pub(crate) struct Server {
    child: Child,
    base: String,
    client: reqwest::Client,
}

pub(crate) async fn start(dir: &Path, extra: &[(&str, &str)]) -> Server {
    let port = free_port();
    let mut cmd = command(dir, port);
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let child = cmd
        .arg("serve")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start gatehouse");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    for _ in 0..200 {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status() == StatusCode::OK
        {
            return Server {
                child,
                base,
                client,
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("gatehouse did not become ready on {base}");
}

impl Server {
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = r.status();
        let text = r.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn terminate(&self) {
        let pid = self.child.id().expect("pid").to_string();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill");
        assert!(ok.success());
    }

    /// Stops the server and returns everything it wrote to stdout and stderr.
    pub(crate) async fn stop_and_collect(mut self) -> String {
        self.terminate();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("gatehouse did not exit after SIGTERM")
            .expect("wait");
        assert!(status.success(), "exit status after SIGTERM: {status}");
        let mut out = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            s.read_to_string(&mut out).await.expect("stdout");
        }
        if let Some(mut s) = self.child.stderr.take() {
            s.read_to_string(&mut out).await.expect("stderr");
        }
        out
    }
}

/// Runs a full signup → login → refresh → reuse → password change → logout flow and
/// returns every secret the flow handled.
async fn flow(server: &Server) -> Vec<String> {
    let email = unique_email("logs");
    let mut secrets = vec![PASSWORD.to_owned(), OTHER_PASSWORD.to_owned()];
    let (s, signup) = server
        .post("/v1/signup", json!({"email": email, "password": PASSWORD}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{signup}");
    let (s, _) = server
        .post(
            "/v1/login",
            json!({"email": email, "password": "Wrong-Password-1!"}),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    secrets.push("Wrong-Password-1!".into());
    let (s, login) = server
        .post("/v1/login", json!({"email": email, "password": PASSWORD}))
        .await;
    assert_eq!(s, StatusCode::OK, "{login}");
    let first = login["refresh_token"].as_str().expect("refresh").to_owned();
    let (s, rotated) = server
        .post("/v1/refresh", json!({"refresh_token": first}))
        .await;
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
    let (s, _) = server
        .post("/v1/refresh", json!({"refresh_token": second}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let last = changed["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();
    let (s, _) = server
        .post("/v1/logout", json!({"refresh_token": last}))
        .await;
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
        let server = start(
            dir.path(),
            &[("GATEHOUSE_LOG_FORMAT", format), ("RUST_LOG", "debug")],
        )
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
    let server = start(dir.path(), &[]).await;
    let email = unique_email("drain");
    let (s, _) = server
        .post("/v1/signup", json!({"email": email, "password": PASSWORD}))
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

pub(crate) async fn cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    let mut cmd = command(dir, free_port());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run cli");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[tokio::test]
async fn unsafe_configuration_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    for (key, value, words) in [
        ("GATEHOUSE_ACCESS_TTL", "2h", "GATEHOUSE_ACCESS_TTL"),
        ("GATEHOUSE_CORS_ORIGINS", "*", "wildcards are refused"),
        ("GATEHOUSE_ISSUER", "http://auth.example.com", "plain http"),
    ] {
        let (code, text) = cli(dir.path(), &["config", "check"], &[(key, value)]).await;
        assert_eq!(code, 1, "{key}={value}: {text}");
        assert!(text.contains(words), "{key}={value}: {text}");
        assert_eq!(text.trim().lines().count(), 1, "one line: {text}");
    }

    // A key file others can read stops `serve`.
    let (code, text) = cli(dir.path(), &["keys", "generate"], &[]).await;
    assert_eq!(code, 0, "{text}");
    let key = std::fs::read_dir(dir.path().join("keys"))
        .expect("dir")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|e| e == "pem"))
        .expect("a key");
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (code, text) = cli(dir.path(), &["serve"], &[]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("readable by other users"), "{text}");
    let (code, text) = cli(dir.path(), &["config", "check"], &[]).await;
    assert_eq!(code, 1, "{text}");
}

#[tokio::test]
async fn cli_manages_users_and_sessions_with_documented_exit_codes() {
    let dir = tempfile::tempdir().expect("tmp");
    let server = start(dir.path(), &[]).await;
    let email = unique_email("cli");
    let (s, signup) = server
        .post("/v1/signup", json!({"email": email, "password": PASSWORD}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let refresh = signup["refresh_token"]
        .as_str()
        .expect("refresh")
        .to_owned();

    let (code, text) = cli(dir.path(), &["users", "list", "--email", &email[..6]], &[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains(&email), "{text}");
    let (code, text) = cli(dir.path(), &["sessions", "list", "--user", &email], &[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("live"), "{text}");
    let (code, text) = cli(dir.path(), &["sessions", "revoke", "--user", &email], &[]).await;
    assert_eq!(code, 0, "{text}");
    let (s, body) = server
        .post("/v1/refresh", json!({"refresh_token": refresh}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_refresh_token");

    let (code, text) = cli(dir.path(), &["users", "disable", &email], &[]).await;
    assert_eq!(code, 0, "{text}");
    let (s, _) = server
        .post("/v1/login", json!({"email": email, "password": PASSWORD}))
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    let (code, text) = cli(dir.path(), &["audit", "--user", &email], &[]).await;
    assert_eq!(code, 0, "{text}");
    for kind in ["signup", "session_revoked", "user_updated", "login_failed"] {
        assert!(
            text.contains(kind),
            "{kind} missing from the audit log:\n{text}"
        );
    }

    // User errors exit 1 with one line.
    let (code, text) = cli(dir.path(), &["users", "show", "nobody@example.com"], &[]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("no user"), "{text}");
    let (code, text) = cli(
        dir.path(),
        &["sessions", "revoke", "--family", "not-a-uuid"],
        &[],
    )
    .await;
    assert_eq!(code, 1, "{text}");
    // A password on argv is impossible: there is no flag for it.
    let (code, _) = cli(
        dir.path(),
        &[
            "users",
            "create",
            "--email",
            "x@example.com",
            "--password",
            "p",
        ],
        &[],
    )
    .await;
    assert_eq!(code, 1, "an unknown flag is a user error");
    server.stop_and_collect().await;
}
