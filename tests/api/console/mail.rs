//! The console's mail action (#19): "Send reset mail" on a user, and `email_verified`.

use reqwest::StatusCode;

use super::*;
use crate::kit::smtp::SmtpServer;
use crate::mail::{WAIT, reset, with_mail};

#[tokio::test]
async fn an_admin_sends_a_reset_mail_from_the_console_and_the_user_resets_with_it() {
    let smtp = SmtpServer::start().await;
    let app = spawn_app_with(|s| with_mail(s, &smtp)).await;
    let admin_email = unique_email("console-admin");
    app.create_admin(&admin_email, ADMIN_PASSWORD).await;
    let email = unique_email("forgetful");
    let tokens = app.signup_ok(&email, PASSWORD).await;
    let id = user_id_of(&tokens).to_owned();
    smtp.wait_for(1, WAIT).await;

    let browser = Browser::launch(1280, 800).await;
    sign_in(&browser, &app, &admin_email, ADMIN_PASSWORD).await;
    browser.wait_text("main h1", "Overview").await;
    go(&browser, &format!("#/user/{id}")).await;
    browser.wait_text("main h1", &email).await;
    assert_eq!(browser.text("#email-verified").await, "not verified");

    browser.click("#send-reset").await;
    confirm(&browser).await;
    browser.wait_text("#result", "reset mail").await;
    browser.screenshot("user-reset-mail").await;

    let mail = smtp.wait_for(2, WAIT).await.pop().expect("the reset mail");
    assert_eq!(mail.to, vec![email.clone()]);
    let password = "Console-reset-Passw0rd!";
    assert_eq!(
        reset(&app, &mail.token(), password).await.status(),
        StatusCode::NO_CONTENT
    );
    app.login_ok(&email, password).await;

    // The page drawn anew shows the address as verified (a reset proves it).
    go(&browser, "#/users").await;
    go(&browser, &format!("#/user/{id}")).await;
    browser.wait_text("#email-verified", "verified").await;
    assert_eq!(browser.text("#email-verified").await, "verified");
    browser.quit().await;
}
