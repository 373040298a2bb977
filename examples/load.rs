//! Load tool for gatehouse (and for the Node.js comparison service in `bench/node`).
//!
//! Drives a running server over loopback with a bounded duration and concurrency, or
//! starts the release binary itself (`--spawn`), and prints requests/s, p50/p90/p99 and
//! errors per scenario; `--json` prints the same as one JSON document. It also measures
//! the raw limits the issue's ratios divide by (RS256 signing, the rotation commit,
//! Argon2id verify), runs a bare actix-web server for the JWKS ratio, samples the
//! server's resident memory, seeds a large database for the growth check, and turns the
//! JSON documents of one run into the ratio table (`--report`). See BENCHMARKS.md.
//!
//! ```text
//! cargo run --release --example load -- --spawn target/release/gatehouse --bare --raw all
//! cargo run --release --example load -- --url http://127.0.0.1:8080 --scenarios jwks,me
//! cargo run --release --example load -- --seed-db /tmp/big.db --users 1000000
//! cargo run --release --example load -- --report run/*.json
//! ```
//!
//! Scenarios: `jwks`, `jwks-304` (If-None-Match), `me` (bearer verify + user load),
//! `login`, `refresh` (each worker follows its own chain), `signup`, `mixed`, `flood`
//! (logins saturating the Argon2 pool while a fixed-rate probe stream measures JWKS and
//! /v1/me latency, compared with the same probes without the flood).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use serde::Deserialize;
use serde_json::{Value, json};

use gatehouse::crypto::jwt::{self, AccessClaims};
use gatehouse::crypto::keys::{KeyRing, generate_into, load_dir};
use gatehouse::crypto::refresh::{RefreshSecret, RefreshToken};
use gatehouse::domain::{Email, Role};
use gatehouse::storage::sqlite::{SqliteStore, Synchronous};
use gatehouse::storage::{NewFamily, NewUser, Rotation, RotationOutcome, Store};

const PASSWORD: &str = "Load-Test-Pass-9!";
/// A request slower than this counts as a timeout (an error), never as a latency.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
#[command(about = "Load tool for gatehouse; see BENCHMARKS.md")]
struct Args {
    /// Base URL of a running server (gatehouse or the Node comparison service).
    #[arg(long)]
    url: Option<String>,
    /// Start this gatehouse binary on a free loopback port with rate limits off, a
    /// temporary database and keys, and stop it at the end.
    #[arg(long)]
    spawn: Option<PathBuf>,
    /// Extra environment for the spawned server, `KEY=VALUE` (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Start the spawned server on a copy of this database (the growth check).
    #[arg(long)]
    database: Option<PathBuf>,
    /// Comma-separated scenarios: jwks, jwks-304, me, login, refresh, signup, mixed,
    /// flood; `all` for every one but signup; `none` for none.
    #[arg(long, default_value = "all")]
    scenarios: String,
    /// Measured time of each scenario (10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Unmeasured time at the start of each scenario.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// Concurrent closed-loop workers (each one request at a time, on keep-alive
    /// connections); in `flood`, the number of concurrent logins.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Run the scenario list (and the raw limits) this many rounds; medians are reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,
    /// Also run `jwks` against a bare actix-web handler serving the same bytes.
    #[arg(long)]
    bare: bool,
    /// HTTP workers of the bare server (gatehouse's default is one per core).
    #[arg(long)]
    bare_workers: Option<usize>,
    /// Raw limits to measure: comma-separated sign, commit, argon2, or `all`.
    #[arg(long)]
    raw: Option<String>,
    /// `synchronous` level of the raw commit measurement (normal or full); defaults to
    /// GATEHOUSE_SQLITE_SYNCHRONOUS from `--env`, else normal.
    #[arg(long)]
    raw_sync: Option<String>,
    /// Threads for the raw signing and Argon2 measurements.
    #[arg(long, default_value_t = 2)]
    raw_threads: usize,
    /// Measured time of each raw limit.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    raw_duration: Duration,
    /// Process whose resident memory (with its descendants) is reported, for servers
    /// not started with --spawn.
    #[arg(long)]
    rss_pid: Option<u32>,
    /// After the scenarios, a long `mixed` run sampling resident memory every 10 s.
    #[arg(long, value_parser = parse_duration)]
    soak: Option<Duration>,
    /// Total rate of the flood's probe stream (half JWKS, half /v1/me), requests/s.
    #[arg(long, default_value_t = 200.0)]
    probe_rate: f64,
    /// Print one JSON document instead of the table (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Also write the JSON document to this file.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Name of this run in the JSON (the report keys on it: gatehouse, gatehouse-full,
    /// node, growth-empty, growth-seeded).
    #[arg(long, default_value = "gatehouse")]
    label: String,
    /// Exit non-zero when any scenario's error share exceeds this.
    #[arg(long, default_value_t = 0.01)]
    max_error_rate: f64,
    /// Seed mode: create (or extend) this database with `--users` users and as many
    /// families, in one transaction, then exit.
    #[arg(long)]
    seed_db: Option<PathBuf>,
    #[arg(long, default_value_t = 1_000_000)]
    users: usize,
    /// Report mode: read the JSON documents of one run and print the ratio table.
    #[arg(long, num_args = 1..)]
    report: Vec<PathBuf>,
    /// Internal: serve this file's bytes as the bare actix-web baseline (a child process
    /// of the load tool, so its CPU and memory are its own); prints the port.
    #[arg(long, hide = true)]
    serve_bare: Option<PathBuf>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map_or((s, "s"), |i| s.split_at(i));
    let n: f64 = num.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (ms, s, m, h)")),
    };
    Ok(Duration::from_secs_f64(secs))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if let Some(body) = &args.serve_bare {
        serve_bare(body, args.bare_workers.unwrap_or(2)).map(|()| true)
    } else if let Some(path) = &args.seed_db {
        seed_db(path, args.users).map(|()| true)
    } else if !args.report.is_empty() {
        report(&args.report).map(|()| true)
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("tokio runtime")
            .and_then(|rt| rt.block_on(run(args)))
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("load: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

// ---------------------------------------------------------------------------------------
// Measurements

/// What one worker saw of one operation.
#[derive(Clone, Default)]
struct Recorder {
    latencies_us: Vec<u32>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    fn record(&mut self, outcome: &Result<u16, String>, took: Duration) {
        match outcome {
            Ok(status) if (200..300).contains(status) || *status == 304 => {
                self.ok += 1;
                self.latencies_us
                    .push(took.as_micros().min(u128::from(u32::MAX)) as u32);
            }
            Ok(status) => *self.errors.entry(status.to_string()).or_default() += 1,
            Err(kind) => *self.errors.entry(kind.clone()).or_default() += 1,
        }
    }

    fn merge(&mut self, other: Recorder) {
        self.latencies_us.extend(other.latencies_us);
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    fn stats(mut self, elapsed: Duration) -> Stats {
        self.latencies_us.sort_unstable();
        let pct = |p: f64| -> f64 {
            if self.latencies_us.is_empty() {
                return 0.0;
            }
            let idx = ((p / 100.0) * (self.latencies_us.len() - 1) as f64).round() as usize;
            f64::from(self.latencies_us[idx]) / 1000.0
        };
        let errors: u64 = self.errors.values().sum();
        Stats {
            requests: self.ok + errors,
            ok: self.ok,
            rps: self.ok as f64 / elapsed.as_secs_f64().max(1e-9),
            p50_ms: pct(50.0),
            p90_ms: pct(90.0),
            p99_ms: pct(99.0),
            max_ms: self
                .latencies_us
                .last()
                .map_or(0.0, |v| f64::from(*v) / 1000.0),
            server_cpu_us: 0.0,
            client_cpu_us: 0.0,
            errors: self.errors,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct Stats {
    requests: u64,
    ok: u64,
    /// Successful responses per second of measured time.
    rps: f64,
    p50_ms: f64,
    p90_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: BTreeMap<String, u64>,
    /// CPU time per successful request over the measured window: the server process
    /// (with its descendants) and this load tool.
    server_cpu_us: f64,
    client_cpu_us: f64,
}

impl Stats {
    fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    fn json(&self) -> Value {
        json!({
            "requests": self.requests, "ok": self.ok, "rps": round(self.rps),
            "p50_ms": round(self.p50_ms), "p90_ms": round(self.p90_ms),
            "p99_ms": round(self.p99_ms), "max_ms": round(self.max_ms),
            "errors": self.errors,
            "server_cpu_us_per_req": round(self.server_cpu_us),
            "client_cpu_us_per_req": round(self.client_cpu_us),
        })
    }

    /// Field-by-field medians of repeated runs; errors are summed.
    fn median(runs: &[Stats]) -> Stats {
        let med = |f: fn(&Stats) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v.get(v.len() / 2).copied().unwrap_or_default()
        };
        let mut errors = BTreeMap::new();
        for r in runs {
            for (k, v) in &r.errors {
                *errors.entry(k.clone()).or_default() += v;
            }
        }
        Stats {
            requests: runs.iter().map(|r| r.requests).sum(),
            ok: runs.iter().map(|r| r.ok).sum(),
            rps: med(|s| s.rps),
            p50_ms: med(|s| s.p50_ms),
            p90_ms: med(|s| s.p90_ms),
            p99_ms: med(|s| s.p99_ms),
            max_ms: med(|s| s.max_ms),
            errors,
            server_cpu_us: med(|s| s.server_cpu_us),
            client_cpu_us: med(|s| s.client_cpu_us),
        }
    }
}

fn round(x: f64) -> f64 {
    if x.abs() >= 100.0 {
        x.round()
    } else {
        (x * 1000.0).round() / 1000.0
    }
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The HTTP client side

#[derive(Clone, Debug)]
struct Account {
    email: String,
    access: String,
    refresh: String,
}

#[derive(Deserialize)]
struct TokenBody {
    access_token: String,
    refresh_token: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Jwks,
    Jwks304,
    Me,
    Login,
    Refresh,
    Signup,
    /// Every operation of a run together (mixed).
    All,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Jwks => "jwks",
            Op::Jwks304 => "jwks-304",
            Op::Me => "me",
            Op::Login => "login",
            Op::Refresh => "refresh",
            Op::Signup => "signup",
            Op::All => "all",
        }
    }
}

struct Target {
    /// The server process, for its CPU time.
    pid: Option<u32>,
    base: String,
    client: reqwest::Client,
    etag: String,
    tag: String,
}

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(usize::MAX)
        .pool_idle_timeout(Duration::from_secs(20))
        .tcp_nodelay(true)
        .timeout(REQUEST_TIMEOUT)
        .build()?)
}

fn transport_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        "connect".into()
    } else {
        "io".into()
    }
}

impl Target {
    /// Runs one operation; `Ok(status)` once the whole body is read.
    async fn call(&self, op: Op, acct: &mut Account, counter: &mut u64) -> Result<u16, String> {
        let c = &self.client;
        let req = match op {
            Op::Jwks => c.get(format!("{}/.well-known/jwks.json", self.base)),
            Op::Jwks304 => c
                .get(format!("{}/.well-known/jwks.json", self.base))
                .header("if-none-match", &self.etag),
            Op::Me => c
                .get(format!("{}/v1/me", self.base))
                .bearer_auth(&acct.access),
            Op::Login => c
                .post(format!("{}/v1/login", self.base))
                .json(&json!({"email": acct.email, "password": PASSWORD})),
            Op::Refresh => c
                .post(format!("{}/v1/refresh", self.base))
                .json(&json!({"refresh_token": acct.refresh})),
            Op::All => return Err("no_op".into()),
            Op::Signup => {
                *counter += 1;
                let email = format!(
                    "{}-s{}@example.com",
                    acct.email.replace('@', "-at-"),
                    counter
                );
                c.post(format!("{}/v1/signup", self.base))
                    .json(&json!({"email": email, "password": PASSWORD}))
            }
        };
        let res = req.send().await.map_err(|e| transport_error(&e))?;
        let status = res.status().as_u16();
        let body = res.bytes().await.map_err(|e| transport_error(&e))?;
        if matches!(op, Op::Login | Op::Refresh) && status == 200 {
            let t: TokenBody = serde_json::from_slice(&body).map_err(|_| "bad_body".to_owned())?;
            acct.access = t.access_token;
            acct.refresh = t.refresh_token;
        }
        Ok(status)
    }

    /// A fresh account (signup), outside any measurement.
    async fn signup(&self, n: usize) -> anyhow::Result<Account> {
        let email = format!("load-{}-{n}@example.com", self.tag);
        let res = self
            .client
            .post(format!("{}/v1/signup", self.base))
            .json(&json!({"email": email, "password": PASSWORD}))
            .send()
            .await?;
        let status = res.status();
        let body = res.bytes().await?;
        anyhow::ensure!(
            status.as_u16() == 201,
            "signup answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        let t: TokenBody = serde_json::from_slice(&body)?;
        Ok(Account {
            email,
            access: t.access_token,
            refresh: t.refresh_token,
        })
    }

    /// A chain broken by an error is restarted with a login (not measured).
    async fn recover(&self, acct: &mut Account) {
        let mut n = 0;
        let _ = self.call(Op::Login, acct, &mut n).await;
    }
}

/// Chooses the next operation of a worker.
#[derive(Clone, Copy)]
enum Mix {
    Only(Op),
    /// jwks 30 %, me 40 %, refresh 28 %, login 2 %.
    Mixed,
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

impl Mix {
    fn pick(self, rng: &mut Rng) -> Op {
        match self {
            Mix::Only(op) => op,
            Mix::Mixed => match rng.next() % 100 {
                0..30 => Op::Jwks,
                30..70 => Op::Me,
                70..98 => Op::Refresh,
                _ => Op::Login,
            },
        }
    }
}

type PerOp = BTreeMap<Op, Recorder>;

/// Closed loop: one request at a time until `deadline`; requests completing between
/// `measure_from` and `deadline` are recorded.
async fn closed_loop(
    target: Arc<Target>,
    mut acct: Account,
    mix: Mix,
    seed: u64,
    measure_from: Instant,
    deadline: Instant,
) -> (PerOp, Account) {
    let mut rng = Rng(seed | 1);
    let mut per_op = PerOp::new();
    let mut counter = 0u64;
    loop {
        let start = Instant::now();
        if start >= deadline {
            break;
        }
        let op = mix.pick(&mut rng);
        let outcome = target.call(op, &mut acct, &mut counter).await;
        let end = Instant::now();
        if end >= measure_from && end <= deadline {
            per_op.entry(op).or_default().record(&outcome, end - start);
        }
        if op == Op::Refresh && outcome != Ok(200) {
            target.recover(&mut acct).await;
        }
    }
    (per_op, acct)
}

/// Runs `accounts.len()` closed-loop workers with `mix`; stats per operation.
async fn run_closed(
    target: &Arc<Target>,
    accounts: &mut Vec<Account>,
    mix: Mix,
    warmup: Duration,
    duration: Duration,
) -> BTreeMap<Op, Stats> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + duration;
    let cpu = tokio::spawn(cpu_between(target.pid, measure_from, deadline));
    let tasks: Vec<_> = accounts
        .drain(..)
        .enumerate()
        .map(|(i, acct)| {
            let seed = 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(i as u64 + 1);
            tokio::spawn(closed_loop(
                Arc::clone(target),
                acct,
                mix,
                seed,
                measure_from,
                deadline,
            ))
        })
        .collect();
    let mut merged = PerOp::new();
    for t in tasks {
        let (per_op, acct) = t.await.expect("worker panicked");
        accounts.push(acct);
        for (op, rec) in per_op {
            merged.entry(op).or_default().merge(rec);
        }
    }
    if merged.len() > 1 {
        let mut all = Recorder::default();
        for rec in merged.values() {
            all.merge(rec.clone());
        }
        merged.insert(Op::All, all);
    }
    let (server_cpu, client_cpu) = cpu.await.unwrap_or_default();
    merged
        .into_iter()
        .map(|(op, rec)| {
            let mut st = rec.stats(duration);
            let n = st.ok.max(1) as f64;
            st.server_cpu_us = server_cpu * 1e6 / n;
            st.client_cpu_us = client_cpu * 1e6 / n;
            (op, st)
        })
        .collect()
}

/// CPU seconds (user + system) the server and this process spend between two instants.
async fn cpu_between(server: Option<u32>, from: Instant, to: Instant) -> (f64, f64) {
    let sample = || {
        let server = server.and_then(tree_cpu_secs).unwrap_or(0.0);
        let me = cpu_secs(std::process::id()).unwrap_or(0.0);
        (server, me)
    };
    tokio::time::sleep_until(tokio::time::Instant::from_std(from)).await;
    let a = sample();
    tokio::time::sleep_until(tokio::time::Instant::from_std(to)).await;
    let b = sample();
    (b.0 - a.0, b.1 - a.1)
}

/// Fixed-rate probes alternating JWKS and /v1/me on their own connections.
async fn probes(
    target: Arc<Target>,
    access: String,
    rate: f64,
    measure_from: Instant,
    deadline: Instant,
) -> PerOp {
    const PROBERS: usize = 8;
    let interval = Duration::from_secs_f64(PROBERS as f64 / rate.max(1.0));
    let tasks: Vec<_> = (0..PROBERS)
        .map(|i| {
            let target = Arc::clone(&target);
            let mut acct = Account {
                email: String::new(),
                access: access.clone(),
                refresh: String::new(),
            };
            tokio::spawn(async move {
                let mut per_op = PerOp::new();
                let mut counter = 0;
                let first =
                    tokio::time::Instant::now() + interval.mul_f64(i as f64 / PROBERS as f64);
                let mut tick = tokio::time::interval_at(first, interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = i;
                loop {
                    tick.tick().await;
                    let start = Instant::now();
                    if start >= deadline {
                        break;
                    }
                    let op = if n % 2 == 0 { Op::Jwks } else { Op::Me };
                    n += 1;
                    let outcome = target.call(op, &mut acct, &mut counter).await;
                    let end = Instant::now();
                    if start >= measure_from {
                        per_op.entry(op).or_default().record(&outcome, end - start);
                    }
                }
                per_op
            })
        })
        .collect();
    let mut merged = PerOp::new();
    for t in tasks {
        for (op, rec) in t.await.expect("probe panicked") {
            merged.entry(op).or_default().merge(rec);
        }
    }
    merged
}

// ---------------------------------------------------------------------------------------
// Servers: the spawned gatehouse, the bare actix-web baseline

struct Spawned {
    child: tokio::process::Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

async fn spawn_server(
    binary: &Path,
    extra_env: &[String],
    database: Option<&Path>,
) -> anyhow::Result<(Spawned, String)> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let db = data.join("gatehouse.db");
    if let Some(src) = database {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new().mode(0o700).create(&data)?;
        eprintln!("copying {} ...", src.display());
        copy_durably(src, &db)?;
    }
    let port = free_port()?;
    let log = dir.path().join("server.log");
    let out = std::fs::File::create(&log)?;
    let mut cmd = tokio::process::Command::new(binary);
    cmd.env("GATEHOUSE_RATE_LIMITS", "off")
        .env("GATEHOUSE_DATABASE", &db)
        .env("GATEHOUSE_KEYS_DIR", dir.path().join("keys"))
        .env("GATEHOUSE_BIND", format!("127.0.0.1:{port}"))
        .env("GATEHOUSE_ISSUER", format!("http://127.0.0.1:{port}"))
        .env("GATEHOUSE_ACCESS_TTL", "60m")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true);
    for kv in extra_env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))?;
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut spawned = Spawned {
        child,
        _dir: dir,
        log,
    };
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    wait_ready(&base, Some(&mut spawned)).await?;
    eprintln!(
        "spawned {} on {base} (pid {}), ready in {:.1}s",
        binary.display(),
        spawned.child.id().unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    Ok((spawned, base))
}

/// Polls `/readyz` until it answers 2xx (60 s at most, or until the spawned server dies).
async fn wait_ready(base: &str, mut spawned: Option<&mut Spawned>) -> anyhow::Result<()> {
    let probe = client()?;
    let started = Instant::now();
    loop {
        if let Some(s) = spawned.as_deref_mut()
            && let Some(status) = s.child.try_wait()?
        {
            bail!(
                "the server exited at start ({status}):\n{}",
                log_tail(&s.log)
            );
        }
        if let Ok(res) = probe.get(format!("{base}/readyz")).send().await
            && res.status().is_success()
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            let log = spawned.map(|s| log_tail(&s.log)).unwrap_or_default();
            bail!("{base} was not ready within 60 s\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Starts the bare actix-web baseline as a child process (this same binary with
/// `--serve-bare`), answering every request with `body`; returns it and its URL.
async fn start_bare(
    body: &[u8],
    workers: usize,
) -> anyhow::Result<(tokio::process::Child, String)> {
    use tokio::io::AsyncBufReadExt as _;
    let file = tempfile::NamedTempFile::new()?;
    std::fs::write(file.path(), body)?;
    let mut child = tokio::process::Command::new(std::env::current_exe()?)
        .arg("--serve-bare")
        .arg(file.path())
        .arg("--bare-workers")
        .arg(workers.to_string())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("bare server stdout")?;
    let mut line = String::new();
    tokio::io::BufReader::new(stdout)
        .read_line(&mut line)
        .await?;
    let port: u16 = line
        .trim()
        .parse()
        .with_context(|| format!("bare server said {line:?}"))?;
    drop(file);
    Ok((child, format!("http://127.0.0.1:{port}")))
}

/// The bare baseline itself: the JWKS bytes from one handler, nothing else (no
/// middleware, no headers beyond the content type), `workers` HTTP workers.
fn serve_bare(body: &Path, workers: usize) -> anyhow::Result<()> {
    use actix_web::{App, HttpResponse, HttpServer, web};
    let body = bytes::Bytes::from(std::fs::read(body)?);
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?.port());
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let body = body.clone();
            App::new().default_service(web::to(move || {
                let body = body.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(body)
                }
            }))
        })
        .workers(workers)
        .listen(listener)?
        .run()
        .await
    })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Resident memory

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident memory of `pid` and all its descendants (a Node cluster is several
/// processes), in KiB.
fn tree_rss_kib(pid: u32) -> Option<u64> {
    let pids = tree_pids(pid)?;
    Some(pids.iter().filter_map(|p| rss_kib(*p)).sum())
}

/// `pid` and all its descendants.
fn tree_pids(pid: u32) -> Option<Vec<u32>> {
    let mut parents: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // The command name may hold spaces; the fields after its ')' are plain.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.entry(ppid).or_default().push(p);
        }
    }
    std::fs::metadata(format!("/proc/{pid}")).ok()?;
    let mut out = vec![pid];
    let mut stack = parents.get(&pid).cloned().unwrap_or_default();
    while let Some(p) = stack.pop() {
        out.push(p);
        stack.extend(parents.get(&p).cloned().unwrap_or_default());
    }
    Some(out)
}

/// User + system CPU seconds of one process (all its threads), from /proc/PID/stat.
fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

fn tree_cpu_secs(pid: u32) -> Option<f64> {
    Some(tree_pids(pid)?.iter().filter_map(|p| cpu_secs(*p)).sum())
}

/// Samples resident memory every `every` until stopped; returns the samples.
fn sample_rss(
    pid: Option<u32>,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(f64, u64)>> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut samples = Vec::new();
        let Some(pid) = pid else { return samples };
        while !stop.load(Ordering::Relaxed) {
            if let Some(kib) = tree_rss_kib(pid) {
                samples.push((start.elapsed().as_secs_f64(), kib));
            }
            let until = Instant::now() + every;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        samples
    })
}

// ---------------------------------------------------------------------------------------
// Raw limits, measured in this process while the server idles

fn raw_claims() -> AccessClaims {
    let now = chrono::Utc::now().timestamp();
    AccessClaims {
        iss: "http://127.0.0.1:8080".into(),
        aud: "gatehouse".into(),
        sub: uuid::Uuid::new_v4().into(),
        iat: now,
        nbf: now,
        exp: now + 900,
        jti: uuid::Uuid::new_v4(),
        sid: uuid::Uuid::new_v4().into(),
        role: Role::User,
    }
}

/// RS256 signatures per second with the service's own signer on `threads` threads.
fn raw_sign(threads: usize, duration: Duration) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    generate_into(dir.path(), chrono::Utc::now())?;
    let ring = Arc::new(KeyRing::new(load_dir(dir.path())?)?);
    let deadline = Instant::now() + duration;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let ring = Arc::clone(&ring);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    // A fresh jti per token, as the service does.
                    let token = jwt::mint(&ring, &raw_claims()).expect("mint");
                    std::hint::black_box(token);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    Ok(total as f64 / duration.as_secs_f64())
}

/// Rotation transactions per second, alone, on a file database at `sync`.
///
/// With `busy_threads` > 0, that many threads spin on RS256 signing meanwhile, as the
/// server's workers do under refresh load: the committing thread then waits for a CPU
/// after each fsync. With `copy_of`, the database is a copy of that file (growth check).
/// Copies a database and waits until the copy is on disk. Otherwise the first
/// checkpoint's fsync would write back the whole fresh copy (700 MiB for the growth
/// database) inside the measured window, and the run would measure the copy.
fn copy_durably(src: &Path, dst: &Path) -> anyhow::Result<()> {
    std::fs::copy(src, dst).with_context(|| format!("cannot copy {}", src.display()))?;
    std::fs::File::open(dst)?.sync_all()?;
    Ok(())
}

fn raw_commit(
    sync: Synchronous,
    duration: Duration,
    busy_threads: usize,
    copy_of: Option<&Path>,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut busy = Vec::new();
    if busy_threads > 0 {
        let dir = tempfile::tempdir()?;
        generate_into(dir.path(), chrono::Utc::now())?;
        let ring = Arc::new(KeyRing::new(load_dir(dir.path())?)?);
        for _ in 0..busy_threads {
            let (ring, stop) = (Arc::clone(&ring), Arc::clone(&stop));
            busy.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(jwt::mint(&ring, &raw_claims()).expect("mint"));
                }
            }));
        }
    }
    let rate = raw_commit_alone(sync, duration, copy_of);
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        let _ = b.join();
    }
    rate
}

fn raw_commit_alone(
    sync: Synchronous,
    duration: Duration,
    copy_of: Option<&Path>,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("raw.db");
    if let Some(src) = copy_of {
        copy_durably(src, &path)?;
    }
    let store = SqliteStore::open(&path, sync, 1)?;
    let secret = RefreshSecret::from_bytes(&[7u8; 32]);
    let mut token = new_chain(&store)?;
    let deadline = Instant::now() + duration;
    let mut n = 0u64;
    while Instant::now() < deadline {
        token = rotate_once(&store, &secret, &token)?;
        n += 1;
    }
    Ok(n as f64 / duration.as_secs_f64())
}

/// A user with one family; returns the family's first token.
fn new_chain(store: &SqliteStore) -> anyhow::Result<RefreshToken> {
    let now = chrono::Utc::now();
    let email = Email::parse(&format!(
        "raw-{}@example.com",
        uuid::Uuid::new_v4().simple()
    ))
    .map_err(|e| anyhow::anyhow!("email {e}"))?;
    let user = store.create_user(NewUser {
        id: uuid::Uuid::new_v4().into(),
        email: &email,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
        role: Role::User,
        now,
    })?;
    let token = RefreshToken::generate();
    store.create_family(NewFamily {
        id: uuid::Uuid::new_v4().into(),
        user_id: user.id,
        first_token: token.hash().0,
        now,
        token_expires_at: now + chrono::Duration::hours(12),
        family_expires_at: now + chrono::Duration::days(7),
        user_agent: None,
        ip: None,
        password_generation: 0,
    })?;
    Ok(token)
}

fn rotate_once(
    store: &SqliteStore,
    secret: &RefreshSecret,
    presented: &RefreshToken,
) -> anyhow::Result<RefreshToken> {
    let child = presented.child(secret);
    let outcome = store.rotate_refresh_token(Rotation {
        presented: presented.hash().0,
        child: child.hash().0,
        now: chrono::Utc::now(),
        refresh_ttl_secs: 12 * 3600,
        reuse_grace_secs: 10,
    })?;
    anyhow::ensure!(
        matches!(outcome, RotationOutcome::Rotated(_)),
        "rotation did not rotate: {outcome:?}"
    );
    Ok(child)
}

/// Argon2id verifications per second with the production parameters on `threads`.
fn raw_argon2(threads: usize, duration: Duration) -> anyhow::Result<f64> {
    use argon2::password_hash::phc::PasswordHash;
    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
    use argon2::{Algorithm, Argon2, Params, Version};
    let cost = gatehouse::crypto::password::PasswordCost::PRODUCTION;
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let phc = argon2
        .hash_password(PASSWORD.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    let deadline = Instant::now() + duration;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let argon2 = argon2.clone();
            let phc = phc.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let parsed = PasswordHash::new(&phc).expect("phc");
                    assert!(argon2.verify_password(PASSWORD.as_bytes(), &parsed).is_ok());
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    Ok(total as f64 / duration.as_secs_f64())
}

// ---------------------------------------------------------------------------------------
// The run

const ALL: [&str; 7] = [
    "jwks", "jwks-304", "me", "login", "refresh", "mixed", "flood",
];

fn scenario_list(spec: &str) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for s in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match s {
            "all" => out.extend(ALL.iter().map(|s| s.to_string())),
            "none" => {}
            s if ALL.contains(&s) || s == "signup" => out.push(s.to_owned()),
            s => bail!("unknown scenario {s:?}"),
        }
    }
    Ok(out)
}

fn raw_list(spec: Option<&str>) -> anyhow::Result<Vec<String>> {
    let Some(spec) = spec else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for s in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match s {
            "all" => out.extend(["sign", "commit", "commit-busy", "argon2"].map(String::from)),
            "sign" | "commit" | "commit-busy" | "argon2" => out.push(s.to_owned()),
            s => bail!("unknown raw limit {s:?}"),
        }
    }
    Ok(out)
}

struct Table {
    rows: Vec<String>,
}

impl Table {
    fn new() -> Self {
        Self {
            rows: vec![format!(
                "{:<24} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8}  errors",
                "scenario",
                "req/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "ok",
                "srv us",
                "cli us"
            )],
        }
    }
    fn add(&mut self, name: &str, s: &Stats) {
        let errors = if s.errors.is_empty() {
            "-".to_owned()
        } else {
            s.errors
                .iter()
                .map(|(k, v)| format!("{k}:{v}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let row = format!(
            "{:<24} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>8.0} {:>8.0}  {errors}",
            name,
            s.rps,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.max_ms,
            s.ok,
            s.server_cpu_us,
            s.client_cpu_us
        );
        eprintln!("  {row}");
        self.rows.push(row);
    }
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let scenarios = scenario_list(&args.scenarios)?;
    let raws = raw_list(args.raw.as_deref())?;
    let sync_name = args
        .raw_sync
        .clone()
        .or_else(|| {
            args.env
                .iter()
                .find_map(|kv| kv.strip_prefix("GATEHOUSE_SQLITE_SYNCHRONOUS="))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "normal".into());
    let sync = Synchronous::parse(&sync_name)
        .with_context(|| format!("synchronous {sync_name:?}: normal or full"))?;

    let mut database_users = None;
    let (mut spawned, base) = match (&args.spawn, &args.url) {
        (Some(bin), _) => {
            let (s, base) = spawn_server(bin, &args.env, args.database.as_deref()).await?;
            if let Some(db) = &args.database {
                database_users = count_users(db).ok();
            }
            (Some(s), base)
        }
        (None, Some(url)) => {
            let base = url.trim_end_matches('/').to_owned();
            wait_ready(&base, None).await?;
            (None, base)
        }
        (None, None) if scenarios.is_empty() && !args.bare => (None, String::new()),
        (None, None) => bail!("give --url or --spawn"),
    };
    let server_pid = spawned.as_ref().and_then(|s| s.child.id()).or(args.rss_pid);

    let mut doc = json!({
        "label": args.label,
        "url": base,
        "settings": {
            "duration_s": args.duration.as_secs_f64(),
            "warmup_s": args.warmup.as_secs_f64(),
            "concurrency": args.concurrency,
            "repeat": args.repeat,
            "env": args.env,
            "synchronous": sync_name,
            "raw_threads": args.raw_threads,
            "raw_duration_s": args.raw_duration.as_secs_f64(),
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "database_users": database_users,
        },
    });
    let mut table = Table::new();
    let mut healthy = true;

    if !base.is_empty() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let idle = server_pid.and_then(tree_rss_kib);
        doc["rss_kib"] = json!({ "idle": idle });
        let http = client()?;
        let jwks = http
            .get(format!("{base}/.well-known/jwks.json"))
            .send()
            .await?;
        let etag = jwks
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let jwks_body = jwks.bytes().await?;
        let target = Arc::new(Target {
            pid: server_pid,
            base: base.clone(),
            client: http,
            etag,
            tag: format!(
                "{}-{}-{}",
                args.label,
                std::process::id(),
                chrono::Utc::now().timestamp_millis()
            ),
        });

        // Accounts: one per worker, created before any measurement.
        let needs_accounts =
            scenarios.iter().any(|s| s != "jwks" && s != "jwks-304") || args.soak.is_some();
        let mut accounts = Vec::new();
        if needs_accounts {
            let t0 = Instant::now();
            let n = args.concurrency.max(1);
            let mut made = Vec::new();
            for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
                let futs = chunk.iter().map(|&i| target.signup(i));
                for a in futures::future::join_all(futs).await {
                    made.push(a?);
                }
            }
            accounts = made;
            eprintln!(
                "signed up {} accounts in {:.1}s",
                accounts.len(),
                t0.elapsed().as_secs_f64()
            );
        }

        let bare = if args.bare {
            let workers = args
                .bare_workers
                .or_else(|| {
                    args.env
                        .iter()
                        .find_map(|kv| kv.strip_prefix("GATEHOUSE_HTTP_WORKERS="))
                        .and_then(|v| v.parse().ok())
                })
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
            let (handle, url) = start_bare(&jwks_body, workers).await?;
            let bare_target = Arc::new(Target {
                pid: handle.id(),
                base: url,
                client: client()?,
                etag: String::new(),
                tag: String::new(),
            });
            Some((handle, bare_target, workers))
        } else {
            None
        };

        let mut runs: BTreeMap<String, Vec<Stats>> = BTreeMap::new();
        let mut extra: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut raw_runs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let mut rss_mixed: Vec<u64> = Vec::new();
        let mut rss_after_mixed: Vec<u64> = Vec::new();
        let dummy = Account {
            email: "nobody@example.com".into(),
            access: String::new(),
            refresh: String::new(),
        };

        for round in 0..args.repeat.max(1) {
            eprintln!("round {}/{}", round + 1, args.repeat.max(1));
            for s in &scenarios {
                let d = args.duration;
                let w = args.warmup;
                match s.as_str() {
                    "jwks" | "jwks-304" => {
                        let op = if s == "jwks" { Op::Jwks } else { Op::Jwks304 };
                        let mut accts = vec![dummy.clone(); args.concurrency.max(1)];
                        let st = run_closed(&target, &mut accts, Mix::Only(op), w, d).await;
                        let st = st.get(&op).cloned().unwrap_or_default();
                        table.add(s, &st);
                        runs.entry(s.clone()).or_default().push(st);
                        if s == "jwks"
                            && let Some((_, bare_target, _)) = &bare
                        {
                            let mut accts = vec![dummy.clone(); args.concurrency.max(1)];
                            let st = run_closed(bare_target, &mut accts, Mix::Only(Op::Jwks), w, d)
                                .await;
                            let st = st.get(&Op::Jwks).cloned().unwrap_or_default();
                            table.add("jwks (bare actix-web)", &st);
                            runs.entry("jwks-bare".into()).or_default().push(st);
                        }
                    }
                    "me" | "login" | "refresh" | "signup" => {
                        let op = match s.as_str() {
                            "me" => Op::Me,
                            "login" => Op::Login,
                            "refresh" => Op::Refresh,
                            _ => Op::Signup,
                        };
                        let st = run_closed(&target, &mut accounts, Mix::Only(op), w, d).await;
                        let st = st.get(&op).cloned().unwrap_or_default();
                        table.add(s, &st);
                        runs.entry(s.clone()).or_default().push(st);
                    }
                    "mixed" => {
                        let stop = Arc::new(AtomicBool::new(false));
                        let sampler =
                            sample_rss(server_pid, Duration::from_millis(250), Arc::clone(&stop));
                        let per_op = run_closed(&target, &mut accounts, Mix::Mixed, w, d).await;
                        stop.store(true, Ordering::Relaxed);
                        let samples = sampler.await?;
                        if let Some(peak) = samples.iter().map(|s| s.1).max() {
                            rss_mixed.push(peak);
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        if let Some(kib) = server_pid.and_then(tree_rss_kib) {
                            rss_after_mixed.push(kib);
                        }
                        let mut parts = serde_json::Map::new();
                        for (op, st) in &per_op {
                            if *op != Op::All {
                                table.add(&format!("mixed/{}", op.name()), st);
                                parts.insert(op.name().into(), st.json());
                            }
                        }
                        let all = per_op.get(&Op::All).cloned().unwrap_or_default();
                        table.add("mixed (all)", &all);
                        runs.entry("mixed".into()).or_default().push(all);
                        extra
                            .entry("mixed-parts".into())
                            .or_default()
                            .push(Value::Object(parts));
                    }
                    "flood" => {
                        let access = accounts
                            .first()
                            .map(|a| a.access.clone())
                            .unwrap_or_default();
                        let probe_target = Arc::new(Target {
                            pid: server_pid,
                            base: base.clone(),
                            client: client()?,
                            etag: target.etag.clone(),
                            tag: target.tag.clone(),
                        });
                        // Baseline: probes alone.
                        let start = Instant::now();
                        let base_probes = probes(
                            Arc::clone(&probe_target),
                            access.clone(),
                            args.probe_rate,
                            start + w,
                            start + w + d,
                        )
                        .await;
                        // Flood: the same probes while every worker logs in.
                        let start = Instant::now();
                        let flood_probes = tokio::spawn(probes(
                            Arc::clone(&probe_target),
                            access,
                            args.probe_rate,
                            start + w,
                            start + w + d,
                        ));
                        let logins =
                            run_closed(&target, &mut accounts, Mix::Only(Op::Login), w, d).await;
                        let flood_probes = flood_probes.await?;
                        let stats = |m: PerOp| -> BTreeMap<Op, Stats> {
                            m.into_iter().map(|(op, r)| (op, r.stats(d))).collect()
                        };
                        let (b, f) = (stats(base_probes), stats(flood_probes));
                        let get =
                            |m: &BTreeMap<Op, Stats>, op| m.get(&op).cloned().unwrap_or_default();
                        let login = logins.get(&Op::Login).cloned().unwrap_or_default();
                        for (name, st) in [
                            ("flood/baseline jwks", get(&b, Op::Jwks)),
                            ("flood/baseline me", get(&b, Op::Me)),
                            ("flood/flooded jwks", get(&f, Op::Jwks)),
                            ("flood/flooded me", get(&f, Op::Me)),
                            ("flood/logins", login.clone()),
                        ] {
                            table.add(name, &st);
                        }
                        runs.entry("flood-baseline-jwks".into())
                            .or_default()
                            .push(get(&b, Op::Jwks));
                        runs.entry("flood-baseline-me".into())
                            .or_default()
                            .push(get(&b, Op::Me));
                        runs.entry("flood-jwks".into())
                            .or_default()
                            .push(get(&f, Op::Jwks));
                        runs.entry("flood-me".into())
                            .or_default()
                            .push(get(&f, Op::Me));
                        runs.entry("flood-login".into()).or_default().push(login);
                    }
                    _ => unreachable!(),
                }
            }
            for r in &raws {
                let (threads, dur) = (args.raw_threads, args.raw_duration);
                let rate = match r.as_str() {
                    "sign" => tokio::task::spawn_blocking(move || raw_sign(threads, dur)).await??,
                    "commit" | "commit-busy" => {
                        let busy = if r == "commit" { 0 } else { threads };
                        let db = args.database.clone();
                        tokio::task::spawn_blocking(move || {
                            raw_commit(sync, dur, busy, db.as_deref())
                        })
                        .await??
                    }
                    _ => tokio::task::spawn_blocking(move || raw_argon2(threads, dur)).await??,
                };
                let name = match r.as_str() {
                    "sign" => format!("raw: RS256 sign x{threads}"),
                    "commit" => format!("raw: rotation commit ({sync_name})"),
                    "commit-busy" => format!("raw: commit, CPUs busy ({sync_name})"),
                    _ => format!("raw: argon2id verify x{threads}"),
                };
                eprintln!("  {name:<24} {rate:>10.1}/s");
                table.rows.push(format!("{name:<24} {rate:>10.1}"));
                raw_runs.entry(r.clone()).or_default().push(rate);
            }
        }

        if let Some(soak) = args.soak {
            eprintln!(
                "soak: mixed for {:.0}s, resident memory every 10 s",
                soak.as_secs_f64()
            );
            let stop = Arc::new(AtomicBool::new(false));
            let sampler = sample_rss(server_pid, Duration::from_secs(10), Arc::clone(&stop));
            let per_op = run_closed(&target, &mut accounts, Mix::Mixed, Duration::ZERO, soak).await;
            stop.store(true, Ordering::Relaxed);
            let samples = sampler.await?;
            for (op, st) in &per_op {
                table.add(&format!("soak/{}", op.name()), st);
            }
            let all = per_op.get(&Op::All).cloned().unwrap_or_default();
            let (errors, requests) = (all.error_count(), all.requests);
            // Growth after warm-up: the first fifth of the run is warm-up.
            let warm = samples
                .iter()
                .find(|(t, _)| *t >= soak.as_secs_f64() / 5.0)
                .map(|s| s.1);
            let last = samples.last().map(|s| s.1);
            let max_after = samples
                .iter()
                .filter(|(t, _)| *t >= soak.as_secs_f64() / 5.0)
                .map(|s| s.1)
                .max();
            eprintln!(
                "  soak rss kib: after warm-up {warm:?}, last {last:?}, max after warm-up {max_after:?}"
            );
            doc["soak"] = json!({
                "duration_s": soak.as_secs_f64(),
                "samples": samples.iter().map(|(t, k)| json!([round(*t), k])).collect::<Vec<_>>(),
                "rss_after_warmup_kib": warm, "rss_last_kib": last, "rss_max_after_warmup_kib": max_after,
                "requests": requests, "errors": errors,
                "per_op": per_op.iter().map(|(op, s)| (op.name().to_owned(), s.json())).collect::<serde_json::Map<_, _>>(),
            });
            if requests > 0 && errors as f64 / requests as f64 > args.max_error_rate {
                healthy = false;
            }
        }

        if let Some((mut handle, _, workers)) = bare {
            let _ = handle.start_kill();
            let _ = handle.wait().await;
            doc["settings"]["bare_workers"] = json!(workers);
        }

        let mut results = serde_json::Map::new();
        for (name, list) in &runs {
            let med = Stats::median(list);
            let share = med.error_count() as f64 / med.requests.max(1) as f64;
            if share > args.max_error_rate {
                eprintln!("load: {name}: {:.2}% of requests failed", share * 100.0);
                healthy = false;
            }
            results.insert(
                name.clone(),
                json!({
                    "median": med.json(),
                    "runs": list.iter().map(Stats::json).collect::<Vec<_>>(),
                }),
            );
        }
        doc["scenarios"] = Value::Object(results);
        if let Some(parts) = extra.remove("mixed-parts") {
            doc["mixed_parts"] = Value::Array(parts);
        }
        let idle_end = server_pid.and_then(tree_rss_kib);
        doc["rss_kib"]["idle_end"] = json!(idle_end);
        doc["rss_kib"]["mixed_peak"] = json!(rss_mixed.iter().max());
        doc["rss_kib"]["after_mixed"] = json!(rss_after_mixed.last());
        doc["raw"] = raw_json(&raw_runs, &sync_name);
    } else {
        // Raw limits only.
        let mut raw_runs: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for _ in 0..args.repeat.max(1) {
            for r in &raws {
                let (threads, dur) = (args.raw_threads, args.raw_duration);
                let rate = match r.as_str() {
                    "sign" => raw_sign(threads, dur)?,
                    "commit" => raw_commit(sync, dur, 0, args.database.as_deref())?,
                    "commit-busy" => raw_commit(sync, dur, threads, args.database.as_deref())?,
                    _ => raw_argon2(threads, dur)?,
                };
                eprintln!("  raw {r:<10} {rate:>10.1}/s");
                raw_runs.entry(r.clone()).or_default().push(rate);
            }
        }
        doc["raw"] = raw_json(&raw_runs, &sync_name);
    }

    if let Some(s) = spawned.as_mut() {
        match s.child.try_wait()? {
            Some(status) => {
                eprintln!(
                    "load: the server exited during the run ({status}):\n{}",
                    log_tail(&s.log)
                );
                doc["server_crashed"] = json!(true);
                healthy = false;
            }
            None => {
                s.child.start_kill()?;
                let _ = s.child.wait().await;
            }
        }
    }
    doc["healthy"] = json!(healthy);

    let text = serde_json::to_string_pretty(&doc)?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{text}");
    } else {
        println!("{} ({base})", args.label);
        for row in &table.rows {
            println!("  {row}");
        }
        if let Some(rss) = doc.get("rss_kib") {
            println!("  resident memory (KiB): {rss}");
        }
    }
    Ok(healthy)
}

fn raw_json(raw_runs: &BTreeMap<String, Vec<f64>>, sync: &str) -> Value {
    let mut raw = serde_json::Map::new();
    for (name, list) in raw_runs {
        raw.insert(
            name.clone(),
            json!({ "median_per_s": round(median(list)), "runs": list.iter().map(|x| round(*x)).collect::<Vec<_>>() }),
        );
    }
    if raw_runs.contains_key("commit") || raw_runs.contains_key("commit-busy") {
        raw.insert("commit_synchronous".into(), json!(sync));
    }
    Value::Object(raw)
}

// ---------------------------------------------------------------------------------------
// Seeding a large database (the growth check)

/// Adds `users` users, one family each (with its first token), in one transaction,
/// straight through SQL; the schema comes from gatehouse's own migrations.
fn seed_db(path: &Path, users: usize) -> anyhow::Result<()> {
    use rusqlite::params;
    let t0 = Instant::now();
    drop(SqliteStore::open(path, Synchronous::Normal, 1)?);
    let mut conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;",
    )?;
    // One real Argon2id hash for everyone (its cost is not what is measured here).
    let phc = {
        use argon2::password_hash::PasswordHasher as _;
        let p = gatehouse::crypto::password::PasswordCost::PRODUCTION;
        let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(b"Seeded-User-Pass-1!")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_string()
    };
    let now = chrono::Utc::now().timestamp();
    let tag = chrono::Utc::now().timestamp_millis();
    let tx = conn.transaction()?;
    {
        let mut user = tx.prepare(
            "INSERT INTO users (id, email, password_hash, role, disabled, created_at, updated_at)
             VALUES (?1, ?2, ?3, 'user', 0, ?4, ?4)",
        )?;
        let mut family = tx.prepare(
            "INSERT INTO refresh_families (id, user_id, created_at, last_used_at, expires_at)
             VALUES (?1, ?2, ?3, ?3, ?4)",
        )?;
        let mut token = tx.prepare(
            "INSERT INTO refresh_tokens (hash, family_id, parent_hash, issued_at, expires_at)
             VALUES (?1, ?2, NULL, ?3, ?4)",
        )?;
        for i in 0..users {
            let uid = uuid::Uuid::new_v4().to_string();
            let fid = uuid::Uuid::new_v4().to_string();
            let created = now - (i % 86_400) as i64;
            user.execute(params![
                uid,
                format!("seed-{tag}-{i}@example.com"),
                phc,
                created
            ])?;
            family.execute(params![fid, uid, created, created + 7 * 86_400])?;
            let hash = gatehouse::crypto::random_bytes::<32>();
            token.execute(params![&hash[..], fid, created, created + 12 * 3600])?;
            if i > 0 && i % 100_000 == 0 {
                eprintln!("  {i} users ({:.0}s)", t0.elapsed().as_secs_f64());
            }
        }
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")?;
    let count: i64 = conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
    let families: i64 =
        conn.query_row("SELECT count(*) FROM refresh_families", [], |r| r.get(0))?;
    drop(conn);
    std::fs::File::open(path)?.sync_all()?;
    let size = std::fs::metadata(path)?.len();
    eprintln!(
        "seeded {}: {count} users, {families} families, {:.0} MiB, in {:.0}s",
        path.display(),
        size as f64 / 1048576.0,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn count_users(path: &Path) -> anyhow::Result<i64> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
}

// ---------------------------------------------------------------------------------------
// The ratio table

fn report(paths: &[PathBuf]) -> anyhow::Result<()> {
    // Several documents may share a label (repeated growth runs): figures are their median.
    let mut all: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for p in paths {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?;
        let v: Value =
            serde_json::from_str(&text).with_context(|| format!("{} is not JSON", p.display()))?;
        let label = v["label"].as_str().unwrap_or("?").to_owned();
        all.entry(label).or_default().push(v);
    }
    let docs: BTreeMap<String, Value> = all
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.first()?.clone())))
        .collect();
    let pick = |label: &str, f: &dyn Fn(&Value) -> Option<f64>| -> Option<f64> {
        let v: Vec<f64> = all.get(label)?.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(&v))
    };
    let rps = |label: &str, sc: &str| -> Option<f64> {
        pick(label, &|d| d["scenarios"][sc]["median"]["rps"].as_f64())
    };
    let p99 = |label: &str, sc: &str| -> Option<f64> {
        pick(label, &|d| d["scenarios"][sc]["median"]["p99_ms"].as_f64())
    };
    let raw = |label: &str, r: &str| -> Option<f64> {
        pick(label, &|d| d["raw"][r]["median_per_s"].as_f64())
    };
    let rss = |label: &str, k: &str| -> Option<f64> { pick(label, &|d| d["rss_kib"][k].as_f64()) };
    let fmt = |x: Option<f64>| x.map_or("n/a".to_owned(), |x| format!("{x:.0}"));
    let div = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };

    // A ratio of two things measured in the same document is the median of its per-round
    // ratios (both sides measured minutes apart at most), which drifts less on a shared
    // machine than a ratio of medians.
    let per_round = |label: &str, f: &dyn Fn(&Value, usize) -> Option<f64>| -> Option<f64> {
        let mut v = Vec::new();
        for d in all.get(label)? {
            let rounds = d["settings"]["repeat"].as_u64().unwrap_or(1).max(1) as usize;
            v.extend((0..rounds).filter_map(|i| f(d, i)));
        }
        (!v.is_empty()).then(|| median(&v))
    };
    let run_rps = |d: &Value, sc: &str, i: usize| d["scenarios"][sc]["runs"][i]["rps"].as_f64();
    let run_p99 = |d: &Value, sc: &str, i: usize| d["scenarios"][sc]["runs"][i]["p99_ms"].as_f64();
    let run_raw = |d: &Value, r: &str, i: usize| d["raw"][r]["runs"][i].as_f64();

    struct Row {
        name: String,
        target: String,
        value: Option<f64>,
        met: Option<bool>,
        raw: String,
    }
    let mut rows: Vec<Row> = Vec::new();
    let at_least = |rows: &mut Vec<Row>, name: &str, min: f64, value: Option<f64>, raw: String| {
        rows.push(Row {
            name: name.into(),
            target: format!(">= {min}"),
            value,
            met: value.map(|v| v >= min),
            raw,
        });
    };

    for (label, level) in [("gatehouse", "normal"), ("gatehouse-full", "full")] {
        if !docs.contains_key(label) {
            continue;
        }
        let level = docs[label]["raw"]["commit_synchronous"]
            .as_str()
            .unwrap_or(level)
            .to_owned();
        let (r, s, c) = (
            rps(label, "refresh"),
            raw(label, "sign"),
            raw(label, "commit"),
        );
        let floor = match (s, c) {
            (Some(s), Some(c)) => Some(s.min(c)),
            _ => None,
        };
        at_least(
            &mut rows,
            &format!("1. refresh / min(sign, commit), synchronous={level}"),
            0.75,
            per_round(label, &|d, i| {
                let floor = run_raw(d, "sign", i)?.min(run_raw(d, "commit", i)?);
                div(run_rps(d, "refresh", i), Some(floor))
            })
            .or(div(r, floor)),
            format!(
                "refresh {}/s; sign x2 {}/s; commit {}/s (with CPUs busy {}/s)",
                fmt(r),
                fmt(s),
                fmt(c),
                fmt(raw(label, "commit-busy"))
            ),
        );
    }
    let (l, a) = (rps("gatehouse", "login"), raw("gatehouse", "argon2"));
    at_least(
        &mut rows,
        "2. login / raw argon2id verify x2",
        0.85,
        per_round("gatehouse", &|d, i| {
            div(run_rps(d, "login", i), run_raw(d, "argon2", i))
        }),
        format!("login {}/s; argon2 {}/s", fmt(l), fmt(a)),
    );
    let (j, b) = (rps("gatehouse", "jwks"), rps("gatehouse", "jwks-bare"));
    at_least(
        &mut rows,
        "3. jwks / bare actix-web",
        0.80,
        per_round("gatehouse", &|d, i| {
            div(run_rps(d, "jwks", i), run_rps(d, "jwks-bare", i))
        }),
        format!(
            "jwks {}/s; bare {}/s; jwks-304 {}/s",
            fmt(j),
            fmt(b),
            fmt(rps("gatehouse", "jwks-304"))
        ),
    );
    for (name, probe) in [("jwks", "flood-jwks"), ("me", "flood-me")] {
        let (f, base) = (
            p99("gatehouse", probe),
            p99("gatehouse", &format!("flood-baseline-{name}")),
        );
        let baseline = format!("flood-baseline-{name}");
        let value = per_round("gatehouse", &|d, i| {
            div(run_p99(d, probe, i), run_p99(d, &baseline, i))
        });
        rows.push(Row {
            name: format!("4. flood: {name} p99 flooded / baseline"),
            target: "<= 5".into(),
            value,
            met: value.map(|v| v <= 5.0),
            raw: format!(
                "p99 {:.2} ms vs {:.2} ms; logins {}/s",
                f.unwrap_or(f64::NAN),
                base.unwrap_or(f64::NAN),
                fmt(rps("gatehouse", "flood-login"))
            ),
        });
    }
    if let Some(doc) = docs.get("gatehouse") {
        let timeouts: u64 = ["flood-jwks", "flood-me", "flood-login"]
            .iter()
            .map(|s| {
                doc["scenarios"][s]["median"]["errors"]["timeout"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum();
        let errors: u64 = ["flood-jwks", "flood-me", "flood-login"]
            .iter()
            .filter_map(|s| doc["scenarios"][s]["median"]["errors"].as_object())
            .flat_map(|m| m.values().filter_map(Value::as_u64))
            .sum();
        rows.push(Row {
            name: "4. flood: requests timed out".into(),
            target: "= 0".into(),
            value: Some(timeouts as f64),
            met: Some(timeouts == 0),
            raw: format!("{errors} errors of any kind during the flood"),
        });
    }
    if let Some(seeded) = docs.get("growth-seeded") {
        let users = seeded["settings"]["database_users"].as_i64().unwrap_or(0);
        let (s, e) = (
            raw("growth-seeded", "commit"),
            raw("growth-empty", "commit"),
        );
        if s.is_some() {
            rows.push(Row {
                name: format!("5. growth: raw rotation commit, {users} / empty"),
                target: "report".into(),
                value: div(s, e),
                met: None,
                raw: format!("{}/s vs {}/s", fmt(s), fmt(e)),
            });
        }
        for sc in ["refresh", "login"] {
            let (s, e) = (rps("growth-seeded", sc), rps("growth-empty", sc));
            at_least(
                &mut rows,
                &format!("5. growth: {sc} with {users} users+families / empty"),
                0.90,
                div(s, e),
                format!("{sc} {}/s vs {}/s", fmt(s), fmt(e)),
            );
        }
    }
    let (idle, peak, after) = (
        rss("gatehouse", "idle"),
        rss("gatehouse", "mixed_peak"),
        rss("gatehouse", "after_mixed"),
    );
    rows.push(Row {
        name: "6. memory: gatehouse RSS idle / mixed peak / after (MiB)".into(),
        target: "report".into(),
        value: None,
        met: None,
        raw: format!(
            "{:.1} / {:.1} / {:.1}",
            idle.unwrap_or(f64::NAN) / 1024.0,
            peak.unwrap_or(f64::NAN) / 1024.0,
            after.unwrap_or(f64::NAN) / 1024.0
        ),
    });
    if let Some(soak) = docs.values().find_map(|d| d.get("soak")) {
        let (w, last, max) = (
            soak["rss_after_warmup_kib"].as_f64(),
            soak["rss_last_kib"].as_f64(),
            soak["rss_max_after_warmup_kib"].as_f64(),
        );
        let growth = div(max, w).map(|g| (g - 1.0) * 100.0);
        rows.push(Row {
            name: format!(
                "6. memory: growth over {:.0}s mixed after warm-up (%)",
                soak["duration_s"].as_f64().unwrap_or(0.0)
            ),
            target: "<= 5 %".into(),
            value: growth,
            met: growth.map(|g| g <= 5.0),
            raw: format!(
                "after warm-up {:.1} MiB, max {:.1} MiB, last {:.1} MiB",
                w.unwrap_or(f64::NAN) / 1024.0,
                max.unwrap_or(f64::NAN) / 1024.0,
                last.unwrap_or(f64::NAN) / 1024.0
            ),
        });
    }
    if docs.contains_key("node") {
        for (sc, min) in [("refresh", 2.5), ("jwks", 6.0), ("login", 1.3), ("me", 0.0)] {
            let (g, n) = (rps("gatehouse", sc), rps("node", sc));
            let cpu = |l: &str| {
                pick(l, &|d| {
                    d["scenarios"][sc]["median"]["server_cpu_us_per_req"].as_f64()
                })
            };
            let (gc, nc) = (cpu("gatehouse"), cpu("node"));
            let figures = format!(
                "{}/s vs {}/s; server CPU {:.0} vs {:.0} us/req ({:.2}x)",
                fmt(g),
                fmt(n),
                gc.unwrap_or(f64::NAN),
                nc.unwrap_or(f64::NAN),
                div(nc, gc).unwrap_or(f64::NAN)
            );
            if min > 0.0 {
                at_least(
                    &mut rows,
                    &format!("vs Node: {sc} gatehouse / node"),
                    min,
                    div(g, n),
                    figures,
                );
            } else {
                rows.push(Row {
                    name: format!("vs Node: {sc} gatehouse / node"),
                    target: "report".into(),
                    value: div(g, n),
                    met: None,
                    raw: figures,
                });
            }
        }
        let (g, n) = (rss("gatehouse", "mixed_peak"), rss("node", "mixed_peak"));
        let value = div(g, n);
        rows.push(Row {
            name: "vs Node: RSS under mixed gatehouse / node".into(),
            target: "<= 0.333".into(),
            value,
            met: value.map(|v| v <= 1.0 / 3.0),
            raw: format!(
                "{:.1} MiB vs {:.1} MiB (idle {:.1} vs {:.1})",
                g.unwrap_or(f64::NAN) / 1024.0,
                n.unwrap_or(f64::NAN) / 1024.0,
                rss("gatehouse", "idle").unwrap_or(f64::NAN) / 1024.0,
                rss("node", "idle").unwrap_or(f64::NAN) / 1024.0
            ),
        });
    }

    println!(
        "{:<58} {:>9} {:>9}  {:<8} raw figures (medians)",
        "ratio", "target", "measured", "met"
    );
    for r in &rows {
        let met = match r.met {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "-",
        };
        let value = r.value.map_or("n/a".into(), |v| format!("{v:.2}"));
        println!(
            "{:<58} {:>9} {:>9}  {:<8} {}",
            r.name, r.target, value, met, r.raw
        );
    }
    Ok(())
}
