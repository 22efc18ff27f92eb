//! [`RequestMeta`] from an actix request: the client IP (`client_ip`: the socket's, or the one a
//! trusted proxy names), the request id the middleware gave the request, and the `User-Agent`.
//! Taken once per request, as an extractor or with [`of`].

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage, HttpRequest};

use super::client_ip::ClientIp;
use super::request_id::RequestId;
pub use crate::model::request::RequestMeta;

pub fn of(req: &HttpRequest) -> RequestMeta {
    RequestMeta::new(
        client_ip(req).map(|ip| ip.to_string()),
        req.extensions().get::<RequestId>().map(|id| id.0.clone()),
        req.headers().get(header::USER_AGENT).and_then(|v| v.to_str().ok()),
    )
}

/// The address the rate-limit middleware resolved, else (outside that middleware) the socket's.
pub fn client_ip(req: &HttpRequest) -> Option<std::net::IpAddr> {
    req.extensions().get::<ClientIp>().map(|ip| ip.0).or_else(|| req.peer_addr().map(|addr| addr.ip().to_canonical()))
}

impl FromRequest for RequestMeta {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Ok(of(req)))
    }
}
