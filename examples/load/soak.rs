//! `--soak`: a long `mixed` run sampling the server's resident memory every 10 s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::client::{Mix, Op};
use crate::rss::sample_rss;
use crate::scenarios::{Live, Results, run_closed};
use crate::stats::round;

/// Runs the soak into `doc["soak"]`; `false` when its error share exceeds
/// `--max-error-rate`.
pub(crate) async fn soak(
    live: &mut Live<'_>,
    soak: Duration,
    out: &mut Results,
    doc: &mut Value,
) -> anyhow::Result<bool> {
    eprintln!(
        "soak: mixed for {:.0}s, resident memory every 10 s",
        soak.as_secs_f64()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(live.server_pid, Duration::from_secs(10), Arc::clone(&stop));
    let per_op = run_closed(
        &live.target,
        &mut live.accounts,
        Mix::Mixed,
        Duration::ZERO,
        soak,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await?;
    for (op, st) in &per_op {
        out.table.add(&format!("soak/{}", op.name()), st);
    }
    let all = per_op.get(&Op::All).cloned().unwrap_or_default();
    let (errors, requests) = (all.error_count(), all.requests);
    // Growth after warm-up: the first fifth of the run is warm-up.
    let after_warmup = || {
        samples
            .iter()
            .filter(|(t, _)| *t >= soak.as_secs_f64() / 5.0)
    };
    let warm = after_warmup().next().map(|s| s.1);
    let last = samples.last().map(|s| s.1);
    let max_after = after_warmup().map(|s| s.1).max();
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
    Ok(!(requests > 0 && errors as f64 / requests as f64 > live.args.max_error_rate))
}
