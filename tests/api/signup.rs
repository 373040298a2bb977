use gatehouse::domain::Email;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{
    PASSWORD, access_of, assert_error, assert_token_response, assert_validation_failed, header,
    jwt_claims, spawn_app, unique_email,
};

#[both_backends]
async fn signup_returns_201_and_a_token_response() {
    let app = spawn_app().await;
    let email = unique_email("signup");

    let response = app.post_signup(&email, PASSWORD).await;

    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("no-store")
    );
    assert_eq!(header(&response, "pragma").as_deref(), Some("no-cache"));
    let body: serde_json::Value = response.json().await.unwrap();
    assert_token_response(&body, &email, "user");
    assert_eq!(body["user"]["disabled"], false);
    assert_eq!(body["refresh_expires_in"], 43_200);
    // The access token belongs to the new user.
    let claims = jwt_claims(access_of(&body));
    assert_eq!(claims["sub"], body["user"]["id"]);
    assert_eq!(claims["role"], "user");
}

#[both_backends]
async fn signup_token_works_on_me() {
    let app = spawn_app().await;
    let email = unique_email("signup-me");
    let tokens = app.signup_ok(&email, PASSWORD).await;

    let response = app.get_me(access_of(&tokens)).await;

    assert_eq!(response.status(), StatusCode::OK);
    let me: serde_json::Value = response.json().await.unwrap();
    assert_eq!(me["email"], email.as_str());
    assert_eq!(me["id"], tokens["user"]["id"]);
}

#[both_backends]
async fn signup_normalizes_the_email() {
    let app = spawn_app().await;
    let email = unique_email("Norm");
    let messy = format!("  {}  ", email.to_uppercase());

    let tokens = app.signup_ok(&messy, PASSWORD).await;

    assert_eq!(tokens["user"]["email"], email.to_lowercase());
    // And the normalized address logs in.
    app.login_ok(&email.to_lowercase(), PASSWORD).await;
}

#[both_backends]
async fn signup_with_a_taken_email_is_409_even_with_different_case() {
    let app = spawn_app().await;
    let email = unique_email("taken");
    app.signup_ok(&email, PASSWORD).await;

    for variant in [email.clone(), email.to_uppercase(), format!(" {email} ")] {
        let response = app.post_signup(&variant, PASSWORD).await;
        assert_error(response, StatusCode::CONFLICT, "email_taken").await;
    }
}

#[both_backends]
async fn signup_rejects_passwords_that_break_the_policy() {
    let app = spawn_app().await;
    let cases = [
        ("Sh0rt!pass", "shorter than 12"),
        ("Abcdefghij1", "11 characters"),
        ("alllowercase1!x", "no upper-case letter"),
        ("ALLUPPERCASE1!X", "no lower-case letter"),
        ("NoDigitsHere!!x", "no digit"),
        ("NoSymbolsHere12", "no symbol"),
        ("", "empty"),
    ];
    for (password, why) in cases {
        let response = app.post_signup(&unique_email("weak"), password).await;
        let body = assert_validation_failed(response, &["password"]).await;
        assert!(body["details"].is_array(), "{why}: {body}");
    }
    let too_long = format!("Aa1!{}", "x".repeat(125)); // 129 characters
    assert_eq!(too_long.chars().count(), 129);
    let response = app.post_signup(&unique_email("long"), &too_long).await;
    assert_validation_failed(response, &["password"]).await;
}

#[both_backends]
async fn signup_accepts_passwords_at_the_length_bounds() {
    let app = spawn_app().await;
    let twelve = "Abcdefgh1!xy";
    assert_eq!(twelve.len(), 12);
    app.signup_ok(&unique_email("len12"), twelve).await;

    let max = format!("Aa1!{}", "x".repeat(124));
    assert_eq!(max.len(), 128);
    app.signup_ok(&unique_email("len128"), &max).await;
}

#[both_backends]
async fn signup_rejects_invalid_emails() {
    let app = spawn_app().await;
    let too_long = format!(
        "{}@{}.{}.{}.abcd",
        "a".repeat(64),
        "b".repeat(61),
        "c".repeat(61),
        "d".repeat(61)
    );
    assert_eq!(too_long.len(), 255);
    for email in [
        "not-an-email",
        "",
        "   ",
        "@example.com",
        "user@",
        "two@@example.com",
        too_long.as_str(),
    ] {
        let response = app.post_signup(email, PASSWORD).await;
        let body = assert_validation_failed(response, &["email"]).await;
        assert!(body["details"].is_array(), "email {email:?}");
    }
}

#[both_backends]
async fn signup_accepts_an_email_of_254_characters() {
    let app = spawn_app().await;
    let email = format!(
        "{}@{}.{}.{}.com",
        "a".repeat(64),
        "b".repeat(61),
        "c".repeat(61),
        "d".repeat(61)
    );
    assert_eq!(email.len(), 254);

    let tokens = app.signup_ok(&email, PASSWORD).await;

    assert_eq!(tokens["user"]["email"], email.as_str());
}

#[both_backends]
async fn signup_reports_every_failing_field_at_once() {
    let app = spawn_app().await;

    let response = app.post_signup("nope", "short").await;
    assert_validation_failed(response, &["email", "password"]).await;

    let response = app.post_json("/v1/signup", &json!({})).await;
    assert_validation_failed(response, &["email", "password"]).await;

    let response = app
        .post_json(
            "/v1/signup",
            &json!({ "email": unique_email("only-email") }),
        )
        .await;
    assert_validation_failed(response, &["password"]).await;
}

#[both_backends]
async fn signup_ignores_unknown_fields() {
    let app = spawn_app().await;
    let email = unique_email("extra");

    let response = app
        .post_json(
            "/v1/signup",
            &json!({ "email": email, "password": PASSWORD, "role": "admin", "disabled": false, "x": [1, 2] }),
        )
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
    let body: serde_json::Value = response.json().await.unwrap();
    // A client cannot sign itself up as an admin.
    assert_eq!(body["user"]["role"], "user");
}

#[both_backends]
async fn the_password_hash_is_argon2id_and_never_returned() {
    let app = spawn_app().await;
    let email = unique_email("hash");
    let tokens = app.signup_ok(&email, PASSWORD).await;

    let parsed = Email::parse(&email).expect("a valid email");
    let hash = app
        .store(move |s| s.account_by_email(&parsed))
        .await
        .expect("the new account is not stored")
        .password_hash;
    assert!(
        hash.starts_with("$argon2id$"),
        "hash is not Argon2id: {hash}"
    );
    assert!(!hash.contains(PASSWORD));
    let text = tokens.to_string();
    assert!(
        !text.contains("argon2"),
        "token response leaks the hash: {text}"
    );
    assert!(
        !text.contains(PASSWORD),
        "token response leaks the password: {text}"
    );
}
