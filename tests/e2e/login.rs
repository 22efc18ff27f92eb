//! End-user sign-in over HTTP on both backends: the `/login` page, magic links caught by a real
//! SMTP listener, the signed session cookie, CSRF on every form, TOTP pages and `/logout`.

use std::time::Duration;

use diesel::prelude::*;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
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
/// How long to wait before concluding that no mail will come.
const QUIET: Duration = Duration::from_millis(1500);

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

fn pool(server: &TestServer) -> store::Pool {
    let config = config_from(&[("DATABASE_URL", &server.db.url)], &server.db.dir);
    store::connect(&config.database).expect("connect to the server's database")
}

fn create_user(pool: &store::Pool, email: &str) -> String {
    let mut c = pool.get().expect("connection");
    user_service::create(&mut c, &new_user(email), "test", unix_now()).expect("user").user_id
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
        let client = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Browser { client, base: server.base_url.clone() }
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
        let server = start(backend, &sink, &[]).await;
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
        let message = sink.wait_for_message(WAIT).await;
        assert_eq!(message.rcpt_to, ["bob@example.com"]);
        tokio::time::sleep(QUIET).await;
        assert_eq!(sink.messages().len(), 1, "no mail to unknown or disabled addresses");

        // Five links per address per 15 minutes; the sixth request looks the same but sends nothing.
        for _ in 0..4 {
            browser.ask_for_link("bob@example.com", None).await;
            sink.wait_for_message(WAIT).await;
        }
        let limited = browser.ask_for_link("bob@example.com", None).await;
        assert_eq!(limited.body, known.body);
        tokio::time::sleep(QUIET).await;
        assert_eq!(sink.messages().len(), 5, "the sixth link in 15 minutes is not sent");
        // Another address is not affected.
        create_user(&pool, "dave@example.com");
        browser.ask_for_link("dave@example.com", None).await;
        assert_eq!(sink.wait_for_message(WAIT).await.rcpt_to, ["dave@example.com"]);

        // A link whose account was disabled after it was sent stops working.
        let mut c = pool.get().expect("connection");
        let key = server_secrets::load_or_create(&mut c, MAGIC_LINK_KEY, unix_now()).expect("key");
        let token = sign_in::new_token();
        create_user(&pool, "erin@example.com");
        let now = unix_now();
        magic_links::insert(
            &mut c,
            &MagicLink {
                token_hash: sign_in::hash_token(key.secret(), token.secret()),
                email: "erin@example.com".to_string(),
                user_id: None,
                created_at: now,
                expires_at: now + 600,
                consumed_at: None,
                return_to: None,
                ip: None,
            },
        )
        .expect("insert");
        let erin = user_service::get(&mut c, "erin@example.com").expect("erin");
        user_service::set_status(&mut c, &erin.user_id, truxe_server::model::user::UserStatus::Disabled, "test", now)
            .expect("disable");
        let page = browser.follow_link(token.secret()).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
        assert!(page.body.contains("disabled"));
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
        tokio::time::sleep(QUIET).await;
        assert!(sink.messages().is_empty(), "no link was sent by a form without a valid CSRF token");

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
        // A disabled user's session stops working at once.
        let alice = user_service::get(&mut c, "alice@example.com").expect("alice");
        user_service::set_status(&mut c, &alice.user_id, truxe_server::model::user::UserStatus::Disabled, "test", now)
            .expect("disable");
        assert!(!signed_in_with_cookie(&server, &format!("truxe_session={alice_cookie}")).await, "disabled");
        user_service::set_status(&mut c, &alice.user_id, truxe_server::model::user::UserStatus::Active, "test", now)
            .expect("enable");
        assert!(signed_in_with_cookie(&server, &format!("truxe_session={alice_cookie}")).await);

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
        // Link rows are only consumed through the page.
        let used: i64 = links_table::table
            .filter(links_table::consumed_at.is_not_null())
            .count()
            .get_result(&mut c)
            .expect("count");
        assert_eq!(used, 4);
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
        let wrong = if mfa::code_at(&secret, now).expect("code") == "000000" { "111111" } else { "000000" };
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
        let page = browser.post("/login/mfa", &[("code", &mfa::code_at(&secret, now + 30).expect("code"))]).await;
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        // The next step's code (the enrolment used this one): signed in, with a new session id.
        let done = browser
            .post("/login/mfa", &[("csrf_token", &csrf), ("code", &mfa::code_at(&secret, now + 30).expect("code"))])
            .await;
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
        let right = mfa::code_at(&secret, unix_now()).expect("code");
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
