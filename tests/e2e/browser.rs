//! The whole sign-in in a real headless Chromium: an app sends the browser to the authorize
//! endpoint, the person asks for a magic link (caught by a real SMTP listener), opens it,
//! continues, allows the app, and the browser lands on the app's callback with a code. What the
//! person sees is read as rendered text over WebDriver (headings, the account, the scopes), not
//! from the page source; the app then redeems the code and verifies the ID token like a
//! relying party.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use truxe_server::oauth::pkce;

use crate::on_both_backends;
use crate::support::TestServer;
use crate::support::browser::Browser;
use crate::support::callback::CallbackSink;
use crate::support::oidc::{jwks, verify_id_token};
use crate::support::smtp::SmtpSink;

const WAIT: Duration = Duration::from_secs(20);

on_both_backends! {
    async fn magic_link_consent_and_code_in_chromium(backend: Backend) {
        let sink = SmtpSink::start().await;
        let server = TestServer::start_mailing(backend, &sink).await;
        let email = "ada@example.org";
        let user_id = server.create_user(email);
        let callback = CallbackSink::start().await;
        let created = server.register_client(serde_json::json!({
                "client_name": "Browser Test App",
                "redirect_uris": [callback.url()],
                "allowed_scopes": ["openid", "email", "profile"],
                "token_endpoint_auth_method": "none",
            })).await;
        let client_id = created["client_id"].as_str().unwrap_or_else(|| panic!("no client: {created}")).to_string();

        let verifier = "chromium-test-verifier-0123456789-abcdefghijklmnopqrstuvwxyz";
        let nonce = "n-456";
        let mut authorize = url::Url::parse(&server.url("/oauth-provider/authorize")).expect("url");
        authorize
            .query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &client_id)
            .append_pair("redirect_uri", &callback.url())
            .append_pair("scope", "openid email")
            .append_pair("state", "st-123")
            .append_pair("nonce", nonce)
            .append_pair("code_challenge", &pkce::s256_challenge(verifier))
            .append_pair("code_challenge_method", "S256");

        let browser = Browser::start().await;
        browser.goto(authorize.as_str()).await;
        browser.wait_for_url(&server.url("/login"), WAIT).await;
        // The sign-in page as a person sees it.
        assert_eq!(browser.text("h1").await, "Sign in");
        assert_eq!(browser.text("label[for=email]").await, "Email");
        assert_eq!(browser.texts("button").await, ["Send sign-in link"]);
        browser.type_into("input[type=email]", email).await;
        browser.click_button("Send sign-in link").await;
        browser.wait_for_text("h1", "Check your email", WAIT).await;
        assert_eq!(browser.text("main p strong").await, email, "the address the link goes to");

        let mail = sink.wait_for_message(WAIT).await;
        let link = mail.url_in_text(&server.url("/login/magic")).expect("a link in the mail");
        browser.goto(&link).await;
        // "Continue as <address>": the account the link opens, before anything is used.
        assert_eq!(browser.text("h1").await, "Continue signing in");
        let continue_as = browser.texts("main p").await;
        assert_eq!(
            continue_as.first().map(String::as_str),
            Some("Continue as ada@example.org: press the button to finish signing in on this device."),
            "{continue_as:?}"
        );
        assert_eq!(browser.text("main p strong").await, email);
        browser.click_button("Continue").await;

        browser.wait_for_url(&server.url("/oauth-provider/authorize"), WAIT).await;
        // The consent page: the application, the account and the scopes in words.
        assert_eq!(browser.text("h1").await, "Allow Browser Test App?");
        let asks = browser.texts("main p strong").await;
        assert_eq!(asks.get(..2), Some(&["Browser Test App".to_string(), email.to_string()][..]), "{asks:?}");
        assert_eq!(browser.texts("ul.scopes li").await, ["See your email address", "Sign you in with your account"]);
        assert_eq!(browser.texts("button").await, ["Allow", "Deny"]);
        browser.click_button("Allow").await;

        let query = callback.wait_for_query(WAIT).await;
        let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        assert_eq!(get("state").as_deref(), Some("st-123"));
        assert_eq!(get("iss").as_deref(), Some(server.base_url.as_str()));
        let code = get("code").unwrap_or_else(|| panic!("no code: {query:?}"));
        browser.wait_for_url(&callback.url(), WAIT).await;
        assert_eq!(browser.text("p").await, "Signed in.", "the application's page");
        browser.quit().await;

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
        let access_token = tokens["access_token"].as_str().unwrap_or_else(|| panic!("no access token: {tokens}"));
        let id_token = tokens["id_token"].as_str().unwrap_or_else(|| panic!("no ID token: {tokens}"));

        // The ID token as a relying party checks it: signed by a key of the JWKS, for this
        // client, from this issuer, with the nonce of this request; about this person.
        let set = jwks(&server).await;
        let claims = verify_id_token(id_token, &set, &server.base_url, &client_id, nonce);
        assert_eq!(claims["sub"], user_id.as_str());
        assert_eq!(claims["email"], email);
        assert_eq!(claims["email_verified"], true, "the magic link proved the address");
        assert_eq!(claims["amr"], serde_json::json!(["email"]));
        let digest = openssl::sha::sha256(access_token.as_bytes());
        assert_eq!(claims["at_hash"], URL_SAFE_NO_PAD.encode(&digest[..16]), "at_hash binds the access token");
    }
}
