//! `GET /health` (liveness) and `GET /health/ready` (readiness with one entry per dependency).
//!
//! Readiness queries the database, pings Redis and signs: work an anonymous caller must not be
//! able to order at will. One check runs at a time, and its answer is reused for
//! [`READINESS_TTL`]; callers arriving during a check wait for it and share its answer.

use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, web};
use diesel::connection::SimpleConnection;
use serde_json::{Value, json};

use super::AppState;
use crate::store;

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(json!({ "status": "ok" }))
}

/// How long one readiness answer is reused.
pub const READINESS_TTL: Duration = Duration::from_secs(1);

/// The last readiness answer and when it was computed.
#[derive(Default)]
pub struct ReadinessCache(tokio::sync::Mutex<Option<(Instant, StatusCode, Value)>>);

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
    let mut last = state.readiness.0.lock().await;
    let (status, body) = match &*last {
        Some((at, status, body)) if at.elapsed() < READINESS_TTL => (*status, body.clone()),
        _ => {
            let (status, body) = check_all(&state).await;
            *last = Some((Instant::now(), status, body.clone()));
            (status, body)
        }
    };
    drop(last);
    HttpResponse::build(status).insert_header(("Cache-Control", "no-store")).json(body)
}

async fn check_all(state: &AppState) -> (StatusCode, Value) {
    let mut checks = serde_json::Map::new();
    let mut all_ok = true;

    let database =
        tokio::time::timeout(CHECK_TIMEOUT, store::run(&state.pool, |conn| Ok(conn.batch_execute("SELECT 1")?))).await;
    let database = match database {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_string()),
    };
    all_ok &= database.is_ok();
    checks.insert("database".into(), check(database, json!({ "backend": state.backend.as_str() })));

    if let Some(redis) = &state.redis {
        let result = match tokio::time::timeout(CHECK_TIMEOUT, store::redis::ping(redis)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_string()),
        };
        all_ok &= result.is_ok();
        checks.insert("redis".into(), check(result, json!({})));
    }

    // The key this instance signs with now (the schedule's active key, see `keyring`).
    let keys = state.keys.snapshot();
    let (signing, detail) = match keys.probe(store::unix_now()) {
        Ok((kid, alg)) => (Ok(()), json!({ "kid": kid, "alg": alg.as_str() })),
        Err(error) => (Err(error), json!({})),
    };
    all_ok &= signing.is_ok();
    checks.insert("signing_key".into(), check(signing, detail));

    let checked_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let body = json!({
        "status": if all_ok { "ok" } else { "unavailable" },
        "checks": checks,
        "checked_at_ms": checked_at,
    });
    (if all_ok { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE }, body)
}

fn check(result: Result<(), String>, mut extra: Value) -> Value {
    let map = extra.as_object_mut();
    let mut out = serde_json::Map::new();
    match result {
        Ok(()) => {
            out.insert("status".into(), json!("ok"));
        }
        Err(error) => {
            // The detail (hosts, users, driver messages) goes to the log, not to whoever asks.
            tracing::warn!(%error, "readiness check failed");
            out.insert("status".into(), json!("fail"));
        }
    }
    if let Some(map) = map {
        out.extend(map.clone());
    }
    Value::Object(out)
}
