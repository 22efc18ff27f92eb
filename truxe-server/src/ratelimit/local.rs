//! The in-process limiter: one keyed `governor` GCRA limiter per policy. Used without Redis,
//! and while Redis fails.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};

use super::policy::{Policies, Policy};
use super::{Check, Decision, Outcome};

type Keyed = RateLimiter<String, DashMapStateStore<String>, DefaultClock, StateInformationMiddleware>;

pub struct LocalLimiter {
    limiters: Vec<Keyed>,
    clock: DefaultClock,
}

fn quota(policy: &Policy) -> Quota {
    let burst = NonZeroU32::new(policy.burst).unwrap_or(NonZeroU32::MIN);
    // `Policy` never has a zero interval; one microsecond stands in for it if it did.
    Quota::with_period(policy.interval).unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX)).allow_burst(burst)
}

impl LocalLimiter {
    pub fn new(policies: &Policies) -> Self {
        let limiters = policies
            .iter()
            .map(|p| RateLimiter::dashmap(quota(p)).with_middleware::<StateInformationMiddleware>())
            .collect();
        LocalLimiter { limiters, clock: DefaultClock::default() }
    }

    /// Counts `checks` in order and stops at the first refusal, so that the broader policies
    /// after it are not charged for a refused request.
    pub fn check(&self, policies: &Policies, checks: &[Check]) -> Decision {
        let mut outcomes = Vec::with_capacity(checks.len());
        for check in checks {
            let policy = policies.get(check.policy);
            let Some(limiter) = self.limiters.get(check.policy.0) else { continue };
            match limiter.check_key(&check.key) {
                Ok(snapshot) => {
                    let remaining = snapshot.remaining_burst_capacity();
                    // Full again once the used cells have dripped out.
                    let reset = policy.interval * (policy.burst.saturating_sub(remaining));
                    outcomes.push(Outcome { policy: check.policy, remaining, reset, refused: false });
                }
                Err(not_until) => {
                    let wait = not_until.wait_time_from(self.clock.now());
                    outcomes.push(Outcome { policy: check.policy, remaining: 0, reset: wait, refused: true });
                    break;
                }
            }
        }
        Decision { outcomes }
    }

    /// Forgets keys whose buckets are full again (they hold no information).
    pub fn sweep(&self) {
        for limiter in &self.limiters {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}
