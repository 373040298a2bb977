use reqwest::StatusCode;
use serde_json::json;

use super::{admin_token, create_client};
use crate::helpers::{
    PASSWORD, access_of, assert_error, assert_validation_failed, expect_json, spawn_app,
    unique_email,
};

#[both_backends]
async fn an_admin_creates_lists_and_deletes_a_client_and_the_secret_is_shown_once() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let response = app
        .post_json_with_token(
            "/v1/admin/clients",
            &admin,
            &json!({ "name": " billing ", "scopes": ["introspect", "b", "b"], "audience": "billing-api" }),
        )
        .await;
    let created = expect_json(response, StatusCode::CREATED).await;
    let id = created["client_id"].as_str().expect("id").to_owned();
    let secret = created["client_secret"].as_str().expect("secret");
    // 256 bits, base64url without padding.
    assert_eq!(secret.len(), 43, "{created}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_eq!(created["name"], "billing");
    assert_eq!(created["scopes"], json!(["b", "introspect"]));
    assert_eq!(created["audience"], "billing-api");
    assert!(created["created_at"].is_string());

    let listed = expect_json(
        app.get_with_token("/v1/admin/clients", &admin).await,
        StatusCode::OK,
    )
    .await;
    let clients = listed["clients"].as_array().expect("clients");
    assert_eq!(clients.len(), 1, "{listed}");
    assert_eq!(clients[0]["client_id"], id.as_str());
    assert_eq!(clients[0]["disabled"], false);
    assert!(clients[0]["last_used_at"].is_null());
    assert!(
        !listed.to_string().contains(secret) && clients[0].get("client_secret").is_none(),
        "a listing shows no secret: {listed}"
    );

    let response = app
        .delete_with_token(&format!("/v1/admin/clients/{id}"), &admin, None)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    let response = app
        .delete_with_token(&format!("/v1/admin/clients/{id}"), &admin, None)
        .await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    let listed = expect_json(
        app.get_with_token("/v1/admin/clients", &admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["clients"], json!([]));
}

#[both_backends]
async fn client_admin_needs_an_admin_and_checks_every_field() {
    let app = spawn_app().await;
    let user = app.signup_ok(&unique_email("not-admin"), PASSWORD).await;
    let response = app
        .post_json_with_token(
            "/v1/admin/clients",
            access_of(&user),
            &json!({ "name": "x", "scopes": [] }),
        )
        .await;
    assert_error(response, StatusCode::FORBIDDEN, "forbidden").await;
    let response = app.get("/v1/admin/clients").await;
    assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;

    let admin = admin_token(&app).await;
    let response = app
        .post_json_with_token(
            "/v1/admin/clients",
            &admin,
            &json!({ "name": "", "scopes": ["has space"], "audience": "" }),
        )
        .await;
    assert_validation_failed(response, &["audience", "name", "scopes"]).await;
    let response = app
        .post_json_with_token("/v1/admin/clients", &admin, &json!({ "name": "x" }))
        .await;
    assert_validation_failed(response, &["scopes"]).await;
    for path in [
        "/v1/admin/clients/not-a-uuid",
        "/v1/admin/clients/00000000-0000-0000-0000-000000000000",
    ] {
        let response = app.delete_with_token(path, &admin, None).await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
        let response = app
            .post_json_with_token(&format!("{path}/secret"), &admin, &json!({}))
            .await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let listed = expect_json(
        app.get_with_token("/v1/admin/clients", &admin).await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(listed["clients"], json!([]), "nothing was stored");
}

#[both_backends]
async fn client_admin_actions_are_audited_without_secrets() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let client = create_client(&app, &admin, &[]).await;
    let response = app
        .post_json_with_token(
            &format!("/v1/admin/clients/{}/secret", client.id),
            &admin,
            &json!({}),
        )
        .await;
    let rotated = expect_json(response, StatusCode::OK).await;
    assert_eq!(rotated["client_id"], client.id.as_str());
    let new_secret = rotated["client_secret"]
        .as_str()
        .expect("secret")
        .to_owned();
    assert_ne!(new_secret, client.secret);
    let audit = expect_json(
        app.get_with_token("/v1/admin/audit", &admin).await,
        StatusCode::OK,
    )
    .await;
    let text = audit.to_string();
    for kind in ["client_created", "client_secret_rotated"] {
        assert!(text.contains(kind), "{kind} missing: {audit}");
    }
    assert!(!text.contains(&client.secret) && !text.contains(&new_secret));
}
