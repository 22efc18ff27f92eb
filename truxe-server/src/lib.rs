//! Truxe server library: configuration, storage, keys and the HTTP application.

pub mod audit;
pub mod client_cache;
pub mod config;
pub mod datadir;
pub mod http;
pub mod jwt;
pub mod keyring;
pub mod keys;
pub mod mail;
pub mod metrics;
pub mod mfa;
pub mod model;
pub mod oauth;
pub mod ratelimit;
pub mod secret;
pub mod service;
pub mod shared;
pub mod startup;
pub mod store;
pub mod telemetry;
