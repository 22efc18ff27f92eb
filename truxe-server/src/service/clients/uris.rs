//! What a registered URI may be: redirect URIs (exact-match targets of the authorization
//! endpoint and of logout) and the metadata pages a browser shows.

pub const MAX_URI_BYTES: usize = 2048;

/// Where a registered redirect URI may point (RFC 9700 §2.1, RFC 8252 §7): an absolute URI
/// without fragment or wildcard, over `https`, or `http` to the loopback interface, or a
/// reverse-domain private-use scheme (`com.example.app:/callback`) for native apps. The URI
/// is kept as written: the authorization endpoint compares it as an exact string.
pub fn check_redirect_uri(uri: &str) -> Result<(), String> {
    check_common(uri)?;
    if uri.contains('*') {
        return Err("wildcards are not allowed: register every redirect URI in full".to_string());
    }
    if uri.contains('#') {
        return Err("must not contain a fragment (#…)".to_string());
    }
    let url = parse_absolute(uri)?;
    match url.scheme() {
        "https" | "http" => check_web_url(uri, &url),
        scheme if scheme.contains('.') => Ok(()),
        scheme => Err(format!(
            "the scheme {scheme:?} is not allowed: use https, http on a loopback address, or a reverse-domain \
             private-use scheme for native apps (com.example.app:/callback)"
        )),
    }
}

/// `client_uri`, `logo_uri`, `tos_uri`, `policy_uri`: pages a browser shows, so `https` (or
/// `http` on the loopback interface, for development).
pub fn check_web_uri(uri: &str) -> Result<(), String> {
    check_common(uri)?;
    let url = parse_absolute(uri)?;
    match url.scheme() {
        "https" | "http" => check_web_url(uri, &url),
        scheme => Err(format!("the scheme {scheme:?} is not allowed: use https")),
    }
}

fn check_common(uri: &str) -> Result<(), String> {
    if uri.is_empty() {
        return Err("must not be empty".to_string());
    }
    if uri.len() > MAX_URI_BYTES {
        return Err(format!("longer than {MAX_URI_BYTES} bytes"));
    }
    // The URL parser would silently drop tabs and line breaks, so the stored string would
    // never match what the parser saw.
    if uri.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err("must not contain spaces or control characters".to_string());
    }
    Ok(())
}

fn parse_absolute(uri: &str) -> Result<url::Url, String> {
    url::Url::parse(uri).map_err(|e| match e {
        url::ParseError::RelativeUrlWithoutBase => {
            "must be an absolute URI (e.g. https://app.example.com/callback)".to_string()
        }
        other => format!("not a valid URI: {other}"),
    })
}

fn check_web_url(uri: &str, url: &url::Url) -> Result<(), String> {
    let scheme = url.scheme();
    // The parser lower-cases the scheme and repairs `https:/host`; exact matching needs the
    // canonical form as written.
    if !uri.starts_with(&format!("{scheme}://")) {
        return Err(format!("must start with {scheme}:// (lower case)"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials (user:password@)".to_string());
    }
    let loopback = match url.host() {
        Some(url::Host::Domain(domain)) => domain == "localhost",
        Some(url::Host::Ipv4(ip)) => ip == std::net::Ipv4Addr::LOCALHOST,
        Some(url::Host::Ipv6(ip)) => ip == std::net::Ipv6Addr::LOCALHOST,
        None => return Err("must name a host".to_string()),
    };
    if scheme == "http" && !loopback {
        return Err("http is allowed only on the loopback interface (127.0.0.1, [::1], localhost); use https".into());
    }
    Ok(())
}
