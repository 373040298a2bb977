//! What operators found rough in the console, each fixed and held by a browser test:
//! late answers, a second sign-in, field errors, and the polish seen in screenshots.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::*;

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
