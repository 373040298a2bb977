//! The admin console at `/admin/`: its headers over HTTP and the rules its files keep
//! (`serving`), and end-to-end runs in headless Chromium against a real server, as an
//! operator works (`operator`) and on the rough edges operators found (`rough_edges`).

mod clients;
mod mail;
mod mfa;
mod operator;
mod passkeys;
mod rough_edges;
mod serving;

use serde_json::{Value, json};

pub use crate::helpers::*;
pub use crate::kit::browser::Browser;

pub const ADMIN_PASSWORD: &str = "Adm1n!Passw0rd-long";

/// Signs in through the page's form.
pub async fn sign_in(browser: &Browser, app: &TestApp, email: &str, password: &str) {
    browser.goto(&app.url("/admin/")).await;
    browser.fill("#email", email).await;
    browser.fill("#password", password).await;
    browser.click("form.sign-in button[type=submit]").await;
}

/// Confirms the page's confirmation dialog.
pub async fn confirm(browser: &Browser) {
    browser.find("dialog[open] #confirm-ok").await;
    browser.click("#confirm-ok").await;
}

/// The console's session (the one Chromium opened) among the admin's own.
pub async fn console_session(app: &TestApp, admin: &Tokens) -> Value {
    let sessions = app
        .admin_sessions_ok(access_of(admin), user_id_of(admin))
        .await;
    sessions
        .into_iter()
        .find(|s| {
            s["user_agent"]
                .as_str()
                .is_some_and(|ua| ua.contains("Chrome"))
        })
        .expect("the console's session")
}

/// Fills and submits the sign-in form on the page as it is (no navigation first).
pub async fn submit_sign_in(browser: &Browser, email: &str, password: &str) {
    browser.fill("#email", email).await;
    browser.fill("#password", password).await;
    browser.click("form.sign-in button[type=submit]").await;
}

/// `location.hash = hash`, as a link or a typed URL would.
pub async fn go(browser: &Browser, hash: &str) {
    browser
        .run("location.hash = arguments[0]", json!([hash]))
        .await;
}

pub const SECOND: std::time::Duration = std::time::Duration::from_secs(1);
pub const FIVE_SECONDS: std::time::Duration = std::time::Duration::from_secs(5);
