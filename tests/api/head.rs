//! HEAD on every GET route answers as GET does, without the body (RFC 9110 §9.3.2):
//! uptime checkers probe with HEAD, and a 405 there reads as an outage (#23).

use reqwest::header::HeaderMap;
use reqwest::{Method, Response, StatusCode};

use crate::helpers::{
    PASSWORD, TestApp, access_of, header, spawn_app_with, unique_email, user_id_of,
};

const ORIGIN: &str = "https://app.example.com";

/// The headers a response carries, minus the ones that differ between any two requests:
/// `Date`, and the per-request id. `/metrics` counts the GET itself, so its length moves
/// between the two requests; its presence is still compared.
fn comparable(path: &str, headers: &HeaderMap) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = headers
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "date" | "x-request-id"))
        .map(|(name, value)| {
            let value = if path == "/metrics" && name == "content-length" {
                "(varies)".to_owned()
            } else {
                value.to_str().unwrap_or("(not text)").to_owned()
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    out.sort();
    out
}

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    if_none_match: Option<&str>,
) -> Response {
    let mut request = app
        .api_client
        .request(method, app.url(path))
        .header("origin", ORIGIN);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(etag) = if_none_match {
        request = request.header("if-none-match", etag);
    }
    request.send().await.expect("failed to execute request")
}

#[tokio::test]
async fn head_answers_every_get_route_like_get_without_the_body() {
    // A CORS origin, so that the CORS headers are compared too.
    let app = spawn_app_with(|s| s.http.cors_origins = vec![ORIGIN.to_owned()]).await;
    let admin = app
        .create_admin(&unique_email("head-admin"), PASSWORD)
        .await;
    let admin_token = access_of(&admin).to_owned();
    let user = app.signup_ok(&unique_email("head-user"), PASSWORD).await;
    let user_token = access_of(&user).to_owned();
    let user_id = user_id_of(&user).to_owned();
    let etag = header(&app.get("/.well-known/jwks.json").await, "etag").expect("JWKS ETag");

    let users = format!("/v1/admin/users/{user_id}");
    let user_sessions = format!("/v1/admin/users/{user_id}/sessions");
    // (path, bearer token, If-None-Match, the status GET gives)
    let cases: Vec<(&str, Option<&str>, Option<&str>, StatusCode)> = vec![
        ("/.well-known/jwks.json", None, None, StatusCode::OK),
        (
            "/.well-known/jwks.json",
            None,
            Some(&etag),
            StatusCode::NOT_MODIFIED,
        ),
        (
            "/.well-known/openid-configuration",
            None,
            None,
            StatusCode::OK,
        ),
        ("/healthz", None, None, StatusCode::OK),
        ("/readyz", None, None, StatusCode::OK),
        ("/metrics", None, None, StatusCode::OK),
        ("/v1/me", Some(&user_token), None, StatusCode::OK),
        // An error answers HEAD alike too, WWW-Authenticate included.
        ("/v1/me", None, None, StatusCode::UNAUTHORIZED),
        ("/v1/me/sessions", Some(&user_token), None, StatusCode::OK),
        ("/v1/admin/users", Some(&admin_token), None, StatusCode::OK),
        (
            "/v1/admin/users",
            Some(&user_token),
            None,
            StatusCode::FORBIDDEN,
        ),
        (&users, Some(&admin_token), None, StatusCode::OK),
        (&user_sessions, Some(&admin_token), None, StatusCode::OK),
        ("/v1/admin/audit", Some(&admin_token), None, StatusCode::OK),
        ("/v1/admin/keys", Some(&admin_token), None, StatusCode::OK),
        ("/v1/admin/stats", Some(&admin_token), None, StatusCode::OK),
        ("/admin", None, None, StatusCode::PERMANENT_REDIRECT),
        ("/admin/", None, None, StatusCode::OK),
        ("/admin/app.js", None, None, StatusCode::OK),
        ("/admin/no-such-file.js", None, None, StatusCode::NOT_FOUND),
    ];

    let mut failures = Vec::new();
    for (path, token, if_none_match, expected) in cases {
        let get = send(&app, Method::GET, path, token, if_none_match).await;
        assert_eq!(get.status(), expected, "GET {path}");
        let get_headers = comparable(path, get.headers());
        let get_body = get.bytes().await.unwrap();

        let head = send(&app, Method::HEAD, path, token, if_none_match).await;
        let status = head.status();
        let head_headers = comparable(path, head.headers());
        let head_body = head.bytes().await.unwrap();

        if status != expected {
            failures.push(format!("HEAD {path}: {status}, GET gave {expected}"));
            continue;
        }
        if head_headers != get_headers {
            failures.push(format!(
                "HEAD {path}: headers {head_headers:?}\n  GET gave {get_headers:?}"
            ));
        }
        if !head_body.is_empty() {
            failures.push(format!("HEAD {path}: a body of {} bytes", head_body.len()));
        }
        // The length HEAD announces is the GET body's (or absent where GET has none).
        if path != "/metrics"
            && let Some((_, length)) = head_headers.iter().find(|(n, _)| n == "content-length")
        {
            assert_eq!(length, &get_body.len().to_string(), "HEAD {path}");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
