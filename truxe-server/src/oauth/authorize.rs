//! Authorization requests (RFC 6749 §4.1.1, OAuth 2.1, OIDC Core §3.1.2.1): from raw
//! parameters and the already-loaded client to a validated request, or to one of the two
//! kinds of error: an error page (the redirect URI cannot be trusted) or a redirect.

use url::Url;

use super::form::Form;
use super::scope::ScopeSet;
use super::{ErrorCode, OAuthError, pkce};
use crate::model::client::{Client, GrantType};

/// Largest accepted value of any single parameter; real ones are far shorter.
pub const MAX_PARAM_LEN: usize = 2048;

/// Parameters whose values are stored or echoed verbatim and that RFC 6749 (Appendix A.5,
/// `state` = 1*VSCHAR) or practice keeps to visible ASCII: anything else is refused.
const VSCHAR_PARAMS: [&str; 3] = ["state", "nonce", "code_challenge"];

/// Whether `value` is printable text of bounded length: at most [`MAX_PARAM_LEN`] bytes, no
/// control characters, and for `vschar_only` nothing outside %x20-7E.
pub fn is_printable_param(value: &str, vschar_only: bool) -> bool {
    value.len() <= MAX_PARAM_LEN
        && if vschar_only {
            value.bytes().all(|b| (0x20..=0x7E).contains(&b))
        } else {
            !value.chars().any(char::is_control)
        }
}

/// Every parameter of a request that is stored or echoed, checked at once: `Err` names the
/// first that is not printable text of bounded length.
pub fn check_params(params: &Form) -> Result<(), OAuthError> {
    for (name, value) in params.iter() {
        if !is_printable_param(name, true) || name.len() > 64 {
            return Err(OAuthError::invalid_request("a parameter name is not printable ASCII of at most 64 bytes"));
        }
        if !is_printable_param(value, VSCHAR_PARAMS.contains(&name)) {
            let why = if value.len() > MAX_PARAM_LEN { "is too long" } else { "holds characters that are not allowed" };
            return Err(OAuthError::invalid_request(format!("{name} {why}")));
        }
    }
    Ok(())
}

fn is_loopback_ip(url: &Url) -> bool {
    matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip.is_loopback())
        || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip.is_loopback())
}

/// Whether a presented `redirect_uri` matches a registered one: as exact strings, except that
/// for an `http` loopback IP literal (`127.0.0.1`, `[::1]`) any port is allowed (RFC 8252 §7.3,
/// OAuth 2.1 §4.1.1; native apps listen on an ephemeral port). `localhost` is not an IP literal
/// and matches only exactly.
pub fn redirect_uri_matches(registered: &str, presented: &str) -> bool {
    if registered == presented {
        return true;
    }
    let (Ok(mut registered), Ok(mut presented_url)) = (Url::parse(registered), Url::parse(presented)) else {
        return false;
    };
    // Only a presented URI already in its canonical form, so that nothing but the port differs.
    if presented_url.as_str() != presented
        || registered.scheme() != "http"
        || !is_loopback_ip(&registered)
        || !is_loopback_ip(&presented_url)
    {
        return false;
    }
    let (Ok(()), Ok(())) = (registered.set_port(None), presented_url.set_port(None)) else {
        return false;
    };
    registered == presented_url
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequest {
    pub client_id: crate::model::ClientId,
    pub redirect_uri: String,
    /// Whether the request carried `redirect_uri` (then the token request must, RFC 6749 §4.1.3).
    pub redirect_uri_given: bool,
    pub scope: ScopeSet,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
    pub login_hint: Option<String>,
}

impl AuthorizationRequest {
    pub fn is_openid(&self) -> bool {
        self.scope.contains("openid")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// Unknown client or untrusted redirect URI: show a page, never redirect.
    Page(String),
    /// Everything else goes back to the client.
    Redirect { redirect_uri: String, error: OAuthError, state: Option<String> },
}

/// What the server requires beyond the client's own settings.
pub struct Policy<'a> {
    pub require_pkce: bool,
    pub scopes_supported: &'a [String],
}

/// The client_id of a request, when it has exactly one; the caller loads that client.
pub fn client_id(params: &Form) -> Option<&str> {
    params.get("client_id")
}

/// Validates a request against its client (`None` when unknown or inactive).
pub fn validate(
    params: &Form,
    client: Option<&Client>,
    policy: &Policy<'_>,
) -> Result<AuthorizationRequest, AuthorizeError> {
    let client = match client {
        Some(c) if c.is_active() => c,
        Some(_) => return Err(AuthorizeError::Page("This application is disabled.".into())),
        None => return Err(AuthorizeError::Page("Unknown application (client_id).".into())),
    };
    let openid = params.get("scope").is_some_and(|scope| scope.split(' ').any(|s| s == "openid"));
    let redirect_uri = match params.get("redirect_uri") {
        Some(uri) if client.redirect_uris.iter().any(|r| redirect_uri_matches(r, uri)) => uri.to_string(),
        Some(_) => return Err(AuthorizeError::Page("The redirect_uri is not registered for this application.".into())),
        // OIDC Core §3.1.2.1: always required for OpenID Connect.
        None if openid => {
            return Err(AuthorizeError::Page("The redirect_uri parameter is required (OpenID Connect).".into()));
        }
        // OAuth 2.1 §4.1.1: optional only when the client registered exactly one.
        None if client.redirect_uris.len() == 1 => client.redirect_uris[0].clone(),
        None => return Err(AuthorizeError::Page("The redirect_uri parameter is required.".into())),
    };
    let redirect_uri_given = params.get("redirect_uri").is_some();
    // A state that is not printable text is not echoed back.
    let state = params.get("state").filter(|s| is_printable_param(s, true)).map(str::to_string);
    let fail = |error: OAuthError| AuthorizeError::Redirect {
        redirect_uri: redirect_uri.clone(),
        error,
        state: state.clone(),
    };

    if !client.allows_grant(GrantType::AuthorizationCode) {
        return Err(fail(OAuthError::unauthorized_client(
            "this client is not registered for the authorization_code grant",
        )));
    }
    check_params(params).map_err(fail)?;
    if params.get("request").is_some() {
        return Err(fail(OAuthError::new(ErrorCode::RequestNotSupported, "request objects are not supported")));
    }
    if params.get("request_uri").is_some() {
        return Err(fail(OAuthError::new(ErrorCode::RequestUriNotSupported, "request_uri is not supported")));
    }
    match params.get("response_type") {
        Some("code") => {}
        Some(_) => {
            return Err(fail(OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            )));
        }
        None => return Err(fail(OAuthError::invalid_request("response_type is required"))),
    }
    if params.get("response_mode").is_some_and(|m| m != "query") {
        return Err(fail(OAuthError::invalid_request("only response_mode=query is supported")));
    }

    let scope = ScopeSet::parse(params.get("scope").unwrap_or("")).map_err(|e| fail(OAuthError::invalid_scope(e)))?;
    if scope.is_empty() {
        return Err(fail(OAuthError::invalid_scope("scope is required")));
    }
    let unsupported: Vec<String> =
        scope.iter().filter(|s| !policy.scopes_supported.iter().any(|k| k == s)).map(str::to_string).collect();
    if !unsupported.is_empty() {
        return Err(fail(OAuthError::invalid_scope(format!("unknown scope: {}", unsupported.join(" ")))));
    }
    let not_allowed = scope.difference(&client.allowed_scopes);
    if !not_allowed.is_empty() {
        return Err(fail(OAuthError::invalid_scope(format!(
            "scope not allowed for this client: {}",
            not_allowed.join(" ")
        ))));
    }

    let code_challenge = params.get("code_challenge");
    let method = params.get("code_challenge_method");
    let pkce_required =
        policy.require_pkce || client.require_pkce || !client.token_endpoint_auth_method.is_confidential();
    let code_challenge = match (code_challenge, method) {
        (None, None) if pkce_required => {
            return Err(fail(OAuthError::invalid_request(
                "PKCE is required: send code_challenge with code_challenge_method=S256",
            )));
        }
        (None, None) => None,
        (None, Some(_)) => {
            return Err(fail(OAuthError::invalid_request("code_challenge_method without code_challenge")));
        }
        (Some(_), None) | (Some(_), Some("plain")) => {
            return Err(fail(OAuthError::invalid_request("code_challenge_method must be S256; plain is not accepted")));
        }
        (Some(_), Some(m)) if m != "S256" => {
            return Err(fail(OAuthError::invalid_request("code_challenge_method must be S256")));
        }
        (Some(challenge), Some(_)) if !pkce::is_valid_challenge(challenge) => {
            return Err(fail(OAuthError::invalid_request("code_challenge is not a base64url SHA-256 value")));
        }
        (Some(challenge), Some(_)) => Some(challenge.to_string()),
    };

    let prompt = parse_prompt(params.get("prompt")).map_err(|e| fail(OAuthError::invalid_request(e)))?;
    let max_age = match params.get("max_age") {
        None => None,
        Some(v) => Some(
            v.parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| fail(OAuthError::invalid_request("max_age must be a non-negative integer")))?,
        ),
    };
    let nonce = params.get("nonce").map(str::to_string);

    Ok(AuthorizationRequest {
        client_id: client.client_id.clone(),
        redirect_uri,
        redirect_uri_given,
        scope,
        state,
        nonce,
        code_challenge,
        prompt,
        max_age,
        login_hint: params.get("login_hint").map(str::to_string),
    })
}

fn parse_prompt(value: Option<&str>) -> Result<Prompt, String> {
    let mut prompt = Prompt::default();
    let Some(value) = value else { return Ok(prompt) };
    for token in value.split(' ') {
        match token {
            "none" => prompt.none = true,
            "login" => prompt.login = true,
            "consent" => prompt.consent = true,
            "select_account" => {}
            _ => return Err(format!("unsupported prompt value {token:?}")),
        }
    }
    if prompt.none && (prompt.login || prompt.consent) {
        return Err("prompt=none cannot be combined with other values".into());
    }
    Ok(prompt)
}

/// The client's redirect URI with `params` plus `iss` (RFC 9207) appended to its query.
pub fn redirect_with(redirect_uri: &str, params: &[(&str, &str)], issuer: &str) -> String {
    match Url::parse(redirect_uri) {
        Ok(mut url) => {
            {
                let mut query = url.query_pairs_mut();
                for (k, v) in params {
                    query.append_pair(k, v);
                }
                query.append_pair("iss", issuer);
            }
            url.to_string()
        }
        // Registered URIs are validated absolute URLs; this cannot happen for a stored client.
        Err(_) => redirect_uri.to_string(),
    }
}

/// The redirect for an error: `error`, `error_description`, `state`, `iss`.
pub fn error_redirect(redirect_uri: &str, error: &OAuthError, state: Option<&str>, issuer: &str) -> String {
    let mut params = vec![("error", error.code.as_str()), ("error_description", error.description.as_str())];
    if let Some(state) = state {
        params.push(("state", state));
    }
    redirect_with(redirect_uri, &params, issuer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::client::{ClientStatus, GrantType};

    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn client() -> Client {
        Client {
            grant_types: vec![GrantType::AuthorizationCode],
            allowed_scopes: ScopeSet::parse("openid email profile").expect("scopes"),
            redirect_uris: vec!["https://app.example/cb".into(), "http://127.0.0.1:8080/cb".into()],
            ..Client::example()
        }
    }

    fn scopes() -> Vec<String> {
        ["openid", "email", "profile", "offline_access"].map(String::from).to_vec()
    }

    fn run(query: &str, client: Option<&Client>) -> Result<AuthorizationRequest, AuthorizeError> {
        let params = Form::parse(query.as_bytes()).expect("form");
        let supported = scopes();
        validate(&params, client, &Policy { require_pkce: true, scopes_supported: &supported })
    }

    fn good() -> String {
        format!(
            "client_id=cl_app&redirect_uri=https%3A%2F%2Fapp.example%2Fcb&response_type=code&scope=openid%20email&state=xyz&nonce=n1&code_challenge={CHALLENGE}&code_challenge_method=S256"
        )
    }

    fn redirect_code(result: Result<AuthorizationRequest, AuthorizeError>) -> ErrorCode {
        match result {
            Err(AuthorizeError::Redirect { error, state, redirect_uri }) => {
                assert_eq!(redirect_uri, "https://app.example/cb");
                assert_eq!(state.as_deref(), Some("xyz"));
                error.code
            }
            other => panic!("expected a redirect error, got {other:?}"),
        }
    }

    #[test]
    fn a_good_request() {
        let c = client();
        let request = run(&good(), Some(&c)).expect("valid");
        assert_eq!(request.redirect_uri, "https://app.example/cb");
        assert_eq!(request.scope.to_string(), "email openid");
        assert_eq!(request.nonce.as_deref(), Some("n1"));
        assert_eq!(request.code_challenge.as_deref(), Some(CHALLENGE));
        assert!(request.is_openid());
    }

    #[test]
    fn unknown_client_or_redirect_uri_is_a_page() {
        let c = client();
        assert!(matches!(run(&good(), None), Err(AuthorizeError::Page(_))));
        let mut suspended = client();
        suspended.status = ClientStatus::Suspended;
        assert!(matches!(run(&good(), Some(&suspended)), Err(AuthorizeError::Page(_))));
        for uri in [
            "https%3A%2F%2Fapp.example%2Fcb%2F",
            "https%3A%2F%2FAPP.example%2Fcb",
            "https%3A%2F%2Fapp.example%3A443%2Fcb",
            "https%3A%2F%2Fapp.example%2Fcb%3Fx%3D1",
            "http%3A%2F%2F127.0.0.1%3A8080%2Fcb%2F",
            "http%3A%2F%2Flocalhost%3A8080%2Fcb",
            "https%3A%2F%2Fevil.example%2Fcb",
        ] {
            let query = good().replace("https%3A%2F%2Fapp.example%2Fcb", uri);
            assert!(matches!(run(&query, Some(&c)), Err(AuthorizeError::Page(_))), "{uri}");
        }
        let without = good().replace("redirect_uri=https%3A%2F%2Fapp.example%2Fcb&", "");
        assert!(matches!(run(&without, Some(&c)), Err(AuthorizeError::Page(_))), "two registered: required");
    }

    #[test]
    fn other_errors_redirect() {
        let c = client();
        let cases = [
            (good().replace("response_type=code", "response_type=token"), ErrorCode::UnsupportedResponseType),
            (good().replace("response_type=code&", ""), ErrorCode::InvalidRequest),
            (good().replace("scope=openid%20email", "scope=openid%20admin"), ErrorCode::InvalidScope),
            (good().replace("scope=openid%20email", "scope=openid%20offline_access"), ErrorCode::InvalidScope),
            (good().replace("scope=openid%20email&", ""), ErrorCode::InvalidScope),
            (good().replace("code_challenge_method=S256", "code_challenge_method=plain"), ErrorCode::InvalidRequest),
            (good().replace("&code_challenge_method=S256", ""), ErrorCode::InvalidRequest),
            (
                good().replace(&format!("code_challenge={CHALLENGE}&code_challenge_method=S256"), "x=1"),
                ErrorCode::InvalidRequest,
            ),
            (good().replace(CHALLENGE, "tooshort"), ErrorCode::InvalidRequest),
            (format!("{}&prompt=none%20login", good()), ErrorCode::InvalidRequest),
            (format!("{}&prompt=bogus", good()), ErrorCode::InvalidRequest),
            (format!("{}&max_age=-1", good()), ErrorCode::InvalidRequest),
            (format!("{}&max_age=abc", good()), ErrorCode::InvalidRequest),
            (format!("{}&nonce2=x&login_hint={}", good(), "a".repeat(3000)), ErrorCode::InvalidRequest),
            (format!("{}&request=eyJ", good()), ErrorCode::RequestNotSupported),
            (format!("{}&request_uri=https%3A%2F%2Fapp.example%2Fr", good()), ErrorCode::RequestUriNotSupported),
            (good().replace("nonce=n1", "nonce=n%00"), ErrorCode::InvalidRequest),
            (good().replace("nonce=n1", "nonce=%F0%9F%98%80"), ErrorCode::InvalidRequest),
            (good().replace("nonce=n1", &format!("nonce={}", "n".repeat(10 * 1024))), ErrorCode::InvalidRequest),
            (format!("{}&login_hint=a%0Ab", good()), ErrorCode::InvalidRequest),
            (format!("{}&ui_locales=%1B", good()), ErrorCode::InvalidRequest),
        ];
        for (query, code) in cases {
            assert_eq!(redirect_code(run(&query, Some(&c))), code, "{query}");
        }
    }

    #[test]
    fn prompt_and_max_age() {
        let c = client();
        let request = run(&format!("{}&prompt=login%20consent&max_age=300", good()), Some(&c)).expect("valid");
        assert!(request.prompt.login && request.prompt.consent && !request.prompt.none);
        assert_eq!(request.max_age, Some(300));
    }

    #[test]
    fn single_registered_uri_may_be_omitted_without_openid() {
        let mut c = client();
        c.redirect_uris.truncate(1);
        c.allowed_scopes = ScopeSet::parse("openid email orders:read").expect("scopes");
        let plain =
            good().replace("redirect_uri=https%3A%2F%2Fapp.example%2Fcb&", "").replace("openid%20email", "email");
        let request = run(&plain, Some(&c)).expect("valid");
        assert_eq!(request.redirect_uri, "https://app.example/cb");
        assert!(!request.redirect_uri_given);
        assert!(run(&good(), Some(&c)).expect("valid").redirect_uri_given);
        // OIDC Core §3.1.2.1: required whenever openid is requested.
        let oidc = good().replace("redirect_uri=https%3A%2F%2Fapp.example%2Fcb&", "");
        assert!(matches!(run(&oidc, Some(&c)), Err(AuthorizeError::Page(_))));
    }

    #[test]
    fn loopback_redirect_uris_match_on_any_port() {
        for (registered, presented, matches) in [
            ("http://127.0.0.1:8080/cb", "http://127.0.0.1:51004/cb", true),
            ("http://127.0.0.1/cb", "http://127.0.0.1:51004/cb", true),
            ("http://[::1]:8080/cb", "http://[::1]:1234/cb", true),
            ("http://127.0.0.1:8080/cb", "http://127.0.0.1:51004/cb/", false),
            ("http://127.0.0.1:8080/cb", "http://127.0.0.1:51004/cb?x=1", false),
            ("http://127.0.0.1:8080/cb", "http://127.0.0.2:8080/cb", false),
            ("http://localhost:8080/cb", "http://localhost:1234/cb", false),
            ("https://app.example:8443/cb", "https://app.example:9443/cb", false),
            ("https://127.0.0.1:8443/cb", "https://127.0.0.1:9443/cb", false),
            ("http://127.0.0.1:8080/cb", "http://127.0.0.1:51004/a/../cb", false),
        ] {
            assert_eq!(redirect_uri_matches(registered, presented), matches, "{registered} vs {presented}");
        }
        let c = client();
        let query = good().replace("https%3A%2F%2Fapp.example%2Fcb", "http%3A%2F%2F127.0.0.1%3A51004%2Fcb");
        match run(&query, Some(&c)) {
            Ok(request) => assert_eq!(request.redirect_uri, "http://127.0.0.1:51004/cb"),
            other => panic!("expected a valid request, got {other:?}"),
        }
    }

    #[test]
    fn a_state_that_is_not_printable_is_not_echoed() {
        let c = client();
        match run(&good().replace("state=xyz", "state=a%00b"), Some(&c)) {
            Err(AuthorizeError::Redirect { error, state, .. }) => {
                assert_eq!(error.code, ErrorCode::InvalidRequest);
                assert_eq!(state, None);
            }
            other => panic!("expected a redirect error, got {other:?}"),
        }
    }

    #[test]
    fn redirects_carry_iss_and_state() {
        let url = error_redirect(
            "https://app.example/cb?x=1",
            &OAuthError::invalid_scope("no"),
            Some("s t"),
            "https://id.example",
        );
        assert_eq!(
            url,
            "https://app.example/cb?x=1&error=invalid_scope&error_description=no&state=s+t&iss=https%3A%2F%2Fid.example"
        );
    }
}
