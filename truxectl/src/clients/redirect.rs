//! The `redirect_uri_mismatch` tool: whether a presented redirect URI matches one a client
//! registered, by the server's own rule (exact strings; any port for an `http` loopback IP
//! literal), and if not, which registered one is closest and how the two differ, in words.

use serde::Serialize;
use truxe_server::oauth::authorize::redirect_uri_matches;

/// The answer for one presented URI.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub redirect_uri: String,
    pub matches: bool,
    /// The registered URI it matches (exactly, or a loopback one on another port).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<String>,
    /// Without a match: the registered URI it is closest to, and how it differs from it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub closest: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<String>,
}

pub fn check(registered: &[String], presented: &str) -> Check {
    if let Some(matched) = registered.iter().find(|r| redirect_uri_matches(r, presented)) {
        return Check {
            redirect_uri: presented.to_string(),
            matches: true,
            matched: Some(matched.clone()),
            closest: None,
            differences: Vec::new(),
        };
    }
    let closest = registered
        .iter()
        .map(|r| (differences(r, presented), r))
        .min_by_key(|(differences, r)| (differences.len(), strsim::levenshtein(r, presented)));
    let (differences, closest) = match closest {
        Some((differences, r)) => (differences, Some(r.clone())),
        None => (vec!["the client has no redirect URIs registered".to_string()], None),
    };
    Check { redirect_uri: presented.to_string(), matches: false, matched: None, closest, differences }
}

/// A URI cut into the parts people get wrong, as written (nothing normalised).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Parts<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<&'a str>,
    path: &'a str,
    query: Option<&'a str>,
    fragment: Option<&'a str>,
}

fn split(uri: &str) -> Option<Parts<'_>> {
    let (scheme, rest) = uri.split_once(':')?;
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, fragment)) => (rest, Some(fragment)),
        None => (rest, None),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = match rest.strip_prefix("//") {
        Some(after) => after.find('/').map_or((after, ""), |at| (&after[..at], &after[at..])),
        // `com.example.app:/callback`: no authority.
        None => ("", rest),
    };
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    // `[::1]:8080`, `host:8080`, `host`.
    let (host, port) = match authority.rfind(':') {
        Some(at) if !authority[at..].contains(']') => (&authority[..at], Some(&authority[at + 1..])),
        _ => (authority, None),
    };
    Some(Parts { scheme, host, port, path, query, fragment })
}

fn default_port(scheme: &str) -> Option<&'static str> {
    match scheme.to_ascii_lowercase().as_str() {
        "https" => Some("443"),
        "http" => Some("80"),
        _ => None,
    }
}

/// One part that differs, in words.
fn part(found: &mut Vec<String>, what: &str, registered: &str, presented: &str) {
    if registered == presented {
        return;
    }
    if registered.eq_ignore_ascii_case(presented) {
        found.push(format!("{what} in other letter case: {registered:?} registered, {presented:?} presented"));
    } else {
        found.push(format!("{what}: {registered:?} registered, {presented:?} presented"));
    }
}

/// How `presented` differs from `registered`, one phrase per difference; empty when they are
/// the same string.
pub fn differences(registered: &str, presented: &str) -> Vec<String> {
    if registered == presented {
        return Vec::new();
    }
    let mut found = Vec::new();
    if presented.trim() != presented {
        found.push("the presented URI has whitespace at its start or end".to_string());
    }
    if registered.trim() != registered {
        found.push("the registered URI has whitespace at its start or end".to_string());
    }
    let (Some(r), Some(p)) = (split(registered.trim()), split(presented.trim())) else {
        if found.is_empty() {
            found.push(format!("not the same string: {registered:?} is registered, {presented:?} was presented"));
        }
        return found;
    };
    part(&mut found, "scheme", r.scheme, p.scheme);
    part(&mut found, "host", r.host, p.host);
    match (r.port, p.port) {
        (a, b) if a == b => {}
        (None, Some(port)) if default_port(p.scheme) == Some(port) => found.push(format!(
            "the presented URI names the default port :{port} explicitly; the registered one leaves it out \
             (the same server, but not the same string)"
        )),
        (Some(port), None) if default_port(r.scheme) == Some(port) => found.push(format!(
            "the registered URI names the default port :{port} explicitly; the presented one leaves it out \
             (the same server, but not the same string)"
        )),
        (a, b) => found.push(format!(
            "port: {} registered, {} presented",
            a.map_or("none".to_string(), |p| format!(":{p}")),
            b.map_or("none".to_string(), |p| format!(":{p}"))
        )),
    }
    if r.path != p.path {
        if r.path.trim_end_matches('/') == p.path.trim_end_matches('/') {
            if p.path.ends_with('/') {
                found
                    .push("trailing slash: the presented URI ends with \"/\", the registered one does not".to_string());
            } else {
                found
                    .push("trailing slash: the registered URI ends with \"/\", the presented one does not".to_string());
            }
        } else {
            part(&mut found, "path", r.path, p.path);
        }
    }
    let or_none = |v: Option<&str>| v.map_or_else(|| "none".to_string(), |v| v.to_string());
    if r.query != p.query {
        found.push(format!("query: {} registered, {} presented", or_none(r.query), or_none(p.query)));
    }
    if r.fragment != p.fragment {
        found.push(format!("fragment: {} registered, {} presented", or_none(r.fragment), or_none(p.fragment)));
    }
    if found.is_empty() {
        // Same parts, different strings: percent-encoding or the like.
        found.push(format!("written differently: {registered:?} registered, {presented:?} presented"));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registered() -> Vec<String> {
        ["https://app.example.com/callback", "http://127.0.0.1:8080/cb", "com.example.app:/oauth"]
            .map(String::from)
            .to_vec()
    }

    fn one(presented: &str) -> (Option<String>, Vec<String>) {
        let check = check(&registered(), presented);
        assert!(!check.matches, "{presented}");
        (check.closest, check.differences)
    }

    #[test]
    fn exact_and_loopback_matches() {
        let exact = check(&registered(), "https://app.example.com/callback");
        assert!(exact.matches && exact.differences.is_empty());
        let loopback = check(&registered(), "http://127.0.0.1:53122/cb");
        assert_eq!(loopback.matched.as_deref(), Some("http://127.0.0.1:8080/cb"), "any port on a loopback IP");
    }

    #[test]
    fn each_difference_is_named_against_the_closest_registered_uri() {
        let cases: [(&str, &str, &str); 9] = [
            ("https://app.example.com/callback/", "https://app.example.com/callback", "trailing slash"),
            ("https://App.example.com/callback", "https://app.example.com/callback", "host in other letter case"),
            ("http://app.example.com/callback", "https://app.example.com/callback", "scheme"),
            ("https://app.example.com:443/callback", "https://app.example.com/callback", "default port :443"),
            (
                "https://app.example.com:8443/callback",
                "https://app.example.com/callback",
                "port: none registered, :8443",
            ),
            ("https://app.example.com/Callback", "https://app.example.com/callback", "path in other letter case"),
            ("https://app.example.com/callback?x=1", "https://app.example.com/callback", "query: none registered, x=1"),
            ("https://app.example.com/callback ", "https://app.example.com/callback", "whitespace"),
            ("http://localhost:8080/cb", "http://127.0.0.1:8080/cb", "host: \"127.0.0.1\" registered"),
        ];
        for (presented, closest, says) in cases {
            let (found, differences) = one(presented);
            assert_eq!(found.as_deref(), Some(closest), "{presented}");
            assert!(differences.iter().any(|d| d.contains(says)), "{presented}: {differences:?}");
        }
    }

    #[test]
    fn odd_input_is_described_not_refused() {
        let (_, differences) = one("not a uri");
        assert!(!differences.is_empty());
        let none = check(&[], "https://app.example.com/callback");
        assert!(!none.matches && none.closest.is_none());
        assert!(none.differences[0].contains("no redirect URIs"));
        assert_eq!(split("http://[::1]:8080/cb").map(|p| (p.host, p.port)), Some(("[::1]", Some("8080"))));
        assert_eq!(split("com.example.app:/oauth").map(|p| (p.host, p.path)), Some(("", "/oauth")));
    }
}
