//! `application/x-www-form-urlencoded` request bodies with RFC 6749 §3.2's rule that a
//! parameter may appear at most once.

use std::collections::HashMap;

use super::OAuthError;

#[derive(Debug, Default)]
pub struct Form(HashMap<String, String>);

impl Form {
    pub fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let mut map = HashMap::new();
        for (name, value) in url::form_urlencoded::parse(body) {
            // form_urlencoded replaces invalid UTF-8 with U+FFFD; refuse it instead of guessing.
            if name.contains('\u{FFFD}') || value.contains('\u{FFFD}') {
                return Err(OAuthError::invalid_request("the request body is not valid UTF-8"));
            }
            if map.insert(name.to_string(), value.into_owned()).is_some() {
                return Err(OAuthError::invalid_request(format!("parameter {name} is repeated")));
            }
        }
        Ok(Self(map))
    }

    /// A parameter's value; an empty value counts as absent (RFC 6749 §3.1).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str).filter(|v| !v.is_empty())
    }

    /// Every parameter as sent (empty values included).
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(name, value)| (name.as_str(), value.as_str()))
    }

    pub fn require(&self, name: &str) -> Result<&str, OAuthError> {
        self.get(name).ok_or_else(|| OAuthError::invalid_request(format!("parameter {name} is required")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::ErrorCode;

    #[test]
    fn parses_and_decodes() {
        let form = Form::parse(b"grant_type=client_credentials&scope=a%20b+c&empty=").expect("valid");
        assert_eq!(form.get("grant_type"), Some("client_credentials"));
        assert_eq!(form.get("scope"), Some("a b c"));
        assert_eq!(form.get("empty"), None);
        assert_eq!(form.require("missing").expect_err("missing").code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn repeated_parameters_are_invalid() {
        let err = Form::parse(b"grant_type=a&grant_type=b").expect_err("repeated");
        assert_eq!(err.code, ErrorCode::InvalidRequest);
        assert!(err.description.contains("grant_type"));
    }

    #[test]
    fn invalid_utf8_is_invalid() {
        assert!(Form::parse(b"scope=%FF").is_err());
    }
}
