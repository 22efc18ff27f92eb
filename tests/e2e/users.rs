//! Users on both backends: the service (create, normalise, duplicates, pagination, status,
//! delete, sign-in look-up), magic-link storage, and `truxectl users`.

use diesel::prelude::*;
use truxe_server::model::UserId;
use truxe_server::model::request::RequestMeta;
use truxe_server::model::user::UserStatus;
use truxe_server::service::sessions as sessions_service;
use truxe_server::service::sign_in::{self, Redeemed};
use truxe_server::service::users::{self as users, NewUser, SignIn, UserError};
use truxe_server::store::magic_links::{self, MagicLink};
use truxe_server::store::schema::{
    audit_events, magic_links as magic_links_table, oauth_authorization_codes as codes_table, sessions,
};
use truxe_server::store::{self, AnyConnection, PooledConnection, grants, housekeeping};

use crate::on_both_backends;
use crate::support::process::{text, truxectl};
use crate::support::{Backend, TestDb, config_from};

const NOW: i64 = 1_800_000_000;

/// A migrated database of the test's own and a connection to it.
pub fn migrated(backend: Backend) -> (TestDb, store::Pool) {
    let db = TestDb::new(backend);
    db.migrate();
    let config = config_from(&[("DATABASE_URL", &db.url)], &db.dir);
    let pool = store::connect(&config.database).expect("connect");
    (db, pool)
}

pub fn conn(pool: &store::Pool) -> PooledConnection {
    pool.get().expect("connection")
}

pub fn new_user(email: &str) -> NewUser {
    NewUser { email: email.to_string(), ..NewUser::default() }
}

fn audit_actions(conn: &mut AnyConnection, user_id: &str) -> Vec<String> {
    audit_events::table
        .filter(audit_events::user_id.eq(user_id))
        .order(audit_events::event_id)
        .select(audit_events::action)
        .load(conn)
        .expect("audit events")
}

on_both_backends! {
    async fn users_are_created_normalised_and_found(backend: Backend) {
        let (_db, pool) = migrated(backend);
        let c = &mut *conn(&pool);
        let new = NewUser {
            email: "  Alice.Smith@Example.COM ".to_string(),
            display_name: Some("  Alice Smith ".to_string()),
            email_verified: false,
        };
        let user = users::create(c, &new, "test", NOW).expect("created");
        assert!(user.user_id.starts_with("usr_"), "{}", user.user_id);
        assert_eq!(user.email, "alice.smith@example.com");
        assert_eq!(user.display_name.as_deref(), Some("Alice Smith"));
        assert_eq!(user.status, UserStatus::Active);
        assert!(!user.email_verified && !user.mfa_enabled);
        assert_eq!((user.created_at, user.updated_at), (NOW, NOW));

        assert_eq!(users::find(c, &user.user_id).expect("find"), Some(user.clone()));
        assert_eq!(users::find_by_email(c, "ALICE.SMITH@example.com").expect("find"), Some(user.clone()));
        assert_eq!(users::find_by_id_or_email(c, " alice.smith@EXAMPLE.com").expect("find"), Some(user.clone()));
        assert_eq!(users::find_by_id_or_email(c, &user.user_id).expect("find"), Some(user.clone()));
        assert_eq!(users::find(c, "usr_nobody").expect("find"), None);
        assert_eq!(users::find(c, "'; DROP TABLE users; --").expect("find"), None);
        assert!(matches!(users::get(c, "nobody@example.com"), Err(UserError::NotFound(_))));
        assert_eq!(audit_actions(c, &user.user_id), ["user.created"]);
    }

    async fn users_duplicates_and_bad_input_are_clear_errors(backend: Backend) {
        let (_db, pool) = migrated(backend);
        let c = &mut *conn(&pool);
        users::create(c, &new_user("bob@example.com"), "test", NOW).expect("created");
        match users::create(c, &new_user(" BOB@Example.com"), "test", NOW) {
            Err(UserError::EmailTaken(email)) => assert_eq!(email, "bob@example.com"),
            other => panic!("expected EmailTaken, got {other:?}"),
        }
        let error = users::create(c, &new_user("bob@example.com"), "test", NOW).expect_err("duplicate");
        assert!(error.to_string().contains("already exists"), "{error}");
        for bad in ["", "bob", "bob@localhost", "b ob@example.com", "bob@@example.com"] {
            assert!(matches!(users::create(c, &new_user(bad), "test", NOW), Err(UserError::InvalidEmail(_))), "{bad:?}");
        }
        let bad_name = NewUser { display_name: Some("a\u{7}b".to_string()), ..new_user("carol@example.com") };
        assert!(matches!(users::create(c, &bad_name, "test", NOW), Err(UserError::InvalidDisplayName(_))));
        assert_eq!(users::list(c, None, 100).expect("list").len(), 1, "nothing half-created");
        // The connection is still usable after the refused inserts (no aborted transaction).
        users::create(c, &new_user("dave@example.com"), "test", NOW).expect("created");
    }

    async fn users_list_pages_by_id(backend: Backend) {
        let (_db, pool) = migrated(backend);
        let c = &mut *conn(&pool);
        let mut ids: Vec<UserId> = (0..7)
            .map(|i| users::create(c, &new_user(&format!("user{i}@example.com")), "test", NOW).expect("created").user_id)
            .collect();
        ids.sort();
        let mut seen = Vec::new();
        let mut after: Option<UserId> = None;
        let mut pages = 0;
        loop {
            let page = users::list(c, after.as_deref(), 3).expect("page");
            pages += 1;
            seen.extend(page.iter().map(|u| u.user_id.clone()));
            if page.len() < 3 {
                break;
            }
            after = page.last().map(|u| u.user_id.clone());
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, ids, "every user once, in id order");
        assert_eq!(users::list(c, None, 0).expect("clamped").len(), 1);
        assert_eq!(users::list(c, ids.last().map(UserId::as_str), 10).expect("empty"), []);
    }

    async fn users_can_be_disabled_enabled_and_deleted(backend: Backend) {
        let (_db, pool) = migrated(backend);
        let c = &mut *conn(&pool);
        let user = users::create(c, &new_user("erin@example.com"), "test", NOW).expect("created");

        let disabled = users::set_status(c, &user.user_id, UserStatus::Disabled, "test", NOW + 1).expect("disable");
        assert_eq!((disabled.status, disabled.updated_at), (UserStatus::Disabled, NOW + 1));
        assert_eq!(users::find(c, &user.user_id).expect("find").expect("user").status, UserStatus::Disabled);
        let again = users::set_status(c, &user.user_id, UserStatus::Disabled, "test", NOW + 2).expect("no-op");
        assert_eq!(again.updated_at, NOW + 1, "setting the same status changes nothing");
        let enabled = users::set_status(c, &user.user_id, UserStatus::Active, "test", NOW + 3).expect("enable");
        assert!(enabled.is_active());
        assert!(matches!(
            users::set_status(c, "usr_nobody", UserStatus::Disabled, "test", NOW),
            Err(UserError::NotFound(_))
        ));

        // Sessions (and everything else hanging off the user) go with it.
        diesel::insert_into(sessions::table)
            .values((
                sessions::session_hash.eq("h1"),
                sessions::user_id.eq(&user.user_id),
                sessions::auth_time.eq(NOW),
                sessions::amr.eq("email"),
                sessions::created_at.eq(NOW),
                sessions::last_seen_at.eq(NOW),
                sessions::expires_at.eq(NOW + 3600),
            ))
            .execute(c)
            .expect("session");
        magic_links::insert(c, &link("hash-erin", "erin@example.com", Some(&user.user_id), NOW + 900)).expect("link");
        let deleted = users::delete(c, &user.user_id, "test", NOW + 4).expect("delete");
        assert_eq!(deleted.user_id, user.user_id);
        assert_eq!(users::find(c, &user.user_id).expect("find"), None);
        let left: i64 = sessions::table.count().get_result(c).expect("count");
        assert_eq!(left, 0);
        assert_eq!(magic_links::find(c, "hash-erin").expect("find"), None);
        assert!(matches!(users::delete(c, &user.user_id, "test", NOW), Err(UserError::NotFound(_))));
        assert_eq!(
            audit_actions(c, &user.user_id),
            ["user.created", "user.disabled", "user.enabled", "user.deleted"]
        );
    }

    async fn users_sign_in_lookup_and_open_signup(backend: Backend) {
        let (_db, pool) = migrated(backend);
        let c = &mut *conn(&pool);
        assert_eq!(users::find_or_create_for_sign_in(c, "New@Example.com", false, NOW).expect("lookup"), SignIn::NoAccount);
        assert_eq!(users::list(c, None, 10).expect("list"), []);

        let created = match users::find_or_create_for_sign_in(c, "New@Example.com", true, NOW).expect("signup") {
            SignIn::Created(user) => user,
            other => panic!("expected Created, got {other:?}"),
        };
        assert_eq!(created.email, "new@example.com");
        assert!(created.email_verified, "the redeemed link proved the address");
        assert_eq!(
            users::find_or_create_for_sign_in(c, "new@example.com", true, NOW).expect("again"),
            SignIn::Existing(created.clone())
        );

        let unverified = users::create(c, &new_user("frank@example.com"), "test", NOW).expect("created");
        let signed_in = users::find_or_create_for_sign_in(c, "frank@example.com", false, NOW + 5).expect("lookup");
        let user = signed_in.user().expect("active").clone();
        assert_eq!(user.user_id, unverified.user_id);
        assert!(user.email_verified);
        assert!(users::find(c, &user.user_id).expect("find").expect("user").email_verified);
        assert_eq!(audit_actions(c, &user.user_id), ["user.created", "user.email_verified"]);

        users::set_status(c, &user.user_id, UserStatus::Disabled, "test", NOW).expect("disable");
        let disabled = users::find_or_create_for_sign_in(c, "frank@example.com", true, NOW).expect("lookup");
        assert!(matches!(disabled, SignIn::Disabled(_)));
        assert_eq!(disabled.user(), None);
        assert!(matches!(users::find_or_create_for_sign_in(c, "nope", true, NOW), Err(UserError::InvalidEmail(_))));
    }

    async fn users_magic_links_are_single_use(backend: Backend) {
        let (_db, pool) = migrated(backend);
        let c = &mut *conn(&pool);
        magic_links::insert(c, &link("live", "gina@example.com", None, NOW + 900)).expect("insert");
        magic_links::insert(c, &link("stale", "gina@example.com", None, NOW - 1)).expect("insert");
        assert_eq!(magic_links::count_sent_since(c, "gina@example.com", NOW - 60).expect("count"), 2);
        assert_eq!(magic_links::count_sent_since(c, "other@example.com", NOW - 60).expect("count"), 0);

        let found = magic_links::find(c, "live").expect("find").expect("link");
        assert!(found.is_usable(NOW));
        assert_eq!(found.return_to.as_deref(), Some("/oauth-provider/authorize?x=1"));
        assert_eq!(magic_links::consume(c, "stale", NOW).expect("consume"), None, "expired");
        assert_eq!(magic_links::consume(c, "unknown", NOW).expect("consume"), None);

        // Concurrent redemptions of one link, each going on as `/login/magic` does (a session
        // for whoever won): started together, exactly one wins and one session exists.
        const KEY: &[u8] = b"magic-link key of this test";
        let gina = users::create(c, &new_user("gina@example.com"), "test", NOW).expect("user");
        let token = sign_in::new_token();
        let hash = sign_in::hash_token(KEY, token.secret());
        magic_links::insert(c, &link(&hash, "gina@example.com", Some(&gina.user_id), NOW + 900)).expect("insert");
        let start = std::sync::Barrier::new(4);
        let outcomes: Vec<&'static str> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let (pool, start, token) = (pool.clone(), &start, token.secret().clone());
                    scope.spawn(move || {
                        let mut c = pool.get().expect("connection");
                        start.wait();
                        match sign_in::redeem_link(&mut c, KEY, &token, false, NOW).expect("redeem") {
                            Redeemed::SignIn { user, .. } => {
                                let meta = RequestMeta::default();
                                sessions_service::start(&mut c, &user, &["email"], false, 3600, &meta, NOW)
                                    .expect("session");
                                "signed in"
                            }
                            Redeemed::InvalidLink => "invalid link",
                            other => panic!("{other:?}"),
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        let mut sorted = outcomes.clone();
        sorted.sort();
        assert_eq!(sorted, ["invalid link", "invalid link", "invalid link", "signed in"]);
        let used = magic_links::find(c, &hash).expect("find").expect("link");
        assert_eq!(used.consumed_at, Some(NOW), "consumed once, by the winner");
        assert!(!used.is_usable(NOW));
        let gina_sessions: i64 =
            sessions::table.filter(sessions::user_id.eq(&gina.user_id)).count().get_result(c).expect("count");
        assert_eq!(gina_sessions, 1, "exactly one session");
        let signed_in: Vec<String> = audit_actions(c, &gina.user_id);
        assert_eq!(signed_in, ["user.created", "user.email_verified", "user.signed_in"]);

        assert_eq!(magic_links::delete_expired(c, NOW).expect("cleanup"), 1);
        assert!(magic_links::find(c, "stale").expect("find").is_none());
    }

    async fn users_hourly_purge_removes_only_what_nothing_can_use(backend: Backend) {
        // A server for a registered client (codes belong to one); the purge runs on its database.
        let server = crate::support::TestServer::start(backend).await;
        let client = server
            .register_client(serde_json::json!({
                "client_name": "Purge Test",
                "redirect_uris": ["https://app.example.com/cb"],
                "allowed_scopes": ["openid"],
            }))
            .await;
        let client_id = client["client_id"].as_str().expect("client_id").to_string();
        let c = &mut *server.state.pool.get().expect("connection");
        let user = users::create(c, &new_user("hugo@example.com"), "test", NOW).expect("user").user_id;
        const DAY: i64 = 86_400;

        // Magic links: kept until a day after they expired.
        let links =
            [("link-expired-2d", NOW - 2 * DAY), ("link-expired-23h", NOW - DAY + 3600), ("link-live", NOW + 600)];
        for (hash, expires_at) in links {
            magic_links::insert(c, &link(hash, "hugo@example.com", Some(&user), expires_at)).expect("link");
        }
        // Sessions: kept until 30 days after they expired or were revoked (for `--all`).
        for (hash, expires_at, revoked_at) in [
            ("session-expired-31d", NOW - 31 * DAY, None),
            ("session-revoked-31d", NOW + DAY, Some(NOW - 31 * DAY)),
            ("session-expired-29d", NOW - 29 * DAY, None),
            ("session-revoked-29d", NOW + DAY, Some(NOW - 29 * DAY)),
            ("session-live", NOW + DAY, None),
        ] {
            diesel::insert_into(sessions::table)
                .values((
                    sessions::session_hash.eq(hash),
                    sessions::user_id.eq(&user),
                    sessions::auth_time.eq(NOW - 40 * DAY),
                    sessions::amr.eq("email"),
                    sessions::created_at.eq(NOW - 40 * DAY),
                    sessions::last_seen_at.eq(NOW - 40 * DAY),
                    sessions::expires_at.eq(expires_at),
                    sessions::revoked_at.eq(revoked_at),
                ))
                .execute(c)
                .expect("session");
        }
        // Authorization codes: kept until a day after they expired (a late replay is "used").
        let codes = [("code-expired-2d", NOW - 2 * DAY), ("code-expired-1h", NOW - 3600), ("code-live", NOW + 60)];
        for (hash, expires_at) in codes {
            grants::insert_code(
                c,
                &grants::AuthorizationCode {
                    code_hash: hash.to_string(),
                    client_id: client_id.as_str().into(),
                    user_id: user.clone(),
                    redirect_uri: "https://app.example.com/cb".to_string(),
                    scope: "openid".to_string(),
                    code_challenge: None,
                    code_challenge_method: None,
                    nonce: None,
                    auth_time: NOW - 3 * DAY,
                    amr: "email".to_string(),
                    created_at: expires_at - 600,
                    expires_at,
                    consumed_at: None,
                    grant_id: None,
                    redirect_uri_given: true,
                },
            )
            .expect("code");
        }

        let retention = housekeeping::Retention { refresh_family_ttl: 30 * DAY, access_token_ttl: 900 };
        let purged = housekeeping::purge(c, NOW, &retention).expect("purge");
        let expected = housekeeping::Purged { magic_links: 1, sessions: 2, authorization_codes: 1, ..Default::default() };
        assert_eq!(purged, expected);
        let links: Vec<String> = magic_links_table::table
            .select(magic_links_table::token_hash)
            .order(magic_links_table::token_hash)
            .load(c)
            .expect("links");
        assert_eq!(links, ["link-expired-23h", "link-live"]);
        let left: Vec<String> =
            sessions::table.select(sessions::session_hash).order(sessions::session_hash).load(c).expect("sessions");
        assert_eq!(left, ["session-expired-29d", "session-live", "session-revoked-29d"]);
        let codes: Vec<String> =
            codes_table::table.select(codes_table::code_hash).order(codes_table::code_hash).load(c).expect("codes");
        assert_eq!(codes, ["code-expired-1h", "code-live"]);
        // Nothing more a minute later; an hour later the 23-hour-old link is a day past expiry.
        assert!(housekeeping::purge(c, NOW + 60, &retention).expect("purge").is_empty());
        assert_eq!(
            housekeeping::purge(c, NOW + 3600, &retention).expect("purge"),
            housekeeping::Purged { magic_links: 1, ..Default::default() }
        );
    }

    async fn users_the_magic_link_limit_holds_for_parallel_requests(backend: Backend) {
        // Twenty requests for one address from twenty connections, released together: exactly
        // the limit's worth store a link, the rest are told they are over it.
        const REQUESTS: usize = 20;
        let db = TestDb::new(backend);
        db.migrate();
        let config = config_from(&[("DATABASE_URL", &db.url), ("DATABASE_POOL_MAX", "24")], &db.dir);
        let pool = store::connect(&config.database).expect("connect");
        users::create(&mut conn(&pool), &new_user("ivy@example.com"), "test", NOW).expect("user");
        let limit = truxe_server::config::MagicLinkLimit { max: 5, window: std::time::Duration::from_secs(900) };
        let email = truxe_server::model::user::Email::parse("ivy@example.com").expect("address");
        let start = std::sync::Barrier::new(REQUESTS);
        let outcomes: Vec<bool> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..REQUESTS)
                .map(|_| {
                    let (pool, start, email) = (pool.clone(), &start, email.clone());
                    scope.spawn(move || {
                        let mut c = pool.get().expect("connection");
                        let params = sign_in::LinkParams {
                            open_signup: false,
                            ttl_secs: 900,
                            return_to: None,
                            ip: None,
                            limit: Some(limit),
                        };
                        start.wait();
                        match sign_in::request_link(&mut c, b"key", &email, &params, NOW).expect("request") {
                            sign_in::LinkRequest::Send { .. } => true,
                            sign_in::LinkRequest::RateLimited => false,
                            other => panic!("{other:?}"),
                        }
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).collect()
        });
        assert_eq!(outcomes.iter().filter(|sent| **sent).count(), 5, "links to send");
        assert_eq!(magic_links::count_sent_since(&mut conn(&pool), "ivy@example.com", NOW - 900).expect("count"), 5);
        // The window moves on: a quarter of an hour later there is room again.
        let later = NOW + 901;
        let params =
            sign_in::LinkParams { open_signup: false, ttl_secs: 900, return_to: None, ip: None, limit: Some(limit) };
        let again = sign_in::request_link(&mut conn(&pool), b"key", &email, &params, later).expect("request");
        assert!(matches!(again, sign_in::LinkRequest::Send { .. }), "{again:?}");
    }

    async fn users_cli(backend: Backend) {
        let db = TestDb::new(backend);
        db.migrate();
        let cwd = db.dir.path();
        let run = |args: &[&str]| {
            let mut all = args.to_vec();
            all.extend_from_slice(&["--database-url", db.url.as_str()]);
            truxectl(cwd, &[], &all)
        };

        let created = json(&run(&["users", "create", "--email", " Bob@Example.COM ", "--name", "Bob", "--verified", "--json"]));
        assert_eq!(created["email"], "bob@example.com");
        assert_eq!(created["display_name"], "Bob");
        assert_eq!(created["email_verified"], true);
        assert_eq!(created["status"], "active");
        let bob = created["user_id"].as_str().expect("id").to_string();
        assert!(bob.starts_with("usr_"));

        let duplicate = run(&["users", "create", "--email", "bob@example.com"]);
        assert!(!duplicate.status.success());
        assert!(text(&duplicate).contains("already exists"), "{}", text(&duplicate));
        let bad = run(&["users", "create", "--email", "not-an-email"]);
        assert!(!bad.status.success());
        assert!(text(&bad).contains("invalid email address"), "{}", text(&bad));
        assert!(text(&bad).contains("not-an-email"), "names the input: {}", text(&bad));

        let plain = run(&["users", "create", "--email", "carol@example.com"]);
        assert!(plain.status.success(), "{}", text(&plain));
        assert!(text(&plain).contains("created usr_"), "{}", text(&plain));

        let list = json(&run(&["users", "list", "--json"]));
        assert_eq!(list["users"].as_array().expect("users").len(), 2);
        assert!(list["next_after"].is_null());
        let page = json(&run(&["users", "list", "--limit", "1", "--json"]));
        let next = page["next_after"].as_str().expect("more").to_string();
        let rest = json(&run(&["users", "list", "--after", &next, "--json"]));
        assert_eq!(rest["users"].as_array().expect("users").len(), 1);
        assert_ne!(rest["users"][0]["user_id"], page["users"][0]["user_id"]);
        let table = run(&["users", "list"]);
        assert!(text(&table).contains("EMAIL") && text(&table).contains("bob@example.com"), "{}", text(&table));

        let shown = json(&run(&["users", "show", "BOB@example.com", "--json"]));
        assert_eq!(shown["user_id"], bob.as_str());
        assert_eq!(shown["mfa_enabled"], false);
        assert_eq!(shown["recovery_codes_left"], 0);
        assert!(text(&run(&["users", "show", &bob])).contains("bob@example.com"));
        let missing = run(&["users", "show", "nobody@example.com"]);
        assert!(!missing.status.success());
        assert!(text(&missing).contains("no user nobody@example.com"), "{}", text(&missing));

        assert_eq!(json(&run(&["users", "disable", &bob, "--json"]))["status"], "disabled");
        assert!(text(&run(&["users", "disable", &bob])).contains("already disabled"));
        assert_eq!(json(&run(&["users", "enable", "bob@example.com", "--json"]))["status"], "active");
        let disabled = text(&run(&["users", "disable", "bob@example.com"]));
        assert!(disabled.contains(&format!("disabled {bob} bob@example.com")), "{disabled}");
        assert!(disabled.contains("ended 0 session(s); revoked 0 grant(s)"), "says what it ended: {disabled}");
        assert_eq!(json(&run(&["users", "enable", &bob, "--json"]))["status"], "active");

        // Dangerous commands need a terminal or --yes.
        let refused = run(&["users", "mfa-reset", &bob]);
        assert!(!refused.status.success());
        assert!(text(&refused).contains("--yes"), "{}", text(&refused));
        assert_eq!(json(&run(&["users", "mfa-reset", &bob, "--yes", "--json"]))["mfa_reset"], false);

        let refused = run(&["users", "delete", "bob@example.com"]);
        assert!(!refused.status.success());
        assert!(text(&refused).contains("--yes"), "{}", text(&refused));
        assert!(json(&run(&["users", "show", &bob, "--json"]))["user_id"].is_string(), "still there");
        let deleted = json(&run(&["users", "delete", "bob@example.com", "--yes", "--json"]));
        assert_eq!(deleted["deleted"], bob.as_str());
        assert!(!run(&["users", "show", &bob]).status.success());
        let again = run(&["users", "delete", &bob, "--yes"]);
        assert!(!again.status.success());
        assert!(text(&again).contains("no user"), "{}", text(&again));
    }
}

pub fn link(token_hash: &str, email: &str, user_id: Option<&str>, expires_at: i64) -> MagicLink {
    MagicLink {
        token_hash: token_hash.to_string(),
        email: email.to_string(),
        user_id: user_id.map(UserId::from),
        created_at: NOW,
        expires_at,
        consumed_at: None,
        return_to: Some("/oauth-provider/authorize?x=1".to_string()),
        ip: Some("127.0.0.1".to_string()),
    }
}

pub fn json(output: &std::process::Output) -> serde_json::Value {
    assert!(output.status.success(), "truxectl failed:\n{}", text(output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(output)))
}
