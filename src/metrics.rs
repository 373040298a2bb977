//! Prometheus counters and histograms, rendered in the text exposition format (0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the request-latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

/// A counter per label value.
#[derive(Default)]
struct Counter(Mutex<BTreeMap<&'static str, u64>>);

impl Counter {
    fn inc(&self, label: &'static str) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(label)
            .or_default() += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, label: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (value, n) in self.0.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {n}");
        }
    }
}

#[derive(Default)]
pub struct Metrics {
    /// Every key part is bounded (route and method are closed sets, status a u16), so
    /// clients cannot grow this map.
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), Histogram>>,
    logins: Counter,
    refreshes: Counter,
    revocations: Counter,
    rate_limited: Counter,
    rate_limit_store_errors: Counter,
    mails: Counter,
    client_ip_header_malformed: AtomicU64,
}

/// Point-in-time values read when `/metrics` is scraped.
pub struct Gauges {
    pub hash_queue_depth: usize,
    pub hash_in_flight: usize,
    pub db_connections: u32,
    pub db_idle_connections: u32,
    pub db_engine_bytes: u64,
}

impl Metrics {
    /// Records one request by route pattern (never the raw path, which holds ids).
    pub fn request(&self, route: &'static str, method: &'static str, status: u16, took: Duration) {
        let secs = took.as_secs_f64();
        let mut map = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let h = map.entry((route, method, status)).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    pub fn login(&self, outcome: &'static str) {
        self.logins.inc(outcome);
    }

    pub fn refresh(&self, outcome: &'static str) {
        self.refreshes.inc(outcome);
    }

    pub fn revocation(&self, reason: &'static str) {
        self.revocations.inc(reason);
    }

    pub fn rate_limited(&self, tier: &'static str) {
        self.rate_limited.inc(tier);
    }

    /// The limiter's shared store did not answer; `outcome` is `refused` (503) or
    /// `passed` (served unlimited).
    pub fn rate_limit_store_error(&self, outcome: &'static str) {
        self.rate_limit_store_errors.inc(outcome);
    }

    /// A mail queued, sent, retried, failed or expired (#19).
    pub fn mail(&self, outcome: &'static str) {
        self.mails.inc(outcome);
    }

    /// A trusted proxy sent a client-address header that could not be read.
    pub fn client_ip_header_malformed(&self) {
        self.client_ip_header_malformed
            .fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        let name = "gatehouse_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} HTTP request latency by route, method and status.\n# TYPE {name} histogram"
        );
        for ((route, method, status), h) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let labels = format!("route=\"{route}\",method=\"{method}\",status=\"{status}\"");
            for (i, bound) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}_bucket{{{labels},le=\"{bound}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
        }
        self.logins.render(
            &mut out,
            "gatehouse_logins_total",
            "Login attempts by outcome.",
            "outcome",
        );
        self.refreshes.render(
            &mut out,
            "gatehouse_refreshes_total",
            "Refresh attempts by outcome (reuse_detected revokes a family).",
            "outcome",
        );
        self.revocations.render(
            &mut out,
            "gatehouse_revocations_total",
            "Families revoked, by reason.",
            "reason",
        );
        self.rate_limited.render(
            &mut out,
            "gatehouse_rate_limited_total",
            "Requests refused by the per-IP rate limiter, by tier.",
            "tier",
        );
        self.rate_limit_store_errors.render(
            &mut out,
            "gatehouse_rate_limit_store_errors_total",
            "Limited requests the rate-limit store (Redis) did not answer for in time, by \
             outcome: refused with 503, or passed unlimited (GATEHOUSE_RATE_LIMIT_ON_STORE_ERROR).",
            "outcome",
        );
        self.mails.render(
            &mut out,
            "gatehouse_mail_total",
            "Mail queued by requests, and attempts to send by outcome (sent, retrying, \
             failed, expired).",
            "outcome",
        );
        let name = "gatehouse_client_ip_header_malformed_total";
        let _ = writeln!(
            out,
            "# HELP {name} Requests from a trusted proxy whose client-address header could not \
             be read; each was counted as coming from the proxy itself.\n# TYPE {name} counter\n\
             {name} {}",
            self.client_ip_header_malformed.load(Ordering::Relaxed)
        );
        for (name, help, value) in [
            (
                "gatehouse_password_hash_queue_depth",
                "Argon2 jobs waiting for a hashing worker.",
                gauges.hash_queue_depth as u64,
            ),
            (
                "gatehouse_password_hash_in_flight",
                "Argon2 jobs running now.",
                gauges.hash_in_flight as u64,
            ),
            (
                "gatehouse_db_pool_connections",
                "Open reader connections in the database pool.",
                u64::from(gauges.db_connections),
            ),
            (
                "gatehouse_db_pool_idle_connections",
                "Idle reader connections in the database pool.",
                u64::from(gauges.db_idle_connections),
            ),
            (
                "gatehouse_db_engine_memory_bytes",
                "Heap held by the embedded database engine (page caches, schemas, statements).",
                gauges.db_engine_bytes,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

/// The outbox gauges (#19): mail by status, and the age of the oldest still queued.
pub fn render_outbox(
    stats: &crate::storage::mail::MailStats,
    now: chrono::DateTime<chrono::Utc>,
) -> String {
    let mut out = String::new();
    let name = "gatehouse_mail_outbox";
    let _ = writeln!(
        out,
        "# HELP {name} Mail in the outbox by status (queued: not tried yet; retrying: after a \
         temporary failure).\n# TYPE {name} gauge"
    );
    for (status, n) in [
        ("queued", stats.queued),
        ("retrying", stats.retrying),
        ("sent", stats.sent),
        ("failed", stats.failed),
        ("expired", stats.expired),
    ] {
        let _ = writeln!(out, "{name}{{status=\"{status}\"}} {n}");
    }
    let name = "gatehouse_mail_outbox_oldest_age_seconds";
    let age = stats
        .oldest_queued
        .map_or(0, |t| (now - t).num_seconds().max(0));
    let _ = writeln!(
        out,
        "# HELP {name} Age of the oldest mail still queued (0 when none).\n# TYPE {name} gauge\n{name} {age}"
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_buckets() {
        let m = Metrics::default();
        m.request("/v1/login", "POST", 200, Duration::from_millis(30));
        m.request("/v1/login", "POST", 200, Duration::from_millis(3));
        m.login("succeeded");
        let text = m.render(&Gauges {
            hash_queue_depth: 3,
            hash_in_flight: 2,
            db_connections: 4,
            db_idle_connections: 1,
            db_engine_bytes: 2048,
        });
        assert!(text.contains(
            r#"gatehouse_http_request_duration_seconds_count{route="/v1/login",method="POST",status="200"} 2"#
        ));
        assert!(text.contains(
            r#"gatehouse_http_request_duration_seconds_bucket{route="/v1/login",method="POST",status="200",le="0.005"} 1"#
        ));
        assert!(text.contains(r#"gatehouse_logins_total{outcome="succeeded"} 1"#));
        assert!(text.contains("gatehouse_password_hash_queue_depth 3"));
        assert!(text.contains("gatehouse_client_ip_header_malformed_total 0\n"));
        assert!(text.contains("gatehouse_db_engine_memory_bytes 2048"));
    }
}
