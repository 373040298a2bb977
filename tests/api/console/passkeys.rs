//! Passkeys in the console, end to end in headless Chromium with a virtual authenticator
//! (CTAP2, discoverable credentials, user verification): an admin registers a passkey on
//! their Second factor page, signs in with it alone, uses it as the second factor after a
//! password, and deletes it; an admin removes a user's passkey from the user's page.
//! Without WebAuthn settings the console shows no passkey UI.
//!
//! The page is opened at `http://localhost:PORT`, not 127.0.0.1: a WebAuthn RP ID is a
//! domain, and the browser refuses a ceremony whose RP ID is not the page's host (or a
//! suffix of it). The origin the server accepts names the port, so the port is chosen
//! before the app starts (see [`spawn_on_localhost`]).

use std::panic::AssertUnwindSafe;

use futures::FutureExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use webauthn_rs::prelude::Url;

use super::*;
use crate::kit::ports::free_port;

const TEN_SECONDS: std::time::Duration = std::time::Duration::from_secs(10);

/// The app with WebAuthn for `localhost`, listening on a port chosen here so that the
/// origin can name it (`http://localhost:PORT`); returns the app and that origin. The
/// port was free a moment ago but may be taken before the app binds it: then the start
/// panics ("failed to build the application") and another port is tried.
async fn spawn_on_localhost() -> (TestApp, String) {
    let mut tries = 0;
    loop {
        tries += 1;
        let port = free_port();
        let origin = format!("http://localhost:{port}");
        let allowed = origin.clone();
        let started = AssertUnwindSafe(spawn_app_with(move |s| {
            s.server.bind = format!("127.0.0.1:{port}");
            s.webauthn.rp_id = Some("localhost".into());
            s.webauthn.origins = vec![Url::parse(&allowed).expect("an origin")];
        }))
        .catch_unwind()
        .await;
        match started {
            Ok(app) => {
                assert_eq!(app.port, port, "the app listens where its origin says");
                return (app, origin);
            }
            Err(panic) if tries >= 5 => std::panic::resume_unwind(panic),
            Err(_) => continue,
        }
    }
}

/// Records, in the page, the token answers of passkey sign-ins from now on
/// (`window.__tokens`, emptied here), so the test can read the access token the console
/// now holds in its memory. Lasts until the page is reloaded.
const RECORD_TOKENS: &str = "
    const fresh = !window.__tokens;
    window.__tokens = [];
    if (fresh) {
      const send = window.fetch.bind(window);
      window.fetch = (input, init) => {
        const answer = send(input, init);
        const url = String(input instanceof Request ? input.url : input);
        if (url.endsWith('/v1/passkeys/login') || url.endsWith('/v1/login/mfa')) {
          answer.then((r) => r.clone().json()).then((body) => window.__tokens.push(body), () => {});
        }
        return answer;
      };
    }";

/// The access token of the last passkey sign-in the page recorded (see [`RECORD_TOKENS`]).
async fn recorded_access_token(browser: &Browser) -> String {
    let script = "return (window.__tokens ?? []).some((t) => t.access_token)";
    assert!(
        browser.wait_until(script, FIVE_SECONDS).await,
        "no token answer was recorded"
    );
    let token = browser
        .run(
            "return window.__tokens.filter((t) => t.access_token).at(-1).access_token",
            json!([]),
        )
        .await;
    token.as_str().expect("an access token").to_owned()
}

/// The passkeys of the user `token` belongs to, as the server lists them.
async fn passkeys_of(app: &TestApp, token: &str) -> Vec<Value> {
    let r = app.get_with_token("/v1/me/passkeys", token).await;
    let body = expect_json(r, StatusCode::OK).await;
    body["passkeys"].as_array().expect("passkeys").clone()
}

/// The one live session Chromium holds among `user_id`'s, as stored.
async fn live_console_amr(app: &TestApp, user_id: &str) -> String {
    let now = app.now();
    let live: Vec<_> = app
        .stored_sessions(user_id)
        .await
        .into_iter()
        .filter(|s| s.revoked_at.is_none() && s.expires_at > now)
        .filter(|s| {
            s.user_agent
                .as_deref()
                .is_some_and(|ua| ua.contains("Chrome"))
        })
        .collect();
    assert_eq!(live.len(), 1, "one live console session: {live:?}");
    live[0].amr.as_str().to_owned()
}

/// Waits until the console shows `email` signed in: the navigation bar naming them, no
/// sign-in form (the bar keeps the last name while hidden, so the name alone proves
/// nothing); else fails with what the page reads (the sign-in form's error, typically).
async fn signed_in_as(browser: &Browser, email: &str) {
    let script = format!(
        "return !document.getElementById('bar').hidden
             && !document.querySelector('form.sign-in')
             && document.getElementById('who').textContent === {}",
        json!(email)
    );
    if !browser.wait_until(&script, TEN_SECONDS).await {
        let page = browser
            .run("return document.body.innerText", json!([]))
            .await;
        panic!(
            "not signed in as {email}; the page reads:\n{}",
            page.as_str().unwrap_or_default()
        );
    }
}

#[tokio::test]
async fn an_admin_registers_a_passkey_in_the_console_and_signs_in_with_it() {
    let (app, origin) = spawn_on_localhost().await;
    let admin_email = unique_email("console-passkey");
    let admin = app.create_admin(&admin_email, ADMIN_PASSWORD).await;
    let admin_id = user_id_of(&admin).to_owned();
    let name = "Chromium's virtual key «test»";

    let browser = Browser::launch(1280, 800).await;
    browser.goto(&format!("{origin}/admin/")).await;
    let authenticator = browser.add_virtual_authenticator().await;
    submit_sign_in(&browser, &admin_email, ADMIN_PASSWORD).await;
    browser.wait_text("main h1", "Overview").await;

    // Register: the Second factor page lists none, then the one named here.
    browser.click("a[data-nav=mfa]").await;
    browser.wait_text("#passkeys", "No passkeys yet.").await;
    // An empty name is refused before any ceremony: nothing reaches the authenticator.
    browser.click("#passkey-add button[type=submit]").await;
    browser
        .wait_text("#passkey-error", "give the passkey a name")
        .await;
    assert!(
        browser
            .authenticator_credentials(&authenticator)
            .await
            .is_empty()
    );
    browser.fill("#passkey-name", name).await;
    browser.click("#passkey-add button[type=submit]").await;
    browser.wait_text("#passkey-result", "added").await;
    browser.wait_text("#passkeys", name).await;
    browser.screenshot("passkey-registered").await;

    // What the server stored, and what the authenticator holds: one discoverable
    // credential for `localhost`, whose user handle is the admin's id (the UUID's bytes).
    let stored = passkeys_of(&app, access_of(&admin)).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(stored[0]["name"], name);
    assert_eq!(stored[0]["last_used_at"], Value::Null);
    let held = browser.authenticator_credentials(&authenticator).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["rpId"], "localhost", "{held:?}");
    assert_eq!(held[0]["isResidentCredential"], true, "{held:?}");
    let uuid: uuid::Uuid = admin_id.parse().expect("a UUID");
    assert_eq!(
        b64url_decode(held[0]["userHandle"].as_str().expect("a user handle")),
        uuid.as_bytes(),
        "{held:?}"
    );
    let count_after_registration = held[0]["signCount"].as_u64().expect("signCount");

    // Sign out, then in with the passkey alone: no email, no password.
    browser.click("#sign-out").await;
    browser.find("form.sign-in").await;
    browser.run(RECORD_TOKENS, json!([])).await;
    browser.click("#passkey-sign-in").await;
    signed_in_as(&browser, &admin_email).await;
    // Back on the page it signed out from, with the passkey's use on the list.
    browser.wait_text("#passkeys", name).await;
    let token = recorded_access_token(&browser).await;
    let claims = jwt_claims(&token);
    assert_eq!(claims["sub"], admin_id.as_str());
    assert_eq!(claims["amr"], json!(["hwk", "user", "mfa"]), "{claims}");
    assert_eq!(
        expect_json(app.get_with_token("/v1/me", &token).await, StatusCode::OK).await["email"],
        admin_email.as_str()
    );
    assert_eq!(live_console_amr(&app, &admin_id).await, "hwk user mfa");
    let stored = passkeys_of(&app, access_of(&admin)).await;
    assert_ne!(stored[0]["last_used_at"], Value::Null, "{stored:?}");
    let held = browser.authenticator_credentials(&authenticator).await;
    assert!(
        held[0]["signCount"].as_u64().expect("signCount") > count_after_registration,
        "the assertion was made by the authenticator: {held:?}"
    );
    browser.screenshot("passkey-signed-in").await;

    // A password now asks for the second factor, which the passkey gives.
    browser.click("#sign-out").await;
    browser.find("form.sign-in").await;
    browser.run(RECORD_TOKENS, json!([])).await;
    submit_sign_in(&browser, &admin_email, ADMIN_PASSWORD).await;
    browser.find("form.sign-in #mfa-passkey").await;
    assert!(
        !browser.exists("form.sign-in #code").await,
        "no code field for an account whose only second factor is a passkey"
    );
    browser.screenshot("passkey-second-factor").await;
    browser.click("#mfa-passkey").await;
    signed_in_as(&browser, &admin_email).await;
    let token = recorded_access_token(&browser).await;
    assert_eq!(
        jwt_claims(&token)["amr"],
        json!(["pwd", "hwk", "mfa"]),
        "{token}"
    );
    assert_eq!(live_console_amr(&app, &admin_id).await, "pwd hwk mfa");

    // Deleted from the same page: gone from the list and from the server.
    browser.wait_text("#passkeys", name).await;
    browser.click("#passkeys tr[data-passkey] button").await;
    confirm(&browser).await;
    browser.wait_text("#passkey-result", "is deleted").await;
    browser.wait_text("#passkeys", "No passkeys yet.").await;
    assert_eq!(
        passkeys_of(&app, access_of(&admin)).await,
        Vec::<Value>::new()
    );
    browser.quit().await;
}

#[tokio::test]
async fn an_admin_removes_a_users_passkey_from_the_users_page() {
    let (app, origin) = spawn_on_localhost().await;
    let admin_email = unique_email("console-remover");
    let admin = app.create_admin(&admin_email, ADMIN_PASSWORD).await;
    // Another admin: the console serves admins only, and their passkey is registered
    // there, by the browser's authenticator, as any passkey is.
    let colleague_email = unique_email("console-colleague");
    let colleague = app.create_admin(&colleague_email, ADMIN_PASSWORD).await;
    let colleague_id = user_id_of(&colleague).to_owned();
    let name = "Colleague's phone";

    let browser = Browser::launch(1280, 800).await;
    browser.goto(&format!("{origin}/admin/")).await;
    let authenticator = browser.add_virtual_authenticator().await;
    submit_sign_in(&browser, &colleague_email, ADMIN_PASSWORD).await;
    browser.wait_text("main h1", "Overview").await;
    go(&browser, "#/mfa").await;
    browser.wait_text("#passkeys", "No passkeys yet.").await;
    browser.fill("#passkey-name", name).await;
    browser.click("#passkey-add button[type=submit]").await;
    browser.wait_text("#passkeys", name).await;
    let stored = passkeys_of(&app, access_of(&colleague)).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    let passkey_id = stored[0]["id"].as_str().expect("an id").to_owned();
    browser.click("#sign-out").await;
    browser.find("form.sign-in").await;

    // The admin (password only) opens the colleague's page: the passkey is listed there.
    submit_sign_in(&browser, &admin_email, ADMIN_PASSWORD).await;
    signed_in_as(&browser, &admin_email).await;
    go(&browser, &format!("#/user/{colleague_id}")).await;
    browser.wait_text("#mfa", "on").await;
    browser.wait_text("#user-passkeys", name).await;
    browser.screenshot("user-passkeys").await;
    browser
        .click(&format!(
            "#user-passkeys tr[data-passkey='{passkey_id}'] button"
        ))
        .await;
    confirm(&browser).await;
    browser.wait_text("#result", "is removed").await;
    browser.wait_text("#user-passkeys", "No passkeys.").await;
    browser.wait_text("#mfa", "off").await;

    // Stored: no passkey, no second factor, and the removal audited as the admin's.
    assert_eq!(
        passkeys_of(&app, access_of(&colleague)).await,
        Vec::<Value>::new()
    );
    assert!(
        !app.login_ok(&colleague_email, ADMIN_PASSWORD)
            .await
            .user
            .mfa_enabled
    );
    let audit = app
        .get_with_token(
            &format!("/v1/admin/audit?type=passkey_removed&user_id={colleague_id}"),
            access_of(&admin),
        )
        .await;
    let events = expect_json(audit, StatusCode::OK).await["events"].clone();
    assert_eq!(events.as_array().map(Vec::len), Some(1), "{events}");
    assert_eq!(events[0]["actor_id"], user_id_of(&admin), "{events}");

    // The authenticator still holds it, but the server no longer takes it.
    assert_eq!(
        browser
            .authenticator_credentials(&authenticator)
            .await
            .len(),
        1
    );
    browser.click("#sign-out").await;
    browser.find("form.sign-in").await;
    browser.click("#passkey-sign-in").await;
    browser
        .wait_text("#sign-in-error", "did not accept this passkey")
        .await;
    assert!(
        browser.exists("header#bar[hidden]").await,
        "still signed out"
    );
    browser.quit().await;
}

#[tokio::test]
async fn without_webauthn_settings_the_console_shows_no_passkey_ui() {
    let app = spawn_app().await;
    let admin_email = unique_email("console-no-passkeys");
    let admin = app.create_admin(&admin_email, ADMIN_PASSWORD).await;
    let admin_id = user_id_of(&admin).to_owned();
    // The server has none: every passkey endpoint answers 404.
    let r = app
        .get_with_token("/v1/me/passkeys", access_of(&admin))
        .await;
    assert_error(r, StatusCode::NOT_FOUND, "not_found").await;

    let browser = Browser::launch(1280, 800).await;
    // Before the server was asked, the button is offered; asked, it goes, and says why.
    browser.goto(&app.url("/admin/")).await;
    browser.find("#passkey-sign-in").await;
    browser.screenshot("sign-in-passkey-offered").await;
    browser.click("#passkey-sign-in").await;
    browser
        .wait_text("#sign-in-error", "Passkeys are not enabled on this server")
        .await;
    assert!(!browser.exists("#passkey-sign-in").await);

    // Signed in: no passkey section on the Second factor page, none on a user's page.
    submit_sign_in(&browser, &admin_email, ADMIN_PASSWORD).await;
    browser.wait_text("main h1", "Overview").await;
    go(&browser, "#/mfa").await;
    browser.wait_text("#mfa-state", "Off.").await;
    assert!(!browser.exists("#passkeys-section").await);
    assert!(!browser.exists("#passkey-add").await);
    go(&browser, &format!("#/user/{admin_id}")).await;
    browser.wait_text("#mfa", "off").await;
    assert!(!browser.exists("#user-passkeys").await);
    let headings = browser.text("main").await;
    assert!(!headings.contains("Passkeys"), "{headings}");

    // After a sign-out the form remembers what the server said.
    browser.click("#sign-out").await;
    browser.find("form.sign-in").await;
    assert!(!browser.exists("#passkey-sign-in").await);
    browser.quit().await;
}
