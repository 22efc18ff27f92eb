//! Domain records shared by the protocol, service and storage layers.

pub mod client;
pub mod ids;
pub mod request;
pub mod user;

pub use ids::{ClientId, GrantId, Jti, UserId};
