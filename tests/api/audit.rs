//! The audit log (`GET /v1/admin/audit`) and the security counters of `/metrics`.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

async fn audit(app: &TestApp, token: &str, query: &str) -> Vec<Value> {
    let r = app
        .get_with_token(&format!("/v1/admin/audit{query}"), token)
        .await;
    let body = expect_json(r, StatusCode::OK).await;
    body["events"].as_array().expect("events").clone()
}

fn kinds(events: &[Value]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e["type"].as_str().expect("type"))
        .collect()
}

#[both_backends]
async fn security_events_are_recorded_with_who_what_and_where() {
    let app = spawn_app().await;
    let admin_email = unique_email("auditor");
    let admin = app.create_admin(&admin_email, PASSWORD).await;
    let admin_token = access_of(&admin).to_owned();
    let admin_id = user_id_of(&admin).to_owned();

    let email = unique_email("audited");
    let signup = app.signup_ok(&email, PASSWORD).await;
    let user_id = user_id_of(&signup).to_owned();
    app.post_login(&email, "Wrong-Passw0rd!").await;
    let login = app.login_ok(&email, PASSWORD).await;
    // Reuse: spend a token, let its child be used, replay the parent.
    let child = app.refresh_ok(refresh_of(&login)).await;
    app.refresh_ok(refresh_of(&child)).await;
    app.post_refresh(refresh_of(&login)).await;
    app.post_logout(refresh_of(&signup)).await;
    let r = app
        .delete_with_token(
            &format!("/v1/admin/users/{user_id}/sessions"),
            &admin_token,
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = app
        .patch_with_token(
            &format!("/v1/admin/users/{user_id}"),
            &admin_token,
            &json!({"disabled": true}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    for _ in 0..=app.settings.lockout.max_failures {
        app.post_login(&email, "Wrong-Passw0rd!").await;
    }

    let events = audit(&app, &admin_token, &format!("?user_id={user_id}")).await;
    let seen = kinds(&events);
    for kind in [
        "signup",
        "login_failed",
        "login_succeeded",
        "refresh_reuse_detected",
        "logout",
        "session_revoked",
        "user_updated",
    ] {
        assert!(seen.contains(&kind), "{kind} missing: {seen:?}");
    }
    assert!(
        events.iter().all(|e| e["user_id"] == user_id.as_str()),
        "filter by user"
    );
    // Newest first.
    let ids: Vec<i64> = events
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "{ids:?}");

    let reuse = events
        .iter()
        .find(|e| e["type"] == "refresh_reuse_detected")
        .expect("reuse");
    assert_eq!(reuse["family_id"], sid_of(&login).as_str());
    assert_eq!(reuse["outcome"], "family_revoked");
    assert_eq!(reuse["ip"], "127.0.0.1");
    assert_eq!(reuse["user_agent"], USER_AGENT);
    let by_admin = events
        .iter()
        .find(|e| e["type"] == "user_updated")
        .expect("admin action");
    assert_eq!(by_admin["actor_id"], admin_id.as_str(), "who did it");
    let failed = events
        .iter()
        .find(|e| e["type"] == "login_failed")
        .expect("failure");
    assert_eq!(failed["outcome"], "wrong_password");

    // The lockout is recorded by type (it names no user: the email may not exist).
    let locked = audit(&app, &admin_token, "?type=login_locked").await;
    assert!(!locked.is_empty());
    assert!(locked.iter().all(|e| e["type"] == "login_locked"));

    let one = audit(&app, &admin_token, "?limit=1").await;
    assert_eq!(one.len(), 1);
    // No secret ever lands in the audit log.
    let all = audit(&app, &admin_token, "?limit=500").await.to_vec();
    let text = serde_json::to_string(&all).expect("json");
    for secret in [PASSWORD, refresh_of(&login), access_of(&login)] {
        assert!(!text.contains(secret), "the audit log holds a secret");
    }
}

#[both_backends]
async fn the_audit_log_is_for_admins_and_validates_its_query() {
    let app = spawn_app().await;
    let user = app.signup_ok(&unique_email("curious"), PASSWORD).await;
    let r = app
        .get_with_token("/v1/admin/audit", access_of(&user))
        .await;
    assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
    let r = app.get("/v1/admin/audit").await;
    assert_error(r, StatusCode::UNAUTHORIZED, "invalid_token").await;

    let admin = app.create_admin(&unique_email("boss"), PASSWORD).await;
    for query in [
        "?limit=0",
        "?limit=501",
        "?user_id=not-a-uuid",
        "?limit=abc",
    ] {
        let r = app
            .get_with_token(&format!("/v1/admin/audit{query}"), access_of(&admin))
            .await;
        assert_error(r, StatusCode::BAD_REQUEST, "validation_failed").await;
    }
}

#[both_backends]
async fn deleting_an_account_keeps_only_the_user_id_in_the_audit_log() {
    let app = spawn_app().await;
    let admin = app.create_admin(&unique_email("keeper"), PASSWORD).await;
    let email = unique_email("leaving");
    let user = app.signup_ok(&email, PASSWORD).await;
    let user_id = user_id_of(&user).to_owned();
    let r = app
        .delete_with_token(
            "/v1/me",
            access_of(&user),
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let events = audit(&app, access_of(&admin), &format!("?user_id={user_id}")).await;
    assert!(kinds(&events).contains(&"account_deleted"), "{events:?}");
    for e in &events {
        assert_eq!(e["ip"], Value::Null, "{e}");
        assert_eq!(e["user_agent"], Value::Null, "{e}");
    }
    let text = serde_json::to_string(&events).expect("json");
    assert!(!text.contains(&email), "the email survived deletion");
}

fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
}

#[both_backends]
async fn metrics_count_logins_refreshes_reuse_revocations_and_rate_limits() {
    let app = spawn_app_with(|s| {
        s.rate_limits.enabled = true;
        s.rate_limits.auth = gatehouse::config::Tier {
            per_minute: 60,
            burst: 6,
        };
    })
    .await;
    let email = unique_email("counted");
    let signup = app.signup_ok(&email, PASSWORD).await;
    app.post_login(&email, "Wrong-Passw0rd!").await;
    let child = app.refresh_ok(refresh_of(&signup)).await;
    app.refresh_ok(refresh_of(&child)).await;
    app.post_refresh(refresh_of(&signup)).await; // reuse
    for _ in 0..8 {
        app.post_signup(&unique_email("burst"), PASSWORD).await;
    }
    let text = app.get("/metrics").await.text().await.expect("metrics");
    assert_eq!(
        sample(&text, r#"gatehouse_logins_total{outcome="failed"}"#),
        1.0
    );
    assert_eq!(
        sample(&text, r#"gatehouse_refreshes_total{outcome="rotated"}"#),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            r#"gatehouse_refreshes_total{outcome="reuse_detected"}"#
        ),
        1.0
    );
    assert!(sample(&text, r#"gatehouse_rate_limited_total{tier="signup"}"#) >= 1.0);
    assert_eq!(
        sample(
            &text,
            r#"gatehouse_http_request_duration_seconds_count{route="/v1/refresh",method="POST",status="401"}"#
        ),
        1.0
    );
    for gauge in [
        "gatehouse_password_hash_queue_depth",
        "gatehouse_password_hash_in_flight",
        "gatehouse_db_pool_connections",
        "gatehouse_db_pool_idle_connections",
    ] {
        assert!(sample(&text, gauge) >= 0.0);
    }
    // An embedded engine (SQLite) has at least the schema and a page cache in memory once
    // it has served; a database server's memory is not in this process.
    let engine_bytes = sample(&text, "gatehouse_db_engine_memory_bytes");
    match app.backend {
        Backend::Sqlite => assert!(engine_bytes > 0.0),
        Backend::Postgres => assert_eq!(engine_bytes, 0.0),
    }
    // Ids in paths never become labels.
    let user = user_id_of(&signup);
    app.get(&format!("/v1/admin/users/{user}/sessions")).await;
    let text = app.get("/metrics").await.text().await.expect("metrics");
    assert!(!text.contains(user), "a path id leaked into metric labels");
    assert!(text.contains(r#"route="/v1/admin/users/{id}/sessions""#));
}

#[both_backends]
async fn an_admin_revoking_one_session_shows_in_the_owners_audit_view() {
    let app = spawn_app().await;
    let admin = app.create_admin(&unique_email("revoker"), PASSWORD).await;
    let tokens = app.signup_ok(&unique_email("owner"), PASSWORD).await;
    let (user_id, sid) = (user_id_of(&tokens).to_owned(), sid_of(&tokens));
    let r = app
        .delete_with_token(
            &format!("/v1/admin/sessions/{sid}"),
            access_of(&admin),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let events = audit(
        &app,
        access_of(&admin),
        &format!("?user_id={user_id}&type=session_revoked"),
    )
    .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["family_id"], sid.as_str());
    assert_eq!(events[0]["actor_id"], user_id_of(&admin));
}
