use std::time::Duration;

use chrono::DateTime;
use gatehouse::domain::{Email, UserId};
use gatehouse::storage::{AuditFilter, email_attempt_key};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    OTHER_PASSWORD, PASSWORD, USER_AGENT, access_of, assert_error, assert_invalid_token,
    assert_session_shape, assert_token_response, assert_user, assert_validation_failed, refresh_of,
    sid_of, spawn_app, unique_email, user_id_of,
};

#[both_backends]
async fn me_returns_the_caller() {
    let app = spawn_app().await;
    let email = unique_email("me");
    let tokens = app.signup_ok(&email, PASSWORD).await;

    let response = app.get_me(access_of(&tokens)).await;

    assert_eq!(response.status(), StatusCode::OK);
    let mut me: Value = response.json().await.unwrap();
    // `/v1/me` adds how many recovery codes are left to the user.
    let left = me
        .as_object_mut()
        .and_then(|o| o.remove("recovery_codes_left"))
        .expect("recovery_codes_left");
    assert_eq!(left, 0);
    assert_user(&me, &email, "user");
    assert_eq!(me, tokens["user"]);
    assert_eq!(me["disabled"], false);
}

#[both_backends]
async fn me_without_a_token_is_401_with_a_bearer_challenge() {
    let app = spawn_app().await;

    let response = app.get("/v1/me").await;

    assert_invalid_token(response, false).await;
}

#[both_backends]
async fn sessions_lists_the_live_families_newest_first() {
    let app = spawn_app().await;
    let email = unique_email("sessions");
    let first = app.signup_ok(&email, PASSWORD).await;
    app.advance(Duration::from_secs(60));
    let second = app.login_ok(&email, PASSWORD).await;
    app.advance(Duration::from_secs(60));
    let third = app.login_ok(&email, PASSWORD).await;
    app.post_logout(refresh_of(&second)).await;

    let sessions = app.my_sessions_ok(access_of(&first)).await;

    let ids: Vec<String> = sessions.iter().map(assert_session_shape).collect();
    assert_eq!(ids, vec![sid_of(&third), sid_of(&first)]);
    for session in &sessions {
        assert_eq!(session["revoked_at"], Value::Null, "{session}");
        assert_eq!(session["revoked_reason"], Value::Null, "{session}");
        assert_eq!(session["user_agent"], USER_AGENT, "{session}");
        assert_eq!(session["ip"], "127.0.0.1", "{session}");
        let created =
            DateTime::parse_from_rfc3339(session["created_at"].as_str().unwrap()).unwrap();
        let expires =
            DateTime::parse_from_rfc3339(session["expires_at"].as_str().unwrap()).unwrap();
        // expires_at is the family's absolute expiry: 7 days after login.
        assert_eq!(
            (expires - created).num_seconds(),
            7 * 24 * 3600,
            "{session}"
        );
    }
}

/// Logins within one second (the test clock stands still) are listed in the order they
/// happened, newest first, by the API as by the console that shows its order.
#[both_backends]
async fn sessions_opened_within_one_second_are_listed_newest_first() {
    let app = spawn_app().await;
    let email = unique_email("same-second");
    let mut opened = vec![sid_of(&app.signup_ok(&email, PASSWORD).await)];
    let mut last = None;
    for _ in 0..5 {
        let tokens = app.login_ok(&email, PASSWORD).await;
        opened.push(sid_of(&tokens));
        last = Some(tokens);
    }
    let sessions = app
        .my_sessions_ok(access_of(last.as_ref().expect("logged in")))
        .await;
    let listed: Vec<String> = sessions.iter().map(assert_session_shape).collect();
    opened.reverse();
    assert_eq!(listed, opened);
}

#[both_backends]
async fn sessions_report_last_use() {
    let app = spawn_app().await;
    let tokens = app.signup_ok(&unique_email("lastused"), PASSWORD).await;
    let before = app.my_sessions_ok(access_of(&tokens)).await;

    app.advance(Duration::from_secs(3600));
    let rotated = app.refresh_ok(refresh_of(&tokens)).await;
    let after = app.my_sessions_ok(access_of(&rotated)).await;

    let parse =
        |s: &Value| DateTime::parse_from_rfc3339(s["last_used_at"].as_str().unwrap()).unwrap();
    assert_eq!((parse(&after[0]) - parse(&before[0])).num_seconds(), 3600);
    assert_eq!(after[0]["created_at"], before[0]["created_at"]);
}

#[both_backends]
async fn deleting_an_own_session_revokes_it() {
    let app = spawn_app().await;
    let email = unique_email("del-own");
    let kept = app.signup_ok(&email, PASSWORD).await;
    let doomed = app.login_ok(&email, PASSWORD).await;

    let response = app
        .delete_with_token(
            &format!("/v1/me/sessions/{}", sid_of(&doomed)),
            access_of(&kept),
            None,
        )
        .await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app.post_refresh(refresh_of(&doomed)).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    let ids: Vec<String> = app
        .my_sessions_ok(access_of(&kept))
        .await
        .iter()
        .map(assert_session_shape)
        .collect();
    assert_eq!(ids, vec![sid_of(&kept)]);
    app.refresh_ok(refresh_of(&kept)).await;

    // Deleting it again is still 204.
    let response = app
        .delete_with_token(
            &format!("/v1/me/sessions/{}", sid_of(&doomed)),
            access_of(&kept),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[both_backends]
async fn deleting_another_users_session_is_404_and_leaves_it_alone() {
    let app = spawn_app().await;
    let mallory = app.signup_ok(&unique_email("mallory"), PASSWORD).await;
    let victim = app.signup_ok(&unique_email("victim"), PASSWORD).await;

    let response = app
        .delete_with_token(
            &format!("/v1/me/sessions/{}", sid_of(&victim)),
            access_of(&mallory),
            None,
        )
        .await;

    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    app.refresh_ok(refresh_of(&victim)).await;
}

#[both_backends]
async fn deleting_an_unknown_or_malformed_session_is_404() {
    let app = spawn_app().await;
    let tokens = app
        .signup_ok(&unique_email("unknown-session"), PASSWORD)
        .await;

    for id in [Uuid::new_v4().to_string(), "not-a-uuid".to_owned()] {
        let response = app
            .delete_with_token(&format!("/v1/me/sessions/{id}"), access_of(&tokens), None)
            .await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
}

#[both_backends]
async fn session_endpoints_need_a_token() {
    let app = spawn_app().await;
    let response = app.get("/v1/me/sessions").await;
    assert_invalid_token(response, false).await;

    let response = app
        .delete(&format!("/v1/me/sessions/{}", Uuid::new_v4()))
        .await;
    assert_invalid_token(response, false).await;
}

#[both_backends]
async fn password_change_revokes_other_families_and_returns_a_new_one() {
    let app = spawn_app().await;
    let email = unique_email("pwchange");
    let current = app.signup_ok(&email, PASSWORD).await;
    let other = app.login_ok(&email, PASSWORD).await;

    let response = app
        .post_json_with_token(
            "/v1/me/password",
            access_of(&current),
            &json!({ "current_password": PASSWORD, "new_password": OTHER_PASSWORD }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let fresh: Value = response.json().await.unwrap();
    assert_token_response(&fresh, &email, "user");
    let fresh_family = sid_of(&fresh);
    assert_ne!(fresh_family, sid_of(&current));
    assert_ne!(fresh_family, sid_of(&other));

    // Every earlier family is revoked (password_change), the new one works.
    for old in [&current, &other] {
        let response = app.post_refresh(refresh_of(old)).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
        let session = app.stored_session(user_id_of(old), &sid_of(old)).await;
        assert_eq!(
            session.revoked_reason.map(|r| r.as_str()),
            Some("password_change")
        );
    }
    let rotated = app.refresh_ok(refresh_of(&fresh)).await;
    let live: Vec<String> = app
        .my_sessions_ok(access_of(&rotated))
        .await
        .iter()
        .map(assert_session_shape)
        .collect();
    assert_eq!(live, vec![fresh_family]);

    // Only the new password logs in.
    let response = app.post_login(&email, PASSWORD).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    app.login_ok(&email, OTHER_PASSWORD).await;
}

#[both_backends]
async fn password_change_with_a_wrong_current_password_is_401_and_changes_nothing() {
    let app = spawn_app().await;
    let email = unique_email("pw-wrong");
    let tokens = app.signup_ok(&email, PASSWORD).await;

    let response = app
        .post_json_with_token(
            "/v1/me/password",
            access_of(&tokens),
            &json!({ "current_password": "Not-The-Pass1!", "new_password": OTHER_PASSWORD }),
        )
        .await;

    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    app.refresh_ok(refresh_of(&tokens)).await;
    app.login_ok(&email, PASSWORD).await;
}

#[both_backends]
async fn password_change_validates_the_new_password() {
    let app = spawn_app().await;
    let tokens = app.signup_ok(&unique_email("pw-policy"), PASSWORD).await;
    let change = |body: Value| {
        let app = &app;
        let token = access_of(&tokens).to_owned();
        async move {
            app.post_json_with_token("/v1/me/password", &token, &body)
                .await
        }
    };

    let response = change(json!({ "current_password": PASSWORD, "new_password": "weak" })).await;
    assert_validation_failed(response, &["new_password"]).await;

    let response = change(json!({ "current_password": PASSWORD, "new_password": PASSWORD })).await;
    assert_validation_failed(response, &["new_password"]).await;

    let response = change(json!({})).await;
    assert_validation_failed(response, &["current_password", "new_password"]).await;

    let response = app
        .post_json(
            "/v1/me/password",
            &json!({ "current_password": PASSWORD, "new_password": OTHER_PASSWORD }),
        )
        .await;
    assert_invalid_token(response, false).await;
}

#[both_backends]
async fn deleting_the_account_removes_the_user_and_kills_its_tokens() {
    let app = spawn_app().await;
    let email = unique_email("delete-me");
    let tokens = app.signup_ok(&email, PASSWORD).await;
    let other = app.login_ok(&email, PASSWORD).await;
    let user_id = user_id_of(&tokens).to_owned();

    let response = app
        .delete_with_token(
            "/v1/me",
            access_of(&tokens),
            Some(json!({ "password": PASSWORD })),
        )
        .await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    // Still-unexpired access tokens are refused where the user is loaded.
    for t in [&tokens, &other] {
        let response = app.get_me(access_of(t)).await;
        assert_invalid_token(response, true).await;
        let response = app.post_refresh(refresh_of(t)).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    }
    let response = app.post_login(&email, PASSWORD).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let id: UserId = user_id.parse().unwrap();
    assert!(
        app.store(move |s| s.account_by_id(id)).await.is_none(),
        "the user is still stored"
    );
    let sessions = app.stored_sessions(&user_id).await;
    assert!(sessions.is_empty(), "families left behind: {sessions:?}");
    for t in [&tokens, &other] {
        assert!(
            app.stored_token(refresh_of(t)).await.is_none(),
            "a refresh token's hash was left behind"
        );
    }
    // The address is free again.
    let again = app.signup_ok(&email, PASSWORD).await;
    assert_ne!(user_id_of(&again), user_id);
}

#[both_backends]
async fn a_deleted_account_leaves_no_trace_of_its_email() {
    let app = spawn_app().await;
    let email = unique_email("forget-me");
    let tokens = app.signup_ok(&email, PASSWORD).await;
    // A failed login leaves a lockout row for the address; a session has user agent and IP.
    let response = app.post_login(&email, OTHER_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    let response = app
        .delete_with_token(
            "/v1/me",
            access_of(&tokens),
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    // Everything the store can tell about the address; sqlite_only.rs also scans every
    // table of the SQLite file for it.
    let parsed = Email::parse(&email).unwrap();
    let key = email_attempt_key(&parsed);
    let (window, now) = (app.settings.lockout.window.as_secs() as i64, app.now());
    let (account, found, failures, audit) = app
        .store(move |s| {
            Ok((
                s.account_by_email(&parsed)?,
                s.search_users(Some(parsed.as_str()), 10)?,
                s.login_failures(&[key], window, now)?,
                s.list_audit(&AuditFilter {
                    limit: 1000,
                    ..AuditFilter::default()
                })?,
            ))
        })
        .await;
    assert!(account.is_none(), "the account is still stored");
    assert!(found.is_empty(), "the email is still searchable: {found:?}");
    assert_eq!(
        failures[0].failures, 0,
        "the email's lockout counter is kept"
    );
    assert!(
        !audit.is_empty(),
        "the audit log was emptied rather than scrubbed"
    );
    for record in &audit {
        let text = format!("{record:?}");
        assert!(
            !text.contains(&email),
            "an audit event still holds the deleted user's email: {text}"
        );
    }
    let sessions = app.stored_sessions(user_id_of(&tokens)).await;
    assert!(sessions.is_empty(), "sessions left behind: {sessions:?}");
}

#[both_backends]
async fn deleting_the_account_needs_the_right_password() {
    let app = spawn_app().await;
    let email = unique_email("delete-wrong");
    let tokens = app.signup_ok(&email, PASSWORD).await;

    let response = app
        .delete_with_token(
            "/v1/me",
            access_of(&tokens),
            Some(json!({ "password": OTHER_PASSWORD })),
        )
        .await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_credentials").await;

    let response = app
        .delete_with_token("/v1/me", access_of(&tokens), Some(json!({})))
        .await;
    assert_validation_failed(response, &["password"]).await;

    let response = app.get_me(access_of(&tokens)).await;
    assert_eq!(response.status(), StatusCode::OK);
    app.login_ok(&email, PASSWORD).await;
}

#[both_backends]
async fn wrong_current_passwords_lock_the_session_not_the_login() {
    let app = spawn_app().await;
    let email = unique_email("pw-lock");
    let tokens = app.signup_ok(&email, PASSWORD).await;
    let body = json!({ "current_password": "Not-The-Pass1!", "new_password": OTHER_PASSWORD });

    for attempt in 1..=5 {
        let response = app
            .post_json_with_token("/v1/me/password", access_of(&tokens), &body)
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }

    // Now even the right current password is refused through this session...
    let response = app
        .post_json_with_token(
            "/v1/me/password",
            access_of(&tokens),
            &json!({ "current_password": PASSWORD, "new_password": OTHER_PASSWORD }),
        )
        .await;
    assert!(crate::helpers::header(&response, "retry-after").is_some());
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
    let response = app
        .delete_with_token(
            "/v1/me",
            access_of(&tokens),
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
    // ...while logins, counted apart, are not blocked by them, and the password is
    // unchanged.
    app.login_ok(&email, PASSWORD).await;
    // After the window the session may try again.
    app.advance(Duration::from_secs(15 * 60 + 1));
    let response = app
        .post_json_with_token(
            "/v1/me/password",
            access_of(&app.login_ok(&email, PASSWORD).await),
            &json!({ "current_password": PASSWORD, "new_password": OTHER_PASSWORD }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[both_backends]
async fn wrong_passwords_on_account_delete_count_towards_the_session_lockout() {
    let app = spawn_app().await;
    let email = unique_email("del-lock");
    let tokens = app.signup_ok(&email, PASSWORD).await;

    for attempt in 1..=5 {
        let response = app
            .delete_with_token(
                "/v1/me",
                access_of(&tokens),
                Some(json!({ "password": OTHER_PASSWORD })),
            )
            .await;
        assert_eq!(
            response.status(),
            StatusCode::UNAUTHORIZED,
            "attempt {attempt}"
        );
    }

    let response = app
        .delete_with_token(
            "/v1/me",
            access_of(&tokens),
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
    // The account is still there.
    app.login_ok(&email, PASSWORD).await;
}

#[both_backends]
async fn sessions_leave_out_families_past_their_absolute_expiry() {
    let app = spawn_app().await;
    let email = unique_email("expired-family");
    let old = app.signup_ok(&email, PASSWORD).await;

    app.advance(Duration::from_secs(7 * 24 * 3600 + 60));
    let fresh = app.login_ok(&email, PASSWORD).await;

    let ids: Vec<String> = app
        .my_sessions_ok(access_of(&fresh))
        .await
        .iter()
        .map(assert_session_shape)
        .collect();
    assert_eq!(ids, vec![sid_of(&fresh)]);
    let response = app.post_refresh(refresh_of(&old)).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
}
