//! `--report`: the ratio table of one run, from the JSON documents its invocations wrote
//! (gatehouse, gatehouse-full, node, growth-empty, growth-seeded, soak).

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context as _;
use serde_json::Value;

use crate::stats::median;

/// The documents of one run by label.
pub(crate) struct Docs {
    /// Several documents may share a label (repeated growth runs): figures are their
    /// median.
    pub(crate) all: BTreeMap<String, Vec<Value>>,
}

impl Docs {
    fn load(paths: &[PathBuf]) -> anyhow::Result<Self> {
        let mut all: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for p in paths {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read {}", p.display()))?;
            let v: Value = serde_json::from_str(&text)
                .with_context(|| format!("{} is not JSON", p.display()))?;
            let label = v["label"].as_str().unwrap_or("?").to_owned();
            all.entry(label).or_default().push(v);
        }
        Ok(Self { all })
    }

    fn has(&self, label: &str) -> bool {
        self.all.contains_key(label)
    }

    /// The first document of `label`, for what does not vary between rounds.
    fn first(&self, label: &str) -> Option<&Value> {
        self.all.get(label)?.first()
    }

    /// The median over the documents of `label`.
    pub(crate) fn pick(&self, label: &str, f: &dyn Fn(&Value) -> Option<f64>) -> Option<f64> {
        let v: Vec<f64> = self.all.get(label)?.iter().filter_map(f).collect();
        (!v.is_empty()).then(|| median(&v))
    }

    fn rps(&self, label: &str, sc: &str) -> Option<f64> {
        self.pick(label, &|d| d["scenarios"][sc]["median"]["rps"].as_f64())
    }

    fn p99(&self, label: &str, sc: &str) -> Option<f64> {
        self.pick(label, &|d| d["scenarios"][sc]["median"]["p99_ms"].as_f64())
    }

    fn raw(&self, label: &str, r: &str) -> Option<f64> {
        self.pick(label, &|d| d["raw"][r]["median_per_s"].as_f64())
    }

    fn rss(&self, label: &str, k: &str) -> Option<f64> {
        self.pick(label, &|d| d["rss_kib"][k].as_f64())
    }

    fn server_cpu(&self, label: &str, sc: &str) -> Option<f64> {
        self.pick(label, &|d| {
            d["scenarios"][sc]["median"]["server_cpu_us_per_req"].as_f64()
        })
    }

    /// A ratio of two things measured in the same document is the median of its
    /// per-round ratios (both sides measured minutes apart at most), which drifts less on
    /// a shared machine than a ratio of medians.
    fn per_round(&self, label: &str, f: &dyn Fn(&Value, usize) -> Option<f64>) -> Option<f64> {
        let mut v = Vec::new();
        for d in self.all.get(label)? {
            let rounds = d["settings"]["repeat"].as_u64().unwrap_or(1).max(1) as usize;
            v.extend((0..rounds).filter_map(|i| f(d, i)));
        }
        (!v.is_empty()).then(|| median(&v))
    }
}

fn run_rps(d: &Value, sc: &str, i: usize) -> Option<f64> {
    d["scenarios"][sc]["runs"][i]["rps"].as_f64()
}

fn run_p99(d: &Value, sc: &str, i: usize) -> Option<f64> {
    d["scenarios"][sc]["runs"][i]["p99_ms"].as_f64()
}

fn run_raw(d: &Value, r: &str, i: usize) -> Option<f64> {
    d["raw"][r]["runs"][i].as_f64()
}

pub(crate) fn fmt(x: Option<f64>) -> String {
    x.map_or("n/a".to_owned(), |x| format!("{x:.0}"))
}

pub(crate) fn div(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn mib(kib: Option<f64>) -> f64 {
    kib.unwrap_or(f64::NAN) / 1024.0
}

/// One line of the table: a ratio, its target, and the raw figures it comes from.
struct Row {
    name: String,
    target: String,
    value: Option<f64>,
    /// `None` for figures that are reported, not judged.
    met: Option<bool>,
    raw: String,
}

impl Row {
    fn at_least(name: String, min: f64, value: Option<f64>, raw: String) -> Self {
        Self {
            name,
            target: format!(">= {min}"),
            value,
            met: value.map(|v| v >= min),
            raw,
        }
    }

    fn at_most(name: String, target: &str, max: f64, value: Option<f64>, raw: String) -> Self {
        Self {
            name,
            target: target.into(),
            value,
            met: value.map(|v| v <= max),
            raw,
        }
    }

    fn reported(name: String, value: Option<f64>, raw: String) -> Self {
        Self {
            name,
            target: "report".into(),
            value,
            met: None,
            raw,
        }
    }
}

pub(crate) fn report(paths: &[PathBuf]) -> anyhow::Result<()> {
    let docs = Docs::load(paths)?;
    let mut rows = refresh_rows(&docs);
    // Absent from a run of the PostgreSQL column alone (--postgres-only).
    if docs.has("gatehouse") {
        rows.push(login_row(&docs));
        rows.push(jwks_row(&docs));
        rows.extend(flood_rows(&docs));
        rows.extend(growth_rows(&docs));
        rows.extend(memory_rows(&docs));
    }
    rows.extend(node_rows(&docs));
    rows.extend(postgres_rows(&docs));
    print_rows(&rows);
    print_postgres_table(&docs);
    crate::replicas::print_table(&docs);
    Ok(())
}

/// The labels of `bench/run.sh`'s PostgreSQL column: one invocation per backend and
/// round, alternating, so that each PostgreSQL round has a SQLite round beside it.
const PG_SQLITE: &str = "pg-sqlite";
const PG_POSTGRES: &str = "pg-postgres";
/// The same rounds' PostgreSQL invocation with `GATEHOUSE_DB_PREPARED_STATEMENTS=off`
/// (`bench/run.sh --postgres-unprepared`). Short: the label is part of every email the
/// signup scenario makes, and a local part over 64 characters is refused.
const PG_UNPREPARED: &str = "pg-noprep";
const PG_SCENARIOS: [&str; 4] = ["signup", "login", "refresh", "me"];

/// The SQLite and PostgreSQL (`pg`: one of the PostgreSQL labels) documents of the same
/// round, in the order they ran.
fn pg_pairs<'d>(docs: &'d Docs, pg: &str) -> Vec<(&'d Value, &'d Value)> {
    round_pairs(docs, PG_SQLITE, pg)
}

/// The documents of labels `a` and `b` of the same round of an alternation: the first
/// of each, then the second of each, by start time.
pub(crate) fn round_pairs<'d>(docs: &'d Docs, a: &str, b: &str) -> Vec<(&'d Value, &'d Value)> {
    let sorted = |label: &str| {
        let mut v: Vec<&Value> = docs
            .all
            .get(label)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        v.sort_by_key(|d| d["started_unix_ms"].as_i64().unwrap_or(0));
        v
    };
    sorted(a).into_iter().zip(sorted(b)).collect()
}

pub(crate) fn doc_median(d: &Value, sc: &str, field: &str) -> Option<f64> {
    d["scenarios"][sc]["median"][field].as_f64()
}

/// PostgreSQL ÷ SQLite throughput of `sc`: the median of the per-round ratios.
fn pg_ratio(docs: &Docs, pg: &str, sc: &str) -> Option<f64> {
    let v: Vec<f64> = pg_pairs(docs, pg)
        .iter()
        .filter_map(|(s, p)| div(doc_median(p, sc, "rps"), doc_median(s, sc, "rps")))
        .collect();
    (!v.is_empty()).then(|| median(&v))
}

fn pg_round_trips(docs: &Docs, pg: &str, sc: &str) -> Option<f64> {
    docs.pick(pg, &|d| d["round_trips"][sc]["per_request"].as_f64())
}

/// The targets of the PostgreSQL column: refresh at least 0.8 × SQLite's, login equal.
fn postgres_rows(docs: &Docs) -> Vec<Row> {
    let mut rows = Vec::new();
    if !docs.has(PG_POSTGRES) || !docs.has(PG_SQLITE) {
        return rows;
    }
    for (sc, min) in [
        ("refresh", 0.8),
        ("login", 0.9),
        ("signup", 0.0),
        ("me", 0.0),
    ] {
        let (s, p) = (docs.rps(PG_SQLITE, sc), docs.rps(PG_POSTGRES, sc));
        if s.is_none() && p.is_none() {
            continue;
        }
        let figures = format!(
            "{}/s vs {}/s; server CPU {:.0} vs {:.0} us/req (+{:.0} in PostgreSQL); {} round trips",
            fmt(p),
            fmt(s),
            docs.server_cpu(PG_POSTGRES, sc).unwrap_or(f64::NAN),
            docs.server_cpu(PG_SQLITE, sc).unwrap_or(f64::NAN),
            docs.pick(PG_POSTGRES, &|d| doc_median(d, sc, "db_cpu_us_per_req"))
                .unwrap_or(f64::NAN),
            pg_round_trips(docs, PG_POSTGRES, sc).map_or("n/a".into(), |t| format!("{t:.2}")),
        );
        let name = format!("7. postgres: {sc} PostgreSQL / SQLite");
        rows.push(if min > 0.0 {
            Row::at_least(name, min, pg_ratio(docs, PG_POSTGRES, sc), figures)
        } else {
            Row::reported(name, pg_ratio(docs, PG_POSTGRES, sc), figures)
        });
    }
    rows
}

/// The PostgreSQL column as BENCHMARKS.md shows it: statements prepared (the default),
/// and, when the run has them, the same rounds with them sent unnamed. `PG sum us` is
/// gatehouse's and PostgreSQL's CPU per request together, what SQLite's `srv us` does
/// alone in one process.
fn print_postgres_table(docs: &Docs) {
    for (pg, how) in [
        (PG_POSTGRES, "statements prepared"),
        (
            PG_UNPREPARED,
            "statements unnamed (GATEHOUSE_DB_PREPARED_STATEMENTS=off)",
        ),
    ] {
        let pairs = pg_pairs(docs, pg);
        if pairs.is_empty() {
            continue;
        }
        println!(
            "\nPostgreSQL ({how}) vs SQLite, {} alternating rounds (medians; ratio: median of the rounds' ratios)",
            pairs.len()
        );
        println!(
            "{:<10} {:>12} {:>12} {:>9} {:>14} {:>14} {:>12} {:>12} {:>12}",
            "scenario",
            "SQLite req/s",
            "PG req/s",
            "PG/SQLite",
            "SQLite srv us",
            "PG srv us",
            "PG db us",
            "PG sum us",
            "round trips"
        );
        for sc in PG_SCENARIOS {
            let (s, p) = (docs.rps(PG_SQLITE, sc), docs.rps(pg, sc));
            if s.is_none() && p.is_none() {
                continue;
            }
            let (srv, db) = (
                docs.server_cpu(pg, sc),
                docs.pick(pg, &|d| doc_median(d, sc, "db_cpu_us_per_req")),
            );
            println!(
                "{:<10} {:>12} {:>12} {:>9} {:>14} {:>14} {:>12} {:>12} {:>12}",
                sc,
                fmt(s),
                fmt(p),
                pg_ratio(docs, pg, sc).map_or("n/a".into(), |r| format!("{r:.2}")),
                fmt(docs.server_cpu(PG_SQLITE, sc)),
                fmt(srv),
                fmt(db),
                fmt(srv.zip(db).map(|(a, b)| a + b)),
                pg_round_trips(docs, pg, sc).map_or("n/a".into(), |t| format!("{t:.2}")),
            );
        }
    }
}

/// Target 1, at each `synchronous` level measured.
fn refresh_rows(docs: &Docs) -> Vec<Row> {
    let mut rows = Vec::new();
    for (label, level) in [("gatehouse", "normal"), ("gatehouse-full", "full")] {
        let Some(doc) = docs.first(label) else {
            continue;
        };
        let level = doc["raw"]["commit_synchronous"].as_str().unwrap_or(level);
        let (r, s, c) = (
            docs.rps(label, "refresh"),
            docs.raw(label, "sign"),
            docs.raw(label, "commit"),
        );
        let floor = match (s, c) {
            (Some(s), Some(c)) => Some(s.min(c)),
            _ => None,
        };
        let per_round = docs.per_round(label, &|d, i| {
            let floor = run_raw(d, "sign", i)?.min(run_raw(d, "commit", i)?);
            div(run_rps(d, "refresh", i), Some(floor))
        });
        rows.push(Row::at_least(
            format!("1. refresh / min(sign, commit), synchronous={level}"),
            0.75,
            per_round.or(div(r, floor)),
            format!(
                "refresh {}/s; sign x2 {}/s; commit {}/s (with CPUs busy {}/s)",
                fmt(r),
                fmt(s),
                fmt(c),
                fmt(docs.raw(label, "commit-busy"))
            ),
        ));
    }
    rows
}

/// Target 2.
fn login_row(docs: &Docs) -> Row {
    let (l, a) = (
        docs.rps("gatehouse", "login"),
        docs.raw("gatehouse", "argon2"),
    );
    Row::at_least(
        "2. login / raw argon2id verify x2".into(),
        0.85,
        docs.per_round("gatehouse", &|d, i| {
            div(run_rps(d, "login", i), run_raw(d, "argon2", i))
        }),
        format!("login {}/s; argon2 {}/s", fmt(l), fmt(a)),
    )
}

/// Target 3.
fn jwks_row(docs: &Docs) -> Row {
    let (j, b) = (
        docs.rps("gatehouse", "jwks"),
        docs.rps("gatehouse", "jwks-bare"),
    );
    Row::at_least(
        "3. jwks / bare actix-web".into(),
        0.80,
        docs.per_round("gatehouse", &|d, i| {
            div(run_rps(d, "jwks", i), run_rps(d, "jwks-bare", i))
        }),
        format!(
            "jwks {}/s; bare {}/s; jwks-304 {}/s",
            fmt(j),
            fmt(b),
            fmt(docs.rps("gatehouse", "jwks-304"))
        ),
    )
}

/// Target 4: probe latency under the flood, and no timeout.
fn flood_rows(docs: &Docs) -> Vec<Row> {
    let mut rows = Vec::new();
    for (name, probe) in [("jwks", "flood-jwks"), ("me", "flood-me")] {
        let baseline = format!("flood-baseline-{name}");
        let (f, base) = (
            docs.p99("gatehouse", probe),
            docs.p99("gatehouse", &baseline),
        );
        let value = docs.per_round("gatehouse", &|d, i| {
            div(run_p99(d, probe, i), run_p99(d, &baseline, i))
        });
        rows.push(Row::at_most(
            format!("4. flood: {name} p99 flooded / baseline"),
            "<= 5",
            5.0,
            value,
            format!(
                "p99 {:.2} ms vs {:.2} ms; logins {}/s",
                f.unwrap_or(f64::NAN),
                base.unwrap_or(f64::NAN),
                fmt(docs.rps("gatehouse", "flood-login"))
            ),
        ));
    }
    if let Some(doc) = docs.first("gatehouse") {
        let flood = ["flood-jwks", "flood-me", "flood-login"];
        let timeouts: u64 = flood
            .iter()
            .map(|s| {
                doc["scenarios"][s]["median"]["errors"]["timeout"]
                    .as_u64()
                    .unwrap_or(0)
            })
            .sum();
        let errors: u64 = flood
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
    rows
}

/// Target 5: the seeded database against the empty one.
fn growth_rows(docs: &Docs) -> Vec<Row> {
    let mut rows = Vec::new();
    let Some(seeded) = docs.first("growth-seeded") else {
        return rows;
    };
    let users = seeded["settings"]["database_users"].as_i64().unwrap_or(0);
    let (s, e) = (
        docs.raw("growth-seeded", "commit"),
        docs.raw("growth-empty", "commit"),
    );
    if s.is_some() {
        rows.push(Row::reported(
            format!("5. growth: raw rotation commit, {users} / empty"),
            div(s, e),
            format!("{}/s vs {}/s", fmt(s), fmt(e)),
        ));
    }
    for sc in ["refresh", "login"] {
        let (s, e) = (docs.rps("growth-seeded", sc), docs.rps("growth-empty", sc));
        rows.push(Row::at_least(
            format!("5. growth: {sc} with {users} users+families / empty"),
            0.90,
            div(s, e),
            format!("{sc} {}/s vs {}/s", fmt(s), fmt(e)),
        ));
    }
    rows
}

/// Target 6: resident memory idle and under `mixed`, and its growth over the soak.
fn memory_rows(docs: &Docs) -> Vec<Row> {
    let mut rows = vec![Row::reported(
        "6. memory: gatehouse RSS idle / mixed peak / after (MiB)".into(),
        None,
        format!(
            "{:.1} / {:.1} / {:.1}",
            mib(docs.rss("gatehouse", "idle")),
            mib(docs.rss("gatehouse", "mixed_peak")),
            mib(docs.rss("gatehouse", "after_mixed"))
        ),
    )];
    let soak = docs
        .all
        .values()
        .filter_map(|v| v.first())
        .find_map(|d| d.get("soak"));
    if let Some(soak) = soak {
        let (w, last, max) = (
            soak["rss_after_warmup_kib"].as_f64(),
            soak["rss_last_kib"].as_f64(),
            soak["rss_max_after_warmup_kib"].as_f64(),
        );
        let growth = div(max, w).map(|g| (g - 1.0) * 100.0);
        rows.push(Row::at_most(
            format!(
                "6. memory: growth over {:.0}s mixed after warm-up (%)",
                soak["duration_s"].as_f64().unwrap_or(0.0)
            ),
            "<= 5 %",
            5.0,
            growth,
            format!(
                "after warm-up {:.1} MiB, max {:.1} MiB, last {:.1} MiB",
                mib(w),
                mib(max),
                mib(last)
            ),
        ));
    }
    rows
}

/// Against Node: throughput and server CPU per scenario, and memory under `mixed`.
fn node_rows(docs: &Docs) -> Vec<Row> {
    let mut rows = Vec::new();
    if !docs.has("node") {
        return rows;
    }
    for (sc, min) in [("refresh", 2.5), ("jwks", 6.0), ("login", 1.3), ("me", 0.0)] {
        let (g, n) = (docs.rps("gatehouse", sc), docs.rps("node", sc));
        let (gc, nc) = (
            docs.server_cpu("gatehouse", sc),
            docs.server_cpu("node", sc),
        );
        let figures = format!(
            "{}/s vs {}/s; server CPU {:.0} vs {:.0} us/req ({:.2}x)",
            fmt(g),
            fmt(n),
            gc.unwrap_or(f64::NAN),
            nc.unwrap_or(f64::NAN),
            div(nc, gc).unwrap_or(f64::NAN)
        );
        let name = format!("vs Node: {sc} gatehouse / node");
        rows.push(if min > 0.0 {
            Row::at_least(name, min, div(g, n), figures)
        } else {
            Row::reported(name, div(g, n), figures)
        });
    }
    let (g, n) = (
        docs.rss("gatehouse", "mixed_peak"),
        docs.rss("node", "mixed_peak"),
    );
    rows.push(Row::at_most(
        "vs Node: RSS under mixed gatehouse / node".into(),
        "<= 0.333",
        1.0 / 3.0,
        div(g, n),
        format!(
            "{:.1} MiB vs {:.1} MiB (idle {:.1} vs {:.1})",
            mib(g),
            mib(n),
            mib(docs.rss("gatehouse", "idle")),
            mib(docs.rss("node", "idle"))
        ),
    ));
    rows
}

fn print_rows(rows: &[Row]) {
    println!(
        "{:<58} {:>9} {:>9}  {:<8} raw figures (medians)",
        "ratio", "target", "measured", "met"
    );
    for r in rows {
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
}
