//! What the metrics middleware costs per request: the same route answered through actix with
//! and without `http::metrics::middleware`, in process (no sockets), printed as ns per request.
//!
//! `cargo run --release -p truxe-server --example metrics_overhead [REQUESTS]`

use std::sync::Arc;
use std::time::Instant;

use actix_web::test::{TestRequest, call_service, init_service};
use actix_web::{App, HttpResponse, middleware, web};
use truxe_server::http::metrics::middleware as metrics_middleware;
use truxe_server::metrics::Metrics;

async fn show() -> HttpResponse {
    HttpResponse::Ok().body("{}")
}

/// A middleware that does nothing: what any `from_fn` middleware costs by itself.
async fn nothing(
    req: actix_web::dev::ServiceRequest,
    next: middleware::Next<impl actix_web::body::MessageBody>,
) -> Result<actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>, actix_web::Error> {
    next.call(req).await
}

/// ns per request over `requests` requests to a route with a parameter (the label is its pattern).
macro_rules! measure {
    ($app:expr, $requests:expr) => {{
        let app = init_service($app).await;
        for _ in 0..1_000 {
            call_service(&app, TestRequest::get().uri("/oauth-provider/clients/cl_warmup").to_request()).await;
        }
        let started = Instant::now();
        for i in 0..$requests {
            let uri = format!("/oauth-provider/clients/cl_{}", i % 64);
            let response = call_service(&app, TestRequest::get().uri(&uri).to_request()).await;
            assert!(response.status().is_success());
        }
        started.elapsed().as_nanos() as f64 / $requests as f64
    }};
}

#[actix_web::main]
async fn main() {
    let requests: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(200_000);
    let metrics = Arc::new(Metrics::new().expect("metrics"));
    let mut rounds = Vec::new();
    for _ in 0..3 {
        let without = measure!(App::new().route("/oauth-provider/clients/{client_id}", web::get().to(show)), requests);
        let empty = measure!(
            App::new()
                .wrap(middleware::from_fn(nothing))
                .route("/oauth-provider/clients/{client_id}", web::get().to(show)),
            requests
        );
        let with = measure!(
            App::new()
                .app_data(web::Data::from(metrics.clone()))
                .wrap(middleware::from_fn(metrics_middleware))
                .route("/oauth-provider/clients/{client_id}", web::get().to(show)),
            requests
        );
        println!(
            "without: {without:5.0} ns/request   empty middleware: {empty:5.0}   metrics: {with:5.0}   cost: {:5.0} ns \
             ({:5.0} beyond an empty middleware)",
            with - without,
            with - empty
        );
        rounds.push((with - without, with - empty));
    }
    // The recording alone (two labelled series: the counter and the histogram).
    let started = Instant::now();
    for i in 0..requests {
        let status = if i % 16 == 0 { 404 } else { 200 };
        metrics.request("/oauth-provider/clients/{client_id}", "GET", status, std::time::Duration::from_micros(250));
    }
    println!("recording alone: {:.0} ns per request", started.elapsed().as_nanos() as f64 / f64::from(requests));
    let median = |mut values: Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    println!(
        "median cost of the metrics middleware: {:.0} ns per request, {:.0} ns of it its own work ({requests} requests a round)",
        median(rounds.iter().map(|r| r.0).collect()),
        median(rounds.iter().map(|r| r.1).collect())
    );
}
