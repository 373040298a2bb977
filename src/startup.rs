//! Builds the app the same way for production and tests: bind (port 0 is fine), expose
//! the port, then run until stopped.

use std::collections::HashSet;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::{Method, header};
use actix_web::middleware::{DefaultHeaders, from_fn};
use actix_web::{App, HttpServer, web};
use anyhow::Context as _;
use uuid::Uuid;

use crate::clock::{Clock, SystemClock};
use crate::config::{Database, ServerSettings, Settings, TokenSettings};
use crate::crypto::jwt::{self, AccessClaims};
use crate::crypto::keys::KeyRing;
use crate::crypto::keystore::{FileKeyStore, KeyStore};
use crate::crypto::lifecycle::HandPlaced;
use crate::crypto::password::PasswordHasher;
use crate::crypto::refresh::RefreshSecret;
use crate::domain::{AuditKind, Role};
use crate::http;
use crate::http::limiter::RateLimiters;
use crate::service::AppState;
use crate::service::keystore::DatabaseKeyStore;
use crate::storage::serving::{self, Serving};
use crate::storage::{self, AuditEvent, DatabaseSettings, Store};

pub struct Application {
    port: u16,
    server: Server,
    state: web::Data<AppState>,
    limiters: web::Data<RateLimiters>,
    /// Reported at start; the key watcher reports only files added after this.
    hand_placed: Vec<HandPlaced>,
    /// Held until the server has stopped, so `migrate-data` refuses to copy under it.
    serving: Option<Serving>,
    /// For the background tasks, which read their own settings.
    settings: Settings,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        Self::build_with_clock(settings, Arc::new(SystemClock)).await
    }

    pub async fn build_with_clock(
        settings: Settings,
        clock: Arc<dyn Clock>,
    ) -> anyhow::Result<Self> {
        let (state, hand_placed) = build_state_reporting(&settings, clock)?;
        let serving = match settings.database_settings() {
            DatabaseSettings::Sqlite { path, .. } => Some(serving::serve(&path)?),
            DatabaseSettings::Postgres { .. } => None,
        };
        // Only a serving process may: the CLI runs beside a server whose leases are live.
        let store = Arc::clone(&state.store);
        tokio::task::spawn_blocking(move || store.release_orphaned_leases())
            .await
            .context("releasing the login leases of earlier processes")?
            .context("cannot release the login leases of earlier processes")?;
        let state = web::Data::new(state);
        report_hand_placed(&state, &settings.server.keys_dir, &hand_placed).await;
        let listener = TcpListener::bind(&settings.server.bind)
            .with_context(|| format!("cannot listen on {}", settings.server.bind))?;
        let port = listener.local_addr()?.port();
        let app_state = state.clone();
        // The limiters are the HTTP layer's: the service below never sees them.
        crate::http::limiter::refuse_broken_tls(&settings.rate_limits)
            .await
            .map_err(anyhow::Error::msg)?;
        let limiters = web::Data::new(RateLimiters::new(&settings.rate_limits));
        let http_settings = web::Data::new(settings.http.clone());
        // In the background: a replica starts (and serves) while Redis is down.
        tokio::spawn({
            let limiters = limiters.clone();
            async move { limiters.warm_up().await }
        });
        let app_limiters = limiters.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(app_state.clone())
                .app_data(app_limiters.clone())
                .app_data(http_settings.clone())
                .wrap(cors(&http_settings.cors_origins))
                .wrap(security_headers(http_settings.hsts))
                .wrap(from_fn(http::middleware::observe))
                .configure(http::routes)
        })
        .workers(settings.server.http_workers)
        // Slow clients lose their slot: headers within 5 s, idle keep-alive 30 s.
        .client_request_timeout(Duration::from_secs(5))
        .client_disconnect_timeout(Duration::from_secs(2))
        .keep_alive(Duration::from_secs(30))
        .shutdown_timeout(20)
        .listen(listener)?
        .run();
        tracing::info!(
            addr = %format!("{}:{port}", listener_host(&settings.server.bind)),
            issuer = %settings.tokens.issuer,
            kid = %state.keys().signer().kid,
            // Redacted: the URL's password never reaches a log.
            rate_limits = %match (&settings.rate_limits.store, settings.rate_limits.enabled) {
                (_, false) => "off".to_owned(),
                (None, true) => "in memory (this process)".to_owned(),
                (Some(url), true) => format!("in Redis at {url}"),
            },
            "gatehouse listening"
        );
        Ok(Self {
            port,
            server,
            state,
            limiters,
            hand_placed,
            serving,
            settings,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// Serves until SIGINT/SIGTERM; in-flight requests are drained (up to 20 s).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let maintenance = tokio::spawn(maintain(
            self.state.clone(),
            self.limiters,
            self.settings.server.clone(),
        ));
        let keys = tokio::spawn(watch_keys(
            self.state.clone(),
            self.settings,
            self.hand_placed.into_iter().collect(),
        ));
        // SMTP is never waited for here: an outage only keeps mail queued.
        let mail = self.state.mail.clone().map(|mail| {
            tokio::spawn(crate::service::mail::sender::run(
                self.state.clone().into_inner(),
                mail,
            ))
        });
        let result = self.server.await;
        if let Some(mail) = mail {
            mail.abort();
        }
        maintenance.abort();
        keys.abort();
        drop(self.serving);
        result
    }
}

fn listener_host(bind: &str) -> &str {
    bind.rsplit_once(':').map_or(bind, |(h, _)| h)
}

/// Opens storage, loads (or creates) keys and the refresh secret, and self-tests signing.
pub fn build_state(settings: &Settings, clock: Arc<dyn Clock>) -> anyhow::Result<AppState> {
    build_state_reporting(settings, clock).map(|(state, _)| state)
}

/// `build_state`, and the key files it trusted that `keys.json` does not know.
fn build_state_reporting(
    settings: &Settings,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<(AppState, Vec<HandPlaced>)> {
    settings.validate()?;
    let store = storage::open(&settings.database_settings())?;
    let now = clock.now();
    // Off this thread: on PostgreSQL the key source is a synchronous client, which must
    // not run on a thread that drives a runtime (the server builds its state in one).
    let (source, keys, hand_placed, secret) = off_runtime(|| {
        let source = key_store(settings)?;
        let (keys, hand_placed) = load_or_create_keys(source.as_ref(), settings, now)?;
        self_test(&keys, &settings.tokens)?;
        let secret = load_or_create_secret(source.as_ref())?;
        Ok::<_, anyhow::Error>((source, keys, hand_placed, secret))
    })?;
    let hasher = PasswordHasher::new(settings.password_cost, settings.server.hash_workers)
        .context("cannot set up password hashing")?;
    let mut state = AppState::new(
        settings.policy(),
        store,
        keys,
        source,
        hasher,
        secret,
        clock,
    );
    state.mail = crate::service::mail::Mail::new(&settings.mail, &settings.tokens.issuer);
    state.passkeys = crate::service::passkeys::RelyingParty::new(&settings.webauthn)
        .map_err(anyhow::Error::msg)
        .context("cannot set up passkeys")?
        .map(Arc::new);
    Ok((state, hand_placed))
}

/// Where the keys are kept: the keys directory with SQLite, the database (sealed under
/// the key-encryption key) with PostgreSQL, so that replicas share them without a
/// shared file system. Blocking: call it off the async executor (see `off_runtime`).
pub fn key_store(settings: &Settings) -> anyhow::Result<Arc<dyn KeyStore>> {
    match &settings.storage.database {
        Database::Sqlite(_) => Ok(Arc::new(FileKeyStore::new(
            &settings.server.keys_dir,
            &settings.refresh_secret_path(),
        ))),
        Database::Postgres(url) => {
            let kek = settings
                .storage
                .key_encryption_key_file
                .as_deref()
                .context("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE is required on PostgreSQL")?;
            Ok(Arc::new(DatabaseKeyStore::open(
                url,
                settings.storage.db_connect_timeout,
                settings.storage.db_start_timeout,
                kek,
            )?))
        }
    }
}

/// Runs `job` on a thread of its own and waits for it (see `storage::open`).
pub fn off_runtime<T: Send>(job: impl FnOnce() -> anyhow::Result<T> + Send) -> anyhow::Result<T> {
    std::thread::scope(|scope| {
        std::thread::Builder::new()
            .name("keys-open".into())
            .spawn_scoped(scope, job)?
            .join()
            .map_err(|_| anyhow::anyhow!("loading the keys panicked"))?
    })
}

/// The store the settings name, migrated (see `storage::open`).
pub fn open_store(settings: &Settings) -> anyhow::Result<Arc<dyn Store>> {
    storage::open(&settings.database_settings())
}

/// Loads the key ring in force, and names the key files `keys.json` does not know;
/// when there is no key, generates an RSA-2048 key that signs at once, and says so.
pub fn load_or_create_keys(
    source: &dyn KeyStore,
    settings: &Settings,
    now: chrono::DateTime<chrono::Utc>,
) -> anyhow::Result<(KeyRing, Vec<HandPlaced>)> {
    if let Some(key) = source.ensure_signing_key(now)? {
        tracing::info!(kid = %key.kid, place = %key.place, "no signing key found: generated an RSA-2048 key");
    }
    source.load(now, settings.key_timing())
}

/// Hand-placed keys stay trusted, as operators rely on, but never silently: anyone who
/// could write the keys directory could otherwise mint tokens that every verifier
/// accepts. A warning and an audit event per key; never any key material.
async fn report_hand_placed(state: &AppState, keys_dir: &Path, hand_placed: &[HandPlaced]) {
    for key in hand_placed {
        tracing::warn!(
            file = %key.file,
            kid = %key.kid,
            dir = %keys_dir.display(),
            "trusting a key file that keys.json does not know (placed by hand?); \
             if nobody meant to add it, delete it and rotate"
        );
        state
            .audit(AuditEvent {
                detail: Some(format!("file={} kid={}", key.file, key.kid)),
                ..AuditEvent::new(state.now(), AuditKind::KeyAdopted, "ok")
            })
            .await;
    }
}

/// Re-reads the keys (directory or database) on SIGHUP and every `keys_reload_interval`, swapping in
/// the new ring when it differs. A directory that fails to load keeps the old ring.
/// A hand-placed key is reported once, when a reload first finds it (again if it
/// leaves and comes back).
async fn watch_keys(
    state: web::Data<AppState>,
    settings: Settings,
    mut reported: HashSet<HandPlaced>,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = signal(SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(settings.server.keys_reload_interval);
    let timing = settings.key_timing();
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let by_signal = match hangup.as_mut() {
            Some(sig) => tokio::select! {
                _ = sig.recv() => true,
                _ = tick.tick() => false,
            },
            None => {
                tick.tick().await;
                false
            }
        };
        let tokens = settings.tokens.clone();
        let source = Arc::clone(&state.key_store);
        let now = state.now();
        let loaded = tokio::task::spawn_blocking(move || {
            let (ring, hand_placed) = source.load(now, timing)?;
            self_test(&ring, &tokens)?;
            Ok::<_, anyhow::Error>((ring, hand_placed))
        })
        .await;
        match loaded {
            Ok(Ok((ring, hand_placed))) => {
                let new: Vec<HandPlaced> = hand_placed
                    .iter()
                    .filter(|k| !reported.contains(*k))
                    .cloned()
                    .collect();
                report_hand_placed(&state, &settings.server.keys_dir, &new).await;
                reported = hand_placed.into_iter().collect();
                let old = state.keys();
                if ring.jwks().etag != old.jwks().etag || ring.signer().kid != old.signer().kid {
                    tracing::info!(
                        signing_kid = %ring.signer().kid,
                        published = ring.keys().len(),
                        "key ring reloaded"
                    );
                    state.replace_keys(ring);
                } else if by_signal {
                    tracing::info!("SIGHUP: keys unchanged");
                }
            }
            Ok(Err(e)) => {
                tracing::error!(error = %format!("{e:#}"), "cannot reload keys; keeping the current ones")
            }
            Err(e) => tracing::error!(error = %e, "key reload task failed"),
        }
    }
}

fn load_or_create_secret(source: &dyn KeyStore) -> anyhow::Result<RefreshSecret> {
    let (secret, created) = source.refresh_secret()?;
    if created {
        tracing::info!(place = %source.describe_place(), "generated the refresh-token secret");
    }
    Ok(secret)
}

/// Signs and verifies one token with the loaded keys before serving, so a broken crypto
/// backend or key stops the start instead of failing every login.
fn self_test(keys: &KeyRing, settings: &TokenSettings) -> anyhow::Result<()> {
    let now = chrono::Utc::now();
    let claims = AccessClaims {
        iss: settings.issuer.clone(),
        aud: settings.audience.clone(),
        sub: Uuid::nil().into(),
        iat: now.timestamp(),
        nbf: now.timestamp(),
        exp: now.timestamp() + 60,
        jti: Uuid::new_v4(),
        sid: Uuid::nil().into(),
        role: Role::User,
        amr: vec!["pwd".into()],
    };
    let token = jwt::mint(keys, &claims).context("signing self-test failed")?;
    let back = jwt::verify(keys, &token, &settings.issuer, &settings.audience, now)
        .map_err(|e| anyhow::anyhow!("verification self-test failed: {e}"))?;
    anyhow::ensure!(back == claims, "self-test token came back altered");
    Ok(())
}

fn cors(origins: &[String]) -> Cors {
    // No credentials mode: tokens travel in bodies and the Authorization header, never
    // in cookies, so no origin ever needs `Access-Control-Allow-Credentials`.
    let mut cors = Cors::default()
        .allowed_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
        .allowed_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
        ])
        .expose_headers([header::RETRY_AFTER, header::WWW_AUTHENTICATE, header::ETAG])
        .block_on_origin_mismatch(false)
        .max_age(600);
    for origin in origins {
        cors = cors.allowed_origin(origin);
    }
    cors
}

fn security_headers(hsts: bool) -> DefaultHeaders {
    let mut headers = DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ))
        .add((header::CACHE_CONTROL, "no-store"));
    if hsts {
        headers = headers.add((
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=63072000; includeSubDomains",
        ));
    }
    headers
}

/// Background upkeep: prunes expired families, stale lockout windows and old audit
/// events, and lets idle rate-limit buckets go. Each pass runs off the executor.
async fn maintain(
    state: web::Data<AppState>,
    limiters: web::Data<RateLimiters>,
    server: ServerSettings,
) {
    let mut tick = tokio::time::interval(server.prune_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        limiters.forget_idle();
        let now = state.now();
        let window = state.policy.lockout.window.as_secs() as i64;
        let before = now
            - chrono::Duration::from_std(server.audit_retention).unwrap_or(chrono::Duration::MAX);
        match state.db(move |s| s.prune(now, window, before)).await {
            Ok(p) if p != Default::default() => tracing::info!(
                families = p.families,
                login_attempts = p.login_attempts,
                audit_events = p.audit_events,
                "pruned"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "pruning failed; will retry"),
        }
        let tombstones_before = now - crate::storage::clients::TOMBSTONE_KEEP;
        if let Err(e) = state
            .db(move |s| s.prune_tombstones(tombstones_before))
            .await
        {
            tracing::warn!(error = %e, "pruning tombstones failed; will retry");
        }
    }
}
