//! Domain records shared by the protocol, service and storage layers.

pub mod client;
pub mod user;
