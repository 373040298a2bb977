//! What `startup` and the CLI read themselves: where to listen, how many threads, where
//! the keys directory is, and the background upkeep.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::declare::{self, Fallback, group};

group! {
    /// The process: listener, workers, keys directory, upkeep.
    #[derive(Clone, Debug)]
    pub struct ServerSettings {
        pub bind: String {
            env: "GATEHOUSE_BIND",
            default: Fallback::Value("127.0.0.1:8080"),
            meaning: "listen address (`HOST:PORT`)",
            parse: declare::text,
            check: |s| {
                s.bind
                    .parse::<SocketAddr>()
                    .map(drop)
                    .map_err(|_| format!("{:?} is not HOST:PORT", s.bind))
            },
            show: Clone::clone,
        },
        pub keys_dir: PathBuf {
            env: "GATEHOUSE_KEYS_DIR",
            default: Fallback::Value("./keys"),
            meaning: "signing keys (`*.pem`) and `refresh.secret` of a SQLite install (on \
                      PostgreSQL they live in the database); created 0700; refused if group \
                      or others may write it, or read a file in it",
            parse: |v| Ok(PathBuf::from(v)),
            show: |v| v.display().to_string(),
        },
        /// How often a running server re-reads the keys (SIGHUP re-reads at once).
        pub keys_reload_interval: Duration {
            env: "GATEHOUSE_KEYS_RELOAD_INTERVAL",
            default: Fallback::Value("30"),
            meaning: "how often running servers re-read the keys directory (SIGHUP: at once)",
            parse: declare::duration,
            check: |s| declare::at_least_a_second(s.keys_reload_interval),
            show: declare::secs,
        },
        /// How many Argon2 computations may run at once.
        pub hash_workers: usize {
            env: "GATEHOUSE_HASH_WORKERS",
            default: Fallback::Cores,
            meaning: "Argon2 computations at once",
            parse: declare::workers,
            check: |s| declare::at_least_one(s.hash_workers),
            show: usize::to_string,
        },
        pub http_workers: usize {
            env: "GATEHOUSE_HTTP_WORKERS",
            default: Fallback::Cores,
            meaning: "HTTP worker threads",
            parse: declare::workers,
            check: |s| declare::at_least_one(s.http_workers),
            show: usize::to_string,
        },
        pub audit_retention: Duration {
            env: "GATEHOUSE_AUDIT_RETENTION",
            default: Fallback::Value("90d"),
            meaning: "audit events older than this are pruned",
            parse: declare::duration,
            show: declare::secs,
        },
        pub prune_interval: Duration {
            env: "GATEHOUSE_PRUNE_INTERVAL",
            default: Fallback::Value("600"),
            meaning: "how often expired families, lockout rows and old audit events are pruned",
            parse: declare::duration,
            check: |s| declare::at_least_a_second(s.prune_interval),
            show: declare::secs,
        },
    }
}
