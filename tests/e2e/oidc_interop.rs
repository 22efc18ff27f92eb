//! Interoperability of the whole OpenID Connect flow with a standard relying-party library
//! (`openidconnect`): discovery, PKCE, the code exchange, ID-token validation (signature from
//! the discovered JWKS, issuer, audience, nonce, at_hash), userinfo and refresh.

use std::time::Duration;

use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata, CoreUserInfoClaims};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, OAuth2TokenResponse,
    PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};

use crate::on_both_backends;
use crate::support::TestServer;
use crate::support::agent::Agent;
use crate::support::smtp::SmtpSink;

const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn http() -> openidconnect::reqwest::Client {
    openidconnect::reqwest::Client::builder()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

on_both_backends! {
    async fn openidconnect_relying_party(backend: Backend) {
        let sink = SmtpSink::start().await;
        let server = TestServer::start_mailing(backend, &sink).await;
        let email = "grace@example.org";
        server.create_user(email);
        let created = server.register_client(serde_json::json!({
                "client_name": "Interop RP",
                "redirect_uris": [REDIRECT],
                "allowed_scopes": ["openid", "email", "profile", "offline_access"],
                "grant_types": ["authorization_code", "refresh_token"],
                "token_endpoint_auth_method": "client_secret_basic",
            })).await;
        let client_id = created["client_id"].as_str().unwrap_or_else(|| panic!("{created}")).to_string();
        let secret = created["client_secret"].as_str().expect("secret").to_string();

        let http = http();
        let issuer = IssuerUrl::new(server.base_url.clone()).expect("issuer");
        let metadata = CoreProviderMetadata::discover_async(issuer, &http).await.expect("discovery");
        let client = CoreClient::from_provider_metadata(metadata, ClientId::new(client_id), Some(ClientSecret::new(secret)))
            .set_redirect_uri(RedirectUrl::new(REDIRECT.to_string()).expect("redirect"));

        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (authorize_url, state, nonce) = client
            .authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random)
            .add_scope(Scope::new("email".into()))
            .add_scope(Scope::new("profile".into()))
            .add_scope(Scope::new("offline_access".into()))
            .set_pkce_challenge(challenge)
            .url();

        // The person: sign in by magic link, then allow.
        let agent = Agent::new(&server.base_url);
        let login = agent.follow(agent.get(authorize_url.as_str()).await).await;
        assert!(login.url.contains("/login"), "sent to sign in: {}", login.url);
        agent.submit(&login, "Send sign-in link", &[("email", email)]).await;
        let mail = sink.wait_for_message(Duration::from_secs(10)).await;
        let link = mail.url_in_text(&server.url("/login/magic")).expect("link");
        let magic = agent.get(&link).await;
        let consent = agent.follow(agent.submit(&magic, "Continue", &[]).await).await;
        let done = agent.follow(agent.submit(&consent, "Allow", &[]).await).await;
        let location = done.location.unwrap_or_else(|| panic!("no redirect to the app: {}", done.body));
        let callback = url::Url::parse(&location).expect("callback url");
        assert!(location.starts_with(REDIRECT), "{location}");
        let param = |name: &str| callback.query_pairs().find(|(k, _)| k == name).map(|(_, v)| v.into_owned());
        assert_eq!(param("state").as_deref(), Some(state.secret().as_str()));
        assert_eq!(param("iss").as_deref(), Some(server.base_url.as_str()));
        let code = param("code").expect("code");

        let tokens = client
            .exchange_code(AuthorizationCode::new(code))
            .expect("token endpoint known")
            .set_pkce_verifier(verifier)
            .request_async(&http)
            .await
            .expect("code exchange");
        let id_token = tokens.id_token().expect("an ID token");
        let verifier = client.id_token_verifier();
        let claims = id_token.claims(&verifier, &nonce).expect("a valid ID token");
        assert_eq!(claims.email().map(|e| e.as_str()), Some(email));
        let expected_hash = AccessTokenHash::from_token(
            tokens.access_token(),
            id_token.signing_alg().expect("alg"),
            id_token.signing_key(&verifier).expect("key"),
        )
        .expect("hash");
        assert_eq!(claims.access_token_hash(), Some(&expected_hash), "at_hash");
        assert!(claims.auth_time().is_some(), "auth_time");

        let userinfo: CoreUserInfoClaims = client
            .user_info(tokens.access_token().clone(), Some(claims.subject().clone()))
            .expect("userinfo endpoint known")
            .request_async(&http)
            .await
            .expect("userinfo");
        assert_eq!(userinfo.email().map(|e| e.as_str()), Some(email));

        let refresh = tokens.refresh_token().expect("a refresh token (offline_access)");
        let refreshed = client.exchange_refresh_token(refresh).expect("token endpoint").request_async(&http).await.expect("refresh");
        assert_ne!(refreshed.access_token().secret(), tokens.access_token().secret());
        let rotated = refreshed.refresh_token().expect("a rotated refresh token");
        assert_ne!(rotated.secret(), refresh.secret(), "refresh tokens rotate");
    }
}
