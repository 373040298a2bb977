//! Storage faults on PostgreSQL, against a server each test starts for itself
//! (`kit::pg_private`): the server stopped (`-m fast`, `-m immediate`) and started again
//! under load, its backends killed with `pg_terminate_backend`, a full pool behind a
//! locked table, and gatehouse started before its database.
//!
//! What must hold: a write that cannot be done answers 503 `service_unavailable` with
//! `Retry-After`, within a bounded time, never 500; JWKS and offline verification of
//! access tokens keep working (endpoints that read the database, `/v1/me` included,
//! answer 503 too); `/readyz` says 503 while the database is down; every acknowledged
//! write survives; and the service recovers by itself, without a write failing after
//! the database is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::kit::password::PASSWORD;
use crate::kit::pg_private::{self, PrivatePostgres};
use crate::kit::process::{self, Binary, Server};

/// The checkout timeout the tests give gatehouse (`GATEHOUSE_DB_CONNECT_TIMEOUT`).
const CHECKOUT: Duration = Duration::from_secs(2);
/// Longest a request may take during a fault: the checkout timeout plus hashing and a
/// busy machine's slack. Anything longer is a hang.
pub(super) const BOUND: Duration = Duration::from_secs(6);

fn binary_on(dir: &std::path::Path, pg: &PrivatePostgres) -> Binary {
    Binary::in_dir(dir)
        .on_postgres(&pg.url())
        .with("GATEHOUSE_DB_POOL_SIZE", "4")
        .with(
            "GATEHOUSE_DB_CONNECT_TIMEOUT",
            &format!("{}s", CHECKOUT.as_secs()),
        )
        // A client whose refresh answered 503 retries the same token later: within the
        // grace it gets the child, should the 503's rotation have committed after all.
        .with("GATEHOUSE_REFRESH_REUSE_GRACE", "120s")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Op {
    Signup,
    Login,
    Refresh,
    Me,
    Jwks,
}

impl Op {
    pub(super) fn writes(self) -> bool {
        matches!(self, Op::Signup | Op::Login | Op::Refresh)
    }
}

#[derive(Debug)]
pub(super) struct Event {
    pub(super) op: Op,
    pub(super) sent: Instant,
    pub(super) took: Duration,
    pub(super) status: StatusCode,
}

pub(super) struct Chain {
    access: String,
    pub(super) refresh: String,
    /// The last refresh answered 503: it may have committed.
    uncertain: bool,
}

/// What one load worker saw and holds.
#[derive(Default)]
pub(super) struct Worker {
    id: usize,
    serial: u64,
    /// Accounts whose signup answered 201.
    pub(super) confirmed: Vec<String>,
    pub(super) chains: Vec<Chain>,
    pub(super) events: Vec<Event>,
    pub(super) violations: Vec<String>,
}

impl Worker {
    async fn send(
        &mut self,
        op: Op,
        request: reqwest::RequestBuilder,
    ) -> Option<(StatusCode, Value)> {
        let sent = Instant::now();
        let response = match request.timeout(Duration::from_secs(30)).send().await {
            Ok(r) => r,
            Err(e) => {
                self.violations
                    .push(format!("{op:?}: no answer from gatehouse: {e}"));
                return None;
            }
        };
        let status = response.status();
        let retry_after = response
            .headers()
            .contains_key(reqwest::header::RETRY_AFTER);
        let text = response.text().await.unwrap_or_default();
        let took = sent.elapsed();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_server_error() && status != StatusCode::SERVICE_UNAVAILABLE {
            self.violations
                .push(format!("{op:?} answered {status}: {body}"));
        }
        if status == StatusCode::SERVICE_UNAVAILABLE
            && (body["error"] != "service_unavailable" || !retry_after)
        {
            self.violations.push(format!(
                "{op:?} answered 503 without the contract's body or Retry-After: {body}"
            ));
        }
        if took > BOUND {
            self.violations.push(format!(
                "{op:?} took {:.1} s (bound {BOUND:?}): {status}",
                took.as_secs_f64()
            ));
        }
        self.events.push(Event {
            op,
            sent,
            took,
            status,
        });
        Some((status, body))
    }

    fn tokens(body: &Value) -> Option<Chain> {
        Some(Chain {
            access: body["access_token"].as_str()?.to_owned(),
            refresh: body["refresh_token"].as_str()?.to_owned(),
            uncertain: false,
        })
    }

    async fn step(&mut self, client: &reqwest::Client, base: &str, roll: u64) {
        if roll.is_multiple_of(4)
            && let Some(i) = self.chains.iter().position(|c| c.uncertain)
        {
            return self.refresh(client, base, i).await;
        }
        match roll % 20 {
            0..=2 => {
                self.serial += 1;
                let email = format!("pgfault-w{}-{}@example.com", self.id, self.serial);
                let request = client
                    .post(format!("{base}/v1/signup"))
                    .json(&json!({"email": email, "password": PASSWORD}));
                if let Some((status, body)) = self.send(Op::Signup, request).await {
                    match status {
                        StatusCode::CREATED => {
                            self.confirmed.push(email);
                            self.chains.extend(Self::tokens(&body));
                        }
                        // Unknown fate: the account is not counted as acknowledged.
                        StatusCode::SERVICE_UNAVAILABLE => {}
                        other => self
                            .violations
                            .push(format!("signup answered {other}: {body}")),
                    }
                }
            }
            3 if !self.confirmed.is_empty() => {
                let email = self.confirmed[roll as usize % self.confirmed.len()].clone();
                let request = client
                    .post(format!("{base}/v1/login"))
                    .json(&json!({"email": email, "password": PASSWORD}));
                if let Some((status, body)) = self.send(Op::Login, request).await {
                    match status {
                        StatusCode::OK => self.chains.extend(Self::tokens(&body)),
                        StatusCode::SERVICE_UNAVAILABLE => {}
                        other => self.violations.push(format!(
                            "login of an acknowledged account answered {other}: {body}"
                        )),
                    }
                }
            }
            4..=5 => {
                let request = client.get(format!("{base}/.well-known/jwks.json"));
                if let Some((status, body)) = self.send(Op::Jwks, request).await
                    && status != StatusCode::OK
                {
                    self.violations
                        .push(format!("JWKS answered {status}: {body}"));
                }
            }
            6..=8 if !self.chains.is_empty() => {
                let access = self.chains[roll as usize % self.chains.len()]
                    .access
                    .clone();
                let request = client.get(format!("{base}/v1/me")).bearer_auth(access);
                if let Some((status, body)) = self.send(Op::Me, request).await
                    && !matches!(status, StatusCode::OK | StatusCode::SERVICE_UNAVAILABLE)
                {
                    self.violations.push(format!(
                        "/v1/me with a live session answered {status}: {body}"
                    ));
                }
            }
            _ if !self.chains.is_empty() => {
                let i = roll as usize % self.chains.len();
                self.refresh(client, base, i).await;
            }
            _ => {}
        }
    }

    async fn refresh(&mut self, client: &reqwest::Client, base: &str, i: usize) {
        let request = client
            .post(format!("{base}/v1/refresh"))
            .json(&json!({"refresh_token": self.chains[i].refresh}));
        let Some((status, body)) = self.send(Op::Refresh, request).await else {
            return;
        };
        match status {
            StatusCode::OK => match Self::tokens(&body) {
                Some(next) => self.chains[i] = next,
                None => self
                    .violations
                    .push(format!("refresh 200 without tokens: {body}")),
            },
            StatusCode::SERVICE_UNAVAILABLE => self.chains[i].uncertain = true,
            other => {
                self.violations.push(format!(
                    "a refresh token received in a 200 answered {other} (after a 503: {}): {body}",
                    self.chains[i].uncertain
                ));
                self.chains.remove(i);
            }
        }
    }
}

/// Workers sending a mix of signups, logins, refreshes, `/v1/me` and JWKS until told to
/// stop; a few accounts are made first so every kind of request runs from the start.
pub(super) struct Load {
    stop: Arc<AtomicBool>,
    handles: Vec<tokio::task::JoinHandle<Worker>>,
}

impl Load {
    async fn start(server: &Server, workers: usize) -> Self {
        Self::start_on(std::slice::from_ref(&server.base), workers, None).await
    }

    /// Workers that send each request to the next of `bases` in turn (several
    /// processes on one database), each sending at most `pace` requests a second when
    /// given (a bounded load).
    pub(super) async fn start_on(bases: &[String], workers: usize, pace: Option<u32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for id in 0..workers {
            let (stop, bases) = (stop.clone(), bases.to_vec());
            handles.push(tokio::spawn(async move {
                let client = process::client();
                let mut w = Worker {
                    id,
                    ..Worker::default()
                };
                let mut roll = id as u64 * 7;
                let mut turn = id;
                while w.chains.is_empty() && w.violations.is_empty() {
                    w.step(&client, &bases[turn % bases.len()], 0).await;
                    turn += 1;
                }
                while !stop.load(Ordering::SeqCst) {
                    roll = roll
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    w.step(&client, &bases[turn % bases.len()], roll >> 33)
                        .await;
                    turn += 1;
                    if let Some(per_second) = pace {
                        tokio::time::sleep(Duration::from_secs(1) / per_second.max(1)).await;
                    }
                }
                w
            }));
        }
        Self { stop, handles }
    }

    pub(super) async fn finish(self) -> Vec<Worker> {
        self.stop.store(true, Ordering::SeqCst);
        let mut out = Vec::new();
        for h in self.handles {
            out.push(h.await.expect("a load worker panicked"));
        }
        out
    }
}

/// Every acknowledged account logs in, every chain's newest token refreshes, the
/// retried 503s included.
pub(super) async fn check_acknowledged(server: &Server, workers: &[Worker]) -> Vec<String> {
    let client = process::client();
    let mut violations = Vec::new();
    for w in workers {
        for email in &w.confirmed {
            let r = client
                .post(server.url("/v1/login"))
                .json(&json!({"email": email, "password": PASSWORD}))
                .send()
                .await
                .expect("login");
            if r.status() != StatusCode::OK {
                violations.push(format!("{email} (201) cannot log in: {}", r.status()));
            }
        }
    }
    let chains: Vec<String> = workers
        .iter()
        .flat_map(|w| w.chains.iter().map(|c| c.refresh.clone()))
        .collect();
    let failures: Vec<String> = futures::stream::iter(chains)
        .map(|token| {
            let request = client
                .post(server.url("/v1/refresh"))
                .json(&json!({"refresh_token": token}));
            async move {
                let r = request.send().await.expect("refresh");
                let status = r.status();
                (status != StatusCode::OK).then(|| {
                    format!("the newest token of a chain answered {status} after the faults")
                })
            }
        })
        .buffer_unordered(4)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    violations.extend(failures);
    violations
}

/// Verifies `access` against the JWKS gatehouse serves now, as a resource server does.
async fn verify_offline(server: &Server, access: &str) -> Result<(), String> {
    let jwks: Value = server
        .client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let kid = jsonwebtoken::decode_header(access)
        .map_err(|e| e.to_string())?
        .kid
        .ok_or("no kid")?;
    let jwk = jwks["keys"]
        .as_array()
        .and_then(|keys| keys.iter().find(|k| k["kid"] == kid.as_str()))
        .ok_or_else(|| format!("kid {kid} not in the JWKS: {jwks}"))?;
    let key = DecodingKey::from_rsa_components(
        jwk["n"].as_str().ok_or("no n")?,
        jwk["e"].as_str().ok_or("no e")?,
    )
    .map_err(|e| e.to_string())?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.validate_aud = false;
    validation.set_issuer(&["http://127.0.0.1"]);
    jsonwebtoken::decode::<Value>(access, &key, &validation)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

pub(super) async fn readyz(server: &Server) -> StatusCode {
    server
        .client
        .get(server.url("/readyz"))
        .timeout(BOUND)
        .send()
        .await
        .map(|r| r.status())
        .unwrap_or(StatusCode::REQUEST_TIMEOUT)
}

/// Runs `f` on a blocking thread (the PostgreSQL tools and clients block).
pub(super) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.expect("blocking job")
}

pub(super) fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_and_started_again_under_load() {
    let pg = Arc::new(PrivatePostgres::start(&[]));
    let dir = tempfile::tempdir().expect("temp dir");
    let files = binary_on(dir.path(), &pg);
    let server = files.start().await;
    let load = Load::start(&server, 4).await;
    tokio::time::sleep(Duration::from_millis(800)).await;

    // An access token from before the outages, for the offline check.
    let before: Value = process::client()
        .post(server.url("/v1/signup"))
        .json(&json!({"email": "pgfault-offline@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("signup")
        .json()
        .await
        .expect("json");
    let access = before["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();

    let mut violations = Vec::new();
    let mut outages = Vec::new();
    for mode in ["fast", "immediate"] {
        let down = Instant::now();
        let p = pg.clone();
        blocking(move || p.stop(mode)).await;
        let stopped = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let ready = readyz(&server).await;
        if ready != StatusCode::SERVICE_UNAVAILABLE {
            violations.push(format!(
                "-m {mode}: /readyz answered {ready} with the database down"
            ));
        }
        if let Err(e) = verify_offline(&server, &access).await {
            violations.push(format!(
                "-m {mode}: an access token no longer verifies with the JWKS during the outage: {e}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(900)).await;
        let p = pg.clone();
        blocking(move || p.start_again()).await;
        let restarted = Instant::now();
        let mut ready_after = None;
        while restarted.elapsed() < Duration::from_secs(15) {
            if readyz(&server).await == StatusCode::OK {
                ready_after = Some(restarted.elapsed());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if ready_after.is_none() {
            violations.push(format!(
                "-m {mode}: /readyz not 200 within 15 s of the restart"
            ));
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
        outages.push((mode, down, stopped, restarted, ready_after));
    }
    let mut workers = load.finish().await;
    violations.extend(
        workers
            .iter_mut()
            .flat_map(|w| std::mem::take(&mut w.violations)),
    );
    let events: Vec<&Event> = workers.iter().flat_map(|w| &w.events).collect();

    let ends: Vec<Instant> = outages
        .iter()
        .skip(1)
        .map(|o| o.1)
        .chain([Instant::now()])
        .collect();
    for ((mode, down, stopped, restarted, ready_after), end) in outages.iter().zip(ends) {
        let unavailable: Vec<Duration> = events
            .iter()
            .filter(|e| e.sent >= *stopped && e.sent < *restarted)
            .filter(|e| e.status == StatusCode::SERVICE_UNAVAILABLE)
            .map(|e| e.took)
            .collect();
        let served_jwks = events
            .iter()
            .filter(|e| e.op == Op::Jwks && e.sent >= *stopped && e.sent < *restarted)
            .count();
        if unavailable.is_empty() {
            violations.push(format!(
                "-m {mode}: the load did not run through the outage"
            ));
        }
        // Recovered: the first write answered 2xx after the restart; no write sent after
        // it may fail (each stale pooled connection used to fail one).
        let recovered = events
            .iter()
            .filter(|e| e.op.writes() && e.sent >= *restarted && e.status.is_success())
            .map(|e| e.sent + e.took)
            .min();
        match recovered {
            None => violations.push(format!("-m {mode}: no write succeeded after the restart")),
            Some(at) => {
                let late: Vec<&&Event> = events
                    .iter()
                    // Answered before the next outage began.
                    .filter(|e| e.sent >= at && e.sent + e.took < end)
                    .filter(|e| e.status == StatusCode::SERVICE_UNAVAILABLE)
                    .collect();
                if !late.is_empty() {
                    violations.push(format!(
                        "-m {mode}: {} requests answered 503 after the service had recovered: \
                         {late:?}\nserver log:\n{}",
                        late.len(),
                        files.log_tail()
                    ));
                }
                eprintln!(
                    "pg restart -m {mode}: stop took {:.2} s; {} requests answered 503 while \
                     down (median {:.0} ms, max {:.0} ms); JWKS served {served_jwks} times; \
                     after the restart /readyz 200 in {:.0} ms, first write acknowledged in {:.0} ms",
                    (*stopped - *down).as_secs_f64(),
                    unavailable.len(),
                    percentile(unavailable.clone(), 0.5).as_secs_f64() * 1e3,
                    percentile(unavailable.clone(), 1.0).as_secs_f64() * 1e3,
                    ready_after.unwrap_or_default().as_secs_f64() * 1e3,
                    (at - *restarted).as_secs_f64() * 1e3,
                );
            }
        }
    }
    let requests = events.len();
    violations.extend(restart_while_idle(&server, &pg, &mut workers).await);
    violations.extend(check_acknowledged(&server, &workers).await);
    let acknowledged: usize = workers.iter().map(|w| w.confirmed.len()).sum();
    server.kill().await;
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert!(acknowledged > 0, "the load acknowledged no signup");
    eprintln!("pg restart: {requests} requests, {acknowledged} acknowledged signups kept");
}

/// The pool's idle connections die in a restart nobody saw (no request ran while the
/// server was down): the first writes after it must not fail on them. (They did, one 503
/// per pooled connection, before stale connections were checked at checkout.)
async fn restart_while_idle(
    server: &Server,
    pg: &Arc<PrivatePostgres>,
    workers: &mut [Worker],
) -> Vec<String> {
    let mut violations = Vec::new();
    let chains: Vec<&mut Chain> = workers
        .iter_mut()
        .flat_map(|w| w.chains.iter_mut())
        .take(12)
        .collect();
    // Warm: enough requests at once to open every pooled connection.
    let warm = futures::future::join_all(chains.iter().map(|c| {
        server
            .client
            .get(server.url("/v1/me"))
            .bearer_auth(&c.access)
            .send()
    }))
    .await;
    let warm_ok = warm
        .iter()
        .filter(|r| matches!(r, Ok(r) if r.status().is_success()))
        .count();
    let idle = idle_connections(server).await;
    if idle < 2 {
        violations.push(format!(
            "the pool held {idle} idle connections before the quiet restart ({warm_ok} warm-up \
             requests answered 200): the restart would test nothing"
        ));
    }
    let p = pg.clone();
    blocking(move || {
        p.stop("fast");
        p.start_again();
    })
    .await;
    let answers = futures::future::join_all(chains.into_iter().map(|c| {
        let request = server
            .client
            .post(server.url("/v1/refresh"))
            .json(&json!({"refresh_token": c.refresh}));
        async move {
            let r = request.send().await.map_err(|e| e.to_string())?;
            let status = r.status();
            let body: Value = r.json().await.map_err(|e| e.to_string())?;
            if status == StatusCode::OK
                && let Some(next) = Worker::tokens(&body)
            {
                *c = next;
            }
            Ok::<_, String>(status)
        }
    }))
    .await;
    let failed: Vec<_> = answers
        .iter()
        .filter(|a| !matches!(a, Ok(StatusCode::OK)))
        .collect();
    if !failed.is_empty() {
        violations.push(format!(
            "after a restart while {idle} pooled connections idled, {} of {} refreshes \
             failed: {failed:?}",
            failed.len(),
            answers.len()
        ));
    }
    eprintln!(
        "pg restart while idle: {idle} idle pooled connections went stale; {} of {} \
         refreshes right after answered 200",
        answers.len() - failed.len(),
        answers.len()
    );
    violations
}

/// `gatehouse_db_pool_idle_connections` from `/metrics`.
async fn idle_connections(server: &Server) -> u64 {
    let text = server
        .client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix("gatehouse_db_pool_idle_connections "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no idle-connection gauge in /metrics:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_backends_killed_under_load() {
    let pg = Arc::new(PrivatePostgres::start(&[]));
    let dir = tempfile::tempdir().expect("temp dir");
    let server = binary_on(dir.path(), &pg).start().await;
    let load = Load::start(&server, 4).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut killed = 0;
    let mut last_kill = Instant::now();
    for _ in 0..5 {
        let p = pg.clone();
        killed += blocking(move || p.terminate_gatehouse_backends()).await;
        last_kill = Instant::now();
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut workers = load.finish().await;
    let mut violations: Vec<String> = workers
        .iter_mut()
        .flat_map(|w| std::mem::take(&mut w.violations))
        .collect();
    let events: Vec<&Event> = workers.iter().flat_map(|w| &w.events).collect();
    let unavailable = events
        .iter()
        .filter(|e| e.status == StatusCode::SERVICE_UNAVAILABLE)
        .count();
    // A request in flight on a killed backend may answer 503; one sent well after the
    // last kill (the margin is for a slow machine: the backends exit asynchronously) is
    // on a fresh connection and may not.
    let settled = last_kill + Duration::from_millis(500);
    let late: Vec<&&Event> = events
        .iter()
        .filter(|e| e.sent > settled && e.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    if !late.is_empty() {
        violations.push(format!(
            "{} requests answered 503 after the last kill had settled: {late:?}",
            late.len()
        ));
    }
    if killed < 5 {
        violations.push(format!(
            "only {killed} backends were killed: the fault did not happen"
        ));
    }
    violations.extend(check_acknowledged(&server, &workers).await);
    eprintln!(
        "pg_terminate_backend: {killed} backends killed in 5 rounds under {} requests; {unavailable} \
         answered 503, none 500",
        events.len()
    );
    server.kill().await;
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// Two pooled connections, both stuck behind a table another session holds locked:
/// requests beyond them wait the checkout timeout and answer 503; the two stuck ones are
/// ended by the operator's `statement_timeout` and answer 503 too. Once the lock goes,
/// everything answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_pool_answers_503_then_recovers() {
    const STATEMENT_TIMEOUT_MS: u64 = 2500;
    let pg = Arc::new(PrivatePostgres::start(&[]));
    // For gatehouse's sessions only: the locking session below sets its own.
    pg.sql(&format!(
        "ALTER DATABASE postgres SET statement_timeout = {STATEMENT_TIMEOUT_MS}"
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let server = binary_on(dir.path(), &pg)
        .with("GATEHOUSE_DB_POOL_SIZE", "2")
        .with("GATEHOUSE_DB_CONNECT_TIMEOUT", "1s")
        .start()
        .await;
    let client = process::client();
    let mut access = Vec::new();
    for i in 0..8 {
        let body: Value = client
            .post(server.url("/v1/signup"))
            .json(&json!({"email": format!("pool-{i}@example.com"), "password": PASSWORD}))
            .send()
            .await
            .expect("signup")
            .json()
            .await
            .expect("json");
        access.push(body["access_token"].as_str().expect("access").to_owned());
    }

    // A session that holds `users` locked until told to let go.
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let url = pg.url();
    let holder = std::thread::spawn(move || {
        let mut c = pg_private::connect(&url);
        c.batch_execute(
            "SET statement_timeout = 0; BEGIN; LOCK TABLE users IN ACCESS EXCLUSIVE MODE",
        )
        .expect("lock users");
        locked_tx.send(()).expect("signal");
        let _ = release_rx.recv_timeout(Duration::from_secs(30));
        c.batch_execute("ROLLBACK").expect("release");
    });
    locked_rx.recv().expect("the lock was not taken");

    let started = Instant::now();
    let answers: Vec<(StatusCode, bool, Duration)> =
        futures::future::join_all(access.iter().map(|token| {
            let request = client
                .get(server.url("/v1/me"))
                .bearer_auth(token)
                .timeout(Duration::from_secs(30));
            async move {
                let sent = Instant::now();
                let r = request.send().await.expect("an answer");
                let retry = r.headers().contains_key(reqwest::header::RETRY_AFTER);
                (r.status(), retry, sent.elapsed())
            }
        }))
        .await;
    let jwks = client
        .get(server.url("/.well-known/jwks.json"))
        .send()
        .await
        .expect("jwks")
        .status();
    let held = started.elapsed();
    release_tx.send(()).expect("release");
    holder.join().expect("lock holder");

    let bound = Duration::from_millis(STATEMENT_TIMEOUT_MS) + Duration::from_secs(2);
    let mut violations = Vec::new();
    for (status, retry, took) in &answers {
        if *status != StatusCode::SERVICE_UNAVAILABLE || !retry || *took > bound {
            violations.push(format!(
                "/v1/me behind a full pool: {status} (Retry-After: {retry}) in {:.2} s, \
                 expected 503 with Retry-After within {bound:?}",
                took.as_secs_f64()
            ));
        }
    }
    // A lower bound only: it shows the 503s came from a full pool, not a refused server.
    let checkout_waits = answers
        .iter()
        .filter(|(_, _, t)| *t >= Duration::from_millis(900))
        .count();
    if checkout_waits == 0 {
        violations.push(format!(
            "no request waited for the 1 s checkout timeout: {answers:?}"
        ));
    }
    if jwks != StatusCode::OK {
        violations.push(format!("JWKS answered {jwks} while the pool was full"));
    }
    // Recovery: the same requests, once the lock is gone.
    let recovered = Instant::now();
    for token in &access {
        let r = client
            .get(server.url("/v1/me"))
            .bearer_auth(token)
            .send()
            .await
            .expect("an answer");
        if r.status() != StatusCode::OK {
            violations.push(format!("/v1/me after the lock went: {}", r.status()));
        }
    }
    eprintln!(
        "full pool (2 connections, 1 s checkout, {STATEMENT_TIMEOUT_MS} ms statement timeout): \
         8 requests answered {:?} in {:?}; {checkout_waits} waited the checkout timeout; \
         lock held {:.1} s; 8 requests served in {:.0} ms after it went",
        answers.iter().map(|a| a.0.as_u16()).collect::<Vec<_>>(),
        answers.iter().map(|a| a.2.as_millis()).collect::<Vec<_>>(),
        held.as_secs_f64(),
        recovered.elapsed().as_secs_f64() * 1e3
    );
    server.kill().await;
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

/// Started before its database, gatehouse retries for `GATEHOUSE_DB_START_TIMEOUT` and
/// serves once the database is there; with nothing to connect to, it exits non-zero
/// after that time, saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gatehouse_started_before_postgres_waits_then_gives_up() {
    let pg = Arc::new(PrivatePostgres::start(&[]));
    let p = pg.clone();
    blocking(move || p.stop("fast")).await;
    let dir = tempfile::tempdir().expect("temp dir");

    // Down for good: a bounded wait, then a clear failure.
    let files = binary_on(dir.path(), &pg).with("GATEHOUSE_DB_START_TIMEOUT", "1s");
    let begun = Instant::now();
    let gave_up = files.try_start().await;
    let took = begun.elapsed();
    let Err(log) = gave_up else {
        panic!("gatehouse served with its database down");
    };
    assert!(
        log.contains("exited with") && log.contains("cannot connect to PostgreSQL"),
        "gatehouse must exit non-zero saying it cannot reach PostgreSQL: {log}"
    );
    assert!(
        took < Duration::from_secs(15),
        "gave up after {took:?} with a 1 s start timeout"
    );

    // Up a little later: gatehouse waits, migrates and serves.
    let files = binary_on(dir.path(), &pg).with("GATEHOUSE_DB_START_TIMEOUT", "30s");
    let starting = tokio::spawn(async move { files.try_start().await });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        !starting.is_finished(),
        "gatehouse finished starting without its database"
    );
    let p = pg.clone();
    blocking(move || p.start_again()).await;
    let db_up = Instant::now();
    let server = match starting.await.expect("start task") {
        Ok(server) => server,
        Err(e) => panic!("gatehouse did not start once PostgreSQL came up: {e}"),
    };
    let serving = db_up.elapsed();
    let r = server
        .client
        .post(server.url("/v1/signup"))
        .json(&json!({"email": "late-db@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("signup");
    assert_eq!(r.status(), StatusCode::CREATED);
    assert_eq!(readyz(&server).await, StatusCode::OK);
    let out = server.stop_and_collect().await;
    assert!(
        out.contains("cannot be reached yet"),
        "the wait must be logged: {out}"
    );
    eprintln!(
        "start before the database: gave up after {:.1} s with a 1 s timeout; served {:.0} ms \
         after the database came up",
        took.as_secs_f64(),
        serving.as_secs_f64() * 1e3
    );
}
