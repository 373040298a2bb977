//! Hardening at the edges: what clients choose (methods, paths, addresses,
//! forwarded headers) must not grow the server's state or loosen its limits.

use std::collections::BTreeSet;

use futures::future::join_all;
use gatehouse::config::{Settings, Tier};
use gatehouse::http::client_ip::{Cidr, ClientIpHeader};
use reqwest::{Method, Response, StatusCode};
use serde_json::json;

use crate::helpers::*;
use crate::kit::process::Binary;

/// Every series `/metrics` shows (name and labels), without the values.
async fn metric_series(app: &TestApp) -> BTreeSet<String> {
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.expect("metrics body");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            l.rsplit_once(' ')
                .map_or(l, |(series, _)| series)
                .to_owned()
        })
        .collect()
}

async fn send_made_up(app: &TestApp, round: usize, count: usize) {
    let requests = (0..count).map(|i| {
        let n = round * count + i;
        let method = Method::from_bytes(format!("MADEUP{n}").as_bytes()).expect("a token");
        let path = match n % 3 {
            0 => format!("/made/up/{n}"),
            1 => "/v1/login".to_owned(),
            _ => "/healthz".to_owned(),
        };
        app.api_client.request(method, app.url(&path)).send()
    });
    for response in join_all(requests).await {
        let status = response.expect("request").status();
        assert!(status.is_client_error(), "{status}");
    }
}

#[tokio::test]
async fn made_up_methods_and_paths_add_no_metrics_series() {
    let app = spawn_app().await;
    // A first round of each shape, and a first scrape, create the series they may.
    send_made_up(&app, 0, 6).await;
    metric_series(&app).await;
    let before = metric_series(&app).await;

    for round in 1..=10 {
        send_made_up(&app, round, 100).await;
    }

    let after = metric_series(&app).await;
    let added: Vec<&String> = after.difference(&before).collect();
    assert!(
        added.is_empty(),
        "{} series added by made-up methods and paths, e.g. {:?}",
        added.len(),
        &added[..added.len().min(3)]
    );
    let text = app.get("/metrics").await.text().await.expect("body");
    assert!(
        text.contains(r#"route="unmatched",method="other""#),
        "made-up requests are counted under one label:\n{text}"
    );
}

/// The test client connects from 127.0.0.1, which these apps trust as their proxy.
fn behind_proxy(s: &mut Settings) {
    s.http.trusted_proxies = vec![Cidr::parse("127.0.0.1/32").expect("cidr")];
}

/// A login as relayed by the trusted proxy for a client at `client`.
async fn login_via(app: &TestApp, header: (&str, String), email: &str, password: &str) -> Response {
    app.api_client
        .post(app.url("/v1/login"))
        .header(header.0, header.1)
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .expect("request")
}

async fn login_from(app: &TestApp, client: &str, email: &str, password: &str) -> Response {
    login_via(app, ("x-forwarded-for", client.to_owned()), email, password).await
}

#[both_backends]
async fn one_ipv6_64_shares_one_rate_limit_bucket() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.rate_limits.enabled = true;
        s.rate_limits.auth = Tier {
            per_minute: 6,
            burst: 3,
        };
    })
    .await;
    // Each login from a fresh address of the same /64, as a client rotating through
    // its own network would.
    for host in ["0:0:0:1", "2:3:4:5", "ffff:ffff:ffff:ffff"] {
        let r = login_from(
            &app,
            &format!("2001:db8:a:b:{host}"),
            "x@example.com",
            PASSWORD,
        )
        .await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{host}");
    }
    let r = login_from(&app, "2001:db8:a:b::77", "x@example.com", PASSWORD).await;
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;

    // The next /64 is someone else.
    let r = login_from(&app, "2001:db8:a:c::77", "x@example.com", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[both_backends]
async fn one_ipv6_64_shares_one_lockout_count_and_sessions_keep_the_full_address() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.lockout.max_failures_per_ip = 3;
    })
    .await;
    let victim = unique_email("v6-victim");
    app.signup_ok(&victim, PASSWORD).await;

    for i in 1..=3 {
        let client = format!("2001:db8:a:b:{i}::{i}");
        let r = login_from(&app, &client, &unique_email("spray"), OTHER_PASSWORD).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{client}");
    }
    let r = login_from(&app, "2001:db8:a:b:99::1", &victim, PASSWORD).await;
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;

    let r = login_from(&app, "2001:db8:a:c:99::1", &victim, PASSWORD).await;
    let body = expect_json(r, StatusCode::OK).await;
    let sessions = app.my_sessions_ok(access_of(&body)).await;
    let ips: Vec<&str> = sessions.iter().filter_map(|s| s["ip"].as_str()).collect();
    assert!(
        ips.contains(&"2001:db8:a:c:99::1"),
        "the session records the full address: {ips:?}"
    );
}

#[both_backends]
async fn with_forwarded_configured_a_client_written_x_forwarded_for_is_ignored() {
    let app = spawn_app_with(|s| {
        behind_proxy(s);
        s.http.client_ip_header = ClientIpHeader::Forwarded;
        s.rate_limits.enabled = true;
        s.rate_limits.auth = Tier {
            per_minute: 6,
            burst: 3,
        };
    })
    .await;
    // The proxy writes Forwarded and passes the client's own X-Forwarded-For along; the
    // client changes it on every request to get a fresh bucket each time.
    let login = |client: &'static str, forged: String| {
        let app = &app;
        async move {
            app.api_client
                .post(app.url("/v1/login"))
                .header("x-forwarded-for", forged)
                .header("forwarded", format!("for={client};proto=https"))
                .json(&json!({"email": "x@example.com", "password": PASSWORD}))
                .send()
                .await
                .expect("request")
        }
    };
    for i in 0..3 {
        let r = login("198.51.100.7", format!("192.0.2.{i}")).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{i}");
    }
    let r = login("198.51.100.7", "192.0.2.99".into()).await;
    assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    let r = login("198.51.100.8", "192.0.2.99".into()).await;
    assert_eq!(
        r.status(),
        StatusCode::UNAUTHORIZED,
        "another client, its own bucket"
    );

    // A value that names no address counts the request as the proxy's, once.
    let r = login_via(
        &app,
        ("forwarded", "for=unknown".into()),
        "x@example.com",
        PASSWORD,
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let text = app.get("/metrics").await.text().await.expect("body");
    assert!(
        text.contains("gatehouse_client_ip_header_malformed_total 1\n"),
        "{text}"
    );
}

async fn config_check(env: &[(&str, &str)]) -> (i32, String) {
    let dir = tempfile::tempdir().expect("tmp");
    std::fs::create_dir(dir.path().join("keys")).expect("keys dir");
    let binary = env
        .iter()
        .fold(Binary::in_dir(dir.path()), |b, (k, v)| b.with(k, v));
    binary.cli(&["config", "check"]).await
}

#[tokio::test]
async fn config_check_names_the_header_and_warns_about_trusting_whole_ranges() {
    let (code, text) = config_check(&[
        ("GATEHOUSE_TRUSTED_PROXIES", "10.1.2.3, ::/0, 172.16.0.0/12"),
        ("GATEHOUSE_CLIENT_IP_HEADER", "forwarded"),
    ])
    .await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("GATEHOUSE_CLIENT_IP_HEADER=forwarded"),
        "{text}"
    );
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("# warning: GATEHOUSE_TRUSTED_PROXIES"))
        .collect();
    assert_eq!(warnings.len(), 2, "{text}");
    assert!(warnings[0].contains("::/0"), "{text}");
    assert!(warnings[1].contains("172.16.0.0/12"), "{text}");

    let (code, text) = config_check(&[("GATEHOUSE_TRUSTED_PROXIES", "10.1.2.3")]).await;
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("GATEHOUSE_CLIENT_IP_HEADER=x-forwarded-for"),
        "{text}"
    );
    assert!(
        !text.contains("warning: GATEHOUSE_TRUSTED_PROXIES"),
        "{text}"
    );

    let (code, text) = config_check(&[("GATEHOUSE_CLIENT_IP_HEADER", "x-real-ip")]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("GATEHOUSE_CLIENT_IP_HEADER"), "{text}");
}

#[tokio::test]
async fn config_check_prints_every_declared_setting_and_refuses_a_misspelt_switch() {
    let (code, text) = config_check(&[]).await;
    assert_eq!(code, 0, "{text}");
    for setting in gatehouse::config::settings() {
        let line = format!("\n{}=", setting.env);
        assert!(
            format!("\n{text}").contains(&line),
            "{}: {text}",
            setting.env
        );
    }
    assert!(text.contains("GATEHOUSE_BODY_TIMEOUT=10s"), "{text}");

    // A switch that is neither on nor off stops the start, as any malformed value does.
    for (key, value) in [("GATEHOUSE_HSTS", "onn"), ("GATEHOUSE_RATE_LIMITS", "of")] {
        let (code, text) = config_check(&[(key, value)]).await;
        assert_eq!(code, 1, "{key}={value}: {text}");
        assert!(
            text.contains(&format!("{key}: {value:?} is not on or off")),
            "{text}"
        );
    }
    let (code, text) = config_check(&[("GATEHOUSE_PRUNE_INTERVAL", "0")]).await;
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("GATEHOUSE_PRUNE_INTERVAL: "), "{text}");
}
