//! Per-client token policy until the client model carries it.

use crate::model::client::Client;

pub trait ClientPolicy {
    fn access_token_ttl(&self, server: i64) -> i64;
    fn refresh_token_ttl(&self, server: i64) -> i64;
    fn allowed_audiences(&self) -> &[String];
    fn introspection_audiences(&self) -> &[String];
}

impl ClientPolicy for Client {
    fn access_token_ttl(&self, server: i64) -> i64 {
        server
    }
    fn refresh_token_ttl(&self, server: i64) -> i64 {
        server
    }
    fn allowed_audiences(&self) -> &[String] {
        &[]
    }
    fn introspection_audiences(&self) -> &[String] {
        &[]
    }
}
