//! The authorization endpoint's use case, after `oauth::authorize::validate`: whether the
//! browser must (re-)authenticate, whether the user must be asked for consent, and issuing the
//! authorization code. [`decide`] is pure; the rest persists.

use base64::Engine;
use diesel::Connection;
use sha2::{Digest, Sha256};

use crate::model::client::{Client, GrantType};
use crate::model::request::RequestMeta;
use crate::oauth::authorize::AuthorizationRequest;
use crate::oauth::scope::ScopeSet;
use crate::oauth::{ErrorCode, OAuthError};
use crate::secret::Secret;
use crate::store::audit::{self, AuditAction, AuditEvent};
use crate::store::consents::{self as consent_store, Consent};
use crate::store::grants::{self as grant_store, AuthorizationCode};
use crate::store::{self, AnyConnection, Rollback, StoreError};

/// OIDC Core §11: the scope that asks for a refresh token.
pub const OFFLINE_ACCESS: &str = "offline_access";

/// Who the browser's session signs in, as the authorization endpoint needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authentication {
    pub user_id: crate::model::UserId,
    /// When the user authenticated, epoch seconds.
    pub auth_time: i64,
    /// RFC 8176 values.
    pub amr: Vec<String>,
}

/// What the authorization endpoint does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Send the browser to sign in; `force`: show the form even though a session exists.
    SignIn { force: bool },
    /// `prompt=none` and the request cannot be answered without the user.
    Fail(OAuthError),
    /// Ask the user to allow `scope`.
    AskConsent,
    /// Issue the code for the request's (effective) scope.
    Issue,
}

/// The scope a request is granted if the user agrees: the requested one, without
/// `offline_access` when no refresh token could be issued anyway (OIDC Core §11: the request is
/// then ignored, not refused).
pub fn effective_scope(requested: &ScopeSet, client: &Client, allow_refresh_token: bool) -> ScopeSet {
    if allow_refresh_token && client.allows_grant(GrantType::RefreshToken) {
        requested.clone()
    } else {
        requested.without(&[OFFLINE_ACCESS])
    }
}

/// Whether the user must be asked: never for a `trusted` client or one registered with
/// `require_consent: false`; otherwise when `prompt=consent` asks for it or the consent on
/// record does not cover every scope requested (`offline_access` included, so that offline
/// access is only ever granted by an explicit decision of the user, as OIDC Core §11 wants).
pub fn consent_needed(client: &Client, prompt_consent: bool, scope: &ScopeSet, stored: Option<&ScopeSet>) -> bool {
    if client.trusted || !client.require_consent {
        return false;
    }
    prompt_consent || !stored.is_some_and(|stored| scope.is_subset(stored))
}

/// The next step for a validated request. `signed_in` is the browser's session, `stored` the
/// consent on record for (user, client), `scope` the effective scope.
pub fn decide(
    request: &AuthorizationRequest,
    client: &Client,
    signed_in: Option<&Authentication>,
    stored: Option<&ScopeSet>,
    scope: &ScopeSet,
    now: i64,
) -> Next {
    let must_authenticate = match signed_in {
        None => true,
        Some(auth) => request.prompt.login || request.max_age.is_some_and(|max_age| now - auth.auth_time > max_age),
    };
    if must_authenticate {
        return if request.prompt.none {
            Next::Fail(OAuthError::new(ErrorCode::LoginRequired, "the user must sign in"))
        } else {
            Next::SignIn { force: signed_in.is_some() }
        };
    }
    if consent_needed(client, request.prompt.consent, scope, stored) {
        return if request.prompt.none {
            Next::Fail(OAuthError::new(ErrorCode::ConsentRequired, "the user must allow this application"))
        } else {
            Next::AskConsent
        };
    }
    Next::Issue
}

/// The request as the canonical query of an authorization request: what the consent form
/// carries and where sign-in returns to. `prompt=login` and `max_age` are left out: once the
/// user has just signed in they are satisfied, and keeping them would send the browser back
/// to sign-in forever.
pub fn canonical_params(request: &AuthorizationRequest) -> Vec<(&'static str, String)> {
    let mut params = vec![("response_type", "code".to_string()), ("client_id", request.client_id.to_string())];
    // Only when the request carried it: the token request must then repeat it (RFC 6749 §4.1.3).
    if request.redirect_uri_given {
        params.push(("redirect_uri", request.redirect_uri.clone()));
    }
    params.push(("scope", request.scope.to_string()));
    let optional = [
        ("state", request.state.as_ref()),
        ("nonce", request.nonce.as_ref()),
        ("code_challenge", request.code_challenge.as_ref()),
        ("login_hint", request.login_hint.as_ref()),
    ];
    params.extend(optional.into_iter().filter_map(|(name, value)| value.map(|v| (name, v.clone()))));
    if request.code_challenge.is_some() {
        params.push(("code_challenge_method", "S256".to_string()));
    }
    if request.prompt.consent {
        params.push(("prompt", "consent".to_string()));
    }
    params
}

/// A new authorization code: 256 random bits, base64url.
pub fn new_code() -> Secret<String> {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Hex SHA-256: how codes and refresh tokens are stored. Their 256 random bits make a keyed
/// hash unnecessary.
pub fn token_hash(value: &str) -> String {
    Sha256::digest(value.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

// ---- persistence -----------------------------------------------------------------------------

/// The scopes the user allowed `client_id` so far.
pub fn stored_consent(
    conn: &mut AnyConnection,
    user_id: &str,
    client_id: &str,
) -> Result<Option<ScopeSet>, StoreError> {
    let Some(consent) = consent_store::find(conn, user_id, client_id)? else {
        return Ok(None);
    };
    // A row that does not parse grants nothing; the user is asked again.
    Ok(ScopeSet::parse(&consent.scope).ok())
}

/// Records that the user allowed `scope`, adding to what they allowed before.
///
/// The row is read outside the transaction and written with a compare-and-set, so that every
/// transaction starts with its write: on SQLite a transaction that reads first and writes later
/// fails at once when another connection wrote in between, instead of waiting for the lock.
pub fn grant_consent(
    conn: &mut AnyConnection,
    user_id: &str,
    client_id: &str,
    scope: &ScopeSet,
    origin: &RequestMeta,
    now: i64,
) -> Result<ScopeSet, StoreError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        let existing = consent_store::find(conn, user_id, client_id)?;
        let merged = match &existing {
            Some(existing) => union(&ScopeSet::parse(&existing.scope).unwrap_or_default(), scope),
            None => scope.clone(),
        };
        let written = conn.transaction(|conn| {
            let written = match &existing {
                Some(existing) => {
                    consent_store::replace_scope(conn, user_id, client_id, &existing.scope, &merged.to_string(), now)?
                }
                None => {
                    let row = Consent {
                        user_id: user_id.into(),
                        client_id: client_id.into(),
                        scope: merged.to_string(),
                        created_at: now,
                        updated_at: now,
                    };
                    consent_store::insert(conn, &row)?;
                    true
                }
            };
            if written {
                let details = serde_json::json!({ "scope": scope.to_string(), "consented": merged.to_string() });
                audit::record(
                    conn,
                    &AuditEvent::by_user(AuditAction::ConsentGranted, user_id)
                        .subject(client_id)
                        .client(client_id)
                        .from_request(origin)
                        .details(details),
                    now,
                )?;
            }
            Ok::<_, StoreError>(written)
        });
        match written {
            Ok(true) => return Ok(merged),
            // Another tab changed or created the row meanwhile: merge into what it wrote.
            Ok(false)
            | Err(StoreError::Query(diesel::result::Error::DatabaseError(
                diesel::result::DatabaseErrorKind::UniqueViolation,
                _,
            ))) if attempts < 5 => continue,
            Ok(false) => return Err(StoreError::Corrupt("the consent kept changing while being recorded".into())),
            Err(error) => return Err(error),
        }
    }
}

fn union(a: &ScopeSet, b: &ScopeSet) -> ScopeSet {
    ScopeSet::from_tokens(a.iter().chain(b.iter())).unwrap_or_else(|_| b.clone())
}

/// Issues an authorization code for `request`, bound to its client, redirect URI, PKCE
/// challenge and nonce, valid `ttl_secs`. Returns the code for the redirect; `None` (nothing
/// stored) when the user was disabled or deleted meanwhile.
pub fn issue_code(
    conn: &mut AnyConnection,
    request: &AuthorizationRequest,
    auth: &Authentication,
    scope: &ScopeSet,
    ttl_secs: i64,
    origin: &RequestMeta,
    now: i64,
) -> Result<Option<Secret<String>>, StoreError> {
    let code = new_code();
    let row = AuthorizationCode {
        code_hash: token_hash(code.secret()),
        client_id: request.client_id.clone(),
        user_id: auth.user_id.clone(),
        redirect_uri: request.redirect_uri.clone(),
        scope: scope.to_string(),
        code_challenge: request.code_challenge.clone(),
        code_challenge_method: request.code_challenge.as_ref().map(|_| "S256".to_string()),
        nonce: request.nonce.clone(),
        auth_time: auth.auth_time,
        amr: auth.amr.join(" "),
        created_at: now,
        expires_at: now.saturating_add(ttl_secs.max(1)),
        consumed_at: None,
        grant_id: None,
        redirect_uri_given: request.redirect_uri_given,
    };
    let written = store::transaction(conn, |conn| {
        grant_store::insert_code(conn, &row)?;
        // Ordered against a concurrent disable of the user (see `store::users::lock_active`).
        if !crate::store::users::lock_active(conn, &auth.user_id)? {
            // Rolls the insert back: the user was disabled or deleted meanwhile.
            return Err(Rollback::Abort(()));
        }
        audit::record(
            conn,
            &AuditEvent::by_user(AuditAction::AuthorizationGranted, &auth.user_id)
                .subject(&request.client_id)
                .client(&request.client_id)
                .from_request(origin)
                .details(serde_json::json!({
                    "scope": row.scope,
                    "redirect_uri": row.redirect_uri,
                    "pkce": row.code_challenge.is_some(),
                    "expires_at": row.expires_at,
                })),
            now,
        )?;
        Ok(())
    })?;
    Ok(written.ok().map(|()| code))
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::oauth::authorize::Prompt;

    fn client() -> Client {
        Client { ..Client::example() }
    }

    fn request(scope: &str) -> AuthorizationRequest {
        AuthorizationRequest {
            client_id: "cl_app".into(),
            redirect_uri: "https://app.example/cb".into(),
            redirect_uri_given: true,
            scope: ScopeSet::parse(scope).expect("scope"),
            state: Some("s".into()),
            nonce: Some("n".into()),
            code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
            prompt: Prompt::default(),
            max_age: None,
            login_hint: None,
        }
    }

    fn auth(auth_time: i64) -> Authentication {
        Authentication { user_id: "usr_1".into(), auth_time, amr: vec!["email".into()] }
    }

    fn scopes(s: &str) -> ScopeSet {
        ScopeSet::parse(s).expect("scope")
    }

    #[test]
    fn sign_in_comes_first() {
        let c = client();
        let r = request("openid email");
        let s = r.scope.clone();
        assert_eq!(decide(&r, &c, None, None, &s, 100), Next::SignIn { force: false });

        let mut login = request("openid email");
        login.prompt.login = true;
        assert_eq!(decide(&login, &c, Some(&auth(99)), None, &s, 100), Next::SignIn { force: true });

        let mut max_age = request("openid email");
        max_age.max_age = Some(60);
        assert_eq!(decide(&max_age, &c, Some(&auth(40)), None, &s, 100), Next::AskConsent, "60 s ago is fine");
        assert_eq!(decide(&max_age, &c, Some(&auth(39)), None, &s, 100), Next::SignIn { force: true });

        let mut none = request("openid email");
        none.prompt.none = true;
        let Next::Fail(error) = decide(&none, &c, None, None, &s, 100) else { panic!("login_required") };
        assert_eq!(error.code, ErrorCode::LoginRequired);
    }

    #[test]
    fn consent_rules() {
        let c = client();
        let r = request("openid email");
        let s = r.scope.clone();
        let a = auth(100);
        assert_eq!(decide(&r, &c, Some(&a), None, &s, 100), Next::AskConsent);
        assert_eq!(decide(&r, &c, Some(&a), Some(&scopes("openid email profile")), &s, 100), Next::Issue);
        assert_eq!(decide(&r, &c, Some(&a), Some(&scopes("openid")), &s, 100), Next::AskConsent, "a new scope");

        let mut again = request("openid email");
        again.prompt.consent = true;
        assert_eq!(decide(&again, &c, Some(&a), Some(&scopes("openid email")), &s, 100), Next::AskConsent);

        let mut none = request("openid email");
        none.prompt.none = true;
        let Next::Fail(error) = decide(&none, &c, Some(&a), None, &s, 100) else { panic!("consent_required") };
        assert_eq!(error.code, ErrorCode::ConsentRequired);
        assert_eq!(decide(&none, &c, Some(&a), Some(&scopes("openid email")), &s, 100), Next::Issue);

        let trusted = Client { trusted: true, ..client() };
        assert_eq!(decide(&again, &trusted, Some(&a), None, &s, 100), Next::Issue);
        let no_consent = Client { require_consent: false, ..client() };
        assert_eq!(decide(&r, &no_consent, Some(&a), None, &s, 100), Next::Issue);
    }

    #[test]
    fn offline_access_needs_refresh_tokens() {
        let requested = scopes("openid offline_access");
        assert_eq!(effective_scope(&requested, &client(), true), requested);
        assert_eq!(effective_scope(&requested, &client(), false), scopes("openid"));
        let no_refresh = Client { grant_types: vec![GrantType::AuthorizationCode], ..client() };
        assert_eq!(effective_scope(&requested, &no_refresh, true), scopes("openid"));
    }

    #[test]
    fn canonical_params_drop_what_sign_in_satisfies() {
        let mut r = request("openid email");
        r.prompt.login = true;
        r.prompt.consent = true;
        r.max_age = Some(0);
        let params = canonical_params(&r);
        let get = |name: &str| params.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
        assert_eq!(get("prompt"), Some("consent"));
        assert_eq!(get("max_age"), None);
        assert_eq!(get("code_challenge_method"), Some("S256"));
        assert_eq!(get("scope"), Some("email openid"));
        assert_eq!(get("login_hint"), None);
    }

    #[test]
    fn codes_are_random_and_hashed() {
        let (a, b) = (new_code(), new_code());
        assert_ne!(a.secret(), b.secret());
        assert_eq!(a.secret().len(), 43);
        assert_eq!(token_hash(a.secret()).len(), 64);
        assert_eq!(
            token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "SHA-256 test vector"
        );
    }

    #[test]
    fn unions() {
        assert_eq!(union(&scopes("a b"), &scopes("b c")), scopes("a b c"));
    }
}
