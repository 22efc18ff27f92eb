//! The headers every response carries, whichever handler or middleware made it (404s, 405s,
//! 429s, 503s included). A handler that sets one of them keeps its own: pages set their stricter
//! page policy (`pages::CONTENT_SECURITY_POLICY`), discovery and the JWKS a public `Cache-Control`.
//!
//! `Cache-Control: no-store` is the default of every response, so that nothing carrying a token,
//! a code or a secret can be stored by a cache because one handler forgot it; the only cacheable
//! answers are those that ask for it.

use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;

use crate::config::Config;

/// For answers that are not pages (JSON): nothing may load, nothing may frame.
pub const API_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; frame-ancestors 'none'";

/// One year, subdomains included (the guide's nginx value); sent only when the issuer is https,
/// since a browser ignores it over http and an http issuer is a development server.
pub const STRICT_TRANSPORT_SECURITY: &str = "max-age=31536000; includeSubDomains";

pub fn middleware(config: &Config) -> DefaultHeaders {
    let headers = DefaultHeaders::new()
        .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .add((header::X_FRAME_OPTIONS, "DENY"))
        .add((header::REFERRER_POLICY, "no-referrer"))
        .add((header::CONTENT_SECURITY_POLICY, API_CONTENT_SECURITY_POLICY))
        .add((header::CACHE_CONTROL, "no-store"));
    if config.issuer.starts_with("https://") {
        headers.add((header::STRICT_TRANSPORT_SECURITY, STRICT_TRANSPORT_SECURITY))
    } else {
        headers
    }
}
