//! `ScopeSet`: a parsed, de-duplicated set of RFC 6749 §3.3 scope tokens.

use std::collections::BTreeSet;
use std::fmt;

#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct ScopeSet(BTreeSet<String>);

/// scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
pub fn is_scope_token(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= 128
        && token.bytes().all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

impl ScopeSet {
    /// Parses a space-delimited scope string. Empty input is the empty set; consecutive spaces
    /// and invalid characters are errors (the RFC grammar allows exactly one space between tokens).
    pub fn parse(value: &str) -> Result<Self, String> {
        if value.is_empty() {
            return Ok(Self::default());
        }
        let mut set = BTreeSet::new();
        for token in value.split(' ') {
            if !is_scope_token(token) {
                return Err(if token.is_empty() {
                    "scope tokens are separated by exactly one space".to_string()
                } else {
                    "scope contains a character outside the RFC 6749 scope-token set".to_string()
                });
            }
            set.insert(token.to_string());
        }
        Ok(Self(set))
    }

    pub fn from_tokens<I, S>(tokens: I) -> Result<Self, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut set = BTreeSet::new();
        for token in tokens {
            let token = token.as_ref();
            if !is_scope_token(token) {
                return Err(format!("{token:?} is not a valid scope"));
            }
            set.insert(token.to_string());
        }
        Ok(Self(set))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }
    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
    /// The members of `self` not in `other`.
    pub fn difference(&self, other: &ScopeSet) -> Vec<String> {
        self.0.difference(&other.0).cloned().collect()
    }
    /// The members of both.
    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet(self.0.intersection(&other.0).cloned().collect())
    }
    pub fn without(&self, remove: &[&str]) -> ScopeSet {
        ScopeSet(self.0.iter().filter(|s| !remove.contains(&s.as_str())).cloned().collect())
    }
    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for scope in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(scope)?;
            first = false;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        let set = ScopeSet::parse("openid email profile email").expect("valid");
        assert_eq!(set.len(), 3);
        assert_eq!(set.to_string(), "email openid profile");
        assert!(ScopeSet::parse("").expect("empty").is_empty());
    }

    #[test]
    fn rejects_bad_grammar() {
        for bad in ["a  b", " a", "a ", "a\"b", "a\\b", "caf\u{e9}", "a\tb", "a\0b"] {
            assert!(ScopeSet::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ScopeSet::parse("api:read write/all").is_ok());
    }

    #[test]
    fn subsets() {
        let client = ScopeSet::parse("a b c").expect("valid");
        assert!(ScopeSet::parse("a c").expect("valid").is_subset(&client));
        assert!(!ScopeSet::parse("a d").expect("valid").is_subset(&client));
        assert_eq!(ScopeSet::parse("a d").expect("valid").difference(&client), vec!["d".to_string()]);
        assert_eq!(ScopeSet::parse("a d").expect("valid").intersection(&client).to_string(), "a");
    }
}
