//! The per-IP limiter counted in Redis, as several replicas run it: two apps on one Redis
//! spend one budget, keys are namespaced and expire, and a store that does not answer is
//! handled in the configured direction.

use futures::future::join_all;
use gatehouse::config::{Settings, Tier};
use gatehouse::http::limiter::{OnStoreError, RedisUrl};
use reqwest::StatusCode;

use crate::helpers::*;
use crate::kit::ports::free_port;
use crate::kit::process::Binary;
use crate::kit::redis;

const BURST: u32 = 3;

/// Strict login limits counted under `prefix` in `store` (in memory when `None`).
fn replica(store: Option<RedisUrl>, prefix: String) -> impl FnOnce(&mut Settings) {
    move |s| {
        s.rate_limits.enabled = true;
        s.rate_limits.auth = Tier {
            per_minute: 6,
            burst: BURST,
        };
        s.rate_limits.store = store;
        s.rate_limits.key_prefix = prefix;
    }
}

/// 20 concurrent wrong logins from one client, alternating between `a` and `b`; the
/// statuses, and the Retry-After of every 429.
async fn flood(a: &TestApp, b: &TestApp) -> (Vec<StatusCode>, Vec<u64>) {
    let answers = join_all((0..20).map(|i| {
        let app = if i % 2 == 0 { a } else { b };
        async move { app.post_login(&unique_email("flood"), PASSWORD).await }
    }))
    .await;
    let waits = answers
        .iter()
        .filter(|r| r.status() == StatusCode::TOO_MANY_REQUESTS)
        .map(|r| {
            header(r, "retry-after")
                .and_then(|v| v.parse().ok())
                .expect("a 429 carries Retry-After in seconds")
        })
        .collect();
    (answers.iter().map(|r| r.status()).collect(), waits)
}

fn count(statuses: &[StatusCode], status: StatusCode) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[both_backends]
async fn two_replicas_on_one_redis_limit_a_flood_at_the_configured_rate_not_twice_it() {
    let Some(url) = redis::shared() else { return };
    let prefix = redis::unique_prefix();
    let a = spawn_app_with(replica(Some(url.clone()), prefix.clone())).await;
    let b = spawn_app_with(replica(Some(url), prefix)).await;
    let (statuses, waits) = flood(&a, &b).await;
    assert_eq!(
        count(&statuses, StatusCode::UNAUTHORIZED),
        BURST as usize,
        "{statuses:?}"
    );
    assert_eq!(
        count(&statuses, StatusCode::TOO_MANY_REQUESTS),
        20 - BURST as usize,
        "{statuses:?}"
    );
    // 6 a minute: the next token comes within 10 s.
    assert!(waits.iter().all(|w| (1..=10).contains(w)), "{waits:?}");

    // The same two replicas counting in memory: each grants its own burst.
    let a = spawn_app_with(replica(None, String::from("unused"))).await;
    let b = spawn_app_with(replica(None, String::from("unused"))).await;
    let (statuses, _) = flood(&a, &b).await;
    assert_eq!(
        count(&statuses, StatusCode::UNAUTHORIZED),
        2 * BURST as usize,
        "in memory, two replicas give twice the budget: {statuses:?}"
    );
}

#[both_backends]
async fn redis_keys_are_namespaced_per_tier_and_client_and_expire() {
    let Some(url) = redis::shared() else { return };
    let prefix = redis::unique_prefix();
    let app = spawn_app_with(replica(Some(url.clone()), prefix.clone())).await;
    let r = app.post_login("nobody@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    let client = ::redis::Client::open(format!("redis://{}", host_of(&url))).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("the shared Redis answers");
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(format!("{prefix}:*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    assert_eq!(keys, vec![format!("{prefix}:login:127.0.0.1")]);
    let ttl_ms: i64 = ::redis::cmd("PTTL")
        .arg(&keys[0])
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    // One request's worth of the bucket: the 10 s emission interval, then it is gone.
    assert!((1..=10_000).contains(&ttl_ms), "PTTL {ttl_ms}");
}

/// `HOST:PORT[/DB]` of a URL printed by gatehouse (the test server has no password).
fn host_of(url: &RedisUrl) -> String {
    url.to_string().trim_start_matches("redis://").to_owned()
}

/// An access token of a new user, signed up through the service layer: the limiter in
/// front of `/v1/signup` may refuse the test's own seeding.
async fn signed_up_behind_the_limiter(app: &TestApp) -> String {
    use gatehouse::domain::{Email, NewPassword};
    use gatehouse::service::{ClientMeta, accounts};
    let email = Email::parse(&unique_email("outage")).expect("email");
    let password = NewPassword::parse(PASSWORD).expect("password");
    accounts::signup(&app.state, email, password, &ClientMeta::default())
        .await
        .expect("signup through the service")
        .access_token
}

/// A Redis URL on a loopback port nobody listens on: connections are refused at once.
fn nowhere() -> RedisUrl {
    RedisUrl::parse(&format!("redis://127.0.0.1:{}", free_port())).expect("url")
}

#[both_backends]
async fn with_redis_unreachable_each_direction_does_what_it_says() {
    for mode in [
        OnStoreError::ByEndpoint,
        OnStoreError::Open,
        OnStoreError::Closed,
    ] {
        let app = spawn_app_with(|s| {
            replica(Some(nowhere()), redis::unique_prefix())(s);
            s.rate_limits.reads = Tier {
                per_minute: 600,
                burst: 100,
            };
            s.rate_limits.on_store_error = mode;
        })
        .await;
        let token = signed_up_behind_the_limiter(&app).await;

        let login = app.post_login("nobody@example.com", PASSWORD).await;
        let signup = app.post_signup(&unique_email("outage"), PASSWORD).await;
        let me = app.get_me(&token).await;
        let statuses = (login.status(), signup.status(), me.status());
        let expected = match mode {
            OnStoreError::ByEndpoint => (
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::OK,
            ),
            OnStoreError::Open => (
                StatusCode::UNAUTHORIZED,
                StatusCode::CREATED,
                StatusCode::OK,
            ),
            OnStoreError::Closed => (
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::SERVICE_UNAVAILABLE,
            ),
        };
        assert_eq!(statuses, expected, "{mode:?}");
        if mode == OnStoreError::ByEndpoint {
            // The other password-taking endpoints refuse too; a write without a password
            // reaches its handler (404: no such session).
            let body = serde_json::json!({"current_password": PASSWORD, "new_password": "An0ther-Passw0rd!"});
            let change = app
                .post_json_with_token("/v1/me/password", &token, &body)
                .await;
            assert_eq!(change.status(), StatusCode::SERVICE_UNAVAILABLE);
            let delete = app
                .delete_with_token(
                    "/v1/me",
                    &token,
                    Some(serde_json::json!({"password": PASSWORD})),
                )
                .await;
            assert_eq!(delete.status(), StatusCode::SERVICE_UNAVAILABLE);
            let revoke = app
                .delete_with_token(
                    &format!("/v1/me/sessions/{}", uuid::Uuid::new_v4()),
                    &token,
                    None,
                )
                .await;
            assert_eq!(revoke.status(), StatusCode::NOT_FOUND);
        }
        if mode != OnStoreError::Open {
            let wait = header(&login, "retry-after").expect("503 carries Retry-After");
            assert!(wait.parse::<u64>().is_ok_and(|w| w >= 1), "{wait}");
            assert_error(
                login,
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
            )
            .await;
        }
        // JWKS is never limited, and readiness reports the store without failing.
        assert_eq!(
            app.get("/.well-known/jwks.json").await.status(),
            StatusCode::OK
        );
        let ready = expect_json(app.get("/readyz").await, StatusCode::OK).await;
        assert_eq!(ready["rate_limit_store"], "unreachable", "{ready}");
        let metrics = app.get("/metrics").await.text().await.expect("metrics");
        assert!(
            !metrics.lines().any(|l| l
                .starts_with("gatehouse_http_request_duration_seconds_count")
                && l.contains("status=\"500\"")),
            "{mode:?}: a 500\n{metrics}"
        );
        assert!(
            metrics.contains("gatehouse_rate_limit_store_errors_total{outcome="),
            "{metrics}"
        );
    }
}

async fn config_check(env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("keys")).expect("keys dir");
    // The kit's binary runs with limits off; these are about limits on.
    let limited = Binary::in_dir(dir.path()).with("GATEHOUSE_RATE_LIMITS", "on");
    let binary = env.iter().fold(limited, |b, (k, v)| b.with(k, v));
    binary.cli(&["config", "check"]).await
}

#[tokio::test]
async fn config_check_warns_about_per_process_limits_and_probes_redis() {
    // On SQLite (one process per file) there are no replicas to multiply the limits:
    // no warning (src/config/tests.rs checks the one on PostgreSQL).
    let (code, text) = config_check(&[]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        !text.contains("GATEHOUSE_RATE_LIMIT_STORE is unset"),
        "warned about replicas on SQLite:\n{text}"
    );

    // Nothing listens there: a warning naming the direction, and never the password.
    let nowhere = format!("redis://:s3cret-pw@127.0.0.1:{}/0", free_port());
    let (code, text) = config_check(&[("GATEHOUSE_RATE_LIMIT_STORE", &nowhere)]).await;
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
    assert!(
        text.contains("GATEHOUSE_RATE_LIMIT_STORE=redis://:***@127.0.0.1:"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("# warning: GATEHOUSE_RATE_LIMIT_STORE:")
                && l.contains("does not answer")
                && l.contains("GATEHOUSE_RATE_LIMIT_ON_STORE_ERROR=by-endpoint")),
        "{text}"
    );
    assert!(!text.contains("N times the configured"), "{text}");

    let (code, text) = config_check(&[("GATEHOUSE_RATE_LIMIT_STORE", "redis://h:notaport")]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("GATEHOUSE_RATE_LIMIT_STORE"), "{text}");

    let Some(url) = redis::shared() else { return };
    let (code, text) = config_check(&[("GATEHOUSE_RATE_LIMIT_STORE", &url.to_string())]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(&format!("# rate-limit store {url} answers")),
        "{text}"
    );
}

#[both_backends]
async fn limits_too_high_to_reach_count_without_errors_in_redis() {
    // A rate above a million a second made the script's key expiry 0 ms, which Redis
    // refuses: every request then counted as "store down". The benchmark raises limits so.
    let Some(url) = redis::shared() else { return };
    let app = spawn_app_with(|s| {
        replica(Some(url), redis::unique_prefix())(s);
        s.rate_limits.auth = Tier {
            per_minute: 1_000_000_000,
            burst: 1_000_000_000,
        };
    })
    .await;
    for _ in 0..5 {
        let r = app.post_signup(&unique_email("fast"), PASSWORD).await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    let ready = expect_json(app.get("/readyz").await, StatusCode::OK).await;
    assert_eq!(ready["rate_limit_store"], "redis", "{ready}");
}
