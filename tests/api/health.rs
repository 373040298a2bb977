use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{PASSWORD, expect_json, header, spawn_app, unique_email};

#[both_backends]
async fn healthz_is_200_ok() {
    let app = spawn_app().await;

    let response = app.get("/healthz").await;

    assert_eq!(
        expect_json(response, StatusCode::OK).await,
        json!({ "status": "ok" })
    );
}

#[both_backends]
async fn readyz_is_200_ready_when_the_database_answers() {
    let app = spawn_app().await;

    let response = app.get("/readyz").await;

    assert_eq!(
        expect_json(response, StatusCode::OK).await,
        json!({ "status": "ready", "rate_limit_store": "off", "mail": { "status": "off" } })
    );
}

/// `name{labels} value [timestamp]`, per the Prometheus text format 0.0.4.
fn is_sample_line(line: &str) -> bool {
    let (series, rest) = match line.find('{') {
        Some(open) => {
            let Some(close) = line.rfind('}') else {
                return false;
            };
            (&line[..open], line[close + 1..].trim())
        }
        None => match line.split_once(' ') {
            Some((name, rest)) => (name, rest.trim()),
            None => return false,
        },
    };
    let name_ok = !series.is_empty()
        && series
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
        && !series.starts_with(|c: char| c.is_ascii_digit());
    let mut fields = rest.split_whitespace();
    let value_ok = fields
        .next()
        .is_some_and(|v| v.parse::<f64>().is_ok() || ["NaN", "+Inf", "-Inf"].contains(&v));
    let timestamp_ok = fields.next().is_none_or(|t| t.parse::<i64>().is_ok());
    name_ok && value_ok && timestamp_ok && fields.next().is_none()
}

#[both_backends]
async fn metrics_are_prometheus_text() {
    let app = spawn_app().await;
    // Some traffic first, so there is something to count.
    let email = unique_email("metrics");
    app.signup_ok(&email, PASSWORD).await;
    app.login_ok(&email, PASSWORD).await;
    app.post_login(&email, "Wrong-Passw0rd!").await;
    app.get("/healthz").await;

    let response = app.get("/metrics").await;

    assert_eq!(response.status(), StatusCode::OK);
    let content_type = header(&response, "content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("version=0.0.4"),
        "content type {content_type}"
    );
    let text = response.text().await.unwrap();
    let samples: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert!(!samples.is_empty(), "no samples in /metrics:\n{text}");
    for line in &samples {
        assert!(
            is_sample_line(line),
            "not a Prometheus sample line: {line:?}"
        );
    }
    for line in text.lines().filter(|l| l.starts_with('#')) {
        assert!(
            line.starts_with("# HELP ") || line.starts_with("# TYPE ") || line.starts_with("# "),
            "bad comment line: {line:?}"
        );
    }
    // Nothing user-identifying or secret in the metrics.
    assert!(!text.contains(&email), "metrics leak an email");
    assert!(!text.contains(PASSWORD));
}

#[both_backends]
async fn jwks_and_health_answer_while_logins_fail() {
    // With the per-IP limiter on, a flood of bad logins must not starve JWKS or discovery.
    let app = crate::helpers::spawn_app_with(|s| s.rate_limits.enabled = true).await;
    let mut limited = false;
    for _ in 0..60 {
        let response = app
            .post_login(&unique_email("flood"), "Wrong-Passw0rd!")
            .await;
        let status = response.status();
        assert!(
            status == StatusCode::UNAUTHORIZED || status == StatusCode::TOO_MANY_REQUESTS,
            "login flood answered {status}"
        );
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(
                header(&response, "retry-after").is_some(),
                "429 without Retry-After"
            );
            let body: serde_json::Value = response.json().await.unwrap();
            assert!(
                body["error"] == "rate_limited" || body["error"] == "too_many_attempts",
                "{body}"
            );
            limited = true;
        }
    }
    assert!(limited, "60 failed logins from one IP were never limited");
    for path in [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/healthz",
    ] {
        for _ in 0..20 {
            let response = app.get(path).await;
            assert_eq!(
                response.status(),
                StatusCode::OK,
                "{path} starved by login traffic"
            );
        }
    }
}
