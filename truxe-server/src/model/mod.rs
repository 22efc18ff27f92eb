//! Domain records shared by the protocol, service and storage layers.

pub mod client;
pub mod request;
pub mod user;
