//! The app in this process: every test gets its own app, database, keys and clock.
//!
//! Naming: `post_*`, `get_*` and the other raw helpers return the `Response` whatever its
//! status; `*_ok` helpers assert the success status and return the body, typed where the
//! contract fixes its shape ([`Tokens`]), as JSON where tests look at arbitrary parts.
//!
//! Tests look at stored state only through the app's `Store` ([`TestApp::store`]), never
//! through a backend's tables, so the same suite runs on every [`Backend`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web;
use chrono::{DateTime, Utc};
use gatehouse::clock::{Clock, ManualClock};
use gatehouse::config::{Database, Settings};
use gatehouse::domain::{Email, NewPassword, Role};
use gatehouse::domain::{FamilyId, Session, UserId};
use gatehouse::service::{AppState, accounts};
use gatehouse::startup::Application;
use gatehouse::storage::{Store, StoreError, StoredToken};
use jsonwebtoken::{Algorithm, EncodingKey};
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;
use uuid::Uuid;

use super::body::Tokens;
use super::contract::expect_json;
use super::jwt::sign_jwt;
use super::pgdb::{TestDatabase, loud};
use super::process::Binary;

/// The User-Agent every test request carries.
pub const USER_AGENT: &str = "gatehouse-api-tests/1.0";

/// The storage backend an app runs on. A test of the HTTP suite that depends on storage
/// runs once per backend (`#[both_backends]`, from `tests/macros`), with the backend in
/// [`Backend::scope`]; any other test runs on what `GATEHOUSE_TEST_BACKEND` names
/// (`sqlite`, the default, or `postgres`); a test that is about one backend's files names
/// it with [`spawn_app_on`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

tokio::task_local! {
    /// The backend of the `#[both_backends]` variant running in this task. A task-local rather than an environment variable: both variants of a
    /// test run at the same time in one process.
    static SCOPED: Backend;
}

impl Backend {
    /// Runs `test` with `spawn_app()` (and everything else that asks [`Backend::from_env`])
    /// on this backend: what `#[both_backends]` expands to.
    pub async fn scope<F: std::future::Future>(self, test: F) -> F::Output {
        SCOPED.scope(self, test).await
    }

    /// The backend of this test: its variant's in [`Backend::scope`], else what
    /// `GATEHOUSE_TEST_BACKEND` says (`sqlite`, the default, or `postgres`).
    pub fn from_env() -> Self {
        if let Ok(backend) = SCOPED.try_with(|backend| *backend) {
            return backend;
        }
        // A task spawned by a per-backend test does not inherit the scope: an app started
        // there would quietly run on the default backend, so refuse instead.
        let thread = std::thread::current();
        let test = thread.name().unwrap_or_default();
        assert!(
            !(test.ends_with("::postgres") || test.ends_with("::sqlite")),
            "{test}: an app was started outside the test's backend scope (in a spawned task?); \
             start it in the test's own task, or name its backend with spawn_app_on"
        );
        match std::env::var("GATEHOUSE_TEST_BACKEND") {
            Err(std::env::VarError::NotPresent) => Backend::Sqlite,
            Ok(name) => match name.as_str() {
                "" | "sqlite" => Backend::Sqlite,
                "postgres" => Backend::Postgres,
                other => panic!("GATEHOUSE_TEST_BACKEND={other:?}: expected sqlite or postgres"),
            },
            Err(e) => panic!("GATEHOUSE_TEST_BACKEND is unreadable: {e}"),
        }
    }

    /// The test settings on this backend, with any files under `dir`, and the database
    /// they name when it is not a file there. Everything backend-specific about a test
    /// app is decided here.
    fn settings(self, dir: &Path) -> (Settings, Option<TestDatabase>) {
        let mut settings = Settings::for_tests(dir);
        match self {
            Backend::Sqlite => (settings, None),
            Backend::Postgres => {
                let test = std::thread::current().name().unwrap_or("a test").to_owned();
                let Some(database) = TestDatabase::new(&test) else {
                    static ONCE: std::sync::Once = std::sync::Once::new();
                    ONCE.call_once(|| {
                        loud(
                            "GATEHOUSE_TEST_POSTGRES=off: the HTTP tests meant for PostgreSQL \
                             run on SQLite instead.",
                        )
                    });
                    return (settings, None);
                };
                settings.storage.database = Database::Postgres(database.url().into());
                // On PostgreSQL the keys live in the database, sealed under this.
                settings.storage.key_encryption_key_file = Some(write_kek(dir));
                (settings, Some(database))
            }
        }
    }
}

/// Where an app's rate limiter counts. An app asked for on PostgreSQL counts in Redis, the
/// configuration of several replicas (PostgreSQL and Redis), one on SQLite in memory, so
/// `#[both_backends]` runs every rate-limit test on both stores;
/// `GATEHOUSE_TEST_RATE_LIMIT_STORE` (`memory` or `redis`) picks it for every test. An app
/// on Redis counts under a key prefix of its own on the shared server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimiterStore {
    Memory,
    Redis,
}

impl LimiterStore {
    /// The store for the current test's backend ([`Backend::from_env`]).
    pub fn from_env() -> Self {
        Self::for_backend(Backend::from_env())
    }

    /// The store for an app asked for on `backend` (before `GATEHOUSE_TEST_POSTGRES=off`
    /// moves it to SQLite: the variant keeps counting where its configuration would).
    pub fn for_backend(backend: Backend) -> Self {
        match std::env::var("GATEHOUSE_TEST_RATE_LIMIT_STORE") {
            Ok(name) => match name.as_str() {
                "memory" => LimiterStore::Memory,
                "redis" => LimiterStore::Redis,
                "" => Self::by_backend(backend),
                other => {
                    panic!("GATEHOUSE_TEST_RATE_LIMIT_STORE={other:?}: expected memory or redis")
                }
            },
            Err(_) => Self::by_backend(backend),
        }
    }

    fn by_backend(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => LimiterStore::Memory,
            Backend::Postgres => LimiterStore::Redis,
        }
    }

    /// Points `settings` at this store (memory when `GATEHOUSE_TEST_REDIS=off`).
    fn apply(self, settings: &mut Settings) {
        if self == LimiterStore::Redis
            && let Some(url) = super::redis::shared()
        {
            settings.rate_limits.store = Some(url);
            settings.rate_limits.key_prefix = super::redis::unique_prefix();
        }
    }
}

pub struct TestApp {
    pub backend: Backend,
    /// `http://127.0.0.1:<port>`
    pub address: String,
    pub port: u16,
    pub settings: Settings,
    pub clock: ManualClock,
    /// The running app's state, for seeding through the service layer.
    pub state: web::Data<AppState>,
    /// Keeps the database and keys alive for the test's duration.
    pub dir: TempDir,
    pub api_client: reqwest::Client,
    /// The PostgreSQL database of this app, if it runs on one; last, so it is dropped
    /// after the app's state (and with it the state's pool, unless a replica or a
    /// request still holds it: the drop forces those connections closed).
    pub database: Option<TestDatabase>,
}

/// Spawns the app with the test settings (cheap Argon2, no per-IP rate limits).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns the app after letting the test adjust the settings.
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_app_on(Backend::from_env(), configure).await
}

/// Spawns the app on `backend`, whatever `GATEHOUSE_TEST_BACKEND` says.
pub async fn spawn_app_on(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("failed to create a temporary directory");
    let limiter = LimiterStore::for_backend(backend);
    let (mut settings, database) = backend.settings(dir.path());
    // The backend the app really runs on (PostgreSQL falls back to SQLite when it is off).
    let backend = if database.is_some() {
        Backend::Postgres
    } else {
        Backend::Sqlite
    };
    limiter.apply(&mut settings);
    configure(&mut settings);
    let clock = ManualClock::starting_now();
    let (port, state) = start(&settings, &clock).await;

    let api_client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(USER_AGENT)
        .build()
        .expect("failed to build the HTTP client");

    TestApp {
        backend,
        address: format!("http://127.0.0.1:{port}"),
        port,
        settings,
        clock,
        state,
        dir,
        api_client,
        database,
    }
}

/// Builds the app exactly as `gatehouse serve` does, but on port 0 and `clock`, and runs
/// it on the current runtime.
async fn start(settings: &Settings, clock: &ManualClock) -> (u16, web::Data<AppState>) {
    let app = Application::build_with_clock(settings.clone(), Arc::new(clock.clone()))
        .await
        .expect("failed to build the application");
    let port = app.port();
    let state = app.state();
    tokio::spawn(app.run_until_stopped());
    (port, state)
}

/// A new key-encryption key file in `dir`: 32 random bytes, mode 0600.
pub fn write_kek(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(format!("kek-{}", Uuid::new_v4().simple()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .expect("cannot create the KEK file");
    file.write_all(&gatehouse::crypto::random_bytes::<32>())
        .expect("cannot write the KEK file");
    path
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

    pub async fn post_signup(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/v1/signup",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Signs up; panics unless 201 with a token response.
    pub async fn signup_ok(&self, email: &str, password: &str) -> Tokens {
        let response = self.post_signup(email, password).await;
        Tokens::from_json(expect_json(response, StatusCode::CREATED).await)
    }

    pub async fn post_login(&self, email: &str, password: &str) -> Response {
        self.post_json(
            "/v1/login",
            &json!({ "email": email, "password": password }),
        )
        .await
    }

    /// Logs in; panics unless 200 with a token response.
    pub async fn login_ok(&self, email: &str, password: &str) -> Tokens {
        let response = self.post_login(email, password).await;
        Tokens::from_json(expect_json(response, StatusCode::OK).await)
    }

    pub async fn post_refresh(&self, refresh_token: &str) -> Response {
        self.post_json("/v1/refresh", &json!({ "refresh_token": refresh_token }))
            .await
    }

    /// Refreshes; panics unless 200 with a token response.
    pub async fn refresh_ok(&self, refresh_token: &str) -> Tokens {
        let response = self.post_refresh(refresh_token).await;
        Tokens::from_json(expect_json(response, StatusCode::OK).await)
    }

    pub async fn post_logout(&self, refresh_token: &str) -> Response {
        self.post_json("/v1/logout", &json!({ "refresh_token": refresh_token }))
            .await
    }

    pub async fn get_me(&self, access_token: &str) -> Response {
        self.get_with_token("/v1/me", access_token).await
    }

    /// The caller's live sessions; panics unless 200.
    pub async fn my_sessions_ok(&self, access_token: &str) -> Vec<Value> {
        let response = self.get_with_token("/v1/me/sessions", access_token).await;
        sessions_in(expect_json(response, StatusCode::OK).await)
    }

    /// A user's sessions as an admin sees them (revoked ones too); panics unless 200.
    pub async fn admin_sessions_ok(&self, admin_token: &str, user_id: &str) -> Vec<Value> {
        let response = self
            .get_with_token(&format!("/v1/admin/users/{user_id}/sessions"), admin_token)
            .await;
        sessions_in(expect_json(response, StatusCode::OK).await)
    }

    /// Creates an admin through the service layer, with this app's cheap hasher (the
    /// CLI would hash with production Argon2, in another process), and logs them in.
    /// `admin::the_cli_admin_is_an_admin_in_the_token` covers the CLI's own path.
    pub async fn create_admin(&self, email: &str, password: &str) -> Tokens {
        let parsed_email = Email::parse(email).expect("the admin's email is invalid");
        let parsed_password =
            NewPassword::parse(password).expect("the admin's password breaks the policy");
        accounts::create_user(&self.state, parsed_email, parsed_password, Role::Admin)
            .await
            .expect("failed to create the admin");
        let tokens = self.login_ok(email, password).await;
        assert_eq!(tokens.user.role, "admin", "seeded admin: {tokens}");
        tokens
    }

    // ---------------------------------------------------------------- the binary

    /// The real binary on this app's database and keys directory.
    pub fn binary(&self) -> Binary {
        let binary = Binary {
            // On PostgreSQL the URL is set below, after this placeholder.
            database: (self.settings.storage.database.sqlite_path())
                .map_or_else(PathBuf::new, Path::to_path_buf),
            keys_dir: self.settings.server.keys_dir.clone(),
            ..Binary::in_dir(self.dir.path())
        };
        let binary = match &self.settings.storage.key_encryption_key_file {
            Some(kek) => binary.with(
                "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE",
                &kek.display().to_string(),
            ),
            None => binary,
        };
        match &self.database {
            // Set after `GATEHOUSE_DATABASE=<file>`, so the URL is what the child sees.
            Some(database) => binary.with("GATEHOUSE_DATABASE", &database.url_text()),
            None => binary,
        }
    }

    /// Runs the `gatehouse` CLI on this app's files, feeding `stdin` (if any); panics
    /// unless it exits 0. Returns its stdout.
    pub async fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        self.binary().cli_ok(args, stdin).await
    }

    /// Starts a second instance on the same database, keys directory and clock (another
    /// replica, or this one restarted); returns its base address.
    pub async fn spawn_replica(&self) -> String {
        let (port, _) = start(&self.settings, &self.clock).await;
        format!("http://127.0.0.1:{port}")
    }

    // ---------------------------------------------------------------- keys and tokens

    pub fn keys_dir(&self) -> PathBuf {
        PathBuf::from(&self.settings.server.keys_dir)
    }

    /// The PEM bytes of the access-token signing key, as the running app holds it
    /// (from the keys dir, or from the database on PostgreSQL).
    pub fn signing_key_pem(&self) -> Vec<u8> {
        let der = self
            .state
            .keys()
            .signer()
            .pkcs8_der()
            .expect("cannot encode the signing key");
        pem::encode(&pem::Pem::new("PRIVATE KEY", der)).into_bytes()
    }

    pub fn signing_key(&self) -> EncodingKey {
        EncodingKey::from_rsa_pem(&self.signing_key_pem()).expect("signing key is not an RSA PEM")
    }

    /// The JWK Set; panics unless 200.
    pub async fn jwks_ok(&self) -> Value {
        let response = self.get("/.well-known/jwks.json").await;
        expect_json(response, StatusCode::OK).await
    }

    /// The kid of the only key in the JWKS.
    pub async fn current_kid(&self) -> String {
        let jwks = self.jwks_ok().await;
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
            "iss": self.settings.tokens.issuer,
            "aud": self.settings.tokens.audience,
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

    // ---------------------------------------------------------------- storage

    /// Runs `job` on the app's store, on the blocking pool as the service does (a
    /// synchronous database client may not block a runtime thread); panics on an error.
    pub async fn store<T: Send + 'static>(
        &self,
        job: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> T {
        let store = Arc::clone(&self.state.store);
        tokio::task::spawn_blocking(move || job(store.as_ref()))
            .await
            .expect("the storage job panicked")
            .unwrap_or_else(|e| panic!("the store failed: {e}"))
    }

    /// The stored state of a refresh token given in plaintext; `None` when the store does
    /// not know it. Looked up by the SHA-256 of the token's text, computed here rather
    /// than by the service's own code, so a change of what is stored shows up.
    pub async fn stored_token(&self, refresh_token: &str) -> Option<StoredToken> {
        let hash: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, refresh_token.as_bytes())
            .as_ref()
            .try_into()
            .expect("SHA-256 is 32 bytes");
        self.store(move |s| s.find_refresh_token(hash)).await
    }

    /// Every session of `user_id` as stored, ended ones included.
    pub async fn stored_sessions(&self, user_id: &str) -> Vec<Session> {
        let user = parse_user_id(user_id);
        let now = self.now();
        self.store(move |s| s.list_sessions(user, true, now)).await
    }

    /// The stored session `sid` of `user_id`; panics when there is none.
    pub async fn stored_session(&self, user_id: &str, sid: &str) -> Session {
        let family: FamilyId = sid
            .parse()
            .unwrap_or_else(|e| panic!("{sid:?} is not a session id: {e}"));
        self.stored_sessions(user_id)
            .await
            .into_iter()
            .find(|session| session.id == family)
            .unwrap_or_else(|| panic!("session {sid} of user {user_id} is not stored"))
    }
}

fn parse_user_id(user_id: &str) -> UserId {
    user_id
        .parse()
        .unwrap_or_else(|e| panic!("{user_id:?} is not a user id: {e}"))
}

fn sessions_in(body: Value) -> Vec<Value> {
    body["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("`sessions` is not an array: {body}"))
        .clone()
}
