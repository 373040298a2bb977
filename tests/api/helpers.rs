//! Shared test harness: every test gets its own app, database, keys and clock.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use gatehouse::clock::{Clock, ManualClock};
use gatehouse::config::Settings;
use gatehouse::startup::Application;
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

/// A password that satisfies the policy (12..=128, upper, lower, digit, symbol).
pub const PASSWORD: &str = "Tr0ub4dor&3-horse";
/// A second valid password, different from [`PASSWORD`].
pub const OTHER_PASSWORD: &str = "Correct!Horse9Battery";
/// The User-Agent every test request carries.
pub const USER_AGENT: &str = "gatehouse-api-tests/1.0";

pub struct TestApp {
    /// `http://127.0.0.1:<port>`
    pub address: String,
    pub port: u16,
    pub settings: Settings,
    pub clock: ManualClock,
    /// Keeps the database and keys alive for the test's duration.
    #[allow(dead_code)] // held, never read: dropping it deletes the directory
    pub dir: TempDir,
    pub api_client: reqwest::Client,
}

/// Spawns the app with the test settings (cheap Argon2, no per-IP rate limits).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns the app after letting the test adjust the settings.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("failed to create a temporary directory");
    let mut settings = Settings::for_tests(dir.path());
    configure(&mut settings);
    let clock = ManualClock::starting_now();
    let app = Application::build_with_clock(settings.clone(), Arc::new(clock.clone()))
        .await
        .expect("failed to build the application");
    let port = app.port();
    tokio::spawn(app.run_until_stopped());

    let api_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()
        .expect("failed to build the HTTP client");

    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        settings,
        clock,
        dir,
        api_client,
    }
}

/// A fresh, never-used email address; `tag` makes failures easier to read.
pub fn unique_email(tag: &str) -> String {
    let id = Uuid::new_v4().simple().to_string();
    format!("{tag}-{}@example.com", &id[..12])
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// The service clock's current time.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    // ---------------------------------------------------------------- raw requests

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.api_client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("failed to execute request")
    }

    pub async fn post_json_with_token(&self, path: &str, token: &str, body: &Value) -> Response {
        self.api_client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("failed to execute request")
    }

    /// POSTs raw bytes with the given Content-Type (or none at all).
    pub async fn post_raw(
        &self,
        path: &str,
        body: impl Into<reqwest::Body>,
        content_type: Option<&str>,
    ) -> Response {
        let mut request = self.api_client.post(self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header(reqwest::header::CONTENT_TYPE, content_type);
        }
        request.send().await.expect("failed to execute request")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.api_client
            .get(self.url(path))
            .send()
            .await
            .expect("failed to execute request")
    }

    pub async fn get_with_token(&self, path: &str, token: &str) -> Response {
        self.api_client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("failed to execute request")
    }

    /// GET with an arbitrary `Authorization` header value.
    pub async fn get_with_authorization(&self, path: &str, authorization: &str) -> Response {
        self.api_client
            .get(self.url(path))
            .header(reqwest::header::AUTHORIZATION, authorization)
            .send()
            .await
            .expect("failed to execute request")
    }

    pub async fn delete_with_token(
        &self,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Response {
        let mut request = self.api_client.delete(self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("failed to execute request")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.api_client
            .delete(self.url(path))
            .send()
            .await
            .expect("failed to execute request")
    }

    pub async fn patch_with_token(&self, path: &str, token: &str, body: &Value) -> Response {
        self.api_client
            .patch(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("failed to execute request")
    }

    // ---------------------------------------------------------------- endpoints

    pub async fn signup_response(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/v1/signup",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Signs up and returns the token response; panics unless 201.
    pub async fn signup(&self, email: &str, password: &str) -> Value {
        let response = self.signup_response(email, password).await;
        expect_json(response, StatusCode::CREATED).await
    }

    pub async fn login_response(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/v1/login",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Logs in and returns the token response; panics unless 200.
    pub async fn login(&self, email: &str, password: &str) -> Value {
        let response = self.login_response(email, password).await;
        expect_json(response, StatusCode::OK).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/v1/refresh", &json!({ "refresh_token": refresh_token }))
            .await
    }

    /// Refreshes and returns the token response; panics unless 200.
    pub async fn refresh_ok(&self, refresh_token: &str) -> Value {
        let response = self.refresh(refresh_token).await;
        expect_json(response, StatusCode::OK).await
    }

    pub async fn logout(&self, refresh_token: &str) -> Response {
        self.post_json("/v1/logout", &json!({ "refresh_token": refresh_token }))
            .await
    }

    pub async fn me(&self, access_token: &str) -> Response {
        self.get_with_token("/v1/me", access_token).await
    }

    /// The caller's live sessions; panics unless 200.
    pub async fn my_sessions(&self, access_token: &str) -> Vec<Value> {
        let response = self.get_with_token("/v1/me/sessions", access_token).await;
        let body = expect_json(response, StatusCode::OK).await;
        body["sessions"]
            .as_array()
            .unwrap_or_else(|| panic!("`sessions` is not an array: {body}"))
            .clone()
    }

    /// A user's sessions as an admin sees them (revoked ones too); panics unless 200.
    pub async fn admin_sessions(&self, admin_token: &str, user_id: &str) -> Vec<Value> {
        let response = self
            .get_with_token(&format!("/v1/admin/users/{user_id}/sessions"), admin_token)
            .await;
        let body = expect_json(response, StatusCode::OK).await;
        body["sessions"]
            .as_array()
            .unwrap_or_else(|| panic!("`sessions` is not an array: {body}"))
            .clone()
    }

    /// Runs the `gatehouse` CLI against this app's database and keys directory,
    /// feeding `stdin` (if any); panics unless it exits 0. Returns its stdout.
    pub async fn run_cli(&self, args: &[&str], stdin: Option<&str>) -> String {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_gatehouse"))
            .args(args)
            .env("GATEHOUSE_DATABASE", &self.settings.database)
            .env("GATEHOUSE_KEYS_DIR", &self.settings.keys_dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("failed to start the gatehouse CLI");
        {
            let mut pipe = child.stdin.take().expect("the CLI has no stdin");
            if let Some(input) = stdin {
                pipe.write_all(input.as_bytes())
                    .await
                    .expect("failed to write to the CLI");
            }
            pipe.shutdown()
                .await
                .expect("failed to close the CLI's stdin");
        }
        let output = child
            .wait_with_output()
            .await
            .expect("the gatehouse CLI did not finish");
        assert!(
            output.status.success(),
            "`gatehouse {}` failed ({}):\nstdout: {}\nstderr: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr),
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Creates an admin through the CLI (production Argon2) and logs them in over HTTP.
    pub async fn create_admin(&self, email: &str, password: &str) -> Value {
        self.run_cli(
            &["users", "create", "--email", email, "--admin"],
            Some(&format!("{password}\n")),
        )
        .await;
        let tokens = self.login(email, password).await;
        assert_eq!(
            tokens["user"]["role"], "admin",
            "CLI-created admin: {tokens}"
        );
        tokens
    }

    /// Starts a second instance on the same database, keys directory and clock (another
    /// replica, or this one restarted); returns its base address.
    pub async fn spawn_replica(&self) -> String {
        let app =
            Application::build_with_clock(self.settings.clone(), Arc::new(self.clock.clone()))
                .await
                .expect("failed to build the replica");
        let port = app.port();
        tokio::spawn(app.run_until_stopped());
        format!("http://127.0.0.1:{port}")
    }

    // ---------------------------------------------------------------- keys and tokens

    pub fn keys_dir(&self) -> PathBuf {
        PathBuf::from(&self.settings.keys_dir)
    }

    /// The PEM bytes of the access-token signing key (the only `*.pem` in the keys dir).
    pub fn signing_key_pem(&self) -> Vec<u8> {
        let pems: Vec<PathBuf> = std::fs::read_dir(self.keys_dir())
            .expect("failed to read the keys directory")
            .map(|entry| entry.expect("bad directory entry").path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "pem"))
            .collect();
        assert_eq!(
            pems.len(),
            1,
            "expected exactly one *.pem key, found {pems:?}"
        );
        std::fs::read(&pems[0]).expect("failed to read the signing key")
    }

    pub fn signing_key(&self) -> EncodingKey {
        EncodingKey::from_rsa_pem(&self.signing_key_pem()).expect("signing key is not an RSA PEM")
    }

    /// The JWK Set; panics unless 200.
    pub async fn jwks(&self) -> Value {
        let response = self.get("/.well-known/jwks.json").await;
        expect_json(response, StatusCode::OK).await
    }

    /// The kid of the only key in the JWKS.
    pub async fn current_kid(&self) -> String {
        let jwks = self.jwks().await;
        let keys = jwks["keys"].as_array().expect("jwks.keys is not an array");
        assert_eq!(keys.len(), 1, "a fresh app publishes one key: {jwks}");
        keys[0]["kid"]
            .as_str()
            .expect("kid is not a string")
            .to_owned()
    }

    /// Claims exactly as the service would put them in an access token.
    pub fn valid_claims(&self, sub: &str, sid: &str, role: &str) -> Value {
        let now = self.now().timestamp();
        json!({
            "iss": self.settings.issuer,
            "aud": self.settings.audience,
            "sub": sub,
            "iat": now,
            "nbf": now,
            "exp": now + 900,
            "jti": Uuid::new_v4().to_string(),
            "sid": sid,
            "role": role,
        })
    }

    /// An RS256 token with the given claims signed by the service's own key.
    pub async fn mint(&self, claims: &Value) -> String {
        let header = json!({ "alg": "RS256", "typ": "JWT", "kid": self.current_kid().await });
        sign_jwt(&header, claims, &self.signing_key(), Algorithm::RS256)
    }

    // ---------------------------------------------------------------- database

    /// A read-only connection to the service's database.
    pub fn db(&self) -> rusqlite::Connection {
        let connection = rusqlite::Connection::open_with_flags(
            &self.settings.database,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .expect("failed to open the database read-only");
        connection
            .busy_timeout(Duration::from_secs(5))
            .expect("failed to set busy timeout");
        connection
    }

    pub fn count(&self, sql: &str, params: impl rusqlite::Params) -> i64 {
        self.db()
            .query_row(sql, params, |row| row.get(0))
            .unwrap_or_else(|e| panic!("query `{sql}` failed: {e}"))
    }
}

// -------------------------------------------------------------------- JWT helpers

pub fn b64url(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn b64url_decode(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(text)
        .unwrap_or_else(|e| panic!("not base64url ({e}): {text}"))
}

/// `base64url(header).base64url(claims)`
pub fn signing_input(header: &Value, claims: &Value) -> String {
    format!(
        "{}.{}",
        b64url(header.to_string()),
        b64url(claims.to_string())
    )
}

/// Builds a JWT from an arbitrary header (which may lie about `alg`) and claims.
pub fn sign_jwt(header: &Value, claims: &Value, key: &EncodingKey, algorithm: Algorithm) -> String {
    let input = signing_input(header, claims);
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, algorithm)
        .expect("failed to sign the token");
    format!("{input}.{signature}")
}

/// The decoded JSON header of a JWT (no verification).
pub fn jwt_header(token: &str) -> Value {
    let segment = token.split('.').next().expect("token has no header");
    serde_json::from_slice(&b64url_decode(segment)).expect("JWT header is not JSON")
}

/// The decoded JSON claims of a JWT (no verification).
pub fn jwt_claims(token: &str) -> Value {
    let segment = token.split('.').nth(1).expect("token has no payload");
    serde_json::from_slice(&b64url_decode(segment)).expect("JWT payload is not JSON")
}

/// The refresh-token family (`sid`) an access token belongs to.
pub fn sid_of(token_response: &Value) -> String {
    let access = token_response["access_token"]
        .as_str()
        .expect("access_token is not a string");
    jwt_claims(access)["sid"]
        .as_str()
        .expect("sid is not a string")
        .to_owned()
}

pub fn access_of(token_response: &Value) -> &str {
    token_response["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {token_response}"))
}

pub fn refresh_of(token_response: &Value) -> &str {
    token_response["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh_token in {token_response}"))
}

pub fn user_id_of(token_response: &Value) -> &str {
    token_response["user"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no user.id in {token_response}"))
}

/// PEM-armours DER bytes.
pub fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in body.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside a PEM file.
pub fn pem_to_der(pem: &[u8]) -> Vec<u8> {
    let text = std::str::from_utf8(pem).expect("PEM is not UTF-8");
    let body: String = text
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .map(str::trim)
        .collect();
    STANDARD.decode(body).expect("PEM body is not base64")
}

// -------------------------------------------------------------------- response assertions

/// Asserts the status and returns the JSON body.
pub async fn expect_json(response: Response, status: StatusCode) -> Value {
    let actual = response.status();
    let text = response.text().await.expect("failed to read the body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

/// Asserts an error response: status, `Content-Type: application/json`, the shape
/// `{error, message, details?}` with `details` only on `validation_failed`, and the code.
/// Returns the body.
pub async fn assert_error(response: Response, status: StatusCode, code: &str) -> Value {
    let actual = response.status();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("").to_owned());
    let text = response.text().await.expect("failed to read the body");
    assert_eq!(actual, status, "unexpected status; body: {text}");
    assert!(
        content_type
            .as_deref()
            .is_some_and(|ct| ct.starts_with("application/json")),
        "error Content-Type is {content_type:?}; body: {text}"
    );
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("error body is not JSON ({e}): {text}"));
    assert_error_shape(&body);
    assert_eq!(body["error"], code, "unexpected error code: {body}");
    body
}

/// The contract's error shape, whatever the code.
pub fn assert_error_shape(body: &Value) {
    let object = body
        .as_object()
        .unwrap_or_else(|| panic!("error body is not an object: {body}"));
    for key in object.keys() {
        assert!(
            ["error", "message", "details"].contains(&key.as_str()),
            "unexpected key `{key}` in error body: {body}"
        );
    }
    let code = body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("`error` is not a string: {body}"));
    assert!(
        !code.is_empty() && code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
        "`error` is not a machine-readable code: {body}"
    );
    let message = body["message"]
        .as_str()
        .unwrap_or_else(|| panic!("`message` is not a string: {body}"));
    assert!(!message.is_empty(), "empty message: {body}");
    if code == "validation_failed" {
        let details = body["details"]
            .as_array()
            .unwrap_or_else(|| panic!("validation_failed without a details array: {body}"));
        assert!(
            !details.is_empty(),
            "validation_failed with no details: {body}"
        );
        for detail in details {
            let detail_object = detail
                .as_object()
                .unwrap_or_else(|| panic!("detail is not an object: {body}"));
            assert!(
                detail_object.keys().all(|k| k == "field" || k == "message"),
                "detail has unexpected keys: {body}"
            );
            assert!(
                detail["field"].is_string(),
                "detail.field is not a string: {body}"
            );
            assert!(
                detail["message"].as_str().is_some_and(|m| !m.is_empty()),
                "detail.message is not a non-empty string: {body}"
            );
        }
    } else {
        assert!(
            object.get("details").is_none(),
            "`details` is only for validation_failed: {body}"
        );
    }
}

/// Asserts a 400 `validation_failed` whose details name exactly `fields`.
pub async fn assert_validation_failed(response: Response, fields: &[&str]) -> Value {
    let body = assert_error(response, StatusCode::BAD_REQUEST, "validation_failed").await;
    let actual: BTreeSet<&str> = body["details"]
        .as_array()
        .expect("details checked above")
        .iter()
        .map(|d| d["field"].as_str().expect("field checked above"))
        .collect();
    let expected: BTreeSet<&str> = fields.iter().copied().collect();
    assert_eq!(actual, expected, "failing fields differ: {body}");
    body
}

/// Asserts 401 `invalid_token` with a `WWW-Authenticate: Bearer …` challenge.
/// When `token_presented`, the challenge must also carry `error="invalid_token"`.
pub async fn assert_invalid_token(response: Response, token_presented: bool) -> Value {
    let challenge = response
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .map(|v| {
            v.to_str()
                .expect("WWW-Authenticate is not ASCII")
                .to_owned()
        });
    let body = assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    let challenge = challenge.unwrap_or_else(|| panic!("no WWW-Authenticate header; body: {body}"));
    assert!(
        challenge.starts_with("Bearer"),
        "WWW-Authenticate is not a Bearer challenge: {challenge}"
    );
    if token_presented {
        assert!(
            challenge.contains("error=\"invalid_token\""),
            "WWW-Authenticate lacks error=\"invalid_token\": {challenge}"
        );
    }
    body
}

/// Asserts a well-formed token response (status already checked) for `email`.
pub fn assert_token_response(body: &Value, email: &str, role: &str) {
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert_eq!(body["expires_in"], 900, "{body}");
    let access = body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token: {body}"));
    assert_eq!(
        access.split('.').count(),
        3,
        "access token is not a JWS: {access}"
    );
    let refresh = body["refresh_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no refresh_token: {body}"));
    assert_eq!(
        refresh.len(),
        43,
        "refresh token is not 43 chars: {refresh}"
    );
    assert_eq!(
        b64url_decode(refresh).len(),
        32,
        "refresh token is not 32 bytes of base64url: {refresh}"
    );
    let refresh_expires_in = body["refresh_expires_in"]
        .as_i64()
        .unwrap_or_else(|| panic!("refresh_expires_in is not an integer: {body}"));
    assert!(
        refresh_expires_in > 0 && refresh_expires_in <= 43_200,
        "refresh_expires_in out of range: {body}"
    );
    assert_user(&body["user"], email, role);
}

/// Asserts a User object.
pub fn assert_user(user: &Value, email: &str, role: &str) {
    let object = user
        .as_object()
        .unwrap_or_else(|| panic!("user is not an object: {user}"));
    let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from(["id", "email", "role", "disabled", "created_at"]),
        "user has unexpected fields: {user}"
    );
    let id = user["id"].as_str().expect("user.id is not a string");
    Uuid::parse_str(id).unwrap_or_else(|e| panic!("user.id is not a UUID ({e}): {user}"));
    assert_eq!(user["email"], email, "{user}");
    assert_eq!(user["role"], role, "{user}");
    assert!(user["disabled"].is_boolean(), "{user}");
    let created_at = user["created_at"]
        .as_str()
        .expect("created_at is not a string");
    DateTime::parse_from_rfc3339(created_at)
        .unwrap_or_else(|e| panic!("created_at is not RFC 3339 ({e}): {user}"));
}

/// Asserts a Session object and returns its id.
pub fn assert_session_shape(session: &Value) -> String {
    let object = session
        .as_object()
        .unwrap_or_else(|| panic!("session is not an object: {session}"));
    let keys: BTreeSet<&str> = object.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "id",
            "created_at",
            "last_used_at",
            "expires_at",
            "revoked_at",
            "revoked_reason",
            "user_agent",
            "ip"
        ]),
        "session has unexpected fields: {session}"
    );
    for field in ["created_at", "last_used_at", "expires_at"] {
        let value = session[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} is not a string: {session}"));
        DateTime::parse_from_rfc3339(value)
            .unwrap_or_else(|e| panic!("{field} is not RFC 3339 ({e}): {session}"));
    }
    let id = session["id"].as_str().expect("session id is not a string");
    Uuid::parse_str(id).unwrap_or_else(|e| panic!("session id is not a UUID ({e})"));
    id.to_owned()
}

pub fn header(response: &Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().expect("header is not ASCII").to_owned())
}
