//! What the workers measured: per-operation recorders, their statistics (medians over
//! rounds, JSON form), and the table printed as a run goes.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

/// What one worker saw of one operation.
#[derive(Clone, Default)]
pub(crate) struct Recorder {
    latencies_us: Vec<u32>,
    ok: u64,
    errors: BTreeMap<String, u64>,
}

impl Recorder {
    pub(crate) fn record(&mut self, outcome: &Result<u16, String>, took: Duration) {
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

    pub(crate) fn merge(&mut self, other: Recorder) {
        self.latencies_us.extend(other.latencies_us);
        self.ok += other.ok;
        for (k, v) in other.errors {
            *self.errors.entry(k).or_default() += v;
        }
    }

    pub(crate) fn stats(mut self, elapsed: Duration) -> Stats {
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
            db_cpu_us: None,
            side_cpu_us: None,
            errors: self.errors,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Stats {
    pub(crate) requests: u64,
    pub(crate) ok: u64,
    /// Successful responses per second of measured time.
    pub(crate) rps: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) errors: BTreeMap<String, u64>,
    /// CPU time per successful request over the measured window: the server process
    /// (with its descendants) and this load tool.
    pub(crate) server_cpu_us: f64,
    pub(crate) client_cpu_us: f64,
    /// The database server's CPU per successful request (PostgreSQL only: SQLite's
    /// is the server's own).
    pub(crate) db_cpu_us: Option<f64>,
    /// The `--side-pid` process's CPU per successful request (a private redis-server).
    pub(crate) side_cpu_us: Option<f64>,
}

impl Stats {
    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    pub(crate) fn json(&self) -> Value {
        json!({
            "requests": self.requests, "ok": self.ok, "rps": round(self.rps),
            "p50_ms": round(self.p50_ms), "p90_ms": round(self.p90_ms),
            "p99_ms": round(self.p99_ms), "max_ms": round(self.max_ms),
            "errors": self.errors,
            "server_cpu_us_per_req": round(self.server_cpu_us),
            "client_cpu_us_per_req": round(self.client_cpu_us),
            "db_cpu_us_per_req": self.db_cpu_us.map(round),
            "side_cpu_us_per_req": self.side_cpu_us.map(round),
        })
    }

    /// Field-by-field medians of repeated runs; errors are summed.
    pub(crate) fn median(runs: &[Stats]) -> Stats {
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
            db_cpu_us: runs
                .iter()
                .all(|s| s.db_cpu_us.is_some())
                .then(|| med(|s| s.db_cpu_us.unwrap_or_default())),
            side_cpu_us: runs
                .iter()
                .all(|s| s.side_cpu_us.is_some())
                .then(|| med(|s| s.side_cpu_us.unwrap_or_default())),
        }
    }
}

pub(crate) fn round(x: f64) -> f64 {
    if x.abs() >= 100.0 {
        x.round()
    } else {
        (x * 1000.0).round() / 1000.0
    }
}

pub(crate) fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

pub(crate) struct Table {
    pub(crate) rows: Vec<String>,
}

impl Table {
    pub(crate) fn new() -> Self {
        Self {
            rows: vec![format!(
                "{:<24} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>8} {:>8} {:>8}  errors",
                "scenario",
                "req/s",
                "p50 ms",
                "p90 ms",
                "p99 ms",
                "max ms",
                "ok",
                "srv us",
                "cli us",
                "db us"
            )],
        }
    }
    pub(crate) fn add(&mut self, name: &str, s: &Stats) {
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
            "{:<24} {:>10.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9} {:>8.0} {:>8.0} {:>8}  {errors}",
            name,
            s.rps,
            s.p50_ms,
            s.p90_ms,
            s.p99_ms,
            s.max_ms,
            s.ok,
            s.server_cpu_us,
            s.client_cpu_us,
            s.db_cpu_us.map_or("-".into(), |c| format!("{c:.0}"))
        );
        eprintln!("  {row}");
        self.rows.push(row);
    }
}
