//! Several `gatehouse serve` processes on one PostgreSQL database, behind one URL: a
//! test-only HTTP front that hands each request to the next replica in turn, as a
//! round-robin load balancer does, and appends the client's address to
//! `X-Forwarded-For` (the replicas trust the front's loopback hop).
//!
//! A client that wants to look like another address sends its own `X-Forwarded-For`:
//! the front appends the loopback hop after it, and the replicas take the rightmost
//! untrusted hop, as they would behind a real proxy.
//!
//! A replica that refuses connections (killed, restarting) is skipped, like nginx's
//! `proxy_next_upstream error`; a request that reached a replica is never sent to
//! another (a replayed refresh would spend a token twice). The front answers 502 when
//! the replica it reached dies before answering.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use parking_lot::RwLock;

use super::pgdb::TestDatabase;
use super::process::{Binary, Server};

/// Headers that describe one connection, not the request: never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
];

/// N replicas on one fresh PostgreSQL database (keys in it, sealed under one KEK), and
/// the front.
pub struct Replicas {
    pub front: Front,
    servers: Vec<Option<Server>>,
    pub binary: Binary,
    /// Dropped after the servers: the database outlives its connections.
    _database: TestDatabase,
    _dir: tempfile::TempDir,
}

impl Replicas {
    /// Starts `n` replicas, each configured by `tune` on top of the shared settings, and
    /// the front; `None` (said loudly) when `GATEHOUSE_TEST_POSTGRES=off`.
    pub async fn start(test: &str, n: usize, tune: impl Fn(Binary) -> Binary) -> Option<Self> {
        let database = TestDatabase::new(test)?;
        let dir = tempfile::tempdir().expect("temp dir");
        let binary = tune(
            Binary::in_dir(dir.path())
                .on_postgres(&database.url_text())
                .with("GATEHOUSE_TRUSTED_PROXIES", "127.0.0.1/32"),
        );
        // The first start makes the keys and the refresh secret in the database; the
        // others load them.
        let mut servers = vec![Some(binary.start().await)];
        for _ in 1..n {
            servers.push(Some(binary.start().await));
        }
        let front = Front::start(servers.iter().flatten().map(|s| s.base.clone()).collect());
        Some(Self {
            front,
            servers,
            binary,
            _database: database,
            _dir: dir,
        })
    }

    /// `path` through the front.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.front.base, path)
    }

    /// Replica `i` directly, bypassing the front.
    pub fn replica(&self, i: usize) -> &Server {
        self.servers[i].as_ref().expect("that replica was killed")
    }

    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// SIGKILLs replica `i`; the front goes on offering it requests, which it refuses.
    pub async fn kill(&mut self, i: usize) {
        if let Some(server) = self.servers[i].take() {
            server.kill().await;
        }
    }

    /// Takes replica `i` out of the front's rotation, as the endpoints controller does
    /// during a rolling update's `preStop` pause, and hands back its still running
    /// server, for the caller to stop.
    pub async fn take_out(&mut self, i: usize) -> Server {
        self.front.state.backends.write()[i] = None;
        // What `preStop` is for, shortened: requests the front handed over just before
        // the removal are still connecting, and a connection that SIGTERM finds with no
        // request read yet is closed.
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.servers[i].take().expect("that replica is not running")
    }

    /// Starts a new process in slot `i`, into the rotation once it answers `/healthz`.
    pub async fn put_back(&mut self, i: usize) {
        let new = self.binary.start().await;
        self.front.state.backends.write()[i] = Some(new.base.clone());
        self.servers[i] = Some(new);
    }

    /// Requests the front handed to each replica (connections refused not counted).
    pub fn served(&self) -> Vec<usize> {
        self.front
            .state
            .served
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }
}

/// The front: its own actix system on its own thread, stopped when dropped.
pub struct Front {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    state: Arc<FrontState>,
    server: actix_web::dev::ServerHandle,
}

struct FrontState {
    /// `None` while a replica is out of the rotation (being replaced).
    backends: RwLock<Vec<Option<String>>>,
    next: AtomicUsize,
    served: Vec<AtomicUsize>,
    client: reqwest::Client,
}

impl Front {
    fn start(backends: Vec<String>) -> Self {
        let served = backends.iter().map(|_| AtomicUsize::new(0)).collect();
        let state = Arc::new(FrontState {
            backends: RwLock::new(backends.into_iter().map(Some).collect()),
            next: AtomicUsize::new(0),
            served,
            // A connection per request, as a balancer that closes upstream connections
            // would: an idle pooled connection to a replica that is shutting down can be
            // closed under a request the front is sending, which then fails with no way
            // to tell whether the replica saw it. A refused connect is always safe to
            // send elsewhere.
            client: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(60))
                .connect_timeout(Duration::from_secs(2))
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("front client"),
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let shared = Arc::clone(&state);
        std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(async move {
                let data = web::Data::from(shared);
                let server = HttpServer::new(move || {
                    App::new()
                        .app_data(data.clone())
                        .app_data(web::PayloadConfig::new(1 << 20))
                        .default_service(web::to(forward))
                })
                .workers(2)
                .bind("127.0.0.1:0")
                .expect("bind the front");
                let port = server.addrs()[0].port();
                let server = server.run();
                tx.send((port, server.handle())).expect("report the front");
                let _ = server.await;
            });
        });
        let (port, server) = rx.recv().expect("the front did not start");
        Self {
            base: format!("http://127.0.0.1:{port}"),
            state,
            server,
        }
    }
}

impl Drop for Front {
    fn drop(&mut self) {
        // Not awaited: the system's thread ends by itself once the server has stopped.
        drop(self.server.stop(false));
    }
}

async fn forward(req: HttpRequest, body: web::Bytes, state: web::Data<FrontState>) -> HttpResponse {
    let backends = state.backends.read().clone();
    let peer = req
        .peer_addr()
        .map_or_else(|| "unknown".to_owned(), |a| a.ip().to_string());
    let forwarded_for = match req.headers().get("x-forwarded-for") {
        Some(v) => format!("{}, {peer}", v.to_str().unwrap_or_default()),
        None => peer,
    };
    let path = req
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    for _ in 0..backends.len() {
        let i = state.next.fetch_add(1, Ordering::Relaxed) % backends.len();
        let Some(backend) = &backends[i] else {
            continue;
        };
        let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes())
            .expect("actix parsed the method");
        let mut outgoing = state
            .client
            .request(method, format!("{backend}{path}"))
            .body(body.clone());
        for (name, value) in req.headers() {
            let name = name.as_str();
            if !HOP_BY_HOP.contains(&name) && name != "x-forwarded-for" {
                outgoing = outgoing.header(name, value.as_bytes());
            }
        }
        outgoing = outgoing.header("x-forwarded-for", &forwarded_for);
        match outgoing.send().await {
            Ok(response) => {
                state.served[i].fetch_add(1, Ordering::Relaxed);
                let mut reply = HttpResponse::build(
                    actix_web::http::StatusCode::from_u16(response.status().as_u16())
                        .expect("a status reqwest parsed"),
                );
                for (name, value) in response.headers() {
                    let name = name.as_str();
                    if !HOP_BY_HOP.contains(&name) && name != "content-length" {
                        reply.append_header((name, value.as_bytes()));
                    }
                }
                return match response.bytes().await {
                    Ok(bytes) => reply.body(bytes),
                    Err(e) => HttpResponse::BadGateway().body(format!("front: body lost: {e}")),
                };
            }
            // Refused before the request went out: the next replica may take it.
            Err(e) if e.is_connect() => continue,
            Err(e) => return HttpResponse::BadGateway().body(format!("front: {e}")),
        }
    }
    HttpResponse::BadGateway().body("front: no replica accepts connections")
}

/// POSTs `body` as JSON (with `token` as its bearer), for tests that send one request to
/// several replicas at once: the status and the body, as JSON when it is JSON.
pub async fn post(
    client: &reqwest::Client,
    url: String,
    token: Option<&str>,
    body: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let mut request = client.post(url).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("no answer");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}
