//! The whole sign-in in a real headless Chromium: an app sends the browser to the authorize
//! endpoint, the person asks for a magic link (caught by a real SMTP listener), opens it,
//! continues, allows the app, and the browser lands on the app's callback with a code, which the
//! app exchanges for tokens. Every page is checked by what it shows (the rendered text WebDriver
//! reads), and the ID token the sign-in ends with is verified against the JWKS.

use std::time::Duration;

use serde_json::json;
use truxe_server::oauth::pkce;

use crate::on_both_backends;
use crate::support::TestServer;
use crate::support::browser::Browser;
use crate::support::callback::CallbackSink;
use crate::support::flow::{userinfo_get, verify_id_token_of};
use crate::support::oauth::jwks;
use crate::support::smtp::SmtpSink;

const WAIT: Duration = Duration::from_secs(20);

/// Waits for the page whose heading is `heading` (navigation after a click is asynchronous).
async fn expect_heading(browser: &Browser, heading: &str) {
    if !browser.wait_for_text("h1", heading, WAIT).await {
        let shown = browser.texts("h1").await;
        panic!("never saw the heading {heading:?}; the page shows {shown:?} at {}", browser.current_url().await);
    }
}

on_both_backends! {
    async fn magic_link_consent_and_code_in_chromium(backend: Backend) {
        let sink = SmtpSink::start().await;
        let server = TestServer::start_mailing(backend, &sink).await;
        let email = "ada@example.org";
        let user_id = server.create_user(email);
        let callback = CallbackSink::start().await;
        let created = server.register_client(json!({
                "client_name": "Browser Test App",
                "redirect_uris": [callback.url()],
                "allowed_scopes": ["openid", "email", "profile"],
                "token_endpoint_auth_method": "none",
            })).await;
        let client_id = created["client_id"].as_str().unwrap_or_else(|| panic!("no client: {created}")).to_string();

        let verifier = "chromium-test-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
        let mut authorize = url::Url::parse(&server.url("/oauth-provider/authorize")).expect("url");
        authorize
            .query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", &callback.url())
            .append_pair("scope", "openid email")
            .append_pair("state", "st-123")
            .append_pair("nonce", "n-456")
            .append_pair("code_challenge", &pkce::s256_challenge(verifier))
            .append_pair("code_challenge_method", "S256");

        let browser = Browser::start().await;
        browser.goto(authorize.as_str()).await;
        browser.wait_for_url(&server.url("/login"), WAIT).await;
        // The sign-in page, as a person sees it.
        expect_heading(&browser, "Sign in").await;
        assert_eq!(browser.title().await, "Sign in");
        assert_eq!(browser.text("label[for=email]").await, "Email");
        assert!(browser.is_displayed("input[type=email]#email").await, "the email field is visible");
        assert_eq!(browser.text("form button[type=submit]").await, "Send sign-in link");
        browser.type_into("input[type=email]", email).await;
        browser.click_button("Send sign-in link").await;
        expect_heading(&browser, "Check your email").await;
        assert!(browser.text("main p").await.starts_with(&format!("If {email} can sign in here")));

        let mail = sink.wait_for_message(WAIT).await;
        let link = mail.url_in_text(&server.url("/login/magic")).expect("a link in the mail");
        browser.goto(&link).await;
        // The magic-link page names the account it signs in to, and does nothing until pressed.
        expect_heading(&browser, "Continue signing in").await;
        let paragraphs = browser.texts("main p").await;
        assert!(
            paragraphs.first().is_some_and(|p| p.starts_with(&format!("Continue as {email}:"))),
            "the account shown: {paragraphs:?}"
        );
        assert_eq!(browser.text("main p strong").await, email);
        browser.click_button("Continue").await;

        browser.wait_for_url(&server.url("/oauth-provider/authorize"), WAIT).await;
        // The consent page: the application's name, the account and the scopes in words.
        expect_heading(&browser, "Allow Browser Test App?").await;
        assert_eq!(browser.texts("main p strong").await, ["Browser Test App", email]);
        let mut scopes = browser.texts("ul.scopes li").await;
        scopes.sort();
        assert_eq!(scopes, ["See your email address", "Sign you in with your account"]);
        let buttons = browser.texts("form button").await;
        assert_eq!(buttons, ["Allow", "Deny"]);
        browser.click_button("Allow").await;

        let query = callback.wait_for_query(WAIT).await;
        let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        assert_eq!(get("state").as_deref(), Some("st-123"));
        assert_eq!(get("iss").as_deref(), Some(server.base_url.as_str()));
        assert!(get("error").is_none(), "{query:?}");
        let code = get("code").unwrap_or_else(|| panic!("no code: {query:?}"));
        browser.wait_for_url(&callback.url(), WAIT).await;
        assert_eq!(browser.text("p").await, "Signed in.", "the app's own page after the redirect");
        browser.quit().await;

        // The app exchanges the code and verifies the ID token it gets, as a relying party does.
        let response = server
            .client
            .post(server.url("/oauth-provider/token"))
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &callback.url()),
                ("client_id", &client_id),
                ("code_verifier", verifier),
            ])
            .send()
            .await
            .expect("token");
        assert_eq!(response.status().as_u16(), 200);
        let tokens: serde_json::Value = response.json().await.expect("json");
        assert_eq!(tokens["token_type"], "Bearer");
        assert_eq!(tokens["scope"], "email openid");
        assert!(tokens.get("refresh_token").is_none(), "no offline_access: {tokens}");
        let access_token = tokens["access_token"].as_str().unwrap_or_else(|| panic!("{tokens}"));
        let id_token = tokens["id_token"].as_str().unwrap_or_else(|| panic!("{tokens}"));
        let set = jwks(&server).await;
        let claims = verify_id_token_of(&server.base_url, id_token, &set, &client_id, "n-456", access_token);
        assert_eq!(claims["sub"], user_id.as_str());
        assert_eq!(claims["email"], email);
        assert_eq!(claims["email_verified"], true, "using the link verified the address");
        assert_eq!(claims["amr"], json!(["email"]));

        let (status, _, info) = userinfo_get(&server, Some(access_token)).await;
        assert_eq!((status, info), (200, json!({ "sub": user_id, "email": email, "email_verified": true })));
    }
}
