//! The shared limiter over TLS (`rediss://`), as managed Redis services require: against
//! a `redis-server` that speaks only TLS, with a CA made by the test.

use gatehouse::config::{Settings, Tier};
use reqwest::StatusCode;

use crate::helpers::*;
use crate::kit::process::Binary;
use crate::kit::redis::{self, TlsRedis};

const BURST: u32 = 3;

/// Two replicas counting strict login limits in the TLS Redis, trusting `ca`.
fn over_tls(redis: &TlsRedis, prefix: &str) -> impl FnOnce(&mut Settings) {
    let (url, ca, prefix) = (redis.url(), redis.ca.clone(), prefix.to_owned());
    move |s| {
        s.rate_limits.enabled = true;
        s.rate_limits.auth = Tier {
            per_minute: 6,
            burst: BURST,
        };
        s.rate_limits.store = Some(url);
        s.rate_limits.store_ca_file = Some(ca);
        s.rate_limits.key_prefix = prefix;
    }
}

#[tokio::test]
async fn two_replicas_share_one_budget_through_redis_over_tls() {
    let tls = TlsRedis::start();
    let prefix = redis::unique_prefix();
    let a = spawn_app_with(over_tls(&tls, &prefix)).await;
    let b = spawn_app_with(over_tls(&tls, &prefix)).await;
    // Connected first (a TLS handshake on a busy machine may not fit in a request's
    // 250 ms): the flood is about the shared budget, not the first connection.
    for app in [&a, &b] {
        assert_eq!(
            store_status(app).await,
            "redis",
            "the limiter reaches Redis over TLS"
        );
    }
    let mut statuses = Vec::new();
    for i in 0..10 {
        let app = if i % 2 == 0 { &a } else { &b };
        statuses.push(
            app.post_login(&unique_email("tls-flood"), PASSWORD)
                .await
                .status(),
        );
    }
    let count = |s: StatusCode| statuses.iter().filter(|x| **x == s).count();
    assert_eq!(
        count(StatusCode::UNAUTHORIZED),
        BURST as usize,
        "{statuses:?}"
    );
    assert_eq!(
        count(StatusCode::TOO_MANY_REQUESTS),
        10 - BURST as usize,
        "one budget for both, counted over TLS: {statuses:?}"
    );
}

/// What `/readyz` says of the rate-limit store once it says `redis` (or after 10 s).
async fn store_status(app: &TestApp) -> String {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ready: serde_json::Value = app.get("/readyz").await.json().await.expect("json");
        let store = ready["rate_limit_store"].as_str().unwrap_or("").to_owned();
        if store == "redis" || std::time::Instant::now() > deadline {
            return store;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// A CA that did not sign Redis's certificate is a setting to fix: `serve` refuses to
/// start and `config check` fails, both naming the CA file setting, instead of serving
/// with a limiter that can never connect.
#[tokio::test]
async fn a_wrong_ca_fails_clearly_at_start_up_and_in_config_check() {
    let tls = TlsRedis::start();
    let dir = tempfile::tempdir().expect("temp dir");
    let binary = Binary::in_dir(dir.path())
        .with("GATEHOUSE_RATE_LIMITS", "on")
        .with("GATEHOUSE_RATE_LIMIT_STORE", &tls.url().to_string())
        .with(
            "GATEHOUSE_RATE_LIMIT_STORE_CA_FILE",
            &tls.other_ca.display().to_string(),
        );
    let refused = match binary.try_start().await {
        Ok(server) => {
            server.kill().await;
            panic!("serve started with a CA that did not sign Redis's certificate");
        }
        Err(e) => e,
    };
    for said in ["TLS handshake", "GATEHOUSE_RATE_LIMIT_STORE_CA_FILE"] {
        assert!(
            refused.contains(said),
            "start-up does not say {said:?}:\n{refused}"
        );
    }
    let (code, out) = binary.cli(&["config", "check"]).await;
    assert_ne!(code, 0, "config check passed a wrong CA:\n{out}");
    assert!(out.contains("TLS handshake"), "{out}");
    assert!(!out.contains("configuration OK"), "{out}");

    // The right CA: both pass.
    let binary = binary.with(
        "GATEHOUSE_RATE_LIMIT_STORE_CA_FILE",
        &tls.ca.display().to_string(),
    );
    let (code, out) = binary.cli(&["config", "check"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("answers"), "{out}");
    binary.start().await.kill().await;
}
