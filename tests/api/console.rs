//! The admin console at `/admin/`: its headers over HTTP, the rules its files keep, and
//! end-to-end runs in headless Chromium against a real server.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::kit::browser::Browser;

const ADMIN_PASSWORD: &str = "Adm1n!Passw0rd-long";
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; font-src 'none'; object-src 'none'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";
const FILES: &[(&str, &str)] = &[
    ("", "text/html; charset=utf-8"),
    ("index.html", "text/html; charset=utf-8"),
    ("app.js", "text/javascript; charset=utf-8"),
    ("api.js", "text/javascript; charset=utf-8"),
    ("dom.js", "text/javascript; charset=utf-8"),
    ("pages.js", "text/javascript; charset=utf-8"),
    ("chart.js", "text/javascript; charset=utf-8"),
    ("console.css", "text/css; charset=utf-8"),
    ("favicon.svg", "image/svg+xml"),
];

fn console_file(name: &str) -> String {
    let path = format!("{}/src/http/console/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test]
async fn every_console_file_is_served_with_the_strict_csp_and_safe_headers() {
    let app = spawn_app().await;
    for (name, content_type) in FILES {
        let r = app.get(&format!("/admin/{name}")).await;
        assert_eq!(r.status(), StatusCode::OK, "/admin/{name}");
        let h = |n: &str| header(&r, n);
        assert_eq!(
            h("content-type").as_deref(),
            Some(*content_type),
            "/admin/{name}"
        );
        assert_eq!(
            h("content-security-policy").as_deref(),
            Some(CSP),
            "/admin/{name}"
        );
        assert_eq!(
            r.headers()
                .get_all("content-security-policy")
                .iter()
                .count(),
            1,
            "the API's `default-src 'none'` is not sent as a second policy"
        );
        assert_eq!(h("x-content-type-options").as_deref(), Some("nosniff"));
        assert_eq!(h("x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(h("referrer-policy").as_deref(), Some("no-referrer"));
        assert_eq!(
            h("cross-origin-opener-policy").as_deref(),
            Some("same-origin")
        );
        assert_eq!(h("cache-control").as_deref(), Some("no-cache"));
        assert_eq!(h("set-cookie"), None, "the console never uses cookies");
    }
    // Metrics count the console by route pattern, not by file name or path.
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains(r#"route="/admin/{file}""#), "{metrics}");
    assert!(metrics.contains(r#"route="/admin/""#), "{metrics}");
    // The API keeps its own policy.
    let api = app.get("/healthz").await;
    assert_eq!(
        header(&api, "content-security-policy").as_deref(),
        Some("default-src 'none'; frame-ancestors 'none'; base-uri 'none'")
    );
}

#[tokio::test]
async fn the_console_redirects_its_bare_path_and_404s_unknown_files() {
    let app = spawn_app().await;
    let r = app.get("/admin").await;
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(&r, "location").as_deref(), Some("/admin/"));
    for path in [
        "/admin/nope.js",
        "/admin/..%2fCargo.toml",
        "/admin/console.rs",
    ] {
        assert_error(app.get(path).await, StatusCode::NOT_FOUND, "not_found").await;
    }
    let r = app
        .api_client
        .post(app.url("/admin/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn the_console_files_are_rate_limited_like_reads() {
    let app = spawn_app_with(|s| {
        s.rate_limits.enabled = true;
        s.rate_limits.reads = gatehouse::config::Tier {
            per_minute: 1,
            burst: 2,
        };
    })
    .await;
    assert_eq!(app.get("/admin/").await.status(), StatusCode::OK);
    assert_eq!(app.get("/admin/app.js").await.status(), StatusCode::OK);
    let limited = app.get("/admin/api.js").await;
    assert!(header(&limited, "retry-after").is_some());
    assert_error(limited, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
}

#[tokio::test]
async fn gatehouse_admin_console_off_serves_nothing_under_admin() {
    let app = spawn_app_with(|s| s.http.admin_console = false).await;
    for (name, _) in FILES {
        let r = app.get(&format!("/admin/{name}")).await;
        assert_error(r, StatusCode::NOT_FOUND, "not_found").await;
    }
    assert_error(app.get("/admin").await, StatusCode::NOT_FOUND, "not_found").await;
    // The API the console would have used still answers.
    assert_eq!(app.get("/healthz").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn the_console_files_keep_tokens_in_memory_and_data_out_of_html() {
    let html = console_file("index.html");
    assert!(!html.contains("style="), "no inline style in index.html");
    assert!(
        html.matches("<script").count() == html.matches("<script type=\"module\" src=").count(),
        "every script is a file"
    );
    assert!(!html.contains(" on"), "no inline event handlers: {html}");
    for name in ["app.js", "api.js", "dom.js", "pages.js", "chart.js"] {
        // The SVG namespace is a name, not an address anything is fetched from.
        let js = console_file(name).replace("\"http://www.w3.org/2000/svg\"", "");
        for banned in [
            "innerHTML",
            "outerHTML",
            "insertAdjacentHTML",
            "document.write",
            "localStorage",
            "sessionStorage",
            "document.cookie",
            "indexedDB",
            "eval(",
            "http://",
            "https://",
        ] {
            assert!(!js.contains(banned), "{name} uses {banned}");
        }
    }
    let css = console_file("console.css");
    assert!(
        !css.contains("@import") && !css.contains("url("),
        "the CSS fetches nothing"
    );
}

// ---------------------------------------------------------------- in the browser

/// Signs in through the page's form.
async fn sign_in(browser: &Browser, app: &TestApp, email: &str, password: &str) {
    browser.goto(&app.url("/admin/")).await;
    browser.fill("#email", email).await;
    browser.fill("#password", password).await;
    browser.click("form.sign-in button[type=submit]").await;
}

/// Confirms the page's confirmation dialog.
async fn confirm(browser: &Browser) {
    browser.find("dialog[open] #confirm-ok").await;
    browser.click("#confirm-ok").await;
}

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

/// The console's session (the one Chromium opened) among the admin's own.
async fn console_session(app: &TestApp, admin: &Tokens) -> Value {
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

// ---------------------------------------------------------------- issue #17, item 6

/// Fills and submits the sign-in form on the page as it is (no navigation first).
async fn submit_sign_in(browser: &Browser, email: &str, password: &str) {
    browser.fill("#email", email).await;
    browser.fill("#password", password).await;
    browser.click("form.sign-in button[type=submit]").await;
}

/// `location.hash = hash`, as a link or a typed URL would.
async fn go(browser: &Browser, hash: &str) {
    browser
        .run("location.hash = arguments[0]", json!([hash]))
        .await;
}

const SECOND: std::time::Duration = std::time::Duration::from_secs(1);
const FIVE_SECONDS: std::time::Duration = std::time::Duration::from_secs(5);

#[tokio::test]
async fn a_late_answer_never_paints_over_the_page_the_admin_moved_to() {
    let app = spawn_app().await;
    let admin_email = unique_email("late");
    app.create_admin(&admin_email, ADMIN_PASSWORD).await;
    let a_email = unique_email("user-a");
    let a_id = user_id_of(&app.signup_ok(&a_email, PASSWORD).await).to_owned();
    let b_email = unique_email("user-b");
    let b_id = user_id_of(&app.signup_ok(&b_email, PASSWORD).await).to_owned();
    let browser = Browser::launch(1280, 800).await;

    // The overview's stats answer is slow; the admin moves on to Users meanwhile.
    browser.goto(&app.url("/admin/")).await;
    browser.find("form.sign-in").await;
    browser.hold_responses("/v1/admin/stats").await;
    submit_sign_in(&browser, &admin_email, ADMIN_PASSWORD).await;
    browser.wait_held("/v1/admin/stats", 1).await;
    browser.click("a[data-nav=users]").await;
    browser.wait_text("#results", &a_email).await;
    assert_eq!(browser.release_responses("/v1/admin/stats").await, 1);
    let users_kept = browser
        .stays_true(
            "return document.querySelector('main h1')?.textContent === 'Users'
                 && !!document.getElementById('results')
                 && !document.querySelector('svg.chart')",
            SECOND,
        )
        .await;

    // User A's page is slow; the admin opens user B meanwhile.
    let a_path = format!("/v1/admin/users/{a_id}");
    browser.hold_responses(&a_path).await;
    go(&browser, &format!("#/user/{a_id}")).await;
    browser.wait_held(&a_path, 2).await;
    go(&browser, &format!("#/user/{b_id}")).await;
    browser.wait_text("main h1", &b_email).await;
    browser.find("#toggle-disabled").await;
    assert_eq!(browser.release_responses(&a_path).await, 2);
    let b_kept = browser
        .stays_true(
            &format!(
                "return document.querySelector('main h1')?.textContent === {}
                     && document.querySelectorAll('main h1').length === 1
                     && location.hash === {}",
                json!(b_email),
                json!(format!("#/user/{b_id}"))
            ),
            SECOND,
        )
        .await;
    let shown = browser
        .run(
            "return document.querySelector('main h1')?.textContent",
            json!([]),
        )
        .await;
    assert_eq!(
        (users_kept, b_kept),
        (true, true),
        "a late answer replaced the page the admin had moved to (Users kept, user B kept); \
         the heading now reads {shown}"
    );
    browser.quit().await;
}

#[tokio::test]
async fn signing_out_and_in_again_returns_to_the_page_and_never_leaves_two_sessions() {
    let app = spawn_app().await;
    let email = unique_email("again");
    let admin = app.create_admin(&email, ADMIN_PASSWORD).await;
    let browser = Browser::launch(1280, 800).await;
    let heading = "return document.querySelector('main h1')?.textContent ?? ''";
    let signed_in = "return !document.querySelector('form.sign-in')
                         && !!document.querySelector('main h1')";

    // A reload forgot the tokens while the admin was on Users: signing in goes back there.
    browser.goto(&app.url("/admin/#/users")).await;
    submit_sign_in(&browser, &email, ADMIN_PASSWORD).await;
    browser.wait_until(signed_in, FIVE_SECONDS).await;
    let landed = browser.run(heading, json!([])).await;

    // Signing out is what the admin asked for: a notice, not an error.
    browser.click("a[data-nav=audit]").await;
    browser.wait_text("main h1", "Audit log").await;
    browser.click("#sign-out").await;
    browser.find("form.sign-in").await;
    browser.wait_text("#banner", "Signed out").await;
    let banner = browser
        .run(
            "return document.getElementById('banner').className",
            json!([]),
        )
        .await;

    // Back after signing in again shows a page of the console, not the sign-in form.
    submit_sign_in(&browser, &email, ADMIN_PASSWORD).await;
    browser.wait_until(signed_in, FIVE_SECONDS).await;
    // Back renders a page anew: wait for a heading other than the one shown now.
    browser
        .run(
            "window.__shown = document.querySelector('main h1'); history.back()",
            json!([]),
        )
        .await;
    browser
        .wait_until(
            "const h1 = document.querySelector('main h1');
             return !!h1 && h1 !== window.__shown",
            FIVE_SECONDS,
        )
        .await;
    let back_shows_sign_in = browser.exists("form.sign-in").await;

    // Signing in once more while signed in (the form, had it shown, or any other way)
    // replaces the session: the one it replaces is logged out, not left live.
    let replaced = console_sessions(&app, &admin).await;
    let live: Vec<&Value> = replaced
        .iter()
        .filter(|s| s["revoked_at"].is_null())
        .collect();
    assert_eq!(live.len(), 1, "one live console session: {replaced:?}");
    let old_id = live[0]["id"].clone();
    let again = browser
        .run_async(
            "const done = arguments[arguments.length - 1];
             import('/admin/api.js')
               .then((api) => api.signIn(arguments[0], arguments[1]))
               .then((user) => done(user.email), (e) => done(`failed: ${e.message}`));",
            json!([email, ADMIN_PASSWORD]),
        )
        .await;
    assert_eq!(again, json!(email));
    let sessions = console_sessions(&app, &admin).await;
    let old = sessions.iter().find(|s| s["id"] == old_id).unwrap();
    let live_after = sessions
        .iter()
        .filter(|s| s["revoked_at"].is_null())
        .count();

    assert_eq!(
        json!({
            "lands on after signing in": landed,
            "banner after signing out": banner,
            "Back shows the sign-in form": back_shows_sign_in,
            "the replaced session ended by": old["revoked_reason"],
            "live console sessions": live_after,
        }),
        json!({
            "lands on after signing in": "Users",
            "banner after signing out": "banner info",
            "Back shows the sign-in form": false,
            "the replaced session ended by": "logout",
            "live console sessions": 1,
        })
    );
    browser.quit().await;
}

/// Every session Chromium opened for this admin.
async fn console_sessions(app: &TestApp, admin: &Tokens) -> Vec<Value> {
    app.admin_sessions_ok(access_of(admin), user_id_of(admin))
        .await
        .into_iter()
        .filter(|s| {
            s["user_agent"]
                .as_str()
                .is_some_and(|ua| ua.contains("Chrome"))
        })
        .collect()
}

#[tokio::test]
async fn a_validation_failure_shows_each_fields_message() {
    let app = spawn_app().await;
    let email = unique_email("fields");
    app.create_admin(&email, ADMIN_PASSWORD).await;
    let browser = Browser::launch(1280, 800).await;

    browser.goto(&app.url("/admin/")).await;
    submit_sign_in(&browser, "not-an-email", ADMIN_PASSWORD).await;
    browser
        .wait_until(
            "return document.getElementById('sign-in-error').textContent !== ''",
            FIVE_SECONDS,
        )
        .await;
    let at_sign_in = browser.text("#sign-in-error").await;
    browser.screenshot("sign-in-invalid-email").await;

    submit_sign_in(&browser, &email, ADMIN_PASSWORD).await;
    browser.find("header#bar:not([hidden])").await;
    browser.click("a[data-nav=audit]").await;
    browser.fill("#audit-user", &email).await;
    browser.keys("\u{E007}").await;
    browser.find("#results .error").await;
    let in_audit = browser.text("#results").await;
    browser.screenshot("audit-invalid-user-id").await;
    assert!(
        at_sign_in.contains("Email is not a valid email address")
            && in_audit.contains("User id must be a UUID"),
        "each field's message is shown; sign-in reads {at_sign_in:?}, the audit filter {in_audit:?}"
    );
    browser.quit().await;
}

/// The tick labels of the chart: y (anchored at the end), then x (anchored in the middle).
async fn chart_ticks(browser: &Browser) -> (Vec<i64>, Vec<String>) {
    let ticks = browser
        .run(
            "const of = (anchor) => [...document.querySelectorAll(`svg.chart text[text-anchor=${anchor}]`)]
                 .map((t) => t.textContent);
             return [of('end'), of('middle')];",
            json!([]),
        )
        .await;
    let ys = ticks[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().parse().unwrap())
        .collect();
    let xs = ticks[1]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    (ys, xs)
}

/// 1, 2 or 5 times a power of ten.
fn round_step(step: i64) -> bool {
    let mut s = step;
    while s >= 10 && s % 10 == 0 {
        s /= 10;
    }
    step > 0 && matches!(s, 1 | 2 | 5)
}

#[tokio::test]
async fn the_console_polish_chart_ticks_audit_emails_revoked_times_and_revoke_all() {
    let app = spawn_app().await;
    let admin_email = unique_email("polish");
    let admin = app.create_admin(&admin_email, ADMIN_PASSWORD).await;
    // Seven failed logins this hour: a maximum that halves unevenly.
    for _ in 0..7 {
        app.post_login(&unique_email("nobody"), PASSWORD).await;
    }
    // One session revoked a while after it began, one live.
    let email = unique_email("two-sessions");
    let first = app.signup_ok(&email, PASSWORD).await;
    let user_id = user_id_of(&first).to_owned();
    app.login_ok(&email, PASSWORD).await;
    app.advance(std::time::Duration::from_secs(90));
    let r = app
        .delete_with_token(
            &format!("/v1/admin/sessions/{}", sid_of(&first)),
            access_of(&admin),
            None,
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let revoked_at = app
        .admin_sessions_ok(access_of(&admin), &user_id)
        .await
        .into_iter()
        .find(|s| s["id"] == sid_of(&first).as_str())
        .unwrap()["revoked_at"]
        .clone();
    // A user with no live session, disabled by the admin (an audit entry with an actor).
    let idle_email = unique_email("no-live");
    let idle = app.signup_ok(&idle_email, PASSWORD).await;
    let idle_id = user_id_of(&idle).to_owned();
    let r = app
        .api_client
        .patch(app.url(&format!("/v1/admin/users/{idle_id}")))
        .bearer_auth(access_of(&admin))
        .json(&json!({ "disabled": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A user who deleted their account: the audit log keeps only the id.
    let gone = app.signup_ok(&unique_email("gone"), PASSWORD).await;
    let gone_id = user_id_of(&gone).to_owned();
    let r = app
        .delete_with_token(
            "/v1/me",
            access_of(&gone),
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);

    let browser = Browser::launch(1280, 800).await;
    sign_in(&browser, &app, &admin_email, ADMIN_PASSWORD).await;
    browser.find("svg.chart").await;
    browser.screenshot("polish-overview").await;
    let (ys, xs) = chart_ticks(&browser).await;
    let steps: Vec<i64> = ys.windows(2).map(|w| w[1] - w[0]).collect();
    let even_round_ticks = ys.first() == Some(&0)
        && ys.last().is_some_and(|top| *top >= 7)
        && !steps.is_empty()
        && steps.iter().all(|s| *s == steps[0] && round_step(*s));
    let mut distinct = xs.clone();
    distinct.sort();
    distinct.dedup();
    let distinct_hours = xs.len() >= 3 && distinct.len() == xs.len();

    // The audit log names users by email, linked; a deleted user by id.
    go(&browser, "#/audit").await;
    browser.wait_text("#results table", "account_deleted").await;
    let cells = "const row = [...document.querySelectorAll('#results tbody tr')]
             .find((r) => r.cells[1].textContent === arguments[0]);
         const cell = (i) => ({ text: row.cells[i].textContent,
             href: row.cells[i].querySelector('a')?.getAttribute('href') ?? null });
         return { user: cell(3), actor: cell(4) };";
    let resolved = browser
        .wait_until(
            &format!(
                "return [...document.querySelectorAll('#results tbody td')]
                     .some((td) => td.textContent === {})",
                json!(idle_email)
            ),
            FIVE_SECONDS,
        )
        .await;
    let updated = browser.run(cells, json!(["user_updated"])).await;
    let deleted = browser.run(cells, json!(["account_deleted"])).await;
    browser.screenshot("polish-audit").await;

    // A revoked session says when; Revoke all waits for a live session.
    go(&browser, &format!("#/user/{user_id}")).await;
    browser.find("#revoke-all").await;
    let revoked_time = browser
        .run(
            "return document.querySelector(`tr[data-session='${arguments[0]}'] td:first-child time`)
                 ?.getAttribute('datetime') ?? null",
            json!([sid_of(&first)]),
        )
        .await;
    let revoke_all = "return document.getElementById('revoke-all').disabled";
    let enabled_with_live = browser.run(revoke_all, json!([])).await == false;
    browser.screenshot("polish-user").await;
    go(&browser, &format!("#/user/{idle_id}")).await;
    browser.wait_text("main h1", &idle_email).await;
    let disabled_without_live = browser.run(revoke_all, json!([])).await == true;

    assert_eq!(
        json!({
            "y ticks even and round": [even_round_ticks, ys],
            "x labels distinct": [distinct_hours, xs],
            "emails resolved": resolved,
            "user_updated row": updated,
            "deleted user shown by id": deleted["user"]["text"].as_str().is_some_and(|t| t.contains(&gone_id[..8])),
            "revoked session's time": revoked_time,
            "revoke all enabled with a live session": enabled_with_live,
            "revoke all disabled without one": disabled_without_live,
        }),
        json!({
            "y ticks even and round": [true, ys],
            "x labels distinct": [true, xs],
            "emails resolved": true,
            "user_updated row": {
                "user": { "text": idle_email, "href": format!("#/user/{idle_id}") },
                "actor": { "text": admin_email, "href": format!("#/user/{}", user_id_of(&admin)) },
            },
            "deleted user shown by id": true,
            "revoked session's time": revoked_at,
            "revoke all enabled with a live session": true,
            "revoke all disabled without one": true,
        })
    );
    browser.quit().await;
}

#[tokio::test]
async fn at_phone_width_an_email_heading_wraps_between_words_and_revoke_stays_in_view() {
    let app = spawn_app().await;
    let admin_email = unique_email("phone");
    app.create_admin(&admin_email, ADMIN_PASSWORD).await;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let email = format!("margaret.hamilton-{tag}@apollo-guidance.example.com");
    let user = app.signup_ok(&email, PASSWORD).await;

    let browser = Browser::launch(390, 844).await;
    sign_in(&browser, &app, &admin_email, ADMIN_PASSWORD).await;
    browser.wait_text("main h1", "Overview").await;
    go(&browser, &format!("#/user/{}", user_id_of(&user))).await;
    browser.find("tr.live button").await;
    browser.screenshot("user-phone").await;

    // Where each line of the heading starts, and the character before it.
    let breaks = browser
        .run(
            "const h1 = document.querySelector('main h1');
             const text = h1.textContent;
             const walker = document.createTreeWalker(h1, NodeFilter.SHOW_TEXT);
             const tops = [];
             for (let node; (node = walker.nextNode()); ) {
               for (let i = 0; i < node.length; i++) {
                 const range = document.createRange();
                 range.setStart(node, i);
                 range.setEnd(node, i + 1);
                 tops.push(range.getBoundingClientRect().top);
               }
             }
             const after = [];
             for (let i = 1; i < tops.length; i++) {
               if (tops[i] > tops[i - 1] + 4) after.push(text.slice(Math.max(0, i - 3), i) + '|' + text.slice(i, i + 3));
             }
             return after;",
            json!([]),
        )
        .await;
    let breaks: Vec<String> = serde_json::from_value(breaks).unwrap();
    let sensible = !breaks.is_empty()
        && breaks.iter().all(|b| {
            let before = b.split('|').next().unwrap_or_default();
            before.ends_with(['.', '@', '-', '_'])
        });

    let button = browser
        .run(
            "const b = document.querySelector('tr.live button');
             const r0 = b.getBoundingClientRect();
             window.scrollBy(0, r0.top - innerHeight / 2);
             const r = b.getBoundingClientRect();
             const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
             return { left: r.left, right: r.right, width: innerWidth, on_top: b.contains(hit) };",
            json!([]),
        )
        .await;
    let in_view = button["left"].as_f64().unwrap() >= 0.0
        && button["right"].as_f64().unwrap() <= button["width"].as_f64().unwrap()
        && button["on_top"] == true;
    browser.screenshot("user-phone-sessions").await;
    let widths = browser
        .run(
            "return [document.documentElement.scrollWidth, window.innerWidth]",
            json!([]),
        )
        .await;
    assert!(
        sensible && in_view && widths[0].as_i64() <= widths[1].as_i64(),
        "at 390 px the heading breaks only after . @ - _ (it breaks at {breaks:?}), \
         the live session's Revoke button is on screen ({button}), and the page does not \
         scroll sideways ({widths})"
    );
    browser.quit().await;
}
