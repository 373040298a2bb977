//! Service clients (contract Part 2): the admin API, `/oauth/token`, introspection,
//! revocation and the revocation feed, on both backends; the revoke/refresh/introspect
//! race through three replicas on PostgreSQL.

mod admin_api;
mod cli;
mod feed;
mod introspection;
mod race;
mod token;

use reqwest::{Response, StatusCode};
use serde_json::{Value, json};

use crate::helpers::{PASSWORD, TestApp, access_of, expect_json, header, unique_email};

/// A client as the admin API created it.
#[derive(Clone, Debug)]
pub struct TestClient {
    pub id: String,
    pub secret: String,
}

/// An admin's access token on `app`.
pub async fn admin_token(app: &TestApp) -> String {
    let tokens = app
        .create_admin(&unique_email("clients-admin"), PASSWORD)
        .await;
    access_of(&tokens).to_owned()
}

/// `POST /v1/admin/clients` with `scopes`; asserts the 201 and its shape.
pub async fn create_client(app: &TestApp, admin: &str, scopes: &[&str]) -> TestClient {
    let response = app
        .post_json_with_token(
            "/v1/admin/clients",
            admin,
            &json!({ "name": "billing", "scopes": scopes }),
        )
        .await;
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("no-store"),
        "a response carrying a secret must not be cached"
    );
    let body = expect_json(response, StatusCode::CREATED).await;
    TestClient {
        id: body["client_id"].as_str().expect("client_id").to_owned(),
        secret: body["client_secret"]
            .as_str()
            .expect("client_secret")
            .to_owned(),
    }
}

/// A form POST to `path`, with HTTP Basic credentials when given.
pub async fn post_form(
    app: &TestApp,
    path: &str,
    form: &[(&str, &str)],
    basic: Option<&TestClient>,
) -> Response {
    let mut request = app.api_client.post(app.url(path)).form(form);
    if let Some(c) = basic {
        request = request.basic_auth(&c.id, Some(&c.secret));
    }
    request.send().await.expect("request")
}

/// A token for `client` by `client_secret_basic`; asserts the 200.
pub async fn client_token(app: &TestApp, client: &TestClient, scope: Option<&str>) -> Value {
    let mut form = vec![("grant_type", "client_credentials")];
    if let Some(s) = scope {
        form.push(("scope", s));
    }
    let response = post_form(app, "/oauth/token", &form, Some(client)).await;
    expect_json(response, StatusCode::OK).await
}

/// The access token of a fresh token for `client`.
pub async fn client_access(app: &TestApp, client: &TestClient) -> String {
    client_token(app, client, None).await["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned()
}

/// `POST /oauth/introspect` of `token`, authenticated as `caller`; asserts the 200.
pub async fn introspect(app: &TestApp, caller: &TestClient, token: &str) -> Value {
    let response = post_form(app, "/oauth/introspect", &[("token", token)], Some(caller)).await;
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("no-store")
    );
    expect_json(response, StatusCode::OK).await
}

/// Asserts an RFC 6749 §5.2 error: the status, `error` and a string
/// `error_description`, and nothing of the contract's own shape.
pub async fn assert_oauth_error(response: Response, status: StatusCode, error: &str) -> Value {
    assert_eq!(response.status(), status, "status");
    let body: Value = response.json().await.expect("a JSON error body");
    assert_eq!(body["error"], error, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
    assert!(
        body.get("message").is_none(),
        "the contract's shape on /oauth: {body}"
    );
    body
}

/// The inactive answer, exactly.
pub fn assert_inactive(body: &Value, what: &str) {
    assert_eq!(body, &json!({ "active": false }), "{what}");
}
