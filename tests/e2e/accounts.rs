//! What an account being switched off means for everything it signed in to: disabling or
//! deleting a user ends their sessions, grants, refresh and access tokens, open authorization
//! codes and unused sign-in links at once, and re-enabling brings none of it back. Also the
//! `amr` an MFA sign-in hands to applications.

use diesel::prelude::*;
use serde_json::{Value, json};
use truxe_server::mfa;
use truxe_server::service::mfa as mfa_service;
use truxe_server::service::sign_in::{self, LinkParams, LinkRequest};
use truxe_server::service::users as user_service;
use truxe_server::store::schema::{audit_events, oauth_grants, sessions};
use truxe_server::store::unix_now;

use crate::on_both_backends;
use crate::support::oidc::{App, jwks, verify_id_token};
use crate::support::process::truxectl;
use crate::support::{Backend, SELF_ISSUER, TestServer};
use crate::users::json as cli_json;

async fn server(backend: Backend, extra: &[(&str, &str)]) -> TestServer {
    let mut vars = vec![("JWT_ISSUER", SELF_ISSUER)];
    vars.extend_from_slice(extra);
    TestServer::start_with(backend, &vars).await
}

/// Whether `/` shows the browser holding `cookie` as signed in.
async fn signed_in(server: &TestServer, cookie: &str) -> bool {
    let response = server.client.get(server.url("/")).header("Cookie", cookie).send().await.expect("GET /");
    match response.status().as_u16() {
        200 => true,
        303 => {
            assert_eq!(response.headers()["location"], "/login");
            false
        }
        other => panic!("GET / answered {other}"),
    }
}

/// An unused sign-in link for `email`, as `/login` would store it; returns its token.
fn open_link(server: &TestServer, email: &str) -> String {
    let mut conn = server.state.pool.get().expect("connection");
    let email = truxe_server::model::user::Email::parse(email).expect("address");
    let params = LinkParams { open_signup: false, ttl_secs: 900, return_to: None, ip: None, limit: None };
    match sign_in::request_link(&mut conn, server.state.magic_link_key.secret(), &email, &params, unix_now())
        .expect("link")
    {
        LinkRequest::Send { token, .. } => token.secret().clone(),
        other => panic!("no link: {other:?}"),
    }
}

fn link_usable(server: &TestServer, token: &str) -> bool {
    let mut conn = server.state.pool.get().expect("connection");
    sign_in::peek_link(&mut conn, server.state.magic_link_key.secret(), token, unix_now()).expect("peek").is_some()
}

fn assert_invalid_grant(answer: &(u16, Value), what: &str) {
    assert_eq!(answer.0, 400, "{what}: {}", answer.1);
    assert_eq!(answer.1["error"], "invalid_grant", "{what}: {}", answer.1);
}

/// The details of the user's latest audit event with `action`.
fn audit_details(server: &TestServer, user_id: &str, action: &str) -> Value {
    let mut conn = server.state.pool.get().expect("connection");
    let details: Vec<String> = audit_events::table
        .filter(audit_events::user_id.eq(user_id))
        .filter(audit_events::action.eq(action))
        .select(audit_events::details)
        .load(&mut conn)
        .expect("audit");
    assert_eq!(details.len(), 1, "one {action} event");
    serde_json::from_str(&details[0]).expect("details JSON")
}

/// Everything a signed-in user of an application holds: a session, a live grant (refresh and
/// access token), an authorization code not redeemed yet, and an unused sign-in link.
struct Holdings {
    cookie: String,
    access_token: String,
    refresh_token: String,
    open_code: String,
    link: String,
}

async fn holdings(server: &TestServer, app: &App, user_id: &str, email: &str) -> Holdings {
    let (cookie, _) = server.session_cookie(user_id, false);
    let tokens = app.sign_in(server, &cookie, "n-1").await;
    let open_code = app.authorize(server, &cookie, "openid email", "n-2").await;
    let link = open_link(server, email);
    assert!(signed_in(server, &cookie).await);
    assert_eq!(app.introspect(server, tokens["access_token"].as_str().expect("at")).await["active"], true);
    assert!(link_usable(server, &link));
    Holdings {
        cookie,
        access_token: tokens["access_token"].as_str().expect("at").to_string(),
        refresh_token: tokens["refresh_token"].as_str().expect("rt").to_string(),
        open_code,
        link,
    }
}

/// None of `held` works any more.
async fn assert_all_dead(server: &TestServer, app: &App, held: &Holdings, when: &str) {
    assert_invalid_grant(&app.refresh(server, &held.refresh_token).await, &format!("refresh {when}"));
    assert_eq!(app.introspect(server, &held.access_token).await, json!({ "active": false }), "access token {when}");
    let userinfo = server
        .client
        .get(server.url("/oauth-provider/userinfo"))
        .bearer_auth(&held.access_token)
        .send()
        .await
        .expect("userinfo");
    assert_eq!(userinfo.status().as_u16(), 401, "userinfo {when}");
    assert_invalid_grant(&app.redeem(server, &held.open_code).await, &format!("open code {when}"));
    assert!(!signed_in(server, &held.cookie).await, "session {when}");
    assert!(!link_usable(server, &held.link), "sign-in link {when}");
}

on_both_backends! {
    async fn disabling_a_user_ends_everything_and_enabling_restores_nothing(backend: Backend) {
        let server = server(backend, &[]).await;
        let app = App::register(&server, "Orders").await;
        let alice = server.create_user("alice@example.com");
        let bob = server.create_user("bob@example.com");
        let held = holdings(&server, &app, &alice, "alice@example.com").await;
        let bobs = holdings(&server, &app, &bob, "bob@example.com").await;

        // `truxectl users disable`, on the database, as an operator would.
        let env = [("DATABASE_URL", server.db.url.as_str())];
        let cwd = server.db.dir.path();
        let disabled = cli_json(&truxectl(cwd, &env, &["--json", "users", "disable", "alice@example.com"]));
        assert_eq!(disabled["status"], "disabled", "{disabled}");
        let ended = json!({ "sessions_ended": 1, "grants_revoked": 1, "codes_voided": 1, "links_voided": 1 });
        assert_eq!(disabled["ended"], ended, "{disabled}");
        assert_all_dead(&server, &app, &held, "after disabling").await;
        let (_, refused) = app.refresh(&server, &held.refresh_token).await;
        // Revoked, not merely refused for a disabled user: that would end with re-enabling.
        assert!(refused["error_description"].as_str().is_some_and(|d| d.contains("revoked")), "{refused}");

        // In storage: the session and the grant are revoked, and the event says what ended.
        {
            let mut conn = server.state.pool.get().expect("connection");
            let live_sessions: i64 = sessions::table
                .filter(sessions::user_id.eq(&alice))
                .filter(sessions::revoked_at.is_null())
                .count()
                .get_result(&mut conn)
                .expect("count");
            assert_eq!(live_sessions, 0);
            let live_grants: i64 = oauth_grants::table
                .filter(oauth_grants::user_id.eq(&alice))
                .filter(oauth_grants::revoked_at.is_null())
                .count()
                .get_result(&mut conn)
                .expect("count");
            assert_eq!(live_grants, 0);
        }
        assert_eq!(
            audit_details(&server, &alice, "user.disabled"),
            json!({ "sessions_ended": 1, "grants_revoked": 1, "codes_voided": 1, "links_voided": 1 })
        );

        // Another user of the same application is untouched.
        assert!(signed_in(&server, &bobs.cookie).await);
        assert_eq!(app.introspect(&server, &bobs.access_token).await["active"], true);
        let (status, refreshed) = app.refresh(&server, &bobs.refresh_token).await;
        assert_eq!(status, 200, "{refreshed}");

        // Enabling again lets alice sign in afresh, but brings nothing of before back.
        let enabled = cli_json(&truxectl(cwd, &env, &["--json", "users", "enable", "alice@example.com"]));
        assert_eq!(enabled["status"], "active", "{enabled}");
        assert!(enabled.get("ended").is_none(), "{enabled}");
        assert_all_dead(&server, &app, &held, "after enabling again").await;
        let (cookie, _) = server.session_cookie(&alice, false);
        let fresh = app.sign_in(&server, &cookie, "n-3").await;
        assert_eq!(app.introspect(&server, fresh["access_token"].as_str().expect("at")).await["active"], true);
    }

    async fn deleting_a_user_ends_everything(backend: Backend) {
        let server = server(backend, &[]).await;
        let app = App::register(&server, "Orders").await;
        let carol = server.create_user("carol@example.com");
        let held = holdings(&server, &app, &carol, "carol@example.com").await;
        let mut conn = server.state.pool.get().expect("connection");
        let deleted = user_service::delete(&mut conn, &carol, "test", unix_now()).expect("delete");
        assert_eq!(deleted.email, "carol@example.com");
        assert_eq!(
            audit_details(&server, &carol, "user.deleted"),
            json!({ "sessions_ended": 1, "grants_revoked": 1, "codes_voided": 1, "links_voided": 1 })
        );
        let refreshed = app.refresh(&server, &held.refresh_token).await;
        assert_invalid_grant(&refreshed, "refresh after deletion");
        assert_eq!(app.introspect(&server, &held.access_token).await, json!({ "active": false }));
        assert_invalid_grant(&app.redeem(&server, &held.open_code).await, "open code after deletion");
        assert!(!signed_in(&server, &held.cookie).await);
        assert!(!link_usable(&server, &held.link));
        // A new account for the address starts from nothing.
        let again = server.create_user("carol@example.com");
        assert_ne!(again, carol);
        assert!(!link_usable(&server, &held.link), "the old link does not open the new account");
        assert_all_dead(&server, &app, &held, "with a new account for the address").await;
    }

    async fn an_mfa_sign_in_hands_mfa_and_otp_to_applications(backend: Backend) {
        let server = server(backend, &[("MFA_ENABLED", "true")]).await;
        let app = App::register(&server, "Orders").await;
        let dana = server.create_user("dana@example.com");
        // Enrolled ten minutes ago (the confirming code's step is in the past).
        let enrolled_at = unix_now() - 600;
        let secret = {
            let mut conn = server.state.pool.get().expect("connection");
            let enrolment = mfa_service::begin_enrolment(&mut conn, &dana, "Truxe", enrolled_at).expect("begin");
            let secret = enrolment.secret.secret().clone();
            let first = mfa::code_at(&secret, enrolled_at).expect("code");
            mfa_service::confirm_enrolment(&mut conn, &dana, &first, enrolled_at).expect("confirm");
            secret
        };

        // Past the magic link, the second factor owed: the code page, then a current code.
        let (pending, _) = server.session_cookie(&dana, true);
        let (cookies, csrf) = server.mfa_form(&pending).await;
        let code = mfa::code_at(&secret, unix_now()).expect("code");
        let done = server
            .client
            .post(server.url("/login/mfa"))
            .header("Cookie", &cookies)
            .form(&[("csrf_token", csrf.as_str()), ("code", code.as_str())])
            .send()
            .await
            .expect("POST");
        assert_eq!(done.status(), 303, "{:?}", done.text().await);
        let set_cookie = done.headers()["set-cookie"].to_str().expect("ascii").to_string();
        let cookie = set_cookie.split(';').next().expect("name=value").to_string();
        assert!(cookie.starts_with("truxe_session="), "{set_cookie}");

        // The session row records how dana authenticated …
        let amr: Vec<String> = {
            let mut conn = server.state.pool.get().expect("connection");
            sessions::table
                .filter(sessions::user_id.eq(&dana))
                .filter(sessions::revoked_at.is_null())
                .select(sessions::amr)
                .load(&mut conn)
                .expect("sessions")
        };
        assert_eq!(amr, ["email mfa otp"]);

        // … and the application's ID token says so.
        let tokens = app.sign_in(&server, &cookie, "n-mfa").await;
        let set = jwks(&server).await;
        let claims = verify_id_token(
            tokens["id_token"].as_str().expect("id_token"),
            &set,
            &server.base_url,
            &app.client_id,
            "n-mfa",
        );
        assert_eq!(claims["sub"], dana.as_str());
        assert_eq!(claims["amr"], json!(["email", "mfa", "otp"]));
    }
}
