//! Storage faults against the real binary: a database locked by another process, a full
//! disk (a small tmpfs), a read-only file system, and a flood of requests stuck behind a
//! lock. Writes must answer 503 `service_unavailable` with `Retry-After` within a bounded
//! time; JWKS and bearer verification keep working; `/readyz` says 503 while writes
//! fail; the file is never corrupted; the service recovers by itself once the fault goes.
//!
//! The full-disk and read-only tests mount a tmpfs, so they need root: see
//! [`needs_root`].

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::invariants::{open_db, storage_violations};
use crate::kit::app::unique_email;
use crate::kit::password::PASSWORD;
use crate::kit::process::{Binary, Server};

mod needs_root;

/// Longer than the service's 5 s lock wait plus its hashing, short of "hung".
const BOUND: Duration = Duration::from_secs(20);

struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
    took: Duration,
}

impl std::fmt::Debug for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} in {:.2}s (Retry-After {:?}): {}",
            self.status,
            self.took.as_secs_f64(),
            self.retry_after,
            self.body
        )
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let start = Instant::now();
    let response = request
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .expect("the request got no answer at all");
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = response.text().await.expect("no body");
    Answer {
        status,
        retry_after,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        took: start.elapsed(),
    }
}

struct Api {
    client: reqwest::Client,
    base: String,
}

impl Api {
    fn new(server: &Server) -> Self {
        Self {
            client: server.client.clone(),
            base: server.base.clone(),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        send(self.client.post(format!("{}{path}", self.base)).json(&body)).await
    }

    async fn get(&self, path: &str, bearer: Option<&str>) -> Answer {
        let mut request = self.client.get(format!("{}{path}", self.base));
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        send(request).await
    }

    async fn signup(&self, email: &str) -> Answer {
        self.post("/v1/signup", json!({"email": email, "password": PASSWORD}))
            .await
    }

    async fn login(&self, email: &str) -> Answer {
        self.post("/v1/login", json!({"email": email, "password": PASSWORD}))
            .await
    }

    async fn refresh(&self, token: &str) -> Answer {
        self.post("/v1/refresh", json!({"refresh_token": token}))
            .await
    }

    /// Signs up a fresh account; returns (email, access token, refresh token).
    async fn account(&self, tag: &str) -> (String, String, String) {
        let email = unique_email(tag);
        let a = self.signup(&email).await;
        assert_eq!(a.status, StatusCode::CREATED, "signup: {a:?}");
        (
            email,
            a.body["access_token"].as_str().expect("access").to_owned(),
            a.body["refresh_token"]
                .as_str()
                .expect("refresh")
                .to_owned(),
        )
    }

    /// Polls `/readyz` until it answers `want` (or `BOUND` passes); returns the last status.
    async fn readyz_becomes(&self, want: StatusCode) -> StatusCode {
        let deadline = Instant::now() + BOUND;
        loop {
            let a = self.get("/readyz", None).await;
            if a.status == want || Instant::now() > deadline {
                return a.status;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Failed expectations, collected so that one run shows every one of them.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn unavailable(&mut self, what: &str, a: &Answer) {
        let ok = a.status == StatusCode::SERVICE_UNAVAILABLE
            && a.body["error"] == "service_unavailable"
            && a.retry_after
                .as_deref()
                .is_some_and(|v| v.parse::<u64>().is_ok())
            && a.took < BOUND;
        if !ok {
            self.0.push(format!(
                "{what}: expected 503 service_unavailable with Retry-After within {BOUND:?}, got {a:?}"
            ));
        }
    }

    /// A write on a full disk either commits (it fitted in room the WAL already held) or
    /// is refused with 503; returns whether it committed.
    fn committed_or_unavailable(&mut self, what: &str, a: &Answer, committed: StatusCode) -> bool {
        if a.status == committed {
            return true;
        }
        self.unavailable(what, a);
        false
    }

    fn status(&mut self, what: &str, a: &Answer, want: StatusCode) {
        if a.status != want {
            self.0.push(format!("{what}: expected {want}, got {a:?}"));
        }
    }

    fn ready(&mut self, what: &str, got: StatusCode, want: StatusCode) {
        if got != want {
            self.0
                .push(format!("{what}: /readyz answered {got}, expected {want}"));
        }
    }

    fn sound(&mut self, database: &Path) {
        let conn = open_db(database);
        for v in storage_violations(&conn) {
            self.0.push(format!("the file is damaged: {v}"));
        }
    }

    fn assert_none(self, test: &str) {
        assert!(
            self.0.is_empty(),
            "{test}: {} failed expectations:\n{}",
            self.0.len(),
            self.0.join("\n")
        );
    }
}

/// 503 `service_unavailable` with a `Retry-After`, within the bound.
fn assert_unavailable(what: &str, a: &Answer) {
    assert_eq!(
        a.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{what} during the fault: {a:?}"
    );
    assert_eq!(
        a.body["error"], "service_unavailable",
        "{what} during the fault: {a:?}"
    );
    assert!(
        a.retry_after
            .as_deref()
            .is_some_and(|v| v.parse::<u64>().is_ok()),
        "{what}: 503 without a Retry-After: {a:?}"
    );
    assert!(a.took < BOUND, "{what} took too long: {a:?}");
}

fn assert_status(what: &str, a: &Answer, want: StatusCode) {
    assert_eq!(a.status, want, "{what}: {a:?}");
}

fn assert_sound(database: &Path) {
    let conn = open_db(database);
    let violations = storage_violations(&conn);
    assert!(violations.is_empty(), "the file is damaged: {violations:?}");
}

// ------------------------------------------------------------------------------ locked

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_locked_by_another_process_gets_503_on_writes_and_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = Binary::in_dir(dir.path());
    let server = files.start().await;
    let api = Api::new(&server);
    let (email, access, refresh) = api.account("locked").await;
    let mut f = Findings::default();

    // Another process (this test) takes the write lock and sits on it.
    let holder = open_db(&files.database);
    holder
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the lock");

    let fresh = unique_email("locked-new");
    let (signup, login, rotated) =
        tokio::join!(api.signup(&fresh), api.login(&email), api.refresh(&refresh));
    f.unavailable("signup while locked", &signup);
    f.unavailable("login while locked", &login);
    f.unavailable("refresh while locked", &rotated);
    let jwks = api.get("/.well-known/jwks.json", None).await;
    f.status("JWKS while locked", &jwks, StatusCode::OK);
    let me = api.get("/v1/me", Some(&access)).await;
    f.status("GET /v1/me (a read) while locked", &me, StatusCode::OK);
    let health = api.get("/healthz", None).await;
    f.status("/healthz while locked", &health, StatusCode::OK);
    let ready = api.get("/readyz", None).await;
    f.ready(
        "while writes fail on a lock",
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
    );

    holder.execute_batch("COMMIT").expect("release the lock");
    drop(holder);

    // Recovery without a restart: the refresh that failed did not spend the token.
    let ready = api.readyz_becomes(StatusCode::OK).await;
    f.ready("after the lock is released", ready, StatusCode::OK);
    f.status(
        "refresh after release",
        &api.refresh(&refresh).await,
        StatusCode::OK,
    );
    f.status(
        "signup after release",
        &api.signup(&fresh).await,
        StatusCode::CREATED,
    );
    f.status(
        "login after release",
        &api.login(&email).await,
        StatusCode::OK,
    );
    server.kill().await;
    f.sound(&files.database);
    f.assert_none("locked database");
}

// ------------------------------------------------------------------------------ pool exhaustion

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_stuck_behind_a_lock_ends_within_a_bounded_time() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = Binary::in_dir(dir.path()).with("GATEHOUSE_DB_READERS", "2");
    let server = files.start().await;
    let api = Api::new(&server);
    let (email, access, _refresh) = api.account("flood").await;

    let holder = open_db(&files.database);
    holder
        .execute_batch("BEGIN EXCLUSIVE")
        .expect("take the lock");
    let release = tokio::spawn(async move {
        // Held across several 5 s waits, so requests queue behind one another.
        tokio::time::sleep(Duration::from_secs(8)).await;
        holder.execute_batch("COMMIT").expect("release the lock");
    });

    // 160 requests at once: rotations of unknown tokens and logins (writes), /v1/me
    // (reads on a pool of 2), JWKS. Each must end with a status within the bound.
    let bogus = |i: usize| format!("{:0>43}", i);
    let mut requests = Vec::new();
    for i in 0..160usize {
        requests.push((i, i % 4));
    }
    let answers: Vec<(String, Answer)> = futures::stream::iter(requests)
        .map(|(i, kind)| {
            let api = &api;
            let email = email.clone();
            let access = access.clone();
            let token = bogus(i);
            async move {
                match kind {
                    0 => ("refresh".to_owned(), api.refresh(&token).await),
                    1 => ("login".to_owned(), api.login(&email).await),
                    2 => ("me".to_owned(), api.get("/v1/me", Some(&access)).await),
                    _ => (
                        "jwks".to_owned(),
                        api.get("/.well-known/jwks.json", None).await,
                    ),
                }
            }
        })
        .buffer_unordered(160)
        .collect()
        .await;
    release.await.expect("release task");

    let slowest = answers
        .iter()
        .map(|(_, a)| a.took)
        .max()
        .unwrap_or_default();
    let mut by_status = std::collections::BTreeMap::<(String, u16), usize>::new();
    for (what, a) in &answers {
        *by_status
            .entry((what.clone(), a.status.as_u16()))
            .or_default() += 1;
        assert!(a.took < BOUND, "{what} hung: {a:?}");
        assert!(
            !a.status.is_server_error() || a.status == StatusCode::SERVICE_UNAVAILABLE,
            "{what}: {a:?}"
        );
        if a.status == StatusCode::SERVICE_UNAVAILABLE {
            assert_unavailable(what, a);
        }
        match what.as_str() {
            "jwks" | "me" => assert_eq!(a.status, StatusCode::OK, "{what}: {a:?}"),
            "refresh" => assert!(
                matches!(a.status.as_u16(), 401 | 503),
                "refresh of an unknown token: {a:?}"
            ),
            _ => assert!(matches!(a.status.as_u16(), 200 | 429 | 503), "login: {a:?}"),
        }
    }
    eprintln!(
        "flood: 160 concurrent requests behind an 8 s lock, slowest {:.2} s; {by_status:?}",
        slowest.as_secs_f64()
    );
    assert_status(
        "refresh after the flood",
        &api.refresh(&bogus(999)).await,
        StatusCode::UNAUTHORIZED,
    );
    server.kill().await;
    assert_sound(&files.database);
}
