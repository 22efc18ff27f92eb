//! The queued audit events of issued machine tokens are written by a graceful shutdown: the
//! writer is held back so that the events are provably still queued when the server stops.

use diesel::prelude::*;
use serde_json::Value;
use truxe_server::store::schema::audit_events as a;

use crate::on_both_backends;
use crate::support::oauth::*;
use crate::support::{Backend, config_from};

on_both_backends! {
    async fn queued_audit_events_are_written_by_a_graceful_shutdown(backend: Backend) {
        shutdown_writes_the_queue_on(backend).await
    }
}

fn issued_subjects(url: &str, dir: &tempfile::TempDir) -> Vec<Option<String>> {
    let config = config_from(&[("DATABASE_URL", url)], dir);
    let pool = truxe_server::store::connect(&config.database).expect("connect");
    a::table
        .filter(a::action.eq("token.issued"))
        .order(a::event_id)
        .select(a::subject)
        .load(&mut pool.get().expect("connection"))
        .expect("audit")
}

async fn shutdown_writes_the_queue_on(backend: Backend) {
    let mut server = token_server(backend, &[]).await;
    let client = machine_client(&server, "client_secret_basic").await;
    let set = jwks(&server).await;
    let state = server.state.clone();
    let hold = state.audit.hold();
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let request = server
            .client
            .post(server.url("/oauth-provider/token"))
            .header("authorization", basic(&client.client_id, &client.secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("grant_type", "client_credentials")]));
        requests.spawn(async move {
            let answer: Value = request.send().await.expect("token request").json().await.expect("json");
            answer["access_token"].as_str().expect("access_token").to_string()
        });
    }
    let tokens = requests.join_all().await;
    assert_eq!(tokens.len(), 20);
    // Answered, but held in the queue: nothing written yet.
    assert_eq!(issued_subjects(&server.db.url, &server.db.dir), Vec::<Option<String>>::new());
    // A graceful stop writes them all, hold or not.
    server.stop().await;
    drop(hold);
    let subjects = issued_subjects(&server.db.url, &server.db.dir);
    assert_eq!(subjects.len(), tokens.len(), "{subjects:?}");
    for token in &tokens {
        let (_, claims) = verify_with_jwks(token, &set, ISSUER);
        assert!(subjects.contains(&Some(claims.jti.clone())), "{} missing from {subjects:?}", claims.jti);
    }
}
