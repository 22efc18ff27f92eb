//! The HTTP edge: CORS on the endpoints browsers call, the security headers of every answer,
//! oversized bodies and heads, clients too slow to send a request, pool exhaustion, and the
//! cached readiness answer.

use std::time::{Duration, Instant};

use reqwest::Method;
use reqwest::header::HeaderMap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::on_both_backends;
use crate::support::oauth::{basic, form, machine_client, token_server};
use crate::support::{ADMIN_TOKEN, Backend, TestServer};

const APP: &str = "https://app.example.com";

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn has_no_cors_headers(headers: &HeaderMap) -> bool {
    headers.keys().all(|name| !name.as_str().starts_with("access-control-"))
}

async fn preflight(
    server: &TestServer,
    path: &str,
    origin: &str,
    method: &str,
    headers: Option<&str>,
) -> reqwest::Response {
    let mut request = server
        .client
        .request(Method::OPTIONS, server.url(path))
        .header("Origin", origin)
        .header("Access-Control-Request-Method", method);
    if let Some(headers) = headers {
        request = request.header("Access-Control-Request-Headers", headers);
    }
    request.send().await.expect("preflight")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflights_are_answered_for_allowed_origins_methods_and_headers_only() {
    let server =
        token_server(Backend::Sqlite, &[("ALLOWED_ORIGINS", "https://app.example.com,http://localhost:5173")]).await;

    let allowed = preflight(&server, "/oauth-provider/token", APP, "POST", Some("authorization,content-type")).await;
    assert_eq!(allowed.status(), 204);
    let h = allowed.headers();
    assert_eq!(header(h, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(h, "access-control-allow-methods"), Some("POST"));
    assert_eq!(header(h, "access-control-allow-headers"), Some("Authorization, Content-Type"));
    assert_eq!(header(h, "access-control-max-age"), Some("600"));
    assert!(header(h, "vary").is_some_and(|v| v.contains("Origin")), "{h:?}");
    assert!(h.get("access-control-allow-credentials").is_none(), "no endpoint needs a browser's credentials");

    let userinfo =
        preflight(&server, "/oauth-provider/userinfo", "http://localhost:5173", "GET", Some("Authorization")).await;
    assert_eq!(userinfo.status(), 204);
    assert_eq!(header(userinfo.headers(), "access-control-allow-origin"), Some("http://localhost:5173"));
    assert_eq!(header(userinfo.headers(), "access-control-allow-methods"), Some("GET, POST"));

    // Refused preflights get no CORS header and meet the route as any OPTIONS request would.
    for (path, origin, method, headers) in [
        ("/oauth-provider/token", "https://evil.example", "POST", None),
        ("/oauth-provider/token", "https://app.example.com.evil.example", "POST", None),
        ("/oauth-provider/token", "http://app.example.com", "POST", None),
        ("/oauth-provider/token", APP, "DELETE", None),
        ("/oauth-provider/token", APP, "PUT", None),
        ("/oauth-provider/token", APP, "POST", Some("authorization, x-api-key")),
        ("/oauth-provider/jwks", APP, "POST", None),
        ("/oauth-provider/introspect", APP, "POST", None),
        ("/oauth-provider/clients", APP, "POST", Some("authorization")),
    ] {
        let refused = preflight(&server, path, origin, method, headers).await;
        assert!(has_no_cors_headers(refused.headers()), "{path} {origin} {method}: {:?}", refused.headers());
        assert!(refused.status().is_client_error(), "{path} {origin} {method}: {}", refused.status());
        assert_ne!(refused.status(), 204);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_requests_from_a_disallowed_origin_are_answered_unchanged_without_cors_headers() {
    let server = token_server(
        Backend::Sqlite,
        &[("ALLOWED_ORIGINS", APP), ("RATE_LIMIT_ENABLED", "true"), ("RATE_LIMIT_ENDPOINTS", "token=1:2")],
    )
    .await;
    let client = machine_client(&server, "client_secret_basic").await;
    let token = |origin: &'static str| {
        server
            .client
            .post(server.url("/oauth-provider/token"))
            .header("Origin", origin)
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Authorization", basic(&client.client_id, &client.secret))
            .body(form(&[("grant_type", "client_credentials")]))
            .send()
    };

    let ok = token(APP).await.expect("token");
    assert_eq!(ok.status(), 200);
    assert_eq!(header(ok.headers(), "access-control-allow-origin"), Some(APP));
    let exposed = header(ok.headers(), "access-control-expose-headers").unwrap_or_default().to_ascii_lowercase();
    for name in ["retry-after", "ratelimit", "ratelimit-policy", "www-authenticate"] {
        assert!(exposed.split(", ").any(|e| e == name), "{name} exposed: {exposed}");
    }
    assert!(header(ok.headers(), "vary").is_some_and(|v| v.contains("Origin")));

    let other = token("https://evil.example").await.expect("token");
    assert_eq!(other.status(), 200, "the request itself is unchanged");
    assert!(has_no_cors_headers(other.headers()), "{:?}", other.headers());
    assert!(header(other.headers(), "vary").is_some_and(|v| v.contains("Origin")), "caches must key on Origin");
    let body: serde_json::Value = other.json().await.expect("json");
    assert!(body["access_token"].is_string(), "{body}");

    // The rate limit's 429 is readable by the application that caused it.
    let limited = token(APP).await.expect("token");
    assert_eq!(limited.status(), 429);
    assert_eq!(header(limited.headers(), "access-control-allow-origin"), Some(APP));
    assert!(limited.headers().contains_key("retry-after"));

    // Public documents are readable cross-origin; introspection and the admin API are not.
    for path in ["/.well-known/openid-configuration", "/.well-known/oauth-authorization-server", "/oauth-provider/jwks"]
    {
        let document = server.client.get(server.url(path)).header("Origin", APP).send().await.expect("GET");
        assert_eq!(document.status(), 200, "{path}");
        assert_eq!(header(document.headers(), "access-control-allow-origin"), Some(APP), "{path}");
    }
    let admin = server.client.get(server.url("/oauth-provider/clients")).header("Origin", APP).bearer_auth(ADMIN_TOKEN);
    let admin = admin.send().await.expect("admin");
    assert_eq!(admin.status(), 200);
    assert!(has_no_cors_headers(admin.headers()), "{:?}", admin.headers());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_without_allowed_origins_no_origin_is_allowed() {
    let server = token_server(Backend::Sqlite, &[]).await;
    let refused = preflight(&server, "/oauth-provider/token", APP, "POST", None).await;
    assert!(has_no_cors_headers(refused.headers()), "{:?}", refused.headers());
    let discovery = server.client.get(server.url("/.well-known/openid-configuration")).header("Origin", APP);
    let discovery = discovery.send().await.expect("GET");
    assert!(has_no_cors_headers(discovery.headers()));
}

/// The headers every answer carries, pages or not.
fn assert_security_headers(headers: &HeaderMap, what: &str) {
    assert_eq!(header(headers, "x-content-type-options"), Some("nosniff"), "{what}: {headers:?}");
    assert_eq!(header(headers, "x-frame-options"), Some("DENY"), "{what}");
    assert_eq!(header(headers, "referrer-policy"), Some("no-referrer"), "{what}");
    let csp = header(headers, "content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"), "{what}: {csp}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_headers_are_on_every_answer_and_nothing_secret_is_cacheable() {
    let server = token_server(Backend::Sqlite, &[("JWT_ISSUER", "https://auth.example.test")]).await;
    let client = machine_client(&server, "client_secret_basic").await;
    let get = |path: &str| server.client.get(server.url(path)).send();

    let token = server
        .client
        .post(server.url("/oauth-provider/token"))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Authorization", basic(&client.client_id, &client.secret))
        .body(form(&[("grant_type", "client_credentials")]))
        .send()
        .await
        .expect("token");
    assert_eq!(token.status(), 200);
    let mut answers = vec![("token", token)];
    for (what, path) in [
        ("404", "/no/such/path"),
        ("liveness", "/health"),
        ("readiness", "/health/ready"),
        ("userinfo without a token", "/oauth-provider/userinfo"),
        ("admin without a token", "/oauth-provider/clients"),
        ("sign-in page", "/login"),
        ("authorize error page", "/oauth-provider/authorize?client_id=cl_nobody"),
        ("discovery", "/.well-known/openid-configuration"),
        ("jwks", "/oauth-provider/jwks"),
    ] {
        answers.push((what, get(path).await.expect(path)));
    }
    let bad_token = server.client.post(server.url("/oauth-provider/token")).form(&[("grant_type", "password")]);
    answers.push(("token error", bad_token.send().await.expect("token")));
    let wrong_method = server.client.delete(server.url("/oauth-provider/jwks")).send().await.expect("DELETE");
    assert_eq!(wrong_method.status(), 405);
    answers.push(("405", wrong_method));

    for (what, answer) in &answers {
        let headers = answer.headers();
        assert_security_headers(headers, what);
        assert_eq!(
            header(headers, "strict-transport-security"),
            Some("max-age=31536000; includeSubDomains"),
            "{what}: an https issuer"
        );
        let cache = header(headers, "cache-control").unwrap_or_default();
        if matches!(*what, "discovery" | "jwks") {
            assert!(cache.starts_with("public, max-age="), "{what}: {cache}");
        } else {
            assert_eq!(cache, "no-store", "{what}");
        }
    }
    // Pages keep their own, stricter policy (styles inline, images for client logos).
    let page = &answers.iter().find(|(what, _)| *what == "sign-in page").expect("page").1;
    assert!(header(page.headers(), "content-security-policy").is_some_and(|csp| csp.contains("style-src")));

    // Over an http issuer (development), no HSTS: browsers ignore it there anyway.
    let plain = token_server(Backend::Sqlite, &[]).await;
    let health = plain.client.get(plain.url("/health")).send().await.expect("health");
    assert_security_headers(health.headers(), "http issuer");
    assert!(health.headers().get("strict-transport-security").is_none());
}

/// One HTTP/1.1 exchange over a raw connection: writes `request`, then reads until the server
/// closes the connection or `timeout` passes; returns what was read.
async fn raw_exchange(port: u16, request: &[u8], timeout: Duration) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(timeout, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn port_of(server: &TestServer) -> u16 {
    server.base_url.rsplit(':').next().and_then(|p| p.parse().ok()).expect("port")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_and_heads_are_refused_with_their_error() {
    let server = token_server(Backend::Sqlite, &[]).await;
    let port = port_of(&server);

    // A 10 MB body announced by Content-Length is refused before a byte of it is read.
    let head = "POST /oauth-provider/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10485760\r\nConnection: close\r\n\r\n";
    let answer = raw_exchange(port, head.as_bytes(), Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("\"error\":\"invalid_request\"") && answer.contains("larger than 16384 bytes"), "{answer}");

    // A chunked body (no length) is read only up to the limit.
    let chunk = format!("4000\r\n{}\r\n", "a".repeat(0x4000));
    let mut request = b"POST /oauth-provider/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..4 {
        request.extend_from_slice(chunk.as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(port, &request, Duration::from_secs(10)).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(answer.contains("larger than 16384 bytes"), "{answer}");

    // 10 MB sent for real, to a page and to the admin API: a page and the admin API's JSON.
    let big = vec![b'a'; 10 * 1024 * 1024];
    let page = server.client.post(server.url("/login")).header("Content-Type", "application/x-www-form-urlencoded");
    match page.body(big.clone()).send().await {
        Ok(page) => {
            assert_eq!(page.status(), 413);
            assert!(header(page.headers(), "content-type").is_some_and(|t| t.starts_with("text/html")));
        }
        // The server may close the connection before all 10 MB were written; it must not crash.
        Err(error) => assert!(error.is_request() || error.is_body(), "{error:?}"),
    }
    let admin = server.client.post(server.url("/oauth-provider/clients")).bearer_auth(ADMIN_TOKEN);
    match admin.header("Content-Type", "application/json").body(big).send().await {
        Ok(admin) => assert_eq!(admin.status(), 413),
        Err(error) => assert!(error.is_request() || error.is_body(), "{error:?}"),
    }

    // A 100 KB header, a 40 KB request target.
    let huge = "a".repeat(100 * 1024);
    let answer =
        server.client.get(server.url("/oauth-provider/jwks")).header("X-Padding", huge).send().await.expect("GET");
    assert_eq!(answer.status(), 431);
    let body: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request", "{body}");
    let long = format!("/oauth-provider/jwks?padding={}", "s".repeat(40 * 1024));
    let answer = server.client.get(server.url(&long)).send().await.expect("GET");
    assert_eq!(answer.status(), 414);
    let body: serde_json::Value = answer.json().await.expect("json");
    assert_eq!(body["error"], "invalid_request", "{body}");
    let long = format!("/login?padding={}", "s".repeat(40 * 1024));
    let answer = server.client.get(server.url(&long)).send().await.expect("GET");
    assert_eq!(answer.status(), 414);
    assert!(header(answer.headers(), "content-type").is_some_and(|t| t.starts_with("text/html")), "a page route");

    // And the server is still serving.
    let (status, _) = server.get_json("/health").await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_sending_one_byte_per_second_is_cut_off_and_holds_nothing() {
    let server = token_server(Backend::Sqlite, &[("TRUXE_CLIENT_TIMEOUT", "2s")]).await;
    let port = port_of(&server);

    /// Writes `prefix`, then `rest` one byte per second until the server answers or closes;
    /// returns the answer and how long the connection lasted.
    async fn trickle(port: u16, prefix: &str, rest: &str) -> (String, Duration) {
        let started = Instant::now();
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
        stream.write_all(prefix.as_bytes()).await.expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        for byte in rest.bytes().chain(std::iter::repeat(b'x')).take(30) {
            match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => {
                    out.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(_) => {}
            }
            if stream.write_all(&[byte]).await.is_err() {
                break;
            }
        }
        (String::from_utf8_lossy(&out).into_owned(), started.elapsed())
    }

    // The head, one byte a second: 408 (or the connection closed) after TRUXE_CLIENT_TIMEOUT.
    let slow_head = tokio::spawn(trickle(
        port,
        "POST /oauth-provider/token HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ));
    // The body, one byte a second: the endpoint's error after TRUXE_CLIENT_TIMEOUT.
    let slow_body = tokio::spawn(trickle(
        port,
        "POST /oauth-provider/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\n",
        "grant_type=client_credentials",
    ));

    // Meanwhile the server answers everyone else at once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    for _ in 0..5 {
        let (status, _) = server.get_json("/.well-known/openid-configuration").await;
        assert_eq!(status, 200);
    }
    assert!(started.elapsed() < Duration::from_secs(2), "served while two clients trickle");

    let (head_answer, head_lasted) = slow_head.await.expect("task");
    assert!(head_answer.is_empty() || head_answer.starts_with("HTTP/1.1 408"), "{head_answer}");
    assert!(head_lasted < Duration::from_secs(8), "the slow head was cut off after {head_lasted:?}");
    let (body_answer, body_lasted) = slow_body.await.expect("task");
    assert!(body_answer.starts_with("HTTP/1.1 400"), "{body_answer}");
    assert!(body_answer.contains("did not arrive within 2s"), "{body_answer}");
    assert!(body_lasted < Duration::from_secs(8), "the slow body was cut off after {body_lasted:?}");
}

on_both_backends! {
    async fn edge_an_exhausted_database_pool_is_a_503_not_a_hang(backend: Backend) {
        let server = token_server(
            backend,
            &[("DATABASE_POOL_MIN", "0"), ("DATABASE_POOL_MAX", "1"), ("DATABASE_CONNECTION_TIMEOUT", "500")],
        )
        .await;
        let pool = server.state.pool.clone();
        let held = tokio::task::spawn_blocking(move || pool.get().expect("the pool's one connection")).await.expect("task");

        let started = Instant::now();
        let token = server
            .client
            .post(server.url("/oauth-provider/token"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .header("Authorization", basic("cl_nobody00000000000000000", "secret"))
            .body(form(&[("grant_type", "client_credentials")]))
            .send()
            .await
            .expect("token");
        assert_eq!(token.status(), 503);
        assert!(started.elapsed() < Duration::from_secs(5), "answered after the pool's timeout, {:?}", started.elapsed());
        assert!(token.headers().contains_key("retry-after"));
        let body: serde_json::Value = token.json().await.expect("json");
        assert_eq!(body["error"], "temporarily_unavailable", "{body}");

        let admin = server.client.get(server.url("/oauth-provider/clients")).bearer_auth(ADMIN_TOKEN).send().await.expect("admin");
        assert_eq!(admin.status(), 503);
        assert!(admin.headers().contains_key("retry-after"));

        drop(held);
        let admin = server.client.get(server.url("/oauth-provider/clients")).bearer_auth(ADMIN_TOKEN).send().await.expect("admin");
        assert_eq!(admin.status(), 200, "served again once a connection is free");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_answers_are_shared_for_a_second() {
    let server = token_server(Backend::Sqlite, &[]).await;
    let mut requests = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let (client, url) = (server.client.clone(), server.url("/health/ready"));
        requests.spawn(async move {
            let answer = client.get(url).send().await.expect("ready");
            let status = answer.status().as_u16();
            (status, answer.json::<serde_json::Value>().await.expect("json"))
        });
    }
    let answers = requests.join_all().await;
    let mut checked: Vec<u64> = answers
        .iter()
        .map(|(status, body)| {
            assert_eq!(*status, 200, "{body}");
            body["checked_at_ms"].as_u64().expect("checked_at_ms")
        })
        .collect();
    checked.sort_unstable();
    checked.dedup();
    assert!(checked.len() <= 2, "twenty callers at once caused {} checks", checked.len());

    // A later caller gets a fresh check.
    let first = checked[0];
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, body) = server.get_json("/health/ready").await;
        if body["checked_at_ms"].as_u64() > checked.last().copied() {
            assert!(body["checked_at_ms"].as_u64().unwrap_or_default() >= first + 1_000);
            break;
        }
        assert!(Instant::now() < deadline, "the readiness answer was never refreshed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
