//! Server metadata: `/.well-known/openid-configuration` and `/.well-known/oauth-authorization-server`
//! (RFC 8414), one document served at both, listing only what this server does today.

use actix_web::http::header;
use actix_web::{HttpResponse, web};
use serde_json::{Value, json};

use super::AppState;
use super::authorize::AUTHORIZE_PATH;
use super::end_session::END_SESSION_PATH;
use crate::config::Config;
use crate::model::client::{AuthMethod, GrantType};

pub const TOKEN_PATH: &str = "/oauth-provider/token";
pub const JWKS_PATH: &str = "/oauth-provider/jwks";
pub const INTROSPECTION_PATH: &str = "/oauth-provider/introspect";
pub const REVOCATION_PATH: &str = "/oauth-provider/revoke";
pub const USERINFO_PATH: &str = "/oauth-provider/userinfo";

/// The claims ID tokens and userinfo carry (OIDC Discovery `claims_supported`).
const CLAIMS_SUPPORTED: [&str; 13] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "amr",
    "azp",
    "email",
    "email_verified",
    "name",
];

const CACHE_CONTROL: &str = "public, max-age=300";

/// The metadata document. URLs come from the configured issuer only, never from request
/// headers. Only what works is listed: `refresh_token` only while `OAUTH_ALLOW_REFRESH_TOKEN`
/// allows it, request objects explicitly refused (OIDC Discovery would otherwise let clients
/// assume `request_uri` works).
pub fn metadata(config: &Config) -> Value {
    let issuer = config.issuer.as_str();
    let confidential = [AuthMethod::ClientSecretBasic.as_str(), AuthMethod::ClientSecretPost.as_str()];
    // Public clients (`none`) use the token endpoint for their own grants, and RFC 7009 §2.1 lets
    // them revoke their own tokens with their client_id alone.
    let with_public = [confidential[0], confidential[1], AuthMethod::None.as_str()];
    let mut grant_types = vec![GrantType::AuthorizationCode.as_str()];
    if config.oauth.allow_refresh_token {
        grant_types.push(GrantType::RefreshToken.as_str());
    }
    grant_types.push(GrantType::ClientCredentials.as_str());
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}{AUTHORIZE_PATH}"),
        "token_endpoint": format!("{issuer}{TOKEN_PATH}"),
        "userinfo_endpoint": format!("{issuer}{USERINFO_PATH}"),
        "jwks_uri": format!("{issuer}{JWKS_PATH}"),
        "introspection_endpoint": format!("{issuer}{INTROSPECTION_PATH}"),
        "revocation_endpoint": format!("{issuer}{REVOCATION_PATH}"),
        "end_session_endpoint": format!("{issuer}{END_SESSION_PATH}"),
        "grant_types_supported": grant_types,
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [config.jwt.algorithm.as_str()],
        "token_endpoint_auth_methods_supported": with_public,
        "introspection_endpoint_auth_methods_supported": confidential,
        "revocation_endpoint_auth_methods_supported": with_public,
        "scopes_supported": config.scopes_supported(),
        "claims_supported": CLAIMS_SUPPORTED,
        "prompt_values_supported": ["none", "login", "consent"],
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "claims_parameter_supported": false,
    })
}

pub async fn openid_configuration(state: web::Data<AppState>) -> HttpResponse {
    document(&state.config)
}

pub async fn oauth_authorization_server(state: web::Data<AppState>) -> HttpResponse {
    document(&state.config)
}

fn document(config: &Config) -> HttpResponse {
    HttpResponse::Ok().insert_header((header::CACHE_CONTROL, CACHE_CONTROL)).json(metadata(config))
}
