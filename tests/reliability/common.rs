//! Shared by the reliability tests: the real binary on a free port, an HTTP client, a
//! small seeded RNG, and the database invariants every run checks.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// A password that satisfies the policy.
pub const PASSWORD: &str = "Tr0ub4dor&3-horse";
/// The binary under test (debug or release, whichever profile `cargo test` built).
pub const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

/// A port nobody listens on right now (the server may lose a race for it: callers retry).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("cannot bind a loopback port")
        .port()
}

/// An HTTP client for one server life: generous timeouts, no stale pooled connections.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("gatehouse-reliability/1.0")
        .build()
        .expect("cannot build the HTTP client")
}

/// Where a server keeps its state, and the environment it runs with.
#[derive(Clone, Debug)]
pub struct ServerFiles {
    pub database: PathBuf,
    pub keys_dir: PathBuf,
    /// stdout and stderr of every start, appended.
    pub log: PathBuf,
    pub env: Vec<(String, String)>,
}

impl ServerFiles {
    /// `dir/gatehouse.db`, `dir/keys`, `dir/server.log`, production Argon2, no per-IP limits.
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            database: dir.join("gatehouse.db"),
            keys_dir: dir.join("keys"),
            log: dir.join("server.log"),
            env: vec![
                ("GATEHOUSE_RATE_LIMITS".into(), "off".into()),
                ("GATEHOUSE_HASH_WORKERS".into(), "2".into()),
                ("GATEHOUSE_HTTP_WORKERS".into(), "2".into()),
                ("GATEHOUSE_ISSUER".into(), "http://127.0.0.1".into()),
                ("RUST_LOG".into(), "warn".into()),
            ],
        }
    }

    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(args)
            .env_remove("GATEHOUSE_CONFIG")
            .env("GATEHOUSE_DATABASE", &self.database)
            .env("GATEHOUSE_KEYS_DIR", &self.keys_dir);
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// Runs a CLI subcommand to completion: (success, stdout + stderr).
    pub async fn cli(&self, args: &[&str], timeout: Duration) -> (bool, String) {
        let mut command = self.command(args);
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().expect("cannot start the gatehouse CLI");
        match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(Ok(out)) => (
                out.status.success(),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Ok(Err(e)) => (false, format!("cannot wait for the CLI: {e}")),
            Err(_) => (false, format!("the CLI did not finish within {timeout:?}")),
        }
    }

    /// Starts `gatehouse serve` and waits for `/healthz`; panics if it cannot.
    pub async fn start(&self) -> Server {
        match self.try_start().await {
            Ok(server) => server,
            Err(e) => panic!("the server did not start: {e}"),
        }
    }

    /// Starts `gatehouse serve` on a free port and waits (up to 60 s) for `/healthz`.
    /// `Err` carries the exit status and the log's tail when the process exits instead.
    pub async fn try_start(&self) -> Result<Server, String> {
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .expect("cannot open the server log");
            let mut command = self.command(&["serve"]);
            command
                .env("GATEHOUSE_BIND", format!("127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().expect("log fd")))
                .stderr(Stdio::from(log))
                .kill_on_drop(true);
            let mut child = command.spawn().expect("cannot start gatehouse");
            let base = format!("http://127.0.0.1:{port}");
            let probe = client();
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("exited with {status}; log tail:\n{}", self.log_tail());
                    break;
                }
                if let Ok(r) = probe.get(format!("{base}/healthz")).send().await
                    && r.status().is_success()
                {
                    return Ok(Server { child, base });
                }
                if Instant::now() > deadline {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return Err(format!(
                        "no /healthz within 60 s; log tail:\n{}",
                        self.log_tail()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            // Lost the port to someone else? Try another; any other exit is final.
            if !last.contains("cannot listen") {
                return Err(last);
            }
        }
        Err(last)
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// A running `gatehouse serve`; SIGKILLed when dropped.
pub struct Server {
    child: tokio::process::Child,
    pub base: String,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server has exited")
    }

    /// SIGKILL (no chance to flush, checkpoint or answer), then reap.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// xorshift64*: reproducible from a printed seed, no dependency.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    pub fn from_env_or_time(var: &str) -> (Self, u64) {
        let seed = std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(42)
            });
        (Self::new(seed), seed)
    }

    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }
}

/// The `sid` (family id) claim of an access token, without verifying it.
pub fn sid_of(access_token: &str) -> Option<String> {
    let payload = access_token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    claims["sid"].as_str().map(str::to_owned)
}

/// What storage keeps of a refresh token: SHA-256 of its text.
pub fn token_hash(token: &str) -> Vec<u8> {
    gatehouse::crypto::sha256(token.as_bytes()).to_vec()
}

/// A read-write connection with a generous busy timeout.
pub fn open_db(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    conn.busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    conn
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("`{sql}` failed: {e}"))
}

/// The invariants that hold for the live file and for any snapshot of it. Returns one
/// line per violation (empty: all hold).
pub fn storage_violations(conn: &rusqlite::Connection) -> Vec<String> {
    let mut out = Vec::new();
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .unwrap_or_else(|e| vec![format!("integrity_check failed to run: {e}")]);
    if integrity != ["ok"] {
        out.push(format!("PRAGMA integrity_check: {integrity:?}"));
    }
    let fk = count(conn, "SELECT COUNT(*) FROM pragma_foreign_key_check");
    if fk != 0 {
        out.push(format!("{fk} foreign-key violations"));
    }
    let checks = [
        (
            "families with two or more unspent tokens",
            "SELECT COUNT(*) FROM (SELECT family_id FROM refresh_tokens WHERE spent_at IS NULL
             GROUP BY family_id HAVING COUNT(*) > 1)",
        ),
        (
            "families with more than one first token",
            "SELECT COUNT(*) FROM (SELECT family_id FROM refresh_tokens WHERE parent_hash IS NULL
             GROUP BY family_id HAVING COUNT(*) > 1)",
        ),
        (
            "families without a first token",
            "SELECT COUNT(*) FROM refresh_families f WHERE NOT EXISTS
             (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.id AND t.parent_hash IS NULL)",
        ),
        (
            "child tokens whose parent is missing, unspent or in another family",
            "SELECT COUNT(*) FROM refresh_tokens c LEFT JOIN refresh_tokens p ON p.hash = c.parent_hash
             WHERE c.parent_hash IS NOT NULL
               AND (p.hash IS NULL OR p.spent_at IS NULL OR p.family_id <> c.family_id)",
        ),
        (
            "spent tokens with no child (a rotation half-written)",
            "SELECT COUNT(*) FROM refresh_tokens p WHERE p.spent_at IS NOT NULL AND NOT EXISTS
             (SELECT 1 FROM refresh_tokens c WHERE c.parent_hash = p.hash)",
        ),
    ];
    for (what, sql) in checks {
        let n = count(conn, sql);
        if n != 0 {
            out.push(format!("{n} {what}"));
        }
    }
    out
}
