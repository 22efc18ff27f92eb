//! Error reporting and the Datadog user's path, against the real binary and receivers the test
//! starts: `SENTRY_DSN` sends an internal error to a local Sentry receiver (and nothing that
//! names a secret or a person); `OTEL_EXPORTER_OTLP_ENDPOINT` sends the spans of a token request
//! over OTLP/HTTP; `/metrics` (on `METRICS_PORT`) is what the Agent's OpenMetrics check reads;
//! `DATADOG_API_KEY` is explained at start. Bad values stop the start with exit 78.

use std::path::Path;
use std::time::Duration;

use diesel::Connection;
use diesel::connection::SimpleConnection;
use prost::Message;
use serde_json::{Value, json};

use crate::support::oauth::basic;
use crate::support::process::{ServerProcess, server_fails, text};
use crate::support::receiver::{Received, Receiver};
use crate::support::{ADMIN_TOKEN, free_port, test_key_pem};

const WAIT: Duration = Duration::from_secs(30);
const SENTRY_KEY: &str = "e2e0public0key";

/// What the spawned servers here share: the test key, a known admin token, the log at `level`.
fn base_env(level: &str) -> Vec<(&'static str, String)> {
    vec![("JWT_PRIVATE_KEY", test_key_pem()), ("ADMIN_TOKEN", ADMIN_TOKEN.into()), ("LOG_LEVEL", level.into())]
}

fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// A confidential machine client, registered through the admin API: (client_id, client_secret).
async fn register_machine(base: &str) -> (String, String) {
    let created: Value = reqwest::Client::new()
        .post(format!("{base}/oauth-provider/clients"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "client_name": "billing worker",
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic",
            "allowed_scopes": ["openid"],
        }))
        .send()
        .await
        .expect("register")
        .json()
        .await
        .expect("json");
    let id = created["client_id"].as_str().expect("client_id").to_string();
    (id, created["client_secret"].as_str().expect("client_secret").to_string())
}

async fn client_credentials(base: &str, id: &str, secret: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(format!("{base}/oauth-provider/token"))
        .header("Authorization", basic(id, secret))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("User-Agent", "e2e-private-agent/1.0")
        .body("grant_type=client_credentials")
        .send()
        .await
        .expect("token request");
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

/// The items of a Sentry envelope: (item header, payload) pairs after the envelope header.
fn envelope_items(body: &[u8]) -> Vec<(Value, Value)> {
    let text = String::from_utf8_lossy(body);
    let mut lines = text.lines().skip(1);
    let mut items = Vec::new();
    while let (Some(header), Some(payload)) = (lines.next(), lines.next()) {
        let header: Value = serde_json::from_str(header).expect("item header");
        items.push((header, serde_json::from_str(payload).unwrap_or(Value::Null)));
    }
    items
}

fn events(received: &[Received]) -> Vec<Value> {
    received
        .iter()
        .filter(|r| r.method == "POST" && r.path == "/api/42/envelope/")
        .flat_map(|r| envelope_items(&r.body))
        .filter(|(header, _)| header["type"] == "event")
        .map(|(_, payload)| payload)
        .collect()
}

/// A client row with a value no version of Truxe writes is a genuine internal error (the
/// store reports "stored data is inconsistent", the token endpoint answers 500): exactly one
/// event reaches Sentry, with the cause, and no secret, address or user agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_internal_error_reaches_sentry_without_secrets() {
    let sentry = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let dsn = format!("http://{SENTRY_KEY}@127.0.0.1:{}/42", sentry.port);
    let mut env = base_env("info");
    env.push(("SENTRY_DSN", dsn));
    let port = free_port();
    let server = ServerProcess::start(dir.path(), &refs(&env), port).await;
    let base = server.url("");
    let (client_id, secret) = register_machine(&base).await;
    corrupt_client(&dir.path().join("truxe-data/truxe.db"), &client_id);

    let (status, body) = client_credentials(&base, &client_id, &secret).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"], "server_error");
    assert_eq!(body["error_description"], "internal error", "no detail for the caller");
    let event = sentry.wait_for(WAIT, |received| events(received).into_iter().next()).await;

    let (status, output) = server.terminate();
    assert!(status.success(), "{output}");
    // Stopping flushed the queue: everything sent is here now.
    let received = sentry.all();
    assert_eq!(events(&received).len(), 1, "one event per failure, not one per log line:\n{output}");
    let envelope = received.iter().find(|r| r.path == "/api/42/envelope/").expect("an envelope");
    let auth = envelope.header("x-sentry-auth").unwrap_or_default();
    assert!(auth.contains(&format!("sentry_key={SENTRY_KEY}")), "{auth}");

    // `error` is the protocol's default level, which the SDK leaves out.
    assert!(event.get("level").is_none_or(|level| level == "error"), "{event}");
    assert_eq!(event["release"], format!("truxe@{}", env!("CARGO_PKG_VERSION")), "{event}");
    assert_eq!(event["environment"], "development", "{event}");
    let message = event["logentry"]["message"].as_str().or(event["message"].as_str()).unwrap_or_default();
    assert_eq!(message, "storage failure", "{event}");
    let text = event.to_string();
    assert!(
        text.contains(&format!("oauth_clients row {client_id}: invalid token_endpoint_auth_method")),
        "the cause is in the event: {event}"
    );
    assert!(event.get("request").is_none() && event.get("user").is_none(), "{event}");
    let everything: String = received.iter().map(|r| String::from_utf8_lossy(&r.body).to_string()).collect();
    for secret in [secret.as_str(), ADMIN_TOKEN, "e2e-private-agent", "Basic "] {
        assert!(!everything.contains(secret), "{secret:?} was sent to Sentry");
    }
    assert!(!output.contains(&secret), "the secret is not in the log either");
}

/// Sets a value no version of Truxe writes, straight in the server's SQLite file.
fn corrupt_client(database: &Path, client_id: &str) {
    let mut conn = diesel::SqliteConnection::establish(&database.display().to_string()).expect("open the database");
    conn.batch_execute(&format!(
        "PRAGMA busy_timeout = 10000; UPDATE oauth_clients SET token_endpoint_auth_method = 'telepathy' \
         WHERE client_id = '{client_id}'"
    ))
    .expect("corrupt the client");
}

/// The Datadog user's path: the Agent's OTLP receiver gets the spans of a token request (even
/// with the log at `warn`), its OpenMetrics check reads `/metrics` on `METRICS_PORT`, and
/// `DATADOG_API_KEY` is explained rather than "not acted on".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_datadog_path_traces_over_otlp_and_metrics_on_their_port() {
    let agent = Receiver::start().await;
    let dir = tempfile::tempdir().expect("tmp");
    let metrics_port = free_port();
    let mut env = base_env("warn");
    env.extend([
        ("OTEL_EXPORTER_OTLP_ENDPOINT", agent.base_url()),
        ("OTEL_SERVICE_NAME", "truxe-e2e".into()),
        ("DATADOG_API_KEY", "dd0e2e0api0key0never0shown".into()),
        ("METRICS_PORT", metrics_port.to_string()),
    ]);
    let port = free_port();
    let server = ServerProcess::start(dir.path(), &refs(&env), port).await;
    let base = server.url("");
    let (client_id, secret) = register_machine(&base).await;
    let (status, body) = client_credentials(&base, &client_id, &secret).await;
    assert_eq!(status, 200, "{body}");

    // What the OpenMetrics check reads: Prometheus text, on METRICS_PORT only.
    let scraped = crate::metrics::scrape_url(&format!("http://127.0.0.1:{metrics_port}/metrics")).await;
    assert_eq!(scraped.count("truxe_tokens_issued_total", &[("grant_type", "client_credentials")]), 1.0);
    let main_port = reqwest::get(server.url("/metrics")).await.expect("GET");
    assert_eq!(main_port.status(), 404);

    let (status, output) = server.terminate();
    assert!(status.success(), "{output}");
    // Stopping sent the last batch.
    let spans = decoded_spans(&agent.all());
    let token_span = spans.iter().find(|(_, span)| span.name == "POST /oauth-provider/token").unwrap_or_else(|| {
        panic!("no token request span in {:?}", spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>())
    });
    let (service, span) = token_span;
    assert_eq!(service, "truxe-e2e");
    let attribute = |key: &str| {
        span.attributes.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.clone())
    };
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    assert_eq!(attribute("http.route"), Some(Any::StringValue("/oauth-provider/token".into())));
    assert!(attribute("request_id").is_some(), "the request id links the trace to the log");
    assert_eq!(span.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32);
    for received in agent.all() {
        assert_eq!(received.path, "/v1/traces");
        assert_eq!(received.header("content-type"), Some("application/x-protobuf"));
    }

    assert!(
        output.contains("DATADOG_API_KEY is not used by Truxe: the Datadog Agent holds the key"),
        "the explanation is printed:\n{output}"
    );
    assert!(output.contains(&format!("http://THIS_HOST:{metrics_port}/metrics")), "{output}");
    assert!(!output.contains("not acted on"), "{output}");
    assert!(!output.contains("dd0e2e0api0key0never0shown"), "the key is never printed:\n{output}");
}

/// (service.name, span) of every span the receiver got.
fn decoded_spans(received: &[Received]) -> Vec<(String, opentelemetry_proto::tonic::trace::v1::Span)> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
    let mut spans = Vec::new();
    for request in received.iter().filter(|r| r.path == "/v1/traces") {
        let export = ExportTraceServiceRequest::decode(request.body.as_slice()).expect("an OTLP protobuf body");
        for resource_spans in export.resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.clone());
            let service = match service {
                Some(Any::StringValue(name)) => name,
                _ => String::new(),
            };
            for scope in resource_spans.scope_spans {
                spans.extend(scope.spans.into_iter().map(|span| (service.clone(), span)));
            }
        }
    }
    spans
}

/// Bad values of the new variables stop the start (exit 78) with a message naming them.
#[test]
fn bad_metrics_and_reporting_values_are_configuration_errors() {
    let cwd = tempfile::tempdir().expect("tmp");
    let port = free_port().to_string();
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: [Case<'_>; 5] = [
        (&[("METRICS_PORT", "metrics")], &["METRICS_PORT", "not a port number"]),
        (&[("METRICS_PORT", port.as_str()), ("PORT", port.as_str())], &["METRICS_PORT", "is also PORT"]),
        (&[("SENTRY_DSN", "https://sentry.example.com/42")], &["SENTRY_DSN", "https://PUBLIC_KEY@HOST/PROJECT_ID"]),
        (&[("SENTRY_DSN", "https://s3cr3tkey@sentry.example.com/")], &["SENTRY_DSN", "not a Sentry DSN"]),
        (&[("OTEL_EXPORTER_OTLP_ENDPOINT", "localhost:4318")], &["OTEL_EXPORTER_OTLP_ENDPOINT", "http(s) URL"]),
    ];
    for (env, expected) in cases {
        let mut env = env.to_vec();
        env.push(("LOG_LEVEL", "warn"));
        let output = server_fails(cwd.path(), &env, &[]);
        let message = text(&output);
        assert_eq!(output.status.code(), Some(78), "{env:?}:\n{message}");
        for needle in expected {
            assert!(message.contains(needle), "expected {needle:?} for {env:?} in:\n{message}");
        }
        assert!(!message.contains("s3cr3tkey"), "the DSN's key is never printed:\n{message}");
    }
}
