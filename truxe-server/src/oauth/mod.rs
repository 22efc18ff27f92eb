//! Pure protocol logic (RFC 6749 and friends): no actix, diesel, Redis or clock reads, so every
//! decision here is unit-testable from plain values.

pub mod client_auth;
pub mod client_secret;
pub mod error;
pub mod form;
pub mod scope;

pub use error::{ErrorCode, OAuthError};
