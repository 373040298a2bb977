//! Load tool for gatehouse (and for the Node.js comparison service in `bench/node`).
//!
//! Drives a running server over loopback with a bounded duration and concurrency, or
//! starts the release binary itself (`--spawn`), and prints requests/s, p50/p90/p99 and
//! errors per scenario; `--json` prints the same as one JSON document. It also measures
//! the raw limits BENCHMARKS.md's ratios divide by (RS256 signing, the rotation commit,
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
//!
//! The soak is not here: `scripts/soak.sh` (tests/reliability/soak.rs) is the one soak,
//! and `bench/run.sh --soak` runs it.

#![allow(clippy::unwrap_used)]

mod bare;
mod client;
mod flood;
mod pg;
mod raw;
mod relay;
mod replicas;
mod report;
mod rss;
mod run;
mod scenarios;
mod seed;
mod server;
mod stats;
mod trips;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

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
    /// With --spawn and --postgres: start this many replicas on the one database (and
    /// one Redis, when `--env GATEHOUSE_RATE_LIMIT_STORE=...` names one), with one issuer,
    /// and spread the requests over them round-robin, one pooled client per replica (no
    /// proxy in the measured path). Server CPU is the replicas' summed. Given, even as 1,
    /// the issuer is the same fixed one, so that 1 and N compare like with like.
    #[arg(long)]
    replicas: Option<usize>,
    /// A process beside the server whose CPU per request over the measured windows is
    /// reported apart (`side us`; a private redis-server, say).
    #[arg(long, value_name = "PID")]
    side_pid: Option<u32>,
    /// Extra environment for the spawned server, `KEY=VALUE` (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Start the spawned server on a copy of this database (the growth check).
    #[arg(long)]
    database: Option<PathBuf>,
    /// Start the spawned server on PostgreSQL instead of SQLite: a fresh database
    /// created on the server at this URL (its user may CREATE DATABASE), dropped at the
    /// end, also on an error or Ctrl-C. No other database is touched. The database
    /// server's CPU for the run's database is reported per request (`db us`).
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// With --postgres: after the rounds, count the round trips to PostgreSQL of this
    /// many requests of each of signup, login, refresh and me (those in --scenarios),
    /// one at a time, on a second server started through a counting relay.
    #[arg(long, default_value_t = 0)]
    round_trips: usize,
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

/// Runs `work` unless Ctrl-C or SIGTERM comes first; then `work` is dropped, and with
/// it the spawned server and the run's PostgreSQL database (their `Drop`s).
async fn until_interrupted(
    work: impl std::future::Future<Output = anyhow::Result<bool>>,
) -> anyhow::Result<bool> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = work => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
        _ = term.recv() => anyhow::bail!("terminated"),
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = if let Some(body) = &args.serve_bare {
        bare::serve(body, args.bare_workers.unwrap_or(2)).map(|()| true)
    } else if let Some(path) = &args.seed_db {
        seed::seed_db(path, args.users).map(|()| true)
    } else if !args.report.is_empty() {
        report::report(&args.report).map(|()| true)
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("tokio runtime")
            .and_then(|rt| rt.block_on(until_interrupted(run::run(args))))
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
