//! Soak, the project's only one (ignored in the normal run): `scripts/soak.sh` runs it,
//! and so does `bench/run.sh --soak`. The real binary under a mixed load (logins,
//! refresh chains, JWKS, /v1/me) on loopback.
//!
//! 1. Capacity: a closed loop of `GATEHOUSE_SOAK_CONCURRENCY` clients for
//!    `GATEHOUSE_SOAK_PROBE` (default 30 s) measures the mix's throughput C.
//! 2. Soak: an open loop at `GATEHOUSE_SOAK_LOAD` (default 0.8) × C for
//!    `GATEHOUSE_SOAK_DURATION` (default 600 s), reporting every 10 s: requests, 5xx,
//!    other unexpected answers, transport errors, p50/p99/max latency, the server's RSS.
//!
//! `GATEHOUSE_SOAK_DATABASE` starts the server on a copy of that database (the benchmark
//! seeds one larger than SQLite's page caches, so that they fill during warm-up rather
//! than during the run, where the filling would look like growth).
//! `GATEHOUSE_SOAK_JSON` writes the figures to that file for `load --report`.
//!
//! Passes when there is no 5xx, no unexpected answer, no transport error, every request
//! went out on schedule, resident memory after warm-up (the first fifth) grows by less
//! than 10%, and the database's invariants hold at the end.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::invariants::{open_db, storage_violations};
use crate::kit::password::PASSWORD;
use crate::kit::process::{self, Binary, Server};
use crate::kit::rng::Rng;

/// Requests in flight at most during the open loop; past it a request is not sent and
/// the soak fails (the server fell behind the offered rate).
const MAX_IN_FLIGHT: u32 = 2048;
const WINDOW: Duration = Duration::from_secs(10);

fn env_f64(key: &str, default: f64) -> f64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Settings {
    duration: Duration,
    probe: Duration,
    load_factor: f64,
    concurrency: usize,
    database: Option<PathBuf>,
    json: Option<PathBuf>,
}

impl Settings {
    fn from_env() -> Self {
        let path = |key: &str| {
            std::env::var_os(key)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Self {
            duration: Duration::from_secs_f64(env_f64("GATEHOUSE_SOAK_DURATION", 600.0)),
            probe: Duration::from_secs_f64(env_f64("GATEHOUSE_SOAK_PROBE", 30.0)),
            load_factor: env_f64("GATEHOUSE_SOAK_LOAD", 0.8),
            concurrency: env_f64("GATEHOUSE_SOAK_CONCURRENCY", 32.0) as usize,
            database: path("GATEHOUSE_SOAK_DATABASE"),
            json: path("GATEHOUSE_SOAK_JSON"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Login,
    Refresh,
    Me,
    Jwks,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Login => "login",
            Op::Refresh => "refresh",
            Op::Me => "me",
            Op::Jwks => "jwks",
        }
    }
}

/// The mix, out of 100: logins are few (Argon2 is the costly part), as in real traffic.
fn pick(roll: u64) -> Op {
    match roll % 100 {
        0..3 => Op::Login,
        3..38 => Op::Refresh,
        38..75 => Op::Me,
        _ => Op::Jwks,
    }
}

/// What the load shares: accounts, refresh chains handed from request to request, access
/// tokens, and the counters of the current window.
struct Load {
    base: String,
    client: reqwest::Client,
    emails: Vec<String>,
    chains: Mutex<VecDeque<String>>,
    access: Mutex<Vec<String>>,
    serial: AtomicU64,
    window: Mutex<Window>,
}

#[derive(Default)]
struct Window {
    latencies_us: Vec<(Op, u32)>,
    server_errors: u64,
    /// Answers other than 200 that are not 5xx (a 429 for a right password, say).
    unexpected: u64,
    transport: u64,
    /// The first few unexpected answers, for the failure message.
    examples: Vec<String>,
}

impl Window {
    fn absorb(&mut self, other: Window) {
        self.latencies_us.extend_from_slice(&other.latencies_us);
        self.server_errors += other.server_errors;
        self.unexpected += other.unexpected;
        self.transport += other.transport;
        for e in other.examples {
            if self.examples.len() < 20 {
                self.examples.push(e);
            }
        }
    }

    fn sorted(&self, only: Option<Op>) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .latencies_us
            .iter()
            .filter(|(op, _)| only.is_none_or(|o| o == *op))
            .map(|(_, us)| *us)
            .collect();
        v.sort_unstable();
        v
    }

    fn errors(&self) -> u64 {
        self.server_errors + self.unexpected + self.transport
    }
}

impl Load {
    async fn one(&self, op: Op) {
        let n = self.serial.fetch_add(1, Ordering::Relaxed) as usize;
        let start = Instant::now();
        // A refresh needs a chain; when every chain is in flight, read instead.
        let op = match op {
            Op::Refresh if self.chains.lock().is_empty() => Op::Me,
            other => other,
        };
        let outcome = match self.request(op, n).send().await {
            Ok(r) => {
                let status = r.status();
                r.bytes().await.map(|b| (status, b))
            }
            Err(e) => Err(e),
        };
        let took = start.elapsed();
        let mut w = self.window.lock();
        w.latencies_us
            .push((op, took.as_micros().min(u32::MAX as u128) as u32));
        match outcome {
            Ok((StatusCode::OK, body)) => {
                drop(w);
                self.keep_tokens(op, n, &body);
            }
            Ok((status, _)) if status.is_server_error() => w.server_errors += 1,
            Ok((status, body)) => {
                w.unexpected += 1;
                if w.examples.len() < 20 {
                    let body = String::from_utf8_lossy(&body);
                    w.examples.push(format!("{op:?} answered {status}: {body}"));
                }
            }
            Err(_) => w.transport += 1,
        }
    }

    fn request(&self, op: Op, n: usize) -> reqwest::RequestBuilder {
        match op {
            Op::Login => {
                let email = &self.emails[n % self.emails.len()];
                self.client
                    .post(format!("{}/v1/login", self.base))
                    .json(&json!({"email": email, "password": PASSWORD}))
            }
            Op::Refresh => {
                let token = self.chains.lock().pop_front().unwrap_or_default();
                self.client
                    .post(format!("{}/v1/refresh", self.base))
                    .json(&json!({"refresh_token": token}))
            }
            Op::Me => {
                let access = {
                    let tokens = self.access.lock();
                    tokens[n % tokens.len()].clone()
                };
                self.client
                    .get(format!("{}/v1/me", self.base))
                    .bearer_auth(access)
            }
            Op::Jwks => self
                .client
                .get(format!("{}/.well-known/jwks.json", self.base)),
        }
    }

    /// Each refresh token is used once: its child goes back in the queue for a later
    /// refresh. Logins refresh the pool of access tokens, so none of them expires.
    fn keep_tokens(&self, op: Op, n: usize, body: &[u8]) {
        if !matches!(op, Op::Login | Op::Refresh) {
            return;
        }
        let v: Value = serde_json::from_slice(body).unwrap_or_default();
        if let Some(t) = v["refresh_token"].as_str() {
            let mut chains = self.chains.lock();
            if chains.len() < 4096 {
                chains.push_back(t.to_owned());
            }
        }
        if op == Op::Login
            && let Some(a) = v["access_token"].as_str()
        {
            let mut access = self.access.lock();
            if access.len() < 64 {
                access.push(a.to_owned());
            } else {
                access[n % 64] = a.to_owned();
            }
        }
    }

    fn take_window(&self) -> Window {
        std::mem::take(&mut *self.window.lock())
    }
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn rss_kib(pid: u32) -> u64 {
    crate::kit::rss::rss_kib(pid).expect("the server is gone: no resident memory to read")
}

/// User + system CPU seconds of one process, all its threads (USER_HZ is 100 on Linux).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name may hold spaces; the fields after its ')' are plain.
    let mut fields = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .skip(11);
    let mut next = || {
        fields
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (next() + next()) / 100.0
}

/// Starts the server, on a copy of `database` when given. The copy is synced first, or
/// the first checkpoint would write the whole fresh copy back during the soak.
async fn start_server(dir: &Path, database: Option<&Path>) -> (Binary, Server) {
    let files = Binary::in_dir(dir);
    if let Some(src) = database {
        std::fs::copy(src, &files.database)
            .unwrap_or_else(|e| panic!("cannot copy {}: {e}", src.display()));
        std::fs::File::open(&files.database)
            .and_then(|f| f.sync_all())
            .expect("sync the copy");
    }
    let server = files.start().await;
    (files, server)
}

/// 40 accounts, and a first family each.
async fn sign_up(server: &Server) -> Arc<Load> {
    let client = process::client();
    let (mut emails, mut chains, mut access) = (Vec::new(), VecDeque::new(), Vec::new());
    for i in 0..40 {
        let email = format!("soak-{i}@example.com");
        let r = client
            .post(server.url("/v1/signup"))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await
            .expect("signup");
        assert_eq!(r.status(), StatusCode::CREATED);
        let v: Value = r.json().await.expect("json");
        chains.push_back(v["refresh_token"].as_str().expect("refresh").to_owned());
        access.push(v["access_token"].as_str().expect("access").to_owned());
        emails.push(email);
    }
    Arc::new(Load {
        base: server.base.clone(),
        client,
        emails,
        chains: Mutex::new(chains),
        access: Mutex::new(access),
        serial: AtomicU64::new(0),
        window: Mutex::new(Window::default()),
    })
}

/// The mix's throughput in a closed loop of `concurrency` clients, after 3 s of warm-up.
async fn measure_capacity(load: &Arc<Load>, concurrency: usize, probe: Duration) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..concurrency {
        let (load, stop) = (load.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng::new(c as u64 + 7);
            while !stop.load(Ordering::Relaxed) {
                load.one(pick(rng.next())).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _warmup = load.take_window();
    let measured_from = Instant::now();
    tokio::time::sleep(probe).await;
    let window = load.take_window();
    let capacity = window.latencies_us.len() as f64 / measured_from.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("closed-loop task");
    }
    eprintln!(
        "soak: capacity {capacity:.0} req/s (closed loop, {concurrency} clients, p99 {:.1} ms, {} 5xx)",
        percentile(&window.sorted(None), 0.99),
        window.server_errors,
    );
    capacity
}

/// What the open loop saw.
struct SoakRun {
    total: Window,
    /// (seconds since the start, resident KiB), one per window.
    rss: Vec<(f64, u64)>,
    windows: Vec<Value>,
    /// Requests due while `MAX_IN_FLIGHT` were in flight, so never sent.
    overloaded: u64,
    server_cpu_s: f64,
    client_cpu_s: f64,
}

/// Open loop at `rate`: requests start on schedule whatever the latency, so a slow
/// server meets more load, not less, as it would in production.
async fn soak(load: &Arc<Load>, rate: f64, duration: Duration, pid: u32) -> SoakRun {
    let mut run = SoakRun {
        total: Window::default(),
        rss: Vec::new(),
        windows: Vec::new(),
        overloaded: 0,
        server_cpu_s: 0.0,
        client_cpu_s: 0.0,
    };
    let cpu_at_start = (cpu_secs(pid), cpu_secs(std::process::id()));
    let mut rng = Rng::new(99);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut next_report = start + WINDOW;
    let mut sent: u64 = 0;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT as usize));
    while start.elapsed() < duration {
        let due = start + interval.mul_f64(sent as f64);
        if due > Instant::now() {
            tokio::time::sleep_until(due.into()).await;
        }
        sent += 1;
        match in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                let (load, op) = (load.clone(), pick(rng.next()));
                tokio::spawn(async move {
                    load.one(op).await;
                    drop(permit);
                });
            }
            Err(_) => run.overloaded += 1,
        }
        if Instant::now() >= next_report {
            next_report += WINDOW;
            close_window(&mut run, load.take_window(), start.elapsed(), pid);
        }
    }
    run.server_cpu_s = cpu_secs(pid) - cpu_at_start.0;
    run.client_cpu_s = cpu_secs(std::process::id()) - cpu_at_start.1;
    // Let the last requests finish.
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        in_flight.acquire_many(MAX_IN_FLIGHT),
    )
    .await;
    run.total.absorb(load.take_window());
    run
}

/// Prints one 10-second row, samples RSS, and adds the window to the total.
fn close_window(run: &mut SoakRun, w: Window, at: Duration, pid: u32) {
    let sorted = w.sorted(None);
    let kib = rss_kib(pid);
    let t = at.as_secs_f64();
    let (p50, p99, max) = (
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        percentile(&sorted, 1.0),
    );
    eprintln!(
        "soak: {t:>5.0}s {:>7} req {:>7.0}/s  p50 {p50:>6.1} ms  p99 {p99:>6.1} ms  max {max:>7.1} ms  5xx {}  other {}  transport {}  rss {kib} KiB",
        sorted.len(),
        sorted.len() as f64 / WINDOW.as_secs_f64(),
        w.server_errors,
        w.unexpected,
        w.transport,
    );
    run.windows.push(json!({
        "t_s": round(t), "requests": sorted.len(), "p50_ms": round(p50),
        "p99_ms": round(p99), "max_ms": round(max), "server_errors": w.server_errors,
        "unexpected": w.unexpected, "transport_errors": w.transport, "rss_kib": kib,
    }));
    run.rss.push((t, kib));
    run.total.absorb(w);
}

/// Resident memory after warm-up (the first fifth): the first sample, the last, the
/// highest, and the growth from the first to the highest.
struct Growth {
    first: u64,
    last: u64,
    max: u64,
    growth: f64,
}

fn rss_growth(rss: &[(f64, u64)], duration: Duration) -> Growth {
    let warm: Vec<u64> = rss
        .iter()
        .filter(|(t, _)| *t >= duration.as_secs_f64() / 5.0)
        .map(|(_, k)| *k)
        .collect();
    let first = warm.first().copied().unwrap_or(0);
    let max = warm.iter().copied().max().unwrap_or(0);
    Growth {
        first,
        last: warm.last().copied().unwrap_or(0),
        max,
        growth: if first > 0 {
            (max as f64 - first as f64) / first as f64
        } else {
            0.0
        },
    }
}

fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Latency and throughput of some requests, in the load tool's JSON shape.
fn op_json(sorted: &[u32], duration: Duration) -> Value {
    json!({
        "requests": sorted.len(),
        "rps": round(sorted.len() as f64 / duration.as_secs_f64()),
        "p50_ms": round(percentile(sorted, 0.5)),
        "p90_ms": round(percentile(sorted, 0.9)),
        "p99_ms": round(percentile(sorted, 0.99)),
        "max_ms": round(percentile(sorted, 1.0)),
    })
}

/// The figures as the benchmark report reads them (`soak`), with every window.
fn soak_json(s: &Settings, capacity: f64, rate: f64, run: &SoakRun, g: &Growth) -> Value {
    let t = &run.total;
    let mut all = op_json(&t.sorted(None), s.duration);
    all["errors"] =
        json!({"5xx": t.server_errors, "unexpected": t.unexpected, "transport": t.transport});
    let served = t.latencies_us.len().max(1) as f64;
    all["server_cpu_us_per_req"] = json!(round(run.server_cpu_s * 1e6 / served));
    all["client_cpu_us_per_req"] = json!(round(run.client_cpu_s * 1e6 / served));
    let mut per_op: BTreeMap<String, Value> = [Op::Login, Op::Refresh, Op::Me, Op::Jwks]
        .into_iter()
        .map(|op| {
            (
                op.name().to_owned(),
                op_json(&t.sorted(Some(op)), s.duration),
            )
        })
        .collect();
    per_op.insert("all".into(), all);
    json!({
        "label": "soak",
        "settings": {
            "duration_s": s.duration.as_secs_f64(), "probe_s": s.probe.as_secs_f64(),
            "load": s.load_factor, "concurrency": s.concurrency,
            "database": s.database.as_ref().map(|p| p.display().to_string()),
        },
        "soak": {
            "duration_s": s.duration.as_secs_f64(),
            "capacity_rps": round(capacity), "offered_rps": round(rate),
            "not_sent": run.overloaded,
            "requests": t.latencies_us.len(), "errors": t.errors(),
            "samples": run.rss.iter().map(|(t, k)| json!([round(*t), k])).collect::<Vec<_>>(),
            "rss_after_warmup_kib": g.first, "rss_last_kib": g.last,
            "rss_max_after_warmup_kib": g.max,
            "per_op": per_op,
            "windows": run.windows,
        },
    })
}

fn print_summary(s: &Settings, rate: f64, run: &SoakRun, g: &Growth) {
    let t = &run.total;
    let sorted = t.sorted(None);
    let served = sorted.len().max(1) as f64;
    eprintln!(
        "soak: {} requests in {:.0} s at {rate:.0}/s offered ({} not sent: {MAX_IN_FLIGHT} in \
         flight); 5xx {}, other unexpected {}, transport errors {}; p50 {:.1} ms, p99 {:.1} ms, \
         max {:.1} ms; server CPU {:.0} us/req, driver {:.0} us/req; RSS after warm-up {} KiB, \
         last {} KiB, max {} KiB (growth {:.1}%)",
        sorted.len(),
        s.duration.as_secs_f64(),
        run.overloaded,
        t.server_errors,
        t.unexpected,
        t.transport,
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.99),
        percentile(&sorted, 1.0),
        run.server_cpu_s * 1e6 / served,
        run.client_cpu_s * 1e6 / served,
        g.first,
        g.last,
        g.max,
        g.growth * 100.0
    );
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "10-minute soak; run by scripts/soak.sh"]
async fn soak_mixed_load_at_80_percent_of_capacity() {
    let s = Settings::from_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let (files, server) = start_server(dir.path(), s.database.as_deref()).await;
    let pid = server.pid();
    let load = sign_up(&server).await;

    let capacity = measure_capacity(&load, s.concurrency, s.probe).await;
    let rate = capacity * s.load_factor;
    eprintln!(
        "soak: soaking at {rate:.0} req/s ({:.0}%) for {:.0} s",
        s.load_factor * 100.0,
        s.duration.as_secs_f64()
    );
    let run = soak(&load, rate, s.duration, pid).await;
    let growth = rss_growth(&run.rss, s.duration);
    print_summary(&s, rate, &run, &growth);
    if let Some(path) = &s.json {
        let doc = soak_json(&s, capacity, rate, &run, &growth);
        let text = serde_json::to_string_pretty(&doc).expect("json");
        std::fs::write(path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    server.kill().await;
    let conn = open_db(&files.database);
    let violations = storage_violations(&conn);
    assert!(violations.is_empty(), "after the soak: {violations:?}");
    let t = &run.total;
    assert_eq!(t.server_errors, 0, "5xx during the soak");
    assert_eq!(t.unexpected, 0, "unexpected answers: {:?}", t.examples);
    assert_eq!(t.transport, 0, "transport errors during the soak");
    assert_eq!(run.overloaded, 0, "the server fell behind the offered rate");
    assert!(
        growth.growth < 0.10,
        "resident memory grew {:.1}% after warm-up",
        growth.growth * 100.0
    );
}
