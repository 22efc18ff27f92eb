//! End-user sign-in over HTTP on both backends: the `/login` page, magic links caught by a real
//! SMTP listener, the signed session cookie, CSRF on every form, TOTP pages and `/logout`.

use std::time::Duration;

use diesel::prelude::*;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use truxe_server::mail::MailJobs;
use truxe_server::mfa;
use truxe_server::service::sign_in::{self, MAGIC_LINK_KEY};
use truxe_server::service::users as user_service;
use truxe_server::store::magic_links::{self, MagicLink};
use truxe_server::store::schema::{magic_links as links_table, sessions as sessions_table, users as users_table};
use truxe_server::store::{self, server_secrets, unix_now};

use crate::on_both_backends;
use crate::support::process::truxectl;
use crate::support::smtp::{RawMessage, SmtpSink};
use crate::support::{Backend, TestServer, config_from};
use crate::users::{json, new_user};

const WAIT: Duration = Duration::from_secs(10);

/// A server with SMTP pointed at `sink`, MFA on, plus `extra`.
async fn start(backend: Backend, sink: &SmtpSink, extra: &[(&str, &str)]) -> TestServer {
    let port = sink.port().to_string();
    let mut vars = vec![
        ("SMTP_HOST", "127.0.0.1"),
        ("SMTP_PORT", port.as_str()),
        ("SMTP_SECURE", "false"),
        ("EMAIL_FROM", "noreply@truxe.test"),
        ("MFA_ENABLED", "true"),
        ("MFA_ISSUER", "Truxe Test"),
    ];
    vars.extend_from_slice(extra);
    TestServer::start_with(backend, &vars).await
}

/// The magic-link limit on (the test configuration turns rate limiting off), with request
/// limits far above what these tests send.
const MAGIC_LINK_LIMIT_ON: [(&str, &str); 3] =
    [("RATE_LIMIT_ENABLED", "true"), ("RATE_LIMIT_MAX", "100000"), ("OAUTH_RATE_LIMIT_MAX", "100000")];

fn pool(server: &TestServer) -> store::Pool {
    let config = config_from(&[("DATABASE_URL", &server.db.url)], &server.db.dir);
    store::connect(&config.database).expect("connect to the server's database")
}

/// (address, number of links) of every `magic_links` row, by address.
fn link_rows(pool: &store::Pool) -> Vec<(String, i64)> {
    let mut c = pool.get().expect("connection");
    links_table::table
        .group_by(links_table::email)
        .select((links_table::email, diesel::dsl::count_star()))
        .order(links_table::email)
        .load(&mut c)
        .expect("magic links")
}

fn create_user(pool: &store::Pool, email: &str) -> String {
    let mut c = pool.get().expect("connection");
    user_service::create(&mut c, &new_user(email), "test", unix_now()).expect("user").user_id.into()
}

/// A browser: keeps cookies, does not follow redirects.
struct Browser {
    client: reqwest::Client,
    base: String,
}

struct Page {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers.get(LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default()
    }

    fn csrf(&self) -> String {
        hidden(&self.body, "csrf_token").unwrap_or_else(|| panic!("no csrf_token on the page:\n{}", self.body))
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers.get_all(SET_COOKIE).iter().filter_map(|v| v.to_str().ok()).map(str::to_string).collect()
    }
}

/// The value of `<input type="hidden" name="NAME" value="…">`.
fn hidden(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')?;
    Some(html[start..start + end].to_string())
}

impl Browser {
    fn new(server: &TestServer) -> Browser {
        Browser { client: Self::jar_client(), base: server.base_url.clone() }
    }

    /// Keeps cookies, does not follow redirects.
    fn jar_client() -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    async fn page(response: reqwest::Response) -> Page {
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await.expect("body");
        assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "a 500:\n{body}");
        Page { status, headers, body }
    }

    async fn get(&self, path: &str) -> Page {
        Self::page(self.client.get(format!("{}{path}", self.base)).send().await.expect("GET")).await
    }

    async fn post(&self, path: &str, form: &[(&str, &str)]) -> Page {
        Self::page(self.client.post(format!("{}{path}", self.base)).form(form).send().await.expect("POST")).await
    }

    async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Page {
        let request = self.client.post(format!("{}{path}", self.base)).header("Content-Type", content_type).body(body);
        Self::page(request.send().await.expect("POST")).await
    }

    /// Who `/` says is signed in, if anyone.
    async fn signed_in_as(&self) -> Option<String> {
        let page = self.get("/").await;
        if page.status != StatusCode::OK {
            assert_eq!(page.status, StatusCode::SEE_OTHER);
            return None;
        }
        let start = page.body.find("signed in as <strong>")? + "signed in as <strong>".len();
        let end = page.body[start..].find('<')?;
        Some(page.body[start..start + end].to_string())
    }

    /// GET /login, then POST the address with the page's CSRF token.
    async fn ask_for_link(&self, email: &str, return_to: Option<&str>) -> Page {
        let form = self.get("/login").await;
        assert_eq!(form.status, StatusCode::OK, "{}", form.body);
        let csrf = form.csrf();
        let mut fields = vec![("csrf_token", csrf.as_str()), ("email", email)];
        if let Some(path) = return_to {
            fields.push(("return_to", path));
        }
        let page = self.post("/login", &fields).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body.contains("Check your email"), "{}", page.body);
        page
    }

    /// Opens the link's "Continue" page and posts it; returns the answer to the post.
    async fn follow_link(&self, token: &str) -> Page {
        let page = self.get(&format!("/login/magic?token={token}")).await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.body);
        assert!(page.body.contains("Continue"), "{}", page.body);
        let csrf = page.csrf();
        self.post("/login/magic", &[("csrf_token", &csrf), ("token", token)]).await
    }

    /// The whole magic-link sign-in; returns the answer to the link's post.
    async fn sign_in(&self, sink: &SmtpSink, email: &str) -> Page {
        self.ask_for_link(email, None).await;
        let token = token_of(&sink.wait_for_message(WAIT).await);
        self.follow_link(&token).await
    }

    async fn sign_out(&self) {
        let page = self.get("/logout").await;
        let csrf = page.csrf();
        let done = self.post("/logout", &[("csrf_token", &csrf)]).await;
        assert_eq!(done.status, StatusCode::OK);
        assert!(done.body.contains("Signed out"), "{}", done.body);
    }
}

/// The token of the sign-in link in a mail.
fn token_of(message: &RawMessage) -> String {
    let link = message.url_in_text("http://127.0.0.1:3001/login/magic?token=").expect("a sign-in link in the mail");
    link.split_once("token=").map(|(_, t)| t.to_string()).expect("token")
}

fn cookie_value(page: &Page, name: &str) -> Option<String> {
    page.set_cookies().iter().find_map(|c| {
        let first = c.split(';').next()?;
        let (n, v) = first.split_once('=')?;
        (n.trim() == name).then(|| v.trim().to_string())
    })
}

/// A client without a cookie jar that sends exactly `cookie`.
async fn signed_in_with_cookie(server: &TestServer, cookie: &str) -> bool {
    let response = server.client.get(server.url("/")).header("Cookie", cookie).send().await.expect("GET /").status();
    assert_ne!(response, StatusCode::INTERNAL_SERVER_ERROR);
    response == StatusCode::OK
}

/// The TOTP code of the current step, computed when it is sent.
fn current_code(secret: &[u8]) -> String {
    mfa::code_at(secret, unix_now()).expect("code")
}

/// Six digits that are no code of the steps around now (which the server may accept).
fn wrong_code(secret: &[u8]) -> String {
    let now = unix_now();
    let near: Vec<String> = (-3..=3).map(|k| mfa::code_at(secret, now + k * mfa::STEP_SECS).expect("code")).collect();
    (0..10u32).map(|d| d.to_string().repeat(6)).find(|c| !near.contains(c)).expect("a wrong code")
}

fn base32_decode(text: &str) -> Vec<u8> {
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let (mut buffer, mut bits, mut out) = (0u64, 0u32, Vec::new());
    for c in text.bytes().filter(|c| *c != b'=') {
        let value = alphabet.iter().position(|a| *a == c).expect("base32") as u64;
        buffer = (buffer << 5) | value;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((buffer >> bits) as u8);
        }
    }
    out
}

on_both_backends! {
    async fn magic_link_sign_in_session_and_logout(backend: Backend) {
        let sink = SmtpSink::start().await;
        let server = start(backend, &sink, &[]).await;
        let pool = pool(&server);
        let user_id = create_user(&pool, "alice@example.com");
        let browser = Browser::new(&server);

        // The sign-in page: the contract's field and button, and the security headers.
        let login = browser.get("/login?return_to=%2Fsomewhere%3Fx%3D1").await;
        assert_eq!(login.status, StatusCode::OK);
        assert!(login.body.contains("<label for=\"email\">Email</label>"), "{}", login.body);
        assert!(login.body.contains("type=\"email\" id=\"email\" name=\"email\""), "{}", login.body);
        assert!(login.body.contains("Send sign-in link"));
        assert_eq!(hidden(&login.body, "return_to").as_deref(), Some("/somewhere?x=1"));
        let header = |name: &str| login.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        assert_eq!(header("cache-control"), "no-store");
        assert_eq!(header("x-frame-options"), "DENY");
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert_eq!(header("referrer-policy"), "no-referrer");
        let csp = header("content-security-policy");
        assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("form-action"), "form-action would block redirects to clients after a post: {csp}");
        assert!(!csp.contains("script-src"), "{csp}");
        let csrf_cookie = login.set_cookies().into_iter().find(|c| c.starts_with("truxe_csrf=")).expect("csrf cookie");
        assert!(csrf_cookie.contains("HttpOnly") && csrf_cookie.contains("SameSite=Strict"), "{csrf_cookie}");

        // Ask for a link (any spelling of the address), with a place to come back to.
        browser.ask_for_link("  Alice@Example.COM ", Some("/somewhere?x=1")).await;
        let message = sink.wait_for_message(WAIT).await;
        assert_eq!(message.rcpt_to, ["alice@example.com"]);
        let token = token_of(&message);
        assert_eq!(token.len(), 43);

        // Opening the link (twice, as a mail scanner and then the person) does not use it up.
        for _ in 0..2 {
            let page = browser.get(&format!("/login/magic?token={token}")).await;
            assert_eq!(page.status, StatusCode::OK, "{}", page.body);
            assert!(page.body.contains(">Continue</button>"), "{}", page.body);
            // It says whose account it opens, so a forwarded or planted link is noticed.
            assert!(page.body.contains("Continue as <strong>alice@example.com</strong>"), "{}", page.body);
            assert_eq!(hidden(&page.body, "token").as_deref(), Some(token.as_str()));
        }
        assert_eq!(browser.signed_in_as().await, None);

        let done = browser.follow_link(&token).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_eq!(done.location(), "/somewhere?x=1");
        let set_cookie = done.set_cookies().into_iter().find(|c| c.starts_with("truxe_session=")).expect("cookie");
        for attribute in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=86400"] {
            assert!(set_cookie.contains(attribute), "{attribute} missing: {set_cookie}");
        }
        assert!(!set_cookie.contains("Secure"), "SESSION_SECURE is off in development: {set_cookie}");
        let session_cookie = cookie_value(&done, "truxe_session").expect("session cookie");
        assert_eq!(browser.signed_in_as().await.as_deref(), Some("alice@example.com"));
        // Signed in: /login goes straight on (unless prompt=login asks for the form).
        assert_eq!(browser.get("/login?return_to=%2Fnext").await.location(), "/next");
        assert_eq!(browser.get("/login?prompt=login").await.status, StatusCode::OK);

        // The session is server-side: one live row with amr "email"; the address is verified.
        {
            let mut c = pool.get().expect("connection");
            let rows: Vec<(String, bool, Option<i64>)> = sessions_table::table
                .filter(sessions_table::user_id.eq(&user_id))
                .select((sessions_table::amr, sessions_table::mfa_pending, sessions_table::revoked_at))
                .load(&mut c)
                .expect("sessions");
            assert_eq!(rows, [("email".to_string(), false, None)]);
            let verified: bool = users_table::table
                .filter(users_table::user_id.eq(&user_id))
                .select(users_table::email_verified)
                .first(&mut c)
                .expect("user");
            assert!(verified);
        }

        // A used link stays used, also from another browser.
        let other = Browser::new(&server);
        let page = other.get(&format!("/login/magic?token={token}")).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        assert!(page.body.contains("cannot be used") && page.body.contains("href=\"/login\""), "{}", page.body);
        assert!(!page.body.contains("alice@example.com"), "a dead link names no account: {}", page.body);
        let csrf = other.get("/login").await.csrf();
        let page = other.post("/login/magic", &[("csrf_token", &csrf), ("token", &token)]).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        assert_eq!(other.signed_in_as().await, None);

        // truxectl lists the session and can sign the user out everywhere.
        let env = [("DATABASE_URL", server.db.url.as_str())];
        let listed = json(&truxectl(server.db.dir.path(), &env, &["--json", "users", "sessions", "alice@example.com"]));
        let sessions = listed["sessions"].as_array().expect("sessions");
        assert_eq!(sessions.len(), 1, "{listed}");
        assert_eq!(sessions[0]["state"], "live");
        assert_eq!(sessions[0]["amr"], serde_json::json!(["email"]));
        assert!(!listed.to_string().contains(&session_cookie), "the cookie's id never leaves the server");

        // Signing out ends the session server-side: the old cookie is worthless afterwards.
        let cookie = format!("truxe_session={session_cookie}");
        assert!(signed_in_with_cookie(&server, &cookie).await);
        let logout = browser.get("/logout").await;
        assert!(logout.body.contains("alice@example.com") && logout.body.contains(">Sign out</button>"));
        let csrf = logout.csrf();
        let done = browser.post("/logout", &[("csrf_token", &csrf)]).await;
        assert_eq!(done.status, StatusCode::OK);
        assert!(done.body.contains("Signed out"));
        let removal = done.set_cookies().into_iter().find(|c| c.starts_with("truxe_session=")).expect("removal");
        assert!(removal.contains("Max-Age=0"), "{removal}");
        assert_eq!(browser.signed_in_as().await, None);
        assert!(!signed_in_with_cookie(&server, &cookie).await, "a signed-out session stays signed out");

        // Sign in again, then revoke everything from the CLI.
        assert_eq!(browser.sign_in(&sink, "alice@example.com").await.location(), "/");
        assert_eq!(browser.signed_in_as().await.as_deref(), Some("alice@example.com"));
        let revoked =
            json(&truxectl(server.db.dir.path(), &env, &["--json", "users", "sessions", &user_id, "--revoke-all"]));
        assert_eq!(revoked["revoked"], 1, "{revoked}");
        assert_eq!(browser.signed_in_as().await, None);
        let all = json(&truxectl(server.db.dir.path(), &env, &["--json", "users", "sessions", &user_id, "--all"]));
        assert_eq!(all["sessions"].as_array().map(Vec::len), Some(2), "{all}");
        let live = json(&truxectl(server.db.dir.path(), &env, &["--json", "users", "sessions", &user_id]));
        assert_eq!(live["sessions"].as_array().map(Vec::len), Some(0), "{live}");
    }

    async fn magic_links_do_not_reveal_accounts_and_are_rate_limited(backend: Backend) {
        let sink = SmtpSink::start().await;
        let server = start(backend, &sink, &MAGIC_LINK_LIMIT_ON).await;
        let pool = pool(&server);
        create_user(&pool, "bob@example.com");
        let disabled = create_user(&pool, "carol@example.com");
        {
            let mut c = pool.get().expect("connection");
            user_service::set_status(&mut c, &disabled, truxe_server::model::user::UserStatus::Disabled, "test", unix_now())
                .expect("disable");
        }
        let browser = Browser::new(&server);

        // Unknown and disabled addresses get the same page as a real one, and no mail.
        let unknown = browser.ask_for_link("nobody@example.com", None).await;
        let disabled_page = browser.ask_for_link("carol@example.com", None).await;
        let known = browser.ask_for_link("bob@example.com", None).await;
        let normalise = |page: &Page, email: &str| page.body.replace(email, "EMAIL");
        assert_eq!(normalise(&unknown, "nobody@example.com"), normalise(&known, "bob@example.com"));
        assert_eq!(normalise(&disabled_page, "carol@example.com"), normalise(&known, "bob@example.com"));
        // Every request was dealt with (looked up, and mailed or not) once the mailer is idle.
        server.state.mailer.flush().await;
        assert_eq!(server.state.mailer.jobs(), MailJobs { in_flight: 0, finished: 3 });
        let message = sink.wait_for_message(WAIT).await;
        assert_eq!(message.rcpt_to, ["bob@example.com"]);
        assert_eq!(sink.messages().len(), 1, "no mail to unknown or disabled addresses");
        assert_eq!(link_rows(&pool), [("bob@example.com".to_string(), 1)], "no link for them either");

        // Five links per address per 15 minutes; the sixth request looks the same but sends nothing.
        for _ in 0..4 {
            browser.ask_for_link("bob@example.com", None).await;
            sink.wait_for_message(WAIT).await;
        }
        let limited = browser.ask_for_link("bob@example.com", None).await;
        assert_eq!(limited.body, known.body);
        server.state.mailer.flush().await;
        assert_eq!(server.state.mailer.jobs().finished, 8);
        assert_eq!(sink.messages().len(), 5, "the sixth link in 15 minutes is not sent");
        assert_eq!(link_rows(&pool), [("bob@example.com".to_string(), 5)], "nor stored");
        // Another address is not affected.
        create_user(&pool, "dave@example.com");
        browser.ask_for_link("dave@example.com", None).await;
        assert_eq!(sink.wait_for_message(WAIT).await.rcpt_to, ["dave@example.com"]);

        // A link whose account was disabled after it was sent stops working.
        let mut c = pool.get().expect("connection");
        let key = server_secrets::load_or_create(&mut c, MAGIC_LINK_KEY, unix_now()).expect("key");
        create_user(&pool, "erin@example.com");
        let now = unix_now();
        // A live link to erin, as `/login` would have stored it.
        let erin_link = |c: &mut truxe_server::store::AnyConnection| {
            let token = sign_in::new_token();
            let link = MagicLink {
                token_hash: sign_in::hash_token(key.secret(), token.secret()),
                email: "erin@example.com".to_string(),
                user_id: None,
                created_at: now,
                expires_at: now + 600,
                consumed_at: None,
                return_to: None,
                ip: None,
            };
            magic_links::insert(c, &link).expect("insert");
            token
        };
        let token = erin_link(&mut c);
        let erin = user_service::get(&mut c, "erin@example.com").expect("erin");
        user_service::set_status(&mut c, &erin.user_id, truxe_server::model::user::UserStatus::Disabled, "test", now)
            .expect("disable");
        let page = browser.get(&format!("/login/magic?token={}", token.secret())).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "disabling voided the link: {}", page.body);
        assert!(page.body.contains("cannot be used") && !page.body.contains("erin@"), "{}", page.body);
        assert_eq!(browser.signed_in_as().await, None);
        // Should an account's status change under a live link any other way, using it is still
        // refused.
        let token = erin_link(&mut c);
        let page = browser.follow_link(token.secret()).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
        assert!(page.body.contains("Account disabled"), "{}", page.body);
        assert_eq!(browser.signed_in_as().await, None);
    }

    async fn open_signup_creates_the_account_on_first_sign_in(backend: Backend) {
        let sink = SmtpSink::start().await;
        let server = start(backend, &sink, &[("TRUXE_OPEN_SIGNUP", "true"), ("TRUXE_MAGIC_LINK_TTL", "5m")]).await;
        let pool = pool(&server);
        let browser = Browser::new(&server);
        let page = browser.ask_for_link("newcomer@example.com", None).await;
        assert!(page.body.contains("5 minutes"), "{}", page.body);
        let message = sink.wait_for_message(WAIT).await;
        assert!(message.text_part().contains("5 minutes"));
        {
            let mut c = pool.get().expect("connection");
            assert!(user_service::find_by_email(&mut c, "newcomer@example.com").expect("find").is_none(),
                "asking for a link creates nothing");
        }
        let done = browser.follow_link(&token_of(&message)).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_eq!(browser.signed_in_as().await.as_deref(), Some("newcomer@example.com"));
        let mut c = pool.get().expect("connection");
        let user = user_service::find_by_email(&mut c, "newcomer@example.com").expect("find").expect("created");
        assert!(user.email_verified);
    }

    async fn bad_links_cookies_csrf_and_input_never_sign_in_or_fail(backend: Backend) {
        let sink = SmtpSink::start().await;
        let server = start(backend, &sink, &[]).await;
        let pool = pool(&server);
        create_user(&pool, "alice@example.com");
        create_user(&pool, "bob@example.com");

        // An expired link: refused on the page and on the post.
        let mut c = pool.get().expect("connection");
        let key = server_secrets::load_or_create(&mut c, MAGIC_LINK_KEY, unix_now()).expect("key");
        let expired = sign_in::new_token();
        let now = unix_now();
        magic_links::insert(
            &mut c,
            &MagicLink {
                token_hash: sign_in::hash_token(key.secret(), expired.secret()),
                email: "alice@example.com".to_string(),
                user_id: None,
                created_at: now - 3600,
                expires_at: now - 1,
                consumed_at: None,
                return_to: None,
                ip: None,
            },
        )
        .expect("insert");
        let browser = Browser::new(&server);
        let page = browser.get(&format!("/login/magic?token={}", expired.secret())).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        assert!(page.body.contains("expired"), "{}", page.body);
        let csrf = browser.get("/login").await.csrf();
        let page = browser.post("/login/magic", &[("csrf_token", &csrf), ("token", expired.secret())]).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        assert_eq!(browser.signed_in_as().await, None);

        // Forms without their CSRF token, or with a wrong one: 403 and nothing happens.
        let fresh = Browser::new(&server);
        let page = fresh.post("/login", &[("email", "alice@example.com")]).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "no cookie, no token");
        fresh.get("/login").await;
        let page = fresh.post("/login", &[("email", "alice@example.com")]).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "cookie, no token");
        let page = fresh.post("/login", &[("csrf_token", "forged"), ("email", "alice@example.com")]).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        // Another browser's valid token does not fit this browser's cookie.
        let other_token = Browser::new(&server).get("/login").await.csrf();
        let page = fresh.post("/login", &[("csrf_token", &other_token), ("email", "alice@example.com")]).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert!(page.body.contains("nothing was done"), "{}", page.body);
        // Refused before any mail work started: none was ever begun, no link stored or sent.
        server.state.mailer.flush().await;
        assert_eq!(server.state.mailer.jobs(), MailJobs::default(), "no mail work for a refused form");
        assert!(sink.messages().is_empty(), "no link was sent by a form without a valid CSRF token");
        assert_eq!(link_rows(&pool), [("alice@example.com".to_string(), 1)], "only the expired one made above");

        // A link posted without the token is not used up: the proper post still works.
        browser.ask_for_link("alice@example.com", None).await;
        let token = token_of(&sink.wait_for_message(WAIT).await);
        let page = browser.post("/login/magic", &[("token", &token)]).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert_eq!(browser.follow_link(&token).await.status, StatusCode::SEE_OTHER);
        assert_eq!(browser.signed_in_as().await.as_deref(), Some("alice@example.com"));

        // Sign-out without the token does nothing.
        let page = browser.post("/logout", &[]).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert_eq!(browser.signed_in_as().await.as_deref(), Some("alice@example.com"));

        // Cookies: forged, damaged, spliced from two users, expired, of a disabled user.
        let bob = Browser::new(&server);
        let bob_done = bob.sign_in(&sink, "bob@example.com").await;
        let bob_cookie = cookie_value(&bob_done, "truxe_session").expect("bob's cookie");
        let csrf = browser.get("/").await.csrf();
        assert!(!csrf.is_empty());
        // Alice's cookie as the browser holds it: sign in again in a jar-less way to read it.
        let alice_client = Browser::new(&server);
        let alice_done = alice_client.sign_in(&sink, "alice@example.com").await;
        let alice_cookie = cookie_value(&alice_done, "truxe_session").expect("alice's cookie");
        assert!(signed_in_with_cookie(&server, &format!("truxe_session={alice_cookie}")).await);
        let (alice_id, alice_mac) = alice_cookie.split_once('.').expect("id.mac");
        let (bob_id, bob_mac) = bob_cookie.split_once('.').expect("id.mac");
        let forged = [
            "truxe_session=".to_string(),
            "truxe_session=garbage".to_string(),
            format!("truxe_session={alice_id}"),
            format!("truxe_session={alice_id}.{bob_mac}"),
            format!("truxe_session={bob_id}.{alice_mac}"),
            format!("truxe_session={alice_id}.{}", "A".repeat(43)),
            format!("truxe_session={}.{alice_mac}", "A".repeat(43)),
            format!("truxe_session={alice_cookie}x"),
            format!("truxe_session={}", "x".repeat(5000)),
            "truxe_session=%00%00".to_string(),
        ];
        for cookie in &forged {
            assert!(!signed_in_with_cookie(&server, cookie).await, "{cookie:.80}");
        }
        // Each cookie signs in its own user only.
        assert!(signed_in_with_cookie(&server, &format!("truxe_session={bob_cookie}")).await);
        // Expired server-side.
        let bob_hash = truxe_server::service::sessions::session_hash(bob_id);
        diesel::update(sessions_table::table.filter(sessions_table::session_hash.eq(&bob_hash)))
            .set(sessions_table::expires_at.eq(unix_now() - 1))
            .execute(&mut c)
            .expect("expire");
        assert!(!signed_in_with_cookie(&server, &format!("truxe_session={bob_cookie}")).await, "expired");
        assert_eq!(bob.signed_in_as().await, None);
        // A disabled user's session stops working at once, and enabling the user again does not
        // bring it back: disabling ended it.
        let alice = user_service::get(&mut c, "alice@example.com").expect("alice");
        user_service::set_status(&mut c, &alice.user_id, truxe_server::model::user::UserStatus::Disabled, "test", now)
            .expect("disable");
        assert!(!signed_in_with_cookie(&server, &format!("truxe_session={alice_cookie}")).await, "disabled");
        user_service::set_status(&mut c, &alice.user_id, truxe_server::model::user::UserStatus::Active, "test", now)
            .expect("enable");
        assert!(!signed_in_with_cookie(&server, &format!("truxe_session={alice_cookie}")).await, "ended for good");

        // Bad input: never a 500, never a sign-in.
        let hostile = Browser::new(&server);
        let csrf = hostile.get("/login").await.csrf();
        let long_email = format!("{}@example.com", "a".repeat(10 * 1024));
        for email in [long_email.as_str(), "alice\0@example.com", "", "not an address", "a@b"] {
            let page = hostile.post("/login", &[("csrf_token", &csrf), ("email", email)]).await;
            assert_eq!(page.status, StatusCode::BAD_REQUEST, "{email:.40?}");
            assert!(page.body.contains("valid email address"), "{}", page.body);
            assert!(!page.body.contains(&"a".repeat(300)), "a huge input is not echoed");
        }
        let repeated = format!("csrf_token={csrf}&email=alice%40example.com&email=bob%40example.com");
        let page = hostile.post_raw("/login", "application/x-www-form-urlencoded", repeated.into_bytes()).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        let page = hostile.post_raw("/login", "application/x-www-form-urlencoded", b"email=%FF%FE".to_vec()).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        let page = hostile.post_raw("/login", "application/json", b"{\"email\":\"alice@example.com\"}".to_vec()).await;
        assert_eq!(page.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let huge = format!("csrf_token={csrf}&email={}", "a".repeat(64 * 1024));
        let page = hostile.post_raw("/login", "application/x-www-form-urlencoded", huge.into_bytes()).await;
        assert_eq!(page.status, StatusCode::PAYLOAD_TOO_LARGE);
        let long_token = "A".repeat(10 * 1024);
        for query in [
            "",
            "?token=",
            "?token=%00",
            "?token=garbage",
            "?token=..%2F..%2Fetc%2Fpasswd",
            "?token=a&token=b",
            &format!("?token={long_token}"),
            &format!("?token={}", "A".repeat(43)),
            "?token=%FF",
        ] {
            let page = hostile.get(&format!("/login/magic{query}")).await;
            assert_eq!(page.status, StatusCode::BAD_REQUEST, "{query:.40}");
        }
        for token in ["", "%00", "garbage", long_token.as_str()] {
            let page = hostile.post("/login/magic", &[("csrf_token", &csrf), ("token", token)]).await;
            assert_eq!(page.status, StatusCode::BAD_REQUEST, "{token:.40}");
        }
        for query in ["?return_to=https%3A%2F%2Fevil.example%2F", "?return_to=%2F%2Fevil.example", "?prompt=login&prompt=none"]
        {
            let page = hostile.get(&format!("/login{query}")).await;
            assert!(!page.body.contains("evil.example"), "{query}");
        }
        // A return_to pointing elsewhere is dropped: the sign-in lands on "/".
        let page = hostile.ask_for_link("bob@example.com", Some("https://evil.example/")).await;
        assert!(!page.body.contains("evil.example"));
        let done = hostile.follow_link(&token_of(&sink.wait_for_message(WAIT).await)).await;
        assert_eq!(done.location(), "/");
        // Only known methods.
        let status = server.client.put(server.url("/login")).send().await.expect("PUT").status();
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        // Link rows are only consumed through the page (four), or voided when their account is
        // disabled (alice's expired one).
        let used: i64 = links_table::table
            .filter(links_table::consumed_at.is_not_null())
            .count()
            .get_result(&mut c)
            .expect("count");
        assert_eq!(used, 5);
    }

    async fn mfa_enrolment_and_sign_in_with_lockout(backend: Backend) {
        let sink = SmtpSink::start().await;
        let server = start(backend, &sink, &[]).await;
        let pool = pool(&server);
        let user_id = create_user(&pool, "mallory@example.com");
        let browser = Browser::new(&server);

        // Not signed in: the setup page sends to sign-in and comes back.
        let page = browser.get("/login/mfa/setup").await;
        assert_eq!(page.status, StatusCode::SEE_OTHER);
        assert_eq!(page.location(), "/login?return_to=%2Flogin%2Fmfa%2Fsetup");
        browser.ask_for_link("mallory@example.com", Some("/login/mfa/setup")).await;
        let done = browser.follow_link(&token_of(&sink.wait_for_message(WAIT).await)).await;
        assert_eq!(done.location(), "/login/mfa/setup");
        let home = browser.get("/").await;
        assert!(home.body.contains("href=\"/login/mfa/setup\""), "{}", home.body);

        // Enrol: QR code and key on the page, a wrong code refused, the right one turns it on.
        let setup = browser.get("/login/mfa/setup").await;
        assert_eq!(setup.status, StatusCode::OK, "{}", setup.body);
        assert!(setup.body.contains("<svg"), "an inline QR code");
        let start = setup.body.find("<span class=\"code\">").expect("secret") + "<span class=\"code\">".len();
        let end = setup.body[start..].find('<').expect("end");
        let secret = base32_decode(&setup.body[start..start + end]);
        assert_eq!(secret.len(), 20);
        let csrf = setup.csrf();
        let now = unix_now();
        let wrong = wrong_code(&secret);
        let wrong = wrong.as_str();
        let page = browser.post("/login/mfa/setup", &[("csrf_token", &csrf), ("code", wrong)]).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        assert!(page.body.contains("not valid") && page.body.contains("<svg"), "{}", page.body);
        let page = browser.post("/login/mfa/setup", &[("code", &mfa::code_at(&secret, now).expect("code"))]).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "CSRF applies here too");
        let confirm = browser
            .post("/login/mfa/setup", &[("csrf_token", &csrf), ("code", &mfa::code_at(&secret, now).expect("code"))])
            .await;
        assert_eq!(confirm.status, StatusCode::OK, "{}", confirm.body);
        assert!(confirm.body.contains("recovery codes"), "{}", confirm.body);
        let codes: Vec<String> = confirm
            .body
            .split("<li>")
            .skip(1)
            .filter_map(|s| s.split("</li>").next())
            .map(str::to_string)
            .collect();
        assert_eq!(codes.len(), 10, "{}", confirm.body);
        let again = browser.get("/login/mfa/setup").await;
        assert!(again.body.contains("already") && !again.body.contains("<svg"), "{}", again.body);
        // The session that enrolled stays signed in.
        assert_eq!(browser.signed_in_as().await.as_deref(), Some("mallory@example.com"));
        browser.sign_out().await;

        // Signing in again: the magic link alone is not enough.
        let done = browser.sign_in(&sink, "mallory@example.com").await;
        assert_eq!(done.status, StatusCode::SEE_OTHER);
        assert_eq!(done.location(), "/login/mfa");
        let pending_cookie = cookie_value(&done, "truxe_session").expect("pending cookie");
        assert_eq!(browser.signed_in_as().await, None, "pending second factor signs nobody in");
        let mfa_page = browser.get("/login/mfa").await;
        assert_eq!(mfa_page.status, StatusCode::OK);
        assert!(mfa_page.body.contains("Authentication code"), "{}", mfa_page.body);
        let csrf = mfa_page.csrf();
        let page = browser.post("/login/mfa", &[("csrf_token", &csrf), ("code", wrong)]).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
        assert!(page.body.contains("not valid"), "{}", page.body);
        // The enrolment used up the code of its step; as if it had been a while ago, so that the
        // current code is good whatever the clock says now.
        {
            let mut c = pool.get().expect("connection");
            diesel::update(users_table::table.filter(users_table::user_id.eq(&user_id)))
                .set(users_table::mfa_last_step.eq(None::<i64>))
                .execute(&mut c)
                .expect("forget the last step");
        }
        let page = browser.post("/login/mfa", &[("code", &current_code(&secret))]).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        // The current code: signed in, with a new session id.
        let done = browser.post("/login/mfa", &[("csrf_token", &csrf), ("code", &current_code(&secret))]).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_eq!(done.location(), "/");
        let full_cookie = cookie_value(&done, "truxe_session").expect("new cookie");
        assert_ne!(full_cookie, pending_cookie);
        assert!(!signed_in_with_cookie(&server, &format!("truxe_session={pending_cookie}")).await);
        assert_eq!(browser.signed_in_as().await.as_deref(), Some("mallory@example.com"));
        {
            let mut c = pool.get().expect("connection");
            let amr: Vec<String> = sessions_table::table
                .filter(sessions_table::user_id.eq(&user_id))
                .filter(sessions_table::revoked_at.is_null())
                .select(sessions_table::amr)
                .load(&mut c)
                .expect("sessions");
            assert_eq!(amr, ["email mfa otp"]);
        }
        browser.sign_out().await;

        // A recovery code works once, in place of a code: amr without otp.
        assert_eq!(browser.sign_in(&sink, "mallory@example.com").await.location(), "/login/mfa");
        let csrf = browser.get("/login/mfa").await.csrf();
        let done = browser.post("/login/mfa", &[("csrf_token", &csrf), ("code", &codes[0].to_uppercase())]).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_eq!(browser.signed_in_as().await.as_deref(), Some("mallory@example.com"));
        browser.sign_out().await;

        // Lockout: five wrong codes, then even the right one is refused.
        assert_eq!(browser.sign_in(&sink, "mallory@example.com").await.location(), "/login/mfa");
        let csrf = browser.get("/login/mfa").await.csrf();
        let page = browser.post("/login/mfa", &[("csrf_token", &csrf), ("code", &codes[0])]).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST, "a used recovery code is wrong");
        for attempt in 2..=5 {
            let page = browser.post("/login/mfa", &[("csrf_token", &csrf), ("code", wrong)]).await;
            let expected = if attempt == 5 { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::BAD_REQUEST };
            assert_eq!(page.status, expected, "attempt {attempt}: {}", page.body);
        }
        let right = current_code(&secret);
        let page = browser.post("/login/mfa", &[("csrf_token", &csrf), ("code", &right)]).await;
        assert_eq!(page.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(page.body.contains("Too many wrong codes"), "{}", page.body);
        assert_eq!(browser.signed_in_as().await, None);

        // Garbage in the code field is just a wrong code.
        let other = Browser::new(&server);
        create_user(&pool, "trent@example.com");
        other.sign_in(&sink, "trent@example.com").await;
        let page = other.get("/login/mfa").await;
        assert_eq!(page.status, StatusCode::SEE_OTHER, "no pending second factor: {}", page.body);
        let csrf = other.get("/logout").await.csrf();
        let huge = "9".repeat(10 * 1024);
        for code in ["", "\0\0\0\0\0\0", huge.as_str()] {
            let page = other.post("/login/mfa", &[("csrf_token", &csrf), ("code", code)]).await;
            assert_eq!(page.status, StatusCode::SEE_OTHER, "nothing pending for a complete session");
        }
        let page = other.post("/login/mfa/setup", &[("csrf_token", &csrf), ("code", huge.as_str())]).await;
        assert_eq!(page.status, StatusCode::BAD_REQUEST);
    }
}

#[tokio::test]
async fn mfa_pages_are_absent_when_mfa_is_off() {
    let sink = SmtpSink::start().await;
    let server = start(Backend::Sqlite, &sink, &[("MFA_ENABLED", "false")]).await;
    let browser = Browser::new(&server);
    assert_eq!(browser.get("/login/mfa/setup").await.status, StatusCode::NOT_FOUND, "no new enrolments");
    // The code page stays: enrolled users keep needing their second factor.
    assert_eq!(browser.get("/login/mfa").await.status, StatusCode::SEE_OTHER, "signed out: to /login");
    create_user(&pool(&server), "zoe@example.com");
    browser.sign_in(&sink, "zoe@example.com").await;
    let home = browser.get("/").await;
    assert!(home.body.contains("zoe@example.com") && !home.body.contains("/login/mfa/setup"), "{}", home.body);
}

/// The whole `Set-Cookie` line for cookie `name`, if the response sets it.
fn set_cookie_line(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|line| line.split(';').next().and_then(|pair| pair.split_once('=')).is_some_and(|(n, _)| n == name))
        .map(str::to_string)
}

/// `name=value` of the cookie in a `Set-Cookie` line.
fn cookie_pair(line: &str) -> String {
    line.split(';').next().expect("name=value").trim().to_string()
}

/// A request without a cookie jar: exactly the cookies given.
async fn send(request: reqwest::RequestBuilder, cookies: &[&str]) -> Page {
    let request = if cookies.is_empty() { request } else { request.header("Cookie", cookies.join("; ")) };
    Browser::page(request.send().await.expect("request")).await
}

/// Who `/` says the browser holding `cookies` is signed in as.
async fn home_of(server: &TestServer, cookies: &[&str]) -> Option<String> {
    let page = send(server.client.get(server.url("/")), cookies).await;
    if page.status != StatusCode::OK {
        assert_eq!((page.status, page.location()), (StatusCode::SEE_OTHER, "/login"));
        return None;
    }
    let start = page.body.find("signed in as <strong>")? + "signed in as <strong>".len();
    let end = page.body[start..].find('<')?;
    Some(page.body[start..start + end].to_string())
}

const PRODUCTION_ISSUER: &str = "https://auth.truxe.test";

on_both_backends! {
    async fn production_cookies_are_host_prefixed_and_secure(backend: Backend) {
        let sink = SmtpSink::start().await;
        let server = start(
            backend,
            &sink,
            &[
                ("TRUXE_ENV", "production"),
                ("JWT_ISSUER", PRODUCTION_ISSUER),
                ("SESSION_SECRET", "q8Zr2LxV0pTn5Kc7Wb1Ys9Hf3Dg6Mj4Ea_Ru"),
            ],
        )
        .await;
        assert!(server.state.config.is_production() && server.state.config.session.secure);
        create_user(&pool(&server), "hana@example.com");

        // The CSRF cookie of the sign-in page: __Host-, Secure, Path=/, no Domain.
        let login = send(server.client.get(server.url("/login")), &[]).await;
        assert_eq!(login.status, StatusCode::OK);
        assert_eq!(set_cookie_line(&login.headers, "truxe_csrf"), None, "no unprefixed cookie in production");
        let csrf_line = set_cookie_line(&login.headers, "__Host-truxe_csrf").expect("the __Host- CSRF cookie");
        for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
            assert!(csrf_line.split("; ").any(|a| a == attribute), "{attribute} missing: {csrf_line}");
        }
        assert!(!csrf_line.contains("Domain"), "{csrf_line}");
        let csrf_cookie = cookie_pair(&csrf_line);
        let csrf = login.csrf();

        // Only the prefixed name is read: the same value under the plain name (what a sibling
        // subdomain could set) is no cookie at all.
        let planted = csrf_cookie.replacen("__Host-truxe_csrf=", "truxe_csrf=", 1);
        let form = [("csrf_token", csrf.as_str()), ("email", "hana@example.com")];
        let refused = send(server.client.post(server.url("/login")).form(&form), &[&planted]).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.body.contains("This form has expired"), "{}", refused.body);
        let asked = send(server.client.post(server.url("/login")).form(&form), &[&csrf_cookie]).await;
        assert_eq!(asked.status, StatusCode::OK);
        assert!(asked.body.contains("Check your email"), "{}", asked.body);
        server.state.mailer.flush().await;
        let link = sink
            .wait_for_message(WAIT)
            .await
            .url_in_text(&format!("{PRODUCTION_ISSUER}/login/magic?token="))
            .expect("a link to the https issuer");
        let token = link.split_once("token=").map(|(_, t)| t.to_string()).expect("token");

        // The session cookie: __Host-truxe_session, Secure, HttpOnly, SameSite, Path=/, no Domain.
        let magic = send(server.client.get(server.url(&format!("/login/magic?token={token}"))), &[&csrf_cookie])
            .await;
        assert_eq!(magic.status, StatusCode::OK, "{}", magic.body);
        let fields = [("csrf_token", magic.csrf()), ("token", token.clone())];
        let done = send(server.client.post(server.url("/login/magic")).form(&fields), &[&csrf_cookie]).await;
        assert_eq!(done.status, StatusCode::SEE_OTHER, "{}", done.body);
        assert_eq!(set_cookie_line(&done.headers, "truxe_session"), None, "no unprefixed cookie in production");
        let session_line = set_cookie_line(&done.headers, "__Host-truxe_session").expect("the __Host- session cookie");
        for attribute in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/", "Max-Age=86400"] {
            assert!(session_line.split("; ").any(|a| a == attribute), "{attribute} missing: {session_line}");
        }
        assert!(!session_line.contains("Domain"), "{session_line}");
        let session_cookie = cookie_pair(&session_line);
        assert_eq!(home_of(&server, &[&session_cookie]).await.as_deref(), Some("hana@example.com"));
        let unprefixed = session_cookie.replacen("__Host-truxe_session=", "truxe_session=", 1);
        assert_eq!(home_of(&server, &[&unprefixed]).await, None, "the plain name signs nobody in");

        // Signing out removes the prefixed cookie with the same attributes.
        let logout = send(server.client.get(server.url("/logout")), &[&session_cookie, &csrf_cookie]).await;
        assert_eq!(set_cookie_line(&logout.headers, "__Host-truxe_csrf"), None, "the browser has one");
        let fields = [("csrf_token", logout.csrf())];
        let out =
            send(server.client.post(server.url("/logout")).form(&fields), &[&session_cookie, &csrf_cookie]).await;
        assert_eq!(out.status, StatusCode::OK, "{}", out.body);
        let removal = set_cookie_line(&out.headers, "__Host-truxe_session").expect("removal");
        assert!(removal.contains("Max-Age=0") && removal.contains("Secure") && removal.contains("Path=/"), "{removal}");
        assert_eq!(home_of(&server, &[&session_cookie]).await, None);
    }

    async fn csrf_tokens_are_bound_to_the_browser_session(backend: Backend) {
        let sink = SmtpSink::start().await;
        let server = start(backend, &sink, &[]).await;
        let pool = pool(&server);
        let ivan = create_user(&pool, "ivan@example.com");
        let judy = create_user(&pool, "judy@example.com");
        let (ivan_session, _) = server.session_cookie(&ivan, false);
        let (judy_session, _) = server.session_cookie(&judy, false);

        // Signed in, the form token is bound to the browser's CSRF cookie and to its session.
        let ivan_page = send(server.client.get(server.url("/logout")), &[&ivan_session]).await;
        let ivan_csrf = cookie_pair(&set_cookie_line(&ivan_page.headers, "truxe_csrf").expect("csrf cookie"));
        let ivan_token = ivan_page.csrf();
        assert_eq!(ivan_token.split('.').count(), 2, "cookie part and session part: {ivan_token}");

        // Ivan's cookie and token, planted next to Judy's session: refused, Judy stays signed in.
        let fields = [("csrf_token", ivan_token.as_str())];
        let refused =
            send(server.client.post(server.url("/logout")).form(&fields), &[&judy_session, &ivan_csrf]).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert!(refused.body.contains("nothing was done"), "{}", refused.body);
        assert_eq!(home_of(&server, &[&judy_session]).await.as_deref(), Some("judy@example.com"));

        // A valid pre-sign-in pair (cookie and token) from another browser, planted next to
        // Judy's session as a sibling subdomain could: refused too.
        let stranger = send(server.client.get(server.url("/login")), &[]).await;
        let planted_cookie = cookie_pair(&set_cookie_line(&stranger.headers, "truxe_csrf").expect("csrf cookie"));
        let planted_token = stranger.csrf();
        assert!(!planted_token.contains('.'), "no session, no session part: {planted_token}");
        let fields = [("csrf_token", planted_token.as_str())];
        let refused =
            send(server.client.post(server.url("/logout")).form(&fields), &[&judy_session, &planted_cookie]).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(home_of(&server, &[&judy_session]).await.as_deref(), Some("judy@example.com"));
        // Nor does Ivan's token with Ivan's session part cut off.
        let cut = ivan_token.split('.').next().expect("cookie part").to_string();
        let fields = [("csrf_token", cut.as_str())];
        let refused =
            send(server.client.post(server.url("/logout")).form(&fields), &[&ivan_session, &ivan_csrf]).await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        // The pre-sign-in pair still works where it belongs: before sign-in, in its own browser.
        let form = [("csrf_token", planted_token.as_str()), ("email", "ivan@example.com")];
        let asked = send(server.client.post(server.url("/login")).form(&form), &[&planted_cookie]).await;
        assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);

        // Each session's own token works for it, with its own cookie.
        let judy_page = send(server.client.get(server.url("/logout")), &[&judy_session, &planted_cookie]).await;
        let fields = [("csrf_token", judy_page.csrf())];
        let out =
            send(server.client.post(server.url("/logout")).form(&fields), &[&judy_session, &planted_cookie]).await;
        assert_eq!(out.status, StatusCode::OK);
        assert!(out.body.contains("Signed out"), "{}", out.body);
        assert_eq!(home_of(&server, &[&judy_session]).await, None);
        assert_eq!(home_of(&server, &[&ivan_session]).await.as_deref(), Some("ivan@example.com"));
        // A form of a session that has ended since (signed out in another tab) is judged like
        // one before sign-in: it goes through, and its page asks to sign in again.
        let fields = [("csrf_token", judy_page.csrf()), ("email", "judy@example.com".to_string())];
        let asked = send(server.client.post(server.url("/login")).form(&fields), &[&planted_cookie]).await;
        assert_eq!(asked.status, StatusCode::OK, "{}", asked.body);
    }

    async fn the_magic_link_limit_holds_under_parallel_requests(backend: Backend) {
        const REQUESTS: usize = 20;
        let sink = SmtpSink::start().await;
        // A connection for every request, so that none waits for another's to be returned.
        let mut vars = MAGIC_LINK_LIMIT_ON.to_vec();
        vars.push(("DATABASE_POOL_MAX", "24"));
        let server = start(backend, &sink, &vars).await;
        let pool = pool(&server);
        create_user(&pool, "kim@example.com");
        // Twenty browsers with their own CSRF cookie and token, all sending at once.
        let mut browsers = Vec::new();
        for _ in 0..REQUESTS {
            let browser = Browser::new(&server);
            let csrf = browser.get("/login").await.csrf();
            browsers.push((browser, csrf));
        }
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(REQUESTS));
        let requests: Vec<_> = browsers
            .into_iter()
            .map(|(browser, csrf)| {
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    browser.post("/login", &[("csrf_token", &csrf), ("email", "kim@example.com")]).await
                })
            })
            .collect();
        for request in requests {
            let page = request.await.expect("request task");
            assert_eq!(page.status, StatusCode::OK);
            assert!(page.body.contains("Check your email"), "{}", page.body);
        }
        server.state.mailer.flush().await;
        assert_eq!(server.state.mailer.jobs(), MailJobs { in_flight: 0, finished: REQUESTS as u64 });
        let messages = sink.messages();
        assert_eq!(messages.len(), 5, "exactly the limit is sent");
        assert!(messages.iter().all(|m| m.rcpt_to == ["kim@example.com"]));
        let mut tokens: Vec<String> = messages.iter().map(token_of).collect();
        tokens.sort();
        tokens.dedup();
        assert_eq!(tokens.len(), 5, "five different links");
        assert_eq!(link_rows(&pool), [("kim@example.com".to_string(), 5)], "exactly the limit is stored");
    }

    async fn the_magic_link_limit_is_configurable_and_can_be_turned_off(backend: Backend) {
        // Two links per hour: links older than the hour do not count, one inside it does.
        let sink = SmtpSink::start().await;
        let mut vars = MAGIC_LINK_LIMIT_ON.to_vec();
        vars.extend([("TRUXE_MAGIC_LINK_LIMIT", "2"), ("TRUXE_MAGIC_LINK_WINDOW", "1h")]);
        let server = start(backend, &sink, &vars).await;
        let limited_pool = pool(&server);
        create_user(&limited_pool, "lee@example.com");
        {
            let mut c = limited_pool.get().expect("connection");
            let now = unix_now();
            for (i, created_at) in [now - 3601, now - 3601, now - 3601, now - 3500].into_iter().enumerate() {
                let link = MagicLink {
                    token_hash: format!("earlier-{i}"),
                    email: "lee@example.com".to_string(),
                    user_id: None,
                    created_at,
                    expires_at: created_at + 900,
                    consumed_at: None,
                    return_to: None,
                    ip: None,
                };
                magic_links::insert(&mut c, &link).expect("insert");
            }
        }
        let browser = Browser::new(&server);
        for _ in 0..3 {
            browser.ask_for_link("lee@example.com", None).await;
        }
        server.state.mailer.flush().await;
        assert_eq!(sink.messages().len(), 1, "one more within the hour");
        assert_eq!(link_rows(&limited_pool), [("lee@example.com".to_string(), 5)]);

        // RATE_LIMIT_ENABLED=false: no per-address limit at all.
        let sink = SmtpSink::start().await;
        let unlimited = start(backend, &sink, &[("RATE_LIMIT_ENABLED", "false")]).await;
        assert_eq!(unlimited.state.config.rate_limit.magic_link_limit(), None);
        let unlimited_pool = pool(&unlimited);
        create_user(&unlimited_pool, "lee@example.com");
        let browser = Browser::new(&unlimited);
        for _ in 0..7 {
            browser.ask_for_link("lee@example.com", None).await;
        }
        unlimited.state.mailer.flush().await;
        assert_eq!(sink.messages().len(), 7);
        assert_eq!(link_rows(&unlimited_pool), [("lee@example.com".to_string(), 7)]);
    }

    async fn sign_in_while_smtp_is_down_answers_the_same_and_logs_the_failure(backend: Backend) {
        let db = crate::support::TestDb::new(backend);
        db.migrate();
        {
            let config = config_from(&[("DATABASE_URL", &db.url)], &db.dir);
            let mut c = store::connect_one(&config.database).expect("connect");
            user_service::create(&mut c, &new_user("mia@example.com"), "test", unix_now()).expect("user");
        }
        let dead = crate::support::free_port().to_string();
        let key = crate::support::test_key_pem();
        let data_dir = db.dir.path().join("data").display().to_string();
        let env = [
            ("DATABASE_URL", db.url.as_str()),
            ("TRUXE_DATA_DIR", data_dir.as_str()),
            ("JWT_PRIVATE_KEY", key.as_str()),
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", dead.as_str()),
            ("SMTP_SECURE", "false"),
            ("EMAIL_FROM", "noreply@truxe.test"),
            ("LOG_LEVEL", "info"),
        ];
        let server =
            crate::support::process::ServerProcess::start(db.dir.path(), &env, crate::support::free_port()).await;
        let browser = Browser { client: Browser::jar_client(), base: server.url("") };
        let unknown = browser.ask_for_link("nobody@example.com", None).await;
        let page = browser.ask_for_link("mia@example.com", None).await;
        // The same answer as for any address: the mail is sent after it.
        assert_eq!(page.body.replace("mia@example.com", "EMAIL"), unknown.body.replace("nobody@example.com", "EMAIL"));
        let line = server.wait_for_log("cannot send the magic-link email", WAIT);
        assert!(line.contains(&format!("127.0.0.1:{dead}")), "names the mail server: {line}");
        assert!(line.contains("example.com") && !line.contains("mia@"), "the domain only: {line}");
        server.wait_for_log("without an active account; no email sent", WAIT);
        // The link was made (a retry of the mail would find it), the server is fine.
        let config = config_from(&[("DATABASE_URL", &db.url)], &db.dir);
        let mut c = store::connect_one(&config.database).expect("connect");
        let rows: i64 = links_table::table
            .filter(links_table::email.eq("mia@example.com"))
            .count()
            .get_result(&mut c)
            .expect("count");
        assert_eq!(rows, 1);
        let health = browser.client.get(server.url("/health")).send().await.expect("health");
        assert_eq!(health.status(), StatusCode::OK);
        let (status, output) = server.terminate();
        assert!(status.success(), "{output}");
        assert!(!output.contains("panicked"), "{output}");
    }
}
