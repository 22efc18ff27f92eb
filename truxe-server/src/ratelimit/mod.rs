//! Request rate limits (SPEC "Rate limits"): GCRA token buckets with burst, in process
//! (`governor`) or, with `REDIS_URL`, shared by every instance through one Lua script per check.
//!
//! When Redis fails or is slow (every wait is bounded by [`REDIS_WAIT`]) the in-process limiter
//! answers instead, Redis is left alone for [`REDIS_BACKOFF`], a warning is logged at most every
//! [`WARNING_EVERY`], and [`Limiter::fallbacks`] counts the checks answered that way. Nothing
//! else is needed to go back: the first check after the back-off tries Redis again.

pub mod headers;
mod local;
pub mod policy;
mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use policy::{Endpoint, Policies, Policy, PolicyId, Route, RouteKind, classify};

use crate::config::Config;
use crate::store::redis::RedisPool;
use local::LocalLimiter;
use shared::SharedLimiter;

/// The longest a request waits for Redis before the in-process limiter decides.
pub const REDIS_WAIT: Duration = Duration::from_millis(200);
/// After a Redis failure, checks stay in process this long.
pub const REDIS_BACKOFF: Duration = Duration::from_secs(1);
/// At most one "Redis failed" warning this often.
pub const WARNING_EVERY: Duration = Duration::from_secs(10);
/// How often the in-process limiter forgets full buckets.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// One bucket to charge: a policy and the key it is counted by (an IP, a client id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    pub policy: PolicyId,
    pub key: String,
}

/// What one bucket said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub policy: PolicyId,
    /// Requests still allowed right now after this one (0 when refused).
    pub remaining: u32,
    /// Allowed: until the bucket is full again. Refused: until the request would be allowed.
    pub reset: Duration,
    pub refused: bool,
}

/// The answer for one request: every bucket checked, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub outcomes: Vec<Outcome>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.outcomes.iter().all(|o| !o.refused)
    }

    /// `Retry-After` of a refusal: the longest wait of the refusing buckets, whole seconds ≥ 1.
    pub fn retry_after_secs(&self) -> u64 {
        let wait = self.outcomes.iter().filter(|o| o.refused).map(|o| o.reset).max().unwrap_or_default();
        headers::whole_seconds(wait)
    }

    /// The names of the policies that refused.
    pub fn refused_by<'a>(&self, policies: &'a Policies) -> Vec<&'a str> {
        self.outcomes.iter().filter(|o| o.refused).map(|o| policies.get(o.policy).name.as_str()).collect()
    }
}

/// Redis health as the limiter sees it, shared by every request.
struct RedisHealth {
    /// Monotonic origin of the millisecond stamps below.
    epoch: Instant,
    /// No Redis call before this (ms since `epoch`).
    skip_until_ms: AtomicU64,
    /// The last warning (ms since `epoch`; 0: none yet).
    warned_at_ms: AtomicU64,
}

impl RedisHealth {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).max(1)
    }
}

pub struct Limiter {
    policies: Policies,
    local: LocalLimiter,
    shared: Option<SharedLimiter>,
    health: RedisHealth,
    fallbacks: AtomicU64,
}

impl Limiter {
    /// The limiter of `config`, shared through `redis` when given. Inside a Tokio runtime it
    /// also starts the sweep that keeps the in-process buckets of past clients from piling up.
    pub fn start(config: &Config, redis: Option<RedisPool>) -> Arc<Limiter> {
        let limiter = Arc::new(Self::new(config, redis));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let weak = Arc::downgrade(&limiter);
            runtime.spawn(async move {
                let mut interval = tokio::time::interval(SWEEP_EVERY);
                interval.tick().await;
                loop {
                    interval.tick().await;
                    let Some(limiter) = weak.upgrade() else { break };
                    limiter.local.sweep();
                }
            });
        }
        limiter
    }

    pub fn new(config: &Config, redis: Option<RedisPool>) -> Limiter {
        let policies = Policies::from_config(&config.rate_limit);
        let shared = match (redis, &config.redis) {
            (Some(pool), Some(redis_config)) => Some(SharedLimiter::new(pool, redis_config)),
            _ => None,
        };
        Limiter {
            local: LocalLimiter::new(&policies),
            policies,
            shared,
            health: RedisHealth {
                epoch: Instant::now(),
                skip_until_ms: AtomicU64::new(0),
                warned_at_ms: AtomicU64::new(0),
            },
            fallbacks: AtomicU64::new(0),
        }
    }

    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Checks answered in process because Redis failed or was slow (for metrics).
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Whether checks go to Redis at all (`REDIS_URL` set).
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// Charges every bucket of `checks` (Redis: all or none; in process: in order, up to the
    /// first refusal) and says whether the request may go on.
    pub async fn check(&self, checks: &[Check]) -> Decision {
        if checks.is_empty() {
            return Decision::default();
        }
        if let Some(shared) = &self.shared {
            let now = self.health.now_ms();
            if now >= self.health.skip_until_ms.load(Ordering::Relaxed) {
                let error = match tokio::time::timeout(REDIS_WAIT, shared.check(&self.policies, checks)).await {
                    Ok(Ok(decision)) => return decision,
                    Ok(Err(error)) => error,
                    Err(_) => format!("no answer within {} ms", REDIS_WAIT.as_millis()),
                };
                self.redis_failed(&error);
            }
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
        }
        self.local.check(&self.policies, checks)
    }

    fn redis_failed(&self, error: &str) {
        let now = self.health.now_ms();
        let backoff = u64::try_from(REDIS_BACKOFF.as_millis()).unwrap_or(1000);
        self.health.skip_until_ms.store(now + backoff, Ordering::Relaxed);
        let warned = self.health.warned_at_ms.load(Ordering::Relaxed);
        let every = u64::try_from(WARNING_EVERY.as_millis()).unwrap_or(10_000);
        if (warned == 0 || now.saturating_sub(warned) >= every)
            && self.health.warned_at_ms.compare_exchange(warned, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            tracing::warn!(
                %error,
                fallbacks = self.fallbacks(),
                "Redis failed for rate limiting: counting in process (this instance only) until it answers again"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Config {
        Config::from_lookup(&|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())).expect("config")
    }

    #[tokio::test]
    async fn a_burst_is_allowed_exactly_then_refused_per_key() {
        let limiter = Limiter::new(&config(&[("RATE_LIMIT_MAX", "3"), ("RATE_LIMIT_WINDOW", "60000")]), None);
        let check = |key: &str| vec![Check { policy: policy::GLOBAL, key: key.to_string() }];
        for remaining in [2, 1, 0] {
            let decision = limiter.check(&check("192.0.2.1")).await;
            assert!(decision.allowed());
            assert_eq!(decision.outcomes[0].remaining, remaining);
        }
        let refused = limiter.check(&check("192.0.2.1")).await;
        assert!(!refused.allowed());
        // One request every 20 s: the next one is 20 s away (less the test's own run time).
        assert!((19..=20).contains(&refused.retry_after_secs()), "{refused:?}");
        assert_eq!(refused.refused_by(limiter.policies()), ["global"]);
        assert!(limiter.check(&check("192.0.2.2")).await.allowed(), "another key has its own bucket");
        assert_eq!(limiter.fallbacks(), 0);
    }

    #[tokio::test]
    async fn a_refusal_stops_before_the_broader_buckets() {
        let limiter = Limiter::new(
            &config(&[("RATE_LIMIT_MAX", "5"), ("RATE_LIMIT_WINDOW", "60000"), ("RATE_LIMIT_ENDPOINTS", "token=1:1")]),
            None,
        );
        let route = classify("POST", "/oauth-provider/token").expect("limited");
        let checks: Vec<Check> = limiter
            .policies()
            .for_route(route)
            .into_iter()
            .map(|policy| Check { policy, key: "198.51.100.7".into() })
            .collect();
        assert!(limiter.check(&checks).await.allowed());
        let refused = limiter.check(&checks).await;
        assert_eq!(refused.refused_by(limiter.policies()), ["token"]);
        assert_eq!(refused.outcomes.len(), 1);
        let global = [Check { policy: policy::GLOBAL, key: "198.51.100.7".into() }];
        assert_eq!(limiter.check(&global).await.outcomes[0].remaining, 3, "the refused request was not counted");
    }

    #[test]
    fn retry_after_is_whole_seconds_at_least_one() {
        let outcome = |reset, refused| Outcome { policy: policy::GLOBAL, remaining: 0, reset, refused };
        let decision = Decision {
            outcomes: vec![outcome(Duration::from_millis(1500), true), outcome(Duration::from_secs(90), false)],
        };
        assert_eq!(decision.retry_after_secs(), 2);
        let decision = Decision { outcomes: vec![outcome(Duration::from_millis(3), true)] };
        assert_eq!(decision.retry_after_secs(), 1);
    }
}
