//! An operator's work in the console, end to end in headless Chromium.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

/// A user agent that would run script if the page ever put it into HTML.
const XSS: &str = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>Evil/1.0";

#[tokio::test]
async fn an_admin_finds_a_user_revokes_a_session_disables_them_reads_the_audit_and_signs_out() {
    let app = spawn_app().await;
    let admin_email = unique_email("console-admin");
    app.create_admin(&admin_email, ADMIN_PASSWORD).await;
    let victim = unique_email("victim");
    let first = app.signup_ok(&victim, PASSWORD).await;
    let victim_id = user_id_of(&first).to_owned();
    // A second session from a browser whose user agent carries markup.
    let evil = reqwest::Client::builder().user_agent(XSS).build().unwrap();
    let r = evil
        .post(app.url("/v1/login"))
        .json(&json!({ "email": victim, "password": PASSWORD }))
        .send()
        .await
        .unwrap();
    let evil_session = expect_json(r, StatusCode::OK).await;
    let evil_sid = sid_of(&evil_session);

    let browser = Browser::launch(1280, 800).await;
    sign_in(&browser, &app, &admin_email, ADMIN_PASSWORD).await;
    browser.wait_text("main h1", "Overview").await;
    browser.find("svg.chart polyline").await;
    browser.wait_text("main table", "current").await;
    browser.screenshot("overview").await;

    // Search by prefix, open the user.
    browser.click("a[data-nav=users]").await;
    browser.fill("#user-search", &victim[..10]).await;
    browser.keys("\u{E007}").await;
    browser.wait_text("#results", &victim).await;
    browser.screenshot("users").await;
    browser
        .click(&format!("a[href='#/user/{victim_id}']"))
        .await;
    browser.wait_text("main h1", &victim).await;
    browser.wait_text("main", "Last login").await;

    // The user agent is shown as text: nothing ran, no element was made from it.
    let row = format!("tr[data-session='{evil_sid}']");
    let shown = browser.text(&format!("{row} td.ua")).await;
    assert_eq!(shown, XSS, "the user agent is shown verbatim");
    let leaked = browser
        .run(
            "return [window.__xss ?? null, document.querySelectorAll('main img, main script').length]",
            json!([]),
        )
        .await;
    assert_eq!(
        leaked,
        json!([null, 0]),
        "markup in a user agent ran or rendered"
    );
    browser.screenshot("user").await;

    // Revoke that one session, behind a confirmation.
    browser.click(&format!("{row} button")).await;
    confirm(&browser).await;
    browser
        .wait_text("#result", "The session is revoked.")
        .await;
    browser.wait_text(&row, "revoked (admin)").await;
    let admin_tokens = app.login_ok(&admin_email, ADMIN_PASSWORD).await;
    let sessions = app
        .admin_sessions_ok(access_of(&admin_tokens), &victim_id)
        .await;
    let revoked = sessions
        .iter()
        .find(|s| s["id"] == evil_sid.as_str())
        .unwrap();
    assert_eq!(revoked["revoked_reason"], "admin", "{revoked}");
    let refused = app
        .post_refresh(evil_session["refresh_token"].as_str().unwrap())
        .await;
    assert_eq!(
        refused.status(),
        StatusCode::UNAUTHORIZED,
        "revoked over the API too"
    );

    // Cancel leaves the user alone; confirm disables them.
    // Escape cancels, as in any modal dialog.
    browser.click("#toggle-disabled").await;
    browser.find("dialog[open]").await;
    browser.keys("\u{E00C}").await;
    browser.wait_text("#result", "Cancelled.").await;
    browser.click("#toggle-disabled").await;
    confirm(&browser).await;
    browser.wait_text("#result", "is now disabled").await;
    browser.wait_text("#status", "disabled").await;
    browser.screenshot("user-disabled").await;
    assert_error(
        app.post_login(&victim, PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;

    // The audit view shows the change, filtered to this user...
    browser.click("a.button[href^='#/audit']").await;
    browser.wait_text("main h1", "Audit log").await;
    let audit = browser.wait_text("#results table", "user_updated").await;
    assert!(audit.contains("disabled=true"), "{audit}");
    // ...and the revocation of one session, which the audit log records by session, not
    // by user, among all events.
    browser.click("a[data-nav=audit]").await;
    let audit = browser.wait_text("#results table", "session_revoked").await;
    assert!(
        audit.contains(&format!("session {}", &evil_sid[..8])),
        "{audit}"
    );
    browser.screenshot("audit").await;

    // Sign out: back to the form, and the session is revoked on the server.
    browser.click("#sign-out").await;
    browser.find("form.sign-in").await;
    browser.wait_text("#banner", "Signed out").await;
    let admin_id = user_id_of(&admin_tokens).to_owned();
    let sessions = app
        .admin_sessions_ok(access_of(&admin_tokens), &admin_id)
        .await;
    let console_sessions: Vec<&Value> = sessions
        .iter()
        .filter(|s| {
            s["user_agent"]
                .as_str()
                .is_some_and(|ua| ua.contains("Chrome"))
        })
        .collect();
    assert_eq!(console_sessions.len(), 1, "{sessions:?}");
    assert_eq!(console_sessions[0]["revoked_reason"], "logout");
    let stored = browser
        .run(
            "return [localStorage.length, sessionStorage.length, document.cookie]",
            json!([]),
        )
        .await;
    assert_eq!(
        stored,
        json!([0, 0, ""]),
        "nothing was stored in the browser"
    );
    browser.screenshot("sign-in").await;
    browser.quit().await;
}

#[tokio::test]
async fn a_non_admin_sees_not_an_admin_and_nothing_else() {
    let app = spawn_app().await;
    let email = unique_email("plain");
    let user = app.signup_ok(&email, PASSWORD).await;
    let browser = Browser::launch(1280, 800).await;

    // With the keyboard alone: the email field has focus, Tab, Enter.
    browser.goto(&app.url("/admin/")).await;
    browser.find("#email").await;
    browser.keys(&email).await;
    browser.keys("\u{E004}").await;
    browser.keys(PASSWORD).await;
    browser.keys("\u{E007}").await;

    browser.wait_text("#sign-in-error", "Not an admin").await;
    assert!(
        browser.exists("header#bar[hidden]").await,
        "no navigation for a non-admin"
    );
    browser.screenshot("not-an-admin").await;
    // The session the refused login opened was closed again.
    let sessions = app.my_sessions_ok(access_of(&user)).await;
    assert_eq!(
        sessions.len(),
        1,
        "only the signup's session is live: {sessions:?}"
    );
    browser.quit().await;
}

#[tokio::test]
async fn the_audit_log_pages_and_a_reuse_detection_stands_out_at_phone_width() {
    let app = spawn_app().await;
    let admin_email = unique_email("pager");
    let admin = app.create_admin(&admin_email, ADMIN_PASSWORD).await;
    let email = unique_email("stolen");
    let tokens = app.signup_ok(&email, PASSWORD).await;
    // A replay of a spent refresh token, past the grace: reuse.
    app.refresh_ok(refresh_of(&tokens)).await;
    app.advance(std::time::Duration::from_secs(60));
    app.post_refresh(refresh_of(&tokens)).await;
    for _ in 0..55 {
        app.post_login(&unique_email("nobody"), PASSWORD).await;
    }

    let browser = Browser::launch(390, 844).await;
    sign_in(&browser, &app, &admin_email, ADMIN_PASSWORD).await;
    browser.wait_text("main h1", "Overview").await;
    browser.screenshot("overview-phone").await;
    // A reload forgets the tokens: that is the point of keeping them in memory. Leaving
    // the page (a reload, a closed tab) also logs its session out on the server.
    browser.run("location.reload()", json!([])).await;
    browser.find("form.sign-in").await;
    // The logout is a keepalive request the unloading page sends; give it a moment.
    let started = std::time::Instant::now();
    loop {
        let left = console_session(&app, &admin).await;
        if left["revoked_reason"] == "logout" {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "leaving the page did not log out: {left}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    sign_in(&browser, &app, &admin_email, ADMIN_PASSWORD).await;
    browser.wait_text("main h1", "Overview").await;
    browser.click("a[data-nav=audit]").await;
    browser.wait_text("#results table", "login_failed").await;
    let rows = browser
        .run(
            "return document.querySelectorAll('#results tbody tr').length",
            json!([]),
        )
        .await;
    assert_eq!(rows, 50, "one page");
    browser.click("#older").await;
    let older = browser.wait_text("#results", "reuse detected").await;
    assert!(older.contains("reuse detection"), "the page warns: {older}");
    assert!(browser.exists("tr.reuse").await, "the row is marked");
    browser.screenshot("audit-phone").await;
    let widths = browser
        .run(
            "return [document.documentElement.scrollWidth, window.innerWidth]",
            json!([]),
        )
        .await;
    assert!(
        widths[0].as_i64() <= widths[1].as_i64(),
        "the page does not scroll sideways at phone width (tables scroll inside): {widths}"
    );
    browser.quit().await;
}

#[tokio::test]
async fn the_console_refreshes_in_the_background_and_signs_out_when_its_session_is_revoked() {
    // The shortest access-token lifetime allowed: the console refreshes after 30 s.
    let app = spawn_app_with(|s| s.tokens.access_ttl = std::time::Duration::from_secs(60)).await;
    let email = unique_email("refresher");
    let admin = app.create_admin(&email, ADMIN_PASSWORD).await;
    let browser = Browser::launch(1280, 800).await;
    sign_in(&browser, &app, &email, ADMIN_PASSWORD).await;
    browser.wait_text("main h1", "Overview").await;
    let signed_in_at = app.now();
    // The service's clock moves on, so a refresh shows as a later `last_used_at`.
    app.advance(std::time::Duration::from_secs(20));

    let started = std::time::Instant::now();
    loop {
        let session = console_session(&app, &admin).await;
        let used = chrono::DateTime::parse_from_rfc3339(session["last_used_at"].as_str().unwrap())
            .unwrap();
        if used.timestamp() > signed_in_at.timestamp() {
            break;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(50),
            "no background refresh within 50 s: {session}"
        );
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }

    // Past the access token's expiry (by the service's clock): the next call is refused
    // with invalid_token, and the console refreshes and carries on.
    app.advance(std::time::Duration::from_secs(120));
    browser.click("a[data-nav=users]").await;
    browser.wait_text("#results", &email).await;

    // Revoked from elsewhere: the console signs out and says why.
    let admin = app.login_ok(&email, ADMIN_PASSWORD).await;
    let session = console_session(&app, &admin).await;
    let r = app
        .delete_with_token(
            &format!("/v1/admin/sessions/{}", session["id"].as_str().unwrap()),
            access_of(&admin),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    browser.click("a[data-nav=audit]").await;
    browser.wait_text("#banner", "session has ended").await;
    browser.find("form.sign-in").await;
    browser.quit().await;
}

#[tokio::test]
async fn the_console_says_it_is_retrying_when_the_service_refuses_for_now() {
    // Enough reads for the console's files and its overview, then the bucket is empty.
    let app = spawn_app_with(|s| {
        s.rate_limits.enabled = true;
        s.rate_limits.reads = gatehouse::config::Tier {
            per_minute: 1,
            burst: 11,
        };
    })
    .await;
    let email = unique_email("limited");
    app.create_admin(&email, ADMIN_PASSWORD).await;
    let browser = Browser::launch(1280, 800).await;
    sign_in(&browser, &app, &email, ADMIN_PASSWORD).await;
    browser.wait_text("main h1", "Overview").await;
    browser.click("a[data-nav=users]").await;
    browser.find("#user-search").await;
    browser.fill("#user-search", "limited").await;
    browser.keys("\u{E007}").await;

    browser.wait_text("#banner", "retrying").await;
    browser.screenshot("retrying").await;
    browser.quit().await;
}
