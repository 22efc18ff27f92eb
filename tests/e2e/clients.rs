//! Client registration: the admin API and `truxectl clients`, on SQLite and PostgreSQL.

use diesel::prelude::*;
use reqwest::Method;
use reqwest::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderMap, WWW_AUTHENTICATE};
use serde_json::{Value, json};
use truxe_server::model::client::{Client, ClientStatus};
use truxe_server::service::clients as service;
use truxe_server::store::{self, PooledConnection, schema, server_secrets};

use crate::on_both_backends;
use crate::support::process::{text, truxectl};
use crate::support::{TestDb, TestServer, config_from};

use crate::support::ADMIN_TOKEN;
const CLIENTS: &str = "/oauth-provider/clients";

/// action, actor, subject, ip, request_id, details
type AuditRow = (String, String, Option<String>, Option<String>, Option<String>, String);

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Value,
    raw: String,
}

impl Reply {
    fn field(&self) -> Option<&str> {
        self.body["field"].as_str()
    }

    fn description(&self) -> &str {
        self.body["error_description"].as_str().unwrap_or_default()
    }

    /// A 400 `invalid_request` that names `field`, in `field` and at the start of a description
    /// that says more than the name.
    #[track_caller]
    fn assert_invalid(&self, field: &str, context: impl std::fmt::Display) {
        assert_eq!((self.status, self.field()), (400, Some(field)), "{context}: {}", self.raw);
        assert_eq!(self.body["error"], "invalid_request", "{context}: {}", self.raw);
        let message = self.description().strip_prefix(&format!("{field}: ")).unwrap_or_default();
        assert!(message.len() > 5, "{context}: the description names the field and explains: {}", self.raw);
    }
}

async fn send(server: &TestServer, method: Method, path: &str, token: Option<&str>, body: Option<Value>) -> Reply {
    let mut request = server.client.request(method, server.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    reply(request).await
}

async fn reply(request: reqwest::RequestBuilder) -> Reply {
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let raw = response.text().await.expect("body");
    let body = if raw.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&raw).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {raw:?}"))
    };
    assert_eq!(headers.get(CACHE_CONTROL).and_then(|v| v.to_str().ok()), Some("no-store"), "{status} {raw}");
    Reply { status, headers, body, raw }
}

async fn admin(server: &TestServer, method: Method, path: &str, body: Option<Value>) -> Reply {
    send(server, method, path, Some(ADMIN_TOKEN), body).await
}

async fn create(server: &TestServer, body: Value) -> Reply {
    admin(server, Method::POST, CLIENTS, Some(body)).await
}

/// A server with two audiences and shorter refresh-token and code lifetimes than the defaults.
const POLICY_CONFIG: &[(&str, &str)] = &[
    ("JWT_AUDIENCE", "https://api.example.com,https://reports.example.com"),
    ("TRUXE_SCOPES", "reports:read"),
    ("REFRESH_TOKEN_EXPIRY", "1d"),
    ("OAUTH_AUTHORIZATION_CODE_EXPIRY", "120"),
];
const DEFAULT_API: &str = "https://api.example.com";
const REPORTS_API: &str = "https://reports.example.com";

/// The per-client policy fields of a client's JSON.
fn policies(client: &Value) -> Value {
    let fields = [
        "allowed_audiences",
        "introspection_audiences",
        "access_token_ttl",
        "refresh_token_ttl",
        "authorization_code_ttl",
    ];
    Value::Object(
        fields.iter().map(|f| (f.to_string(), client.get(*f).cloned().unwrap_or_else(|| json!("absent")))).collect(),
    )
}

fn web_app(name: &str) -> Value {
    json!({ "client_name": name, "redirect_uris": ["https://app.example.com/callback"] })
}

fn guide_example() -> Value {
    json!({
        "client_name": "Production App",
        "redirect_uris": ["https://app.yourdomain.com/auth/callback", "https://yourdomain.com/auth/callback"],
        "allowed_scopes": ["openid", "email", "profile"],
        "require_pkce": true,
        "require_consent": false,
        "trusted": true,
        "client_uri": "https://yourdomain.com",
        "logo_uri": "https://yourdomain.com/logo.png",
        "tos_uri": "https://yourdomain.com/terms",
        "policy_uri": "https://yourdomain.com/privacy"
    })
}

/// One connection held for the whole test (no pool threads opening and closing others beside it).
fn connect(db: &TestDb) -> PooledConnection {
    let vars = [("DATABASE_URL", db.url.as_str()), ("DATABASE_POOL_MIN", "0"), ("DATABASE_POOL_MAX", "1")];
    let config = config_from(&vars, &db.dir);
    store::connect(&config.database).expect("connect").get().expect("connection")
}

fn secret_key(conn: &mut PooledConnection) -> Vec<u8> {
    server_secrets::load_or_create(conn, server_secrets::CLIENT_SECRET_HMAC_KEY, store::unix_now())
        .expect("key")
        .into_secret()
}

fn load(conn: &mut PooledConnection, client_id: &str) -> Client {
    service::find(conn, client_id).expect("query").expect("client exists")
}

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or_else(|| panic!("{key} missing in {value}"))
}

on_both_backends! {
    async fn create_confidential_and_public_clients(backend: Backend) {
        let server = TestServer::start(backend).await;

        let created = create(&server, guide_example()).await;
        assert_eq!(created.status, 201, "{}", created.raw);
        let client_id = str_of(&created.body, "client_id").to_string();
        let secret = str_of(&created.body, "client_secret").to_string();
        assert!(client_id.starts_with("cl_") && client_id.len() >= 20, "{client_id}");
        assert!(secret.starts_with("cs_") && secret.len() >= 40, "{secret}");
        assert_eq!(
            created.headers.get("location").and_then(|v| v.to_str().ok()),
            Some(format!("{CLIENTS}/{client_id}").as_str())
        );
        let b = &created.body;
        assert_eq!(b["client_name"], "Production App");
        assert_eq!(b["redirect_uris"].as_array().map(Vec::len), Some(2));
        assert_eq!(b["allowed_scopes"], json!(["email", "openid", "profile"]));
        assert_eq!(b["grant_types"], json!(["authorization_code", "refresh_token"]));
        assert_eq!(b["token_endpoint_auth_method"], "client_secret_basic");
        assert_eq!((b["require_pkce"].clone(), b["require_consent"].clone(), b["trusted"].clone()), (json!(true), json!(false), json!(true)));
        assert_eq!(b["logo_uri"], "https://yourdomain.com/logo.png");
        assert_eq!(b["status"], "active");
        assert!(b["created_at"].as_i64().is_some_and(|t| t > 1_700_000_000), "{b}");
        assert!(b.get("secret_hash").is_none());

        // The secret is shown once: never in later answers.
        let shown = admin(&server, Method::GET, &format!("{CLIENTS}/{client_id}"), None).await;
        assert_eq!(shown.status, 200);
        assert!(shown.body.get("client_secret").is_none(), "{}", shown.raw);
        assert!(!shown.raw.contains(&secret) && !shown.raw.contains("hash"), "{}", shown.raw);
        let listed = admin(&server, Method::GET, CLIENTS, None).await;
        assert!(!listed.raw.contains(&secret) && !listed.raw.contains("cs_"), "{}", listed.raw);

        // Only a keyed hash is stored: the secret appears nowhere in the row.
        let mut conn = connect(&server.db);
        type Row = (String, Option<String>, Option<String>, String, String, String, Option<String>, Option<String>, Option<String>, Option<String>, String);
        let row: Row = schema::oauth_clients::table
            .filter(schema::oauth_clients::client_id.eq(&client_id))
            .select((
                schema::oauth_clients::client_name,
                schema::oauth_clients::secret_hash,
                schema::oauth_clients::previous_secret_hash,
                schema::oauth_clients::token_endpoint_auth_method,
                schema::oauth_clients::grant_types,
                schema::oauth_clients::allowed_scopes,
                schema::oauth_clients::client_uri,
                schema::oauth_clients::logo_uri,
                schema::oauth_clients::tos_uri,
                schema::oauth_clients::policy_uri,
                schema::oauth_clients::status,
            ))
            .first(&mut conn)
            .expect("row");
        let stored_hash = row.1.clone().expect("a confidential client has a hash");
        assert_ne!(stored_hash, secret);
        assert_eq!(stored_hash.len(), 64, "hex HMAC-SHA256");
        let secret_body = &secret[3..];
        assert!(!format!("{row:?}").contains(secret_body), "{row:?}");
        let key = secret_key(&mut conn);
        assert_eq!(stored_hash, truxe_server::oauth::client_secret::hash(&key, &secret));
        let client = load(&mut conn, &client_id);
        assert!(service::authenticate_secret(&client, &key, &secret, store::unix_now()));
        assert!(!service::authenticate_secret(&client, &key, "cs_wrong", store::unix_now()));

        // Public client: no secret at all, PKCE forced.
        let public = create(&server, json!({
            "client_name": "SPA", "token_endpoint_auth_method": "none", "redirect_uris": ["https://spa.example.com/cb"]
        })).await;
        assert_eq!(public.status, 201, "{}", public.raw);
        assert!(public.body.get("client_secret").is_none(), "{}", public.raw);
        assert_eq!(public.body["require_pkce"], true);
        assert_eq!(public.body["token_endpoint_auth_method"], "none");
        let public_client = load(&mut conn, str_of(&public.body, "client_id"));
        assert_eq!(public_client.secret_hash, None);

        // A service account: client_credentials by default when no redirect URI is given.
        let service_account = create(&server, json!({ "client_name": "Billing", "allowed_scopes": ["openid"] })).await;
        assert_eq!(service_account.status, 201, "{}", service_account.raw);
        assert_eq!(service_account.body["grant_types"], json!(["client_credentials"]));

        let refused = create(&server, json!({
            "client_name": "SPA", "token_endpoint_auth_method": "none", "require_pkce": false,
            "redirect_uris": ["https://spa.example.com/cb"]
        })).await;
        refused.assert_invalid("require_pkce", "a public client without PKCE");
        assert!(refused.description().contains("PKCE"), "{}", refused.raw);
    }

    async fn list_is_paginated(backend: Backend) {
        let server = TestServer::start(backend).await;
        let mut ids = Vec::new();
        for i in 0..5 {
            let created = create(&server, web_app(&format!("App {i}"))).await;
            assert_eq!(created.status, 201, "{}", created.raw);
            ids.push(str_of(&created.body, "client_id").to_string());
        }
        ids.sort();

        let mut seen = Vec::new();
        let mut path = format!("{CLIENTS}?limit=2");
        let mut pages = 0;
        loop {
            let page = admin(&server, Method::GET, &path, None).await;
            assert_eq!(page.status, 200, "{}", page.raw);
            let clients = page.body["clients"].as_array().expect("clients").clone();
            assert!(clients.len() <= 2);
            seen.extend(clients.iter().map(|c| str_of(c, "client_id").to_string()));
            pages += 1;
            match page.body["next"].as_str() {
                Some(next) => path = format!("{CLIENTS}?limit=2&after={next}"),
                None => break,
            }
        }
        assert_eq!(pages, 3);
        assert_eq!(seen, ids, "every client once, in client_id order");

        let all = admin(&server, Method::GET, CLIENTS, None).await;
        assert_eq!(all.body["clients"].as_array().map(Vec::len), Some(5));
        assert_eq!(all.body["next"], Value::Null);

        for (query, field) in [
            ("limit=0", "limit"),
            ("limit=201", "limit"),
            ("limit=abc", "limit"),
            ("after=x'--", "after"),
            ("limit=1&limit=2", "limit"),
            ("page=2", "page"),
        ] {
            let bad = admin(&server, Method::GET, &format!("{CLIENTS}?{query}"), None).await;
            bad.assert_invalid(field, query);
        }
    }

    async fn patch_applies_the_rules_to_the_merged_client(backend: Backend) {
        let server = TestServer::start(backend).await;
        let created = create(&server, guide_example()).await;
        let id = str_of(&created.body, "client_id").to_string();
        let path = format!("{CLIENTS}/{id}");

        let patched = admin(&server, Method::PATCH, &path, Some(json!({
            "client_name": "Renamed",
            "redirect_uris": ["https://app.yourdomain.com/callback"],
            "logo_uri": null,
            "require_consent": true,
        }))).await;
        assert_eq!(patched.status, 200, "{}", patched.raw);
        assert_eq!(patched.body["client_name"], "Renamed");
        assert_eq!(patched.body["redirect_uris"], json!(["https://app.yourdomain.com/callback"]));
        assert_eq!(patched.body["logo_uri"], Value::Null);
        assert_eq!(patched.body["tos_uri"], "https://yourdomain.com/terms", "untouched fields stay");
        assert_eq!(patched.body["require_consent"], true);
        assert!(patched.body.get("client_secret").is_none());

        // The deployment guide's own example sends JSON without a Content-Type (curl -d).
        let guide_style = reply(
            server.client.patch(server.url(&path)).bearer_auth(ADMIN_TOKEN)
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(r#"{"redirect_uris": ["https://app.yourdomain.com/callback2"]}"#),
        ).await;
        assert_eq!(guide_style.status, 200, "{}", guide_style.raw);

        let refused = [
            (json!({ "redirect_uris": [] }), "redirect_uris"),
            (json!({ "grant_types": ["refresh_token"] }), "grant_types"),
            (json!({ "token_endpoint_auth_method": "none" }), "token_endpoint_auth_method"),
            (json!({ "allowed_scopes": ["openid", "admin"] }), "allowed_scopes[1]"),
            (json!({ "redirect_uris": ["https://ok.example/cb", "http://evil.example/cb"] }), "redirect_uris[1]"),
            (json!({ "status": "paused" }), "status"),
            (json!({ "client_name": null }), "client_name"),
            (json!({ "colour": "red" }), "colour"),
        ];
        for (body, field) in refused {
            let reply = admin(&server, Method::PATCH, &path, Some(body.clone())).await;
            reply.assert_invalid(field, &body);
        }
        let unchanged = admin(&server, Method::GET, &path, None).await;
        assert_eq!(unchanged.body["client_name"], "Renamed");
        assert_eq!(unchanged.body["redirect_uris"], json!(["https://app.yourdomain.com/callback2"]));

        // Suspension is a status change; the stored client says so.
        let suspended = admin(&server, Method::PATCH, &path, Some(json!({ "status": "suspended" }))).await;
        assert_eq!((suspended.status, suspended.body["status"].as_str()), (200, Some("suspended")), "{}", suspended.raw);
        let mut conn = connect(&server.db);
        let stored = load(&mut conn, &id);
        assert_eq!(stored.status, ClientStatus::Suspended);
        assert!(!stored.is_active());
        let listed = admin(&server, Method::GET, CLIENTS, None).await;
        assert_eq!(listed.body["clients"][0]["status"], "suspended");

        let revoked = admin(&server, Method::PATCH, &path, Some(json!({ "status": "revoked" }))).await;
        assert_eq!(revoked.status, 200);
        let back = admin(&server, Method::PATCH, &path, Some(json!({ "status": "active" }))).await;
        back.assert_invalid("status", "revoked is final");
        assert!(back.description().contains("revoked"), "{}", back.raw);
    }

    async fn delete_then_not_found(backend: Backend) {
        let server = TestServer::start(backend).await;
        let created = create(&server, web_app("Doomed")).await;
        let id = str_of(&created.body, "client_id").to_string();
        let path = format!("{CLIENTS}/{id}");

        let deleted = admin(&server, Method::DELETE, &path, None).await;
        assert_eq!(deleted.status, 204, "{}", deleted.raw);
        assert!(deleted.raw.is_empty());
        for (method, suffix, body) in [
            (Method::GET, "", None),
            (Method::DELETE, "", None),
            (Method::PATCH, "", Some(json!({ "client_name": "x" }))),
            (Method::POST, "/regenerate-secret", None),
        ] {
            let gone = admin(&server, method.clone(), &format!("{path}{suffix}"), body).await;
            assert_eq!(gone.status, 404, "{method} {suffix}: {}", gone.raw);
            assert_eq!(gone.body, json!({ "error": "not_found" }));
        }
        let mut conn = connect(&server.db);
        assert!(service::find(&mut conn, &id).expect("query").is_none());
    }

    async fn regenerate_secret_with_and_without_grace(backend: Backend) {
        let server = TestServer::start(backend).await;
        let created = create(&server, web_app("Rotating")).await;
        let id = str_of(&created.body, "client_id").to_string();
        let first = str_of(&created.body, "client_secret").to_string();
        let rotate = format!("{CLIENTS}/{id}/regenerate-secret");
        let mut conn = connect(&server.db);
        let key = secret_key(&mut conn);
        let now = store::unix_now();

        // No grace: the old secret stops working at once.
        let rotated = admin(&server, Method::POST, &rotate, None).await;
        assert_eq!(rotated.status, 200, "{}", rotated.raw);
        assert_eq!(rotated.body["client_id"], id.as_str());
        let second = str_of(&rotated.body, "client_secret").to_string();
        assert!(second.starts_with("cs_") && second != first);
        let client = load(&mut conn, &id);
        assert!(service::authenticate_secret(&client, &key, &second, now));
        assert!(!service::authenticate_secret(&client, &key, &first, now));

        // With grace: both work until it ends, then only the new one.
        let graced = admin(&server, Method::POST, &rotate, Some(json!({ "grace_seconds": 3600 }))).await;
        assert_eq!(graced.status, 200, "{}", graced.raw);
        let third = str_of(&graced.body, "client_secret").to_string();
        let client = load(&mut conn, &id);
        let until = client.previous_secret_expires_at.expect("grace recorded");
        assert!((now + 3600..=store::unix_now() + 3600).contains(&until), "{until}");
        assert!(service::authenticate_secret(&client, &key, &third, now));
        assert!(service::authenticate_secret(&client, &key, &second, now));
        assert!(service::authenticate_secret(&client, &key, &second, until - 1));
        assert!(!service::authenticate_secret(&client, &key, &second, until));
        assert!(service::authenticate_secret(&client, &key, &third, until + 1));
        assert!(!service::authenticate_secret(&client, &key, &first, now));

        for (body, field) in [
            (json!({ "grace_seconds": 30 * 86_400 + 1 }), "grace_seconds"),
            (json!({ "grace_seconds": -1 }), "grace_seconds"),
            (json!({ "grace": 60 }), "grace"),
        ] {
            let refused = admin(&server, Method::POST, &rotate, Some(body.clone())).await;
            refused.assert_invalid(field, &body);
        }
        let after_refusals = load(&mut conn, &id);
        assert!(service::authenticate_secret(&after_refusals, &key, &third, now), "refusals change nothing");

        // A settings update built from a client loaded before a rotation never undoes it.
        let stale = load(&mut conn, &id);
        let rotated = admin(&server, Method::POST, &rotate, None).await;
        assert_eq!(rotated.status, 200, "{}", rotated.raw);
        let fourth = str_of(&rotated.body, "client_secret").to_string();
        let mut renamed = stale.clone();
        renamed.client_name = "Renamed".into();
        renamed.updated_at = store::unix_now();
        assert!(store::clients::update_settings(&mut conn, &renamed).expect("update"));
        let client = load(&mut conn, &id);
        assert_eq!(client.client_name, "Renamed");
        assert!(service::authenticate_secret(&client, &key, &fourth, now), "the rotation stands");
        assert!(!service::authenticate_secret(&client, &key, &third, now), "the stale secret stays replaced");

        let public = create(&server, json!({
            "client_name": "SPA", "token_endpoint_auth_method": "none", "redirect_uris": ["https://spa.example.com/cb"]
        })).await;
        let public_rotate = format!("{CLIENTS}/{}/regenerate-secret", str_of(&public.body, "client_id"));
        let refused = admin(&server, Method::POST, &public_rotate, None).await;
        refused.assert_invalid("token_endpoint_auth_method", "a public client has no secret");
        assert!(refused.description().contains("public client"), "{}", refused.raw);
        assert!(refused.body.get("client_secret").is_none());
    }

    async fn admin_requests_need_the_token(backend: Backend) {
        let server = TestServer::start(backend).await;
        let created = create(&server, web_app("Guarded")).await;
        let id = str_of(&created.body, "client_id").to_string();
        let one = format!("{CLIENTS}/{id}");
        let routes = [
            (Method::POST, CLIENTS.to_string(), Some(web_app("Intruder"))),
            (Method::GET, CLIENTS.to_string(), None),
            (Method::GET, one.clone(), None),
            (Method::PATCH, one.clone(), Some(json!({ "client_name": "Owned" }))),
            (Method::DELETE, one.clone(), None),
            (Method::POST, format!("{one}/regenerate-secret"), None),
            (Method::GET, format!("{CLIENTS}/cl_unknown"), None),
            (Method::PUT, CLIENTS.to_string(), None),
        ];
        let basic = format!("Basic {}", base64_encode(&format!("admin:{ADMIN_TOKEN}")));
        let wrong_headers: [Option<String>; 6] = [
            None,
            Some("Bearer wrong-token".into()),
            Some(format!("Bearer {ADMIN_TOKEN}x")),
            Some(format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])),
            Some(basic),
            Some(ADMIN_TOKEN.to_string()),
        ];
        for (method, path, body) in &routes {
            for header in &wrong_headers {
                let mut request = server.client.request(method.clone(), server.url(path));
                if let Some(header) = header {
                    request = request.header("Authorization", header);
                }
                if let Some(body) = body {
                    request = request.json(body);
                }
                let denied = reply(request).await;
                assert_eq!(denied.status, 401, "{method} {path} with {header:?}: {}", denied.raw);
                // RFC 6750 §3: no error code without a Bearer token, invalid_token with a wrong one.
                let bearer = header.as_deref().is_some_and(|h| h.starts_with("Bearer "));
                let (challenge, error) = if bearer {
                    (r#"Bearer realm="truxe-admin", error="invalid_token""#, "invalid_token")
                } else {
                    (r#"Bearer realm="truxe-admin""#, "unauthorized")
                };
                let challenged = denied.headers.get(WWW_AUTHENTICATE).and_then(|v| v.to_str().ok());
                assert_eq!(challenged, Some(challenge), "{method} {path} with {header:?}");
                assert_eq!(denied.body["error"], error, "{method} {path} with {header:?}: {}", denied.raw);
                assert!(denied.description().contains("token"), "{}", denied.raw);
                assert!(!denied.raw.contains(ADMIN_TOKEN) && !denied.raw.contains("Guarded"), "no detail leaks: {}", denied.raw);
            }
        }
        let still = admin(&server, Method::GET, &one, None).await;
        assert_eq!((still.status, still.body["client_name"].as_str()), (200, Some("Guarded")));
        let listed = admin(&server, Method::GET, CLIENTS, None).await;
        assert_eq!(listed.body["clients"].as_array().map(Vec::len), Some(1), "nothing was created");

        // Authenticated but unsupported method: a JSON 405, not a 500.
        let put = admin(&server, Method::PUT, CLIENTS, None).await;
        assert_eq!((put.status, &put.body), (405, &json!({ "error": "method_not_allowed" })), "{}", put.raw);
        assert_eq!(put.headers.get("allow").and_then(|v| v.to_str().ok()), Some("GET, POST"));
    }

    async fn malformed_bodies_are_clean_400s(backend: Backend) {
        let server = TestServer::start(backend).await;
        let post = |body: &'static str, content_type: &'static str| {
            server.client.post(server.url(CLIENTS)).bearer_auth(ADMIN_TOKEN).header(CONTENT_TYPE, content_type).body(body)
        };
        for (body, content_type) in [
            ("{", "application/json"),
            ("", "application/json"),
            ("[1, 2]", "application/json"),
            ("\"client\"", "application/json"),
            ("null", "application/json"),
            (r#"{"client_name": "x"}}"#, "application/json"),
            (r#"{"client_name": "x"}"#, "text/plain"),
            (r#"{"client_name": "x"}"#, "multipart/form-data; boundary=x"),
            ("client_name=x", "application/x-www-form-urlencoded"),
            ("\u{0}\u{1}\u{2}", "application/json"),
        ] {
            let refused = reply(post(body, content_type)).await;
            assert_eq!(refused.status, 400, "{body:?} as {content_type}: {}", refused.raw);
            assert_eq!(refused.body["error"], "invalid_request");
            assert!(refused.body["error_description"].as_str().is_some_and(|d| !d.is_empty()));
        }
        for (body, field) in [
            (json!({ "client_name": "x", "redirect_uris": ["https://a.example/cb"], "client_secret": "cs_mine" }), "client_secret"),
            (json!({ "client_name": "x", "redirect_uris": "https://a.example/cb" }), "redirect_uris"),
            (json!({ "client_name": 42 }), "client_name"),
            (json!({ "client_name": "x", "trusted": "yes" }), "trusted"),
            (json!({ "redirect_uris": ["https://a.example/cb"] }), "client_name"),
            (json!({ "client_name": "x".repeat(201), "redirect_uris": ["https://a.example/cb"] }), "client_name"),
        ] {
            let refused = create(&server, body.clone()).await;
            refused.assert_invalid(field, &body);
        }

        // 100 KiB: refused before parsing, as JSON.
        let huge = json!({ "client_name": "x".repeat(100 * 1024) }).to_string();
        let too_large = reply(server.client.post(server.url(CLIENTS)).bearer_auth(ADMIN_TOKEN)
            .header(CONTENT_TYPE, "application/json").body(huge.clone())).await;
        assert_eq!(too_large.status, 413, "{}", too_large.raw);
        assert_eq!(too_large.body["error"], "invalid_request");
        // Also when the length is not announced (chunked).
        let base = server.base_url.clone();
        let (status, raw) = tokio::task::spawn_blocking(move || chunked_post(&base, CLIENTS, huge.as_bytes())).await.expect("join");
        assert_eq!(status, 413, "{raw}");
        assert!(raw.contains("invalid_request"), "{raw}");

        let listed = admin(&server, Method::GET, CLIENTS, None).await;
        assert_eq!(listed.body["clients"].as_array().map(Vec::len), Some(0), "nothing was created");
    }

    async fn redirect_uri_rules(backend: Backend) {
        let server = TestServer::start(backend).await;
        let cases: [(&str, Option<&str>); 14] = [
            ("https://app.example.com/cb#section", Some("fragment")),
            ("/callback", Some("absolute")),
            ("callback", Some("absolute")),
            ("http://app.example.com/callback", Some("loopback")),
            ("http://192.168.1.10/callback", Some("loopback")),
            ("https://*.example.com/callback", Some("wildcard")),
            ("javascript:alert(1)", Some("scheme")),
            ("https://user:pass@app.example.com/cb", Some("credentials")),
            ("https://app.example.com/callback", None),
            ("com.example.app:/oauth2redirect", None),
            ("http://127.0.0.1:53682/callback", None),
            ("http://[::1]:8080/callback", None),
            ("http://localhost:3000/callback", None),
            ("https://app.example.com:8443/cb?tenant=a", None),
        ];
        for (uri, refused) in cases {
            let reply = create(&server, json!({
                "client_name": "Native", "redirect_uris": ["https://first.example/cb", uri]
            })).await;
            match refused {
                Some(why) => {
                    reply.assert_invalid("redirect_uris[1]", uri);
                    assert!(reply.description().contains(why), "{uri}: {}", reply.raw);
                }
                None => {
                    assert_eq!(reply.status, 201, "{uri}: {}", reply.raw);
                    assert_eq!(reply.body["redirect_uris"][1], uri, "kept exactly as written");
                }
            }
        }
        let too_many: Vec<String> = (0..21).map(|i| format!("https://app.example.com/cb/{i}")).collect();
        let reply = create(&server, json!({ "client_name": "Many", "redirect_uris": too_many })).await;
        reply.assert_invalid("redirect_uris", "21 URIs");
        assert!(reply.description().contains("at most 20"), "{}", reply.raw);
        let long = format!("https://app.example.com/{}", "a".repeat(2048));
        let reply = create(&server, json!({ "client_name": "Long", "redirect_uris": [long] })).await;
        reply.assert_invalid("redirect_uris[0]", "a long URI");
        assert!(reply.description().contains("2048"), "{}", reply.raw);
    }

    async fn scopes_come_from_the_configured_set(backend: Backend) {
        let server = TestServer::start_with(backend, &[("TRUXE_SCOPES", "orders:read,orders:write")]).await;
        let ok = create(&server, json!({ "client_name": "Orders", "allowed_scopes": ["orders:read", "orders:write"] })).await;
        assert_eq!(ok.status, 201, "{}", ok.raw);
        assert_eq!(ok.body["allowed_scopes"], json!(["orders:read", "orders:write"]));
        let refused = create(&server, json!({ "client_name": "Orders", "allowed_scopes": ["orders:read", "orders:delete"] })).await;
        refused.assert_invalid("allowed_scopes[1]", "orders:delete");
        assert!(refused.description().contains("orders:delete"), "{}", refused.raw);

        let plain = TestServer::start(backend).await;
        let refused = create(&plain, json!({ "client_name": "Orders", "allowed_scopes": ["orders:read"] })).await;
        refused.assert_invalid("allowed_scopes[0]", "without TRUXE_SCOPES");
        assert!(refused.description().contains("TRUXE_SCOPES"), "{}", refused.raw);
    }

    async fn policies_are_registered_echoed_and_patched(backend: Backend) {
        let server = TestServer::start_with(backend, POLICY_CONFIG).await;
        let created = create(&server, json!({
            "client_name": "Reports", "allowed_scopes": ["reports:read"],
            "allowed_audiences": [REPORTS_API], "introspection_audiences": [REPORTS_API],
            "access_token_ttl": 300, "refresh_token_ttl": 3600, "authorization_code_ttl": 120,
        })).await;
        assert_eq!(created.status, 201, "{}", created.raw);
        let id = str_of(&created.body, "client_id").to_string();
        let path = format!("{CLIENTS}/{id}");
        let expected = json!({
            "allowed_audiences": [REPORTS_API], "introspection_audiences": [REPORTS_API],
            "access_token_ttl": 300, "refresh_token_ttl": 3600, "authorization_code_ttl": 120,
        });
        let shown = admin(&server, Method::GET, &path, None).await;
        for answer in [&created, &shown] {
            assert_eq!(policies(&answer.body), expected, "{}", answer.raw);
        }
        let mut conn = connect(&server.db);
        let stored = load(&mut conn, &id);
        assert_eq!((stored.allowed_audiences.clone(), stored.introspection_audiences.clone()), (vec![REPORTS_API.to_string()], vec![REPORTS_API.to_string()]));
        assert_eq!((stored.access_token_ttl, stored.refresh_token_ttl, stored.authorization_code_ttl), (Some(300), Some(3600), Some(120)));
        assert_eq!((stored.access_token_ttl(900), stored.refresh_token_ttl(86_400), stored.authorization_code_ttl(120)), (300, 3600, 120));
        assert!(stored.allows_audience(REPORTS_API, DEFAULT_API) && stored.introspects_for(REPORTS_API));

        // Unset: null in the JSON, the server's lifetimes and audience.
        let plain = create(&server, json!({ "client_name": "Plain", "allowed_scopes": ["reports:read"] })).await;
        assert_eq!(plain.status, 201, "{}", plain.raw);
        assert_eq!(policies(&plain.body), json!({
            "allowed_audiences": [], "introspection_audiences": [],
            "access_token_ttl": null, "refresh_token_ttl": null, "authorization_code_ttl": null,
        }));

        // PATCH changes and clears them (null: the server's again; []: none).
        let patched = admin(&server, Method::PATCH, &path, Some(json!({
            "allowed_audiences": [DEFAULT_API, REPORTS_API], "introspection_audiences": [],
            "access_token_ttl": 900, "refresh_token_ttl": null,
        }))).await;
        assert_eq!(patched.status, 200, "{}", patched.raw);
        let expected = json!({
            "allowed_audiences": [DEFAULT_API, REPORTS_API], "introspection_audiences": [],
            "access_token_ttl": 900, "refresh_token_ttl": null, "authorization_code_ttl": 120,
        });
        assert_eq!(policies(&patched.body), expected, "{}", patched.raw);
        assert_eq!(policies(&admin(&server, Method::GET, &path, None).await.body), expected);
        let stored = load(&mut conn, &id);
        assert_eq!((stored.access_token_ttl, stored.refresh_token_ttl), (Some(900), None));
        assert_eq!(stored.refresh_token_ttl(86_400), 86_400);

        // Bad values, on registration and on PATCH: a field-level 400 that names the value or
        // the limit, and nothing changes.
        let public = json!({
            "client_name": "SPA", "token_endpoint_auth_method": "none", "redirect_uris": ["https://spa.example.com/cb"],
        });
        let cases = [
            (json!({ "allowed_audiences": ["https://evil.example.com"] }), "allowed_audiences[0]", "https://evil.example.com"),
            (json!({ "allowed_audiences": [REPORTS_API, "https://api.example.com/"] }), "allowed_audiences[1]", "https://api.example.com/"),
            (json!({ "introspection_audiences": ["http://127.0.0.1:3001"] }), "introspection_audiences[0]", "JWT_AUDIENCE"),
            (json!({ "access_token_ttl": 0 }), "access_token_ttl", "from 1 up to 900"),
            (json!({ "access_token_ttl": -1 }), "access_token_ttl", "-1"),
            (json!({ "access_token_ttl": 1.5 }), "access_token_ttl", "whole seconds"),
            (json!({ "access_token_ttl": "900" }), "access_token_ttl", "whole seconds"),
            (json!({ "access_token_ttl": 901 }), "access_token_ttl", "at most 900 seconds, the server's ACCESS_TOKEN_EXPIRY (15m)"),
            (json!({ "refresh_token_ttl": 86_401 }), "refresh_token_ttl", "at most 86400 seconds, the server's REFRESH_TOKEN_EXPIRY (1d)"),
            (json!({ "authorization_code_ttl": 121 }), "authorization_code_ttl", "at most 120 seconds, the server's OAUTH_AUTHORIZATION_CODE_EXPIRY (2m)"),
            (json!({ "authorization_code_ttl": 0 }), "authorization_code_ttl", "from 1 up to 120"),
            (json!({ "allowed_audiences": null }), "allowed_audiences", "null"),
        ];
        for (fields, field, says) in cases {
            let mut registration = json!({ "client_name": "Bad", "allowed_scopes": ["reports:read"] });
            for (key, value) in fields.as_object().into_iter().flatten() {
                registration[key] = value.clone();
            }
            for reply in [create(&server, registration.clone()).await, admin(&server, Method::PATCH, &path, Some(fields.clone())).await] {
                reply.assert_invalid(field, &fields);
                assert!(reply.description().contains(says), "{fields}: {}", reply.raw);
            }
        }
        let mut spa = public.clone();
        spa["introspection_audiences"] = json!([REPORTS_API]);
        let refused = create(&server, spa).await;
        refused.assert_invalid("introspection_audiences", "a public client");
        assert!(refused.description().contains("confidential"), "{}", refused.raw);
        let spa = create(&server, public).await;
        assert_eq!(spa.status, 201, "{}", spa.raw);
        let spa_path = format!("{CLIENTS}/{}", str_of(&spa.body, "client_id"));
        let refused = admin(&server, Method::PATCH, &spa_path, Some(json!({ "introspection_audiences": [REPORTS_API] }))).await;
        refused.assert_invalid("introspection_audiences", "a public client, patched");

        assert_eq!(policies(&admin(&server, Method::GET, &path, None).await.body), expected, "refusals change nothing");
        let listed = admin(&server, Method::GET, CLIENTS, None).await;
        assert_eq!(listed.body["clients"].as_array().map(Vec::len), Some(3), "only Reports, Plain and the SPA: {}", listed.raw);
    }

    async fn hostile_client_ids_are_plain_404s(backend: Backend) {
        let server = TestServer::start(backend).await;
        let created = create(&server, web_app("Survivor")).await;
        let id = str_of(&created.body, "client_id").to_string();
        let ten_kb = format!("cl_{}", "a".repeat(10 * 1024));
        let hostile = [
            "cl_x'%20OR%20'1'='1".to_string(),
            "cl_x';%20DROP%20TABLE%20oauth_clients;--".to_string(),
            "%00".to_string(),
            "cl_%00".to_string(),
            format!("{id}%00"),
            ten_kb,
            "cl_%E2%80%AE".to_string(),
            "cl_%FF%FE".to_string(),
            "..%2F..%2Fhealth".to_string(),
            "cl_".to_string(),
            "CL_abc".to_string(),
        ];
        for bad in &hostile {
            for (method, suffix, body) in [
                (Method::GET, "", None),
                (Method::PATCH, "", Some(json!({ "client_name": "x" }))),
                (Method::DELETE, "", None),
                (Method::POST, "/regenerate-secret", None),
            ] {
                let path = format!("{CLIENTS}/{bad}{suffix}");
                let reply = admin(&server, method.clone(), &path, body).await;
                assert_eq!(reply.status, 404, "{method} {}: {}", &path[..path.len().min(80)], reply.raw);
                assert_eq!(reply.body, json!({ "error": "not_found" }));
            }
        }
        let still = admin(&server, Method::GET, &format!("{CLIENTS}/{id}"), None).await;
        assert_eq!(still.status, 200, "the table is intact");
        let listed = admin(&server, Method::GET, CLIENTS, None).await;
        assert_eq!(listed.body["clients"].as_array().map(Vec::len), Some(1));
    }

    async fn writes_leave_audit_events(backend: Backend) {
        let server = TestServer::start(backend).await;
        let created = create(&server, web_app("Audited")).await;
        let id = str_of(&created.body, "client_id").to_string();
        let secret = str_of(&created.body, "client_secret").to_string();
        let path = format!("{CLIENTS}/{id}");
        assert_eq!(admin(&server, Method::PATCH, &path, Some(json!({ "client_name": "Audited 2" }))).await.status, 200);
        let rotated = admin(&server, Method::POST, &format!("{path}/regenerate-secret"), Some(json!({ "grace_seconds": 60 }))).await;
        let new_secret = str_of(&rotated.body, "client_secret").to_string();
        // A refused change writes nothing.
        admin(&server, Method::PATCH, &path, Some(json!({ "redirect_uris": [] }))).await.assert_invalid("redirect_uris", "refused");
        assert_eq!(admin(&server, Method::DELETE, &path, None).await.status, 204);

        let mut conn = connect(&server.db);
        use schema::audit_events as a;
        let rows: Vec<AuditRow> = a::table
            .filter(a::client_id.eq(&id))
            .order((a::occurred_at, a::event_id))
            .select((a::action, a::actor, a::subject, a::ip, a::request_id, a::details))
            .load(&mut conn)
            .expect("audit rows");
        let actions: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(actions, ["client.created", "client.updated", "client.secret_rotated", "client.deleted"]);
        for (action, actor, subject, ip, request_id, details) in &rows {
            assert_eq!(actor, "admin", "{action}");
            assert_eq!(subject.as_deref(), Some(id.as_str()));
            assert_eq!(ip.as_deref(), Some("127.0.0.1"), "{action}");
            assert!(request_id.as_deref().is_some_and(|r| !r.is_empty()), "{action}");
            assert!(!details.contains(&secret[3..]) && !details.contains(&new_secret[3..]), "{action}: {details}");
            assert!(serde_json::from_str::<Value>(details).is_ok(), "{details}");
        }
        assert!(rows[1].5.contains("client_name"), "{}", rows[1].5);
        assert!(rows[2].5.contains("\"grace_seconds\":60"), "{}", rows[2].5);
    }

    async fn truxectl_on_the_database(backend: Backend) {
        let db = TestDb::new(backend);
        db.migrate();
        let mut conn = connect(&db);
        let cwd = db.dir.path();
        let ctl = |args: &[&str]| truxectl(cwd, &[], &[&["clients"][..], args, &["--database-url", db.url.as_str()]].concat());

        let created = json_output(&ctl(&["create", "--name", "CLI App", "--redirect-uri", "https://cli.example.com/cb",
            "--scope", "openid profile", "--trusted", "--json"]));
        let id = str_of(&created, "client_id").to_string();
        let secret = str_of(&created, "client_secret").to_string();
        assert!(id.starts_with("cl_") && secret.starts_with("cs_"), "{created}");
        assert_eq!(created["allowed_scopes"], json!(["openid", "profile"]));
        assert_eq!(created["trusted"], true);

        // The secret works against the same key the server will use.
        let key = secret_key(&mut conn);
        assert!(service::authenticate_secret(&load(&mut conn, &id), &key, &secret, store::unix_now()));

        let shown = json_output(&ctl(&["show", &id, "--json"]));
        assert_eq!(shown["client_name"], "CLI App");
        assert!(shown.get("client_secret").is_none());
        let listed = json_output(&ctl(&["list", "--json"]));
        assert_eq!(listed["clients"].as_array().map(Vec::len), Some(1));
        let table = ctl(&["list"]);
        assert!(table.status.success() && text(&table).contains("CLIENT_ID") && text(&table).contains(&id), "{}", text(&table));

        assert_eq!(json_output(&ctl(&["disable", &id, "--json"]))["status"], "suspended");
        assert_eq!(load(&mut conn, &id).status, ClientStatus::Suspended);
        assert_eq!(json_output(&ctl(&["enable", &id, "--json"]))["status"], "active");
        let updated = json_output(&ctl(&["update", &id, "--name", "CLI App 2", "--logo-uri", "https://cli.example.com/logo.png", "--json"]));
        assert_eq!((updated["client_name"].as_str(), updated["logo_uri"].as_str()), (Some("CLI App 2"), Some("https://cli.example.com/logo.png")));

        // Dangerous commands need --yes without a terminal, and then change nothing.
        let refused = ctl(&["rotate-secret", &id]);
        assert!(!refused.status.success() && text(&refused).contains("--yes"), "{}", text(&refused));
        assert!(service::authenticate_secret(&load(&mut conn, &id), &key, &secret, store::unix_now()));
        let rotated = json_output(&ctl(&["rotate-secret", &id, "--grace", "1h", "--yes", "--json"]));
        let new_secret = str_of(&rotated, "client_secret").to_string();
        let client = load(&mut conn, &id);
        assert!(service::authenticate_secret(&client, &key, &new_secret, store::unix_now()));
        assert!(service::authenticate_secret(&client, &key, &secret, store::unix_now()), "within the hour of grace");

        let refused = ctl(&["delete", &id]);
        assert!(!refused.status.success() && text(&refused).contains("--yes"), "{}", text(&refused));
        assert!(service::find(&mut conn, &id).expect("query").is_some(), "nothing deleted");
        let deleted = json_output(&ctl(&["delete", &id, "--yes", "--json"]));
        assert_eq!(deleted["deleted"], id.as_str());
        let missing = ctl(&["show", &id]);
        assert!(!missing.status.success() && text(&missing).contains("no client"), "{}", text(&missing));

        // Validation errors are the server's, readable, with a non-zero exit.
        let invalid = ctl(&["create", "--name", "Bad", "--redirect-uri", "http://evil.example.com/cb"]);
        assert!(!invalid.status.success());
        let message = text(&invalid);
        assert!(message.contains("redirect_uris[0]") && message.contains("loopback"), "{message}");
        assert!(!message.contains("panicked"), "{message}");
        let no_terminal = ctl(&["create"]);
        assert!(!no_terminal.status.success() && text(&no_terminal).contains("--name"), "{}", text(&no_terminal));

        // Text output of create names the secret once and says to store it.
        let text_create = ctl(&["create", "--name", "Text", "--redirect-uri", "https://t.example.com/cb"]);
        assert!(text_create.status.success(), "{}", text(&text_create));
        let out = text(&text_create);
        assert!(out.contains("client_secret") && out.contains("cs_") && out.contains("Store this client secret now"), "{out}");

        // Changes made from the CLI are audited as such.
        use schema::audit_events as a;
        let actors: Vec<String> = a::table.filter(a::client_id.eq(&id)).select(a::actor).load(&mut conn).expect("audit");
        assert!(actors.len() >= 5 && actors.iter().all(|a| a == "cli"), "{actors:?}");
    }

    async fn truxectl_through_the_admin_api(backend: Backend) {
        let server = TestServer::start(backend).await;
        let url = server.base_url.clone();
        let cwd = tempfile::tempdir().expect("tmp");
        let run = {
            let url = url.clone();
            let cwd = cwd.path().to_path_buf();
            move |env: Vec<(&'static str, String)>, args: Vec<String>| {
                let url = url.clone();
                let cwd = cwd.clone();
                tokio::task::spawn_blocking(move || {
                    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
                    let mut full: Vec<&str> = vec!["clients"];
                    full.extend(args.iter().map(String::as_str));
                    full.extend(["--url", url.as_str()]);
                    truxectl(&cwd, &env, &full)
                })
            }
        };
        let token_env = || vec![("ADMIN_TOKEN", ADMIN_TOKEN.to_string())];
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

        let created = run(token_env(), args(&["create", "--name", "Remote", "--redirect-uri", "https://r.example.com/cb", "--json"]))
            .await.expect("join");
        let created = json_output(&created);
        let id = str_of(&created, "client_id").to_string();
        let secret = str_of(&created, "client_secret").to_string();
        let mut conn = connect(&server.db);
        let key = secret_key(&mut conn);
        assert!(service::authenticate_secret(&load(&mut conn, &id), &key, &secret, store::unix_now()));

        // --admin-token instead of the environment.
        let listed = run(vec![], args(&["list", "--json", "--admin-token", ADMIN_TOKEN])).await.expect("join");
        assert_eq!(json_output(&listed)["clients"][0]["client_id"], id.as_str());
        let shown = json_output(&run(token_env(), args(&["show", &id, "--json"])).await.expect("join"));
        assert_eq!(shown["client_name"], "Remote");
        assert!(shown.get("client_secret").is_none());

        let disabled = json_output(&run(token_env(), args(&["disable", &id, "--json"])).await.expect("join"));
        assert_eq!(disabled["status"], "suspended");
        let enabled = json_output(&run(token_env(), args(&["enable", &id, "--json"])).await.expect("join"));
        assert_eq!(enabled["status"], "active");

        // The embedded default's token file in the data directory.
        let data_dir = tempfile::tempdir().expect("tmp");
        std::fs::write(data_dir.path().join("admin-token"), format!("{ADMIN_TOKEN}\n")).expect("write token");
        let data_env = vec![("TRUXE_DATA_DIR", data_dir.path().display().to_string())];
        let shown = run(data_env, args(&["show", &id, "--json"])).await.expect("join");
        assert_eq!(json_output(&shown)["client_id"], id.as_str());

        // The policy flags, through the API (the test server's only audience is its issuer).
        let updated = run(token_env(), args(&["update", &id, "--audience", "http://127.0.0.1:3001", "--access-token-ttl", "5m", "--json"]))
            .await.expect("join");
        let updated = json_output(&updated);
        assert_eq!((updated["allowed_audiences"].clone(), updated["access_token_ttl"].clone()), (json!(["http://127.0.0.1:3001"]), json!(300)), "{updated}");
        let shown = json_output(&run(token_env(), args(&["show", &id, "--json"])).await.expect("join"));
        assert_eq!(policies(&shown), policies(&updated));
        for (flags, says) in [
            (&["--audience", "https://evil.example.com"][..], &["allowed_audiences[0]", "https://evil.example.com", "invalid_request"][..]),
            (&["--access-token-ttl", "1h"], &["access_token_ttl", "ACCESS_TOKEN_EXPIRY", "HTTP 400"]),
            (&["--introspection-audience", "http://127.0.0.1:3001", "--access-token-ttl", "0"], &["access_token_ttl", "from 1 up to 900"]),
        ] {
            let output = run(token_env(), args(&[&["update", id.as_str()][..], flags].concat())).await.expect("join");
            let message = text(&output);
            assert_eq!(output.status.code(), Some(1), "{flags:?}: {message}");
            assert!(says.iter().all(|s| message.contains(s)), "{flags:?}: {message}");
        }
        let unchanged = json_output(&run(token_env(), args(&["show", &id, "--json"])).await.expect("join"));
        assert_eq!(policies(&unchanged), policies(&updated), "refusals change nothing");

        let wrong = run(vec![("ADMIN_TOKEN", "adm_wrong".into())], args(&["list"])).await.expect("join");
        assert!(!wrong.status.success() && text(&wrong).contains("401"), "{}", text(&wrong));
        let invalid = run(token_env(), args(&["create", "--name", "Bad", "--redirect-uri", "https://a.example/cb#x"])).await.expect("join");
        assert!(!invalid.status.success() && text(&invalid).contains("redirect_uris[0]"), "{}", text(&invalid));

        let rotated = json_output(&run(token_env(), args(&["rotate-secret", &id, "--yes", "--json"])).await.expect("join"));
        let new_secret = str_of(&rotated, "client_secret").to_string();
        let client = load(&mut conn, &id);
        assert!(service::authenticate_secret(&client, &key, &new_secret, store::unix_now()));
        assert!(!service::authenticate_secret(&client, &key, &secret, store::unix_now()));

        let refused = run(token_env(), args(&["delete", &id])).await.expect("join");
        assert!(!refused.status.success() && text(&refused).contains("--yes"), "{}", text(&refused));
        assert!(service::find(&mut conn, &id).expect("query").is_some(), "nothing deleted");
        let deleted = run(token_env(), args(&["delete", &id, "--yes"])).await.expect("join");
        assert!(deleted.status.success(), "{}", text(&deleted));
        let missing = run(token_env(), args(&["show", &id])).await.expect("join");
        assert!(!missing.status.success() && text(&missing).contains("no client"), "{}", text(&missing));
    }
}

fn json_output(output: &std::process::Output) -> Value {
    assert!(output.status.success(), "truxectl failed ({}):\n{}", output.status, text(output));
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", text(output)))
}

fn base64_encode(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// POSTs `body` with `Transfer-Encoding: chunked` (no Content-Length) over a raw socket, writing
/// on another thread while reading, since the server may answer before it has read everything.
fn chunked_post(base_url: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let address = base_url.trim_start_matches("http://").to_string();
    let mut stream = std::net::TcpStream::connect(&address).expect("connect");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(20))).expect("timeout");
    let mut writer = stream.try_clone().expect("clone");
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(4096) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    // The server may stop reading once the limit is passed; write errors are expected then.
    let sender = std::thread::spawn(move || drop(writer.write_all(&request)));
    let mut response = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => response.extend_from_slice(&buf[..n]),
            Err(_) if !response.is_empty() => break,
            Err(e) => panic!("reading the response: {e}"),
        }
    }
    drop(sender.join());
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}
