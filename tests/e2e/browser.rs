//! The whole sign-in in a real headless Chromium: an app sends the browser to the authorize
//! endpoint, the person asks for a magic link (caught by a real SMTP listener), opens it,
//! continues, allows the app, and the browser lands on the app's callback with a code.

use std::time::Duration;

use truxe_server::oauth::pkce;

use crate::on_both_backends;
use crate::support::TestServer;
use crate::support::browser::Browser;
use crate::support::callback::CallbackSink;
use crate::support::smtp::SmtpSink;

const WAIT: Duration = Duration::from_secs(20);

on_both_backends! {
    async fn magic_link_consent_and_code_in_chromium(backend: Backend) {
        let sink = SmtpSink::start().await;
        let server = TestServer::start_mailing(backend, &sink).await;
        let email = "ada@example.org";
        server.create_user(email);
        let callback = CallbackSink::start().await;
        let created = server.register_client(serde_json::json!({
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
        let page = browser.source().await;
        assert!(page.contains("Email") && page.contains("type=\"email\""), "the sign-in page: {page}");
        browser.type_into("input[type=email]", email).await;
        browser.click_button("Send sign-in link").await;

        let mail = sink.wait_for_message(WAIT).await;
        let link = mail.url_in_text(&server.url("/login/magic")).expect("a link in the mail");
        browser.goto(&link).await;
        browser.click_button("Continue").await;

        browser.wait_for_url(&server.url("/oauth-provider/authorize"), WAIT).await;
        let consent = browser.source().await;
        assert!(consent.contains("Browser Test App"), "the consent page names the app: {consent}");
        browser.click_button("Allow").await;

        let query = callback.wait_for_query(WAIT).await;
        let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        assert_eq!(get("state").as_deref(), Some("st-123"));
        assert_eq!(get("iss").as_deref(), Some(server.base_url.as_str()));
        let code = get("code").unwrap_or_else(|| panic!("no code: {query:?}"));
        browser.wait_for_url(&callback.url(), WAIT).await;
        browser.quit().await;

        let tokens: serde_json::Value = server
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
            .expect("token")
            .json()
            .await
            .expect("json");
        assert!(tokens["access_token"].is_string(), "{tokens}");
        assert!(tokens["id_token"].is_string(), "{tokens}");
    }
}
