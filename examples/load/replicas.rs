//! The replicas table of `--report`: 1 and 2 replicas of gatehouse on one PostgreSQL
//! database, without and with the Redis limiter, from `bench/run.sh`'s alternating
//! invocations (labels `replicas-<n>`, `replicas-2-half` and `replicas-<n>-redis`).

use serde_json::Value;

use crate::report::{Docs, div, doc_median, fmt, round_pairs};
use crate::stats::median;

const SCENARIOS: [&str; 3] = ["login", "refresh", "me"];
/// (label, replicas, limiter) in the table's order.
const CONFIGS: [(&str, usize, &str); 5] = [
    ("replicas-1", 1, "off"),
    ("replicas-2", 2, "off"),
    // 2 replicas of 1 HTTP worker and 1 hashing thread each: one replica's threads.
    ("replicas-2-half", 2, "off"),
    ("replicas-1-redis", 1, "Redis"),
    ("replicas-2-redis", 2, "Redis"),
];

/// The median over the rounds of `f(a_round, b_round)`, rounds paired by start order.
fn per_round(
    docs: &Docs,
    a: &str,
    b: &str,
    f: &dyn Fn(&Value, &Value) -> Option<f64>,
) -> Option<f64> {
    let v: Vec<f64> = round_pairs(docs, a, b)
        .iter()
        .filter_map(|(x, y)| f(x, y))
        .collect();
    (!v.is_empty()).then(|| median(&v))
}

fn med(docs: &Docs, label: &str, sc: &str, field: &str) -> Option<f64> {
    docs.pick(label, &|d| doc_median(d, sc, field))
}

fn cell(x: Option<f64>, digits: usize) -> String {
    x.map_or("n/a".into(), |x| format!("{x:.digits$}"))
}

pub(crate) fn print_table(docs: &Docs) {
    let present: Vec<_> = CONFIGS
        .iter()
        .filter(|c| docs.all.contains_key(c.0))
        .collect();
    if present.is_empty() {
        return;
    }
    let rounds = present
        .iter()
        .map(|c| docs.all[c.0].len())
        .max()
        .unwrap_or(0);
    println!(
        "\nReplicas on one PostgreSQL database, {rounds} alternating rounds (medians; \
         srv us is every replica's CPU summed, per request; 2/1 and +limiter are medians \
         of the rounds' ratios and differences)"
    );
    println!(
        "{:<8} {:>10} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>10}",
        "scenario",
        "replicas",
        "limiter",
        "req/s",
        "p50 ms",
        "p99 ms",
        "srv us",
        "PG us",
        "redis us",
        "srv 2/1",
        "+limiter us"
    );
    for sc in SCENARIOS {
        for &&(label, n, limiter) in &present {
            if med(docs, label, sc, "rps").is_none() {
                continue;
            }
            let srv = |d: &Value| doc_median(d, sc, "server_cpu_us_per_req");
            // Against the same limiter with one replica.
            let one = if limiter == "off" {
                "replicas-1"
            } else {
                "replicas-1-redis"
            };
            let two_over_one = (n == 2)
                .then(|| per_round(docs, one, label, &|a, b| div(srv(b), srv(a))))
                .flatten();
            // Against the same replica count without the limiter.
            let plain = if n == 1 { "replicas-1" } else { "replicas-2" };
            let limiter_cost = (limiter != "off")
                .then(|| {
                    per_round(docs, plain, label, &|a, b| {
                        Some(srv(b)? + side(b, sc) - srv(a)?)
                    })
                })
                .flatten();
            println!(
                "{:<8} {:>10} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>8} {:>10}",
                sc,
                if label.ends_with("-half") {
                    format!("{n} (half)")
                } else {
                    n.to_string()
                },
                limiter,
                fmt(med(docs, label, sc, "rps")),
                cell(med(docs, label, sc, "p50_ms"), 2),
                cell(med(docs, label, sc, "p99_ms"), 2),
                fmt(med(docs, label, sc, "server_cpu_us_per_req")),
                fmt(med(docs, label, sc, "db_cpu_us_per_req")),
                if limiter == "off" {
                    "-".into()
                } else {
                    cell(med(docs, label, sc, "side_cpu_us_per_req"), 1)
                },
                two_over_one.map_or("-".into(), |r| format!("{r:.2}")),
                limiter_cost.map_or("-".into(), |c| format!("{c:.0}")),
            );
        }
    }
    println!(
        "(+limiter us: gatehouse's and redis-server's CPU per request with the Redis \
         limiter minus gatehouse's without it, same replica count)"
    );
}

/// The private redis-server's CPU per request, 0 when it was not measured.
fn side(d: &Value, sc: &str) -> f64 {
    doc_median(d, sc, "side_cpu_us_per_req").unwrap_or(0.0)
}
