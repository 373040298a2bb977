//! A passkey as the second factor after a password: `mfa_required` lists `webauthn`,
//! `/v1/login/mfa/webauthn/options` gives request options for the user's passkeys, and
//! `/v1/login/mfa` takes `{mfa_token, flow_id, credential}`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use super::{
    Alg, EVIL_ORIGIN, Flags, ORIGIN, PasskeyDevice, SoftKey, Tweaks, amr, amr_of, spawn_passkey_app,
};
use crate::helpers::{PASSWORD, access_of, assert_error, expect_json, refresh_of, totp_code};

#[both_backends]
async fn a_passkey_after_the_password_gives_pwd_hwk_mfa() {
    let app = spawn_passkey_app().await;
    let user = app.passkey_user("pk-2fa").await;
    let mut key = SoftKey::es256();
    app.register_soft(&user, &mut key, "Key").await;

    // A passkey-only user: webauthn is the one method.
    let token = app.mfa_token_with_methods(&user.email, &["webauthn"]).await;
    let body = app.mfa_passkey_ok(&token, &mut key).await;
    assert_eq!(amr(&body), json!(["pwd", "hwk", "mfa"]), "{body}");
    assert_eq!(body["user"]["id"], user.id(), "{body}");
    expect_json(app.get_me(access_of(&body)).await, StatusCode::OK).await;
    let refreshed = app.refresh_ok(refresh_of(&body)).await;
    assert_eq!(amr(refreshed.json()), json!(["pwd", "hwk", "mfa"]));

    // The mfa_token is spent.
    let flow = app.post_mfa_webauthn_options(&token).await;
    assert_error(flow, StatusCode::UNAUTHORIZED, "invalid_mfa_token").await;
}

#[both_backends]
async fn with_totp_and_passkeys_every_method_is_offered_and_each_works() {
    let app = spawn_passkey_app().await;
    let user = app.passkey_user("pk-2fa-all").await;
    let enrolled = app.enrol_totp(user.access(), PASSWORD).await;
    let mut key = SoftKey::rs256();
    let mut device = PasskeyDevice::new();
    app.register_soft(&user, &mut key, "Key").await;
    app.register_device(&user, &mut device, "Phone").await;
    let all = [key.id(), device.id()];

    // TOTP still works.
    let token = app
        .mfa_token_with_methods(&user.email, &["totp", "recovery_code", "webauthn"])
        .await;
    let code = totp_code(&enrolled.secret, app.now());
    let body = expect_json(app.post_login_mfa(&token, &code).await, StatusCode::OK).await;
    assert_eq!(amr(&body), json!(["pwd", "otp", "mfa"]));

    // Each passkey works, each answering options that list both.
    let token = app
        .mfa_token_with_methods(&user.email, &["totp", "recovery_code", "webauthn"])
        .await;
    let flow = app.mfa_webauthn_options(&token, &all).await;
    let credential = key.authenticate(&flow.options, ORIGIN);
    let body = expect_json(
        app.post_login_mfa_passkey(&token, &flow.id, &credential)
            .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(amr(&body), amr_of("pwd", &["hwk", "mfa"]));

    let token = app
        .mfa_token_with_methods(&user.email, &["totp", "recovery_code", "webauthn"])
        .await;
    let flow = app.mfa_webauthn_options(&token, &all).await;
    let credential = device.authenticate(&flow.options, ORIGIN).await;
    let body = expect_json(
        app.post_login_mfa_passkey(&token, &flow.id, &credential)
            .await,
        StatusCode::OK,
    )
    .await;
    // passkey-authenticator's credentials are backup eligible.
    assert_eq!(amr(&body), amr_of("pwd", &["swk", "mfa"]));
}

#[both_backends]
async fn webauthn_options_need_a_live_mfa_token_of_a_user_with_passkeys() {
    let app = spawn_passkey_app().await;
    for unknown in ["x".to_owned(), "A".repeat(43)] {
        assert_error(
            app.post_mfa_webauthn_options(&unknown).await,
            StatusCode::UNAUTHORIZED,
            "invalid_mfa_token",
        )
        .await;
    }
    // TOTP only: no passkey to offer.
    let user = app.passkey_user("pk-2fa-totp-only").await;
    app.enrol_totp(user.access(), PASSWORD).await;
    let token = app
        .mfa_token_with_methods(&user.email, &["totp", "recovery_code"])
        .await;
    assert_error(
        app.post_mfa_webauthn_options(&token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_token",
    )
    .await;

    // Expired with its mfa_token (5 minutes).
    let user = app.passkey_user("pk-2fa-expired").await;
    app.register_soft(&user, &mut SoftKey::es256(), "Key").await;
    let token = app.mfa_token_with_methods(&user.email, &["webauthn"]).await;
    app.advance(Duration::from_secs(5 * 60 + 1));
    assert_error(
        app.post_mfa_webauthn_options(&token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_token",
    )
    .await;
}

#[both_backends]
async fn a_second_factor_flow_is_bound_to_its_mfa_token_and_used_once() {
    let app = spawn_passkey_app().await;
    let user = app.passkey_user("pk-2fa-flow").await;
    let mut key = SoftKey::es256();
    app.register_soft(&user, &mut key, "Key").await;
    let invalid_flow = |response| assert_error(response, StatusCode::BAD_REQUEST, "invalid_flow");

    // A flow made for another mfa_token (of the same user).
    let first = app.mfa_token_with_methods(&user.email, &["webauthn"]).await;
    let second = app.mfa_token_with_methods(&user.email, &["webauthn"]).await;
    let flow = app.mfa_webauthn_options(&first, &[key.id()]).await;
    let credential = key.authenticate(&flow.options, ORIGIN);
    invalid_flow(
        app.post_login_mfa_passkey(&second, &flow.id, &credential)
            .await,
    )
    .await;

    // A passwordless login's flow is another kind.
    let login = app.login_options().await;
    let credential = key.authenticate(&login.options, ORIGIN);
    invalid_flow(
        app.post_login_mfa_passkey(&second, &login.id, &credential)
            .await,
    )
    .await;

    // Used once: the replay finds no flow (and the token is spent anyway).
    let flow = app.mfa_webauthn_options(&second, &[key.id()]).await;
    let credential = key.authenticate(&flow.options, ORIGIN);
    expect_json(
        app.post_login_mfa_passkey(&second, &flow.id, &credential)
            .await,
        StatusCode::OK,
    )
    .await;
    let third = app.mfa_token_with_methods(&user.email, &["webauthn"]).await;
    invalid_flow(
        app.post_login_mfa_passkey(&third, &flow.id, &credential)
            .await,
    )
    .await;

    // A second-factor flow does not log in without the password.
    let flow = app.mfa_webauthn_options(&third, &[key.id()]).await;
    let credential = key.authenticate(&flow.options, ORIGIN);
    invalid_flow(app.post_passkey_login(&flow.id, &credential).await).await;
}

#[both_backends]
async fn a_bad_passkey_at_the_second_step_is_401_and_counts_as_a_wrong_code() {
    let app = spawn_passkey_app().await;
    let user = app.passkey_user("pk-2fa-bad").await;
    let mut key = SoftKey::es256();
    app.register_soft(&user, &mut key, "Key").await;
    // Someone else's passkey, registered for someone else.
    let other = app.passkey_user("pk-2fa-other").await;
    let mut others = SoftKey::es256();
    app.register_soft(&other, &mut others, "Other").await;

    let token = app.mfa_token_with_methods(&user.email, &["webauthn"]).await;
    let no_uv = Tweaks {
        flags: Some(Flags {
            uv: false,
            ..Flags::DEVICE
        }),
        ..Tweaks::default()
    };
    let bad_signature = Tweaks {
        corrupt_signature: true,
        ..Tweaks::default()
    };
    // Five wrong answers (the per-token limit of wrong codes).
    for attempt in 0..5 {
        let flow = app.mfa_webauthn_options(&token, &[key.id()]).await;
        let credential = match attempt {
            0 => key.authenticate_with(&flow.options, ORIGIN, &no_uv),
            1 => key.authenticate(&flow.options, EVIL_ORIGIN),
            2 => others.authenticate(&flow.options, ORIGIN),
            3 => key.authenticate_with(&flow.options, ORIGIN, &bad_signature),
            // A key never registered anywhere.
            _ => SoftKey::new(Alg::Rs256).authenticate(&flow.options, ORIGIN),
        };
        assert_error(
            app.post_login_mfa_passkey(&token, &flow.id, &credential)
                .await,
            StatusCode::UNAUTHORIZED,
            "invalid_passkey",
        )
        .await;
    }
    // The token took its five: even the right passkey is too late for it.
    let refused = app.post_mfa_webauthn_options(&token).await;
    assert_error(refused, StatusCode::UNAUTHORIZED, "invalid_mfa_token").await;

    let fresh = app.mfa_token_with_methods(&user.email, &["webauthn"]).await;
    let body = app.mfa_passkey_ok(&fresh, &mut key).await;
    assert_eq!(amr(&body), json!(["pwd", "hwk", "mfa"]));
}

/// `mfa_enabled` is TOTP or a passkey; the TOTP endpoints still concern TOTP alone.
#[both_backends]
async fn a_passkey_only_user_has_mfa_on_but_no_totp_to_disable() {
    let app = spawn_passkey_app().await;
    let user = app.passkey_user("pk-2fa-only").await;
    app.register_soft(&user, &mut SoftKey::es256(), "Key").await;
    let me = expect_json(app.get_me(user.access()).await, StatusCode::OK).await;
    assert_eq!(me["mfa_enabled"], true, "{me}");

    assert_error(
        app.delete_with_token(
            "/v1/me/mfa",
            user.access(),
            Some(json!({ "password": PASSWORD, "code": "123456" })),
        )
        .await,
        StatusCode::CONFLICT,
        "mfa_not_enabled",
    )
    .await;
    assert_error(
        app.post_json_with_token(
            "/v1/me/mfa/recovery-codes",
            user.access(),
            &json!({ "code": "123456" }),
        )
        .await,
        StatusCode::CONFLICT,
        "mfa_not_enabled",
    )
    .await;
    // TOTP can be added next to the passkey.
    app.enrol_totp(user.access(), PASSWORD).await;
    app.mfa_token_with_methods(&user.email, &["totp", "recovery_code", "webauthn"])
        .await;
}
