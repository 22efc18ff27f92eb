//! The limiter shared by every instance through Redis: the same GCRA as the in-process one, run
//! atomically by one Lua script per request on Redis's clock, over every bucket the request
//! meets, committing only when all of them allow it.

use std::time::Duration;

use bb8_redis::redis;

use super::policy::Policies;
use super::{Check, Decision, Outcome};
use crate::config::RedisConfig;
use crate::store::redis::RedisPool;

/// KEYS: one per bucket. ARGV: per bucket its interval and burst (microseconds, count). Each
/// key holds the bucket's theoretical arrival time (TAT, µs on Redis's clock) and expires when
/// the bucket is full again. Returns, per bucket, `remaining` (or -1 when refused) and the µs
/// until it is full (allowed) or until the request would be allowed (refused).
const GCRA: &str = r"
local now_parts = redis.call('TIME')
local now = tonumber(now_parts[1]) * 1000000 + tonumber(now_parts[2])
local out = {}
local tats = {}
local refused = false
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local burst = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + interval
  local allow_at = new_tat - burst * interval
  if allow_at > now then
    refused = true
    out[2 * i - 1] = -1
    out[2 * i] = allow_at - now
  else
    tats[i] = new_tat
    out[2 * i - 1] = math.floor((now - allow_at) / interval)
    out[2 * i] = new_tat - now
  end
end
if not refused then
  for i = 1, #KEYS do
    local ttl_ms = math.ceil((tats[i] - now) / 1000) + 1000
    redis.call('SET', KEYS[i], string.format('%.0f', tats[i]), 'PX', string.format('%.0f', ttl_ms))
  end
end
return out
";

pub struct SharedLimiter {
    pool: RedisPool,
    script: redis::Script,
    /// `TRUXE_REDIS_PREFIX` + `oauth:ratelimit:`.
    key_prefix: String,
}

impl SharedLimiter {
    pub fn new(pool: RedisPool, config: &RedisConfig) -> Self {
        SharedLimiter { pool, script: redis::Script::new(GCRA), key_prefix: config.key("oauth:ratelimit:") }
    }

    /// One EVALSHA (loading the script when Redis does not know it yet).
    pub async fn check(&self, policies: &Policies, checks: &[Check]) -> Result<Decision, String> {
        let mut invocation = self.script.prepare_invoke();
        for check in checks {
            let policy = policies.get(check.policy);
            let interval = u64::try_from(policy.interval.as_micros()).unwrap_or(u64::MAX).max(1);
            invocation.key(format!("{}{}:{}", self.key_prefix, policy.name, check.key)).arg(interval).arg(policy.burst);
        }
        let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
        let answer: Vec<i64> = invocation.invoke_async(&mut *conn).await.map_err(|e| e.to_string())?;
        if answer.len() != checks.len() * 2 {
            return Err(format!("the rate-limit script answered {} values for {} buckets", answer.len(), checks.len()));
        }
        let outcomes = checks
            .iter()
            .zip(answer.chunks_exact(2))
            .map(|(check, pair)| {
                let micros = Duration::from_micros(u64::try_from(pair[1]).unwrap_or(0));
                Outcome {
                    policy: check.policy,
                    remaining: u32::try_from(pair[0]).unwrap_or(0),
                    reset: micros,
                    refused: pair[0] < 0,
                }
            })
            .collect();
        Ok(Decision { outcomes })
    }
}
