//! The per-IP rate limiter's counters: in this process (the default) or in Redis, so that
//! every replica behind a load balancer spends from the same budget.
//!
//! Both stores run the same GCRA (the algorithm governor implements), with the same
//! per-minute rate and burst per tier, so moving to Redis changes where a client's budget
//! is counted, never its size.

mod memory;
mod redis_gcra;

use std::net::IpAddr;

pub use self::redis_gcra::{ProbeFailure, RedisUrl, STORE_TIMEOUT, probe};

use crate::declare::{self, Fallback, group};
use std::path::PathBuf;

group! {
    /// Per-IP request budgets, per tier (each allows `per_minute` on average and `burst`
    /// at once), and where they are counted.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct RateLimits {
        pub enabled: bool {
            env: "GATEHOUSE_RATE_LIMITS",
            default: Fallback::Value("on"),
            meaning: "`off` disables the per-IP limiter (behind a gateway that limits, or for \
                      load tests)",
            parse: declare::switch,
            show: declare::on_off,
        },
        /// signup, login, refresh, logout.
        pub auth: Tier {
            env: "GATEHOUSE_RATE_LIMIT_AUTH",
            default: Fallback::Value("10/5"),
            meaning: "per IP: requests per minute / burst, for each of signup, login, refresh, \
                      logout",
            parse: Tier::parse,
            show: Tier::show,
        },
        /// Authenticated writes (password change, revocations, admin changes).
        pub writes: Tier {
            env: "GATEHOUSE_RATE_LIMIT_WRITES",
            default: Fallback::Value("30/10"),
            meaning: "per IP, authenticated writes",
            parse: Tier::parse,
            show: Tier::show,
        },
        /// Authenticated reads.
        pub reads: Tier {
            env: "GATEHOUSE_RATE_LIMIT_READS",
            default: Fallback::Value("300/60"),
            meaning: "per IP, authenticated reads",
            parse: Tier::parse,
            show: Tier::show,
        },
        /// Where the limiter counts: Redis, shared by replicas; `None` is this process.
        pub store: Option<RedisUrl> {
            env: "GATEHOUSE_RATE_LIMIT_STORE",
            default: Fallback::Value(""),
            meaning: "where the per-IP limits are counted: unset is this process (one \
                      replica); `redis://[:PASSWORD@]HOST[:PORT][/DB]` counts every replica's \
                      requests in one Redis (see deploy/README.md *Rate limits across \
                      replicas*), `rediss://…` over TLS; `config check` hides the password",
            parse: |v| {
                let v = v.trim();
                if v.is_empty() { Ok(None) } else { RedisUrl::parse(v).map(Some) }
            },
            // Redacted by `RedisUrl`'s Display.
            show: |v| v.as_ref().map_or_else(String::new, |u| u.to_string()),
        },
        /// The CA that signed the Redis server's certificate, for a `rediss://` store.
        pub store_ca_file: Option<PathBuf> {
            env: "GATEHOUSE_RATE_LIMIT_STORE_CA_FILE",
            default: Fallback::Value(""),
            meaning: "with a `rediss://` store: a PEM file of the CA certificates that signed \
                      Redis's certificate (a private CA); unset trusts the system's roots",
            parse: |v| {
                let v = v.trim();
                Ok((!v.is_empty()).then(|| PathBuf::from(v)))
            },
            check: |s| {
                let Some(path) = &s.store_ca_file else { return Ok(()) };
                if !s.store.as_ref().is_some_and(RedisUrl::tls) {
                    return Err("is used only with a rediss:// GATEHOUSE_RATE_LIMIT_STORE".into());
                }
                redis_gcra::read_ca_file(path).map(|_| ())
            },
            show: |v| v.as_ref().map_or_else(String::new, |p| p.display().to_string()),
        },
        /// The first part of every limiter key in Redis.
        pub key_prefix: String {
            env: "GATEHOUSE_RATE_LIMIT_KEY_PREFIX",
            default: Fallback::Value("gatehouse:rl"),
            meaning: "Redis keys are `PREFIX:TIER:CLIENT` and expire by themselves; give each \
                      gatehouse deployment sharing one Redis its own prefix",
            parse: declare::text,
            check: |s| {
                let p = &s.key_prefix;
                if p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err("must be 1–64 printable characters without spaces".into());
                }
                Ok(())
            },
            show: Clone::clone,
        },
        /// Which limited requests pass while the Redis store does not answer.
        pub on_store_error: OnStoreError {
            env: "GATEHOUSE_RATE_LIMIT_ON_STORE_ERROR",
            default: Fallback::Value("by-endpoint"),
            meaning: "when Redis does not answer within 250 ms: `by-endpoint` refuses the \
                      endpoints that take a password (signup, login, password change, account \
                      deletion) with 503 and lets the rest through unlimited; `open` lets all \
                      through; `closed` refuses every limited request with 503",
            parse: |v| {
                OnStoreError::parse(v)
                    .ok_or_else(|| format!("{v:?} is not `by-endpoint`, `open` or `closed`"))
            },
            show: |v| v.as_str().into(),
        },
    }
}

/// The message for a TLS handshake with Redis that failed: what to set.
pub fn tls_refusal(url: &RedisUrl, e: &ProbeFailure) -> String {
    format!(
        "GATEHOUSE_RATE_LIMIT_STORE: the TLS handshake with {url} failed ({e}): set \
         GATEHOUSE_RATE_LIMIT_STORE_CA_FILE to the CA certificate that signed Redis's \
         certificate, and check that the URL's host is a name in it and its port speaks TLS"
    )
}

/// At start, with a `rediss://` store: refuses a TLS setting that cannot work (an
/// unknown CA, a name mismatch), which waiting would not fix and which would otherwise
/// only show as "unreachable" once requests come. A Redis that does not answer yet is
/// no reason to refuse: the limiter starts without it, as with `redis://`.
pub async fn refuse_broken_tls(limits: &RateLimits) -> Result<(), String> {
    let Some(url) = limits.store.as_ref().filter(|u| limits.enabled && u.tls()) else {
        return Ok(());
    };
    match probe(url, limits.store_ca_file.as_deref()).await {
        Err(e @ ProbeFailure::Tls(_)) => Err(tls_refusal(url, &e)),
        _ => Ok(()),
    }
}

/// One tier's budget: `per_minute` on average, `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    pub per_minute: u32,
    pub burst: u32,
}

impl Tier {
    /// `PER_MINUTE/BURST`, or `PER_MINUTE` alone (the burst is then half of it).
    pub fn parse(v: &str) -> Result<Tier, String> {
        let parsed = || -> Option<Tier> {
            let (rate, burst) = match v.trim().split_once('/') {
                Some((r, b)) => (r.trim().parse().ok()?, b.trim().parse().ok()?),
                None => {
                    let r: u32 = v.trim().parse().ok()?;
                    (r, r.div_ceil(2).max(1))
                }
            };
            (rate > 0 && burst > 0).then_some(Tier {
                per_minute: rate,
                burst,
            })
        };
        parsed().ok_or_else(|| format!("{v:?} is not PER_MINUTE or PER_MINUTE/BURST, e.g. 10/5"))
    }

    fn show(&self) -> String {
        format!("{}/min, burst {}", self.per_minute, self.burst)
    }
}

/// What a limited request is counted under: one budget per strict endpoint and one per
/// general tier, so a flood of one kind (logins) never spends another's (refreshes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitTier {
    Signup,
    Login,
    Refresh,
    Logout,
    Writes,
    Reads,
}

impl LimitTier {
    pub const ALL: [LimitTier; 6] = [
        LimitTier::Signup,
        LimitTier::Login,
        LimitTier::Refresh,
        LimitTier::Logout,
        LimitTier::Writes,
        LimitTier::Reads,
    ];

    /// The metrics label, and the tier's part of a Redis key.
    pub fn name(self) -> &'static str {
        match self {
            LimitTier::Signup => "signup",
            LimitTier::Login => "login",
            LimitTier::Refresh => "refresh",
            LimitTier::Logout => "logout",
            LimitTier::Writes => "writes",
            LimitTier::Reads => "reads",
        }
    }

    fn quota(self, limits: &RateLimits) -> Tier {
        match self {
            LimitTier::Signup | LimitTier::Login | LimitTier::Refresh | LimitTier::Logout => {
                limits.auth
            }
            LimitTier::Writes => limits.writes,
            LimitTier::Reads => limits.reads,
        }
    }
}

/// The limiter's answer for one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitVerdict {
    Allowed,
    /// Over budget: the client may retry after this many whole seconds (at least 1).
    Limited {
        retry_after_secs: u64,
    },
    /// The shared store did not answer in time; [`OnStoreError`] decides.
    StoreUnavailable,
}

/// What a request gets when the shared store cannot count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStoreError {
    /// Refuse (503) requests that take a password, let the rest through: an attacker who
    /// can knock Redis over must not gain unlimited password guesses, and verifying or
    /// refreshing tokens must not depend on Redis.
    ByEndpoint,
    /// Let every request through, unlimited, while the store is down.
    Open,
    /// Refuse every limited request with 503 while the store is down.
    Closed,
}

impl OnStoreError {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "by-endpoint" => Some(Self::ByEndpoint),
            "open" => Some(Self::Open),
            "closed" => Some(Self::Closed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ByEndpoint => "by-endpoint",
            Self::Open => "open",
            Self::Closed => "closed",
        }
    }

    /// Whether a request is refused while the store is down; `takes_password` marks the
    /// endpoints where a limit is what stands between an attacker and guessing.
    pub fn refuses(self, takes_password: bool) -> bool {
        match self {
            Self::ByEndpoint => takes_password,
            Self::Open => false,
            Self::Closed => true,
        }
    }
}

enum Store {
    /// `GATEHOUSE_RATE_LIMITS=off`.
    Off,
    Memory(memory::MemoryLimiter),
    Redis(Box<redis_gcra::RedisLimiter>),
}

/// The limiter the HTTP layer consults before each limited request.
pub struct RateLimiters {
    store: Store,
    on_store_error: OnStoreError,
}

/// How `/readyz` reports the limiter's store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreStatus {
    Off,
    Memory,
    Redis,
    Unreachable,
}

impl StoreStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreStatus::Off => "off",
            StoreStatus::Memory => "memory",
            StoreStatus::Redis => "redis",
            StoreStatus::Unreachable => "unreachable",
        }
    }
}

impl RateLimiters {
    /// Never connects: a replica starts (and serves reads) while Redis is down, and
    /// connects on the first limited request.
    pub fn new(limits: &RateLimits) -> Self {
        let store = if !limits.enabled {
            Store::Off
        } else if let Some(url) = &limits.store {
            Store::Redis(Box::new(redis_gcra::RedisLimiter::new(
                url,
                limits.store_ca_file.as_deref(),
                &limits.key_prefix,
                |tier| tier.quota(limits),
            )))
        } else {
            Store::Memory(memory::MemoryLimiter::new(|tier| tier.quota(limits)))
        };
        Self {
            store,
            on_store_error: limits.on_store_error,
        }
    }

    /// Counts one request of `client` (its bucket: an IPv4 address or an IPv6 /64).
    pub async fn check(&self, tier: LimitTier, client: IpAddr) -> LimitVerdict {
        match &self.store {
            Store::Off => LimitVerdict::Allowed,
            Store::Memory(m) => m.check(tier, client),
            Store::Redis(r) => r.check(tier, client).await,
        }
    }

    /// Connects to the shared store ahead of the first request; nothing to do in memory.
    pub async fn warm_up(&self) {
        if let Store::Redis(r) = &self.store {
            r.warm_up().await;
        }
    }

    pub fn on_store_error(&self) -> OnStoreError {
        self.on_store_error
    }

    /// The store's state now; asks Redis (bounded by [`STORE_TIMEOUT`]).
    pub async fn status(&self) -> StoreStatus {
        match &self.store {
            Store::Off => StoreStatus::Off,
            Store::Memory(_) => StoreStatus::Memory,
            Store::Redis(r) => {
                if r.ping().await {
                    StoreStatus::Redis
                } else {
                    StoreStatus::Unreachable
                }
            }
        }
    }

    /// Forgets in-memory clients whose buckets are full again, so memory tracks active
    /// clients. Redis keys expire by themselves.
    pub fn forget_idle(&self) {
        if let Store::Memory(m) = &self.store {
            m.forget_idle();
        }
    }
}

/// Whole seconds to wait, rounded up, at least 1: `Retry-After` is in seconds and a
/// client told 0 would retry at once.
fn whole_secs(wait: std::time::Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_a_second_at_least() {
        let us = std::time::Duration::from_micros;
        assert_eq!(whole_secs(us(1)), 1);
        assert_eq!(whole_secs(us(1_000_000)), 1);
        assert_eq!(whole_secs(us(1_000_001)), 2);
        assert_eq!(whole_secs(us(0)), 1);
    }

    #[test]
    fn by_endpoint_refuses_only_password_endpoints() {
        assert!(OnStoreError::ByEndpoint.refuses(true));
        assert!(!OnStoreError::ByEndpoint.refuses(false));
        assert!(!OnStoreError::Open.refuses(true));
        assert!(OnStoreError::Closed.refuses(false));
        for v in ["by-endpoint", "open", "closed"] {
            assert_eq!(OnStoreError::parse(v).map(OnStoreError::as_str), Some(v));
        }
        assert_eq!(OnStoreError::parse("fail-open"), None);
    }
}
