//! The shared rate limiter when Redis fails under load: a `redis-server` of the test's own
//! (never the shared one) is killed, restarted, frozen (SIGSTOP) and thawed while clients
//! keep calling. As deploy/README.md documents for the default
//! `GATEHOUSE_RATE_LIMIT_ON_STORE_ERROR=by-endpoint`: endpoints that take a password answer
//! 503 with `Retry-After`, reads, refreshes and JWKS keep answering, `/readyz` stays 200 and
//! reports the store, no request hangs or gets a 500, and limits hold again once Redis is
//! back, without a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use gatehouse::config::Tier;
use gatehouse::domain::{Email, NewPassword};
use gatehouse::http::client_ip::Cidr;
use gatehouse::service::{ClientMeta, accounts};
use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::kit::app::{TestApp, spawn_app_with, unique_email};
use crate::kit::password::PASSWORD;
use crate::kit::redis::PrivateRedis;

/// Far above the 250 ms store timeout: a request slower than this hung on Redis.
const HUNG: Duration = Duration::from_secs(2);

/// Every answer the background load got, by endpoint.
type Seen = Arc<Mutex<Vec<(&'static str, StatusCode)>>>;

async fn send(client: &str, req: reqwest::RequestBuilder) -> reqwest::Response {
    let started = Instant::now();
    let r = req
        .header("x-forwarded-for", client)
        .send()
        .await
        .expect("the server answers");
    assert!(
        started.elapsed() < HUNG,
        "{} took {:?}",
        r.url().path(),
        started.elapsed()
    );
    r
}

async fn login(app: &TestApp, client: &str) -> reqwest::Response {
    let req = app
        .api_client
        .post(app.url("/v1/login"))
        // A new email each time: the per-email lockout (also 429) must not answer first.
        .json(&json!({"email": unique_email("nobody"), "password": PASSWORD}));
    send(client, req).await
}

async fn me(app: &TestApp, client: &str, token: &str) -> reqwest::Response {
    let req = app.api_client.get(app.url("/v1/me")).bearer_auth(token);
    send(client, req).await
}

async fn ready(app: &TestApp) -> Value {
    let r = send("192.0.2.250", app.api_client.get(app.url("/readyz"))).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "readiness never depends on Redis"
    );
    r.json().await.expect("JSON")
}

/// Polls until a login from a fresh client gets `status`, for up to 10 s.
async fn until_login_is(app: &TestApp, status: StatusCode, fresh: &AtomicU32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let client = format!("198.18.0.{}", fresh.fetch_add(1, Ordering::Relaxed) % 250);
        let got = login(app, &client).await.status();
        if got == status {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "logins still answer {got}, not {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// While the store is down: the password endpoints refuse, the rest answer.
async fn behaves_as_documented_while_down(app: &TestApp, token: &str, refresh: &mut String) {
    let r = login(app, "203.0.113.1").await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let wait: u64 = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .expect("Retry-After");
    assert!(wait >= 1);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(body["error"], "service_unavailable", "{body}");

    let signup = app
        .api_client
        .post(app.url("/v1/signup"))
        .json(&json!({"email": unique_email("outage"), "password": PASSWORD}));
    let r = send("203.0.113.2", signup).await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);

    assert_eq!(me(app, "203.0.113.3", token).await.status(), StatusCode::OK);
    let req = app
        .api_client
        .post(app.url("/v1/refresh"))
        .json(&json!({"refresh_token": refresh.as_str()}));
    let r = send("203.0.113.4", req).await;
    assert_eq!(
        r.status(),
        StatusCode::OK,
        "refresh passes while Redis is down"
    );
    let body: Value = r.json().await.expect("JSON");
    *refresh = body["refresh_token"]
        .as_str()
        .expect("a new refresh token")
        .into();
    let jwks = send(
        "203.0.113.5",
        app.api_client.get(app.url("/.well-known/jwks.json")),
    );
    assert_eq!(jwks.await.status(), StatusCode::OK);
    assert_eq!(ready(app).await["rate_limit_store"], "unreachable");
}

/// Limits hold again: a new client gets its burst of 3, then 429.
async fn limits_hold(app: &TestApp, client: &str) {
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(login(app, client).await.status());
    }
    assert_eq!(
        statuses,
        [
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::UNAUTHORIZED,
            StatusCode::TOO_MANY_REQUESTS
        ],
        "{client}"
    );
    assert_eq!(ready(app).await["rate_limit_store"], "redis");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_restarted_and_frozen_under_load() {
    let mut redis = PrivateRedis::start();
    let url = redis.url();
    let app = Arc::new(
        spawn_app_with(move |s| {
            s.rate_limits.enabled = true;
            s.rate_limits.auth = Tier {
                per_minute: 6,
                burst: 3,
            };
            s.rate_limits.reads = Tier {
                per_minute: 6000,
                burst: 1000,
            };
            s.rate_limits.store = Some(url);
            s.http.trusted_proxies = vec![Cidr::parse("127.0.0.1/32").expect("cidr")];
        })
        .await,
    );
    let tokens = accounts::signup(
        &app.state,
        Email::parse(&unique_email("outage")).expect("email"),
        NewPassword::parse(PASSWORD).expect("password"),
        &ClientMeta::default(),
    )
    .await
    .expect("signup");
    let token = tokens.access_token.clone();
    let mut refresh = tokens.refresh_token.expose().to_owned();
    let fresh = AtomicU32::new(0);
    limits_hold(&app, "198.51.100.1").await;

    // The load: wrong logins and reads, each from a fresh address so that no limit is
    // reached and every answer says what the store's state made of it.
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Seen = Arc::default();
    let load = tokio::spawn({
        let (app, stop, seen, token) = (app.clone(), stop.clone(), seen.clone(), token.clone());
        async move {
            let mut n = 0u32;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let client = format!("10.{}.{}.{}", (n >> 16) & 255, (n >> 8) & 255, n & 255);
                let (a, b) = tokio::join!(login(&app, &client), me(&app, &client, &token));
                let mut seen = seen.lock();
                seen.push(("login", a.status()));
                seen.push(("me", b.status()));
            }
        }
    });

    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::task::block_in_place(|| redis.stop());
    until_login_is(&app, StatusCode::SERVICE_UNAVAILABLE, &fresh).await;
    behaves_as_documented_while_down(&app, &token, &mut refresh).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    tokio::task::block_in_place(|| redis.restart());
    until_login_is(&app, StatusCode::UNAUTHORIZED, &fresh).await;
    limits_hold(&app, "198.51.100.2").await;

    // A hung Redis: connections stay open, nothing answers. Requests must not hang.
    redis.freeze();
    until_login_is(&app, StatusCode::SERVICE_UNAVAILABLE, &fresh).await;
    behaves_as_documented_while_down(&app, &token, &mut refresh).await;
    redis.thaw();
    until_login_is(&app, StatusCode::UNAUTHORIZED, &fresh).await;
    limits_hold(&app, "198.51.100.3").await;

    stop.store(true, Ordering::Relaxed);
    load.await.expect("the load ran");
    let seen = std::mem::take(&mut *seen.lock());
    let count = |what: &str, status: StatusCode| {
        seen.iter()
            .filter(|(w, s)| *w == what && *s == status)
            .count()
    };
    let unexpected: Vec<_> = seen
        .iter()
        .filter(|(what, status)| match *what {
            "login" => {
                ![StatusCode::UNAUTHORIZED, StatusCode::SERVICE_UNAVAILABLE].contains(status)
            }
            _ => *status != StatusCode::OK,
        })
        .collect();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    assert!(
        count("login", StatusCode::SERVICE_UNAVAILABLE) > 0
            && count("login", StatusCode::UNAUTHORIZED) > 0
            && count("me", StatusCode::OK) > 0,
        "the load saw both states: {} answers",
        seen.len()
    );

    let metrics = app.get("/metrics").await.text().await.expect("metrics");
    let server_errors: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("gatehouse_http_request_duration_seconds_count"))
        .filter(|l| l.contains("status=\"5") && !l.contains("status=\"503\""))
        .collect();
    assert!(server_errors.is_empty(), "{server_errors:?}");
}
