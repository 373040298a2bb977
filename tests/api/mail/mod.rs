//! Mail (#19): verification, reset and email change, read from a real SMTP server
//! (`kit::smtp`) and followed as a user would; the faults of that server; enumeration.

mod cli;
mod faults;
mod flows;

use std::time::Duration;

use gatehouse::config::Settings;
use gatehouse::service::mail::settings::SmtpUrl;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app_with};
use crate::kit::smtp::{Delivered, SmtpServer};

/// Long enough for the sender (polling every 20 ms) on a busy machine.
pub const WAIT: Duration = Duration::from_secs(10);

/// Mail on, to `smtp`, retrying 1 s (of the test clock) after a temporary failure.
pub fn with_mail(s: &mut Settings, smtp: &SmtpServer) {
    s.mail.smtp_url = Some(SmtpUrl::parse(&smtp.url()).expect("the test SMTP URL"));
    s.mail.from = "Gatehouse <noreply@example.com>".into();
    s.mail.verify_url = "http://127.0.0.1:3000/verify?token={token}".into();
    s.mail.reset_url = "http://127.0.0.1:3000/reset?token={token}".into();
    s.mail.retry_base = Duration::from_secs(1);
    s.mail.poll_interval = Duration::from_millis(20);
    s.mail.smtp_timeout = Duration::from_secs(5);
}

pub async fn spawn_mail_app(smtp: &SmtpServer) -> TestApp {
    spawn_app_with(|s| with_mail(s, smtp)).await
}

pub async fn post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.post_json(path, &body).await
}

pub async fn forgot(app: &TestApp, email: &str) -> (StatusCode, String) {
    let r = post(app, "/v1/password/forgot", json!({ "email": email })).await;
    (r.status(), r.text().await.expect("body"))
}

pub async fn reset(app: &TestApp, token: &str, password: &str) -> reqwest::Response {
    post(
        app,
        "/v1/password/reset",
        json!({ "token": token, "new_password": password }),
    )
    .await
}

pub async fn verify(app: &TestApp, token: &str) -> reqwest::Response {
    post(app, "/v1/email/verify", json!({ "token": token })).await
}

/// The newest mail to `to`, whose token a user would follow.
pub async fn mail_to(smtp: &SmtpServer, to: &str) -> Delivered {
    smtp.mail_to(to, WAIT).await
}

/// Moves the test clock on in steps until `smtp` holds `n` mails: each step makes the
/// next retry due (backoff doubles from 1 s, so a few steps cover several retries).
pub async fn advance_until_delivered(app: &TestApp, smtp: &SmtpServer, n: usize) -> Vec<Delivered> {
    for _ in 0..200 {
        if smtp.delivered().len() >= n {
            return smtp.delivered();
        }
        app.advance(Duration::from_secs(2));
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("expected {n} mails, got {}", smtp.delivered().len());
}
