//! Second factors (contract: "MFA: TOTP and recovery codes"), row by row, on both
//! backends: enrolment, confirmation, login with a TOTP or a recovery code, wrong codes,
//! expired and spent `mfa_token`s, replays, regeneration, disabling, the admin's reset.

use std::time::Duration;

use gatehouse::storage::AuditFilter;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    OTHER_PASSWORD, PASSWORD, access_of, assert_error, assert_validation_failed, expect_json,
    jwt_claims, refresh_of, sid_of, spawn_app, spawn_app_with, totp_code, unique_email, user_id_of,
};

fn amr(body: &Value) -> Value {
    jwt_claims(access_of(body))["amr"].clone()
}

#[both_backends]
async fn enrolment_confirmation_and_login_with_a_totp_code_give_an_mfa_session() {
    let app = spawn_app().await;
    let email = unique_email("mfa");
    let signup = app.signup_ok(&email, PASSWORD).await;
    assert_eq!(amr(signup.json()), json!(["pwd"]));
    assert!(!signup.user.mfa_enabled);

    let response = app
        .post_json_with_token(
            "/v1/me/mfa/totp",
            access_of(&signup),
            &json!({ "password": PASSWORD }),
        )
        .await;
    assert_eq!(
        response
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
    let started = expect_json(response, StatusCode::OK).await;
    let secret = started["secret"].as_str().expect("secret");
    // 160 bits in base32.
    assert_eq!(secret.len(), 32, "{started}");
    let uri = started["otpauth_uri"].as_str().expect("uri");
    assert!(uri.starts_with("otpauth://totp/127.0.0.1:"), "{uri}");
    assert!(
        uri.contains(&format!("secret={secret}&issuer=127.0.0.1")),
        "{uri}"
    );
    let qr = started["otpauth_qr_svg"].as_str().expect("qr");
    assert!(qr.contains("<svg") && !qr.contains("<script"), "{qr}");
    // Pending: not on yet, and a password alone still logs in.
    let me = expect_json(app.get_me(access_of(&signup)).await, StatusCode::OK).await;
    assert_eq!(me["mfa_enabled"], false);
    app.login_ok(&email, PASSWORD).await;

    let code = totp_code(secret, app.now());
    let confirmed = expect_json(
        app.post_json_with_token(
            "/v1/me/mfa/totp/confirm",
            access_of(&signup),
            &json!({ "code": code }),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let codes = confirmed["recovery_codes"].as_array().expect("codes");
    assert_eq!(codes.len(), 10);
    for c in codes {
        let c = c.as_str().expect("a string");
        assert_eq!(c.len(), 19, "{c}");
        assert_eq!(c.split('-').count(), 4, "{c}");
    }
    let me = expect_json(app.get_me(access_of(&signup)).await, StatusCode::OK).await;
    assert_eq!(me["mfa_enabled"], true);
    assert_eq!(me["recovery_codes_left"], 10);

    // The password alone now earns an mfa_token, no tokens.
    let challenge = expect_json(
        app.post_login(&email, PASSWORD).await,
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert_eq!(challenge["error"], "mfa_required");
    assert_eq!(challenge["methods"], json!(["totp", "recovery_code"]));
    assert!(challenge.get("access_token").is_none(), "{challenge}");
    let token = challenge["mfa_token"].as_str().expect("mfa_token");
    assert!(token.len() >= 22, "at least 128 bits: {token}");
    // A wrong password is still invalid_credentials, with no mfa_token.
    let wrong = assert_error(
        app.post_login(&email, OTHER_PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert!(wrong.get("mfa_token").is_none());

    app.advance(Duration::from_secs(30));
    let code = totp_code(secret, app.now());
    let logged_in = expect_json(app.post_login_mfa(token, &code).await, StatusCode::OK).await;
    assert_eq!(amr(&logged_in), json!(["pwd", "otp", "mfa"]));
    assert_eq!(logged_in["user"]["mfa_enabled"], true);

    // A refresh keeps the family's amr; the session list shows it.
    let refreshed = app.refresh_ok(refresh_of(&logged_in)).await;
    assert_eq!(amr(refreshed.json()), json!(["pwd", "otp", "mfa"]));
    let sessions = app.my_sessions_ok(access_of(&refreshed)).await;
    let mine = sessions
        .iter()
        .find(|s| s["id"] == sid_of(&logged_in).as_str())
        .expect("the new session is listed");
    assert_eq!(mine["amr"], json!(["pwd", "otp", "mfa"]));
    let first = sessions
        .iter()
        .find(|s| s["id"] == sid_of(&signup).as_str())
        .expect("the signup's session is listed");
    assert_eq!(first["amr"], json!(["pwd"]));
}

#[both_backends]
async fn a_code_works_once_and_an_older_step_after_a_newer_one_is_refused() {
    let app = spawn_app().await;
    let email = unique_email("replay");
    let signup = app.signup_ok(&email, PASSWORD).await;
    let confirm_at = app.now();
    let enrolled = app.enrol_totp(access_of(&signup), PASSWORD).await;

    // The code that confirmed the enrolment counts as used (its step is the one just
    // before now, inside the drift window).
    let token = app.mfa_token(&email, PASSWORD).await;
    let confirming = totp_code(&enrolled.secret, confirm_at);
    assert_error(
        app.post_login_mfa(&token, &confirming).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;

    let code = totp_code(&enrolled.secret, app.now());
    let first = app.mfa_token(&email, PASSWORD).await;
    expect_json(app.post_login_mfa(&first, &code).await, StatusCode::OK).await;
    let second = app.mfa_token(&email, PASSWORD).await;
    assert_error(
        app.post_login_mfa(&second, &code).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;

    // One step later: the new code works, then the previous step's code (still inside
    // the drift window) is refused.
    app.advance(Duration::from_secs(30));
    let newer = totp_code(&enrolled.secret, app.now());
    let older = totp_code(&enrolled.secret, app.now() - chrono::Duration::seconds(30));
    assert_eq!(older, code);
    expect_json(app.post_login_mfa(&second, &newer).await, StatusCode::OK).await;
    let third = app.mfa_token(&email, PASSWORD).await;
    let older_one_step_further =
        totp_code(&enrolled.secret, app.now() - chrono::Duration::seconds(30));
    assert_error(
        app.post_login_mfa(&third, &older_one_step_further).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;
}

#[both_backends]
async fn a_recovery_code_logs_in_once_and_is_audited() {
    let app = spawn_app().await;
    let email = unique_email("recovery");
    let signup = app.signup_ok(&email, PASSWORD).await;
    let enrolled = app.enrol_totp(access_of(&signup), PASSWORD).await;
    let code = enrolled.recovery_codes[3].clone();

    let token = app.mfa_token(&email, PASSWORD).await;
    // Read leniently: upper case, no dashes.
    let typed = code.replace('-', "").to_uppercase();
    let body = expect_json(app.post_login_mfa(&token, &typed).await, StatusCode::OK).await;
    assert_eq!(amr(&body), json!(["pwd", "otp", "mfa"]));
    let me = expect_json(app.get_me(access_of(&body)).await, StatusCode::OK).await;
    assert_eq!(me["recovery_codes_left"], 9);

    let again = app.mfa_token(&email, PASSWORD).await;
    assert_error(
        app.post_login_mfa(&again, &code).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;

    let user_id = user_id_of(&signup).to_owned();
    let events = app
        .store(move |s| {
            s.list_audit(&AuditFilter {
                user_id: Some(user_id.parse().expect("id")),
                kind: Some("mfa_recovery_code_used".into()),
                limit: 10,
                before: None,
            })
        })
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    for event in app
        .store(|s| {
            s.list_audit(&AuditFilter {
                limit: 200,
                ..AuditFilter::default()
            })
        })
        .await
    {
        let text = format!("{event:?}");
        assert!(
            !text.contains(&code),
            "a recovery code reached the audit log"
        );
        assert!(!text.contains(&token), "an mfa_token reached the audit log");
    }
}

#[both_backends]
async fn five_wrong_codes_spend_the_mfa_token_even_for_the_right_code() {
    let app = spawn_app().await;
    let email = unique_email("five");
    let signup = app.signup_ok(&email, PASSWORD).await;
    let enrolled = app.enrol_totp(access_of(&signup), PASSWORD).await;
    let token = app.mfa_token(&email, PASSWORD).await;

    for wrong in [
        "000000",
        "111111",
        "aaaa-bbbb-cccc-dddd",
        "222222",
        "nonsense",
    ] {
        assert_error(
            app.post_login_mfa(&token, wrong).await,
            StatusCode::UNAUTHORIZED,
            "invalid_mfa_code",
        )
        .await;
    }
    let right = totp_code(&enrolled.secret, app.now());
    assert_error(
        app.post_login_mfa(&token, &right).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_token",
    )
    .await;
    // The right code was not spent by the refused attempt: a new login takes it.
    let fresh = app.mfa_token(&email, PASSWORD).await;
    expect_json(app.post_login_mfa(&fresh, &right).await, StatusCode::OK).await;
}

#[both_backends]
async fn an_expired_a_spent_and_an_unknown_mfa_token_are_refused() {
    let app = spawn_app().await;
    let email = unique_email("expired");
    let signup = app.signup_ok(&email, PASSWORD).await;
    let enrolled = app.enrol_totp(access_of(&signup), PASSWORD).await;

    let token = app.mfa_token(&email, PASSWORD).await;
    app.advance(Duration::from_secs(5 * 60 + 1));
    let code = totp_code(&enrolled.secret, app.now());
    assert_error(
        app.post_login_mfa(&token, &code).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_token",
    )
    .await;

    let token = app.mfa_token(&email, PASSWORD).await;
    expect_json(app.post_login_mfa(&token, &code).await, StatusCode::OK).await;
    app.advance(Duration::from_secs(30));
    let next = totp_code(&enrolled.secret, app.now());
    assert_error(
        app.post_login_mfa(&token, &next).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_token",
    )
    .await;

    for unknown in ["x", "A".repeat(43).as_str(), &"_".repeat(43)] {
        assert_error(
            app.post_login_mfa(unknown, &next).await,
            StatusCode::UNAUTHORIZED,
            "invalid_mfa_token",
        )
        .await;
    }
    assert_validation_failed(
        app.post_json("/v1/login/mfa", &json!({})).await,
        &["code", "mfa_token"],
    )
    .await;
}

#[both_backends]
async fn wrong_codes_past_the_user_limit_get_429_until_the_window_passes() {
    let app = spawn_app_with(|s| s.mfa.max_failures = 6).await;
    let email = unique_email("limit");
    let signup = app.signup_ok(&email, PASSWORD).await;
    let enrolled = app.enrol_totp(access_of(&signup), PASSWORD).await;

    // Six wrong codes over two tokens (the per-token limit is five).
    for round in 0..2 {
        let token = app.mfa_token(&email, PASSWORD).await;
        for _ in 0..3 {
            assert_error(
                app.post_login_mfa(&token, "000000").await,
                StatusCode::UNAUTHORIZED,
                "invalid_mfa_code",
            )
            .await;
        }
        let _ = round;
    }
    let token = app.mfa_token(&email, PASSWORD).await;
    let right = totp_code(&enrolled.secret, app.now());
    let response = app.post_login_mfa(&token, &right).await;
    let retry_after: u64 = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry_after > 0 && retry_after <= 15 * 60, "{retry_after}");
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
    // The /v1/me/mfa endpoints count on the same counter.
    assert_error(
        app.post_json_with_token(
            "/v1/me/mfa/recovery-codes",
            access_of(&signup),
            &json!({ "code": right }),
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS,
        "too_many_attempts",
    )
    .await;
    // Wrong passwords are another counter: the password still earns an mfa_token.
    app.advance(Duration::from_secs(15 * 60 + 1));
    let body = app
        .login_with_totp(&email, PASSWORD, &enrolled.secret)
        .await;
    assert_eq!(amr(&body), json!(["pwd", "otp", "mfa"]));
}

#[both_backends]
async fn regenerating_recovery_codes_replaces_the_old_set() {
    let app = spawn_app().await;
    let email = unique_email("regen");
    let signup = app.signup_ok(&email, PASSWORD).await;
    assert_error(
        app.post_json_with_token(
            "/v1/me/mfa/recovery-codes",
            access_of(&signup),
            &json!({ "code": "123456" }),
        )
        .await,
        StatusCode::CONFLICT,
        "mfa_not_enabled",
    )
    .await;
    let enrolled = app.enrol_totp(access_of(&signup), PASSWORD).await;

    assert_error(
        app.post_json_with_token(
            "/v1/me/mfa/recovery-codes",
            access_of(&signup),
            &json!({ "code": "000000" }),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;
    let code = totp_code(&enrolled.secret, app.now());
    let body = expect_json(
        app.post_json_with_token(
            "/v1/me/mfa/recovery-codes",
            access_of(&signup),
            &json!({ "code": code }),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let new_codes: Vec<String> = body["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    assert_eq!(new_codes.len(), 10);
    assert!(
        new_codes
            .iter()
            .all(|c| !enrolled.recovery_codes.contains(c))
    );

    let token = app.mfa_token(&email, PASSWORD).await;
    assert_error(
        app.post_login_mfa(&token, &enrolled.recovery_codes[0])
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;
    expect_json(
        app.post_login_mfa(&token, &new_codes[0]).await,
        StatusCode::OK,
    )
    .await;
}

#[both_backends]
async fn disabling_needs_the_password_and_a_code_and_turns_mfa_off() {
    let app = spawn_app().await;
    let email = unique_email("disable");
    let signup = app.signup_ok(&email, PASSWORD).await;
    let enrolled = app.enrol_totp(access_of(&signup), PASSWORD).await;
    let code = totp_code(&enrolled.secret, app.now());
    let delete = |password: &str, code: &str| {
        app.delete_with_token(
            "/v1/me/mfa",
            access_of(&signup),
            Some(json!({ "password": password, "code": code })),
        )
    };

    assert_error(
        delete(OTHER_PASSWORD, &code).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_error(
        delete(PASSWORD, "000000").await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;
    // A pending login dies with MFA.
    let pending = app.mfa_token(&email, PASSWORD).await;
    assert_eq!(
        delete(PASSWORD, &code).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_error(
        delete(PASSWORD, &code).await,
        StatusCode::CONFLICT,
        "mfa_not_enabled",
    )
    .await;
    app.assert_mfa_token_void(&pending, &enrolled.secret).await;
    let body = app.login_ok(&email, PASSWORD).await;
    assert_eq!(amr(body.json()), json!(["pwd"]));
    assert!(!body.user.mfa_enabled);
}

#[both_backends]
async fn enrolment_errors_follow_the_contract() {
    let app = spawn_app().await;
    let email = unique_email("enrolerr");
    let signup = app.signup_ok(&email, PASSWORD).await;
    let token = access_of(&signup);

    assert_error(
        app.post_json_with_token(
            "/v1/me/mfa/totp",
            token,
            &json!({ "password": OTHER_PASSWORD }),
        )
        .await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_error(
        app.post_json_with_token(
            "/v1/me/mfa/totp/confirm",
            token,
            &json!({ "code": "123456" }),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "no_pending_enrolment",
    )
    .await;
    // A second call replaces the pending secret: the first one's codes stop working.
    let first = expect_json(
        app.post_json_with_token("/v1/me/mfa/totp", token, &json!({ "password": PASSWORD }))
            .await,
        StatusCode::OK,
    )
    .await;
    let second = expect_json(
        app.post_json_with_token("/v1/me/mfa/totp", token, &json!({ "password": PASSWORD }))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_ne!(first["secret"], second["secret"]);
    let stale = totp_code(first["secret"].as_str().expect("secret"), app.now());
    assert_error(
        app.post_json_with_token("/v1/me/mfa/totp/confirm", token, &json!({ "code": stale }))
            .await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;
    let code = totp_code(second["secret"].as_str().expect("secret"), app.now());
    expect_json(
        app.post_json_with_token("/v1/me/mfa/totp/confirm", token, &json!({ "code": code }))
            .await,
        StatusCode::OK,
    )
    .await;
    assert_error(
        app.post_json_with_token("/v1/me/mfa/totp", token, &json!({ "password": PASSWORD }))
            .await,
        StatusCode::CONFLICT,
        "mfa_already_enabled",
    )
    .await;
    assert_validation_failed(
        app.post_json_with_token("/v1/me/mfa/totp/confirm", token, &json!({}))
            .await,
        &["code"],
    )
    .await;
}

#[both_backends]
async fn an_admin_reset_removes_mfa_and_revokes_every_session() {
    let app = spawn_app().await;
    let admin = app.create_admin(&unique_email("admin"), PASSWORD).await;
    let email = unique_email("victim");
    let signup = app.signup_ok(&email, PASSWORD).await;
    let enrolled = app.enrol_totp(access_of(&signup), PASSWORD).await;
    let session = app
        .login_with_totp(&email, PASSWORD, &enrolled.secret)
        .await;
    let pending = app.mfa_token(&email, PASSWORD).await;
    let path = format!("/v1/admin/users/{}/mfa", user_id_of(&signup));

    assert_error(
        app.delete_with_token(&path, access_of(&signup), None).await,
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    let response = app.delete_with_token(&path, access_of(&admin), None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    assert_error(
        app.post_refresh(refresh_of(&session)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    app.assert_mfa_token_void(&pending, &enrolled.secret).await;
    let body = app.login_ok(&email, PASSWORD).await;
    assert!(!body.user.mfa_enabled);
    let sessions = app
        .admin_sessions_ok(access_of(&admin), user_id_of(&signup))
        .await;
    assert!(
        sessions
            .iter()
            .any(|s| s["amr"] == json!(["pwd", "otp", "mfa"]))
    );

    let unknown = format!("/v1/admin/users/{}/mfa", uuid::Uuid::new_v4());
    assert_error(
        app.delete_with_token(&unknown, access_of(&admin), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

#[both_backends]
async fn a_password_change_voids_logins_waiting_for_their_second_factor() {
    let app = spawn_app().await;
    let email = unique_email("pwchange");
    let signup = app.signup_ok(&email, PASSWORD).await;
    let enrolled = app.enrol_totp(access_of(&signup), PASSWORD).await;
    let session = app
        .login_with_totp(&email, PASSWORD, &enrolled.secret)
        .await;
    let pending = app.mfa_token(&email, PASSWORD).await;

    let changed = expect_json(
        app.post_json_with_token(
            "/v1/me/password",
            access_of(&session),
            &json!({ "current_password": PASSWORD, "new_password": OTHER_PASSWORD }),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    // The device that changed it keeps its second factor.
    assert_eq!(amr(&changed), json!(["pwd", "otp", "mfa"]));
    app.assert_mfa_token_void(&pending, &enrolled.secret).await;
}

#[both_backends]
async fn with_admin_mfa_required_an_admin_needs_a_second_factor_session() {
    let app = spawn_app_with(|s| s.mfa.admin_mfa_required = true).await;
    let email = unique_email("strict-admin");
    let admin = app.create_admin(&email, PASSWORD).await;

    assert_error(
        app.get_with_token("/v1/admin/users", access_of(&admin))
            .await,
        StatusCode::FORBIDDEN,
        "mfa_required",
    )
    .await;
    // The admin can still enrol through /v1/me.
    let enrolled = app.enrol_totp(access_of(&admin), PASSWORD).await;
    let body = app
        .login_with_totp(&email, PASSWORD, &enrolled.secret)
        .await;
    expect_json(
        app.get_with_token("/v1/admin/users", access_of(&body))
            .await,
        StatusCode::OK,
    )
    .await;
}

/// The code Debian's `oathtool` (an implementation independent of ours and of
/// `totp-rs`) shows at `at` for the base32 `secret`.
fn oathtool_code(secret: &str, at: chrono::DateTime<chrono::Utc>) -> String {
    let output = std::process::Command::new("oathtool")
        .args(["--totp", "--base32", "--digits=6", "--now"])
        .arg(at.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .arg(secret)
        .output()
        .expect("oathtool runs (scripts/test installs it)");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

#[both_backends]
async fn codes_from_an_independent_implementation_confirm_enrolment_and_log_in() {
    let app = spawn_app().await;
    let email = unique_email("oathtool");
    let signup = app.signup_ok(&email, PASSWORD).await;
    let started = expect_json(
        app.post_json_with_token(
            "/v1/me/mfa/totp",
            access_of(&signup),
            &json!({ "password": PASSWORD }),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    let secret = started["secret"].as_str().expect("secret");
    let code = oathtool_code(secret, app.now());
    assert_eq!(code.len(), 6);
    expect_json(
        app.post_json_with_token(
            "/v1/me/mfa/totp/confirm",
            access_of(&signup),
            &json!({ "code": code }),
        )
        .await,
        StatusCode::OK,
    )
    .await;

    app.advance(Duration::from_secs(30));
    let token = app.mfa_token(&email, PASSWORD).await;
    let code = oathtool_code(secret, app.now());
    let body = expect_json(app.post_login_mfa(&token, &code).await, StatusCode::OK).await;
    assert_eq!(amr(&body), json!(["pwd", "otp", "mfa"]));
}

#[both_backends]
async fn the_cli_resets_a_users_mfa() {
    let app = spawn_app().await;
    let email = unique_email("cli-reset");
    let signup = app.signup_ok(&email, PASSWORD).await;
    let enrolled = app.enrol_totp(access_of(&signup), PASSWORD).await;
    let session = app
        .login_with_totp(&email, PASSWORD, &enrolled.secret)
        .await;

    let out = app.cli_ok(&["users", "reset-mfa", &email], None).await;
    assert!(out.contains("second factor removed"), "{out}");

    assert_error(
        app.post_refresh(refresh_of(&session)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_refresh_token",
    )
    .await;
    let body = app.login_ok(&email, PASSWORD).await;
    assert!(!body.user.mfa_enabled);
    let user_id = user_id_of(&signup).to_owned();
    let events = app
        .store(move |s| {
            s.list_audit(&AuditFilter {
                user_id: Some(user_id.parse().expect("id")),
                kind: Some("mfa_reset".into()),
                limit: 10,
                before: None,
            })
        })
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
}

/// Every path that hands out tokens, walked for a user with MFA on: only the second
/// factor's login yields `mfa`. A login stops at `mfa_required`; a session opened before
/// MFA was on keeps `["pwd"]` through refresh and password change; signup cannot meet an
/// existing user.
#[both_backends]
async fn no_path_but_the_second_factor_gives_a_user_with_mfa_an_mfa_session() {
    let app = spawn_app().await;
    let email = unique_email("paths");
    let signup = app.signup_ok(&email, PASSWORD).await;
    let before = app.login_ok(&email, PASSWORD).await;
    app.enrol_totp(access_of(&signup), PASSWORD).await;

    // Login: no tokens, whatever the body says besides.
    let body = assert_error(
        app.post_login(&email, PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "mfa_required",
    )
    .await;
    assert!(body.get("access_token").is_none() && body.get("refresh_token").is_none());
    // Signup of the same address: taken, no tokens.
    assert_error(
        app.post_signup(&email, PASSWORD).await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    // A session from before: refresh keeps what it proved, nothing more.
    let refreshed = app.refresh_ok(refresh_of(&before)).await;
    assert_eq!(amr(refreshed.json()), json!(["pwd"]));
    assert!(refreshed.user.mfa_enabled);
    // A password change through it: a new session, still without a second factor.
    let changed = expect_json(
        app.post_json_with_token(
            "/v1/me/password",
            access_of(&refreshed),
            &json!({ "current_password": PASSWORD, "new_password": OTHER_PASSWORD }),
        )
        .await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(amr(&changed), json!(["pwd"]));
    // And the new password still stops at the second factor.
    assert_error(
        app.post_login(&email, OTHER_PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "mfa_required",
    )
    .await;
}
