//! Interoperability: the `oauth2` crate, a standard OAuth client, drives client_credentials and
//! introspection against a real server, and jsonwebtoken verifies its tokens against the JWKS.

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenType};
use oauth2::{
    AccessToken, AuthType, ClientId, ClientSecret, IntrospectionUrl, RequestTokenError, Scope,
    TokenIntrospectionResponse, TokenResponse, TokenUrl,
};

use crate::on_both_backends;
use crate::support::oauth::{ISSUER, jwks, machine_client, token_server, verify_with_jwks};
use crate::support::{Backend, TestServer, test_key};

/// The server's endpoints as its discovery document names them (the test issuer is a fixed
/// URL, so its paths are mapped onto the test server's port).
async fn endpoints(server: &TestServer) -> (TokenUrl, IntrospectionUrl) {
    let (status, metadata) = server.get_json("/.well-known/oauth-authorization-server").await;
    assert_eq!(status, 200);
    let on_server = |member: &str| {
        let url = metadata[member].as_str().expect("an endpoint URL");
        server.url(url.strip_prefix(ISSUER).expect("under the issuer"))
    };
    (
        TokenUrl::new(on_server("token_endpoint")).expect("token URL"),
        IntrospectionUrl::new(on_server("introspection_endpoint")).expect("introspection URL"),
    )
}

fn http_client() -> oauth2::reqwest::Client {
    oauth2::reqwest::Client::builder()
        // RFC 6749 §3.2 clients must not follow redirects from the token endpoint.
        .redirect(oauth2::reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

on_both_backends! {
    async fn oauth2_crate_client_credentials_and_introspection(backend: Backend) {
        oauth2_crate_client_credentials_and_introspection_on(backend).await
    }
}

async fn oauth2_crate_client_credentials_and_introspection_on(backend: Backend) {
    let server = token_server(backend, &[]).await;
    let (token_url, introspection_url) = endpoints(&server).await;
    let set = jwks(&server).await;
    let http = http_client();

    for (method, auth_type) in
        [("client_secret_basic", AuthType::BasicAuth), ("client_secret_post", AuthType::RequestBody)]
    {
        let registered = machine_client(&server, method).await;
        let client = BasicClient::new(ClientId::new(registered.client_id.clone()))
            .set_client_secret(ClientSecret::new(registered.secret.clone()))
            .set_auth_type(auth_type)
            .set_token_uri(token_url.clone())
            .set_introspection_url(introspection_url.clone());

        let response = client
            .exchange_client_credentials()
            .add_scope(Scope::new("orders:read".into()))
            .request_async(&http)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e:?}"));
        assert_eq!(*response.token_type(), BasicTokenType::Bearer);
        assert_eq!(response.expires_in().map(|d| d.as_secs()), Some(900));
        assert_eq!(
            response.scopes().map(|s| s.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
            Some(vec!["orders:read".to_string()])
        );

        let token = response.access_token().secret();
        let (header, claims) = verify_with_jwks(token, &set, ISSUER);
        assert_eq!(header.kid.as_deref(), Some(test_key().kid()));
        assert_eq!(claims.client_id, registered.client_id);
        assert_eq!(claims.scope.as_deref(), Some("orders:read"));

        let introspection = client
            .introspect(response.access_token())
            .request_async(&http)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e:?}"));
        assert!(introspection.active(), "{method}");
        assert_eq!(introspection.client_id().map(|c| c.as_str()), Some(registered.client_id.as_str()));
        assert_eq!(introspection.sub(), Some(registered.client_id.as_str()));
        assert_eq!(introspection.iss(), Some(ISSUER));
        assert_eq!(introspection.aud().map(|a| a.as_slice()), Some(&[ISSUER.to_string()][..]));
        assert_eq!(introspection.token_type(), Some(&BasicTokenType::Bearer));
        assert_eq!(introspection.exp().map(|t| t.timestamp()), Some(claims.exp));
        assert_eq!(introspection.jti(), Some(claims.jti.as_str()));

        let unknown = AccessToken::new("not-a-token".into());
        let inactive = client.introspect(&unknown).request_async(&http).await.expect("introspect");
        assert!(!inactive.active());
        assert!(inactive.client_id().is_none() && inactive.scopes().is_none());

        // The library understands our errors, too.
        let refused = client
            .exchange_client_credentials()
            .add_scope(Scope::new("reports:read".into()))
            .request_async(&http)
            .await
            .expect_err("a scope the client lacks");
        match refused {
            RequestTokenError::ServerResponse(error) => {
                assert_eq!(*error.error(), BasicErrorResponseType::InvalidScope, "{method}");
            }
            other => panic!("{method}: {other:?}"),
        }
        let wrong = BasicClient::new(ClientId::new(registered.client_id.clone()))
            .set_client_secret(ClientSecret::new("cs_wrong".into()))
            .set_auth_type(if method == "client_secret_basic" { AuthType::BasicAuth } else { AuthType::RequestBody })
            .set_token_uri(token_url.clone());
        match wrong.exchange_client_credentials().request_async(&http).await {
            Err(RequestTokenError::ServerResponse(error)) => {
                assert_eq!(*error.error(), BasicErrorResponseType::InvalidClient, "{method}");
            }
            other => panic!("{method}: {other:?}"),
        }
    }
}
