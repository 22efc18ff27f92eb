//! The shipped nginx configuration (`packaging/nginx/truxe.conf`) run by a real nginx (Debian's
//! package; `./scripts/test` exports `TRUXE_TEST_NGINX`) in front of two `truxe-server` processes
//! on one database, over HTTPS with a throwaway CA. Only ports, paths and the upstream list of a
//! copy of the file are changed, each by a string the file must contain.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::ssl::{SslConnector, SslMethod, SslVersion};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509NameBuilder};
use serde_json::{Value, json};

use crate::on_both_backends;
use crate::support::process::ServerProcess;
use crate::support::{ADMIN_TOKEN, Backend, TestDb, free_port, test_key_pem};

/// The host name in the shipped file, kept in the test copy (the client resolves it to 127.0.0.1).
const HOST: &str = "auth.example.com";
const ISSUER: &str = "https://auth.example.com";
/// Response headers Truxe sets that a proxy must neither drop nor repeat.
const TRUXE_HEADERS: [&str; 7] = [
    "strict-transport-security",
    "x-frame-options",
    "x-content-type-options",
    "referrer-policy",
    "content-security-policy",
    "cache-control",
    "x-request-id",
];

on_both_backends! {
    async fn nginx_in_front_of_two_instances(backend: Backend) {
        nginx_in_front_of_two_instances_on(backend).await
    }
}

async fn nginx_in_front_of_two_instances_on(backend: Backend) {
    let db = TestDb::new(backend);
    db.migrate();
    let data_dir = db.dir.path().join("data").display().to_string();
    let key = test_key_pem();
    let prefix = format!("truxe-nginx-{}", uuid::Uuid::new_v4().simple());
    let redis = crate::support::redis_url();
    // What the file's header comment tells operators to set, on one database and one Redis. Truxe's
    // own rate limits are off so that every 429 below is nginx's.
    let env = [
        ("DATABASE_URL", db.url.as_str()),
        ("TRUXE_DATA_DIR", data_dir.as_str()),
        ("JWT_PRIVATE_KEY", key.as_str()),
        ("JWT_ISSUER", ISSUER),
        ("ADMIN_TOKEN", ADMIN_TOKEN),
        ("TRUST_PROXY", "127.0.0.1/32"),
        ("REDIS_URL", redis.as_str()),
        ("TRUXE_REDIS_PREFIX", prefix.as_str()),
        ("TRUXE_SCOPES", "orders:read"),
        ("RATE_LIMIT_ENABLED", "false"),
        ("LOG_LEVEL", "info"),
    ];
    let a = ServerProcess::start(db.dir.path(), &env, free_port()).await;
    let b = ServerProcess::start(db.dir.path(), &env, free_port()).await;
    let nginx = Nginx::start([a.port, b.port]);
    let https = nginx.https_client();
    let base = format!("https://{HOST}:{}", nginx.https_port);

    // Discovery over HTTPS: the configured issuer, whatever Host and X-Forwarded-* say.
    let response = https.get(format!("{base}/.well-known/openid-configuration")).send().await.expect("discovery");
    assert_eq!(response.status(), 200);
    assert_eq!(header(&response, "server"), Some("nginx".into()), "server_tokens off: no version");
    let mut ids = vec![request_id(&response)];
    let via_nginx = response.headers().clone();
    let discovery: Value = response.json().await.expect("json");
    assert_eq!(discovery["issuer"], ISSUER);
    assert_eq!(discovery["token_endpoint"], format!("{ISSUER}/oauth-provider/token"));
    let spoofed = https
        .get(format!("{base}/.well-known/openid-configuration"))
        .header("Host", "evil.example")
        .header("X-Forwarded-Host", "evil.example")
        .header("X-Forwarded-Proto", "http")
        .header("Forwarded", "host=evil.example;proto=http")
        .send()
        .await
        .expect("discovery");
    assert_eq!(spoofed.status(), 200);
    ids.push(request_id(&spoofed));
    let spoofed: Value = spoofed.json().await.expect("json");
    assert_eq!(spoofed["issuer"], ISSUER, "the issuer never comes from request headers");
    assert_eq!(spoofed["token_endpoint"], discovery["token_endpoint"]);

    // nginx adds none of Truxe's headers and drops none: each as often as the instance sends it.
    let plain = reqwest::Client::new();
    let direct = plain.get(a.url("/.well-known/openid-configuration")).send().await.expect("direct");
    assert_same_headers(&via_nginx, direct.headers(), "discovery");

    // A client registered through nginx (the admin API is under /oauth-provider/).
    let created = https
        .post(format!("{base}/oauth-provider/clients"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({
            "client_name": "nginx worker",
            "grant_types": ["client_credentials"],
            "token_endpoint_auth_method": "client_secret_basic",
            "allowed_scopes": ["orders:read"],
        }))
        .send()
        .await
        .expect("register");
    assert_eq!(created.status(), 201);
    ids.push(request_id(&created));
    let created: Value = created.json().await.expect("json");
    let client_id = created["client_id"].as_str().expect("client_id").to_string();
    let secret = created["client_secret"].as_str().expect("client_secret").to_string();

    // client_credentials through nginx, several times: round robin sends them to both instances,
    // and each token is active on both (one database, one key).
    let mut tokens = Vec::new();
    for _ in 0..4 {
        let response = https
            .post(format!("{base}/oauth-provider/token"))
            .basic_auth(&client_id, Some(&secret))
            .form(&[("grant_type", "client_credentials"), ("scope", "orders:read")])
            .send()
            .await
            .expect("token");
        assert_eq!(response.status(), 200);
        ids.push(request_id(&response));
        if tokens.is_empty() {
            let direct = plain
                .post(a.url("/oauth-provider/token"))
                .basic_auth(&client_id, Some(&secret))
                .form(&[("grant_type", "client_credentials")])
                .send()
                .await
                .expect("direct token");
            assert_eq!(direct.status(), 200);
            assert_same_headers(response.headers(), direct.headers(), "token");
        }
        let body: Value = response.json().await.expect("json");
        assert_eq!(body["token_type"], "Bearer", "{body}");
        tokens.push(body["access_token"].as_str().expect("access_token").to_string());
    }
    for token in &tokens {
        for instance in [&a, &b] {
            let answer: Value = plain
                .post(instance.url("/oauth-provider/introspect"))
                .basic_auth(&client_id, Some(&secret))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .expect("introspect")
                .json()
                .await
                .expect("json");
            assert_eq!(answer["active"], true, "a token issued through nginx on port {}: {answer}", instance.port);
            assert_eq!(answer["iss"], ISSUER);
        }
    }

    // TLS: HTTP/2 offered by ALPN, TLS 1.3 preferred, TLS 1.1 refused.
    let (version, alpn) = nginx.handshake(b"\x02h2\x08http/1.1", None).expect("a TLS handshake");
    assert_eq!((version.as_str(), alpn.as_deref()), ("TLSv1.3", Some(&b"h2"[..])));
    let (version, _) = nginx.handshake(b"\x08http/1.1", Some(SslVersion::TLS1_2)).expect("TLS 1.2");
    assert_eq!(version, "TLSv1.2");
    assert!(nginx.handshake(b"\x08http/1.1", Some(SslVersion::TLS1_1)).is_err(), "TLS 1.1 is refused");

    // Plain HTTP: a 301 to the same path on HTTPS; certbot's challenges are served, not redirected.
    let http = nginx.http_client();
    let http_base = format!("http://{HOST}:{}", nginx.http_port);
    let redirect = http.get(format!("{http_base}/oauth-provider/authorize?client_id=x&state=a%20b")).send().await;
    let redirect = redirect.expect("http");
    assert_eq!(redirect.status(), 301);
    assert_eq!(
        header(&redirect, "location"),
        Some(format!("{ISSUER}/oauth-provider/authorize?client_id=x&state=a%20b"))
    );
    let challenge = nginx.webroot().join(".well-known/acme-challenge");
    std::fs::create_dir_all(&challenge).expect("challenge dir");
    std::fs::write(challenge.join("tok3n"), "tok3n.thumbprint").expect("challenge");
    let served = http.get(format!("{http_base}/.well-known/acme-challenge/tok3n")).send().await.expect("http");
    assert_eq!(served.status(), 200);
    assert_eq!(served.text().await.expect("body"), "tok3n.thumbprint");
    let missing = http.get(format!("{http_base}/.well-known/acme-challenge/none")).send().await.expect("http");
    assert_eq!(missing.status(), 404, "an unknown challenge is not redirected");

    // A burst beyond the oauth_limit zone (10 r/s, burst 20): nginx answers 429 itself (not 503),
    // OAuth-shaped, without reaching an instance (no X-Request-Id); the rest reach Truxe (401).
    let burst = (0..60).map(|_| https.get(format!("{base}/oauth-provider/userinfo")).send());
    let answers = futures_join(burst).await;
    let (mut limited, mut passed) = (0, 0);
    for response in answers {
        let response = response.expect("burst request");
        match response.status().as_u16() {
            429 => {
                limited += 1;
                assert_eq!(header(&response, "x-request-id"), None, "nginx's own 429");
                assert_eq!(header(&response, "retry-after"), Some("1".into()));
                assert_eq!(header(&response, "cache-control"), Some("no-store".into()));
                assert_eq!(header(&response, "content-type"), Some("application/json".into()));
                let body: Value = response.json().await.expect("json 429");
                assert_eq!(body["error"], "temporarily_unavailable");
            }
            401 => passed += 1,
            other => panic!("a burst request got {other}: {}", response.text().await.unwrap_or_default()),
        }
    }
    assert!(limited > 0 && passed > 0, "{limited} limited, {passed} passed");
    assert!(nginx.error_log().contains("limiting requests"), "nginx logs the limit:\n{}", nginx.error_log());
    drop(nginx);

    // Both instances served requests, each of nginx's request ids reached exactly one of them.
    let (_, a_log) = a.terminate();
    let (_, b_log) = b.terminate();
    for id in &ids {
        assert_eq!(id.len(), 32, "nginx's $request_id is passed on: {id}");
        assert_eq!(a_log.contains(id.as_str()) as u8 + b_log.contains(id.as_str()) as u8, 1, "{id}");
    }
    let on_a = ids.iter().filter(|id| a_log.contains(id.as_str())).count();
    assert!(on_a > 0 && on_a < ids.len(), "round robin: {on_a} of {} requests on the first instance", ids.len());
}

/// Every header of `TRUXE_HEADERS` exactly once through nginx, as directly from an instance
/// (Truxe sends each on every answer); the obsolete X-XSS-Protection never.
fn assert_same_headers(via_nginx: &reqwest::header::HeaderMap, direct: &reqwest::header::HeaderMap, what: &str) {
    for name in TRUXE_HEADERS {
        let count = via_nginx.get_all(name).iter().count();
        assert_eq!(count, direct.get_all(name).iter().count(), "{what}: {name} through nginx and directly");
        assert_eq!(count, 1, "{what}: {name} sent {count} times");
    }
    assert_eq!(via_nginx.get_all("x-request-id").iter().count(), 1, "{what}: X-Request-Id");
    assert!(via_nginx.get("x-xss-protection").is_none(), "{what}: X-XSS-Protection is obsolete");
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn request_id(response: &reqwest::Response) -> String {
    header(response, "x-request-id").expect("an X-Request-Id")
}

/// Runs the futures concurrently (on the test's runtime) and returns their outputs in order.
async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(handles.len());
    for handle in handles {
        outputs.push(handle.await.expect("task"));
    }
    outputs
}

/// A throwaway CA and a certificate it signed for `HOST`, localhost and 127.0.0.1.
struct Tls {
    ca_pem: Vec<u8>,
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
}

impl Tls {
    fn generate() -> Self {
        let (ca_key, ca) = certificate("Truxe test CA", None, true);
        let (key, cert) = certificate(HOST, Some((&ca_key, &ca)), false);
        Tls {
            ca_pem: ca.to_pem().expect("pem"),
            // fullchain.pem, as certbot writes it: the certificate, then the CA.
            cert_pem: [cert.to_pem().expect("pem"), ca.to_pem().expect("pem")].concat(),
            key_pem: key.private_key_to_pem_pkcs8().expect("pem"),
        }
    }
}

/// A P-256 key and a one-day certificate: self-signed (a CA) when `issuer` is `None`.
fn certificate(cn: &str, issuer: Option<(&PKey<Private>, &X509)>, ca: bool) -> (PKey<Private>, X509) {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("curve");
    let key = PKey::from_ec_key(EcKey::generate(&group).expect("key")).expect("pkey");
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_nid(Nid::COMMONNAME, cn).expect("cn");
    let name = name.build();
    let mut builder = X509::builder().expect("builder");
    builder.set_version(2).expect("version");
    let mut serial = BigNum::new().expect("bn");
    serial.rand(127, MsbOption::MAYBE_ZERO, false).expect("serial");
    builder.set_serial_number(&serial.to_asn1_integer().expect("serial")).expect("serial");
    builder.set_subject_name(&name).expect("subject");
    builder.set_issuer_name(issuer.map_or(&name, |(_, cert)| cert.subject_name())).expect("issuer");
    builder.set_pubkey(&key).expect("pubkey");
    builder.set_not_before(&Asn1Time::days_from_now(0).expect("time")).expect("not before");
    builder.set_not_after(&Asn1Time::days_from_now(1).expect("time")).expect("not after");
    if ca {
        builder.append_extension(BasicConstraints::new().critical().ca().build().expect("bc")).expect("bc");
        builder
            .append_extension(KeyUsage::new().critical().key_cert_sign().crl_sign().build().expect("ku"))
            .expect("ku");
    } else {
        builder.append_extension(BasicConstraints::new().build().expect("bc")).expect("bc");
        builder.append_extension(KeyUsage::new().critical().digital_signature().build().expect("ku")).expect("ku");
        builder.append_extension(ExtendedKeyUsage::new().server_auth().build().expect("eku")).expect("eku");
        let san = SubjectAlternativeName::new()
            .dns(HOST)
            .dns("localhost")
            .ip("127.0.0.1")
            .build(&builder.x509v3_context(issuer.map(|(_, cert)| cert.as_ref()), None))
            .expect("san");
        builder.append_extension(san).expect("san");
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&builder.x509v3_context(issuer.map(|(_, cert)| cert.as_ref()), None))
        .expect("ski");
    builder.append_extension(ski).expect("ski");
    if let Some((_, issuer_cert)) = issuer {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&builder.x509v3_context(Some(issuer_cert), None))
            .expect("aki");
        builder.append_extension(aki).expect("aki");
    }
    builder.sign(issuer.map_or(&key, |(issuer_key, _)| issuer_key), MessageDigest::sha256()).expect("sign");
    (key, builder.build())
}

/// The changes the test makes to a copy of the shipped file: each `from` must be in it.
fn substitutions(dir: &Path, http_port: u16, https_port: u16, upstreams: [u16; 2]) -> Vec<(String, String)> {
    let dir = dir.display();
    vec![
        ("listen 80;".into(), format!("listen 127.0.0.1:{http_port};")),
        ("listen [::]:80;".into(), String::new()),
        ("listen 443 ssl http2;".into(), format!("listen 127.0.0.1:{https_port} ssl http2;")),
        ("listen [::]:443 ssl http2;".into(), String::new()),
        ("/etc/letsencrypt/live/auth.example.com/".into(), format!("{dir}/tls/")),
        ("/var/www/certbot".into(), format!("{dir}/webroot")),
        ("server 127.0.0.1:3001;".into(), format!("server 127.0.0.1:{};", upstreams[0])),
        ("server 127.0.0.1:3002;".into(), format!("server 127.0.0.1:{};", upstreams[1])),
    ]
}

/// `packaging/nginx/truxe.conf`, from the workspace.
fn shipped_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/nginx/truxe.conf")
}

fn nginx_binary() -> PathBuf {
    if let Ok(path) = std::env::var("TRUXE_TEST_NGINX") {
        return PathBuf::from(path);
    }
    let path = PathBuf::from("/usr/sbin/nginx");
    assert!(path.exists(), "nginx is missing: run the suite with ./scripts/test (it installs Debian's nginx as root)");
    path
}

/// An nginx in the foreground, in one process (`master_process off`: nothing to switch users for
/// when the tests run as root, and no workers left behind if it is killed), with everything it
/// writes in its own temp dir.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    http_port: u16,
    https_port: u16,
    ca_pem: Vec<u8>,
}

impl Nginx {
    fn start(upstreams: [u16; 2]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path();
        let tls = Tls::generate();
        std::fs::create_dir_all(root.join("tls")).expect("tls dir");
        std::fs::create_dir_all(root.join("webroot")).expect("webroot");
        std::fs::write(root.join("tls/fullchain.pem"), &tls.cert_pem).expect("cert");
        std::fs::write(root.join("tls/privkey.pem"), &tls.key_pem).expect("key");

        let (http_port, https_port) = (free_port(), free_port());
        let mut site = std::fs::read_to_string(shipped_config()).expect("packaging/nginx/truxe.conf");
        for (from, to) in substitutions(root, http_port, https_port, upstreams) {
            assert!(site.contains(&from), "packaging/nginx/truxe.conf no longer contains {from:?}");
            site = site.replace(&from, &to);
        }
        std::fs::write(root.join("truxe.conf"), site).expect("site");
        // The main context Debian's /etc/nginx/nginx.conf would give, with every path in the temp dir.
        let r = root.display();
        let main = format!(
            "daemon off;\nmaster_process off;\npid {r}/nginx.pid;\nerror_log {r}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n  access_log {r}/access.log;\n  client_body_temp_path {r}/tmp/body;\n  \
             proxy_temp_path {r}/tmp/proxy;\n  fastcgi_temp_path {r}/tmp/fastcgi;\n  \
             uwsgi_temp_path {r}/tmp/uwsgi;\n  scgi_temp_path {r}/tmp/scgi;\n  include {r}/truxe.conf;\n}}\n"
        );
        std::fs::create_dir_all(root.join("tmp")).expect("tmp");
        std::fs::write(root.join("nginx.conf"), main).expect("nginx.conf");

        let command = |test: bool| {
            let mut cmd = Command::new(nginx_binary());
            cmd.arg("-p").arg(root).arg("-c").arg(root.join("nginx.conf")).arg("-e").arg(root.join("error.log"));
            if test {
                cmd.arg("-t");
            }
            cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
            cmd
        };
        let checked = command(true).output().expect("run nginx -t");
        assert!(checked.status.success(), "nginx -t refuses the config: {}", String::from_utf8_lossy(&checked.stderr));
        let child = command(false).spawn().expect("spawn nginx");
        let mut nginx = Nginx { child, dir, http_port, https_port, ca_pem: tls.ca_pem };
        nginx.wait_until_listening();
        nginx
    }

    /// Until both ports accept connections (nginx binds them before it serves), or nginx exits.
    fn wait_until_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                panic!("nginx exited ({status}):\n{}", self.error_log());
            }
            let listening = [self.http_port, self.https_port]
                .iter()
                .all(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok());
            if listening {
                return;
            }
            assert!(Instant::now() < deadline, "nginx did not listen within 30 s:\n{}", self.error_log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn webroot(&self) -> PathBuf {
        self.dir.path().join("webroot")
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }

    /// HTTPS to `HOST` (resolved to nginx) trusting only the throwaway CA; redirects not followed.
    fn https_client(&self) -> reqwest::Client {
        let ca = reqwest::Certificate::from_pem(&self.ca_pem).expect("CA");
        reqwest::Client::builder()
            .tls_certs_only([ca])
            .resolve(HOST, ([127, 0, 0, 1], self.https_port).into())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("https client")
    }

    /// A TLS handshake with nginx offering `alpn` (wire format) up to `max_version`, verified
    /// against the throwaway CA: the negotiated version and protocol.
    fn handshake(&self, alpn: &[u8], max_version: Option<SslVersion>) -> Result<(String, Option<Vec<u8>>), String> {
        let mut connector = SslConnector::builder(SslMethod::tls_client()).expect("connector");
        connector.cert_store_mut().add_cert(X509::from_pem(&self.ca_pem).expect("CA")).expect("CA");
        connector.set_alpn_protos(alpn).expect("alpn");
        // OpenSSL's default security level refuses TLS 1.1 on the client side already; lower it so
        // that the refusal tested is nginx's.
        connector.set_security_level(0);
        connector.set_min_proto_version(Some(SslVersion::TLS1)).expect("min version");
        connector.set_max_proto_version(max_version).expect("max version");
        let tcp = std::net::TcpStream::connect(("127.0.0.1", self.https_port)).expect("connect");
        let stream = connector.build().connect(HOST, tcp).map_err(|e| e.to_string())?;
        let ssl = stream.ssl();
        Ok((ssl.version_str().to_string(), ssl.selected_alpn_protocol().map(<[u8]>::to_vec)))
    }

    fn http_client(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .resolve(HOST, ([127, 0, 0, 1], self.http_port).into())
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("http client")
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
