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

/// The same through the real binary and SIGTERM. The writer is held back without any test hook:
/// the test holds SQLite's write lock (`BEGIN IMMEDIATE`; WAL readers still read), so the
/// queued `token.issued` events cannot be written until after SIGTERM, when the lock is let go
/// and the shutdown must write them before the process exits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_the_queued_audit_events() {
    use diesel::connection::SimpleConnection;
    use std::process::Command;
    use std::time::Duration;

    use crate::support::process::ServerProcess;
    use crate::support::{ADMIN_TOKEN, free_port};

    let cwd = tempfile::tempdir().expect("tmp");
    let server = ServerProcess::start(cwd.path(), &[("ADMIN_TOKEN", ADMIN_TOKEN)], free_port()).await;
    let http = reqwest::Client::new();
    let created: Value = http
        .post(server.url("/oauth-provider/clients"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&serde_json::json!({ "client_name": "worker", "grant_types": ["client_credentials"], "allowed_scopes": ["openid"] }))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let (id, secret) = (created["client_id"].as_str().expect("id"), created["client_secret"].as_str().expect("secret"));
    let token = || {
        http.post(server.url("/oauth-provider/token"))
            .basic_auth(id, Some(secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
    };
    // Cache the client before the lock (its first read is the only database access).
    assert_eq!(token().await.expect("token").status().as_u16(), 200);

    let path = cwd.path().join("truxe-data").join("truxe.db");
    let mut lock = diesel::SqliteConnection::establish(&path.to_string_lossy()).expect("open the database");
    let count = |conn: &mut diesel::SqliteConnection| -> i64 {
        a::table.filter(a::action.eq("token.issued")).count().get_result(conn).expect("count")
    };
    // The warm-up token's entry may be being written right now: wait for that writer, as the
    // server's own connections do.
    lock.batch_execute("PRAGMA busy_timeout = 10000").expect("busy timeout");
    lock.batch_execute("BEGIN IMMEDIATE").expect("take the write lock");
    let before = count(&mut lock);
    for _ in 0..20 {
        assert_eq!(token().await.expect("token").status().as_u16(), 200);
    }
    assert_eq!(count(&mut lock), before, "nothing written while the lock is held");

    let pid = server.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    server.wait_for_log("shutting down", Duration::from_secs(10));
    lock.batch_execute("ROLLBACK").expect("let the lock go");
    let mut server = server;
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "SIGTERM is a clean stop: {status}\n{}", server.output());
    // The warm-up token's event and the twenty held back: all written, whether or not the
    // warm-up's was already in before the lock was taken.
    assert_eq!(count(&mut lock), 21, "every queued event was written before exit:\n{}", server.output());
}
