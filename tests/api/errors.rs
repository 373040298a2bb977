use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    PASSWORD, TestApp, access_of, assert_error, assert_error_shape, assert_validation_failed,
    header, refresh_of, sid_of, spawn_app, unique_email, user_id_of,
};

const JSON: Option<&str> = Some("application/json");
const BODY_ENDPOINTS: [&str; 4] = ["/v1/signup", "/v1/login", "/v1/refresh", "/v1/logout"];

#[tokio::test]
async fn malformed_json_is_400_invalid_json() {
    let app = spawn_app().await;
    let bodies: [&[u8]; 9] = [
        b"{not json",
        br#"{"email": "a@example.com""#,
        b"",
        b"null",
        b"[]",
        b"\"a string\"",
        b"42",
        b"{\"email\": \"\xff\xfe\"}",
        b"{\"email\": \"a@example.com\",}",
    ];
    for path in BODY_ENDPOINTS {
        for body in bodies {
            let response = app.post_raw(path, body.to_vec(), JSON).await;
            let text = String::from_utf8_lossy(body).into_owned();
            let status = response.status();
            assert_eq!(status, StatusCode::BAD_REQUEST, "{path} with {text:?}");
            assert_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;
        }
    }
}

#[tokio::test]
async fn wrong_json_types_are_400_invalid_json() {
    let app = spawn_app().await;
    let cases = [
        ("/v1/signup", json!({ "email": 5, "password": PASSWORD })),
        (
            "/v1/signup",
            json!({ "email": unique_email("t"), "password": true }),
        ),
        (
            "/v1/signup",
            json!({ "email": ["a@example.com"], "password": { "x": 1 } }),
        ),
        (
            "/v1/login",
            json!({ "email": null, "password": 12345678901234_i64 }),
        ),
        ("/v1/refresh", json!({ "refresh_token": 123 })),
        ("/v1/logout", json!({ "refresh_token": ["x"] })),
    ];
    for (path, body) in cases {
        let response = app.post_json(path, &body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path} {body}");
        assert_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;
    }
}

#[tokio::test]
async fn a_body_that_is_not_an_object_says_so_without_naming_internal_types() {
    let app = spawn_app().await;
    for (path, body) in [
        ("/v1/signup", json!([1, 2])),
        ("/v1/login", json!("text")),
        ("/v1/refresh", json!(42)),
        // serde alone would take this array as a signup, fields in order.
        ("/v1/signup", json!(["a@example.com", "Correct-Horse-9!"])),
    ] {
        let response = app.post_json(path, &body).await;
        let error = assert_error(response, StatusCode::BAD_REQUEST, "invalid_json").await;
        let message = error["message"].as_str().unwrap_or_default();
        assert!(message.contains("JSON object"), "{path} {body}: {message}");
        assert!(
            !message.contains("struct") && !message.contains("Request"),
            "{path} {body}: the message names a Rust type: {message}"
        );
    }
}

#[tokio::test]
async fn missing_fields_are_listed_all_at_once() {
    let app = spawn_app().await;
    for (path, fields) in [
        ("/v1/signup", &["email", "password"][..]),
        ("/v1/login", &["email", "password"][..]),
        ("/v1/refresh", &["refresh_token"][..]),
        ("/v1/logout", &["refresh_token"][..]),
    ] {
        let response = app.post_json(path, &json!({ "unrelated": 1 })).await;
        assert_validation_failed(response, fields).await;
    }
    let body = assert_validation_failed(
        app.post_json("/v1/signup", &json!({ "email": "", "password": "" }))
            .await,
        &["email", "password"],
    )
    .await;
    assert!(body["details"].as_array().unwrap().len() >= 2);
}

#[tokio::test]
async fn a_body_without_json_content_type_is_415() {
    let app = spawn_app().await;
    let body = json!({ "email": unique_email("ct"), "password": PASSWORD }).to_string();
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("text/json-ish"),
    ] {
        for path in BODY_ENDPOINTS {
            let response = app.post_raw(path, body.clone(), content_type).await;
            assert_eq!(
                response.status(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{path} with {content_type:?}"
            );
            assert_error(
                response,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
            )
            .await;
        }
    }
    // Nothing was created.
    assert_no_users(&app).await;
}

#[tokio::test]
async fn json_with_a_charset_is_accepted() {
    let app = spawn_app().await;
    let email = unique_email("charset");
    let body = json!({ "email": email, "password": PASSWORD }).to_string();

    let response = app
        .post_raw("/v1/signup", body, Some("application/json; charset=utf-8"))
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
}

async fn assert_no_users(app: &TestApp) {
    let users = app.store(|s| s.search_users(None, 10)).await;
    assert!(
        users.is_empty(),
        "a refused request created users: {users:?}"
    );
}

fn padded_signup(total: usize) -> String {
    let head =
        json!({ "email": unique_email("size"), "password": PASSWORD, "pad": "" }).to_string();
    let pad = total - head.len();
    let body =
        json!({ "email": unique_email("size"), "password": PASSWORD, "pad": "x".repeat(pad) })
            .to_string();
    assert_eq!(body.len(), total);
    body
}

#[tokio::test]
async fn a_body_over_16_kib_is_413() {
    let app = spawn_app().await;
    for size in [16 * 1024 + 1, 17 * 1024, 64 * 1024] {
        for path in BODY_ENDPOINTS {
            let response = app.post_raw(path, padded_signup(size), JSON).await;
            assert_eq!(
                response.status(),
                StatusCode::PAYLOAD_TOO_LARGE,
                "{path} with {size} bytes"
            );
            assert_error(response, StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large").await;
        }
    }
    assert_no_users(&app).await;
}

#[tokio::test]
async fn a_body_of_exactly_16_kib_is_accepted() {
    let app = spawn_app().await;

    let response = app
        .post_raw("/v1/signup", padded_signup(16 * 1024), JSON)
        .await;

    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn unknown_routes_are_404_not_found() {
    let app = spawn_app().await;
    for path in [
        "/nope",
        "/v1",
        "/v1/",
        "/v2/login",
        "/v1/users",
        "/.well-known/other",
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
    }
    let response = app.post_json("/v1/nope", &json!({})).await;
    assert_error(response, StatusCode::NOT_FOUND, "not_found").await;
}

#[tokio::test]
async fn a_wrong_method_is_405_method_not_allowed() {
    let app = spawn_app().await;
    for (method, path, allow) in [
        (Method::GET, "/v1/signup", "POST"),
        (Method::GET, "/v1/login", "POST"),
        (Method::PUT, "/v1/refresh", "POST"),
        (Method::POST, "/.well-known/jwks.json", "GET, HEAD"),
        (Method::PUT, "/v1/me", "GET, HEAD, DELETE"),
        (
            Method::POST,
            "/v1/admin/users/x/sessions",
            "GET, HEAD, DELETE",
        ),
    ] {
        let response = app
            .api_client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(
            response
                .headers()
                .get("allow")
                .and_then(|v| v.to_str().ok()),
            Some(allow),
            "{method} {path}: Allow names the methods the path takes"
        );
        assert_error(
            response,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        )
        .await;
    }
}

#[tokio::test]
async fn no_cors_headers_without_configured_origins() {
    let app = spawn_app().await;

    let response = app
        .api_client
        .get(app.url("/.well-known/jwks.json"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    assert_eq!(header(&response, "access-control-allow-credentials"), None);

    let preflight = app
        .api_client
        .request(Method::OPTIONS, app.url("/v1/login"))
        .header("origin", "https://evil.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().as_u16() < 500);
    assert_eq!(header(&preflight, "access-control-allow-origin"), None);
}

/// Throws odd requests at every route, as a user, as an admin and anonymously:
/// nothing may answer 5xx, and every error keeps the contract's shape.
#[both_backends]
async fn nothing_ever_answers_5xx() {
    let app = spawn_app().await;
    let admin = app
        .create_admin(&unique_email("admin"), "Adm1n!Passw0rd-long")
        .await;
    let user = app.signup_ok(&unique_email("user"), PASSWORD).await;
    let uid = user_id_of(&user).to_owned();
    let sid = sid_of(&user);
    let random = Uuid::new_v4();
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let big = "x".repeat(40 * 1024);

    let paths = [
        "/v1/signup".to_owned(),
        "/v1/login".to_owned(),
        "/v1/refresh".to_owned(),
        "/v1/logout".to_owned(),
        "/v1/me".to_owned(),
        "/v1/me/sessions".to_owned(),
        format!("/v1/me/sessions/{sid}"),
        format!("/v1/me/sessions/{random}"),
        "/v1/me/sessions/%00".to_owned(),
        "/v1/me/sessions/..%2f..%2fetc%2fpasswd".to_owned(),
        "/v1/me/password".to_owned(),
        "/v1/admin/users".to_owned(),
        "/v1/admin/users?email=%ff%fe".to_owned(),
        "/v1/admin/users?email=%00".to_owned(),
        "/v1/admin/users?limit=0".to_owned(),
        "/v1/admin/users?limit=-1".to_owned(),
        "/v1/admin/users?limit=abc".to_owned(),
        "/v1/admin/users?limit=99999999999999999999".to_owned(),
        format!("/v1/admin/users?email={}", "a".repeat(3000)),
        format!("/v1/admin/users/{uid}"),
        format!("/v1/admin/users/{random}"),
        "/v1/admin/users/%27%20OR%201=1--".to_owned(),
        format!("/v1/admin/users/{uid}/sessions"),
        format!("/v1/admin/sessions/{random}"),
        "/v1/admin/audit?type=%00".to_owned(),
        "/v1/admin/audit?type=login%00failed&user_id=%00".to_owned(),
        "/v1/admin/audit?before=%00&limit=%ff".to_owned(),
        "/v1/admin/stats?since=%00".to_owned(),
        "/v1/admin/stats?since=99999999999999999999".to_owned(),
        "/v1/admin/keys".to_owned(),
        "/.well-known/jwks.json".to_owned(),
        "/.well-known/openid-configuration".to_owned(),
        "/healthz".to_owned(),
        "/readyz".to_owned(),
        "/metrics".to_owned(),
    ];
    let bodies: Vec<Option<String>> = vec![
        None,
        Some("{}".to_owned()),
        Some("null".to_owned()),
        Some("{garbage".to_owned()),
        Some(deep),
        Some(json!({ "email": "a\u{0}b@example.com", "password": "\u{0}".repeat(20) }).to_string()),
        Some(json!({ "email": format!("{}@example.com", "é".repeat(300)), "password": "ü".repeat(200) }).to_string()),
        Some(json!({ "role": "admin", "disabled": true, "refresh_token": "x", "current_password": "x", "new_password": "x", "password": "x" }).to_string()),
        Some(json!({ "role": null, "disabled": null }).to_string()),
        Some(big),
    ];
    let methods = [Method::GET, Method::POST, Method::PATCH, Method::DELETE];
    let tokens = [
        None,
        Some(access_of(&user).to_owned()),
        Some("garbage".to_owned()),
    ];
    let mut checked = 0;
    for path in &paths {
        for method in &methods {
            for body in &bodies {
                for token in tokens
                    .iter()
                    .chain([Some(access_of(&admin).to_owned())].iter())
                {
                    let mut request = app.api_client.request(method.clone(), app.url(path));
                    if let Some(token) = token {
                        request = request.bearer_auth(token);
                    }
                    if let Some(body) = body {
                        request = request
                            .header("content-type", "application/json")
                            .body(body.clone());
                    }
                    let response = request.send().await.unwrap();
                    let status = response.status();
                    let text = response.text().await.unwrap();
                    assert!(
                        status.as_u16() < 500,
                        "{method} {path} answered {status}: {text}"
                    );
                    assert!(
                        !text.contains("panicked") && !text.contains("src/"),
                        "{method} {path} leaks internals: {text}"
                    );
                    if status.is_client_error() {
                        let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
                            panic!("{method} {path} → {status} with a non-JSON body ({e}): {text}")
                        });
                        assert_error_shape(&body);
                    }
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 1000);
    // The service is still up and the admin's session still works after all that.
    let response = app.get("/healthz").await;
    assert_eq!(response.status(), StatusCode::OK);
    let response = app
        .get_with_token("/v1/admin/users", access_of(&admin))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    app.refresh_ok(refresh_of(&admin)).await;
}

#[tokio::test]
async fn cors_allows_only_the_configured_origins() {
    let allowed = "https://app.example.com";
    let app =
        crate::helpers::spawn_app_with(|s| s.http.cors_origins = vec![allowed.to_owned()]).await;

    let response = app
        .api_client
        .get(app.url("/.well-known/jwks.json"))
        .header("origin", allowed)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "access-control-allow-origin").as_deref(),
        Some(allowed)
    );

    let preflight = app
        .api_client
        .request(Method::OPTIONS, app.url("/v1/login"))
        .header("origin", allowed)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(
        preflight.status().is_success(),
        "preflight: {}",
        preflight.status()
    );
    assert_eq!(
        header(&preflight, "access-control-allow-origin").as_deref(),
        Some(allowed)
    );
    let methods = header(&preflight, "access-control-allow-methods").unwrap_or_default();
    assert!(methods.contains("POST"), "allowed methods: {methods}");

    for origin in [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "null",
    ] {
        let response = app
            .api_client
            .get(app.url("/.well-known/jwks.json"))
            .header("origin", origin)
            .send()
            .await
            .unwrap();
        assert!(response.status().as_u16() < 500);
        let acao = header(&response, "access-control-allow-origin");
        assert!(
            acao.is_none() || acao.as_deref() == Some(allowed),
            "origin {origin} got Access-Control-Allow-Origin {acao:?}"
        );
        assert_ne!(acao.as_deref(), Some("*"));
        let preflight = app
            .api_client
            .request(Method::OPTIONS, app.url("/v1/login"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .send()
            .await
            .unwrap();
        assert!(preflight.status().as_u16() < 500);
        let acao = header(&preflight, "access-control-allow-origin");
        assert!(
            acao.is_none() || acao.as_deref() == Some(allowed),
            "preflight from {origin} got Access-Control-Allow-Origin {acao:?}"
        );
    }
}
