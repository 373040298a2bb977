//! Second factors across three replicas on one PostgreSQL database (`kit::replicas`): a
//! code is accepted once and wrong codes are bounded whichever replica a request lands
//! on, because the claims and the counters live in the database.

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::kit::app::unique_email;
use crate::kit::password::PASSWORD;
use crate::kit::process;
use crate::kit::replicas::{Replicas, post};
use crate::kit::totp::totp_code;

const REPLICAS: usize = 3;

/// A user with TOTP on, enrolled through the front: the email, the secret and the
/// recovery codes. The confirming code is the current step's; tests log in with the
/// next step's (one step of drift is accepted), so they never wait for the clock.
async fn enrolled_user(
    replicas: &Replicas,
    client: &reqwest::Client,
) -> (String, String, Vec<String>) {
    let email = unique_email("mfa-replicas");
    let (status, signup) = post(
        client,
        replicas.url("/v1/signup"),
        None,
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{signup}");
    let access = signup["access_token"].as_str().expect("access token");
    let (status, started) = post(
        client,
        replicas.url("/v1/me/mfa/totp"),
        Some(access),
        json!({"password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    let secret = started["secret"].as_str().expect("secret").to_owned();
    let (status, confirmed) = post(
        client,
        replicas.url("/v1/me/mfa/totp/confirm"),
        Some(access),
        json!({"code": totp_code(&secret, chrono::Utc::now())}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{confirmed}");
    let codes = confirmed["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    (email, secret, codes)
}

async fn mfa_token(replicas: &Replicas, client: &reqwest::Client, email: &str) -> String {
    let (status, body) = post(
        client,
        replicas.url("/v1/login"),
        None,
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "mfa_required", "{body}");
    body["mfa_token"].as_str().expect("mfa_token").to_owned()
}

/// The next step's code: accepted (one step of drift), and never the confirming one.
fn next_code(secret: &str) -> String {
    totp_code(secret, chrono::Utc::now() + chrono::Duration::seconds(30))
}

/// Ten concurrent `POST /v1/login/mfa` with one valid code, each with an `mfa_token`
/// of its own, spread round-robin over three replicas: exactly one session opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_totp_code_sent_ten_times_at_once_over_three_replicas_opens_one_session() {
    let Some(replicas) = Replicas::start("replicas_mfa_replay", REPLICAS, |b| b).await else {
        return;
    };
    let client = process::client();
    let (email, secret, _) = enrolled_user(&replicas, &client).await;
    let mut tokens = Vec::new();
    for _ in 0..10 {
        tokens.push(mfa_token(&replicas, &client, &email).await);
    }
    let code = next_code(&secret);
    let before = replicas.served();
    let answers = join_all(tokens.iter().map(|t| {
        post(
            &client,
            replicas.url("/v1/login/mfa"),
            None,
            json!({"mfa_token": t, "code": code}),
        )
    }))
    .await;
    let after = replicas.served();
    assert!(
        before.iter().zip(&after).all(|(b, a)| a > b),
        "the attempts did not reach every replica: {before:?} -> {after:?}"
    );
    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let refused = answers
        .iter()
        .filter(|(s, b)| *s == StatusCode::UNAUTHORIZED && b["error"] == "invalid_mfa_code")
        .count();
    eprintln!("one code x10 over {REPLICAS} replicas: {ok} x 200, {refused} x invalid_mfa_code");
    assert_eq!(ok, 1, "{answers:?}");
    assert_eq!(refused, 9, "{answers:?}");
}

/// Two concurrent uses of one recovery code (two logins): exactly one succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_recovery_code_used_twice_at_once_over_replicas_opens_one_session() {
    let Some(replicas) = Replicas::start("replicas_mfa_recovery", REPLICAS, |b| b).await else {
        return;
    };
    let client = process::client();
    let (email, _, codes) = enrolled_user(&replicas, &client).await;
    for code in codes.iter().take(3) {
        let first = mfa_token(&replicas, &client, &email).await;
        let second = mfa_token(&replicas, &client, &email).await;
        let answers = join_all([first, second].iter().map(|t| {
            post(
                &client,
                replicas.url("/v1/login/mfa"),
                None,
                json!({"mfa_token": t, "code": code}),
            )
        }))
        .await;
        let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
        assert_eq!(ok, 1, "{answers:?}");
        assert!(
            answers
                .iter()
                .any(|(s, b)| *s == StatusCode::UNAUTHORIZED && b["error"] == "invalid_mfa_code"),
            "{answers:?}"
        );
    }
}

/// Fifty concurrent wrong codes over ten `mfa_token`s and three replicas: no more than
/// `GATEHOUSE_MFA_MAX_FAILURES` are checked, the rest are refused with 429 (or, once a
/// token took five, `invalid_mfa_token`); then even the right code is refused with 429
/// on every replica, until the window (one minute here) passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_wrong_codes_over_tokens_and_replicas_are_checked_at_most_the_limit() {
    const LIMIT: usize = 10;
    let Some(replicas) = Replicas::start("replicas_mfa_guesses", REPLICAS, |b| {
        b.with("GATEHOUSE_MFA_MAX_FAILURES", &LIMIT.to_string())
            .with("GATEHOUSE_LOCKOUT_WINDOW", "1m")
    })
    .await
    else {
        return;
    };
    let client = process::client();
    let (email, secret, _) = enrolled_user(&replicas, &client).await;
    let mut tokens = Vec::new();
    for _ in 0..10 {
        tokens.push(mfa_token(&replicas, &client, &email).await);
    }
    let right = next_code(&secret);
    // Fifty wrong six-digit codes, none of them a code of the current window.
    let wrong: Vec<String> = (0..50)
        .map(|i| format!("{:06}", (i * 7919 + 13) % 1_000_000))
        .filter(|c| *c != right)
        .collect();
    let answers = join_all(wrong.iter().enumerate().map(|(i, code)| {
        post(
            &client,
            replicas.url("/v1/login/mfa"),
            None,
            json!({"mfa_token": tokens[i % tokens.len()], "code": code}),
        )
    }))
    .await;
    let count = |status: StatusCode, error: &str| {
        answers
            .iter()
            .filter(|(s, b)| *s == status && b["error"] == error)
            .count()
    };
    let checked = count(StatusCode::UNAUTHORIZED, "invalid_mfa_code");
    let locked = count(StatusCode::TOO_MANY_REQUESTS, "too_many_attempts");
    let spent = count(StatusCode::UNAUTHORIZED, "invalid_mfa_token");
    eprintln!(
        "{} wrong codes over 10 tokens and {REPLICAS} replicas: {checked} checked, \
         {locked} x 429, {spent} x invalid_mfa_token",
        wrong.len()
    );
    assert!(checked <= LIMIT, "{answers:?}");
    assert!(checked > 0, "{answers:?}");
    assert_eq!(checked + locked + spent, wrong.len(), "{answers:?}");

    let fresh = mfa_token(&replicas, &client, &email).await;
    let mut retry_after = 0;
    for i in 0..replicas.len() {
        let response = client
            .post(replicas.replica(i).url("/v1/login/mfa"))
            .json(&json!({"mfa_token": fresh, "code": right}))
            .send()
            .await
            .expect("an answer");
        assert_eq!(
            response.status(),
            StatusCode::TOO_MANY_REQUESTS,
            "replica {i}"
        );
        retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .expect("Retry-After");
    }
    assert!((1..=60).contains(&retry_after), "{retry_after}");

    // The window passes: the right code (now the current one) logs in again.
    tokio::time::sleep(std::time::Duration::from_secs(retry_after + 1)).await;
    let token = mfa_token(&replicas, &client, &email).await;
    let (status, body) = post(
        &client,
        replicas.url("/v1/login/mfa"),
        None,
        json!({"mfa_token": token, "code": next_code(&secret)}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
