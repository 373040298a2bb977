//! Without `GATEHOUSE_WEBAUTHN_RP_ID` and `_ORIGINS` (the default), passkeys are off:
//! every passkey endpoint answers 404 `not_found`, and `webauthn` is never a method.

use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use super::{ORIGIN, SoftKey};
use crate::helpers::{PASSWORD, assert_error, spawn_app};

#[both_backends]
async fn without_webauthn_settings_every_passkey_endpoint_is_404() {
    let app = spawn_app().await;
    let user = app.passkey_user("pk-off").await;
    let admin = app.passkey_admin().await;
    // A plausible answer, so that only the configuration can refuse it.
    let options = json!({
        "rp": { "id": "example.com", "name": "x" },
        "user": { "id": "AAAAAAAAAAAAAAAAAAAAAA", "name": "x", "displayName": "x" },
        "challenge": "AAAAAAAAAAAAAAAAAAAAAA",
        "pubKeyCredParams": [{ "type": "public-key", "alg": -7 }],
    });
    let credential = SoftKey::es256().register(&options, ORIGIN);
    let flow_id = "A".repeat(43);
    let passkey_id = Uuid::new_v4().to_string();

    let responses = vec![
        (
            "POST /v1/me/passkeys/options",
            app.post_registration_options(user.access()).await,
        ),
        (
            "POST /v1/me/passkeys",
            app.post_passkey(user.access(), &flow_id, "Key", &credential)
                .await,
        ),
        (
            "GET /v1/me/passkeys",
            app.get_with_token("/v1/me/passkeys", user.access()).await,
        ),
        (
            "DELETE /v1/me/passkeys/{id}",
            app.delete_with_token(
                &format!("/v1/me/passkeys/{passkey_id}"),
                user.access(),
                None,
            )
            .await,
        ),
        (
            "POST /v1/passkeys/login/options",
            app.post_login_options().await,
        ),
        (
            "POST /v1/passkeys/login",
            app.post_passkey_login(&flow_id, &credential).await,
        ),
        (
            "GET /v1/admin/users/{id}/passkeys",
            app.get_with_token(&format!("/v1/admin/users/{}/passkeys", user.id()), &admin)
                .await,
        ),
        (
            "DELETE /v1/admin/users/{id}/passkeys/{passkey_id}",
            app.delete_with_token(
                &format!("/v1/admin/users/{}/passkeys/{passkey_id}", user.id()),
                &admin,
                None,
            )
            .await,
        ),
    ];
    for (endpoint, response) in responses {
        eprintln!("{endpoint}");
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }

    // A user with TOTP is offered TOTP and recovery codes only, and the passkey step of
    // the second factor is a passkey endpoint like the others.
    app.enrol_totp(user.access(), PASSWORD).await;
    let token = app
        .mfa_token_with_methods(&user.email, &["totp", "recovery_code"])
        .await;
    assert_error(
        app.post_mfa_webauthn_options(&token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}
