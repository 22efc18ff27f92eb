//! Use cases: load → decide → persist. No actix types; the HTTP layer and truxectl both call these.

pub mod authorize;
pub mod clients;
pub mod consents;
pub mod mfa;
pub mod policy;
pub mod sessions;
pub mod sign_in;
pub mod token;
pub mod users;
