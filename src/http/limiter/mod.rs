//! The per-IP rate limiter's counters: in this process (the default) or in Redis, so that
//! every replica behind a load balancer spends from the same budget.
//!
//! Both stores run the same GCRA (the algorithm governor implements), with the same
//! per-minute rate and burst per tier, so moving to Redis changes where a client's budget
//! is counted, never its size.

mod memory;
mod redis_gcra;

use std::net::IpAddr;

pub use self::redis_gcra::{RedisUrl, STORE_TIMEOUT, probe};
use crate::config::{Settings, Tier};

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

    fn quota(self, s: &Settings) -> Tier {
        let limits = &s.rate_limits;
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
pub enum Verdict {
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
    pub fn new(settings: &Settings) -> Self {
        let store = if !settings.rate_limits.enabled {
            Store::Off
        } else if let Some(url) = &settings.rate_limit_store {
            Store::Redis(Box::new(redis_gcra::RedisLimiter::new(
                url,
                &settings.rate_limit_key_prefix,
                |tier| tier.quota(settings),
            )))
        } else {
            Store::Memory(memory::MemoryLimiter::new(|tier| tier.quota(settings)))
        };
        Self {
            store,
            on_store_error: settings.rate_limit_on_store_error,
        }
    }

    /// Counts one request of `client` (its bucket: an IPv4 address or an IPv6 /64).
    pub async fn check(&self, tier: LimitTier, client: IpAddr) -> Verdict {
        match &self.store {
            Store::Off => Verdict::Allowed,
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
