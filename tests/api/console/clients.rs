//! The Clients page: an admin creates a service client, sees its secret once, gives it a
//! new one and deletes it, in headless Chromium.

use reqwest::StatusCode;

use super::*;

#[tokio::test]
async fn an_admin_creates_rotates_and_deletes_a_service_client_in_the_console() {
    let app = spawn_app().await;
    let admin_email = unique_email("console-clients");
    app.create_admin(&admin_email, ADMIN_PASSWORD).await;

    let browser = Browser::launch(1280, 800).await;
    sign_in(&browser, &app, &admin_email, ADMIN_PASSWORD).await;
    browser.wait_text("main h1", "Overview").await;
    browser.click("a[data-nav=clients]").await;
    browser.wait_text("main h1", "Service clients").await;
    browser
        .wait_text("#clients", "No service clients yet.")
        .await;

    // A scope with a quote is refused, field by field, and nothing is stored.
    browser.fill("#client-name", "billing").await;
    browser
        .fill("#client-scopes", "introspect bad\"scope")
        .await;
    browser.click("form.card button[type=submit]").await;
    browser.wait_text("#client-error", "Scopes").await;

    browser.fill("#client-scopes", "introspect").await;
    browser.click("form.card button[type=submit]").await;
    browser.wait_text("#clients", "billing").await;
    let id = browser.text("#shown-client-id").await;
    let secret = browser.text("#shown-secret").await;
    assert_eq!(secret.len(), 43, "{secret}");
    browser.screenshot("clients").await;
    let token = app
        .api_client
        .post(app.url("/oauth/token"))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("request");
    assert_eq!(token.status(), StatusCode::OK);

    // A new secret, behind a confirmation.
    browser.click("#clients tr button").await;
    confirm(&browser).await;
    browser
        .wait_text("#client-secret", "New secret for billing")
        .await;
    let rotated = browser.text("#shown-secret").await;
    assert_ne!(rotated, secret);

    // Deleted: the list is empty again and the secret opens nothing.
    browser.click("#clients tr button.danger").await;
    confirm(&browser).await;
    browser
        .wait_text("#clients", "No service clients yet.")
        .await;
    let refused = app
        .api_client
        .post(app.url("/oauth/token"))
        .basic_auth(&id, Some(&rotated))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect("request");
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
}
