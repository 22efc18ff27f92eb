//! Truxe end-to-end tests: real servers on real SQLite and PostgreSQL databases and real Redis.
//! Run them with `./scripts/test`, which starts PostgreSQL and Redis and builds the binaries.

mod support;

mod cli;
mod foundation;
mod startup_errors;
