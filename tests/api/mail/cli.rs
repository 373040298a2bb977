//! The CLI's user commands that the console could do and the CLI could not, and the
//! operator's way into an account: set-password and send-reset.

use reqwest::StatusCode;
use serde_json::Value;

use super::{WAIT, mail_to, reset, spawn_mail_app};
use crate::helpers::{PASSWORD, refresh_of, unique_email};
use crate::kit::smtp::SmtpServer;

const NEW_PASSWORD: &str = "Operator-set-Passw0rd!";
const RESET_PASSWORD: &str = "Reset-by-mail-Passw0rd!";

#[both_backends]
async fn the_cli_sets_a_password_queues_a_reset_enables_and_demotes() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let email = unique_email("cli");
    let tokens = app.signup_ok(&email, PASSWORD).await;
    mail_to(&smtp, &email).await;

    let out = app
        .cli_ok(&["users", "set-password", &email], Some(NEW_PASSWORD))
        .await;
    assert!(out.contains("new password"), "{out}");
    assert_eq!(
        app.post_login(&email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.post_refresh(refresh_of(&tokens)).await.status(),
        StatusCode::UNAUTHORIZED,
        "every session ends"
    );
    app.login_ok(&email, NEW_PASSWORD).await;

    let binary = app
        .binary()
        .with("GATEHOUSE_SMTP_URL", &smtp.url())
        .with("GATEHOUSE_MAIL_FROM", "noreply@example.com")
        .with(
            "GATEHOUSE_MAIL_VERIFY_URL",
            "http://127.0.0.1:3000/verify?token={token}",
        )
        .with(
            "GATEHOUSE_MAIL_RESET_URL",
            "http://127.0.0.1:3000/reset?token={token}",
        );
    let out = binary.cli_ok(&["users", "send-reset", &email], None).await;
    assert!(out.contains("queued"), "{out}");
    // The running app's sender picks up what the CLI queued, once the app's test clock
    // has caught up with the wall clock the CLI dated the mail by.
    app.advance(std::time::Duration::from_secs(60));
    smtp.wait_for(2, WAIT).await;
    let token = mail_to(&smtp, &email).await.token();
    assert_eq!(
        reset(&app, &token, RESET_PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );
    app.login_ok(&email, RESET_PASSWORD).await;

    app.cli_ok(&["users", "disable", &email], None).await;
    assert_eq!(
        app.post_login(&email, RESET_PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    app.cli_ok(&["users", "enable", &email], None).await;
    app.login_ok(&email, RESET_PASSWORD).await;

    app.cli_ok(&["users", "promote", &email], None).await;
    assert_eq!(
        app.login_ok(&email, RESET_PASSWORD).await.user.role,
        "admin"
    );
    app.cli_ok(&["users", "demote", &email], None).await;
    let me: Value = app
        .login_ok(&email, RESET_PASSWORD)
        .await
        .user
        .role
        .clone()
        .into();
    assert_eq!(me, "user");
}
