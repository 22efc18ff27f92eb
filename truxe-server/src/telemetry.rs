//! Logs, error reports and traces: `LOG_LEVEL` (JSON lines in production, text for people
//! otherwise), `SENTRY_DSN` (errors and panics to Sentry) and `OTEL_EXPORTER_OTLP_ENDPOINT`
//! (request spans over OTLP/HTTP, e.g. to the Datadog Agent). Each output has a filter of its
//! own, so that `LOG_LEVEL=warn` quiets the log without losing traces.
//!
//! Nothing personal goes to Sentry: the SDK's own collection of personal data is off
//! (`send_default_pii`), no request data is attached (there is no HTTP integration), and the
//! fields that name a person or a network address are removed from every event and breadcrumb
//! ([`scrub_event`]). What remains is what the log holds, which never holds a secret.

use std::borrow::Cow;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use tracing::Level;
use tracing_subscriber::filter::{EnvFilter, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

use crate::config::{Config, OtlpConfig};

/// How long an OTLP export may take before it is given up (the receiver is local: an Agent or
/// a collector).
const OTLP_TIMEOUT: Duration = Duration::from_secs(5);

/// Fields that may name a person or where they are; removed from what goes to Sentry.
const SCRUBBED_FIELDS: [&str; 9] =
    ["ip", "email", "to", "to_domain", "domain", "user_agent", "login_hint", "user_id", "actor"];

/// What stays alive while the process runs: dropping it sends what is queued (Sentry events,
/// spans), waiting at most a few seconds.
#[must_use = "dropping it stops error reporting and tracing"]
#[derive(Default)]
pub struct Telemetry {
    sentry: Option<sentry::ClientInitGuard>,
    tracer: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Telemetry {
    /// Whether errors go to Sentry.
    pub fn reports_errors(&self) -> bool {
        self.sentry.as_ref().is_some_and(|guard| guard.is_enabled())
    }

    /// Whether spans go to an OTLP receiver.
    pub fn exports_traces(&self) -> bool {
        self.tracer.is_some()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(tracer) = self.tracer.take()
            && let Err(error) = tracer.shutdown()
        {
            eprintln!("truxe-server: sending the last spans failed: {error}");
        }
        // The Sentry guard flushes when it is dropped (at most its shutdown timeout).
        self.sentry.take();
    }
}

/// Installs the global subscriber once (later calls, e.g. tests that start several servers, get
/// a `Telemetry` that does nothing) and starts the Sentry client and the OTLP exporter that the
/// configuration asks for. Must run before the async runtime is built: the OTLP exporter's
/// blocking HTTP client has a runtime of its own. `RUST_LOG`, when set, overrides `LOG_LEVEL`
/// for developers who want per-module filters.
pub fn init(config: &Config) -> Telemetry {
    if tracing::dispatcher::has_been_set() {
        return Telemetry::default();
    }
    let filter = std::env::var("RUST_LOG")
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        // The audit log's lines (target `truxe::audit`, at info) are written whatever LOG_LEVEL says.
        .unwrap_or_else(|| EnvFilter::new(format!("{},{}=info", config.log_level, crate::store::audit::LOG_TARGET)));
    let log = if config.is_production() {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .with_filter(filter)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_target(false).with_writer(std::io::stderr).with_filter(filter).boxed()
    };
    let sentry = config.sentry_dsn.as_ref().map(|dsn| sentry::init(sentry_options(dsn.secret(), config)));
    let (tracer, traces) = match &config.otlp {
        Some(otlp) => match tracer_provider(otlp) {
            Ok(provider) => {
                let tracer = provider.tracer("truxe-server");
                let layer = tracing_opentelemetry::layer()
                    .with_tracer(tracer)
                    // Truxe's own spans (the request span and what runs inside it), not the
                    // libraries': the trace shows requests, not connection internals.
                    .with_filter(filter_fn(|metadata| {
                        metadata.is_span()
                            && *metadata.level() <= Level::INFO
                            && metadata.target().starts_with("truxe_server")
                    }));
                (Some(provider), Some(layer))
            }
            Err(error) => {
                eprintln!("truxe-server: OTEL_EXPORTER_OTLP_ENDPOINT: cannot set up the exporter: {error}");
                (None, None)
            }
        },
        None => (None, None),
    };
    // Error lines become Sentry events, except the per-request line, which repeats the error
    // the failing code logged; warnings (and that request line) become breadcrumbs. The
    // breadcrumb layer comes first, so that an error's own breadcrumbs are in its event.
    let breadcrumbs = sentry.as_ref().map(|_| {
        sentry_tracing::BreadcrumbLayer::new().with_filter(filter_fn(|metadata| {
            metadata.is_event()
                && (*metadata.level() == Level::WARN
                    || (*metadata.level() == Level::ERROR && is_access_log(metadata.target())))
        }))
    });
    let errors = sentry.as_ref().map(|_| {
        sentry_tracing::ErrorLayer::new().with_filter(filter_fn(|metadata| {
            metadata.is_event() && *metadata.level() == Level::ERROR && !is_access_log(metadata.target())
        }))
    });
    let installed = Registry::default().with(log).with(breadcrumbs).with(errors).with(traces).try_init();
    if installed.is_err() {
        return Telemetry::default();
    }
    Telemetry { sentry, tracer }
}

fn is_access_log(target: &str) -> bool {
    target == crate::http::request_id::ACCESS_LOG_TARGET
}

/// Sentry's client options: the release and environment, no personal data.
fn sentry_options(dsn: &str, config: &Config) -> sentry::ClientOptions {
    let environment = config
        .sentry_environment
        .clone()
        .unwrap_or_else(|| if config.is_production() { "production".into() } else { "development".into() });
    sentry::ClientOptions::new()
        // Checked by the configuration: a DSN that does not parse never gets here.
        .dsn(dsn)
        .release(concat!("truxe@", env!("CARGO_PKG_VERSION")))
        .environment(environment)
        .send_default_pii(false)
        .attach_stacktrace(false)
        .before_send(|event| Some(scrub_event(event)))
        .before_breadcrumb(|breadcrumb| Some(scrub_breadcrumb(breadcrumb)))
}

/// Removes [`SCRUBBED_FIELDS`], the request and the user from an event.
pub fn scrub_event(mut event: sentry::protocol::Event<'static>) -> sentry::protocol::Event<'static> {
    event.request = None;
    event.user = None;
    for field in SCRUBBED_FIELDS {
        event.extra.remove(field);
        event.tags.remove(field);
    }
    for context in event.contexts.values_mut() {
        if let sentry::protocol::Context::Other(map) = context {
            for field in SCRUBBED_FIELDS {
                map.remove(field);
            }
        }
    }
    event
}

fn scrub_breadcrumb(mut breadcrumb: sentry::protocol::Breadcrumb) -> sentry::protocol::Breadcrumb {
    for field in SCRUBBED_FIELDS {
        breadcrumb.data.remove(field);
    }
    breadcrumb
}

/// Spans in batches, over OTLP/HTTP with protobuf, from the SDK's own export thread with a
/// blocking client (an async client there would have no reactor: DEPENDENCIES.md).
fn tracer_provider(
    otlp: &OtlpConfig,
) -> Result<opentelemetry_sdk::trace::SdkTracerProvider, opentelemetry_otlp::ExporterBuildError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(otlp.traces_endpoint.clone())
        .with_timeout(OTLP_TIMEOUT)
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(Cow::Owned(otlp.service_name.clone()))
        .with_attribute(opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    Ok(opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_fields_never_reach_sentry() {
        let mut event = sentry::protocol::Event::default();
        event.extra.insert("ip".into(), "192.0.2.1".into());
        event.extra.insert("client_id".into(), "cl_1".into());
        event.tags.insert("email".into(), "a@example.com".into());
        let mut fields = sentry::protocol::Map::new();
        fields.insert("user_id".to_string(), "u_1".into());
        fields.insert("error".to_string(), "stored data is inconsistent".into());
        event.contexts.insert("Rust Tracing Fields".into(), sentry::protocol::Context::Other(fields));
        event.user = Some(sentry::protocol::User { email: Some("a@example.com".into()), ..Default::default() });
        let event = scrub_event(event);
        assert!(event.user.is_none());
        assert!(!event.extra.contains_key("ip") && event.extra.contains_key("client_id"));
        assert!(!event.tags.contains_key("email"));
        let Some(sentry::protocol::Context::Other(fields)) = event.contexts.get("Rust Tracing Fields") else {
            panic!("the fields context stays");
        };
        assert!(!fields.contains_key("user_id") && fields.contains_key("error"));

        let mut breadcrumb = sentry::protocol::Breadcrumb::default();
        breadcrumb.data.insert("ip".into(), "192.0.2.1".into());
        breadcrumb.data.insert("path".into(), "/oauth-provider/token".into());
        let breadcrumb = scrub_breadcrumb(breadcrumb);
        assert!(!breadcrumb.data.contains_key("ip") && breadcrumb.data.contains_key("path"));
    }
}
