//! TOTP second factor on both backends: enrolment, verification with replay protection,
//! lockout, single-use recovery codes and reset (service and `truxectl users mfa-reset`).

use diesel::prelude::*;
use truxe_server::mfa::{self, LOCKOUT_SECS, STEP_SECS};
use truxe_server::service::mfa::{self as mfa_service, Method, MfaServiceError};
use truxe_server::service::users;
use truxe_server::store::schema::{audit_events, sessions, users as users_table};
use truxe_server::store::{self, AnyConnection};

use crate::on_both_backends;
use crate::support::process::truxectl;
use crate::support::{TestServer, config_from};
use crate::users::{conn, json, migrated, new_user};

const NOW: i64 = 1_800_000_000;

fn code(secret: &[u8], at: i64) -> String {
    mfa::code_at(secret, at).expect("code")
}

/// A user with confirmed MFA; returns (user_id, secret, recovery codes).
fn enrolled(c: &mut AnyConnection, email: &str) -> (String, Vec<u8>, Vec<String>) {
    let user = users::create(c, &new_user(email), "test", NOW).expect("user");
    let enrolment = mfa_service::begin_enrolment(c, &user.user_id, "Truxe Test", NOW).expect("begin");
    let secret = enrolment.secret.secret().clone();
    let codes = mfa_service::confirm_enrolment(c, &user.user_id, &code(&secret, NOW), NOW).expect("confirm");
    (user.user_id.into(), secret, codes.iter().map(|c| c.secret().clone()).collect())
}

/// Six digits that are no code of the steps around the real clock (the HTTP pages use it).
fn wrong_code(secret: &[u8]) -> String {
    let now = truxe_server::store::unix_now();
    let near: Vec<String> = (-3..=3).map(|k| code(secret, now + k * STEP_SECS)).collect();
    (0..10u32).map(|d| d.to_string().repeat(6)).find(|c| !near.contains(c)).expect("a wrong code")
}

/// The details of the user's `action` entries (`user.mfa_verified`, `user.mfa_failed`).
fn attempts(c: &mut AnyConnection, user_id: &str, action: &str) -> Vec<String> {
    audit_events::table
        .filter(audit_events::user_id.eq(user_id))
        .filter(audit_events::action.eq(action))
        .filter(audit_events::result.eq(if action == "user.mfa_failed" { "failure" } else { "success" }))
        .select(audit_events::details)
        .load(c)
        .expect("audit")
}

fn stored_secret(c: &mut AnyConnection, user_id: &str) -> Option<String> {
    users_table::table.filter(users_table::user_id.eq(user_id)).select(users_table::mfa_secret).first(c).expect("row")
}

/// The user's second-factor audit trail, without the entries of single attempts
/// (`user.mfa_verified`, `user.mfa_failed`: see [`attempts`]).
fn actions(c: &mut AnyConnection, user_id: &str) -> Vec<String> {
    audit_events::table
        .filter(audit_events::user_id.eq(user_id))
        .filter(audit_events::action.like("user.mfa%"))
        .filter(audit_events::action.ne_all(["user.mfa_verified", "user.mfa_failed"]))
        .order(audit_events::event_id)
        .select(audit_events::action)
        .load(c)
        .expect("audit")
}

on_both_backends! {
    async fn mfa_enrolment_is_confirmed_by_a_first_code(backend: Backend) {
        let (_db, pool) = migrated(backend);
        let c = &mut *conn(&pool);
        let user = users::create(c, &new_user("alice@example.com"), "test", NOW).expect("user");
        let id = user.user_id.as_str();
        assert!(matches!(mfa_service::verify(c, id, "123456", NOW), Err(MfaServiceError::NotEnrolled)));
        assert!(matches!(mfa_service::confirm_enrolment(c, id, "123456", NOW), Err(MfaServiceError::NoPendingEnrolment)));

        let enrolment = mfa_service::begin_enrolment(c, id, "Truxe Test", NOW).expect("begin");
        let secret = enrolment.secret.secret().clone();
        let uri = enrolment.provisioning_uri.secret();
        assert!(uri.starts_with("otpauth://totp/Truxe%20Test:alice%40example.com?"), "{uri}");
        assert!(uri.contains(&format!("secret={}", enrolment.secret_base32.secret())), "{uri}");
        assert!(enrolment.qr_svg.starts_with("<svg"));
        let again = mfa_service::begin_enrolment(c, id, "Truxe Test", NOW + 5).expect("reload");
        assert_eq!(again.secret.secret(), &secret, "a reload shows the same pending secret");

        // At rest: encrypted, never the secret itself.
        let stored = stored_secret(c, id).expect("pending secret stored");
        assert!(stored.starts_with("v1."), "{stored}");
        assert!(!stored.contains(enrolment.secret_base32.secret().as_str()));
        assert!(!users::find(c, id).expect("find").expect("user").mfa_enabled, "pending is not enabled");
        assert!(matches!(mfa_service::verify(c, id, &code(&secret, NOW), NOW), Err(MfaServiceError::NotEnrolled)));

        assert!(matches!(
            mfa_service::confirm_enrolment(c, id, &code(&secret, NOW + 10 * STEP_SECS), NOW),
            Err(MfaServiceError::InvalidCode)
        ));
        let codes = mfa_service::confirm_enrolment(c, id, &code(&secret, NOW), NOW).expect("confirm");
        assert_eq!(codes.len(), 10);
        let user = users::find(c, id).expect("find").expect("user");
        assert!(user.mfa_enabled);
        assert_eq!(user.mfa_enrolled_at, Some(NOW));
        assert_eq!(user.mfa_failed_attempts, 0, "the wrong code before confirmation is forgiven");
        assert_eq!(mfa_service::recovery_codes_left(c, id).expect("left"), 10);
        assert!(matches!(mfa_service::begin_enrolment(c, id, "Truxe", NOW), Err(MfaServiceError::AlreadyEnrolled)));
        assert!(matches!(mfa_service::confirm_enrolment(c, id, "123456", NOW), Err(MfaServiceError::AlreadyEnrolled)));

        // The confirming code cannot be replayed; the next step's code works once.
        assert!(matches!(mfa_service::verify(c, id, &code(&secret, NOW), NOW), Err(MfaServiceError::CodeReused)));
        let later = NOW + STEP_SECS;
        let verified = mfa_service::verify(c, id, &code(&secret, later), later).expect("verify");
        assert_eq!(verified.method, Method::Totp);
        assert_eq!(verified.recovery_codes_left, 10);
        assert!(matches!(mfa_service::verify(c, id, &code(&secret, later), later + 1), Err(MfaServiceError::CodeReused)));
        assert_eq!(actions(c, id), ["user.mfa_enrolled"]);
        assert!(matches!(mfa_service::verify(c, "usr_nobody", "123456", NOW), Err(MfaServiceError::NotFound(_))));
    }

    async fn mfa_lockout_holds_against_parallel_guesses_over_http(backend: Backend) {
        const GUESSES: usize = 12;
        let max = (GUESSES + 4).to_string();
        let server = TestServer::start_with(backend, &[("MFA_ENABLED", "true"), ("DATABASE_POOL_MAX", &max)]).await;
        let user_id = server.create_user("grace@example.com");
        let secret = {
            let c = &mut *server.state.pool.get().expect("connection");
            // Ten minutes ago by the real clock, which the pages use.
            let at = truxe_server::store::unix_now() - 600;
            let enrolment = mfa_service::begin_enrolment(c, &user_id, "Truxe Test", at).expect("begin");
            let secret = enrolment.secret.secret().clone();
            mfa_service::confirm_enrolment(c, &user_id, &code(&secret, at), at).expect("confirm");
            secret
        };
        // Past the magic link, owing the second factor; every guess from this one browser.
        let (cookie, pending_hash) = server.session_cookie(&user_id, true);
        let (cookie, csrf) = server.mfa_form(&cookie).await;
        let wrong = wrong_code(&secret);
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(GUESSES));
        let guesses: Vec<_> = (0..GUESSES)
            .map(|_| {
                let (client, url, start) = (server.client.clone(), server.url("/login/mfa"), start.clone());
                let form = [("csrf_token", csrf.clone()), ("code", wrong.clone())];
                let cookie = cookie.clone();
                tokio::spawn(async move {
                    start.wait().await;
                    let response = client.post(url).header("Cookie", cookie).form(&form).send().await.expect("POST");
                    (response.status().as_u16(), response.text().await.expect("body"))
                })
            })
            .collect();
        let (mut wrong_code_pages, mut locked_pages) = (0, 0);
        for guess in guesses {
            match guess.await.expect("guess") {
                (400, body) => {
                    assert!(body.contains("That code is not valid."), "{body}");
                    wrong_code_pages += 1;
                }
                (429, body) => {
                    let message = "Too many wrong codes. For your security, try again in 15 minutes.";
                    assert!(body.contains(message), "{body}");
                    locked_pages += 1;
                }
                (status, body) => panic!("a wrong guess answered {status}: {body}"),
            }
        }
        assert_eq!((wrong_code_pages, locked_pages), (4, 8), "wrong-code and locked pages");
        let c = &mut *server.state.pool.get().expect("connection");
        let user = users::find(c, &user_id).expect("find").expect("user");
        assert!(user.mfa_locked_until.is_some_and(|until| until > truxe_server::store::unix_now()));
        assert_eq!(actions(c, &user_id), ["user.mfa_enrolled", "user.mfa_locked"], "the lockout is audited once");
        // Every guess through the page is audited as a failure, with its reason.
        let failures = attempts(c, &user_id, "user.mfa_failed");
        assert_eq!(failures.len(), GUESSES, "{failures:?}");
        let reason = |r: &str| failures.iter().filter(|d| d.contains(&format!("\"reason\":\"{r}\""))).count();
        assert_eq!((reason("invalid_code"), reason("locked")), (4, 8), "{failures:?}");
        assert!(attempts(c, &user_id, "user.mfa_verified").is_empty());
        // Still pending: no guess signed anybody in.
        let pending: (bool, Option<i64>) = sessions::table
            .filter(sessions::session_hash.eq(&pending_hash))
            .select((sessions::mfa_pending, sessions::revoked_at))
            .first(c)
            .expect("session");
        assert_eq!(pending, (true, None));
        let live: i64 = sessions::table
            .filter(sessions::user_id.eq(&user_id))
            .filter(sessions::mfa_pending.eq(false))
            .count()
            .get_result(c)
            .expect("count");
        assert_eq!(live, 0);
    }

    async fn mfa_locks_after_five_wrong_codes(backend: Backend) {
        let (_db, pool) = migrated(backend);
        let c = &mut *conn(&pool);
        let (id, secret, _) = enrolled(c, "bob@example.com");
        let now = NOW + 10 * STEP_SECS;
        let wrong = code(&secret, now + 20 * STEP_SECS);
        for attempt in 1..5 {
            assert!(matches!(mfa_service::verify(c, &id, &wrong, now), Err(MfaServiceError::InvalidCode)), "{attempt}");
            assert_eq!(users::find(c, &id).expect("find").expect("user").mfa_failed_attempts, attempt);
        }
        match mfa_service::verify(c, &id, "not-a-recovery-code", now) {
            Err(MfaServiceError::Locked { until }) => assert_eq!(until, now + LOCKOUT_SECS),
            other => panic!("the fifth wrong entry locks: {other:?}"),
        }
        // Even the right code is refused while locked, and does not consume its step.
        assert!(matches!(mfa_service::verify(c, &id, &code(&secret, now), now), Err(MfaServiceError::Locked { .. })));
        let almost = now + LOCKOUT_SECS - 1;
        assert!(matches!(
            mfa_service::verify(c, &id, &code(&secret, almost), almost),
            Err(MfaServiceError::Locked { .. })
        ));
        let after = now + LOCKOUT_SECS;
        let verified = mfa_service::verify(c, &id, &code(&secret, after), after).expect("unlocked");
        assert_eq!(verified.method, Method::Totp);
        let user = users::find(c, &id).expect("find").expect("user");
        assert_eq!((user.mfa_failed_attempts, user.mfa_locked_until), (0, None));
        assert_eq!(actions(c, &id), ["user.mfa_enrolled", "user.mfa_locked"]);
    }

    async fn mfa_lockout_holds_against_parallel_guesses(backend: Backend) {
        const GUESSES: usize = 12;
        let (db, _) = migrated(backend);
        // A pool with a connection per guess, so every guess runs at the same time.
        let max = (GUESSES + 2).to_string();
        let config = config_from(&[("DATABASE_URL", &db.url), ("DATABASE_POOL_MAX", &max)], &db.dir);
        let pool = store::connect(&config.database).expect("connect");
        let (id, secret) = {
            let c = &mut *conn(&pool);
            let (id, secret, _) = enrolled(c, "frank@example.com");
            (id, secret)
        };
        let now = NOW + 10 * STEP_SECS;
        let wrong = code(&secret, now + 20 * STEP_SECS);
        let start = std::sync::Arc::new(std::sync::Barrier::new(GUESSES));
        let guesses: Vec<_> = (0..GUESSES)
            .map(|_| {
                let (pool, start, id, wrong) = (pool.clone(), start.clone(), id.clone(), wrong.clone());
                tokio::task::spawn_blocking(move || {
                    let mut c = conn(&pool);
                    start.wait();
                    mfa_service::verify(&mut c, &id, &wrong, now)
                })
            })
            .collect();
        let (mut wrong_code, mut locked) = (0, 0);
        for guess in guesses {
            match guess.await.expect("guess") {
                Err(MfaServiceError::InvalidCode) => wrong_code += 1,
                Err(MfaServiceError::Locked { until }) => {
                    assert_eq!(until, now + LOCKOUT_SECS, "one lockout, never extended");
                    locked += 1;
                }
                other => panic!("a wrong guess is refused: {other:?}"),
            }
        }
        // Exactly five guesses are checked: four are answered as wrong, the fifth starts the
        // lockout and is answered as locked, like the seven refused unchecked.
        assert_eq!((wrong_code, locked), (4, 8), "wrong-code and locked answers");
        let c = &mut *conn(&pool);
        let user = users::find(c, &id).expect("find").expect("user");
        assert_eq!(user.mfa_locked_until, Some(now + LOCKOUT_SECS), "locked afterwards");
        assert!(matches!(mfa_service::verify(c, &id, &code(&secret, now), now), Err(MfaServiceError::Locked { .. })));
        assert_eq!(actions(c, &id), ["user.mfa_enrolled", "user.mfa_locked"], "the lockout is audited once");
        let after = now + LOCKOUT_SECS;
        assert_eq!(mfa_service::verify(c, &id, &code(&secret, after), after).expect("unlocked").method, Method::Totp);
    }

    async fn mfa_recovery_codes_work_once(backend: Backend) {
        let (_db, pool) = migrated(backend);
        let c = &mut *conn(&pool);
        let (id, _, codes) = enrolled(c, "carol@example.com");
        let first = &codes[0];
        // Typed loosely: upper case, no dashes.
        let typed = first.replace('-', "").to_uppercase();
        let verified = mfa_service::verify(c, &id, &typed, NOW).expect("recovery code");
        assert_eq!(verified, mfa_service::Verified { method: Method::RecoveryCode, recovery_codes_left: 9 });
        assert!(matches!(mfa_service::verify(c, &id, first, NOW), Err(MfaServiceError::InvalidCode)), "used up");
        assert_eq!(users::find(c, &id).expect("find").expect("user").mfa_failed_attempts, 1);
        assert_eq!(mfa_service::verify(c, &id, &codes[1], NOW).expect("another").recovery_codes_left, 8);
        assert_eq!(users::find(c, &id).expect("find").expect("user").mfa_failed_attempts, 0, "success clears");

        let fresh = mfa_service::regenerate_recovery_codes(c, &id, "test", NOW).expect("regenerate");
        assert_eq!(mfa_service::recovery_codes_left(c, &id).expect("left"), 10);
        assert!(matches!(mfa_service::verify(c, &id, &codes[2], NOW), Err(MfaServiceError::InvalidCode)), "old codes stop working");
        assert_eq!(mfa_service::verify(c, &id, fresh[0].secret(), NOW).expect("new code").method, Method::RecoveryCode);
        assert_eq!(
            actions(c, &id),
            [
                "user.mfa_enrolled",
                "user.mfa_recovery_code_used",
                "user.mfa_recovery_code_used",
                "user.mfa_recovery_codes_regenerated",
                "user.mfa_recovery_code_used",
            ]
        );
    }

    async fn mfa_reset_removes_enrolment_and_codes(backend: Backend) {
        let (db, pool) = migrated(backend);
        let c = &mut *conn(&pool);
        let (id, secret, codes) = enrolled(c, "dave@example.com");
        assert!(mfa_service::reset(c, &id, "test", NOW).expect("reset"));
        let user = users::find(c, &id).expect("find").expect("user");
        assert!(!user.mfa_enabled);
        assert_eq!(user.mfa_enrolled_at, None);
        assert_eq!(stored_secret(c, &id), None);
        assert_eq!(mfa_service::recovery_codes_left(c, &id).expect("left"), 0);
        assert!(matches!(mfa_service::verify(c, &id, &codes[0], NOW), Err(MfaServiceError::NotEnrolled)));
        assert!(!mfa_service::reset(c, &id, "test", NOW).expect("nothing left"));
        let new = mfa_service::begin_enrolment(c, &id, "Truxe", NOW).expect("enrol again");
        assert_ne!(new.secret.secret(), &secret, "a new secret after a reset");
        assert!(matches!(mfa_service::reset(c, "usr_nobody", "test", NOW), Err(MfaServiceError::NotFound(_))));

        // truxectl users mfa-reset, by address.
        let (eve, _, _) = enrolled(c, "eve@example.com");
        let output = truxectl(
            db.dir.path(),
            &[],
            &["users", "mfa-reset", "EVE@example.com", "--yes", "--json", "--database-url", db.url.as_str()],
        );
        let reset = json(&output);
        assert_eq!(reset["mfa_reset"], true);
        assert_eq!(reset["user_id"], eve.as_str());
        assert!(!users::find(c, &eve).expect("find").expect("user").mfa_enabled);
        assert_eq!(mfa_service::recovery_codes_left(c, &eve).expect("left"), 0);
        assert_eq!(actions(c, &eve), ["user.mfa_enrolled", "user.mfa_reset"]);
    }
}
