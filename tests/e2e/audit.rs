//! The tamper-evident audit log on both backends: the authentication events with who, what,
//! where and the result; `truxectl audit verify` on a sound chain, after pruning and on an
//! upgraded database, and naming the entry that was edited, deleted or inserted; one chain from
//! several writers at once; `truxectl audit list` filters; retention by the server itself.

use std::time::Duration;

use diesel::connection::SimpleConnection;
use diesel::prelude::*;
use serde_json::{Value, json};
use truxe_server::mfa;
use truxe_server::service::mfa as mfa_service;
use truxe_server::store::audit::chain::{self, entry_hash};
use truxe_server::store::audit::query::{self, Filter};
use truxe_server::store::audit::{self, AuditAction, AuditEntry, AuditEvent};
use truxe_server::store::schema::audit_events as a;
use truxe_server::store::{self, AnyConnection, migrations, unix_now};

use crate::on_both_backends;
use crate::support::flow::{
    Agent, CALLBACK, SESSION_SECRET, authorize_code, exchange, path_of, refresh, request_params, web_app,
};
use crate::support::oauth::{basic, form, machine_client, revoke, token_for};
use crate::support::process::{ServerProcess, text, truxectl};
use crate::support::smtp::SmtpSink;
use crate::support::{ADMIN_TOKEN, Backend, TestDb, TestServer, config_from, free_port};

const UA: &str = "audit-test/1.0";

fn connect(db: &TestDb) -> AnyConnection {
    let config = config_from(&[("DATABASE_URL", &db.url)], &db.dir);
    store::connect_one(&config.database).expect("connect")
}

fn migrated(backend: Backend) -> TestDb {
    let db = TestDb::new(backend);
    db.migrate();
    db
}

/// Every entry, oldest first.
fn entries(conn: &mut AnyConnection) -> Vec<AuditEntry> {
    let mut all = query::list(conn, &Filter { limit: query::MAX_LIMIT, ..Filter::default() }).expect("list");
    all.reverse();
    all
}

fn of(all: &[AuditEntry], action: AuditAction) -> Vec<&AuditEntry> {
    all.iter().filter(|e| e.action == action.as_str()).collect()
}

fn details(entry: &AuditEntry) -> Value {
    serde_json::from_str(&entry.details).expect("details are JSON")
}

/// `truxectl audit ARGS --json` against `db`: exit status and the JSON printed.
fn ctl(db: &TestDb, args: &[&str]) -> (i32, Value, String) {
    let output = truxectl(db.dir.path(), &[("DATABASE_URL", &db.url)], args);
    let status = output.status.code().expect("exit status");
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    (status, serde_json::from_str(&stdout).unwrap_or(Value::Null), text(&output))
}

fn verify(db: &TestDb) -> (i32, Value) {
    let (status, out, all) = ctl(db, &["audit", "verify", "--json"]);
    assert!(out.is_object(), "verify --json printed no JSON: {all}");
    (status, out)
}

/// Appends `n` entries about `user_id` and `client_id` at `at`.
fn append(conn: &mut AnyConnection, n: usize, action: AuditAction, user_id: &str, client_id: &str, at: i64) {
    for i in 0..n {
        let event = AuditEvent::by_client(action, client_id).user(user_id).subject(user_id).details(json!({ "i": i }));
        audit::record(conn, &event, at).expect("record");
    }
}

on_both_backends! {
    async fn authentication_events_carry_who_what_where_and_the_result(backend: Backend) {
        events_on(backend).await
    }

    async fn floods_are_coalesced_and_summarized_at_shutdown(backend: Backend) {
        floods_on(backend).await
    }

    async fn verify_names_the_entry_that_was_edited_deleted_or_inserted(backend: Backend) {
        tampering_on(backend)
    }

    async fn verify_passes_on_an_upgraded_database_and_after_pruning(backend: Backend) {
        upgrade_and_prune_on(backend)
    }

    async fn several_writers_at_once_keep_one_chain(backend: Backend) {
        concurrent_writers_on(backend).await
    }

    async fn list_filters_by_user_client_event_and_time(backend: Backend) {
        list_on(backend)
    }
}

async fn events_on(backend: Backend) {
    let sink = SmtpSink::start().await;
    let port = sink.port().to_string();
    let server = TestServer::start_with(
        backend,
        &[
            ("SESSION_SECRET", SESSION_SECRET),
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", &port),
            ("SMTP_SECURE", "false"),
            ("EMAIL_FROM", "noreply@truxe.test"),
            ("MFA_ENABLED", "true"),
            ("TRUXE_SCOPES", "orders:read,orders:write"),
        ],
    )
    .await;
    let user_id = server.create_user("ada@example.org");
    let app = web_app(&server).await;
    let http = reqwest::Client::builder()
        .user_agent(UA)
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    let browser = Agent {
        client: http.clone(),
        jar: std::sync::Arc::new(reqwest::cookie::Jar::default()),
        base: server.base_url.clone(),
    };

    // A sign-in link asked for and used; a made-up link posted.
    let login = browser.get("/login").await;
    browser.submit(&login, "Send sign-in link", &[("email", "ada@example.org")]).await;
    let mail = sink.wait_for_message(Duration::from_secs(10)).await;
    let link = mail.url_in_text("http://127.0.0.1:3001/login/magic?token=").expect("a link");
    let token = link.split_once("token=").map(|(_, t)| t.to_string()).expect("token");
    let magic = browser.get(&format!("/login/magic?token={token}")).await;
    browser.submit(&magic, "Continue", &[("token", &"x".repeat(43))]).await;
    let magic = browser.get(&format!("/login/magic?token={token}")).await;
    let done = browser.submit(&magic, "Continue", &[]).await;
    assert_eq!(done.status, 303, "{done:?}");

    // An authorization, its tokens, a refresh and a revocation; a denial; a refused request.
    let (agent, _) = Agent::signed_in(&server, &user_id);
    let code = authorize_code(&agent, &app, CALLBACK, "openid offline_access").await;
    let tokens = exchange(&server, &app, &code, CALLBACK).await;
    let rt = tokens.body["refresh_token"].as_str().expect("refresh token").to_string();
    let refreshed = refresh(&server, &app, &rt, None).await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let new_rt = refreshed.body["refresh_token"].as_str().expect("rotated").to_string();
    assert_eq!(revoke(&server, &app, &new_rt, None).await.status, 200);
    let mut asking = request_params(&app, CALLBACK, "openid");
    asking.push(("prompt", "consent".into()));
    let consent = agent.get(&path_of(&asking)).await;
    let denied = agent.submit(&consent, "Deny", &[]).await;
    denied.assert_error_redirect(CALLBACK, "access_denied", "deny");
    let mut silent = request_params(&app, CALLBACK, "openid");
    silent.push(("prompt", "none".into()));
    Agent::new(&server).get(&path_of(&silent)).await.assert_error_redirect(CALLBACK, "login_required", "prompt=none");
    Agent::new(&server).get("/oauth-provider/authorize?client_id=cl_nobody&response_type=code").await;

    // A machine token, a wrong secret, and a second factor: wrong, then right.
    let machine = machine_client(&server, "client_secret_basic").await;
    token_for(&server, &machine, &[]).await;
    let wrong = http
        .post(server.url("/oauth-provider/token"))
        .header("authorization", basic(&machine.client_id, "cs_wrong"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form(&[("grant_type", "client_credentials")]))
        .send()
        .await
        .expect("token");
    assert_eq!(wrong.status(), 401);
    let mfa_user = server.create_user("grace@example.org");
    {
        let mut conn = server.state.pool.get().expect("connection");
        let at = unix_now() - 600;
        let enrolment = mfa_service::begin_enrolment(&mut conn, &mfa_user, "Truxe", at).expect("begin");
        let secret = enrolment.secret.secret().clone();
        mfa_service::confirm_enrolment(&mut conn, &mfa_user, &mfa::code_at(&secret, at).expect("code"), at)
            .expect("confirm");
        drop(conn);
        let (cookie, _) = server.session_cookie(&mfa_user, true);
        let (cookie, csrf) = server.mfa_form(&cookie).await;
        let now = unix_now();
        let near: Vec<String> =
            (-3..=3).map(|k| mfa::code_at(&secret, now + k * mfa::STEP_SECS).expect("code")).collect();
        let bad = (0..10u32).map(|d| d.to_string().repeat(6)).find(|c| !near.contains(c)).expect("a wrong code");
        for code in [bad, mfa::code_at(&secret, now).expect("code")] {
            let answer = server
                .client
                .post(server.url("/login/mfa"))
                .header("Cookie", &cookie)
                .form(&[("csrf_token", csrf.as_str()), ("code", code.as_str())])
                .send()
                .await
                .expect("POST");
            assert!(answer.status().as_u16() < 500);
        }
    }

    server.state.mailer.flush().await;
    server.state.audit.flush().await;
    let mut conn = server.state.pool.get().expect("connection");
    let all = entries(&mut conn);
    let names: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
    for expected in [
        "client.created",
        "user.created",
        "user.sign_in_link_requested",
        "user.sign_in_failed",
        "user.signed_in",
        "consent.granted",
        "authorization.granted",
        "token.issued",
        "token.refreshed",
        "token.revoked",
        "authorization.denied",
        "authorization.failed",
        "client.authentication_failed",
        "user.mfa_enrolled",
        "user.mfa_failed",
        "user.mfa_verified",
        "key.added",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }

    // Who, what, client, IP, user agent, result, request id, time: from the request that caused it.
    let link = of(&all, AuditAction::UserSignInLinkRequested)[0];
    assert_eq!((link.user_id.as_deref(), link.result.as_str()), (Some(user_id.as_str()), "success"));
    assert_eq!(link.user_agent.as_deref(), Some(UA));
    assert_eq!(details(link), json!({ "outcome": "sent", "email_domain": "example.org" }));
    let failed_link = of(&all, AuditAction::UserSignInFailed)[0];
    assert_eq!(
        (failed_link.result.as_str(), details(failed_link)["reason"].as_str()),
        ("failure", Some("invalid_link"))
    );
    let signed_in = of(&all, AuditAction::UserSignedIn)
        .into_iter()
        .find(|e| e.user_agent.as_deref() == Some(UA))
        .expect("the browser's sign-in");
    assert_eq!(signed_in.user_id.as_deref(), Some(user_id.as_str()));
    assert_eq!(signed_in.actor, format!("user:{user_id}"));
    assert_eq!(signed_in.ip.as_deref(), Some("127.0.0.1"));
    assert!(signed_in.request_id.is_some());

    let issued = of(&all, AuditAction::TokenIssued);
    let code_token = issued.iter().find(|e| details(e)["grant_type"] == "authorization_code").expect("code grant");
    assert_eq!(code_token.actor, format!("client:{}", app.client_id));
    assert_eq!(code_token.client_id.as_deref(), Some(app.client_id.as_str()));
    assert_eq!(code_token.user_id.as_deref(), Some(user_id.as_str()));
    assert_eq!(code_token.ip.as_deref(), Some("127.0.0.1"));
    assert!(code_token.request_id.is_some() && code_token.occurred_at > 0);
    let refreshed = of(&all, AuditAction::TokenRefreshed)[0];
    assert_eq!(details(refreshed)["grant_type"], "refresh_token");
    assert_eq!(details(refreshed)["retry"], false);
    assert_eq!(of(&all, AuditAction::TokenRevoked)[0].client_id.as_deref(), Some(app.client_id.as_str()));

    let denial = of(&all, AuditAction::AuthorizationDenied)[0];
    assert_eq!((denial.result.as_str(), denial.user_id.as_deref()), ("failure", Some(user_id.as_str())));
    let refusals = of(&all, AuditAction::AuthorizationFailed);
    let login_required = refusals.iter().find(|e| details(e)["error"] == "login_required").expect("prompt=none");
    assert_eq!(login_required.client_id.as_deref(), Some(app.client_id.as_str()));
    assert_eq!(details(login_required)["redirected"], true);
    let unknown = refusals.iter().find(|e| details(e)["redirected"] == false).expect("the unknown client's page");
    assert_eq!((unknown.client_id.as_deref(), unknown.result.as_str()), (None, "failure"));

    let bad_secret = of(&all, AuditAction::ClientAuthenticationFailed)[0];
    assert_eq!(bad_secret.client_id.as_deref(), Some(machine.client_id.as_str()));
    assert_eq!((bad_secret.actor.as_str(), bad_secret.result.as_str()), ("anonymous", "failure"));
    assert_eq!(details(bad_secret)["reason"], "wrong_secret");
    assert_eq!(bad_secret.user_agent.as_deref(), Some(UA));
    assert!(bad_secret.request_id.is_some());

    let mfa_failed = of(&all, AuditAction::UserMfaFailed)[0];
    assert_eq!((mfa_failed.user_id.as_deref(), mfa_failed.result.as_str()), (Some(mfa_user.as_str()), "failure"));
    assert_eq!(details(mfa_failed)["reason"], "invalid_code");
    let mfa_ok = of(&all, AuditAction::UserMfaVerified)[0];
    assert_eq!((mfa_ok.result.as_str(), details(mfa_ok)["method"].as_str()), ("success", Some("totp")));
    let created = of(&all, AuditAction::ClientCreated)[0];
    assert_eq!(created.actor, "admin");

    // Never a secret: no token, code, link or client secret in any entry.
    let secrets = [code.as_str(), &rt, &new_rt, &token, &machine.secret, &app.secret];
    for entry in &all {
        let row = serde_json::to_string(entry).expect("json");
        for secret in secrets.iter().filter(|s| !s.is_empty()) {
            assert!(!row.contains(secret), "a secret in the audit log: {row}");
        }
    }
    // One unbroken chain, in the order written.
    let seqs: Vec<i64> = all.iter().filter_map(|e| e.seq).collect();
    assert_eq!(seqs.len(), all.len(), "every entry has its place");
    let report = audit::verify::verify(&mut conn, &mut |_| {}).expect("verify");
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.checked, all.len() as u64);
}

async fn floods_on(backend: Backend) {
    let mut server = TestServer::start_with(
        backend,
        &[
            ("RATE_LIMIT_ENABLED", "true"),
            ("RATE_LIMIT_ENDPOINTS", "introspect=1:1"),
            ("RATE_LIMIT_MAX", "100000"),
            ("TRUXE_SCOPES", "orders:read,orders:write"),
        ],
    )
    .await;
    let machine = machine_client(&server, "client_secret_basic").await;
    let send = |path: &str, secret: &str| {
        server
            .client
            .post(server.url(path))
            .header("authorization", basic(&machine.client_id, secret))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form(&[("grant_type", "client_credentials"), ("token", "x")]))
            .send()
    };
    // Six introspections: the first is answered, five are refused by the 1-per-minute limit.
    let mut refused = 0;
    for _ in 0..6 {
        if send("/oauth-provider/introspect", &machine.secret).await.expect("introspect").status() == 429 {
            refused += 1;
        }
    }
    assert_eq!(refused, 5);
    // Seven wrong secrets at the token endpoint.
    for _ in 0..7 {
        assert_eq!(send("/oauth-provider/token", "cs_wrong").await.expect("token").status(), 401);
    }
    server.state.audit.flush().await;
    let count = |conn: &mut AnyConnection, action: AuditAction| -> Vec<AuditEntry> {
        entries(conn).into_iter().filter(|e| e.action == action.as_str()).collect()
    };
    {
        let mut conn = server.state.pool.get().expect("connection");
        let limited = count(&mut conn, AuditAction::RateLimitExceeded);
        assert_eq!(limited.len(), 1, "one entry per source and minute: {limited:?}");
        assert_eq!(details(&limited[0])["policies"].as_str().map(|p| p.contains("introspect")), Some(true));
        assert_eq!(limited[0].ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(count(&mut conn, AuditAction::ClientAuthenticationFailed).len(), 1);
    }
    // The graceful stop writes what the open windows counted.
    server.stop().await;
    let mut conn = connect(&server.db);
    let limited = count(&mut conn, AuditAction::RateLimitExceeded);
    assert_eq!(limited.len(), 2, "{limited:?}");
    assert_eq!(details(&limited[1])["coalesced"]["count"], 4, "{}", limited[1].details);
    assert_eq!(limited[1].request_id, None, "a summary stands for many requests");
    let failures = count(&mut conn, AuditAction::ClientAuthenticationFailed);
    assert_eq!(failures.len(), 2, "{failures:?}");
    assert_eq!(details(&failures[1])["coalesced"]["count"], 6);
    assert_eq!(details(&failures[1])["reason"], "wrong_secret");
    let (status, report) = verify(&server.db);
    assert_eq!(status, 0, "{report}");
}

fn tampering_on(backend: Backend) {
    let db = migrated(backend);
    let mut conn = connect(&db);
    append(&mut conn, 8, AuditAction::TokenIssued, "usr_a", "cl_a", unix_now());
    let (status, report) = verify(&db);
    assert_eq!((status, report["ok"].clone()), (0, json!(true)), "{report}");
    assert_eq!(report["report"]["checked"], 8);
    let entry = |conn: &mut AnyConnection, seq: i64| -> AuditEntry {
        a::table.filter(a::seq.eq(seq)).select(AuditEntry::as_select()).first(conn).expect("entry")
    };
    let broken = |report: &Value| report["report"]["broken"].clone();

    // Edited: one field of seq 4.
    let fourth = entry(&mut conn, 4);
    diesel::update(a::table.filter(a::seq.eq(4))).set(a::ip.eq("203.0.113.66")).execute(&mut conn).expect("edit");
    let (status, report) = verify(&db);
    assert_eq!(status, 1, "{report}");
    assert_eq!(broken(&report)["problem"], "edited");
    assert_eq!(broken(&report)["seq"], 4);
    assert_eq!(broken(&report)["event_id"], fourth.event_id.as_str());
    let (status, _, said) = ctl(&db, &["audit", "verify"]);
    assert_eq!(status, 1);
    assert!(said.contains("FAIL") && said.contains("seq 4") && said.contains(&fourth.event_id), "{said}");
    diesel::update(a::table.filter(a::seq.eq(4))).set(a::ip.eq(fourth.ip.clone())).execute(&mut conn).expect("undo");
    assert_eq!(verify(&db).0, 0, "restored");

    // Deleted: seq 6; the gap is named, with the entry after it.
    let sixth = entry(&mut conn, 6);
    let seventh = entry(&mut conn, 7);
    diesel::delete(a::table.filter(a::seq.eq(6))).execute(&mut conn).expect("delete");
    let (status, report) = verify(&db);
    assert_eq!(status, 1, "{report}");
    assert_eq!(broken(&report)["problem"], "deleted");
    assert_eq!(broken(&report)["missing"], json!([6, 6]));
    assert_eq!(broken(&report)["event_id"], seventh.event_id.as_str());
    diesel::insert_into(a::table).values(&sixth).execute(&mut conn).expect("put back");
    assert_eq!(verify(&db).0, 0, "restored");

    // Inserted out of order: a new entry between 3 and 4 (the later ones moved up to make room).
    diesel::update(a::table.filter(a::seq.gt(3))).set(a::seq.eq(a::seq + 1000)).execute(&mut conn).expect("shift");
    diesel::update(a::table.filter(a::seq.gt(1000))).set(a::seq.eq(a::seq - 999)).execute(&mut conn).expect("shift");
    let third = entry(&mut conn, 3);
    let mut forged = AuditEntry {
        seq: Some(4),
        event_id: uuid::Uuid::now_v7().to_string(),
        action: "client.deleted".into(),
        prev_hash: third.hash.clone(),
        ..third.clone()
    };
    forged.hash = Some("f".repeat(64));
    diesel::insert_into(a::table).values(&forged).execute(&mut conn).expect("insert");
    let (status, report) = verify(&db);
    assert_eq!(status, 1, "{report}");
    assert_eq!(broken(&report)["seq"], 4);
    assert_eq!(broken(&report)["event_id"], forged.event_id.as_str());
    // Even with its own hash right, the entry after it no longer follows.
    forged.hash = Some(entry_hash(&forged));
    diesel::update(a::table.filter(a::event_id.eq(&forged.event_id)))
        .set(a::hash.eq(forged.hash.clone()))
        .execute(&mut conn)
        .expect("rehash");
    let (status, report) = verify(&db);
    assert_eq!(status, 1, "{report}");
    assert_eq!(broken(&report)["seq"], 5, "{report}");
    assert_eq!(broken(&report)["event_id"], fourth.event_id.as_str());
    diesel::delete(a::table.filter(a::event_id.eq(&forged.event_id))).execute(&mut conn).expect("remove");
    diesel::update(a::table.filter(a::seq.gt(4))).set(a::seq.eq(a::seq + 1000)).execute(&mut conn).expect("shift back");
    diesel::update(a::table.filter(a::seq.gt(1000)))
        .set(a::seq.eq(a::seq - 1001))
        .execute(&mut conn)
        .expect("shift back");
    assert_eq!(verify(&db).0, 0, "restored");

    // Inserted with no place in the chain, and beyond its head.
    let stray = AuditEntry {
        seq: None,
        prev_hash: None,
        hash: None,
        event_id: uuid::Uuid::now_v7().to_string(),
        ..third.clone()
    };
    diesel::insert_into(a::table).values(&stray).execute(&mut conn).expect("insert");
    let (status, report) = verify(&db);
    assert_eq!(status, 1, "{report}");
    assert_eq!(
        (broken(&report)["problem"].clone(), broken(&report)["event_id"].clone()),
        (json!("inserted"), json!(stray.event_id))
    );
    diesel::delete(a::table.filter(a::event_id.eq(&stray.event_id))).execute(&mut conn).expect("remove");
    let last = entry(&mut conn, 8);
    let beyond = AuditEntry {
        seq: Some(9),
        prev_hash: last.hash.clone(),
        event_id: uuid::Uuid::now_v7().to_string(),
        ..last.clone()
    };
    let beyond = AuditEntry { hash: Some(entry_hash(&beyond)), ..beyond };
    diesel::insert_into(a::table).values(&beyond).execute(&mut conn).expect("insert");
    let (status, report) = verify(&db);
    assert_eq!(status, 1, "{report}");
    assert_eq!((broken(&report)["problem"].clone(), broken(&report)["seq"].clone()), (json!("inserted"), json!(9)));
    diesel::delete(a::table.filter(a::seq.eq(9))).execute(&mut conn).expect("remove");

    // Deleted from the end: the head remembers.
    diesel::delete(a::table.filter(a::seq.eq(8))).execute(&mut conn).expect("delete");
    let (status, report) = verify(&db);
    assert_eq!(status, 1, "{report}");
    assert_eq!(
        (broken(&report)["problem"].clone(), broken(&report)["missing"].clone()),
        (json!("truncated"), json!([8, 8]))
    );
    diesel::insert_into(a::table).values(&last).execute(&mut conn).expect("put back");
    assert_eq!(verify(&db).0, 0, "restored");
}

fn upgrade_and_prune_on(backend: Backend) {
    // A database from before the chain, with entries in it.
    let db = TestDb::new(backend);
    let mut conn = connect(&db);
    while migrations::pending(&mut conn).expect("pending").first().is_some_and(|m| !m.name.ends_with("audit_chain")) {
        migrations::apply_next(&mut conn).expect("migrate");
    }
    let long_ago = unix_now() - 100 * 86_400;
    for (i, id) in [
        "0190a000-0000-7000-8000-000000000003",
        "0190a000-0000-7000-8000-000000000001",
        "0190a000-0000-7000-8000-000000000002",
    ]
    .iter()
    .enumerate()
    {
        conn.batch_execute(&format!(
            "INSERT INTO audit_events (event_id, occurred_at, action, actor, details) VALUES ('{id}', {}, 'user.created', 'cli', '{{}}')",
            long_ago + i as i64
        ))
        .expect("legacy entry");
    }
    migrations::apply_all(&mut conn).expect("migrate");
    let (status, report) = verify(&db);
    assert_eq!(status, 0, "pre-chain entries are not a broken chain: {report}");
    assert_eq!(report["report"]["legacy_unchained"], 3);
    let (_, migrated, all) = ctl(&db, &["migrate", "--json"]);
    assert_eq!(migrated["audit_entries_chained"], 3, "{all}");
    let (status, report) = verify(&db);
    assert_eq!((status, report["report"]["checked"].clone()), (0, json!(3)), "{report}");
    let chained = entries(&mut conn);
    assert_eq!(chained.iter().map(|e| e.seq).collect::<Vec<_>>(), [Some(1), Some(2), Some(3)], "oldest first");

    // Retention: the oldest go, an anchor says where the kept chain begins, verify passes.
    append(&mut conn, 4, AuditAction::TokenIssued, "usr_a", "cl_a", unix_now() - 40 * 86_400);
    append(&mut conn, 3, AuditAction::TokenIssued, "usr_a", "cl_a", unix_now() - 86_400);
    let pruned = audit::prune(&mut conn, unix_now() - 30 * 86_400, unix_now()).expect("prune");
    assert_eq!((pruned.deleted, pruned.kept_from_seq), (7, 8));
    let anchor = pruned.anchor.expect("an anchor");
    assert_eq!((anchor.action.as_str(), anchor.seq), ("audit.pruned", Some(11)));
    assert_eq!(details(&anchor)["kept_from_seq"], 8);
    let (status, report) = verify(&db);
    assert_eq!(status, 0, "{report}");
    assert_eq!(report["report"]["checked"], 4);
    assert_eq!(
        (report["report"]["kept_from_seq"].clone(), report["report"]["anchor_seq"].clone()),
        (json!(8), json!(11))
    );
    assert_eq!(entries(&mut conn).first().and_then(|e| e.seq), Some(8));
    // Again: nothing older is left, nothing changes.
    let again = audit::prune(&mut conn, unix_now() - 30 * 86_400, unix_now()).expect("prune");
    assert_eq!((again.deleted, again.anchor), (0, None));
    // Deleting past the anchor is still caught.
    diesel::delete(a::table.filter(a::seq.eq(8))).execute(&mut conn).expect("delete");
    let (status, report) = verify(&db);
    assert_eq!((status, report["report"]["broken"]["problem"].clone()), (1, json!("deleted")), "{report}");
    diesel::delete(a::table).execute(&mut conn).expect("delete everything");
    let (status, report) = verify(&db);
    assert_eq!((status, report["report"]["broken"]["problem"].clone()), (1, json!("truncated")), "{report}");
}

async fn concurrent_writers_on(backend: Backend) {
    let db = migrated(backend);
    let config = config_from(&[("DATABASE_URL", &db.url)], &db.dir);
    // Two "instances": their own pools and batched writers, plus writes inside transactions.
    let pools: Vec<store::Pool> = (0..2).map(|_| store::connect(&config.database).expect("pool")).collect();
    let logs: Vec<std::sync::Arc<truxe_server::audit::AuditLog>> =
        pools.iter().map(|pool| std::sync::Arc::new(truxe_server::audit::AuditLog::start(pool.clone()))).collect();
    const BATCHED: usize = 300;
    const DIRECT: usize = 40;
    let mut tasks = tokio::task::JoinSet::new();
    for (n, log) in logs.iter().enumerate() {
        let log = log.clone();
        tasks.spawn(async move {
            for i in 0..BATCHED {
                let event =
                    AuditEvent::by_client(AuditAction::TokenIssued, &format!("cl_{n}")).details(json!({ "i": i }));
                log.record_async(event, unix_now()).await.expect("record");
                if i % 50 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        });
        let pool = pools[n].clone();
        tasks.spawn_blocking(move || {
            let mut conn = pool.get().expect("connection");
            for i in 0..DIRECT {
                let event = AuditEvent::new(AuditAction::UserSignedIn, "user:usr_x").details(json!({ "i": i }));
                audit::record(&mut conn, &event, unix_now()).expect("record");
            }
        });
    }
    tasks.join_all().await;
    for log in &logs {
        log.flush().await;
    }
    let total = 2 * (BATCHED + DIRECT);
    let mut conn = connect(&db);
    let head = chain::head(&mut conn).expect("head");
    assert_eq!(head.head_seq, total as i64);
    let (status, report) = verify(&db);
    assert_eq!(status, 0, "{report}");
    assert_eq!(report["report"]["checked"], total);
}

fn list_on(backend: Backend) {
    let db = migrated(backend);
    let mut conn = connect(&db);
    let user = truxe_server::service::users::create(
        &mut conn,
        &truxe_server::service::users::NewUser { email: "lin@example.org".into(), ..Default::default() },
        "cli",
        unix_now(),
    )
    .expect("user");
    let now = unix_now();
    append(&mut conn, 2, AuditAction::TokenIssued, &user.user_id, "cl_a", now - 3 * 86_400);
    append(&mut conn, 3, AuditAction::TokenIssued, "usr_other", "cl_b", now - 3_600);
    append(&mut conn, 1, AuditAction::TokenRevoked, &user.user_id, "cl_b", now - 60);
    append(&mut conn, 1, AuditAction::UserMfaFailed, &user.user_id, "cl_b", now - 60);
    let listed = |args: &[&str]| -> Vec<Value> {
        let mut all = vec!["audit", "list", "--json"];
        all.extend_from_slice(args);
        let (status, out, said) = ctl(&db, &all);
        assert_eq!(status, 0, "{said}");
        out["entries"].as_array().expect("entries").clone()
    };
    let events =
        |list: &[Value]| list.iter().map(|e| e["event"].as_str().unwrap_or_default().to_string()).collect::<Vec<_>>();

    assert_eq!(listed(&[]).len(), 8, "user.created and the seven");
    let mine = listed(&["--user", &user.user_id]);
    assert_eq!(events(&mine), ["user.created", "user.mfa_failed", "token.revoked", "token.issued", "token.issued"]);
    assert_eq!(listed(&["--user", "lin@example.org"]).len(), 5, "by address too");
    assert_eq!(listed(&["--client", "cl_b"]).len(), 5);
    assert_eq!(listed(&["--event", "token.issued"]).len(), 5);
    assert_eq!(
        events(&listed(&["--event", "token.*"])),
        ["token.revoked", "token.issued", "token.issued", "token.issued", "token.issued", "token.issued"]
    );
    assert_eq!(listed(&["--since", "2h"]).len(), 6, "the last two hours (with user.created)");
    assert_eq!(listed(&["--since", "2h", "--client", "cl_b", "--event", "token.issued"]).len(), 3);
    assert_eq!(listed(&["--limit", "2"]).len(), 2);
    let entry = &listed(&["--user", &user.user_id, "--limit", "1"])[0];
    for field in [
        "seq",
        "event_id",
        "time",
        "event",
        "result",
        "actor",
        "client_id",
        "user_id",
        "ip",
        "user_agent",
        "request_id",
        "details",
        "hash",
    ] {
        assert!(entry.get(field).is_some(), "{field} in {entry}");
    }
    assert_eq!(entry["result"], "success");

    // People get a table.
    let (status, _, table) = ctl(&db, &["audit", "list", "--client", "cl_a"]);
    assert_eq!(status, 0);
    assert!(table.starts_with("TIME") && table.contains("token.issued") && table.contains("cl_a"), "{table}");

    // Bad input: usage errors (2), a configuration error (78), an unknown user (1).
    for args in [
        &["audit", "list", "--event", "token.minted"][..],
        &["audit", "list", "--since", "yesterday"],
        &["audit", "list", "--limit", "0"],
    ] {
        let (status, _, said) = ctl(&db, args);
        assert_eq!(status, 2, "{args:?}: {said}");
    }
    let output = truxectl(db.dir.path(), &[("DATABASE_URL", "mysql://nowhere")], &["audit", "verify"]);
    assert_eq!(output.status.code(), Some(78), "{}", text(&output));
    let (status, _, said) = ctl(&db, &["audit", "list", "--user", "nobody@example.org"]);
    assert_eq!(status, 1, "{said}");
    assert!(said.contains("nobody@example.org"), "{said}");
}

/// Retention is the server's own hourly housekeeping: a server started with
/// `TRUXE_AUDIT_RETENTION` prunes what is older, and the chain still verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_prunes_by_its_retention_setting() {
    let cwd = tempfile::tempdir().expect("tmp");
    let path = cwd.path().join("truxe-data").join("truxe.db");
    std::fs::create_dir_all(path.parent().expect("dir")).expect("data dir");
    let url = format!("sqlite://{}", path.display());
    {
        let config = config_from(&[("DATABASE_URL", &url)], &cwd);
        let mut conn = store::connect_one(&config.database).expect("connect");
        migrations::apply_all(&mut conn).expect("migrate");
        append(&mut conn, 5, AuditAction::TokenIssued, "usr_a", "cl_a", unix_now() - 100 * 86_400);
        append(&mut conn, 2, AuditAction::TokenIssued, "usr_a", "cl_a", unix_now() - 86_400);
    }
    let server = ServerProcess::start(
        cwd.path(),
        &[("ADMIN_TOKEN", ADMIN_TOKEN), ("TRUXE_AUDIT_RETENTION", "90d")],
        free_port(),
    )
    .await;
    server.wait_for_log("removed audit entries older than TRUXE_AUDIT_RETENTION", Duration::from_secs(30));
    let config = config_from(&[("DATABASE_URL", &url)], &cwd);
    let mut conn = store::connect_one(&config.database).expect("connect");
    let (anchor, anchored) = chain::latest_anchor(&mut conn).expect("anchor").expect("an anchor entry");
    assert_eq!(anchored.map(|d| (d.kept_from_seq, d.deleted)), Some((6, 5)), "{}", anchor.details);
    let report = audit::verify::verify(&mut conn, &mut |_| {}).expect("verify");
    assert!(report.ok(), "{report:?}");
    let (status, output) = server.terminate();
    assert!(status.success(), "{output}");
    // Each entry was also a structured log line.
    assert!(output.contains("audit.pruned"), "{output}");
}
