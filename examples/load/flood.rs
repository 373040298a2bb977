//! `flood`: logins saturating the Argon2 pool while a fixed-rate probe stream measures
//! JWKS and /v1/me latency, compared with the same probes without the flood.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{Account, Mix, Op, PerOp, Target};
use crate::scenarios::{Live, Results, run_closed};
use crate::stats::Stats;

pub(crate) async fn flood(live: &mut Live<'_>, out: &mut Results) -> anyhow::Result<()> {
    let (d, w, rate) = (live.args.duration, live.args.warmup, live.args.probe_rate);
    let access = live
        .accounts
        .first()
        .map(|a| a.access.clone())
        .unwrap_or_default();
    // A client of their own: the probes never wait for a pooled connection that a
    // login holds.
    let probe_target = Arc::new(Target::new(
        live.target.pids.clone(),
        None,
        &live.target.bases(),
        live.target.etag.clone(),
        live.target.tag.clone(),
    )?);
    let start = Instant::now();
    let baseline = probes(
        Arc::clone(&probe_target),
        access.clone(),
        rate,
        start + w,
        start + w + d,
    )
    .await;
    let start = Instant::now();
    let flooded = tokio::spawn(probes(
        Arc::clone(&probe_target),
        access,
        rate,
        start + w,
        start + w + d,
    ));
    let logins = run_closed(&live.target, &mut live.accounts, Mix::Only(Op::Login), w, d).await;
    let flooded = flooded.await?;

    let stats = |m: PerOp| -> BTreeMap<Op, Stats> {
        m.into_iter().map(|(op, r)| (op, r.stats(d))).collect()
    };
    let (b, f) = (stats(baseline), stats(flooded));
    let get = |m: &BTreeMap<Op, Stats>, op| m.get(&op).cloned().unwrap_or_default();
    let login = logins.get(&Op::Login).cloned().unwrap_or_default();
    out.add(
        "flood/baseline jwks",
        "flood-baseline-jwks",
        get(&b, Op::Jwks),
    );
    out.add("flood/baseline me", "flood-baseline-me", get(&b, Op::Me));
    out.add("flood/flooded jwks", "flood-jwks", get(&f, Op::Jwks));
    out.add("flood/flooded me", "flood-me", get(&f, Op::Me));
    out.add("flood/logins", "flood-login", login);
    Ok(())
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
