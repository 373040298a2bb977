//! gatehouse's own endpoints read the session (`sid`) of every access token: a token of a
//! revoked or expired session, or of a password that has since changed, manages nothing.
//! Also the races between a login in flight and a password change or deletion, and the
//! current-password lockout that strangers cannot trigger.

use std::time::Duration;

use gatehouse::crypto::password::PasswordCost;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

/// Signs up a user and returns (email, first token response).
async fn user(app: &TestApp, tag: &str) -> (String, Tokens) {
    let email = unique_email(tag);
    let tokens = app.signup_ok(&email, PASSWORD).await;
    (email, tokens)
}

#[both_backends]
async fn a_logged_out_session_access_token_reads_and_revokes_nothing() {
    let app = spawn_app().await;
    let (email, old) = user(&app, "logout").await;
    let new = app.login_ok(&email, PASSWORD).await;
    assert_eq!(app.post_logout(refresh_of(&old)).await.status(), 204);

    assert_invalid_token(app.get_me(access_of(&old)).await, true).await;
    assert_invalid_token(
        app.get_with_token("/v1/me/sessions", access_of(&old)).await,
        true,
    )
    .await;
    // Revoking the owner's new session with the old token is refused, and it stays live.
    let path = format!("/v1/me/sessions/{}", sid_of(&new));
    assert_invalid_token(
        app.delete_with_token(&path, access_of(&old), None).await,
        true,
    )
    .await;
    assert_eq!(app.get_me(access_of(&new)).await.status(), 200);
    app.refresh_ok(refresh_of(&new)).await;
}

#[both_backends]
async fn a_password_change_ends_the_other_sessions_access_tokens_at_once() {
    let app = spawn_app().await;
    let (_, old) = user(&app, "pwchange").await;
    let changed = app
        .post_json_with_token(
            "/v1/me/password",
            access_of(&old),
            &json!({"current_password": PASSWORD, "new_password": OTHER_PASSWORD}),
        )
        .await;
    let new = expect_json(changed, StatusCode::OK).await;
    assert_invalid_token(
        app.get_with_token("/v1/me/sessions", access_of(&old)).await,
        true,
    )
    .await;
    // The old token can no longer try passwords or delete the account either.
    let delete = app
        .delete_with_token(
            "/v1/me",
            access_of(&old),
            Some(json!({"password": OTHER_PASSWORD})),
        )
        .await;
    assert_invalid_token(delete, true).await;
    assert_eq!(app.get_me(access_of(&new)).await.status(), 200);
}

#[both_backends]
async fn reuse_detection_ends_the_family_access_tokens_at_once() {
    let app = spawn_app_with(|s| s.tokens.refresh_reuse_grace = Duration::ZERO).await;
    let (_, first) = user(&app, "reuse").await;
    let second = app.refresh_ok(refresh_of(&first)).await;
    assert_error(
        app.post_refresh(refresh_of(&first)).await,
        StatusCode::UNAUTHORIZED,
        "refresh_token_reused",
    )
    .await;
    assert_invalid_token(app.get_me(access_of(&second)).await, true).await;
    assert_invalid_token(app.get_me(access_of(&first)).await, true).await;
}

#[both_backends]
async fn an_admin_token_of_a_revoked_session_cannot_promote_anyone() {
    let app = spawn_app().await;
    let admin_email = unique_email("admin");
    let stolen = app.create_admin(&admin_email, PASSWORD).await;
    let fresh = app.login_ok(&admin_email, PASSWORD).await;
    let (_, victim) = user(&app, "victim").await;

    let revoke = format!("/v1/admin/sessions/{}", sid_of(&stolen));
    let revoked = app
        .delete_with_token(&revoke, access_of(&fresh), None)
        .await;
    assert_eq!(revoked.status(), 204);

    let promote = format!("/v1/admin/users/{}", user_id_of(&victim));
    let refused = app
        .patch_with_token(&promote, access_of(&stolen), &json!({"role": "admin"}))
        .await;
    assert_invalid_token(refused, true).await;
    let found = app
        .get_with_token(
            &format!("/v1/admin/users/{}/sessions", user_id_of(&victim)),
            access_of(&stolen),
        )
        .await;
    assert_invalid_token(found, true).await;
    let me = expect_json(app.get_me(access_of(&victim)).await, StatusCode::OK).await;
    assert_eq!(me["role"], "user", "the revoked admin token promoted: {me}");
}

#[both_backends]
async fn an_access_token_outliving_its_family_is_refused() {
    let app = spawn_app_with(|s| {
        s.tokens.access_ttl = Duration::from_secs(15 * 60);
        s.tokens.refresh_ttl = Duration::from_secs(60);
        s.tokens.family_ttl = Duration::from_secs(120);
    })
    .await;
    let (_, tokens) = user(&app, "expiry").await;
    assert_eq!(app.get_me(access_of(&tokens)).await.status(), 200);
    app.advance(Duration::from_secs(121));
    // Still inside its own 15 minutes, but its session ended at 2.
    assert_invalid_token(app.get_me(access_of(&tokens)).await, true).await;
}

/// Argon2 slow enough (hundreds of ms here) that a request reliably lands while another
/// waits for its hash: one hashing thread, so hash jobs run strictly in arrival order.
fn slow_hashing(s: &mut gatehouse::config::Settings) {
    s.password_cost = PasswordCost {
        memory_kib: 19_456,
        iterations: 12,
        parallelism: 1,
    };
    s.server.hash_workers = 1;
}

/// How long one Argon2 job takes on this app, measured with a wrong login.
async fn hash_time(app: &TestApp, email: &str) -> Duration {
    let started = std::time::Instant::now();
    let wrong = app.post_login(email, OTHER_PASSWORD).await;
    assert_eq!(wrong.status(), 401);
    started.elapsed()
}

#[both_backends]
async fn a_login_verified_before_a_password_change_opens_no_session_after_it() {
    let app = spawn_app_with(slow_hashing).await;
    let (email, first) = user(&app, "race").await;
    let t = hash_time(&app, &email).await;

    // The change verifies the current password (one hash time), then hashes the new one
    // (another). The login arrives halfway through the second: it reads the old hash,
    // and its verify runs after the change has committed.
    let body = json!({"current_password": PASSWORD, "new_password": OTHER_PASSWORD});
    let change = app.post_json_with_token("/v1/me/password", access_of(&first), &body);
    let login = async {
        tokio::time::sleep(t + t / 2).await;
        app.post_login(&email, PASSWORD).await
    };
    let (changed, login) = tokio::join!(change, login);
    let new = expect_json(changed, StatusCode::OK).await;

    // Whatever the interleaving, the old password must not hold a live session now.
    let login_status = login.status();
    if login_status == StatusCode::OK {
        let body = expect_json(login, StatusCode::OK).await;
        assert_error(
            app.post_refresh(refresh_of(&body)).await,
            StatusCode::UNAUTHORIZED,
            "invalid_refresh_token",
        )
        .await;
        assert_invalid_token(app.get_me(access_of(&body)).await, true).await;
    } else {
        assert_error(login, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let sessions = app.my_sessions_ok(access_of(&new)).await;
    assert_eq!(
        sessions.len(),
        1,
        "only the new password's session: {sessions:?}"
    );
}

#[both_backends]
async fn a_login_racing_account_deletion_gets_a_clean_401() {
    let app = spawn_app_with(slow_hashing).await;
    let (email, tokens) = user(&app, "deleted").await;
    let t = hash_time(&app, &email).await;

    // The deletion verifies the password, then deletes; the login reads the account while
    // that verify runs and opens its family after the user is gone.
    let delete = app.delete_with_token(
        "/v1/me",
        access_of(&tokens),
        Some(json!({"password": PASSWORD})),
    );
    let login = async {
        tokio::time::sleep(t / 2).await;
        app.post_login(&email, PASSWORD).await
    };
    let (deleted, login) = tokio::join!(delete, login);
    assert_eq!(deleted.status(), 204);
    assert_error(login, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    assert_error(
        app.post_login(&email, PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
}

#[both_backends]
async fn strangers_wrong_logins_do_not_block_the_owners_password_change() {
    let app = spawn_app().await;
    let (email, tokens) = user(&app, "blocked").await;
    let max = app.settings.lockout.max_failures;
    for _ in 0..max {
        let wrong = app.post_login(&email, OTHER_PASSWORD).await;
        assert_eq!(wrong.status(), 401);
    }
    // The login is locked for everyone now, the right password included...
    let locked = app.post_login(&email, PASSWORD).await;
    assert_error(locked, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
    // ...but the signed-in owner still proves their password and changes it.
    let changed = app
        .post_json_with_token(
            "/v1/me/password",
            access_of(&tokens),
            &json!({"current_password": PASSWORD, "new_password": OTHER_PASSWORD}),
        )
        .await;
    expect_json(changed, StatusCode::OK).await;
}

#[both_backends]
async fn guessing_through_a_stolen_access_token_is_limited_without_blocking_the_owner() {
    let app = spawn_app().await;
    let (email, stolen) = user(&app, "guessing").await;
    let owner = app.login_ok(&email, PASSWORD).await;
    let max = app.settings.lockout.max_failures;
    let change = |token: String, current: &'static str| {
        let app = &app;
        async move {
            app.post_json_with_token(
                "/v1/me/password",
                &token,
                &json!({"current_password": current, "new_password": "Fresh!Passw0rd-42"}),
            )
            .await
        }
    };
    for _ in 0..max {
        let wrong = change(access_of(&stolen).to_owned(), OTHER_PASSWORD).await;
        assert_error(wrong, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    }
    let refused = change(access_of(&stolen).to_owned(), PASSWORD).await;
    let body = assert_error(refused, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
    assert!(body["message"].is_string());
    // The owner's own session, and their logins, are untouched by the thief's guesses.
    let login = app.post_login(&email, PASSWORD).await;
    assert_eq!(login.status(), 200);
    let changed = change(access_of(&owner).to_owned(), PASSWORD).await;
    expect_json(changed, StatusCode::OK).await;
}
