//! The admin read endpoints the console needs: a user with their last login, the signing
//! keys and their stages, audit counts per hour, and audit pages.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::*;

const ADMIN_PASSWORD: &str = "Adm1n!Passw0rd-long";

async fn get_ok(app: &TestApp, token: &str, path: &str) -> Value {
    expect_json(app.get_with_token(path, token).await, StatusCode::OK).await
}

fn time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("{v}: {e}"))
        .to_utc()
}

#[both_backends]
async fn a_user_shows_their_last_login_in_search_in_get_and_after_a_change() {
    let app = spawn_app().await;
    let email = unique_email("seen");
    let signed_up = app.signup_ok(&email, PASSWORD).await;
    let id = user_id_of(&signed_up).to_owned();
    app.advance(Duration::from_secs(3600));
    app.login_ok(&email, PASSWORD).await;
    let admin = app
        .create_admin(&unique_email("admin"), ADMIN_PASSWORD)
        .await;
    let never = unique_email("never");
    app.cli_ok(
        &["users", "create", "--email", &never],
        Some(&format!("{PASSWORD}\n")),
    )
    .await;

    let found = get_ok(
        &app,
        access_of(&admin),
        &format!("/v1/admin/users?email={email}"),
    )
    .await;
    let user = &found["users"][0];
    assert_admin_user(user, &email, "user");
    assert_eq!(
        time(&user["last_login_at"]).timestamp(),
        app.now().timestamp(),
        "the newest login, not the signup: {user}"
    );

    let one = get_ok(&app, access_of(&admin), &format!("/v1/admin/users/{id}")).await;
    assert_admin_user(&one, &email, "user");
    assert_eq!(one["last_login_at"], user["last_login_at"]);

    let patched = app
        .patch_with_token(
            &format!("/v1/admin/users/{id}"),
            access_of(&admin),
            &json!({ "role": "admin" }),
        )
        .await;
    let patched = expect_json(patched, StatusCode::OK).await;
    assert_admin_user(&patched, &email, "admin");
    assert_eq!(patched["last_login_at"], user["last_login_at"]);

    let found = get_ok(
        &app,
        access_of(&admin),
        &format!("/v1/admin/users?email={never}"),
    )
    .await;
    assert_admin_user(&found["users"][0], &never, "user");
    assert_eq!(found["users"][0]["last_login_at"], Value::Null, "{found}");
}

#[both_backends]
async fn getting_an_unknown_or_malformed_user_is_404_and_non_admins_get_403() {
    let app = spawn_app().await;
    let admin = app
        .create_admin(&unique_email("admin"), ADMIN_PASSWORD)
        .await;
    let user = app.signup_ok(&unique_email("plain"), PASSWORD).await;
    for path in [
        format!("/v1/admin/users/{}", Uuid::new_v4()),
        "/v1/admin/users/not-a-uuid".to_owned(),
    ] {
        let r = app.get_with_token(&path, access_of(&admin)).await;
        assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    }
    for path in [
        format!("/v1/admin/users/{}", user_id_of(&user)),
        "/v1/admin/keys".to_owned(),
        "/v1/admin/stats".to_owned(),
    ] {
        let r = app.get_with_token(&path, access_of(&user)).await;
        assert_error(r, StatusCode::FORBIDDEN, "forbidden").await;
        assert_invalid_token(app.get(&path).await, false).await;
    }
}

#[both_backends]
async fn keys_show_each_published_key_with_its_stage_and_times() {
    let app = spawn_app().await;
    let admin = app
        .create_admin(&unique_email("admin"), ADMIN_PASSWORD)
        .await;
    let body = get_ok(&app, access_of(&admin), "/v1/admin/keys").await;
    let keys = body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1, "{body}");
    let first = keys[0]["kid"].as_str().expect("kid").to_owned();
    assert_eq!(keys[0]["stage"], "current");
    assert_eq!(keys[0]["hand_placed"], false);
    assert!(keys[0]["activated_at"].is_string(), "{body}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(r#"route="/v1/admin/keys""#), "{metrics}");
    let jwks = expect_json(app.get("/.well-known/jwks.json").await, StatusCode::OK).await;
    assert_eq!(
        jwks["keys"][0]["kid"],
        first.as_str(),
        "the kid the JWKS publishes"
    );

    // A next key, as `gatehouse keys generate` makes it (in the keys directory, or the
    // database), once a reload has found it.
    let later = app.now() + chrono::Duration::seconds(5);
    let timing = app.settings.key_timing();
    let source = app.state.key_store.clone();
    let ring = tokio::task::spawn_blocking(move || {
        source.generate(later).expect("generate");
        source.load(later, timing).expect("ring").0
    })
    .await
    .expect("key task");
    app.state.replace_keys(ring);
    let body = get_ok(&app, access_of(&admin), "/v1/admin/keys").await;
    let keys = body["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 2, "{body}");
    assert_eq!(keys[0]["kid"], first.as_str(), "the signer comes first");
    assert_eq!(keys[1]["stage"], "next");
    assert_eq!(
        time(&keys[1]["published_at"]).timestamp(),
        later.timestamp()
    );
    assert_eq!(keys[1]["activated_at"], Value::Null);

    // Rotated: the old key is retired and says when it leaves the JWKS.
    let rotated = later + chrono::Duration::seconds(3600);
    let source = app.state.key_store.clone();
    let ring = tokio::task::spawn_blocking(move || {
        source.rotate(rotated, timing, false).expect("rotate");
        source.load(rotated, timing).expect("ring").0
    })
    .await
    .expect("key task");
    app.state.replace_keys(ring);
    let body = get_ok(&app, access_of(&admin), "/v1/admin/keys").await;
    let keys = body["keys"].as_array().expect("keys");
    assert_eq!(keys[0]["stage"], "current");
    assert_eq!(keys[1]["kid"], first.as_str());
    assert_eq!(keys[1]["stage"], "retired");
    assert_eq!(
        time(&keys[1]["unpublish_at"]).timestamp(),
        rotated.timestamp() + timing.retire_after
    );
    for key in keys {
        let fields: Vec<&str> = key
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            fields.len(),
            7,
            "kid, stage, hand_placed and four times: {key}"
        );
    }
}

#[both_backends]
async fn stats_count_audited_events_per_hour_and_kind() {
    let app = spawn_app().await;
    let email = unique_email("counted");
    app.signup_ok(&email, PASSWORD).await;
    app.advance(Duration::from_secs(2 * 3600));
    let admin = app
        .create_admin(&unique_email("admin"), ADMIN_PASSWORD)
        .await;
    app.login_ok(&email, PASSWORD).await;
    app.login_ok(&email, PASSWORD).await;
    app.post_login(&email, OTHER_PASSWORD).await;

    let body = get_ok(&app, access_of(&admin), "/v1/admin/stats").await;
    let hours = body["hours"].as_array().expect("hours");
    assert_eq!(
        hours.len(),
        25,
        "the last 24 hours and the current one: {body}"
    );
    assert_eq!(time(&hours[0]), time(&body["from"]));
    for w in hours.windows(2) {
        assert_eq!((time(&w[1]) - time(&w[0])).num_seconds(), 3600);
    }
    let counts = body["counts"].as_object().expect("counts");
    for kind in [
        "login_succeeded",
        "login_failed",
        "refresh_reuse_detected",
        "signup",
    ] {
        let series = counts[kind]
            .as_array()
            .unwrap_or_else(|| panic!("{kind}: {body}"));
        assert_eq!(series.len(), 25, "{kind}");
    }
    let sum = |kind: &str| -> u64 {
        counts[kind]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_u64().unwrap())
            .sum()
    };
    // The admin's own login, then the user's two.
    assert_eq!(counts["login_succeeded"][24], 3, "{body}");
    assert_eq!(sum("login_succeeded"), 3, "{body}");
    assert_eq!(counts["login_failed"][24], 1, "{body}");
    assert_eq!(
        sum("signup"),
        1,
        "the admin is seeded, not signed up: {body}"
    );
    assert_eq!(
        counts["signup"][22], 1,
        "two hours before the current one: {body}"
    );
    assert_eq!(sum("refresh_reuse_detected"), 0);

    // `since` picks the first hour; only what happened from then on counts.
    let since = (app.now() - chrono::Duration::minutes(10)).to_rfc3339();
    let r = app
        .api_client
        .get(app.url("/v1/admin/stats"))
        .query(&[("since", since.as_str())])
        .bearer_auth(access_of(&admin))
        .send()
        .await
        .unwrap();
    let body = expect_json(r, StatusCode::OK).await;
    let hours = body["hours"].as_array().expect("hours");
    assert!((1..=2).contains(&hours.len()), "{body}");
    assert_eq!(
        body["counts"]["signup"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| **n != 0)
            .count(),
        0
    );
}

#[both_backends]
async fn stats_refuse_a_since_that_is_malformed_in_the_future_or_over_a_month_ago() {
    let app = spawn_app().await;
    let admin = app
        .create_admin(&unique_email("admin"), ADMIN_PASSWORD)
        .await;
    let future = (app.now() + chrono::Duration::hours(1)).to_rfc3339();
    let old = (app.now() - chrono::Duration::days(32)).to_rfc3339();
    for since in ["yesterday", "2026-13-01T00:00:00Z", &future, &old] {
        let r = app
            .api_client
            .get(app.url("/v1/admin/stats"))
            .query(&[("since", since)])
            .bearer_auth(access_of(&admin))
            .send()
            .await
            .unwrap();
        assert_validation_failed(r, &["since"]).await;
    }
}

#[both_backends]
async fn the_audit_log_pages_backwards_with_before() {
    let app = spawn_app().await;
    let admin = app
        .create_admin(&unique_email("admin"), ADMIN_PASSWORD)
        .await;
    let email = unique_email("paged");
    for _ in 0..5 {
        app.post_login(&email, PASSWORD).await;
    }
    let page = |before: Option<i64>| {
        let mut query = vec![
            ("type", "login_failed".to_owned()),
            ("limit", "2".to_owned()),
        ];
        if let Some(b) = before {
            query.push(("before", b.to_string()));
        }
        let request = app
            .api_client
            .get(app.url("/v1/admin/audit"))
            .query(&query)
            .bearer_auth(access_of(&admin));
        async move {
            let body = expect_json(request.send().await.unwrap(), StatusCode::OK).await;
            body["events"]
                .as_array()
                .expect("events")
                .iter()
                .map(|e| e["id"].as_i64().expect("id"))
                .collect::<Vec<_>>()
        }
    };
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let ids = page(before).await;
        if ids.is_empty() {
            break;
        }
        assert!(ids.len() <= 2);
        before = ids.last().copied();
        seen.extend(ids);
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats: {seen:?}"
    );

    let r = app
        .get_with_token("/v1/admin/audit?before=x", access_of(&admin))
        .await;
    assert_validation_failed(r, &["query"]).await;
}
