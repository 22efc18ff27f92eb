//! Structured logging: `LOG_LEVEL`, JSON lines in production, text for people otherwise.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber once; later calls (tests starting several servers) are no-ops.
/// `RUST_LOG`, when set, overrides `LOG_LEVEL` for developers who want per-module filters. The
/// audit log's lines (target `truxe::audit`, at info) are written whatever `LOG_LEVEL` says.
pub fn init(log_level: &str, json: bool) {
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .unwrap_or_else(|| EnvFilter::new(format!("{log_level},{}=info", crate::store::audit::LOG_TARGET)));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _already_installed = if json {
        builder.json().with_current_span(true).with_span_list(false).try_init()
    } else {
        builder.with_target(false).try_init()
    };
}
