//! Truxe end-to-end tests: real servers on real SQLite and PostgreSQL databases and real Redis.
//! Run them with `./scripts/test`, which starts PostgreSQL and Redis and builds the binaries.

mod support;

mod accounts;
mod authorize;
mod browser;
mod cli;
mod clients;
mod code_flow;
mod foundation;
mod interop;
mod login;
mod mail;
mod mfa;
mod oidc_interop;
mod startup_errors;
mod tokens;
mod users;
