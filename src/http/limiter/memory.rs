//! The limiter's counters in this process: one replica's view only.
//!
//! Why governor: it is MIT-licensed (actix-governor is GPL) and its GCRA buckets cost one
//! atomic per check.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::Tier;
use super::{LimitTier, LimitVerdict, whole_secs};

pub struct MemoryLimiter {
    /// In [`LimitTier::ALL`]'s order.
    tiers: Vec<DefaultKeyedRateLimiter<IpAddr>>,
}

impl MemoryLimiter {
    pub fn new(quota: impl Fn(LimitTier) -> Tier) -> Self {
        let tiers = LimitTier::ALL
            .iter()
            .map(|t| {
                let tier = quota(*t);
                let rate = NonZeroU32::new(tier.per_minute).unwrap_or(NonZeroU32::MIN);
                let burst = NonZeroU32::new(tier.burst).unwrap_or(NonZeroU32::MIN);
                RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst))
            })
            .collect();
        Self { tiers }
    }

    fn tier(&self, tier: LimitTier) -> &DefaultKeyedRateLimiter<IpAddr> {
        let i = LimitTier::ALL.iter().position(|t| *t == tier).unwrap_or(0);
        &self.tiers[i]
    }

    pub fn check(&self, tier: LimitTier, client: IpAddr) -> LimitVerdict {
        match self.tier(tier).check_key(&client) {
            Ok(()) => LimitVerdict::Allowed,
            Err(not_until) => {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                LimitVerdict::Limited {
                    retry_after_secs: whole_secs(wait),
                }
            }
        }
    }

    pub fn forget_idle(&self) {
        for l in &self.tiers {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}
