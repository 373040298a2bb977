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
use crate::kit::password::PASSWORD;
use crate::kit::process;
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

/// What one load worker was told, so the check afterwards asks only for that.
#[derive(Default)]
struct Acknowledged {
    /// Accounts whose signup answered 201.
    accounts: Vec<String>,
    /// Per account, the newest refresh token an answer handed out, when no later
    /// refresh of it went unanswered (such a token may have been spent by a replica
    /// that died before answering: presenting it again is then reuse, rightly).
    tokens: Vec<(String, String)>,
    after_kill: usize,
    server_errors: Vec<String>,
}

/// A replica SIGKILLed in the middle of a load of signups and refreshes: nothing any
/// replica acknowledged is lost, the others keep serving, and only requests in flight
/// on the dead replica fail (502 from the front).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_load_loses_nothing_acknowledged() {
    const WORKERS: usize = 6;
    let Some(mut replicas) = Replicas::start("replicas_kill", REPLICAS, |b| b).await else {
        return;
    };
    let replicas_url = replicas.url("");
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (base, stop, killed) = (replicas_url.clone(), stop.clone(), killed.clone());
            tokio::spawn(async move {
                let client = process::client();
                let mut seen = Acknowledged::default();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let email = format!("load-{w}-{i}-{}", unique_email("kill"));
                    let (status, body) = post(
                        &client,
                        format!("{base}/v1/signup"),
                        json!({"email": email, "password": PASSWORD}),
                    )
                    .await;
                    if status.is_server_error() && status != StatusCode::BAD_GATEWAY {
                        seen.server_errors.push(format!("signup {status}: {body}"));
                    }
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
                        if status.is_server_error() && status != StatusCode::BAD_GATEWAY {
                            seen.server_errors.push(format!("refresh {status}: {body}"));
                        }
                        if status == StatusCode::OK {
                            token = body["refresh_token"].as_str().map(str::to_owned);
                            if killed.load(Ordering::Relaxed) {
                                seen.after_kill += 1;
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

    tokio::time::sleep(Duration::from_secs(2)).await;
    replicas.kill(1).await;
    killed.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut all = Acknowledged::default();
    for worker in workers {
        let seen = worker.await.expect("worker");
        all.accounts.extend(seen.accounts);
        all.tokens.extend(seen.tokens);
        all.after_kill += seen.after_kill;
        all.server_errors.extend(seen.server_errors);
    }
    assert!(all.server_errors.is_empty(), "{:?}", all.server_errors);
    assert!(
        all.accounts.len() >= 10,
        "too little load: {}",
        all.accounts.len()
    );
    assert!(
        all.after_kill >= 5,
        "the other replicas stopped serving after the kill ({} rotations)",
        all.after_kill
    );

    let client = process::client();
    let started = Instant::now();
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
    eprintln!(
        "replicas: {} signups and {} token chains checked in {:.1}s after a kill",
        all.accounts.len(),
        all.tokens.len(),
        started.elapsed().as_secs_f64()
    );
}
