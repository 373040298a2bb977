use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use super::{admin_token, client_access, client_token, create_client};
use crate::helpers::{
    PASSWORD, access_of, assert_error, assert_invalid_token, expect_json, header, refresh_of,
    sid_of, spawn_app, unique_email,
};

async fn poll(app: &crate::helpers::TestApp, token: &str, etag: Option<&str>) -> reqwest::Response {
    let mut request = app
        .api_client
        .get(app.url("/v1/revocations"))
        .bearer_auth(token);
    if let Some(tag) = etag {
        request = request.header("if-none-match", tag);
    }
    request.send().await.expect("request")
}

fn sids(body: &serde_json::Value) -> Vec<String> {
    body["sids"]
        .as_array()
        .expect("sids")
        .iter()
        .map(|s| s.as_str().expect("a sid").to_owned())
        .collect()
}

#[both_backends]
async fn the_feed_lists_a_revoked_sid_at_the_next_poll_until_the_access_lifetime_ends() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let poller = create_client(&app, &admin, &["revocations"]).await;
    let token = client_access(&app, &poller).await;
    let session = app.signup_ok(&unique_email("feed"), PASSWORD).await;

    let response = poll(&app, &token, None).await;
    let cache = header(&response, "cache-control").expect("cache-control");
    let max_age: u64 = cache
        .split("max-age=")
        .nth(1)
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse().ok())
        .expect("a max-age");
    assert!(max_age <= 10, "{cache}");
    let empty_tag = header(&response, "etag").expect("etag");
    let body = expect_json(response, StatusCode::OK).await;
    assert_eq!(body["sids"], json!([]));
    assert!(body["generated_at"].is_string(), "{body}");

    // Unchanged: 304 without a body, the same validator.
    let response = poll(&app, &token, Some(&empty_tag)).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(
        header(&response, "etag").as_deref(),
        Some(empty_tag.as_str())
    );

    // A logout: listed at the very next poll, under a new validator.
    app.post_logout(refresh_of(&session)).await;
    let response = poll(&app, &token, Some(&empty_tag)).await;
    let tag = header(&response, "etag").expect("etag");
    assert_ne!(tag, empty_tag);
    let body = expect_json(response, StatusCode::OK).await;
    assert_eq!(sids(&body), vec![sid_of(&session)]);
    let response = poll(&app, &token, Some(&tag)).await;
    assert_eq!(response.status(), StatusCode::NOT_MODIFIED);

    // Listed while an access token of it could verify (lifetime and 30 s leeway), then not.
    app.advance(Duration::from_secs(900 + 30));
    let token = client_access(&app, &poller).await;
    let body = expect_json(poll(&app, &token, None).await, StatusCode::OK).await;
    assert_eq!(sids(&body), vec![sid_of(&session)]);
    app.advance(Duration::from_secs(1));
    let response = poll(&app, &token, None).await;
    assert_eq!(
        header(&response, "etag").as_deref(),
        Some(empty_tag.as_str())
    );
    assert_eq!(
        expect_json(response, StatusCode::OK).await["sids"],
        json!([])
    );
}

#[both_backends]
async fn the_feed_lists_the_sessions_of_a_deleted_user_and_of_a_disabled_one() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let poller = create_client(&app, &admin, &["revocations"]).await;
    let token = client_access(&app, &poller).await;
    let email = unique_email("gone");
    let first = app.signup_ok(&email, PASSWORD).await;
    let second = app.login_ok(&email, PASSWORD).await;
    let kept = app.signup_ok(&unique_email("kept"), PASSWORD).await;
    let disabled = app.signup_ok(&unique_email("disabled"), PASSWORD).await;

    let response = app
        .delete_with_token(
            "/v1/me",
            access_of(&second),
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app
        .patch_with_token(
            &format!("/v1/admin/users/{}", disabled.user.id),
            &admin,
            &json!({ "disabled": true }),
        )
        .await;
    expect_json(response, StatusCode::OK).await;

    let body = expect_json(poll(&app, &token, None).await, StatusCode::OK).await;
    let mut expected = vec![sid_of(&first), sid_of(&second), sid_of(&disabled)];
    expected.sort();
    assert_eq!(sids(&body), expected);
    assert!(!sids(&body).contains(&sid_of(&kept)));
}

#[both_backends]
async fn the_feed_is_for_clients_holding_the_scope_only() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let without = create_client(&app, &admin, &["introspect"]).await;
    let with = create_client(&app, &admin, &["revocations", "other"]).await;
    let user = app.signup_ok(&unique_email("user"), PASSWORD).await;

    let response = poll(&app, access_of(&user), None).await;
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = poll(&app, &admin, None).await;
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let token = client_access(&app, &without).await;
    assert_error(
        poll(&app, &token, None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    // A token asked for without the scope does not carry it.
    let narrow = client_token(&app, &with, Some("other")).await;
    let narrow = narrow["access_token"].as_str().expect("token");
    assert_error(
        poll(&app, narrow, None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;

    assert_invalid_token(app.get("/v1/revocations").await, false).await;
    assert_invalid_token(poll(&app, "junk", None).await, true).await;
    // A deleted client's token opens nothing.
    let token = client_access(&app, &with).await;
    expect_json(poll(&app, &token, None).await, StatusCode::OK).await;
    let response = app
        .delete_with_token(&format!("/v1/admin/clients/{}", with.id), &admin, None)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_invalid_token(poll(&app, &token, None).await, true).await;
}

/// How many revoked sessions the measurement lists: a burst far above any real one
/// (every user of a large install logging out within one access-token lifetime).
const MEASURED: usize = 10_000;

/// The feed's size and latency with `MEASURED` recent revocations, printed for
/// RELIABILITY.md (`cargo test --test api the_feed_with_ten_thousand -- --nocapture`):
/// the whole list in one answer, and 304 for a poller that already has it.
#[both_backends]
async fn the_feed_with_ten_thousand_revocations_stays_one_small_fast_answer() {
    use gatehouse::domain::{AuditKind, FamilyId, RevokeReason, UserId};
    use gatehouse::storage::{AuditEvent, NewFamily};

    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let poller = create_client(&app, &admin, &["revocations"]).await;
    let token = client_access(&app, &poller).await;
    let user = app.signup_ok(&unique_email("many"), PASSWORD).await;
    let user_id: UserId = user.user.id.parse().expect("user id");
    let now = app.now();
    // Seeded through the store: 10,000 logins of one user, then one revocation of all.
    app.store(move |s| {
        for i in 0..MEASURED {
            let mut first = [0u8; 32];
            first[..8].copy_from_slice(&(i as u64).to_be_bytes());
            first[8] = 0xfe;
            s.create_family(NewFamily {
                id: FamilyId::random(),
                user_id,
                first_token: first,
                now,
                token_expires_at: now + chrono::Duration::hours(1),
                family_expires_at: now + chrono::Duration::days(1),
                user_agent: None,
                ip: None,
                password_generation: 0,
                amr: gatehouse::domain::Amr::Pwd,
                opened_by: AuditEvent::new(now, AuditKind::LoginSucceeded, "ok"),
                forgives: None,
                settles: None,
            })?;
        }
        s.revoke_user_families(user_id, RevokeReason::Admin, now)
    })
    .await;

    let mut full = Vec::new();
    let mut etag = String::new();
    let mut size = 0;
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let response = poll(&app, &token, None).await;
        etag = header(&response, "etag").expect("etag");
        let bytes = response.bytes().await.expect("body");
        full.push(started.elapsed());
        size = bytes.len();
        let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
        assert_eq!(body["sids"].as_array().expect("sids").len(), MEASURED + 1);
    }
    let mut unchanged = Vec::new();
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let response = poll(&app, &token, Some(&etag)).await;
        assert_eq!(response.status(), StatusCode::NOT_MODIFIED);
        unchanged.push(started.elapsed());
    }
    full.sort();
    unchanged.sort();
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    eprintln!(
        "feed on {:?} with {} sids: {size} bytes; 200 median {:.1} ms, max {:.1} ms; \
         304 median {:.1} ms, max {:.1} ms (20 polls each)",
        app.backend,
        MEASURED + 1,
        ms(full[10]),
        ms(full[19]),
        ms(unchanged[10]),
        ms(unchanged[19]),
    );
    // 37 bytes a sid, and a bound any poller can afford every few seconds.
    assert!(size < 40 * (MEASURED + 1) + 100, "{size} bytes");
}
