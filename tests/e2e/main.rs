//! Truxe end-to-end tests: real servers on real SQLite and PostgreSQL databases and real Redis.
//! Run them with `./scripts/test`, which starts PostgreSQL and Redis and builds the binaries.

mod support;

mod accounts;
mod audit;
mod audit_shutdown;
mod authorize;
mod backup;
mod browser;
mod cli;
mod clients;
mod code_flow;
mod codes;
mod consents;
mod doctor;
mod edge;
mod error_reporting;
mod foundation;
mod guide_env;
mod instances;
mod interop;
mod introspection;
mod introspection_rules;
mod key_rotation;
mod login;
mod logout;
mod mail;
mod metrics;
mod mfa;
mod nginx;
mod oidc_interop;
mod packaging;
mod rate_limits;
mod redis_failure;
mod refresh;
mod refresh_reuse;
mod revocation;
mod startup_errors;
mod tls;
mod token_rules;
mod tokens;
mod troubleshooting;
mod userinfo;
mod users;
