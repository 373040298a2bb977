use std::time::Duration;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    OTHER_PASSWORD, PASSWORD, TestApp, Tokens, access_of, assert_admin_user, assert_error,
    assert_invalid_token, assert_session_shape, assert_validation_failed, jwt_claims, refresh_of,
    sid_of, spawn_app, unique_email, user_id_of,
};

const ADMIN_PASSWORD: &str = "Adm1n!Passw0rd-long";

async fn admin(app: &TestApp) -> Tokens {
    app.create_admin(&unique_email("admin"), ADMIN_PASSWORD)
        .await
}

async fn find_users(app: &TestApp, token: &str, query: &str) -> Vec<String> {
    let response = app
        .api_client
        .get(app.url("/v1/admin/users"))
        .query(&[("email", query)])
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "query {query:?}: {body}");
    let users = body["users"]
        .as_array()
        .unwrap_or_else(|| panic!("users is not an array: {body}"));
    let mut emails: Vec<String> = users
        .iter()
        .map(|u| u["email"].as_str().unwrap().to_owned())
        .collect();
    emails.sort();
    emails
}

/// Every admin endpoint, called with `token` (or none).
async fn call_every_admin_endpoint(
    app: &TestApp,
    token: Option<&str>,
    user_id: &str,
) -> Vec<Response> {
    let client = &app.api_client;
    let family = Uuid::new_v4();
    let requests = vec![
        client.get(app.url("/v1/admin/users")),
        client.get(app.url("/v1/admin/users?email=a")),
        client
            .patch(app.url(&format!("/v1/admin/users/{user_id}")))
            .json(&json!({ "role": "admin" })),
        client.get(app.url(&format!("/v1/admin/users/{user_id}/sessions"))),
        client.delete(app.url(&format!("/v1/admin/sessions/{family}"))),
        client.delete(app.url(&format!("/v1/admin/users/{user_id}/sessions"))),
    ];
    let mut responses = Vec::new();
    for request in requests {
        let request = match token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        responses.push(request.send().await.unwrap());
    }
    responses
}

#[both_backends]
async fn non_admins_get_403_forbidden_everywhere() {
    let app = spawn_app().await;
    let user = app.signup_ok(&unique_email("plain"), PASSWORD).await;

    let responses =
        call_every_admin_endpoint(&app, Some(access_of(&user)), user_id_of(&user)).await;

    for response in responses {
        assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    }
    // The PATCH did not promote anyone.
    let me: Value = app.get_me(access_of(&user)).await.json().await.unwrap();
    assert_eq!(me["role"], "user");
}

#[both_backends]
async fn admin_endpoints_without_a_token_are_401() {
    let app = spawn_app().await;
    let user = app.signup_ok(&unique_email("anon"), PASSWORD).await;

    let responses = call_every_admin_endpoint(&app, None, user_id_of(&user)).await;

    for response in responses {
        assert_invalid_token(response, false).await;
    }
}

/// The one test that creates its admin as an operator does, with the CLI (production
/// Argon2, so slow); every other test seeds admins in-process.
#[both_backends]
async fn the_cli_admin_is_an_admin_in_the_token() {
    let app = spawn_app().await;
    let email = unique_email("admin");
    let out = app
        .cli_ok(
            &["users", "create", "--email", &email, "--admin"],
            Some(&format!("{ADMIN_PASSWORD}\n")),
        )
        .await;
    assert!(out.contains(&email) && out.contains("(admin)"), "{out}");
    let admin = app.login_ok(&email, ADMIN_PASSWORD).await;

    assert_eq!(admin.user.role, "admin");
    assert_eq!(jwt_claims(access_of(&admin))["role"], "admin");
    let response = app
        .get_with_token("/v1/admin/users", access_of(&admin))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[both_backends]
async fn find_users_by_exact_and_prefix_email() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let tag = &Uuid::new_v4().simple().to_string()[..8];
    let carol = format!("carol-{tag}@example.com");
    let dave_a = format!("dave-{tag}-a@example.com");
    let dave_b = format!("dave-{tag}-b@example.org");
    let xdave = format!("xdave-{tag}@example.com");
    for email in [&carol, &dave_a, &dave_b, &xdave] {
        app.signup_ok(email, PASSWORD).await;
    }
    let token = access_of(&admin);

    // Exact, after normalization.
    let query = format!("  {}  ", carol.to_uppercase());
    assert_eq!(find_users(&app, token, &query).await, vec![carol.clone()]);
    // Prefix (case-insensitive), never a substring.
    assert_eq!(
        find_users(&app, token, &format!("DAVE-{tag}")).await,
        vec![dave_a.clone(), dave_b.clone()]
    );
    assert_eq!(
        find_users(&app, token, &format!("dave-{tag}-a@")).await,
        vec![dave_a.clone()]
    );
    assert!(
        find_users(&app, token, &format!("ave-{tag}"))
            .await
            .is_empty()
    );
    assert!(
        find_users(&app, token, &format!("nobody-{tag}"))
            .await
            .is_empty()
    );
}

#[both_backends]
async fn find_users_treats_sql_wildcards_literally() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let tag = &Uuid::new_v4().simple().to_string()[..8];
    let underscore = format!("a_b-{tag}@example.com");
    let lookalike = format!("axb-{tag}@example.com");
    app.signup_ok(&underscore, PASSWORD).await;
    app.signup_ok(&lookalike, PASSWORD).await;
    let token = access_of(&admin);

    // `_` is a literal underscore, not "any one character".
    assert_eq!(
        find_users(&app, token, &format!("a_b-{tag}")).await,
        vec![underscore.clone()]
    );
    assert!(
        find_users(&app, token, &format!("a_x-{tag}"))
            .await
            .is_empty()
    );
    assert!(
        find_users(&app, token, &format!("___-{tag}"))
            .await
            .is_empty()
    );
    // `%` matches nothing, it is not "anything".
    for query in [
        "%",
        "%%",
        "%@example.com",
        "a%",
        &format!("%{tag}"),
        "_",
        "\\",
    ] {
        assert!(
            find_users(&app, token, query).await.is_empty(),
            "query {query:?} acted as a wildcard"
        );
    }
}

#[both_backends]
async fn listing_users_without_a_query_returns_them() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let alice = unique_email("alice");
    app.signup_ok(&alice, PASSWORD).await;

    let response = app
        .get_with_token("/v1/admin/users", access_of(&admin))
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    let users = body["users"].as_array().unwrap();
    assert_eq!(users.len(), 2, "{body}");
    let found = users.iter().find(|u| u["email"] == alice.as_str()).unwrap();
    assert_admin_user(found, &alice, "user");
}

#[both_backends]
async fn admin_lists_a_users_sessions_including_revoked_ones() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let email = unique_email("watched");
    let first = app.signup_ok(&email, PASSWORD).await;
    app.advance(Duration::from_secs(60));
    let second = app.login_ok(&email, PASSWORD).await;
    app.advance(Duration::from_secs(60));
    let third = app.login_ok(&email, PASSWORD).await;
    app.post_logout(refresh_of(&second)).await;

    let sessions = app
        .admin_sessions_ok(access_of(&admin), user_id_of(&first))
        .await;

    let ids: Vec<String> = sessions.iter().map(assert_session_shape).collect();
    assert_eq!(
        ids,
        vec![sid_of(&third), sid_of(&second), sid_of(&first)],
        "all families, newest first"
    );
    assert_eq!(sessions[1]["revoked_reason"], "logout");
    assert!(sessions[1]["revoked_at"].is_string());
    assert_eq!(sessions[0]["revoked_reason"], Value::Null);
    assert_eq!(sessions[2]["revoked_at"], Value::Null);
}

#[both_backends]
async fn admin_revokes_one_family() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let email = unique_email("revoke-one");
    let kept = app.signup_ok(&email, PASSWORD).await;
    let doomed = app.login_ok(&email, PASSWORD).await;

    let response = app
        .delete_with_token(
            &format!("/v1/admin/sessions/{}", sid_of(&doomed)),
            access_of(&admin),
            None,
        )
        .await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app.post_refresh(refresh_of(&doomed)).await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    app.refresh_ok(refresh_of(&kept)).await;
    let sessions = app
        .admin_sessions_ok(access_of(&admin), user_id_of(&kept))
        .await;
    let revoked = sessions
        .iter()
        .find(|s| s["id"] == sid_of(&doomed).as_str())
        .unwrap();
    assert_eq!(revoked["revoked_reason"], "admin");

    // Revoking it again is still 204.
    let response = app
        .delete_with_token(
            &format!("/v1/admin/sessions/{}", sid_of(&doomed)),
            access_of(&admin),
            None,
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
}

#[both_backends]
async fn admin_revokes_every_family_of_a_user() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let email = unique_email("revoke-all");
    let first = app.signup_ok(&email, PASSWORD).await;
    let second = app.login_ok(&email, PASSWORD).await;
    let bystander = app.signup_ok(&unique_email("bystander"), PASSWORD).await;

    let response = app
        .delete_with_token(
            &format!("/v1/admin/users/{}/sessions", user_id_of(&first)),
            access_of(&admin),
            None,
        )
        .await;

    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    for t in [&first, &second] {
        let response = app.post_refresh(refresh_of(t)).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    }
    // The revoked sessions' access tokens manage nothing any more.
    assert_invalid_token(
        app.get_with_token("/v1/me/sessions", access_of(&first))
            .await,
        true,
    )
    .await;
    let sessions = app
        .admin_sessions_ok(access_of(&admin), user_id_of(&first))
        .await;
    assert_eq!(sessions.len(), 2);
    assert!(sessions.iter().all(|s| s["revoked_reason"] == "admin"));
    app.refresh_ok(refresh_of(&bystander)).await;
    // The user can still log in: revoking sessions is not disabling.
    app.login_ok(&email, PASSWORD).await;
}

#[both_backends]
async fn disabling_a_user_revokes_everything_and_refuses_login_like_a_wrong_password() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let email = unique_email("disable");
    let victim = app.signup_ok(&email, PASSWORD).await;
    let other_family = app.login_ok(&email, PASSWORD).await;
    let bystander_email = unique_email("bystander");
    app.signup_ok(&bystander_email, PASSWORD).await;

    let response = app
        .patch_with_token(
            &format!("/v1/admin/users/{}", user_id_of(&victim)),
            access_of(&admin),
            &json!({ "disabled": true }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let user: Value = response.json().await.unwrap();
    assert_admin_user(&user, &email, "user");
    assert_eq!(user["disabled"], true);

    // Login with the right password: exactly a wrong password's answer.
    let disabled = app.post_login(&email, PASSWORD).await;
    let wrong = app.post_login(&bystander_email, OTHER_PASSWORD).await;
    let unknown = app.post_login(&unique_email("nobody"), PASSWORD).await;
    assert_eq!(disabled.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.status(), StatusCode::UNAUTHORIZED);
    let disabled = disabled.bytes().await.unwrap();
    let wrong = wrong.bytes().await.unwrap();
    let unknown = unknown.bytes().await.unwrap();
    assert_eq!(
        disabled, wrong,
        "disabled login differs from a wrong password"
    );
    assert_eq!(unknown, wrong);
    let body: Value = serde_json::from_slice(&disabled).unwrap();
    assert_eq!(body["error"], "invalid_credentials");

    // Refresh is refused; every family was revoked with reason `admin`.
    for t in [&victim, &other_family] {
        let response = app.post_refresh(refresh_of(t)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error"] == "invalid_refresh_token",
            "refresh of a disabled user: {body}"
        );
    }
    let sessions = app
        .admin_sessions_ok(access_of(&admin), user_id_of(&victim))
        .await;
    assert_eq!(sessions.len(), 2);
    assert!(
        sessions.iter().all(|s| s["revoked_reason"] == "admin"),
        "{sessions:?}"
    );

    // Its still-valid access token no longer passes where the user is loaded.
    let response = app.get_me(access_of(&victim)).await;
    assert_invalid_token(response, true).await;

    // Re-enabling lets the user log in again.
    let response = app
        .patch_with_token(
            &format!("/v1/admin/users/{}", user_id_of(&victim)),
            access_of(&admin),
            &json!({ "disabled": false }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let user: Value = response.json().await.unwrap();
    assert_eq!(user["disabled"], false);
    app.login_ok(&email, PASSWORD).await;
}

#[both_backends]
async fn a_disabled_admin_loses_admin_access_at_once() {
    let app = spawn_app().await;
    let root = admin(&app).await;
    let deputy_email = unique_email("deputy");
    let deputy = app.create_admin(&deputy_email, ADMIN_PASSWORD).await;

    let response = app
        .patch_with_token(
            &format!("/v1/admin/users/{}", user_id_of(&deputy)),
            access_of(&root),
            &json!({ "disabled": true }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let response = app
        .get_with_token("/v1/admin/users", access_of(&deputy))
        .await;
    assert_invalid_token(response, true).await;
}

#[both_backends]
async fn promoting_a_user_makes_them_an_admin() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let email = unique_email("promote");
    let user = app.signup_ok(&email, PASSWORD).await;

    let response = app
        .patch_with_token(
            &format!("/v1/admin/users/{}", user_id_of(&user)),
            access_of(&admin),
            &json!({ "role": "admin" }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::OK);
    let updated: Value = response.json().await.unwrap();
    assert_admin_user(&updated, &email, "admin");
    assert_eq!(updated["disabled"], false);
    let fresh = app.login_ok(&email, PASSWORD).await;
    assert_eq!(fresh["user"]["role"], "admin");
    assert_eq!(jwt_claims(access_of(&fresh))["role"], "admin");
    let response = app
        .get_with_token("/v1/admin/users", access_of(&fresh))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    // And demoting takes it away again.
    let response = app
        .patch_with_token(
            &format!("/v1/admin/users/{}", user_id_of(&user)),
            access_of(&admin),
            &json!({ "role": "user" }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let fresh = app.login_ok(&email, PASSWORD).await;
    assert_eq!(jwt_claims(access_of(&fresh))["role"], "user");
    let response = app
        .get_with_token("/v1/admin/users", access_of(&fresh))
        .await;
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
}

#[both_backends]
async fn patch_validates_its_body() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let user = app.signup_ok(&unique_email("patched"), PASSWORD).await;
    let path = format!("/v1/admin/users/{}", user_id_of(&user));

    let response = app
        .patch_with_token(&path, access_of(&admin), &json!({}))
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "validation_failed").await;

    let response = app
        .patch_with_token(&path, access_of(&admin), &json!({ "role": "superuser" }))
        .await;
    assert_validation_failed(response, &["role"]).await;

    let response = app
        .patch_with_token(&path, access_of(&admin), &json!({ "disabled": "yes" }))
        .await;
    assert_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;

    let me: Value = app.get_me(access_of(&user)).await.json().await.unwrap();
    assert_eq!(me["role"], "user");
    assert_eq!(me["disabled"], false);
}

#[both_backends]
async fn an_admin_cannot_demote_or_disable_themself() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let path = format!("/v1/admin/users/{}", user_id_of(&admin));

    let response = app
        .patch_with_token(&path, access_of(&admin), &json!({ "role": "user" }))
        .await;
    assert_validation_failed(response, &["role"]).await;

    let response = app
        .patch_with_token(&path, access_of(&admin), &json!({ "disabled": true }))
        .await;
    assert_validation_failed(response, &["disabled"]).await;

    let response = app
        .get_with_token("/v1/admin/users", access_of(&admin))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    app.refresh_ok(refresh_of(&admin)).await;
}

#[both_backends]
async fn unknown_or_malformed_ids_are_404() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    let token = access_of(&admin);
    let client = &app.api_client;

    for id in [
        Uuid::new_v4().to_string(),
        "not-a-uuid".to_owned(),
        "1".to_owned(),
    ] {
        let requests = vec![
            client
                .patch(app.url(&format!("/v1/admin/users/{id}")))
                .json(&json!({ "disabled": true })),
            client.get(app.url(&format!("/v1/admin/users/{id}/sessions"))),
            client.delete(app.url(&format!("/v1/admin/sessions/{id}"))),
            client.delete(app.url(&format!("/v1/admin/users/{id}/sessions"))),
        ];
        for request in requests {
            let response = request.bearer_auth(token).send().await.unwrap();
            assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
        }
    }
}

#[both_backends]
async fn listing_users_honours_the_limit() {
    let app = spawn_app().await;
    let admin = admin(&app).await;
    for i in 0..3 {
        app.signup_ok(&unique_email(&format!("limit{i}")), PASSWORD)
            .await;
    }
    let token = access_of(&admin);

    let response = app.get_with_token("/v1/admin/users?limit=2", token).await;
    let body = crate::helpers::expect_json(response, StatusCode::OK).await;
    assert_eq!(body["users"].as_array().unwrap().len(), 2, "{body}");

    let response = app.get_with_token("/v1/admin/users?limit=100", token).await;
    let body = crate::helpers::expect_json(response, StatusCode::OK).await;
    assert_eq!(body["users"].as_array().unwrap().len(), 4, "{body}");

    for bad in ["0", "101", "-1", "abc"] {
        let response = app
            .get_with_token(&format!("/v1/admin/users?limit={bad}"), token)
            .await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "limit={bad}");
        assert_error(response, StatusCode::BAD_REQUEST, "validation_failed").await;
    }
}
