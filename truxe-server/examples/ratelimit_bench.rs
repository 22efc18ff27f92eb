//! The rate limiter's cost per request: the token endpoint's three IP buckets in one check,
//! in process and (with `REDIS_URL`) through Redis. Not a test: it prints µs per check.
//!
//!     cargo run --release -p truxe-server --example ratelimit_bench
//!     REDIS_URL=redis://127.0.0.1:6379/ cargo run --release -p truxe-server --example ratelimit_bench

use std::time::Instant;

use truxe_server::config::Config;
use truxe_server::ratelimit::{Check, Limiter, classify};

const IN_PROCESS_CHECKS: u32 = 200_000;
const REDIS_CHECKS: u32 = 5_000;
/// Distinct client IPs the checks rotate through.
const CLIENTS: u32 = 1_000;

fn checks(limiter: &Limiter, i: u32) -> Vec<Check> {
    let route = classify("POST", "/oauth-provider/token").expect("the token endpoint is limited");
    let key = format!("10.{}.{}.1", (i % CLIENTS) / 250, (i % CLIENTS) % 250);
    limiter.policies().for_route(route).into_iter().map(|policy| Check { policy, key: key.clone() }).collect()
}

async fn measure(name: &str, limiter: &Limiter, n: u32) {
    // Warm-up (script loading, connections).
    for i in 0..100 {
        limiter.check(&checks(limiter, i)).await;
    }
    let started = Instant::now();
    let mut refused = 0u32;
    for i in 0..n {
        if !limiter.check(&checks(limiter, i)).await.allowed() {
            refused += 1;
        }
    }
    let micros = started.elapsed().as_secs_f64() * 1e6 / f64::from(n);
    println!(
        "{name:<12} {micros:>8.2} µs per check (3 buckets, {n} checks over {CLIENTS} IPs, {refused} refused, {} fallbacks)",
        limiter.fallbacks()
    );
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let redis_url = std::env::var("REDIS_URL").ok();
    let vars = |name: &str| match name {
        // Limits high enough that every check passes: the cost, not the refusals, is measured.
        "RATE_LIMIT_MAX" | "OAUTH_RATE_LIMIT_MAX" => Some("1000000".to_string()),
        "RATE_LIMIT_ENDPOINTS" => Some("token=1000000:1000000".to_string()),
        "REDIS_URL" => redis_url.clone(),
        "TRUXE_REDIS_PREFIX" => Some(format!("truxe-bench-{}:", std::process::id())),
        _ => None,
    };
    let config = match Config::from_lookup(&vars) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            std::process::exit(2);
        }
    };
    measure("in process", &Limiter::new(&config, None), IN_PROCESS_CHECKS).await;
    if let Some(redis_config) = &config.redis {
        let pool = match truxe_server::store::redis::connect(redis_config) {
            Ok(pool) => pool,
            Err(error) => {
                eprintln!("{error}");
                std::process::exit(2);
            }
        };
        measure("redis", &Limiter::new(&config, Some(pool)), REDIS_CHECKS).await;
    } else {
        println!("redis        (set REDIS_URL to measure the shared limiter)");
    }
}
