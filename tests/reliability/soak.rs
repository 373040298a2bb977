//! Soak (ignored in the normal run; `scripts/soak.sh` runs it in release): the real
//! binary under a mixed load (logins, refresh chains, JWKS, /v1/me) on loopback.
//!
//! 1. Capacity: a closed loop of `GATEHOUSE_SOAK_CONCURRENCY` clients for
//!    `GATEHOUSE_SOAK_PROBE` (default 30 s) measures the mix's throughput C.
//! 2. Soak: an open loop at `GATEHOUSE_SOAK_LOAD` (default 0.8) × C for
//!    `GATEHOUSE_SOAK_DURATION` (default 600 s), reporting every 10 s: requests, 5xx,
//!    other unexpected answers, transport errors, p50/p99/max latency, the server's RSS.
//!
//! Passes when there is no 5xx, no unexpected answer, no transport error, and resident
//! memory after warm-up (the first fifth) grows by less than 10%.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::invariants::{open_db, storage_violations};
use crate::kit::password::PASSWORD;
use crate::kit::process::{self, Binary};
use crate::kit::rng::Rng;
use crate::kit::rss::rss_kib;

fn env_f64(key: &str, default: f64) -> f64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Login,
    Refresh,
    Me,
    Jwks,
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
    latencies_us: Vec<u32>,
    server_errors: u64,
    unexpected: Vec<String>,
    transport: u64,
}

impl Load {
    async fn one(&self, op: Op) {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let start = Instant::now();
        let op = match op {
            Op::Refresh if self.chains.lock().is_empty() => Op::Me,
            other => other,
        };
        let request = match op {
            Op::Login => {
                let email = &self.emails[(n as usize) % self.emails.len()];
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
                    tokens[(n as usize) % tokens.len()].clone()
                };
                self.client
                    .get(format!("{}/v1/me", self.base))
                    .bearer_auth(access)
            }
            Op::Jwks => self
                .client
                .get(format!("{}/.well-known/jwks.json", self.base)),
        };
        let outcome = match request.send().await {
            Ok(r) => {
                let status = r.status();
                r.bytes()
                    .await
                    .map(|b| (status, b))
                    .map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        let took = start.elapsed();
        let mut unexpected = None;
        let mut server_error = false;
        let ok = match &outcome {
            Ok((status, body)) => {
                server_error = status.is_server_error();
                let want = StatusCode::OK;
                if *status == want {
                    if matches!(op, Op::Login | Op::Refresh) {
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
                            let i = (n as usize) % 64;
                            if access.len() < 64 {
                                access.push(a.to_owned());
                            } else {
                                access[i] = a.to_owned();
                            }
                        }
                    }
                } else {
                    unexpected = Some(format!(
                        "{op:?} answered {status}: {}",
                        String::from_utf8_lossy(body)
                    ));
                }
                true
            }
            Err(_) => false,
        };
        let mut w = self.window.lock();
        w.latencies_us
            .push(took.as_micros().min(u32::MAX as u128) as u32);
        if !ok {
            w.transport += 1;
        }
        if server_error {
            w.server_errors += 1;
        }
        if let Some(u) = unexpected
            && w.unexpected.len() < 20
        {
            w.unexpected.push(u);
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

#[tokio::test(flavor = "multi_thread")]
#[ignore = "10-minute soak; run by scripts/soak.sh"]
async fn soak_mixed_load_at_80_percent_of_capacity() {
    let duration = Duration::from_secs_f64(env_f64("GATEHOUSE_SOAK_DURATION", 600.0));
    let probe = Duration::from_secs_f64(env_f64("GATEHOUSE_SOAK_PROBE", 30.0));
    let load_factor = env_f64("GATEHOUSE_SOAK_LOAD", 0.8);
    let concurrency = env_f64("GATEHOUSE_SOAK_CONCURRENCY", 32.0) as usize;
    let dir = tempfile::tempdir().expect("temp dir");
    let files = Binary::in_dir(dir.path());
    let server = files.start().await;
    let pid = server.pid();
    let client = process::client();

    // Accounts, and a first family each.
    let mut emails = Vec::new();
    let load = {
        let mut chains = VecDeque::new();
        let mut access = Vec::new();
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
            client: client.clone(),
            emails,
            chains: Mutex::new(chains),
            access: Mutex::new(access),
            serial: AtomicU64::new(0),
            window: Mutex::new(Window::default()),
        })
    };

    // 1. Capacity: closed loop.
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
    let capacity_window = load.take_window();
    let capacity =
        capacity_window.latencies_us.len() as f64 / measured_from.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("closed-loop task");
    }
    let rate = capacity * load_factor;
    let mut probe_sorted = capacity_window.latencies_us.clone();
    probe_sorted.sort_unstable();
    eprintln!(
        "soak: capacity {capacity:.0} req/s (closed loop, {concurrency} clients, p99 {:.1} ms, {} 5xx); \
         soaking at {rate:.0} req/s ({:.0}%) for {:.0} s",
        percentile(&probe_sorted, 0.99),
        capacity_window.server_errors,
        load_factor * 100.0,
        duration.as_secs_f64()
    );

    // 2. Soak: open loop at a fixed rate; requests start on schedule whatever the latency.
    let mut total = Window::default();
    let mut rows = Vec::new();
    let mut rss = Vec::new();
    let mut rng = Rng::new(99);
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut next_report = start + Duration::from_secs(10);
    let mut sent: u64 = 0;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(2048));
    let mut overloaded = 0u64;
    while start.elapsed() < duration {
        let due = start + interval.mul_f64(sent as f64);
        let now = Instant::now();
        if due > now {
            tokio::time::sleep_until(due.into()).await;
        }
        sent += 1;
        match in_flight.clone().try_acquire_owned() {
            Ok(permit) => {
                let load = load.clone();
                let op = pick(rng.next());
                tokio::spawn(async move {
                    load.one(op).await;
                    drop(permit);
                });
            }
            Err(_) => overloaded += 1,
        }
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(10);
            let mut w = load.take_window();
            w.latencies_us.sort_unstable();
            // The server gone would read as zero growth: stop there instead.
            let kib = rss_kib(pid).expect("the server is gone: no resident memory to read");
            let t = start.elapsed().as_secs_f64();
            let row = format!(
                "{t:>5.0}s {:>7} req {:>7.0}/s  p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>7.1} ms  5xx {}  other {}  transport {}  rss {} KiB",
                w.latencies_us.len(),
                w.latencies_us.len() as f64 / 10.0,
                percentile(&w.latencies_us, 0.5),
                percentile(&w.latencies_us, 0.99),
                percentile(&w.latencies_us, 1.0),
                w.server_errors,
                w.unexpected.len(),
                w.transport,
                kib
            );
            eprintln!("soak: {row}");
            rows.push(row);
            rss.push((t, kib));
            total.latencies_us.extend_from_slice(&w.latencies_us);
            total.server_errors += w.server_errors;
            total.transport += w.transport;
            total.unexpected.extend(w.unexpected);
        }
    }
    // Let the last requests finish.
    let _ = tokio::time::timeout(Duration::from_secs(30), in_flight.acquire_many(2048)).await;
    let w = load.take_window();
    total.latencies_us.extend_from_slice(&w.latencies_us);
    total.server_errors += w.server_errors;
    total.transport += w.transport;
    total.unexpected.extend(w.unexpected);
    total.latencies_us.sort_unstable();

    let warm: Vec<u64> = rss
        .iter()
        .filter(|(t, _)| *t >= duration.as_secs_f64() / 5.0)
        .map(|(_, k)| *k)
        .collect();
    let (first, last, max) = (
        warm.first().copied().unwrap_or(0),
        warm.last().copied().unwrap_or(0),
        warm.iter().copied().max().unwrap_or(0),
    );
    let growth = if first > 0 {
        (max as f64 - first as f64) / first as f64
    } else {
        0.0
    };
    let served = total.latencies_us.len();
    eprintln!(
        "soak: {served} requests in {:.0} s at {rate:.0}/s offered ({overloaded} not sent: \
         2048 in flight); 5xx {}, other unexpected {}, transport errors {}; \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; RSS after warm-up {first} KiB, last {last} KiB, \
         max {max} KiB (growth {:.1}%)",
        duration.as_secs_f64(),
        total.server_errors,
        total.unexpected.len(),
        total.transport,
        percentile(&total.latencies_us, 0.5),
        percentile(&total.latencies_us, 0.99),
        percentile(&total.latencies_us, 1.0),
        growth * 100.0
    );
    server.kill().await;
    let conn = open_db(&files.database);
    let violations = storage_violations(&conn);
    assert!(violations.is_empty(), "after the soak: {violations:?}");
    assert_eq!(total.server_errors, 0, "5xx during the soak");
    assert!(
        total.unexpected.is_empty(),
        "unexpected answers: {:?}",
        total.unexpected
    );
    assert_eq!(total.transport, 0, "transport errors during the soak");
    assert_eq!(overloaded, 0, "the server fell behind the offered rate");
    assert!(
        growth < 0.10,
        "resident memory grew {:.1}% after warm-up",
        growth * 100.0
    );
}
