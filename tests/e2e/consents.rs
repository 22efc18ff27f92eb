//! Consents users withdraw (the account page and `truxectl users consents`): withdrawing revokes
//! the application's tokens for the user.

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::Backend;
use crate::support::flow::*;
use crate::support::oauth::*;
use crate::support::process::{text, truxectl};

on_both_backends! {
    async fn withdrawal_revokes_tokens(backend: Backend) {
        consents_on(backend).await
    }
}

async fn consents_on(backend: Backend) {
    let server = flow_server(backend, &[]).await;
    let user_id = create_user(&server, "ada@example.org");
    let app = web_app(&server).await;
    let (agent, _) = Agent::signed_in(&server, &user_id);

    let code = authorize_code(&agent, &app, CALLBACK, "openid email offline_access").await;
    let answer = exchange(&server, &app, &code, CALLBACK).await;
    let (access, refresh_token) = (
        answer.body["access_token"].as_str().expect("at").to_string(),
        answer.body["refresh_token"].as_str().expect("rt").to_string(),
    );

    // The account page lists the consent with a Withdraw button (CSRF-protected).
    let home = agent.get("/").await;
    assert_eq!(home.status, StatusCode::OK);
    assert!(home.body.contains("Orders Web") && home.body.contains("Withdraw"), "{}", home.body);
    let forged = agent.post("/login/consents", &[("client_id", &app.client_id)]).await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert!(forged.body.contains("<h1>This form has expired</h1>"), "{}", forged.body);
    assert_eq!(introspect(&server, &app, &refresh_token).await["active"], true, "nothing withdrawn");

    // The CLI lists it and withdraws it: the client's tokens for the user stop working.
    let cwd = server.db.dir.path();
    let url = server.db.url.clone();
    let listed = truxectl(cwd, &[], &["users", "consents", "ada@example.org", "--json", "--database-url", &url]);
    assert!(listed.status.success(), "{}", text(&listed));
    let listed: Value = serde_json::from_slice(&listed.stdout).expect("json");
    assert_eq!(listed["consents"][0]["client_id"], app.client_id);
    assert_eq!(listed["consents"][0]["client_name"], "Orders Web");
    assert_eq!(listed["consents"][0]["scope"], "email offline_access openid");
    let refused =
        truxectl(cwd, &[], &["users", "consents", &user_id, "--revoke", &app.client_id, "--database-url", &url]);
    assert!(!refused.status.success(), "asks first: {}", text(&refused));
    assert_eq!(introspect(&server, &app, &access).await["active"], true, "nothing withdrawn without --yes");
    let withdrawn = truxectl(
        cwd,
        &[],
        &["users", "consents", &user_id, "--revoke", &app.client_id, "--yes", "--json", "--database-url", &url],
    );
    assert!(withdrawn.status.success(), "{}", text(&withdrawn));
    let withdrawn: Value = serde_json::from_slice(&withdrawn.stdout).expect("json");
    assert_eq!(withdrawn["consent_withdrawn"], true);
    assert_eq!(withdrawn["grants_revoked"], 1, "{withdrawn}");
    assert_eq!(introspect(&server, &app, &access).await, json!({ "active": false }));
    assert_eq!(introspect(&server, &app, &refresh_token).await, json!({ "active": false }));
    assert_grant_error(&refresh(&server, &app, &refresh_token, None).await, "invalid_grant", "consent withdrawn");
    let table = truxectl(cwd, &[], &["users", "consents", &user_id, "--database-url", &url]);
    assert!(text(&table).contains("has not allowed any application"), "{}", text(&table));

    // Asked again next time; withdrawn from the account page this time.
    let asked = agent.get(&path_of(&request_params(&app, CALLBACK, "openid"))).await;
    assert_eq!(asked.status, StatusCode::OK, "the consent page again: {asked:?}");
    assert!(asked.body.contains("<h1>Allow Orders Web?</h1>"), "{}", asked.body);
    let code = authorize_code(&agent, &app, CALLBACK, "openid").await;
    let at = exchange(&server, &app, &code, CALLBACK).await.body["access_token"].as_str().expect("at").to_string();
    let home = agent.get("/").await;
    let done = agent.submit(&home, "Withdraw", &[]).await;
    assert_eq!((done.status, done.location()), (StatusCode::SEE_OTHER, "/"));
    assert!(!agent.get("/").await.body.contains("Withdraw"));
    assert_eq!(introspect(&server, &app, &at).await, json!({ "active": false }));
}
