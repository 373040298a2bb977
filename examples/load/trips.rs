//! `--round-trips N`: the round trips to PostgreSQL each request costs, counted on a
//! second server started on the run's database through a counting relay, after the
//! measured rounds (the relay's hop would slow the measured server).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use crate::client::{Op, Target};
use crate::pg::BenchDatabase;
use crate::relay::CountingRelay;
use crate::server::spawn_server;

/// Operations whose round trips are counted, in this order (signup first: it makes the
/// account the others use).
const COUNTED: [Op; 4] = [Op::Signup, Op::Login, Op::Refresh, Op::Me];

/// Runs `n` requests of each counted operation in `scenarios`, one at a time, and
/// returns, per operation, the mean round trips per successful request and how many
/// requests took how many. `null` when the server is not reached over TCP.
pub(crate) async fn count(
    binary: &Path,
    env: &[String],
    db: &BenchDatabase,
    scenarios: &[String],
    n: usize,
) -> anyhow::Result<Value> {
    let Some(upstream) = db.tcp_upstream() else {
        eprintln!("load: warning: PostgreSQL is not reached over TCP: round trips are NOT counted");
        return Ok(Value::Null);
    };
    let relay = CountingRelay::start(upstream)?;
    let mut env = env.to_vec();
    env.push(format!(
        "GATEHOUSE_DATABASE={}",
        db.url_text_via(relay.port)
    ));
    let (mut spawned, base) = spawn_server(binary, &env, None).await?;
    let target = Arc::new(Target::new(
        spawned.child.id().into_iter().collect(),
        None,
        &[base],
        String::new(),
        format!("trips-{}", std::process::id()),
    )?);
    let mut acct = target.signup(0).await?;
    let mut counter = 0u64;
    let mut out = serde_json::Map::new();
    for op in COUNTED {
        if !scenarios.iter().any(|s| s == op.name()) {
            continue;
        }
        // Uncounted first requests: the pool opens its second connection (it keeps one
        // idle while the other is out) and the statements' first plans are made.
        for _ in 0..3 {
            let _ = target.call(op, &mut acct, &mut counter).await;
        }
        let (mut total, mut ok) = (0u64, 0u64);
        let mut histogram: BTreeMap<u64, u64> = BTreeMap::new();
        for _ in 0..n {
            let before = relay.sends();
            let outcome = target.call(op, &mut acct, &mut counter).await;
            let trips = relay.sends() - before;
            if matches!(outcome, Ok(200..300)) {
                total += trips;
                ok += 1;
                *histogram.entry(trips).or_default() += 1;
            }
        }
        let mean = total as f64 / ok.max(1) as f64;
        eprintln!(
            "  round trips {:<10} {mean:>6.2} per request ({ok} requests: {histogram:?})",
            op.name()
        );
        out.insert(
            op.name().into(),
            json!({
                "per_request": crate::stats::round(mean),
                "requests": ok,
                "histogram": histogram
                    .iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect::<serde_json::Map<_, _>>(),
            }),
        );
    }
    spawned.stop().await?;
    Ok(Value::Object(out))
}
