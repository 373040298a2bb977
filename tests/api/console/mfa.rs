//! The console's second factor, end to end in headless Chromium: an admin enrols TOTP
//! from the page (codes computed here from the secret the page shows), signs out, and
//! signs in again with password and code; an admin resets a user's second factor.

use serde_json::json;

use super::*;

#[tokio::test]
async fn an_admin_enrols_totp_in_the_console_then_signs_in_with_a_code() {
    let app = spawn_app_with(|s| s.mfa.admin_mfa_required = true).await;
    let admin_email = unique_email("console-mfa");
    app.create_admin(&admin_email, ADMIN_PASSWORD).await;

    let browser = Browser::launch(1280, 800).await;
    sign_in(&browser, &app, &admin_email, ADMIN_PASSWORD).await;
    // GATEHOUSE_ADMIN_MFA=required: the overview asks for a second factor first.
    browser.wait_text("main h1", "Second factor required").await;
    browser.click("main a[href='#/mfa']").await;
    browser.wait_text("#mfa-state", "Off.").await;
    browser.fill("#mfa-password", ADMIN_PASSWORD).await;
    browser.click("#mfa-start button[type=submit]").await;
    let secret = browser.text("#totp-secret").await;
    assert_eq!(secret.len(), 32, "{secret}");
    let uri = browser.text("#otpauth-uri").await;
    assert!(uri.contains(&secret), "{uri}");
    // The QR code is drawn in the page, large enough for a phone's camera.
    let qr = browser
        .run(
            "const q = document.querySelector('#totp-qr'); \
             if (!q) return null; const r = q.getBoundingClientRect(); \
             return [r.width, r.height, q.querySelectorAll('path, rect').length];",
            json!([]),
        )
        .await;
    let (w, h, shapes) = (qr[0].as_f64(), qr[1].as_f64(), qr[2].as_u64());
    assert!(
        w.unwrap_or(0.0) >= 150.0 && w == h && shapes.unwrap_or(0) > 0,
        "no usable QR code: {qr}"
    );
    browser
        .fill("#mfa-code", &totp_code(&secret, app.now()))
        .await;
    browser.click("#mfa-confirm button[type=submit]").await;
    browser.wait_text("#mfa-state", "On.").await;
    let codes = browser
        .run(
            "return document.querySelectorAll('#recovery-codes li').length",
            json!([]),
        )
        .await;
    assert_eq!(codes, json!(10));
    browser.screenshot("mfa-enrolled").await;

    browser.click("#sign-out").await;
    browser.find("form.sign-in").await;
    app.advance(std::time::Duration::from_secs(30));
    submit_sign_in(&browser, &admin_email, ADMIN_PASSWORD).await;
    browser.find("form.sign-in #code").await;
    browser.fill("#code", "000000").await;
    browser.click("form.sign-in button[type=submit]").await;
    browser
        .wait_text("#sign-in-error", "Wrong or already used code.")
        .await;
    browser.fill("#code", &totp_code(&secret, app.now())).await;
    browser.click("form.sign-in button[type=submit]").await;
    // Back on the page it signed out from, now with MFA on; and, signed in with a second
    // factor, the admin pages answer.
    browser.wait_text("#mfa-state", "On:").await;
    go(&browser, "#/overview").await;
    browser.wait_text("main h1", "Overview").await;
    browser.wait_text("main table", "current").await;
    browser.screenshot("mfa-signed-in").await;
    browser.quit().await;
}

#[tokio::test]
async fn an_admin_resets_a_users_second_factor_from_the_console() {
    let app = spawn_app().await;
    let admin_email = unique_email("console-reset");
    app.create_admin(&admin_email, ADMIN_PASSWORD).await;
    let email = unique_email("lost-phone");
    let signup = app.signup_ok(&email, PASSWORD).await;
    app.enrol_totp(access_of(&signup), PASSWORD).await;
    let id = user_id_of(&signup).to_owned();

    let browser = Browser::launch(1280, 800).await;
    sign_in(&browser, &app, &admin_email, ADMIN_PASSWORD).await;
    browser.wait_text("main h1", "Overview").await;
    go(&browser, &format!("#/user/{id}")).await;
    browser.wait_text("#mfa", "on").await;
    browser.click("#reset-mfa").await;
    confirm(&browser).await;
    browser.wait_text("#result", "second factor of").await;
    browser.wait_text("#mfa", "off").await;
    let body = app.login_ok(&email, PASSWORD).await;
    assert!(!body.user.mfa_enabled);
    browser.quit().await;
}
