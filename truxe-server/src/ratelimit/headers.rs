//! The IETF rate-limit fields (draft-ietf-httpapi-ratelimit-headers, structured-field form) and
//! `Retry-After`. One list member per policy the request was checked against:
//!
//! - `RateLimit-Policy: "token";q=40;w=120` — the bucket holds `q` requests and an empty one
//!   fills in `w` seconds (the sustained rate is `q/w`);
//! - `RateLimit: "token";r=39;t=3` — `r` requests left right now, and in `t` seconds the bucket
//!   is full again (on a refusal: `r=0` and `t` is when the next request is allowed, as in
//!   `Retry-After`).

use std::time::Duration;

use super::{Decision, Policies};

pub const RATELIMIT_POLICY: &str = "ratelimit-policy";
pub const RATELIMIT: &str = "ratelimit";

/// `wait` in whole seconds, rounded up, at least one (`Retry-After`, `t`).
pub fn whole_seconds(wait: Duration) -> u64 {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    secs.max(1)
}

/// `t` of an allowed request may be zero (a bucket that is full again right away).
fn seconds_up(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

/// The `RateLimit-Policy` value for the policies of `decision`.
pub fn policy_value(policies: &Policies, decision: &Decision) -> String {
    decision
        .outcomes
        .iter()
        .map(|o| {
            let policy = policies.get(o.policy);
            format!("\"{}\";q={};w={}", policy.name, policy.burst, whole_seconds(policy.window()))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `RateLimit` value for `decision`.
pub fn limit_value(policies: &Policies, decision: &Decision) -> String {
    decision
        .outcomes
        .iter()
        .map(|o| {
            let name = &policies.get(o.policy).name;
            let t = if o.refused { whole_seconds(o.reset) } else { seconds_up(o.reset) };
            format!("\"{name}\";r={};t={t}", o.remaining)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::super::policy::{GLOBAL, OAUTH};
    use super::super::{Outcome, PolicyId};
    use super::*;
    use crate::config::Config;

    #[test]
    fn fields_follow_the_draft() {
        let config = Config::from_lookup(&|name| match name {
            "RATE_LIMIT_MAX" => Some("100".into()),
            "RATE_LIMIT_WINDOW" => Some("15m".into()),
            "OAUTH_RATE_LIMIT_MAX" => Some("50".into()),
            "OAUTH_RATE_LIMIT_WINDOW" => Some("900000".into()),
            _ => None,
        })
        .expect("config");
        let policies = Policies::from_config(&config.rate_limit);
        let token = (0..policies.len()).map(PolicyId).find(|id| policies.get(*id).name == "token").expect("token");
        let decision = Decision {
            outcomes: vec![
                Outcome { policy: token, remaining: 0, reset: Duration::from_millis(2100), refused: true },
                Outcome { policy: OAUTH, remaining: 49, reset: Duration::from_secs(18), refused: false },
                Outcome { policy: GLOBAL, remaining: 99, reset: Duration::from_micros(8_999_999), refused: false },
            ],
        };
        assert_eq!(
            policy_value(&policies, &decision),
            "\"token\";q=40;w=120, \"oauth\";q=50;w=900, \"global\";q=100;w=900"
        );
        assert_eq!(limit_value(&policies, &decision), "\"token\";r=0;t=3, \"oauth\";r=49;t=18, \"global\";r=99;t=9");
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_secs(4)), 4);
        assert_eq!(whole_seconds(Duration::from_millis(4001)), 5);
    }
}
