//! `GET /health` (liveness) and `GET /health/ready` (readiness with one entry per dependency).

use std::time::Duration;

use actix_web::{HttpResponse, web};
use diesel::connection::SimpleConnection;
use serde_json::{Value, json};

use super::AppState;
use crate::store;

const CHECK_TIMEOUT: Duration = Duration::from_secs(3);

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().insert_header(("Cache-Control", "no-store")).json(json!({ "status": "ok" }))
}

pub async fn ready(state: web::Data<AppState>) -> HttpResponse {
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

    let key = &state.signing_key;
    let probe = b"truxe readiness probe";
    let signing = match key.sign(probe) {
        Ok(signature) if key.verify(probe, &signature) => Ok(()),
        Ok(_) => Err("signature does not verify".to_string()),
        Err(e) => Err(e.to_string()),
    };
    all_ok &= signing.is_ok();
    checks.insert("signing_key".into(), check(signing, json!({ "kid": key.kid(), "alg": key.algorithm().as_str() })));

    let body = json!({ "status": if all_ok { "ok" } else { "unavailable" }, "checks": checks });
    let mut response = if all_ok { HttpResponse::Ok() } else { HttpResponse::ServiceUnavailable() };
    response.insert_header(("Cache-Control", "no-store")).json(body)
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
