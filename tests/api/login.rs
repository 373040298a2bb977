use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    OTHER_PASSWORD, PASSWORD, access_of, assert_error, assert_token_response,
    assert_validation_failed, header, jwt_claims, sid_of, spawn_app, unique_email,
};

#[both_backends]
async fn login_returns_200_and_a_token_response_for_a_new_family() {
    let app = spawn_app().await;
    let email = unique_email("login");
    let signup = app.signup_ok(&email, PASSWORD).await;

    let response = app.post_login(&email, PASSWORD).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("no-store")
    );
    assert_eq!(header(&response, "pragma").as_deref(), Some("no-cache"));
    let body: Value = response.json().await.unwrap();
    assert_token_response(&body, &email, "user");
    assert_eq!(body["user"]["id"], signup["user"]["id"]);
    assert_eq!(body["refresh_expires_in"], 43_200);
    // Every login is a new family.
    assert_ne!(sid_of(&body), sid_of(&signup));
    assert_ne!(body["refresh_token"], signup["refresh_token"]);
    assert_eq!(jwt_claims(access_of(&body))["sub"], signup["user"]["id"]);
}

#[both_backends]
async fn login_email_is_trimmed_and_case_insensitive() {
    let app = spawn_app().await;
    let email = unique_email("case");
    app.signup_ok(&email, PASSWORD).await;

    let body = app
        .login_ok(&format!("\t {} ", email.to_uppercase()), PASSWORD)
        .await;

    assert_eq!(body["user"]["email"], email.as_str());
}

#[both_backends]
async fn wrong_password_is_401_invalid_credentials() {
    let app = spawn_app().await;
    let email = unique_email("wrong");
    app.signup_ok(&email, PASSWORD).await;

    let response = app.post_login(&email, OTHER_PASSWORD).await;

    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

#[both_backends]
async fn the_password_is_case_sensitive() {
    let app = spawn_app().await;
    let email = unique_email("pwcase");
    app.signup_ok(&email, PASSWORD).await;

    let response = app.post_login(&email, &PASSWORD.to_uppercase()).await;

    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

#[both_backends]
async fn unknown_email_is_answered_exactly_as_a_wrong_password() {
    let app = spawn_app().await;
    let email = unique_email("known");
    app.signup_ok(&email, PASSWORD).await;

    let wrong_password = app.post_login(&email, OTHER_PASSWORD).await;
    let unknown_email = app
        .post_login(&unique_email("unknown"), OTHER_PASSWORD)
        .await;

    assert_eq!(wrong_password.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown_email.status(), wrong_password.status());
    for name in ["content-type", "www-authenticate", "retry-after"] {
        assert_eq!(
            header(&unknown_email, name),
            header(&wrong_password, name),
            "header {name} differs"
        );
    }
    let wrong_password = wrong_password.bytes().await.unwrap();
    let unknown_email = unknown_email.bytes().await.unwrap();
    assert_eq!(wrong_password, unknown_email, "bodies differ");
    let body: Value = serde_json::from_slice(&wrong_password).unwrap();
    assert_eq!(body["error"], "invalid_credentials");
}

#[both_backends]
async fn login_with_missing_fields_is_400_listing_each_field() {
    let app = spawn_app().await;

    let response = app.post_json("/v1/login", &json!({})).await;
    assert_validation_failed(response, &["email", "password"]).await;

    let response = app
        .post_json("/v1/login", &json!({ "email": unique_email("x") }))
        .await;
    assert_validation_failed(response, &["password"]).await;

    let response = app
        .post_json("/v1/login", &json!({ "password": PASSWORD }))
        .await;
    assert_validation_failed(response, &["email"]).await;
}

#[both_backends]
async fn five_failures_lock_the_email_with_429_and_retry_after() {
    let app = spawn_app().await;
    let email = unique_email("lock");
    app.signup_ok(&email, PASSWORD).await;
    assert_eq!(app.settings.lockout.max_failures, 5);

    for attempt in 1..=5 {
        let response = app.post_login(&email, OTHER_PASSWORD).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt} should still be a plain failure"
        );
    }

    // Past the limit even the right password is refused.
    let response = app.post_login(&email, PASSWORD).await;
    let retry_after = header(&response, "retry-after");
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
    let retry_after: u64 = retry_after
        .expect("429 without Retry-After")
        .parse()
        .expect("Retry-After is not a number of seconds");
    assert!(
        (1..=15 * 60).contains(&retry_after),
        "Retry-After outside the 15 min window: {retry_after}"
    );

    // Another email is not affected.
    let other = unique_email("unlocked");
    app.signup_ok(&other, PASSWORD).await;
    app.login_ok(&other, PASSWORD).await;

    // Once the window has passed, the right password works again.
    app.advance(Duration::from_secs(15 * 60 + 1));
    app.login_ok(&email, PASSWORD).await;
}

#[both_backends]
async fn lockout_is_still_in_force_just_before_the_window_ends() {
    let app = spawn_app().await;
    let email = unique_email("window");
    app.signup_ok(&email, PASSWORD).await;
    for _ in 0..5 {
        let response = app.post_login(&email, OTHER_PASSWORD).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    app.advance(Duration::from_secs(10 * 60));

    let response = app.post_login(&email, PASSWORD).await;
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
}

#[both_backends]
async fn failures_for_an_unknown_email_are_counted_too() {
    let app = spawn_app().await;
    let email = unique_email("ghost");
    for attempt in 1..=5 {
        let response = app.post_login(&email, OTHER_PASSWORD).await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }

    let response = app.post_login(&email, OTHER_PASSWORD).await;
    assert!(
        header(&response, "retry-after").is_some(),
        "429 without Retry-After"
    );
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
}

#[both_backends]
async fn lockout_counts_the_normalized_email() {
    let app = spawn_app().await;
    let email = unique_email("normlock");
    app.signup_ok(&email, PASSWORD).await;
    // Five failures spread over spellings of the same address.
    for variant in [
        email.clone(),
        email.to_uppercase(),
        format!(" {email}"),
        format!("{email} "),
        email.to_uppercase(),
    ] {
        let response = app.post_login(&variant, OTHER_PASSWORD).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    let response = app.post_login(&email, PASSWORD).await;
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
}

#[both_backends]
async fn failures_are_also_counted_per_client_ip() {
    let app = crate::helpers::spawn_app_with(|s| s.lockout.max_failures_per_ip = 3).await;
    let victim = unique_email("ip-victim");
    app.signup_ok(&victim, PASSWORD).await;

    // Three different addresses, one failure each: only the IP counter reaches its limit.
    for _ in 0..3 {
        let response = app.post_login(&unique_email("spray"), OTHER_PASSWORD).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }

    let response = app.post_login(&victim, PASSWORD).await;
    assert!(
        header(&response, "retry-after").is_some(),
        "429 without Retry-After"
    );
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;

    app.advance(Duration::from_secs(15 * 60 + 1));
    app.login_ok(&victim, PASSWORD).await;
}
