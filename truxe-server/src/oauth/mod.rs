//! Pure protocol logic (RFC 6749 and friends): no actix, diesel, Redis or clock reads, so every
//! decision here is unit-testable from plain values.

pub mod authorize;
pub mod client_auth;
pub mod client_secret;
pub mod error;
pub mod form;
pub mod id_token;
pub mod pkce;
pub mod scope;

pub use error::{ErrorCode, OAuthError};
