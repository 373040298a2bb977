//! The admin's view of a user's passkeys (API and CLI), and the MFA reset that removes
//! them.

use reqwest::StatusCode;
use uuid::Uuid;

use super::{Alg, ORIGIN, RP_ID, SoftKey, Tweaks, ids, passkeys_in, spawn_passkey_app};
use crate::helpers::{TestApp, assert_error, expect_json, refresh_of};

fn list_path(user_id: &str) -> String {
    format!("/v1/admin/users/{user_id}/passkeys")
}

async fn admin_list(app: &TestApp, admin: &str, user_id: &str) -> Vec<serde_json::Value> {
    let body = expect_json(
        app.get_with_token(&list_path(user_id), admin).await,
        StatusCode::OK,
    )
    .await;
    passkeys_in(&body)
}

#[both_backends]
async fn an_admin_lists_and_removes_a_users_passkeys_without_revoking_sessions() {
    let app = spawn_passkey_app().await;
    let admin = app.passkey_admin().await;
    let user = app.passkey_user("pk-admin").await;
    let other = app.passkey_user("pk-admin-other").await;
    let mut kept = SoftKey::es256();
    let mut removed = SoftKey::synced(Alg::Es256);
    let mut others = SoftKey::es256();
    app.register_soft(&user, &mut kept, "Kept").await;
    let gone = app.register_soft(&user, &mut removed, "Removed").await;
    let others_passkey = app.register_soft(&other, &mut others, "Other").await;
    let session = app.soft_login_ok(&mut removed).await;

    let listed = admin_list(&app, &admin, user.id()).await;
    assert_eq!(listed, app.my_passkeys(user.access()).await);
    assert_eq!(listed.len(), 2);

    // Not for users, nor without a token; an unknown user is 404.
    assert_error(
        app.get_with_token(&list_path(user.id()), user.access())
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_error(
        app.get(&list_path(user.id())).await,
        StatusCode::UNAUTHORIZED,
        "invalid_token",
    )
    .await;
    assert_error(
        app.get_with_token(&list_path(&Uuid::new_v4().to_string()), &admin)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let one = |user_id: &str, passkey: &serde_json::Value| {
        format!(
            "{}/{}",
            list_path(user_id),
            passkey["id"].as_str().expect("id")
        )
    };
    // Another user's passkey under this user: 404, and it stays.
    assert_error(
        app.delete_with_token(&one(user.id(), &others_passkey), &admin, None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.delete_with_token(&one(user.id(), &gone), user.access(), None)
            .await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let response = app
        .delete_with_token(&one(user.id(), &gone), &admin, None)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.delete_with_token(&one(user.id(), &gone), &admin, None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;

    let left = admin_list(&app, &admin, user.id()).await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["name"], "Kept");
    assert_eq!(admin_list(&app, &admin, other.id()).await.len(), 1);
    // The removed passkey no longer logs in; the session it opened lives on.
    app.soft_login_refused(&mut removed, &Tweaks::default())
        .await;
    app.refresh_ok(refresh_of(&session)).await;
    app.soft_login_ok(&mut kept).await;
    app.soft_login_ok(&mut others).await;
}

#[both_backends]
async fn the_admin_mfa_reset_removes_every_passkey_and_revokes_sessions() {
    let app = spawn_passkey_app().await;
    let admin = app.passkey_admin().await;
    let user = app.passkey_user("pk-reset").await;
    let mut first = SoftKey::es256();
    let mut second = SoftKey::rs256();
    app.register_soft(&user, &mut first, "First").await;
    app.register_soft(&user, &mut second, "Second").await;
    let session = app.soft_login_ok(&mut first).await;
    let pending = app.mfa_token_with_methods(&user.email, &["webauthn"]).await;

    let response = app
        .delete_with_token(&format!("/v1/admin/users/{}/mfa", user.id()), &admin, None)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    assert!(admin_list(&app, &admin, user.id()).await.is_empty());
    app.soft_login_refused(&mut first, &Tweaks::default()).await;
    app.soft_login_refused(&mut second, &Tweaks::default())
        .await;
    assert_error(
        app.post_refresh(refresh_of(&session)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    assert_error(
        app.post_mfa_webauthn_options(&pending).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_token",
    )
    .await;
    let body = app.login_ok(&user.email, crate::helpers::PASSWORD).await;
    assert!(!body.user.mfa_enabled, "{body}");
}

#[both_backends]
async fn the_cli_lists_a_users_passkeys_and_removes_one() {
    let app = spawn_passkey_app().await;
    let user = app.passkey_user("pk-cli").await;
    let mut kept = SoftKey::es256();
    let mut removed = SoftKey::es256();
    let kept_passkey = app.register_soft(&user, &mut kept, "Kept laptop").await;
    let gone = app.register_soft(&user, &mut removed, "Lost phone").await;
    let binary = app
        .binary()
        .with("GATEHOUSE_WEBAUTHN_RP_ID", RP_ID)
        .with("GATEHOUSE_WEBAUTHN_ORIGINS", ORIGIN);
    let id = |p: &serde_json::Value| p["id"].as_str().expect("id").to_owned();

    for who in [user.email.as_str(), user.id()] {
        let out = binary.cli_ok(&["users", "passkeys", who], None).await;
        for passkey in [&kept_passkey, &gone] {
            assert!(out.contains(&id(passkey)), "{out}");
            assert!(
                out.contains(passkey["name"].as_str().expect("name")),
                "{out}"
            );
        }
    }

    binary
        .cli_ok(&["users", "remove-passkey", &user.email, &id(&gone)], None)
        .await;
    let out = binary
        .cli_ok(&["users", "passkeys", &user.email], None)
        .await;
    assert!(!out.contains(&id(&gone)), "{out}");
    assert!(out.contains(&id(&kept_passkey)), "{out}");
    assert_eq!(
        ids(&app.my_passkeys(user.access()).await),
        vec![id(&kept_passkey)]
    );
    app.soft_login_refused(&mut removed, &Tweaks::default())
        .await;
    app.soft_login_ok(&mut kept).await;
}
