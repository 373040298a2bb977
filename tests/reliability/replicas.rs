//! Three replicas on one PostgreSQL database behind one URL (`kit::replicas`): the rules
//! that must not depend on which replica a request lands on. Requests go round-robin, so
//! a burst of concurrent requests reaches every replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::kit::app::unique_email;
use crate::kit::jwt::{jwks_kids, kid_of, verify_with_jwks};
use crate::kit::password::PASSWORD;
use crate::kit::process;
use crate::kit::process::Server;
use crate::kit::replicas::Replicas;

const REPLICAS: usize = 3;

async fn post(client: &reqwest::Client, url: String, body: Value) -> (StatusCode, Value) {
    let response = client
        .post(url)
        .json(&body)
        .send()
        .await
        .expect("no answer");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn signup(replicas: &Replicas, client: &reqwest::Client, email: &str) -> Value {
    let (status, body) = post(
        client,
        replicas.url("/v1/signup"),
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

/// Ten concurrent refreshes of one token, spread over the replicas: one rotation. With
/// the grace on, every answer is 200 and carries the same child; with it off, exactly
/// one is 200 and the family is revoked by the others. Never a 5xx.
async fn concurrent_refreshes(grace: &str) -> (Vec<(StatusCode, Value)>, Vec<usize>) {
    let test = format!("replicas_refresh_grace_{grace}");
    let Some(replicas) = Replicas::start(&test, REPLICAS, |b| {
        b.with("GATEHOUSE_REFRESH_REUSE_GRACE", grace)
    })
    .await
    else {
        return (Vec::new(), Vec::new());
    };
    let client = process::client();
    let body = signup(&replicas, &client, &unique_email("race")).await;
    let token = body["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    let before = replicas.served();
    let answers = join_all((0..10).map(|_| {
        post(
            &client,
            replicas.url("/v1/refresh"),
            json!({"refresh_token": token}),
        )
    }))
    .await;
    let after = replicas.served();
    let spread = before.iter().zip(&after).map(|(b, a)| a - b).collect();
    (answers, spread)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_token_refreshed_on_every_replica_at_once_has_one_child() {
    let (answers, spread) = concurrent_refreshes("10s").await;
    if answers.is_empty() {
        return;
    }
    assert!(
        spread.iter().all(|n| *n >= 2),
        "the refreshes did not reach every replica: {spread:?}"
    );
    assert!(
        answers.iter().all(|(s, _)| *s == StatusCode::OK),
        "inside the grace every presentation gets the child: {answers:?}"
    );
    let children: std::collections::BTreeSet<&str> = answers
        .iter()
        .map(|(_, b)| b["refresh_token"].as_str().expect("child"))
        .collect();
    assert_eq!(children.len(), 1, "more than one child: {children:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_grace_off_one_refresh_wins_across_replicas() {
    let (answers, spread) = concurrent_refreshes("0").await;
    if answers.is_empty() {
        return;
    }
    assert!(spread.iter().all(|n| *n >= 2), "{spread:?}");
    let won = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    assert_eq!(won, 1, "{answers:?}");
    assert!(
        answers
            .iter()
            .all(|(s, _)| *s == StatusCode::OK || *s == StatusCode::UNAUTHORIZED),
        "{answers:?}"
    );
}

/// Fifty concurrent wrong guesses at one account, spread over the replicas, cost exactly
/// the configured number of password checks: the checks in flight are leases in the
/// shared database, not in each replica's memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_guesses_spread_over_replicas_cost_exactly_the_limit() {
    const LIMIT: usize = 5;
    let Some(replicas) = Replicas::start("replicas_lockout", REPLICAS, |b| {
        b.with("GATEHOUSE_LOCKOUT_MAX_FAILURES", &LIMIT.to_string())
    })
    .await
    else {
        return;
    };
    let client = process::client();
    let email = unique_email("guessed");
    signup(&replicas, &client, &email).await;
    let before = replicas.served();
    let answers = join_all((0..50).map(|i| {
        post(
            &client,
            replicas.url("/v1/login"),
            json!({"email": email, "password": format!("Guess-number-{i}!")}),
        )
    }))
    .await;
    let after = replicas.served();
    assert!(
        before.iter().zip(&after).all(|(b, a)| a - b >= 10),
        "the guesses did not reach every replica: {before:?} -> {after:?}"
    );
    let statuses: Vec<StatusCode> = answers.iter().map(|(s, _)| *s).collect();
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let locked = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(
        checked, LIMIT,
        "exactly the limit may be checked: {statuses:?}"
    );
    assert_eq!(checked + locked, 50, "{statuses:?}");

    // Locked on every replica, even for the right password.
    for i in 0..replicas.len() {
        let (status, body) = post(
            &client,
            replicas.replica(i).url("/v1/login"),
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "replica {i}: {body}");
    }
}

/// Per-IP limits counted in one Redis (`GATEHOUSE_RATE_LIMIT_STORE`, a key prefix of the
/// test's own on the shared server): a flood from one client through the front is limited
/// at the configured burst, not at three times it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_through_the_front_is_limited_once_not_per_replica() {
    const BURST: usize = 3;
    let Some(redis) = crate::kit::redis::shared() else {
        return;
    };
    let prefix = crate::kit::redis::unique_prefix();
    let Some(replicas) = Replicas::start("replicas_rate_limit", REPLICAS, |b| {
        b.with("GATEHOUSE_RATE_LIMITS", "on")
            .with("GATEHOUSE_RATE_LIMIT_AUTH", &format!("6/{BURST}"))
            .with("GATEHOUSE_RATE_LIMIT_STORE", &redis.to_string())
            .with("GATEHOUSE_RATE_LIMIT_KEY_PREFIX", &prefix)
    })
    .await
    else {
        return;
    };
    let client = process::client();
    let before = replicas.served();
    // New emails, so that the per-email lockout (also a 429) never answers first.
    let answers = join_all((0..30).map(|_| {
        post(
            &client,
            replicas.url("/v1/login"),
            json!({"email": unique_email("flood"), "password": PASSWORD}),
        )
    }))
    .await;
    let after = replicas.served();
    assert!(
        before.iter().zip(&after).all(|(b, a)| a - b >= 5),
        "the flood did not reach every replica: {before:?} -> {after:?}"
    );
    let statuses: Vec<StatusCode> = answers.iter().map(|(s, _)| *s).collect();
    let passed = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let limited: Vec<&Value> = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .map(|(_, body)| body)
        .collect();
    assert_eq!(passed, BURST, "{statuses:?}");
    assert_eq!(limited.len(), 30 - BURST, "{statuses:?}");
    assert!(
        limited.iter().all(|b| b["error"] == "rate_limited"),
        "{limited:?}"
    );
}

/// What the load workers were told, so the check afterwards asks only for that.
#[derive(Default)]
struct Acknowledged {
    /// Accounts whose signup answered 201.
    accounts: Vec<String>,
    /// Per account, the newest refresh token an answer handed out, when no later
    /// refresh of it went unanswered (such a token may have been spent by a replica
    /// that died before answering: presenting it again is then reuse, rightly).
    tokens: Vec<(String, String)>,
    /// Rotations acknowledged after `marker` was set.
    after_marker: usize,
    /// 502s from the front: a replica died with the request in flight.
    bad_gateway: usize,
    /// What the front said in its first few 502s.
    bad_gateway_said: Vec<String>,
    /// Any other 5xx.
    server_errors: Vec<String>,
}

impl Acknowledged {
    fn add(&mut self, other: Self) {
        self.accounts.extend(other.accounts);
        self.tokens.extend(other.tokens);
        self.after_marker += other.after_marker;
        self.bad_gateway += other.bad_gateway;
        self.bad_gateway_said.extend(other.bad_gateway_said);
        self.server_errors.extend(other.server_errors);
    }

    fn answered(&mut self, what: &str, status: StatusCode, body: &Value) {
        if status == StatusCode::BAD_GATEWAY {
            self.bad_gateway += 1;
            if self.bad_gateway_said.len() < 3 {
                self.bad_gateway_said.push(format!("{what}: {body}"));
            }
        } else if status.is_server_error() {
            self.server_errors.push(format!("{what} {status}: {body}"));
        }
    }
}

/// `workers` clients signing up and rotating through `base` until `stop`.
async fn load(
    base: String,
    workers: usize,
    stop: Arc<AtomicBool>,
    marker: Arc<AtomicBool>,
) -> Acknowledged {
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (base, stop, marker) = (base.clone(), stop.clone(), marker.clone());
            tokio::spawn(async move {
                let client = process::client();
                let mut seen = Acknowledged::default();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let email = format!("load-{w}-{i}-{}", unique_email("replicas"));
                    let (status, body) = post(
                        &client,
                        format!("{base}/v1/signup"),
                        json!({"email": email, "password": PASSWORD}),
                    )
                    .await;
                    seen.answered("signup", status, &body);
                    if status != StatusCode::CREATED {
                        continue;
                    }
                    seen.accounts.push(email.clone());
                    let mut token = body["refresh_token"].as_str().map(str::to_owned);
                    for _ in 0..3 {
                        let Some(current) = token.take() else { break };
                        let (status, body) = post(
                            &client,
                            format!("{base}/v1/refresh"),
                            json!({"refresh_token": current}),
                        )
                        .await;
                        seen.answered("refresh", status, &body);
                        if status == StatusCode::OK {
                            token = body["refresh_token"].as_str().map(str::to_owned);
                            if marker.load(Ordering::Relaxed) {
                                seen.after_marker += 1;
                            }
                        }
                    }
                    if let Some(token) = token {
                        seen.tokens.push((email, token));
                    }
                }
                seen
            })
        })
        .collect();
    let mut all = Acknowledged::default();
    for task in tasks {
        all.add(task.await.expect("load worker"));
    }
    all
}

/// Every acknowledged signup logs in, every acknowledged newest token refreshes.
async fn nothing_acknowledged_is_lost(replicas: &Replicas, all: &Acknowledged) {
    let client = process::client();
    let logins: Vec<_> = futures::stream::iter(&all.accounts)
        .map(|email| {
            let request = post(
                &client,
                replicas.url("/v1/login"),
                json!({"email": email, "password": PASSWORD}),
            );
            async move { (email, request.await) }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    for (email, (status, body)) in logins {
        assert_eq!(
            status,
            StatusCode::OK,
            "acknowledged signup {email} lost: {body}"
        );
    }
    for (email, token) in &all.tokens {
        let (status, body) = post(
            &client,
            replicas.url("/v1/refresh"),
            json!({"refresh_token": token}),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "the acknowledged token of {email} no longer refreshes: {body}"
        );
    }
}

/// The load of `load` running through the front while a test disturbs the replicas.
struct Running {
    stop: Arc<AtomicBool>,
    marker: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Acknowledged>,
}

impl Running {
    /// Six clients, and a second of load before the caller disturbs anything.
    async fn start(replicas: &Replicas) -> Self {
        let (stop, marker) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let task = tokio::spawn(load(replicas.url(""), 6, stop.clone(), marker.clone()));
        tokio::time::sleep(Duration::from_secs(1)).await;
        Self { stop, marker, task }
    }

    /// Marks the disturbance done, lets the load run a second more, and checks what
    /// every run must show: no 5xx but the front's 502, enough load, and rotations
    /// served after the disturbance (`after` names it).
    async fn finish(self, after: &str) -> Acknowledged {
        self.marker.store(true, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.stop.store(true, Ordering::Relaxed);
        let all = self.task.await.expect("load");
        assert!(all.server_errors.is_empty(), "{:?}", all.server_errors);
        assert!(
            all.accounts.len() >= 10,
            "too little load: {}",
            all.accounts.len()
        );
        assert!(
            all.after_marker >= 5,
            "no service after {after} ({} rotations)",
            all.after_marker
        );
        all
    }
}

/// A replica SIGKILLed in the middle of a load of signups and refreshes: nothing any
/// replica acknowledged is lost, the others keep serving, and only requests in flight
/// on the dead replica fail (502 from the front).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_load_loses_nothing_acknowledged() {
    let Some(mut replicas) = Replicas::start("replicas_kill", REPLICAS, |b| b).await else {
        return;
    };
    let running = Running::start(&replicas).await;
    replicas.kill(1).await;
    let all = running.finish("the kill").await;
    nothing_acknowledged_is_lost(&replicas, &all).await;
    eprintln!(
        "replicas: {} signups and {} token chains kept across a kill ({} answered 502)",
        all.accounts.len(),
        all.tokens.len(),
        all.bad_gateway
    );
}

/// Password checks that `server` has read and is still working on (hashing or queued
/// for it), from its metrics.
async fn checks_in_progress(client: &reqwest::Client, server: &Server) -> u64 {
    let text = client
        .get(server.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .filter(|l| {
            l.starts_with("gatehouse_password_hash_queue_depth ")
                || l.starts_with("gatehouse_password_hash_in_flight ")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

/// A rolling restart under a load of signups and refreshes through the front: each
/// replica in turn leaves the rotation and gets SIGTERM while it is still serving
/// signups it has read (queued for Argon2, as its metrics show), then a new process
/// takes its place. Every one of those signups is answered 201, not one request through
/// the front fails, and everything acknowledged is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_under_load_fails_no_request() {
    const DRAINED: usize = 8;
    let Some(mut replicas) = Replicas::start("replicas_rolling", REPLICAS, |b| b).await else {
        return;
    };
    let running = Running::start(&replicas).await;
    let client = process::client();
    for i in 0..replicas.len() {
        let old = replicas.take_out(i).await;
        let in_progress: Vec<_> = (0..DRAINED)
            .map(|n| {
                let request = client
                    .post(old.url("/v1/signup"))
                    .json(&json!({"email": unique_email(&format!("drain{i}-{n}")), "password": PASSWORD}))
                    .send();
                tokio::spawn(async move { request.await.map(|r| r.status()) })
            })
            .collect();
        // Every signup read by the replica before SIGTERM: hashing, queued for it, or
        // already answered. One still connecting would be closed unread, rightly.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let answered = in_progress.iter().filter(|t| t.is_finished()).count() as u64;
            if checks_in_progress(&client, &old).await + answered >= DRAINED as u64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the signups never reached replica {i}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            in_progress.iter().any(|t| !t.is_finished()),
            "replica {i} answered every signup before SIGTERM: nothing left to drain"
        );
        old.stop_and_collect().await;
        for answer in in_progress {
            let answer = answer.await.expect("signup task");
            assert!(
                matches!(answer, Ok(StatusCode::CREATED)),
                "replica {i} dropped a signup it had read: {answer:?}"
            );
        }
        replicas.put_back(i).await;
    }
    let all = running.finish("the rolling restart").await;
    assert_eq!(
        all.bad_gateway, 0,
        "requests failed during the rolling restart: {:?}",
        all.bad_gateway_said
    );
    nothing_acknowledged_is_lost(&replicas, &all).await;
    eprintln!(
        "replicas: {} signups and {} token chains through a rolling restart of {}, {} \
         signups drained",
        all.accounts.len(),
        all.tokens.len(),
        replicas.len(),
        DRAINED * replicas.len()
    );
}

async fn jwks(client: &reqwest::Client, url: String) -> Value {
    let r = client.get(url).send().await.expect("jwks");
    assert_eq!(r.status(), StatusCode::OK);
    r.json().await.expect("jwks json")
}

/// Key rotation with the keys in the database, every request through the front: a key
/// generated by the CLI is published by every replica within the reload interval, the
/// rotation waits for the JWKS max-age, then every replica signs with the new key; a
/// resource server that cached the JWK Set between the two steps verifies the new
/// tokens without fetching again, and the old token still verifies everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_reaches_every_replica_and_a_caching_verifier() {
    let Some(replicas) = Replicas::start("replicas_rotation", REPLICAS, |b| {
        b.with("GATEHOUSE_JWKS_MAX_AGE", "2")
            .with("GATEHOUSE_KEYS_RELOAD_INTERVAL", "1")
    })
    .await
    else {
        return;
    };
    let client = process::client();
    let email = unique_email("rotation");
    let old = signup(&replicas, &client, &email).await["access_token"]
        .as_str()
        .expect("access")
        .to_owned();
    let first = kid_of(&old);

    let out = replicas.binary.cli_ok(&["keys", "generate"], None).await;
    assert!(out.contains("next"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut published = vec![false; replicas.len()];
    while !published.iter().all(|p| *p) {
        for (i, done) in published.iter_mut().enumerate() {
            let url = replicas.replica(i).url("/.well-known/jwks.json");
            *done = jwks_kids(&jwks(&client, url).await).len() == 2;
        }
        assert!(
            Instant::now() < deadline,
            "next key not published: {published:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A resource server refreshes its cache now, and not again.
    let cached = jwks(&client, replicas.url("/.well-known/jwks.json")).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, text) = replicas.binary.cli(&["keys", "rotate"]).await;
        if code == 0 {
            break;
        }
        assert!(text.contains("wait"), "{text}");
        assert!(Instant::now() < deadline, "rotation still refused: {text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Consecutive logins through the front, one per replica, all signed by the new key.
    let login = json!({"email": email, "password": PASSWORD});
    let deadline = Instant::now() + Duration::from_secs(30);
    let tokens = loop {
        let mut tokens = Vec::new();
        for _ in 0..replicas.len() {
            let (status, body) = post(&client, replicas.url("/v1/login"), login.clone()).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            tokens.push(body["access_token"].as_str().expect("access").to_owned());
        }
        if tokens.iter().all(|t| kid_of(t) != first) {
            break tokens;
        }
        assert!(
            Instant::now() < deadline,
            "a replica still signs with {first}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for token in &tokens {
        verify_with_jwks(&cached, token).expect("the cached set verifies the new key's token");
        for i in 0..replicas.len() {
            let set = jwks(&client, replicas.replica(i).url("/.well-known/jwks.json")).await;
            verify_with_jwks(&set, token).unwrap_or_else(|e| panic!("replica {i}: {e}"));
            verify_with_jwks(&set, &old).unwrap_or_else(|e| panic!("old token, replica {i}: {e}"));
        }
    }
}
