//! The closed-loop scenarios (jwks, jwks-304, me, login, refresh, signup, mixed) and what
//! one run collects from them; `flood` is in flood.rs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::Value;

use crate::Args;
use crate::client::{Account, Mix, Op, PerOp, Rng, Target};
use crate::rss::{cpu_between, sample_rss, tree_rss_kib};
use crate::stats::{Recorder, Stats, Table};

/// Every scenario `all` stands for (signup is left out: it only grows the database).
const ALL: [&str; 7] = [
    "jwks", "jwks-304", "me", "login", "refresh", "mixed", "flood",
];

pub(crate) fn scenario_list(spec: &str) -> anyhow::Result<Vec<String>> {
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

/// The server under load, as the scenarios see it.
pub(crate) struct Live<'a> {
    pub(crate) args: &'a Args,
    pub(crate) target: Arc<Target>,
    /// The bare actix-web baseline, when `--bare`, and its process.
    pub(crate) bare: Option<Arc<Target>>,
    pub(crate) bare_process: Option<tokio::process::Child>,
    /// One per worker, signed up before any measurement; refresh chains carry on
    /// from one scenario and round to the next.
    pub(crate) accounts: Vec<Account>,
    pub(crate) server_pid: Option<u32>,
}

/// What one run collects, round after round.
pub(crate) struct Results {
    pub(crate) table: Table,
    /// Every round's figures, by the scenario name the JSON and the report use.
    pub(crate) runs: BTreeMap<String, Vec<Stats>>,
    /// `mixed` split by operation, one entry per round.
    pub(crate) mixed_parts: Vec<Value>,
    pub(crate) raw_runs: BTreeMap<String, Vec<f64>>,
    pub(crate) rss_mixed_peak: Vec<u64>,
    pub(crate) rss_after_mixed: Vec<u64>,
}

impl Results {
    pub(crate) fn new() -> Self {
        Self {
            table: Table::new(),
            runs: BTreeMap::new(),
            mixed_parts: Vec::new(),
            raw_runs: BTreeMap::new(),
            rss_mixed_peak: Vec::new(),
            rss_after_mixed: Vec::new(),
        }
    }

    /// One round of one scenario: a table row and its figures under `key`.
    pub(crate) fn add(&mut self, row: &str, key: &str, st: Stats) {
        self.table.add(row, &st);
        self.runs.entry(key.to_owned()).or_default().push(st);
    }
}

/// Runs one round of scenario `name`.
pub(crate) async fn run_scenario(
    live: &mut Live<'_>,
    name: &str,
    out: &mut Results,
) -> anyhow::Result<()> {
    match name {
        "jwks" => jwks(live, Op::Jwks, out).await,
        "jwks-304" => jwks(live, Op::Jwks304, out).await,
        "me" => single(live, Op::Me, out).await,
        "login" => single(live, Op::Login, out).await,
        "refresh" => single(live, Op::Refresh, out).await,
        "signup" => single(live, Op::Signup, out).await,
        "mixed" => mixed(live, out).await?,
        "flood" => crate::flood::flood(live, out).await?,
        _ => unreachable!("scenario_list admits no other name"),
    }
    Ok(())
}

/// JWKS needs no account; with `--bare`, the bare baseline runs right after `jwks`, so
/// that the ratio compares two measurements a few seconds apart.
async fn jwks(live: &Live<'_>, op: Op, out: &mut Results) {
    let (args, d, w) = (live.args, live.args.duration, live.args.warmup);
    let nobody = Account {
        email: "nobody@example.com".into(),
        access: String::new(),
        refresh: String::new(),
    };
    let mut accts = vec![nobody.clone(); args.concurrency.max(1)];
    let st = run_closed(&live.target, &mut accts, Mix::Only(op), w, d).await;
    out.add(
        op.name(),
        op.name(),
        st.get(&op).cloned().unwrap_or_default(),
    );
    if op == Op::Jwks
        && let Some(bare) = &live.bare
    {
        let mut accts = vec![nobody; args.concurrency.max(1)];
        let st = run_closed(bare, &mut accts, Mix::Only(Op::Jwks), w, d).await;
        let st = st.get(&Op::Jwks).cloned().unwrap_or_default();
        out.add("jwks (bare actix-web)", "jwks-bare", st);
    }
}

/// One operation, every worker on its own account.
async fn single(live: &mut Live<'_>, op: Op, out: &mut Results) {
    let (d, w) = (live.args.duration, live.args.warmup);
    let st = run_closed(&live.target, &mut live.accounts, Mix::Only(op), w, d).await;
    out.add(
        op.name(),
        op.name(),
        st.get(&op).cloned().unwrap_or_default(),
    );
}

/// The mix, with the server's resident memory sampled every 250 ms meanwhile and once
/// more half a second after it.
async fn mixed(live: &mut Live<'_>, out: &mut Results) -> anyhow::Result<()> {
    let (d, w) = (live.args.duration, live.args.warmup);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(
        live.server_pid,
        Duration::from_millis(250),
        Arc::clone(&stop),
    );
    let per_op = run_closed(&live.target, &mut live.accounts, Mix::Mixed, w, d).await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await?;
    if let Some(peak) = samples.iter().map(|s| s.1).max() {
        out.rss_mixed_peak.push(peak);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    if let Some(kib) = live.server_pid.and_then(tree_rss_kib) {
        out.rss_after_mixed.push(kib);
    }
    let mut parts = serde_json::Map::new();
    for (op, st) in &per_op {
        if *op != Op::All {
            out.table.add(&format!("mixed/{}", op.name()), st);
            parts.insert(op.name().into(), st.json());
        }
    }
    let all = per_op.get(&Op::All).cloned().unwrap_or_default();
    out.add("mixed (all)", "mixed", all);
    out.mixed_parts.push(Value::Object(parts));
    Ok(())
}

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
pub(crate) async fn run_closed(
    target: &Arc<Target>,
    accounts: &mut Vec<Account>,
    mix: Mix,
    warmup: Duration,
    duration: Duration,
) -> BTreeMap<Op, Stats> {
    let start = Instant::now();
    let measure_from = start + warmup;
    let deadline = measure_from + duration;
    let cpu = tokio::spawn(cpu_between(
        target.pids.clone(),
        target.side_pid,
        target.db.clone(),
        measure_from,
        deadline,
    ));
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
    let cpu = cpu.await.unwrap_or_default();
    merged
        .into_iter()
        .map(|(op, rec)| {
            let mut st = rec.stats(duration);
            let n = st.ok.max(1) as f64;
            st.server_cpu_us = cpu.server * 1e6 / n;
            st.client_cpu_us = cpu.client * 1e6 / n;
            st.db_cpu_us = cpu.db.map(|c| c * 1e6 / n);
            st.side_cpu_us = cpu.side.map(|c| c * 1e6 / n);
            (op, st)
        })
        .collect()
}
