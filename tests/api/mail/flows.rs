//! Each row of the contract's mail table, on both backends, followed through the mail.

use std::time::Duration;

use gatehouse::domain::{RevokeReason, UserId};
use gatehouse::storage::AuditFilter;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{WAIT, forgot, mail_to, post, reset, spawn_mail_app, verify};
use crate::helpers::{
    OTHER_PASSWORD, PASSWORD, access_of, assert_error, assert_user, refresh_of, spawn_app,
    unique_email, user_id_of,
};
use crate::kit::smtp::SmtpServer;

const NEW_PASSWORD: &str = "Brand-new-Passw0rd!";

#[both_backends]
async fn signup_mails_a_link_whose_token_verifies_the_address_once() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let email = unique_email("verify");
    let tokens = app.signup_ok(&email, PASSWORD).await;
    assert!(!tokens.user.email_verified);

    let mail = mail_to(&smtp, &email).await;
    assert_eq!(mail.from, "noreply@example.com");
    assert!(
        mail.header("Message-ID")
            .is_some_and(|v| v.ends_with("@example.com>"))
    );
    assert!(mail.header("Date").is_some());
    assert_eq!(
        mail.header("Auto-Submitted").as_deref(),
        Some("auto-generated")
    );
    assert!(
        mail.header("Subject")
            .is_some_and(|s| s.contains("127.0.0.1")),
        "the service is named by the issuer's host: {:?}",
        mail.header("Subject")
    );
    assert!(mail.decoded().contains("text/html"), "an HTML part too");
    assert!(
        mail.text_part()
            .contains("http://127.0.0.1:3000/verify?token=")
    );
    let token = mail.token();
    assert!(token.len() >= 22, "at least 128 bits: {token}");

    let response = verify(&app, &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let user: Value = response.json().await.unwrap();
    assert_user(&user, &email, "user");
    assert_eq!(user["email_verified"], true);
    let me: Value = app.get_me(access_of(&tokens)).await.json().await.unwrap();
    assert_eq!(me["email_verified"], true);

    assert_error(
        verify(&app, &token).await,
        StatusCode::BAD_REQUEST,
        "invalid_mail_token",
    )
    .await;
    assert_error(
        verify(&app, "not-a-token").await,
        StatusCode::BAD_REQUEST,
        "invalid_mail_token",
    )
    .await;
}

#[both_backends]
async fn without_smtp_the_mail_endpoints_answer_404_and_signup_sends_nothing() {
    let app = spawn_app().await;
    let tokens = app.signup_ok(&unique_email("nomail"), PASSWORD).await;
    assert!(!tokens.user.email_verified);
    for (path, body) in [
        ("/v1/password/forgot", json!({ "email": "a@example.com" })),
        (
            "/v1/password/reset",
            json!({ "token": "x", "new_password": NEW_PASSWORD }),
        ),
        ("/v1/email/verify", json!({ "token": "x" })),
    ] {
        assert_error(
            post(&app, path, body).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    for (path, body) in [
        ("/v1/me/email/verification", json!({})),
        (
            "/v1/me/email",
            json!({ "new_email": "b@example.com", "password": PASSWORD }),
        ),
    ] {
        let response = app
            .post_json_with_token(path, access_of(&tokens), &body)
            .await;
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let outbox = app.store(|s| s.mail_stats()).await;
    assert_eq!(outbox, Default::default());
    let ready: Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["mail"], json!({ "status": "off" }));
}

#[both_backends]
async fn a_new_verification_mail_supersedes_the_earlier_one() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let email = unique_email("again");
    let tokens = app.signup_ok(&email, PASSWORD).await;
    let first = mail_to(&smtp, &email).await.token();

    let response = app
        .post_json_with_token("/v1/me/email/verification", access_of(&tokens), &json!({}))
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.json::<Value>().await.unwrap(), json!({}));
    smtp.wait_for(2, WAIT).await;
    let second = mail_to(&smtp, &email).await.token();
    assert_ne!(first, second);

    assert_error(
        verify(&app, &first).await,
        StatusCode::BAD_REQUEST,
        "invalid_mail_token",
    )
    .await;
    assert_eq!(verify(&app, &second).await.status(), StatusCode::OK);
    let again = app
        .post_json_with_token("/v1/me/email/verification", access_of(&tokens), &json!({}))
        .await;
    assert_error(again, StatusCode::CONFLICT, "already_verified").await;
}

#[both_backends]
async fn an_expired_verification_token_is_refused() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let email = unique_email("late");
    app.signup_ok(&email, PASSWORD).await;
    let token = mail_to(&smtp, &email).await.token();
    app.advance(Duration::from_secs(24 * 3600 + 1));
    assert_error(
        verify(&app, &token).await,
        StatusCode::BAD_REQUEST,
        "invalid_mail_token",
    )
    .await;
}

#[both_backends]
async fn a_reset_replaces_the_password_revokes_every_family_and_never_signs_in() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let email = unique_email("reset");
    let first = app.signup_ok(&email, PASSWORD).await;
    let second = app.login_ok(&email, PASSWORD).await;
    mail_to(&smtp, &email).await;

    let (status, body) = forgot(&app, &email).await;
    assert_eq!((status, body.as_str()), (StatusCode::ACCEPTED, "{}"));
    smtp.wait_for(2, WAIT).await;
    let mail = mail_to(&smtp, &email).await;
    assert!(
        mail.text_part()
            .contains("http://127.0.0.1:3000/reset?token=")
    );
    let token = mail.token();

    let response = reset(&app, &token, NEW_PASSWORD).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert!(
        response.text().await.unwrap().is_empty(),
        "no tokens: a reset never signs in"
    );

    assert_eq!(
        app.post_login(&email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let fresh = app.login_ok(&email, NEW_PASSWORD).await;
    assert!(fresh.user.email_verified, "a reset proves the address");
    for old in [&first, &second] {
        assert_eq!(
            app.post_refresh(refresh_of(old)).await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let sessions = app.stored_sessions(user_id_of(&first)).await;
    let revoked: Vec<_> = sessions
        .iter()
        .filter(|s| s.revoked_reason == Some(RevokeReason::PasswordReset))
        .collect();
    assert_eq!(revoked.len(), 2, "{sessions:?}");

    assert_error(
        reset(&app, &token, OTHER_PASSWORD).await,
        StatusCode::BAD_REQUEST,
        "invalid_mail_token",
    )
    .await;
    assert_error(
        reset(&app, &token, "short").await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
    )
    .await;

    let id: UserId = user_id_of(&first).parse().unwrap();
    let kinds: Vec<String> = app
        .store(move |s| {
            s.list_audit(&AuditFilter {
                user_id: Some(id),
                limit: 100,
                ..Default::default()
            })
        })
        .await
        .into_iter()
        .map(|e| {
            let detail = e.detail.clone().unwrap_or_default();
            assert!(!detail.contains(&token), "a token in the audit log: {e:?}");
            e.kind
        })
        .collect();
    for kind in [
        "mail_queued",
        "mail_sent",
        "password_reset_requested",
        "password_reset",
    ] {
        assert!(
            kinds.iter().any(|k| k == kind),
            "{kind} missing from {kinds:?}"
        );
    }
}

#[both_backends]
async fn a_reset_spends_every_other_reset_token_and_a_late_one_expires() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let email = unique_email("two");
    app.signup_ok(&email, PASSWORD).await;
    forgot(&app, &email).await;
    smtp.wait_for(2, WAIT).await;
    let first = mail_to(&smtp, &email).await.token();
    forgot(&app, &email).await;
    smtp.wait_for(3, WAIT).await;
    let second = mail_to(&smtp, &email).await.token();
    forgot(&app, &email).await;
    smtp.wait_for(4, WAIT).await;
    let third = mail_to(&smtp, &email).await.token();

    app.advance(Duration::from_secs(31 * 60));
    assert_error(
        reset(&app, &third, NEW_PASSWORD).await,
        StatusCode::BAD_REQUEST,
        "invalid_mail_token",
    )
    .await;
    forgot(&app, &email).await;
    smtp.wait_for(5, WAIT).await;
    let fourth = mail_to(&smtp, &email).await.token();
    assert_eq!(
        reset(&app, &fourth, NEW_PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );
    for spent in [first, second] {
        assert_error(
            reset(&app, &spent, OTHER_PASSWORD).await,
            StatusCode::BAD_REQUEST,
            "invalid_mail_token",
        )
        .await;
    }
}

#[both_backends]
async fn a_password_change_spends_the_outstanding_reset_tokens() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let email = unique_email("change");
    let tokens = app.signup_ok(&email, PASSWORD).await;
    forgot(&app, &email).await;
    smtp.wait_for(2, WAIT).await;
    let token = mail_to(&smtp, &email).await.token();
    let changed = app
        .post_json_with_token(
            "/v1/me/password",
            access_of(&tokens),
            &json!({ "current_password": PASSWORD, "new_password": OTHER_PASSWORD }),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::OK);
    assert_error(
        reset(&app, &token, NEW_PASSWORD).await,
        StatusCode::BAD_REQUEST,
        "invalid_mail_token",
    )
    .await;
    app.login_ok(&email, OTHER_PASSWORD).await;
}

#[both_backends]
async fn disabled_users_get_no_mail_and_their_tokens_fail() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let email = unique_email("off");
    let tokens = app.signup_ok(&email, PASSWORD).await;
    forgot(&app, &email).await;
    smtp.wait_for(2, WAIT).await;
    let token = mail_to(&smtp, &email).await.token();
    let id: UserId = user_id_of(&tokens).parse().unwrap();
    let now = app.now();
    app.store(move |s| s.update_user(id, None, Some(true), now))
        .await;

    assert_error(
        reset(&app, &token, NEW_PASSWORD).await,
        StatusCode::BAD_REQUEST,
        "invalid_mail_token",
    )
    .await;
    let (status, body) = forgot(&app, &email).await;
    assert_eq!((status, body.as_str()), (StatusCode::ACCEPTED, "{}"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(smtp.count_to(&email), 2, "no mail to a disabled user");
}

#[both_backends]
async fn two_parallel_resets_with_one_token_give_exactly_one_204() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let email = unique_email("race");
    app.signup_ok(&email, PASSWORD).await;
    forgot(&app, &email).await;
    smtp.wait_for(2, WAIT).await;
    let token = mail_to(&smtp, &email).await.token();

    for round in 0..3 {
        let attempts = (0..8).map(|i| {
            let (app, token) = (&app, token.clone());
            async move {
                reset(app, &token, &format!("Parallel-Passw0rd!{round}{i}"))
                    .await
                    .status()
            }
        });
        let statuses = futures::future::join_all(attempts).await;
        let wins = statuses
            .iter()
            .filter(|s| **s == StatusCode::NO_CONTENT)
            .count();
        let expected = usize::from(round == 0);
        assert_eq!(wins, expected, "round {round}: {statuses:?}");
        assert!(
            statuses
                .iter()
                .all(|s| *s == StatusCode::NO_CONTENT || *s == StatusCode::BAD_REQUEST)
        );
    }
}

#[both_backends]
async fn an_email_change_mails_the_new_address_a_link_and_the_old_one_a_notice() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let (old, new, taken) = (
        unique_email("old"),
        unique_email("new"),
        unique_email("taken"),
    );
    let tokens = app.signup_ok(&old, PASSWORD).await;
    app.signup_ok(&taken, PASSWORD).await;
    smtp.wait_for(2, WAIT).await;
    let change = |new_email: &str, password: &str| {
        let body = json!({ "new_email": new_email, "password": password });
        let (app, access) = (&app, access_of(&tokens).to_owned());
        async move {
            app.post_json_with_token("/v1/me/email", &access, &body)
                .await
        }
    };

    assert_error(
        change(&new, OTHER_PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    assert_error(
        change(&taken, PASSWORD).await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    assert_error(
        change("nope", PASSWORD).await,
        StatusCode::BAD_REQUEST,
        "validation_failed",
    )
    .await;
    let response = change(&new, PASSWORD).await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);

    smtp.wait_for(4, WAIT).await;
    let notice = mail_to(&smtp, &old).await;
    assert!(notice.text_part().contains(&new));
    assert!(
        !notice.decoded().contains("token="),
        "the notice carries no token"
    );
    let token = mail_to(&smtp, &new).await.token();

    let response = verify(&app, &token).await;
    assert_eq!(response.status(), StatusCode::OK);
    let user: Value = response.json().await.unwrap();
    assert_user(&user, &new, "user");
    assert_eq!(user["email_verified"], true);
    app.login_ok(&new, PASSWORD).await;
    assert_eq!(
        app.post_login(&old, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let changed = app
        .store(|s| {
            s.list_audit(&AuditFilter {
                kind: Some("email_changed".into()),
                limit: 10,
                ..Default::default()
            })
        })
        .await;
    assert_eq!(changed.len(), 1, "{changed:?}");
}

#[both_backends]
async fn an_email_change_to_an_address_taken_since_is_409_and_the_token_stays_usable() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let (old, new) = (unique_email("old"), unique_email("new"));
    let tokens = app.signup_ok(&old, PASSWORD).await;
    let response = app
        .post_json_with_token(
            "/v1/me/email",
            access_of(&tokens),
            &json!({ "new_email": new, "password": PASSWORD }),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let token = mail_to(&smtp, &new).await.token();
    let squatter = app.signup_ok(&new, PASSWORD).await;

    assert_error(
        verify(&app, &token).await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    let squatter_id: UserId = user_id_of(&squatter).parse().unwrap();
    let now = app.now();
    app.store(move |s| {
        s.delete_user(
            squatter_id,
            &gatehouse::domain::Email::parse(&new).unwrap(),
            now,
        )
    })
    .await;
    assert_eq!(verify(&app, &token).await.status(), StatusCode::OK);
}

#[both_backends]
async fn an_admin_sees_a_users_deliveries_without_tokens_and_can_send_a_reset() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let admin = app.create_admin(&unique_email("admin"), PASSWORD).await;
    let email = unique_email("user");
    let tokens = app.signup_ok(&email, PASSWORD).await;
    let id = user_id_of(&tokens).to_owned();
    smtp.wait_for(1, WAIT).await;

    let response = app
        .post_json_with_token(
            &format!("/v1/admin/users/{id}/password-reset"),
            access_of(&admin),
            &json!({}),
        )
        .await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    smtp.wait_for(2, WAIT).await;
    let token = mail_to(&smtp, &email).await.token();
    // The sender records "sent" after the server's 250.
    for _ in 0..200 {
        if app.store(|s| s.mail_stats()).await.sent == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let response = app
        .get_with_token(&format!("/v1/admin/users/{id}/mail"), access_of(&admin))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let text = response.text().await.unwrap();
    assert!(!text.contains(&token), "{text}");
    let body: Value = serde_json::from_str(&text).unwrap();
    let kinds: Vec<(&str, &str)> = body["mails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["kind"].as_str().unwrap(), m["status"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, vec![("reset", "sent"), ("verify", "sent")]);

    let user = app
        .get_with_token(
            &format!("/v1/admin/users/{}/mail", uuid::Uuid::new_v4()),
            access_of(&admin),
        )
        .await;
    assert_error(user, StatusCode::NOT_FOUND, "not_found").await;
    let forbidden = app
        .get_with_token(&format!("/v1/admin/users/{id}/mail"), access_of(&tokens))
        .await;
    assert_error(forbidden, StatusCode::FORBIDDEN, "forbidden").await;
}

#[both_backends]
async fn a_reset_voids_logins_waiting_for_their_second_factor_and_leaves_mfa_on() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let email = unique_email("reset-mfa");
    let signup = app.signup_ok(&email, PASSWORD).await;
    mail_to(&smtp, &email).await;
    let enrolled = app.enrol_totp(access_of(&signup), PASSWORD).await;
    let pending = app.mfa_token(&email, PASSWORD).await;

    forgot(&app, &email).await;
    smtp.wait_for(2, WAIT).await;
    let token = mail_to(&smtp, &email).await.token();
    assert_eq!(
        reset(&app, &token, NEW_PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );

    // The next step, so that a refusal can only come from the voided mfa_token.
    app.advance(Duration::from_secs(30));
    let code = crate::helpers::totp_code(&enrolled.secret, app.now());
    assert_error(
        app.post_login_mfa(&pending, &code).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_token",
    )
    .await;
    // A reset never turns the second factor off: the new password still needs a code.
    let fresh = app.mfa_token(&email, NEW_PASSWORD).await;
    app.advance(Duration::from_secs(30));
    let code = crate::helpers::totp_code(&enrolled.secret, app.now());
    assert_eq!(
        app.post_login_mfa(&fresh, &code).await.status(),
        StatusCode::OK
    );
}
