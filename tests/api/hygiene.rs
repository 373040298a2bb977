//! Issue #10 hardening: look-alike emails are one account.

use reqwest::StatusCode;
use uuid::Uuid;

use crate::helpers::*;

fn local_part(tag: &str) -> String {
    format!("{tag}-{}", &Uuid::new_v4().simple().to_string()[..12])
}

// ------------------------------------------------------------------- emails

/// Signs up `first`, then shows that `twin` is the same account: signup is refused as
/// taken, login with the twin logs into it.
async fn assert_one_account(app: &TestApp, first: &str, twin: &str, stored: &str) {
    let signup = app.signup(first, PASSWORD).await;
    assert_eq!(
        signup["user"]["email"], stored,
        "the normalized form is returned"
    );
    let id = user_id_of(&signup).to_owned();

    let r = app.signup_response(twin, PASSWORD).await;
    assert_error(r, StatusCode::CONFLICT, "email_taken").await;

    let login = app.login(twin, PASSWORD).await;
    assert_eq!(user_id_of(&login), id, "{twin} logs into {first}'s account");
    assert_eq!(login["user"]["email"], stored);
}

#[tokio::test]
async fn a_full_width_domain_is_the_same_account() {
    let app = spawn_app().await;
    let local = local_part("victim");
    let plain = format!("{local}@example.com");
    assert_one_account(&app, &plain, &format!("{local}@ｅｘａｍｐｌｅ.com"), &plain).await;
}

#[tokio::test]
async fn a_u_label_and_its_punycode_are_the_same_account_either_way_round() {
    let app = spawn_app().await;
    let local = local_part("a");
    let a_label = format!("{local}@xn--bcher-kva.example");
    assert_one_account(&app, &a_label, &format!("{local}@bücher.example"), &a_label).await;

    let local = local_part("b");
    let a_label = format!("{local}@xn--bcher-kva.example");
    assert_one_account(&app, &format!("{local}@BÜCHER.example"), &a_label, &a_label).await;
}

#[tokio::test]
async fn admin_search_finds_an_account_by_either_spelling_of_its_domain() {
    let app = spawn_app().await;
    let admin = app.create_admin(&unique_email("searcher"), PASSWORD).await;
    let local = local_part("found");
    let signup = app
        .signup(&format!("{local}@xn--bcher-kva.example"), PASSWORD)
        .await;
    let id = user_id_of(&signup);
    for query in [
        format!("{local}@bücher.example"),
        format!("{local}@ｂüｃｈｅｒ.example"),
        format!("{local}@xn--bcher-kva.example"),
        local.clone(),
    ] {
        let url = reqwest::Url::parse_with_params(
            &app.url("/v1/admin/users"),
            [("email", query.as_str())],
        )
        .expect("url");
        let r = app
            .api_client
            .get(url)
            .bearer_auth(access_of(&admin))
            .send()
            .await
            .expect("search");
        let body = expect_json(r, StatusCode::OK).await;
        let users = body["users"].as_array().expect("users");
        assert_eq!(users.len(), 1, "{query}: {body}");
        assert_eq!(users[0]["id"], id, "{query}: {body}");
    }
}

#[tokio::test]
async fn a_domain_that_does_not_normalize_is_a_validation_error() {
    let app = spawn_app().await;
    // Not decodable as punycode, so no mailbox can have it.
    let email = format!("{}@xn--55555577.example", local_part("bad"));
    let r = app.signup_response(&email, PASSWORD).await;
    let body = assert_validation_failed(r, &["email"]).await;
    assert!(
        body.to_string().contains("domain"),
        "the message says what is wrong: {body}"
    );
    let r = app.login_response(&email, PASSWORD).await;
    assert_validation_failed(r, &["email"]).await;
}
