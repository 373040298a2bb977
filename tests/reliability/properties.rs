//! Properties of the HTTP surface and the domain, checked with proptest against one
//! in-process app per property (`kit::app`: cheap Argon2, no per-IP limits): whatever a
//! client sends, the answer is a 2xx or a 4xx, never a 5xx; any string as a refresh
//! token is a 401; email normalization is idempotent.

use gatehouse::domain::Email;
use proptest::prelude::*;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::kit::app::{TestApp, spawn_app};
use crate::kit::body::{access_of, sid_of, user_id_of};
use crate::kit::password::PASSWORD;

/// One app with its own runtime, database and keys; lives for one property. Proptest
/// drives a synchronous closure, so requests go through `rt.block_on`.
struct Shared {
    // Declared first so it drops first: the server stops before its directory goes.
    rt: tokio::runtime::Runtime,
    app: TestApp,
    /// A user's access token, and an admin's.
    user_access: String,
    admin_access: String,
    /// Another user, the target of admin requests; and one of their families.
    victim_id: String,
    victim_family: String,
}

impl Shared {
    fn new() -> Self {
        // Multi-threaded, so the server keeps answering between two `block_on`s.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (app, user, admin, victim) = rt.block_on(async {
            let app = spawn_app().await;
            let admin = app.create_admin("admin@example.com", PASSWORD).await;
            let user = app.signup_ok("user@example.com", PASSWORD).await;
            let victim = app.signup_ok("victim@example.com", PASSWORD).await;
            (app, user, admin, victim)
        });
        Self {
            rt,
            app,
            user_access: access_of(&user).to_owned(),
            admin_access: access_of(&admin).to_owned(),
            victim_id: user_id_of(&victim).to_owned(),
            victim_family: sid_of(&victim),
        }
    }

    /// Sends one request; returns the status and the body.
    fn send(
        &self,
        method: Method,
        path: &str,
        bearer: Option<&str>,
        body: reqwest::Body,
    ) -> (StatusCode, String) {
        self.rt.block_on(async {
            let mut request = self
                .app
                .api_client
                .request(method, self.app.url(path))
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
            if let Some(token) = bearer {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("no answer");
            let status = response.status();
            (status, response.text().await.expect("body"))
        })
    }
}

/// A 2xx, or a 4xx in the contract's error shape.
fn check_answer(what: &str, status: StatusCode, body: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        status.is_success() || status.is_client_error(),
        "{what}: answered {status}: {body}"
    );
    if status.is_client_error() {
        let v: Value = serde_json::from_str(body).map_err(|e| {
            TestCaseError::fail(format!("{what}: {status} body is not JSON ({e}): {body}"))
        })?;
        prop_assert!(
            v["error"].is_string() && v["message"].is_string(),
            "{what}: {body}"
        );
    }
    Ok(())
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Keep regressions out of the source tree unless a run fails.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Any JSON value, nested a little, with the contract's field names among the keys.
fn any_json() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("email".to_owned()),
        Just("password".to_owned()),
        Just("refresh_token".to_owned()),
        Just("current_password".to_owned()),
        Just("new_password".to_owned()),
        Just("role".to_owned()),
        Just("disabled".to_owned()),
        "\\PC{0,12}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<u64>().prop_map(Value::from),
        "\\PC{0,40}".prop_map(Value::String),
        "[a-z]{1,10}@[a-z]{1,8}\\.[a-z]{2,4}".prop_map(Value::String),
        Just(Value::String("admin".into())),
        Just(Value::String("user".into())),
        Just(Value::String("Correct-Horse-9!x".into())),
        "[A-Za-z0-9_-]{43}".prop_map(Value::String),
        "\\PC{200,600}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn any_string_or_bytes_as_a_refresh_token_is_a_401_never_a_5xx() {
    let app = Shared::new();
    let token = prop_oneof![
        any::<String>(),
        "[A-Za-z0-9_-]{43}",
        "[A-Za-z0-9_-]{42,44}",
        "\\PC{1,100}",
        prop::collection::vec(any::<u8>(), 1..120)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ];
    proptest!(config(256), |(token in token)| {
        let body = serde_json::to_vec(&json!({"refresh_token": token})).expect("json");
        let (status, text) = app.send(Method::POST, "/v1/refresh", None, body.clone().into());
        if token.is_empty() {
            prop_assert_eq!(status, StatusCode::BAD_REQUEST, "{}", text);
        } else {
            prop_assert_eq!(status, StatusCode::UNAUTHORIZED, "token {:?}: {}", token, text);
            let v: Value = serde_json::from_str(&text).expect("json");
            prop_assert_eq!(&v["error"], "invalid_refresh_token");
        }
        let (status, text) = app.send(Method::POST, "/v1/logout", None, body.into());
        check_answer("logout", status, &text)?;
    });
    // Raw bytes, not always UTF-8, spliced in where the token goes, and as the whole body.
    proptest!(config(256), |(bytes in prop::collection::vec(any::<u8>(), 0..200))| {
        let mut body = br#"{"refresh_token":""#.to_vec();
        body.extend_from_slice(&bytes);
        body.extend_from_slice(br#""}"#);
        let (status, text) = app.send(Method::POST, "/v1/refresh", None, body.into());
        check_answer("refresh with raw bytes in the token", status, &text)?;
        prop_assert_ne!(status, StatusCode::OK);
        let (status, text) = app.send(Method::POST, "/v1/refresh", None, bytes.into());
        check_answer("refresh with a raw body", status, &text)?;
    });
}

#[test]
fn any_json_body_to_any_write_endpoint_is_a_2xx_or_4xx() {
    let app = Shared::new();
    let (user, admin) = (app.user_access.clone(), app.admin_access.clone());
    let victim = app.victim_id.clone();
    let family = app.victim_family.clone();
    let endpoints: Vec<(Method, String, Option<String>)> = vec![
        (Method::POST, "/v1/signup".into(), None),
        (Method::POST, "/v1/login".into(), None),
        (Method::POST, "/v1/refresh".into(), None),
        (Method::POST, "/v1/logout".into(), None),
        (Method::POST, "/v1/me/password".into(), Some(user.clone())),
        (Method::DELETE, "/v1/me".into(), Some(user.clone())),
        (
            Method::DELETE,
            format!("/v1/me/sessions/{family}"),
            Some(user.clone()),
        ),
        (
            Method::PATCH,
            format!("/v1/admin/users/{victim}"),
            Some(admin.clone()),
        ),
        (
            Method::DELETE,
            format!("/v1/admin/sessions/{family}"),
            Some(admin.clone()),
        ),
        (
            Method::DELETE,
            format!("/v1/admin/users/{victim}/sessions"),
            Some(admin.clone()),
        ),
        // The same with no credentials, and an admin endpoint with a user's token.
        (Method::PATCH, format!("/v1/admin/users/{victim}"), None),
        (
            Method::PATCH,
            format!("/v1/admin/users/{victim}"),
            Some(user.clone()),
        ),
        (Method::POST, "/v1/me/password".into(), None),
    ];
    proptest!(config(128), |(body in any_json())| {
        let bytes = serde_json::to_vec(&body).expect("json");
        for (method, path, bearer) in &endpoints {
            let (status, text) =
                app.send(method.clone(), path, bearer.as_deref(), bytes.clone().into());
            check_answer(&format!("{method} {path} with {body}"), status, &text)?;
        }
    });
}

#[test]
fn email_normalization_is_idempotent() {
    let email = prop_oneof![
        any::<String>(),
        "[ \t]{0,3}[A-Za-z0-9._%+-]{1,20}@[A-Za-z0-9.-]{1,20}\\.[A-Za-z]{2,6}[ \t\n]{0,3}",
        "\\PC{0,20}@\\PC{0,20}",
        "[ \t]{0,2}\\PC{1,12}@[a-zA-Z\u{00C0}-\u{024F}\u{0400}-\u{04FF}]{1,12}\\.[A-Za-z]{2,4}",
    ];
    proptest!(config(2000), |(raw in email)| {
        if let Ok(once) = Email::parse(&raw) {
            let twice = Email::parse(once.as_str());
            prop_assert!(twice.is_ok(), "{:?} parsed to {:?}, which does not parse", raw, once.as_str());
            let twice = twice.expect("checked");
            prop_assert_eq!(once.as_str(), twice.as_str());
            prop_assert_eq!(once.as_str(), once.as_str().trim());
            prop_assert!(once.as_str().chars().count() <= 254);
        }
    });

    // Over HTTP: an account signed up with one spelling logs in with the normalized one.
    let app = Shared::new();
    let spelled = "[ \t]{0,2}[A-Za-z]{1,12}[0-9]{0,4}@[A-Za-z]{1,10}\\.[A-Za-z]{2,4}[ \t]{0,2}";
    proptest!(config(24), |(raw in spelled)| {
        let Ok(normal) = Email::parse(&raw) else { return Ok(()) };
        let body = serde_json::to_vec(&json!({"email": raw, "password": PASSWORD})).expect("json");
        let (status, text) = app.send(Method::POST, "/v1/signup", None, body.into());
        prop_assert!(
            status == StatusCode::CREATED || status == StatusCode::CONFLICT,
            "signup {:?}: {} {}", raw, status, text
        );
        if status == StatusCode::CREATED {
            let v: Value = serde_json::from_str(&text).expect("json");
            prop_assert_eq!(v["user"]["email"].as_str(), Some(normal.as_str()));
        }
        let body = serde_json::to_vec(&json!({"email": normal.as_str().to_uppercase(), "password": PASSWORD}))
            .expect("json");
        let (status, text) = app.send(Method::POST, "/v1/login", None, body.into());
        prop_assert_eq!(status, StatusCode::OK, "login as {:?}: {}", normal.as_str(), text);
    });
}
