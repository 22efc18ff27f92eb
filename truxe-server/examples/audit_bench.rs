//! The audit log's write cost per token: what the token endpoint pays to queue its `token.issued`
//! entry, what the batched writer needs per entry to hash, chain and store it, what an entry
//! written inside its own transaction costs, and what `verify` needs per entry. On a fresh SQLite
//! file and, with `DATABASE_URL`, on PostgreSQL. Not a test: it prints µs per entry.
//!
//!     cargo run --release -p truxe-server --example audit_bench
//!     DATABASE_URL=postgres://truxe@127.0.0.1:5432/scratch cargo run --release -p truxe-server --example audit_bench
//!
//! DATABASE_URL must name a scratch database: the bench migrates it and appends to its audit log.

use std::time::Instant;

use truxe_server::audit::AuditLog;
use truxe_server::config::Config;
use truxe_server::store::audit::{self, AuditAction, AuditEvent};
use truxe_server::store::{self, migrations};

const BATCHED: u32 = 50_000;
const ONE_BY_ONE: u32 = 2_000;

fn token_issued(i: u32) -> AuditEvent {
    let meta = truxe_server::model::request::RequestMeta::new(
        Some(format!("10.0.{}.{}", i / 250 % 250, i % 250)),
        Some(uuid::Uuid::new_v4().to_string()),
        Some("bench/1.0"),
    );
    let jti = uuid::Uuid::new_v4().simple().to_string();
    AuditEvent::by_client(AuditAction::TokenIssued, "cl_bench0123456789abcdef")
        .subject(&jti)
        .from_request(&meta)
        .details(serde_json::json!({
            "grant_type": "client_credentials",
            "token_type": "access_token",
            "jti": jti,
            "scope": "reports:read",
            "aud": "https://api.example.com",
            "exp": 1_796_000_900,
        }))
}

fn micros_per(elapsed: std::time::Duration, n: u32) -> f64 {
    elapsed.as_secs_f64() * 1e6 / f64::from(n)
}

async fn measure(name: &str, url: &str, dir: &tempfile::TempDir) {
    let vars = |key: &str| match key {
        "DATABASE_URL" => Some(url.to_string()),
        "TRUXE_DATA_DIR" => Some(dir.path().display().to_string()),
        _ => None,
    };
    let config = match Config::from_lookup(&vars) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("{errors}");
            std::process::exit(2);
        }
    };
    let pool = match store::connect(&config.database) {
        Ok(pool) => pool,
        Err(error) => {
            eprintln!("{name}: {error}");
            std::process::exit(2);
        }
    };
    let prepared = store::run(&pool, |conn| {
        migrations::apply_all(conn)?;
        audit::chain_legacy(conn)
    })
    .await;
    if let Err(error) = prepared {
        eprintln!("{name}: {error}");
        std::process::exit(2);
    }
    let before = store::run(&pool, audit::chain::head).await.map(|h| h.head_seq).unwrap_or_default();

    // The token endpoint's share: queueing the entry (the writer runs meanwhile).
    let log = AuditLog::start(pool.clone());
    let events: Vec<AuditEvent> = (0..BATCHED).map(token_issued).collect();
    let started = Instant::now();
    let mut queueing = std::time::Duration::ZERO;
    // Bursts of one batch, each written before the next: the queue never fills, so what the
    // caller pays is the enqueue alone (a full queue would make it write the entry itself).
    let mut events = events.into_iter().peekable();
    while events.peek().is_some() {
        for event in events.by_ref().take(truxe_server::audit::MAX_BATCH) {
            let t = Instant::now();
            if let Err(error) = log.record(event, store::unix_now()) {
                eprintln!("{name}: {error}");
                std::process::exit(1);
            }
            queueing += t.elapsed();
        }
        log.flush().await;
    }
    let batched = started.elapsed();
    log.close(truxe_server::audit::SHUTDOWN_WAIT).await;

    // One entry per transaction, as the events written inside their change's transaction are.
    let started = Instant::now();
    let written = store::run(&pool, |conn| {
        for i in 0..ONE_BY_ONE {
            audit::chain::append(conn, &[(token_issued(i), store::unix_now())])?;
        }
        Ok(())
    })
    .await;
    if let Err(error) = written {
        eprintln!("{name}: {error}");
        std::process::exit(1);
    }
    let one_by_one = started.elapsed();

    let started = Instant::now();
    let report = store::run(&pool, |conn| audit::verify::verify(conn, &mut |_| {})).await;
    let verify = started.elapsed();
    let report = match report {
        Ok(report) => report,
        Err(error) => {
            eprintln!("{name}: {error}");
            std::process::exit(1);
        }
    };
    let checked = u32::try_from(report.checked).unwrap_or(u32::MAX).max(1);
    let added = report.head_seq - before;
    println!(
        "{name:<10} queue {:>6.2} µs/token | batched write {:>6.1} µs/entry ({BATCHED} entries, {:.0}/s) | own transaction {:>7.1} µs/entry | verify {:>5.1} µs/entry ({checked} entries, {}) | {added} appended",
        micros_per(queueing, BATCHED),
        micros_per(batched, BATCHED),
        f64::from(BATCHED) / batched.as_secs_f64(),
        micros_per(one_by_one, ONE_BY_ONE),
        micros_per(verify, checked),
        if report.ok() { "intact" } else { "BROKEN" },
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = match tempfile::tempdir() {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("{error}");
            std::process::exit(2);
        }
    };
    let sqlite = format!("sqlite://{}", dir.path().join("bench.db").display());
    measure("sqlite", &sqlite, &dir).await;
    match std::env::var("DATABASE_URL") {
        Ok(url) if url.starts_with("postgres") => measure("postgresql", &url, &dir).await,
        _ => println!("postgresql (set DATABASE_URL to a scratch PostgreSQL database to measure it)"),
    }
}
