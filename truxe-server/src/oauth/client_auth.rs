//! Client authentication at the token, introspection and revocation endpoints (RFC 6749 §2.3):
//! which credentials the request carries, before any lookup.

use base64::Engine;

use super::OAuthError;
use super::form::Form;
use crate::model::client::AuthMethod;
use crate::secret::Secret;

#[derive(Debug)]
pub enum ClientCredentials {
    Basic {
        client_id: String,
        secret: Secret<String>,
    },
    Post {
        client_id: String,
        secret: Secret<String>,
    },
    /// A public client identifies itself without a secret.
    None {
        client_id: String,
    },
}

impl ClientCredentials {
    pub fn client_id(&self) -> &str {
        match self {
            ClientCredentials::Basic { client_id, .. }
            | ClientCredentials::Post { client_id, .. }
            | ClientCredentials::None { client_id } => client_id,
        }
    }

    pub fn secret(&self) -> Option<&Secret<String>> {
        match self {
            ClientCredentials::Basic { secret, .. } | ClientCredentials::Post { secret, .. } => Some(secret),
            ClientCredentials::None { .. } => None,
        }
    }

    pub fn method(&self) -> AuthMethod {
        match self {
            ClientCredentials::Basic { .. } => AuthMethod::ClientSecretBasic,
            ClientCredentials::Post { .. } => AuthMethod::ClientSecretPost,
            ClientCredentials::None { .. } => AuthMethod::None,
        }
    }
}

/// Whether the request tried HTTP Basic: an `invalid_client` answer must then be a 401 with
/// `WWW-Authenticate` (RFC 6749 §5.2), even when the header was malformed.
pub fn basic_attempted(authorization: Option<&str>) -> bool {
    authorization.is_some_and(|h| h.len() >= 6 && h[..6].eq_ignore_ascii_case("basic "))
}

pub fn extract(authorization: Option<&str>, form: &Form) -> Result<ClientCredentials, OAuthError> {
    if let Some(header) = authorization {
        if !basic_attempted(Some(header)) {
            return Err(OAuthError::invalid_client("unsupported authentication scheme; use HTTP Basic"));
        }
        let (client_id, secret) = decode_basic(&header[6..])?;
        if form.get("client_secret").is_some() {
            return Err(OAuthError::invalid_request("client credentials were sent both in the header and in the body"));
        }
        if form.get("client_id").is_some_and(|id| id != client_id) {
            return Err(OAuthError::invalid_request("client_id in the body does not match the Authorization header"));
        }
        return Ok(ClientCredentials::Basic { client_id, secret: Secret::new(secret) });
    }
    let Some(client_id) = form.get("client_id") else {
        return Err(OAuthError::invalid_client("client authentication is required"));
    };
    Ok(match form.get("client_secret") {
        Some(secret) => {
            ClientCredentials::Post { client_id: client_id.to_string(), secret: Secret::new(secret.to_string()) }
        }
        None => ClientCredentials::None { client_id: client_id.to_string() },
    })
}

/// `base64(urlencode(id) ":" urlencode(secret))`, as RFC 6749 §2.3.1 specifies.
fn decode_basic(encoded: &str) -> Result<(String, String), OAuthError> {
    let malformed = || OAuthError::invalid_client("malformed HTTP Basic credentials");
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).map_err(|_| malformed())?;
    let text = String::from_utf8(bytes).map_err(|_| malformed())?;
    let (id, secret) = text.split_once(':').ok_or_else(malformed)?;
    let decode = |s: &str| -> Result<String, OAuthError> {
        let plus_as_space = s.replace('+', " ");
        url::form_urlencoded::parse(format!("v={}", plus_as_space.replace('&', "%26").replace('=', "%3D")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .filter(|v| !v.contains('\u{FFFD}'))
            .ok_or_else(malformed)
    };
    let (id, secret) = (decode(id)?, decode(secret)?);
    if id.is_empty() || secret.is_empty() {
        return Err(malformed());
    }
    Ok((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::ErrorCode;

    fn basic(id: &str, secret: &str) -> String {
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}")))
    }

    #[test]
    fn basic_post_and_none() {
        let empty = Form::parse(b"").expect("form");
        let creds = extract(Some(&basic("cl_a", "cs_b")), &empty).expect("basic");
        assert_eq!((creds.client_id(), creds.method()), ("cl_a", AuthMethod::ClientSecretBasic));
        assert_eq!(creds.secret().map(|s| s.secret().as_str()), Some("cs_b"));

        let post = Form::parse(b"client_id=cl_a&client_secret=cs_b").expect("form");
        let creds = extract(None, &post).expect("post");
        assert_eq!(creds.method(), AuthMethod::ClientSecretPost);

        let public = Form::parse(b"client_id=cl_a").expect("form");
        assert_eq!(extract(None, &public).expect("none").method(), AuthMethod::None);
    }

    #[test]
    fn basic_values_are_form_decoded() {
        let empty = Form::parse(b"").expect("form");
        let creds = extract(Some(&basic("cl%3Aa", "p%2Bq+r")), &empty).expect("basic");
        assert_eq!(creds.client_id(), "cl:a");
        assert_eq!(creds.secret().map(|s| s.secret().as_str()), Some("p+q r"));
    }

    #[test]
    fn bad_combinations() {
        let both = Form::parse(b"client_id=cl_a&client_secret=cs_b").expect("form");
        assert_eq!(extract(Some(&basic("cl_a", "cs_b")), &both).expect_err("both").code, ErrorCode::InvalidRequest);
        let other_id = Form::parse(b"client_id=cl_other").expect("form");
        assert_eq!(
            extract(Some(&basic("cl_a", "cs_b")), &other_id).expect_err("mismatch").code,
            ErrorCode::InvalidRequest
        );
        let empty = Form::parse(b"").expect("form");
        assert_eq!(extract(None, &empty).expect_err("missing").code, ErrorCode::InvalidClient);
        for header in ["Basic !!!", "Basic Y2xfYQ==", "Bearer abc", "Basic "] {
            assert_eq!(extract(Some(header), &empty).expect_err(header).code, ErrorCode::InvalidClient, "{header}");
        }
        assert!(basic_attempted(Some("basic abc")));
        assert!(!basic_attempted(Some("Bearer abc")));
    }
}
