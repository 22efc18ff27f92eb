//! Tests for `Config::from_lookup` and `Config::load`, driven by maps instead of the environment.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::*;

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
    let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Config::from_lookup(&|k| map.get(k).cloned())
}

fn ok(vars: &[(&str, &str)]) -> Config {
    match config(vars) {
        Ok(c) => c,
        Err(e) => panic!("expected a valid configuration, got {e}"),
    }
}

fn errors(vars: &[(&str, &str)]) -> Vec<String> {
    match config(vars) {
        Ok(_) => panic!("expected configuration errors for {vars:?}"),
        Err(ConfigErrors(list)) => list,
    }
}

fn assert_one_error_naming(vars: &[(&str, &str)], name: &str) -> String {
    let list = errors(vars);
    assert_eq!(list.len(), 1, "{list:#?}");
    assert!(list[0].starts_with(name), "{list:#?}");
    list.into_iter().next().unwrap_or_default()
}

/// RSA generation is slow in debug builds; one key serves every test here.
fn test_key() -> &'static SigningKey {
    static KEY: OnceLock<SigningKey> = OnceLock::new();
    KEY.get_or_init(|| SigningKey::generate(Algorithm::RS256, 2048).expect("rsa"))
}

const STRONG_SESSION: &str = "q8Zr2LxV0pTn5Kc7Wb1Ys9Hf3Dg6Mj4Ea_Ru";
const STRONG_ADMIN: &str = "N4vB8xQ2mK7pL1zR5tY9wC3hF6jD0sG-aE";

fn production_vars(key_pem: &str) -> Vec<(&'static str, String)> {
    vec![
        ("NODE_ENV", "production".into()),
        ("API_URL", "https://auth.example.com".into()),
        ("DATABASE_URL", "postgresql://truxe:pw@db:5432/truxe_prod".into()),
        ("JWT_PRIVATE_KEY", key_pem.into()),
        ("SESSION_SECRET", STRONG_SESSION.into()),
        ("ADMIN_TOKEN", STRONG_ADMIN.into()),
        ("SMTP_HOST", "smtp.brevo.com".into()),
        ("EMAIL_FROM", "noreply@yourdomain.com".into()),
    ]
}

fn as_refs<'a>(vars: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    vars.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[test]
fn zero_config_is_a_working_development_setup() {
    let c = ok(&[]);
    assert_eq!(c.mode, Mode::Development);
    assert!(!c.is_production());
    assert_eq!(c.port, 3001);
    assert_eq!(c.data_dir, PathBuf::from("./truxe-data"));
    assert_eq!(c.issuer, "http://127.0.0.1:3001");
    assert!(c.database.is_embedded_default);
    assert_eq!(c.database.url, DatabaseUrl::Sqlite(PathBuf::from("./truxe-data/truxe.db")));
    assert_eq!((c.database.pool_min, c.database.pool_max), (2, 10));
    assert_eq!(c.database.idle_timeout, Duration::from_millis(10_000));
    assert_eq!(c.database.connection_timeout, Duration::from_millis(5_000));
    assert!(!c.database.ssl && c.database.ssl_reject_unauthorized);
    assert!(c.redis.is_none() && c.smtp.is_none());
    assert_eq!(c.jwt.algorithm, Algorithm::RS256);
    assert_eq!(c.access_token_ttl, Duration::from_secs(900));
    assert_eq!(c.refresh_token_ttl, Duration::from_secs(604_800));
    assert_eq!(c.session.max_age, Duration::from_secs(86_400));
    assert!(!c.session.secure);
    assert_eq!(c.session.same_site, SameSite::Lax);
    assert_eq!(c.oauth.authorization_code_ttl, Duration::from_secs(600));
    assert!(c.oauth.require_pkce && c.oauth.allow_refresh_token);
    assert_eq!(c.bcrypt_rounds, 12);
    assert!(c.allowed_origins.is_empty());
    assert!(c.rate_limit.enabled);
    assert_eq!((c.rate_limit.window, c.rate_limit.max), (Duration::from_secs(900), 100));
    assert_eq!((c.rate_limit.oauth_window, c.rate_limit.oauth_max), (Duration::from_secs(900), 50));
    assert_eq!(c.rate_limit.endpoint("userinfo"), Some((60, 100)));
    assert_eq!(c.rate_limit.endpoints.len(), 5);
    assert_eq!(c.log_level, "info");
    assert!(!c.mfa.enabled);
    assert_eq!(c.mfa.issuer, "Truxe");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn mode_follows_node_env_or_truxe_env() {
    assert_eq!(ok(&[("NODE_ENV", "development")]).mode, Mode::Development);
    assert_eq!(ok(&[("NODE_ENV", "test")]).mode, Mode::Development);
    assert!(config(&[("NODE_ENV", "production")]).is_err());
    assert!(config(&[("TRUXE_ENV", "production")]).is_err());
    assert!(config(&[("NODE_ENV", "development"), ("TRUXE_ENV", "production")]).is_err());
}

#[test]
fn durations_in_every_unit_and_their_errors() {
    let c = ok(&[
        ("ACCESS_TOKEN_EXPIRY", "900"),
        ("REFRESH_TOKEN_EXPIRY", "7d"),
        ("OAUTH_AUTHORIZATION_CODE_EXPIRY", "500ms"),
        ("SESSION_MAX_AGE", "86400000"),
        ("RATE_LIMIT_WINDOW", "900000"),
        ("OAUTH_RATE_LIMIT_WINDOW", "15m"),
        ("DATABASE_IDLE_TIMEOUT", "30000"),
        ("DATABASE_CONNECTION_TIMEOUT", "2s"),
    ]);
    assert_eq!(c.access_token_ttl, Duration::from_secs(900));
    assert_eq!(c.refresh_token_ttl, Duration::from_secs(604_800));
    assert_eq!(c.oauth.authorization_code_ttl, Duration::from_millis(500));
    assert_eq!(c.session.max_age, Duration::from_secs(86_400));
    assert_eq!(c.rate_limit.window, Duration::from_secs(900));
    assert_eq!(c.rate_limit.oauth_window, Duration::from_secs(900));
    assert_eq!(c.database.idle_timeout, Duration::from_secs(30));
    assert_eq!(c.database.connection_timeout, Duration::from_secs(2));

    let message = assert_one_error_naming(&[("ACCESS_TOKEN_EXPIRY", "15x")], "ACCESS_TOKEN_EXPIRY");
    assert_eq!(message, r#"ACCESS_TOKEN_EXPIRY: "15x" is not a duration (examples: 900, 15m, 7d)"#);
    assert_one_error_naming(&[("REFRESH_TOKEN_EXPIRY", "-1")], "REFRESH_TOKEN_EXPIRY");
    assert_one_error_naming(&[("SESSION_MAX_AGE", "1.5h")], "SESSION_MAX_AGE");
    assert_one_error_naming(&[("RATE_LIMIT_WINDOW", "99999999999999999999999")], "RATE_LIMIT_WINDOW");
    assert_one_error_naming(&[("OAUTH_AUTHORIZATION_CODE_EXPIRY", "0")], "OAUTH_AUTHORIZATION_CODE_EXPIRY");
    // Empty counts as unset, so the default stands.
    assert_eq!(ok(&[("ACCESS_TOKEN_EXPIRY", "")]).access_token_ttl, Duration::from_secs(900));
}

#[test]
fn token_lifetime_aliases() {
    let c = ok(&[("ACCESS_TOKEN_MAX_AGE", "600"), ("REFRESH_TOKEN_MAX_AGE", "86400")]);
    assert_eq!(c.access_token_ttl, Duration::from_secs(600));
    // REFRESH_TOKEN_MAX_AGE is the family's absolute lifetime, not an alias.
    assert_eq!(c.refresh_token_ttl, Duration::from_secs(604_800));
    assert_eq!(c.refresh_token_max_age, Duration::from_secs(86_400));
    let c = ok(&[]);
    assert_eq!(c.refresh_token_max_age, Duration::from_secs(30 * 86_400));
    assert_eq!(c.oauth.refresh_reuse_grace, Duration::ZERO, "a rotated token presented again is a replay");
    let c = ok(&[("REFRESH_TOKEN_EXPIRY", "90d")]);
    assert_eq!(c.refresh_token_max_age, Duration::from_secs(90 * 86_400));
    // The guide sets both to the same value.
    let c = ok(&[
        ("ACCESS_TOKEN_EXPIRY", "15m"),
        ("ACCESS_TOKEN_MAX_AGE", "900"),
        ("REFRESH_TOKEN_EXPIRY", "7d"),
        ("REFRESH_TOKEN_MAX_AGE", "604800"),
    ]);
    assert_eq!(c.access_token_ttl, Duration::from_secs(900));
    let message = assert_one_error_naming(
        &[("ACCESS_TOKEN_EXPIRY", "15m"), ("ACCESS_TOKEN_MAX_AGE", "600")],
        "ACCESS_TOKEN_EXPIRY",
    );
    assert!(
        message.contains("ACCESS_TOKEN_MAX_AGE") && message.contains("15m") && message.contains("10m"),
        "{message}"
    );
    let c = ok(&[("REFRESH_TOKEN_EXPIRY", "7d"), ("REFRESH_TOKEN_MAX_AGE", "3600")]);
    assert_eq!(c.refresh_token_max_age, Duration::from_secs(3600));
}

#[test]
fn booleans_and_numbers() {
    let c = ok(&[
        ("OAUTH_REQUIRE_PKCE", "no"),
        ("OAUTH_ALLOW_REFRESH_TOKEN", "OFF"),
        ("MFA_ENABLED", "1"),
        ("DATABASE_SSL", "Yes"),
        ("DATABASE_URL", "postgres://db/truxe"),
        ("SESSION_SECURE", "true"),
        ("BCRYPT_ROUNDS", "10"),
        ("RATE_LIMIT_MAX", "5"),
    ]);
    assert!(!c.oauth.require_pkce && !c.oauth.allow_refresh_token);
    assert!(c.mfa.enabled && c.database.ssl && c.session.secure);
    assert_eq!((c.bcrypt_rounds, c.rate_limit.max), (10, 5));

    assert_one_error_naming(&[("MFA_ENABLED", "maybe")], "MFA_ENABLED");
    assert_one_error_naming(&[("BCRYPT_ROUNDS", "3")], "BCRYPT_ROUNDS");
    assert_one_error_naming(&[("BCRYPT_ROUNDS", "32")], "BCRYPT_ROUNDS");
    let message = assert_one_error_naming(&[("PORT", "abc")], "PORT");
    assert_eq!(message, r#"PORT: "abc" is not a port number (1-65535)"#);
    assert_one_error_naming(&[("DATABASE_POOL_MIN", "20"), ("DATABASE_POOL_MAX", "5")], "DATABASE_POOL_MIN");
    assert_one_error_naming(&[("DATABASE_POOL_MAX", "0")], "DATABASE_POOL_MAX");
}

#[test]
fn every_problem_is_listed_at_once() {
    let list =
        errors(&[("PORT", "abc"), ("MFA_ENABLED", "maybe"), ("LOG_LEVEL", "loud"), ("ACCESS_TOKEN_EXPIRY", "15x")]);
    assert_eq!(list.len(), 4, "{list:#?}");
    let shown = ConfigErrors(list).to_string();
    assert!(shown.starts_with("invalid configuration:\n  - "), "{shown}");
    for name in ["PORT", "MFA_ENABLED", "LOG_LEVEL", "ACCESS_TOKEN_EXPIRY"] {
        assert!(shown.contains(&format!("\n  - {name}: ")), "{shown}");
    }
}

#[test]
fn comma_lists() {
    let c = ok(&[("ALLOWED_ORIGINS", " https://app.yourdomain.com, https://yourdomain.com/ ,,http://localhost:5173,")]);
    assert_eq!(c.allowed_origins, ["https://app.yourdomain.com", "https://yourdomain.com", "http://localhost:5173"]);
    assert_eq!(ok(&[("ALLOWED_ORIGINS", "*")]).allowed_origins, ["*"]);
    assert_one_error_naming(&[("ALLOWED_ORIGINS", "https://app.example.com/login")], "ALLOWED_ORIGINS");
    assert_one_error_naming(&[("ALLOWED_ORIGINS", "app.example.com")], "ALLOWED_ORIGINS");
}

#[test]
fn origins_are_kept_as_browsers_serialize_them() {
    let c = ok(&[("ALLOWED_ORIGINS", "HTTPS://App.Example.com:443,http://localhost:80/,https://a.example:8443")]);
    assert_eq!(c.allowed_origins, ["https://app.example.com", "http://localhost", "https://a.example:8443"]);
    for bad in ["ftp://files.example.com", "https://user:pw@app.example.com", "https://app.example.com?x=1", "null"] {
        assert_one_error_naming(&[("ALLOWED_ORIGINS", bad)], "ALLOWED_ORIGINS");
    }
}

#[test]
fn client_timeout_and_connection_limit() {
    let c = ok(&[]);
    assert_eq!(c.http.client_timeout, Duration::from_secs(10));
    assert_eq!(c.http.max_connections, 4_096);
    let c = ok(&[("TRUXE_CLIENT_TIMEOUT", "2s"), ("TRUXE_MAX_CONNECTIONS", "100")]);
    assert_eq!((c.http.client_timeout, c.http.max_connections), (Duration::from_secs(2), 100));
    assert_eq!(ok(&[("TRUXE_CLIENT_TIMEOUT", "30")]).http.client_timeout, Duration::from_secs(30));
    for bad in ["0", "500ms", "6m", "soon"] {
        assert_one_error_naming(&[("TRUXE_CLIENT_TIMEOUT", bad)], "TRUXE_CLIENT_TIMEOUT");
    }
    for bad in ["0", "15", "many"] {
        assert_one_error_naming(&[("TRUXE_MAX_CONNECTIONS", bad)], "TRUXE_MAX_CONNECTIONS");
    }
}

#[test]
fn rate_limit_endpoint_overrides() {
    let c = ok(&[("RATE_LIMIT_ENDPOINTS", "authorize=5:8, token=30:60")]);
    assert_eq!(c.rate_limit.endpoint("authorize"), Some((5, 8)));
    assert_eq!(c.rate_limit.endpoint("token"), Some((30, 60)));
    assert_eq!(c.rate_limit.endpoint("revoke"), Some((10, 20)));
    assert_eq!(c.rate_limit.endpoints.len(), 5);
    let list = errors(&[("RATE_LIMIT_ENDPOINTS", "login=1:2,token=20,revoke=0:5,token=1:1,token=2:2")]);
    assert_eq!(list.len(), 4, "{list:#?}");
    assert!(list.iter().all(|m| m.starts_with("RATE_LIMIT_ENDPOINTS: ")), "{list:#?}");
    assert!(list[0].contains("unknown endpoint \"login\""), "{list:#?}");
}

#[test]
fn log_levels() {
    assert_eq!(ok(&[("LOG_LEVEL", "debug")]).log_level, "debug");
    assert_eq!(ok(&[("LOG_LEVEL", "WARN")]).log_level, "warn");
    assert_eq!(ok(&[("LOG_LEVEL", "fatal")]).log_level, "error");
    assert_one_error_naming(&[("LOG_LEVEL", "verbose")], "LOG_LEVEL");
}

#[test]
fn pem_with_literal_backslash_n() {
    let key = test_key();
    let pem = key.private_pem().secret().clone();
    let public = key.public_pem();
    let escaped = pem.trim_end().replace('\n', "\\n");
    let public_escaped = public.replace('\n', "\\n");
    let c = ok(&[("JWT_PRIVATE_KEY", &escaped), ("JWT_PUBLIC_KEY", &public_escaped)]);
    assert_eq!(c.jwt.private_key_pem.as_ref().map(|s| s.secret().as_str()), Some(pem.as_str()));
    assert_eq!(c.jwt.public_key_pem.as_deref(), Some(public.as_str()));

    // What `cat key.pem | tr '\n' '\\n'` in the deployment guide really produces.
    let tr_output = pem.replace('\n', "\\");
    let c = ok(&[("JWT_PRIVATE_KEY", &tr_output)]);
    assert_eq!(c.jwt.private_key_pem.as_ref().map(|s| s.secret().as_str()), Some(pem.as_str()));
}

#[test]
fn pem_shapes_normalize_to_one_form() {
    let expected = "-----BEGIN PRIVATE KEY-----\nnAbC\nrXyZ\n-----END PRIVATE KEY-----\n";
    for input in [
        expected,
        "-----BEGIN PRIVATE KEY-----\\nnAbC\\nrXyZ\\n-----END PRIVATE KEY-----",
        "-----BEGIN PRIVATE KEY-----\\r\\nnAbC\\r\\nrXyZ\\r\\n-----END PRIVATE KEY-----\\r\\n",
        // tr output: lines starting with n or r must keep that letter.
        "-----BEGIN PRIVATE KEY-----\\nAbC\\rXyZ\\-----END PRIVATE KEY-----\\",
        "\"-----BEGIN PRIVATE KEY-----\\nnAbC\\nrXyZ\\n-----END PRIVATE KEY-----\"",
        "  -----BEGIN PRIVATE KEY-----\r\nnAbC\r\nrXyZ\r\n-----END PRIVATE KEY-----\r\n\n",
    ] {
        assert_eq!(normalize_pem(input), expected, "{input:?}");
    }
}

#[test]
fn jwt_key_problems_are_listed_with_the_rest() {
    let key = test_key();
    let pem = key.private_pem().secret().clone();
    let list = errors(&[("JWT_PRIVATE_KEY", &pem), ("JWT_ALGORITHM", "ES256")]);
    assert_eq!(list, ["JWT_ALGORITHM is ES256 but the key is RSA"]);
    let message = assert_one_error_naming(&[("JWT_ALGORITHM", "HS256")], "JWT_ALGORITHM");
    assert!(message.contains("RS256, ES256, EdDSA"), "{message}");
    let message = assert_one_error_naming(
        &[("JWT_PRIVATE_KEY", "-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----")],
        "JWT_PRIVATE_KEY",
    );
    assert!(message.contains("not a PEM private key"), "{message}");
    let other = SigningKey::generate(Algorithm::ES256, 0).expect("ec");
    let list = errors(&[("JWT_PRIVATE_KEY", &pem), ("JWT_PUBLIC_KEY", &other.public_pem())]);
    assert_eq!(list, ["JWT_PUBLIC_KEY does not match JWT_PRIVATE_KEY"]);
    let c = ok(&[("JWT_PUBLIC_KEY", &key.public_pem())]);
    assert!(
        c.warnings.iter().any(|w| w.starts_with("JWT_PUBLIC_KEY is set without JWT_PRIVATE_KEY")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn file_indirection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let secret_path = dir.path().join("session_secret");
    std::fs::write(&secret_path, format!("{STRONG_SESSION}\r\n")).expect("write");
    let port_path = dir.path().join("port");
    std::fs::write(&port_path, "4000\n").expect("write");
    let c = ok(&[
        ("SESSION_SECRET_FILE", secret_path.to_str().expect("utf8")),
        ("PORT_FILE", port_path.to_str().expect("utf8")),
    ]);
    assert_eq!(c.session.secret.as_ref().map(|s| s.secret().as_str()), Some(STRONG_SESSION));
    assert_eq!(c.port, 4000);
    assert!(c.warnings.iter().all(|w| !w.contains("not acted on")), "{:?}", c.warnings);

    // Only one newline is removed: the rest is the value.
    std::fs::write(&secret_path, "abc\n\n").expect("write");
    let c = ok(&[("SESSION_SECRET_FILE", secret_path.to_str().expect("utf8"))]);
    assert_eq!(c.session.secret.as_ref().map(|s| s.secret().as_str()), Some("abc\n"));

    let missing = dir.path().join("missing");
    let message =
        assert_one_error_naming(&[("SESSION_SECRET_FILE", missing.to_str().expect("utf8"))], "SESSION_SECRET_FILE");
    assert!(message.starts_with(&format!("SESSION_SECRET_FILE: cannot read {}: ", missing.display())), "{message}");

    let message = assert_one_error_naming(
        &[("ADMIN_TOKEN", "x"), ("ADMIN_TOKEN_FILE", secret_path.to_str().expect("utf8"))],
        "ADMIN_TOKEN",
    );
    assert!(message.contains("ADMIN_TOKEN_FILE"), "{message}");
}

#[test]
fn file_indirection_failures_are_not_reported_twice_in_production() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let key = test_key().private_pem().secret().clone();
    let mut vars = production_vars(&key);
    vars.retain(|(k, _)| *k != "SESSION_SECRET");
    vars.push(("SESSION_SECRET_FILE", missing.display().to_string()));
    let list = errors(&as_refs(&vars));
    assert_eq!(list.len(), 1, "{list:#?}");
    assert!(list[0].starts_with("SESSION_SECRET_FILE: cannot read"), "{list:#?}");
}

#[test]
fn malformed_database_urls() {
    for bad in ["mysql://u:hunter2@db/truxe", "postgres://u:hunter2@db", "sqlite://", "sqlite://:memory:", "truxe.db"] {
        let message = assert_one_error_naming(&[("DATABASE_URL", bad)], "DATABASE_URL");
        assert!(!message.contains("hunter2"), "{message}");
    }
    let c = ok(&[("DATABASE_URL", "sqlite:///var/lib/truxe/truxe.db")]);
    assert_eq!(c.database.url, DatabaseUrl::Sqlite(PathBuf::from("/var/lib/truxe/truxe.db")));
    assert!(!c.database.is_embedded_default);
    let c = ok(&[("DATABASE_URL", "postgresql://username:password@db-host:5432/truxe_prod")]);
    assert!(c.database.url.is_postgres());
    assert!(!format!("{c:?}").contains("password@"), "Debug must not show the database password");
}

#[test]
fn redis_url_and_tls() {
    let c = ok(&[("REDIS_URL", "redis://:password@redis-host:6379"), ("REDIS_TLS", "true")]);
    let redis = c.redis.expect("redis");
    assert!(redis.tls);
    assert_eq!(redis.url.secret(), "rediss://:password@redis-host:6379");
    assert_eq!(redis.key("oauth:client:cl_1"), "oauth:client:cl_1");
    let c = ok(&[("REDIS_URL", "redis://redis-host"), ("TRUXE_REDIS_PREFIX", "staging:")]);
    assert_eq!(c.redis.expect("redis").key("oauth:client:cl_1"), "staging:oauth:client:cl_1");
    assert_one_error_naming(
        &[("REDIS_URL", "redis://redis-host"), ("TRUXE_REDIS_PREFIX", "a b")],
        "TRUXE_REDIS_PREFIX",
    );
    assert_one_error_naming(&[("REDIS_URL", "http://redis-host")], "REDIS_URL");
    let c = ok(&[("REDIS_TLS", "true")]);
    assert!(c.redis.is_none());
    assert!(c.warnings.iter().any(|w| w.starts_with("REDIS_TLS")), "{:?}", c.warnings);
}

#[test]
fn issuer_fallback_order() {
    assert_eq!(ok(&[("PORT", "8080")]).issuer, "http://127.0.0.1:8080");
    assert_eq!(ok(&[("API_URL", "https://api.example.com/")]).issuer, "https://api.example.com");
    let c = ok(&[("API_URL", "https://api.example.com"), ("JWT_ISSUER", "https://auth.example.com/tenant/")]);
    assert_eq!(c.issuer, "https://auth.example.com/tenant");
    assert_one_error_naming(&[("JWT_ISSUER", "https://auth.example.com/?x=1")], "JWT_ISSUER");
    assert_one_error_naming(&[("JWT_ISSUER", "https://auth.example.com#top")], "JWT_ISSUER");
    assert_one_error_naming(&[("JWT_ISSUER", "auth.example.com")], "JWT_ISSUER");
    assert_one_error_naming(&[("API_URL", "ftp://auth.example.com")], "API_URL");
}

#[test]
fn smtp_needs_email_from() {
    assert_one_error_naming(&[("SMTP_HOST", "smtp.brevo.com")], "EMAIL_FROM");
    let c = ok(&[
        ("SMTP_HOST", "smtp.brevo.com"),
        ("SMTP_PORT", "465"),
        ("SMTP_SECURE", "true"),
        ("SMTP_USER", "user"),
        ("SMTP_PASSWORD", "hunter2"),
        ("EMAIL_FROM", "noreply@yourdomain.com"),
        ("EMAIL_FROM_NAME", "Your App Name"),
    ]);
    let smtp = c.smtp.as_ref().expect("smtp");
    assert_eq!((smtp.host.as_str(), smtp.port, smtp.secure), ("smtp.brevo.com", 465, true));
    assert_eq!(smtp.from, "noreply@yourdomain.com");
    assert_eq!(smtp.from_name.as_deref(), Some("Your App Name"));
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(c.warnings.iter().all(|w| !w.contains("hunter2")));
}

#[test]
fn production_with_nothing_set_lists_every_problem_in_one_error() {
    let err = config(&[("NODE_ENV", "production")]).expect_err("production needs configuration");
    let shown = err.to_string();
    for name in
        ["JWT_PRIVATE_KEY", "DATABASE_URL", "SESSION_SECRET", "ADMIN_TOKEN", "SMTP_HOST", "EMAIL_FROM", "JWT_ISSUER"]
    {
        assert!(err.0.iter().any(|m| m.starts_with(&format!("{name}: "))), "{name} missing from {shown}");
    }
    assert_eq!(err.0.len(), 7, "{shown}");
}

#[test]
fn a_complete_production_configuration_passes() {
    let key = test_key().private_pem().secret().clone();
    let vars = production_vars(&key);
    let c = ok(&as_refs(&vars));
    assert!(c.is_production());
    assert!(c.session.secure, "SESSION_SECURE defaults to true in production");
    assert_eq!(c.issuer, "https://auth.example.com");
    assert!(c.smtp.is_some());
}

#[test]
fn production_refuses_http_issuers_wildcard_origins_and_weak_secrets() {
    let key = test_key().private_pem().secret().clone();
    let mut vars = production_vars(&key);
    vars.retain(|(k, _)| !["API_URL", "SESSION_SECRET", "ADMIN_TOKEN"].contains(k));
    vars.push(("JWT_ISSUER", "http://auth.example.com".into()));
    vars.push(("ALLOWED_ORIGINS", "https://app.example.com,*".into()));
    vars.push(("SESSION_SECRET", "<generate-strong-32+-char-secret>".into()));
    vars.push(("ADMIN_TOKEN", "short".into()));
    vars.push(("RATE_LIMIT_ENABLED", "false".into()));
    let list = errors(&as_refs(&vars));
    assert_eq!(list.len(), 4, "{list:#?}");
    for name in ["JWT_ISSUER", "ALLOWED_ORIGINS", "SESSION_SECRET", "ADMIN_TOKEN"] {
        assert!(list.iter().any(|m| m.starts_with(&format!("{name}: "))), "{name}: {list:#?}");
    }
    assert!(list.iter().all(|m| !m.contains("<generate")), "secrets must not be echoed: {list:#?}");
}

#[test]
fn production_warns_when_rate_limiting_is_off() {
    let key = test_key().private_pem().secret().clone();
    let mut vars = production_vars(&key);
    vars.push(("RATE_LIMIT_ENABLED", "false".into()));
    let c = ok(&as_refs(&vars));
    assert!(c.warnings.iter().any(|w| w.starts_with("RATE_LIMIT_ENABLED=false in production")), "{:?}", c.warnings);
}

#[test]
fn weak_secret_detection() {
    for weak in [
        "changeme-changeme-changeme-changeme",
        "my-Session-SECRET-0123456789-abcdefgh",
        "Password1234567890abcdefghijklmnopq",
        "<generate-strong-32+-char-secret>xxxxx",
        "example.example.example.example.01234",
        "abababababababababababababababababab",
        "0123456780123456780123456780123456",
        "too-short",
    ] {
        assert!(secret_problem(weak).is_some(), "{weak:?} should be weak");
    }
    for strong in [STRONG_SESSION, STRONG_ADMIN, "Kq3dM0s1y0cX1yZ8P5m1u6nC7o2qL4rT9wV+eA/bHjI="] {
        assert_eq!(secret_problem(strong), None, "{strong:?}");
    }
    let c = ok(&[("ADMIN_TOKEN", "changeme")]);
    assert!(c.warnings.iter().any(|w| w.starts_with("ADMIN_TOKEN is too short")), "{:?}", c.warnings);
    assert!(c.warnings.iter().all(|w| !w.contains("changeme")));
}

#[test]
fn every_variable_of_the_guide_is_acted_on_or_explained() {
    assert!(NOT_ACTED_ON.is_empty(), "{NOT_ACTED_ON:?}");
    // The guide's own monitoring lines: a placeholder DSN and a Datadog key.
    let c = ok(&[("SENTRY_DSN", "https://your-sentry-dsn"), ("DATADOG_API_KEY", "your-datadog-key")]);
    assert!(c.sentry_dsn.is_none(), "a placeholder sends nothing");
    assert_eq!(c.warnings.len(), 2, "{:#?}", c.warnings);
    assert!(c.warnings.iter().all(|w| !w.contains("not acted on")), "{:#?}", c.warnings);
    assert!(c.warnings[0].starts_with("SENTRY_DSN is the deployment guide's placeholder"), "{:#?}", c.warnings);
    let datadog = &c.warnings[1];
    assert!(datadog.starts_with("DATADOG_API_KEY is not used by Truxe: the Datadog Agent holds the key"), "{datadog}");
    assert!(datadog.contains("OpenMetrics check at http://THIS_HOST:3001/metrics"), "{datadog}");
    assert!(datadog.contains("set OTEL_EXPORTER_OTLP_ENDPOINT"), "{datadog}");
    assert!(!datadog.contains("your-datadog-key"), "the key is never quoted: {datadog}");
    // With traces and a metrics port, it says what is in place.
    let c = ok(&[
        ("DATADOG_API_KEY", "dd-key"),
        ("METRICS_PORT", "9464"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"),
    ]);
    assert_eq!(c.warnings.len(), 1, "{:#?}", c.warnings);
    assert!(c.warnings[0].contains("http://THIS_HOST:9464/metrics"), "{:#?}", c.warnings);
    assert!(c.warnings[0].contains("traces go over OTLP"), "{:#?}", c.warnings);
}

#[test]
fn sentry_dsn_is_checked() {
    let c = ok(&[("SENTRY_DSN", " https://0123abcd@o1.ingest.sentry.io/42 ")]);
    assert_eq!(c.sentry_dsn.as_ref().map(|d| d.secret().as_str()), Some("https://0123abcd@o1.ingest.sentry.io/42"));
    assert!(c.warnings.is_empty(), "{:#?}", c.warnings);
    assert_eq!(c.sentry_environment, None);
    let c = ok(&[("SENTRY_ENVIRONMENT", "staging"), ("SENTRY_DSN", "https://k@sentry.example.com/7")]);
    assert_eq!(c.sentry_environment.as_deref(), Some("staging"));
    assert!(c.warnings.is_empty(), "{:#?}", c.warnings);
    let c = ok(&[("SENTRY_ENVIRONMENT", "staging")]);
    assert_eq!(c.warnings, ["SENTRY_ENVIRONMENT is set but SENTRY_DSN is not; it is ignored"]);
    // The guide's placeholder DSN: the environment is ignored with it, and says so.
    let c = ok(&[("SENTRY_ENVIRONMENT", "staging"), ("SENTRY_DSN", "https://your-sentry-dsn")]);
    assert_eq!(c.warnings.len(), 2, "{:#?}", c.warnings);
    for bad in
        ["sentry.example.com", "https://sentry.example.com/1", "https://key@sentry.example.com/", "ftp://key@h/1"]
    {
        let message = assert_one_error_naming(&[("SENTRY_DSN", bad)], "SENTRY_DSN");
        assert!(message.contains("https://PUBLIC_KEY@HOST/PROJECT_ID"), "{message}");
    }
    // The key inside a DSN is not repeated in the message.
    let message = assert_one_error_naming(&[("SENTRY_DSN", "https://s3cr3tkey@sentry.example.com/")], "SENTRY_DSN");
    assert!(!message.contains("s3cr3tkey"), "{message}");
    // Production accepts the guide's placeholder too: the guide's file must start unchanged.
    let key = test_key().private_pem();
    let mut vars = production_vars(key.secret());
    vars.push(("SENTRY_DSN", "https://your-sentry-dsn".into()));
    let c = ok(&as_refs(&vars));
    assert!(c.sentry_dsn.is_none());
}

#[test]
fn metrics_port_is_a_port_other_than_port() {
    assert_eq!(ok(&[]).metrics_port, None);
    assert_eq!(ok(&[("METRICS_PORT", "9464")]).metrics_port, Some(9464));
    for bad in ["0", "70000", "metrics", "-1"] {
        let message = assert_one_error_naming(&[("METRICS_PORT", bad)], "METRICS_PORT");
        assert!(message.contains("port number"), "{message}");
    }
    let message = assert_one_error_naming(&[("METRICS_PORT", "3001")], "METRICS_PORT");
    assert!(message.contains("is also PORT"), "{message}");
    let message = assert_one_error_naming(&[("PORT", "8080"), ("METRICS_PORT", "8080")], "METRICS_PORT");
    assert!(message.contains("is also PORT"), "{message}");
    assert_eq!(ok(&[("PORT", "8080"), ("METRICS_PORT", "3001")]).metrics_port, Some(3001));
}

#[test]
fn otlp_endpoint_is_an_http_base_url() {
    assert_eq!(ok(&[]).otlp, None);
    let c = ok(&[("OTEL_SERVICE_NAME", "auth")]);
    assert_eq!(c.otlp, None, "a name alone exports nothing");
    assert_eq!(c.warnings, ["OTEL_SERVICE_NAME is set but OTEL_EXPORTER_OTLP_ENDPOINT is not; it is ignored"]);
    let c = ok(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://datadog-agent:4318/")]);
    assert_eq!(
        c.otlp,
        Some(OtlpConfig {
            traces_endpoint: "http://datadog-agent:4318/v1/traces".into(),
            service_name: "truxe".into()
        })
    );
    let c = ok(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://otel.example.com/otlp"), ("OTEL_SERVICE_NAME", "auth-eu")]);
    let otlp = c.otlp.expect("otlp");
    assert_eq!(otlp.traces_endpoint, "https://otel.example.com/otlp/v1/traces");
    assert_eq!(otlp.service_name, "auth-eu");
    for bad in ["localhost:4318", "grpc://collector:4317", "http://", "http://collector:4318/?x=1", "not a url"] {
        assert_one_error_naming(&[("OTEL_EXPORTER_OTLP_ENDPOINT", bad)], "OTEL_EXPORTER_OTLP_ENDPOINT");
    }
}

#[test]
fn same_site_none_needs_secure_cookies() {
    assert_one_error_naming(&[("SESSION_SAME_SITE", "none")], "SESSION_SAME_SITE");
    let c = ok(&[("SESSION_SAME_SITE", "None"), ("SESSION_SECURE", "true")]);
    assert_eq!(c.session.same_site, SameSite::None);
    assert_eq!(ok(&[("SESSION_SAME_SITE", "STRICT")]).session.same_site, SameSite::Strict);
    assert_one_error_naming(&[("SESSION_SAME_SITE", "relaxed")], "SESSION_SAME_SITE");
}

#[test]
fn the_guides_env_production_file_loads_unchanged_apart_from_its_placeholders() {
    let key = test_key();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(".env.production");
    let env = format!(
        r#"NODE_ENV=production
PORT=3001
API_URL=https://auth.yourdomain.com
DATABASE_URL=postgresql://username:password@db-host:5432/truxe_prod
DATABASE_POOL_MIN=2
DATABASE_POOL_MAX=10
DATABASE_SSL=true
REDIS_URL=redis://:password@redis-host:6379
REDIS_TLS=true
JWT_PRIVATE_KEY="{private}"
JWT_PUBLIC_KEY="{public}"
JWT_ALGORITHM=RS256
JWT_ISSUER=https://auth.yourdomain.com
JWT_AUDIENCE=https://api.yourdomain.com
ACCESS_TOKEN_EXPIRY=15m
ACCESS_TOKEN_MAX_AGE=900
REFRESH_TOKEN_EXPIRY=7d
REFRESH_TOKEN_MAX_AGE=604800
SESSION_SECRET={session}
SESSION_MAX_AGE=86400000
SESSION_SECURE=true
SESSION_SAME_SITE=lax
OAUTH_AUTHORIZATION_CODE_EXPIRY=600
OAUTH_REQUIRE_PKCE=true
OAUTH_ALLOW_REFRESH_TOKEN=true
SMTP_HOST=smtp.brevo.com
SMTP_PORT=587
SMTP_SECURE=true
SMTP_USER=your-smtp-username
SMTP_PASSWORD=your-smtp-password
EMAIL_FROM=noreply@yourdomain.com
EMAIL_FROM_NAME="Your App Name"
BCRYPT_ROUNDS=12
ALLOWED_ORIGINS=https://app.yourdomain.com,https://yourdomain.com
RATE_LIMIT_WINDOW=900000
RATE_LIMIT_MAX=100
LOG_LEVEL=info
SENTRY_DSN=https://your-sentry-dsn
DATADOG_API_KEY=your-datadog-key
MFA_ENABLED=true
MFA_ISSUER="Your App Name"
ADMIN_TOKEN={admin}
"#,
        private = key.private_pem().secret().trim_end().replace('\n', "\\n"),
        public = key.public_pem().trim_end().replace('\n', "\\n"),
        session = STRONG_SESSION,
        admin = STRONG_ADMIN,
    );
    std::fs::write(&path, env).expect("write");
    let vars = source::read_env_file(&path).expect("parses");
    let c = Config::from_lookup(&|k| vars.get(k).cloned()).unwrap_or_else(|e| panic!("{e}"));
    assert!(c.is_production());
    assert_eq!(c.access_token_ttl, Duration::from_secs(900));
    assert_eq!(c.session.max_age, Duration::from_secs(86_400));
    assert_eq!(c.rate_limit.window, Duration::from_secs(900));
    assert!(c.redis.as_ref().is_some_and(|r| r.tls));
    assert_eq!(c.smtp.as_ref().and_then(|s| s.from_name.as_deref()), Some("Your App Name"));
    let pem = c.jwt.private_key_pem.as_ref().expect("key");
    let loaded =
        SigningKey::from_pem(pem.secret(), c.jwt.public_key_pem.as_deref(), c.jwt.algorithm).expect("key loads");
    assert_eq!(loaded.kid(), key.kid());
    for w in &c.warnings {
        assert!(!w.contains("your-smtp-password") && !w.contains(STRONG_SESSION), "{w}");
    }
}

#[test]
fn environment_wins_over_the_env_file_which_wins_over_dot_env() {
    let dir = tempfile::tempdir().expect("tempdir");
    let env_file = dir.path().join("truxe.env");
    std::fs::write(&env_file, "PORT=4001\nBCRYPT_ROUNDS=11\nMFA_ISSUER=\"From File\"\n").expect("write");
    let dot_env = dir.path().join(".env");
    std::fs::write(&dot_env, "PORT=4002\nBCRYPT_ROUNDS=10\nLOG_LEVEL=debug\nMFA_ENABLED=\n").expect("write");
    let environment = HashMap::from([("PORT", "4000"), ("MFA_ENABLED", "true")]);
    let env_lookup = |name: &str| environment.get(name).map(|v| v.to_string());
    let load = |env_file: Option<&Path>, dot_env: &Path| {
        let layers = read_layers(env_file, dot_env)?;
        Config::from_lookup(&|name| layered(&env_lookup, &layers, name))
    };

    let c = load(Some(&env_file), &dot_env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.port, 4000);
    assert_eq!(c.bcrypt_rounds, 11);
    assert_eq!(c.mfa.issuer, "From File");
    assert_eq!(c.log_level, "debug");
    assert!(c.mfa.enabled);
    assert!(
        std::env::var_os("MFA_ISSUER").is_none_or(|v| v != "From File"),
        "files never reach the process environment"
    );

    let c = load(None, &dot_env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((c.port, c.bcrypt_rounds), (4000, 10));
    let c = load(None, &dir.path().join("absent")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((c.port, c.bcrypt_rounds), (4000, 12));

    let err = load(Some(&dir.path().join("missing.env")), &dot_env).expect_err("missing file");
    assert!(err.0[0].starts_with("--env-file: cannot read") && err.0[0].contains("missing.env"), "{err}");
    std::fs::write(&dot_env, "PORT=4002\nBROKEN=\"unterminated\n").expect("write");
    let err = load(None, &dot_env).expect_err("malformed .env");
    assert!(err.0[0].contains("line 2"), "{err}");
}

#[test]
fn truxe_scopes_adds_to_the_standard_scopes() {
    assert_eq!(ok(&[]).scopes_supported(), ["openid", "profile", "email", "offline_access"]);
    let c = ok(&[("TRUXE_SCOPES", " orders:read, orders:write,,openid,orders:read ")]);
    assert_eq!(c.extra_scopes, ["orders:read", "orders:write"]);
    assert_eq!(c.scopes_supported(), ["openid", "profile", "email", "offline_access", "orders:read", "orders:write"]);
    assert_eq!(ok(&[("TRUXE_SCOPES", "https://api.example.com/read")]).extra_scopes, ["https://api.example.com/read"]);

    for bad in ["orders read", "say\"hi\"", "back\\slash", "caf\u{e9}", "tab\there"] {
        let message = assert_one_error_naming(&[("TRUXE_SCOPES", bad)], "TRUXE_SCOPES");
        assert!(message.contains("not a scope"), "{bad:?}: {message}");
    }
}

#[test]
fn sign_in_variables() {
    let c = ok(&[]);
    assert!(!c.sign_in.open_signup);
    assert_eq!(c.sign_in.magic_link_ttl, Duration::from_secs(900));
    let c = ok(&[("TRUXE_OPEN_SIGNUP", "true"), ("TRUXE_MAGIC_LINK_TTL", "10m")]);
    assert!(c.sign_in.open_signup);
    assert_eq!(c.sign_in.magic_link_ttl, Duration::from_secs(600));
    assert_eq!(ok(&[("TRUXE_MAGIC_LINK_TTL", "300")]).sign_in.magic_link_ttl, Duration::from_secs(300));
    for bad in ["0", "2d", "soon"] {
        assert_one_error_naming(&[("TRUXE_MAGIC_LINK_TTL", bad)], "TRUXE_MAGIC_LINK_TTL");
    }
    assert_one_error_naming(&[("TRUXE_OPEN_SIGNUP", "perhaps")], "TRUXE_OPEN_SIGNUP");
}

#[test]
fn oauth_variables() {
    let c = ok(&[]);
    assert_eq!(c.oauth.refresh_reuse_grace, Duration::ZERO);
    assert_eq!(c.oauth.authorization_code_ttl, Duration::from_secs(600));
    assert!(c.oauth.require_pkce && c.oauth.allow_refresh_token);
    assert_eq!(ok(&[("TRUXE_REFRESH_REUSE_GRACE", "0")]).oauth.refresh_reuse_grace, Duration::ZERO);
    assert_eq!(ok(&[("TRUXE_REFRESH_REUSE_GRACE", "1m")]).oauth.refresh_reuse_grace, Duration::from_secs(60));
    for bad in ["6m", "soon", "-1"] {
        assert_one_error_naming(&[("TRUXE_REFRESH_REUSE_GRACE", bad)], "TRUXE_REFRESH_REUSE_GRACE");
    }
    // Acted on since the authorization code flow landed (issue 4).
    for name in
        ["OAUTH_AUTHORIZATION_CODE_EXPIRY", "OAUTH_REQUIRE_PKCE", "OAUTH_ALLOW_REFRESH_TOKEN", "REFRESH_TOKEN_EXPIRY"]
    {
        assert!(!NOT_ACTED_ON.contains(&name), "{name}");
    }
}

#[test]
fn the_magic_link_limit_is_configurable_and_off_with_rate_limiting() {
    let c = ok(&[]);
    assert_eq!(c.rate_limit.magic_link, MagicLinkLimit { max: 5, window: Duration::from_secs(900) });
    assert_eq!(c.rate_limit.magic_link_limit(), Some(c.rate_limit.magic_link));

    let c = ok(&[("TRUXE_MAGIC_LINK_LIMIT", "3"), ("TRUXE_MAGIC_LINK_WINDOW", "1h")]);
    assert_eq!(c.rate_limit.magic_link_limit(), Some(MagicLinkLimit { max: 3, window: Duration::from_secs(3600) }));
    let c = ok(&[("TRUXE_MAGIC_LINK_WINDOW", "600")]);
    assert_eq!(c.rate_limit.magic_link.window, Duration::from_secs(600), "a bare number is seconds");
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    for bad in ["0", "1001", "five", "-1"] {
        assert_one_error_naming(&[("TRUXE_MAGIC_LINK_LIMIT", bad)], "TRUXE_MAGIC_LINK_LIMIT");
    }
    for bad in ["0", "25h", "15x", "500ms"] {
        assert_one_error_naming(&[("TRUXE_MAGIC_LINK_WINDOW", bad)], "TRUXE_MAGIC_LINK_WINDOW");
    }

    // RATE_LIMIT_ENABLED=false turns it off, is acted on (no "not acted on" warning), and says
    // that limits set next to it are ignored.
    let c = ok(&[("RATE_LIMIT_ENABLED", "false"), ("TRUXE_MAGIC_LINK_LIMIT", "3")]);
    assert_eq!(c.rate_limit.magic_link_limit(), None);
    assert_eq!(
        c.warnings,
        ["TRUXE_MAGIC_LINK_LIMIT is set but RATE_LIMIT_ENABLED=false turns the magic-link limit off"]
    );
    assert!(!NOT_ACTED_ON.contains(&"RATE_LIMIT_ENABLED"));
    let c = ok(&[("RATE_LIMIT_ENABLED", "false"), ("RATE_LIMIT_MAX", "10")]);
    assert_eq!(c.warnings, ["RATE_LIMIT_MAX is set but RATE_LIMIT_ENABLED=false turns request rate limits off"]);
    for name in ["RATE_LIMIT_WINDOW", "RATE_LIMIT_MAX", "OAUTH_RATE_LIMIT_WINDOW", "OAUTH_RATE_LIMIT_MAX"] {
        assert!(!NOT_ACTED_ON.contains(&name), "{name}");
    }
}

#[test]
fn trusted_proxies_are_cidrs_or_addresses() {
    assert!(ok(&[]).trust_proxy.is_empty());
    let c = ok(&[("TRUST_PROXY", " 10.0.0.0/8, 127.0.0.1 ,::1, fd00::/8, 192.168.1.7/24")]);
    let nets: Vec<String> = c.trust_proxy.iter().map(|n| n.to_string()).collect();
    assert_eq!(nets, ["10.0.0.0/8", "127.0.0.1/32", "::1/128", "fd00::/8", "192.168.1.0/24"]);
    let list = errors(&[("TRUST_PROXY", "10.0.0.0/8,10.0.0.300,nginx,10.0.0.0/33")]);
    assert_eq!(list.len(), 3, "{list:#?}");
    assert!(list.iter().all(|m| m.starts_with("TRUST_PROXY: ")), "{list:#?}");
    assert!(list[0].contains("\"10.0.0.300\""), "{list:#?}");
    assert!(list[1].contains("\"nginx\""), "{list:#?}");
    assert!(list[2].contains("\"10.0.0.0/33\""), "{list:#?}");
}

#[test]
fn an_https_issuer_in_development_mode_is_warned_about() {
    for name in ["JWT_ISSUER", "API_URL"] {
        let c = ok(&[(name, "https://auth.example.com")]);
        assert!(!c.is_production());
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        let warning = &c.warnings[0];
        assert!(
            warning.starts_with(&format!(
                "NOT RUNNING IN PRODUCTION MODE although {name} is \"https://auth.example.com\""
            )),
            "{warning}"
        );
        assert!(warning.contains("TRUXE_ENV=production"), "{warning}");
    }
    for quiet in [vec![], vec![("JWT_ISSUER", "http://localhost:3001")]] {
        assert!(ok(&quiet).warnings.is_empty(), "{quiet:?}");
    }
    let key = test_key().private_pem().secret().clone();
    let vars = production_vars(&key);
    assert!(ok(&as_refs(&vars)).warnings.iter().all(|w| !w.contains("NOT RUNNING IN PRODUCTION MODE")));
}

#[test]
fn audiences_that_are_not_uris_are_warned_about() {
    let c = ok(&[("JWT_AUDIENCE", "https://api.example.com, orders-api")]);
    assert!(c.warnings.iter().any(|w| w.contains("orders-api") && w.contains("RFC 8707")), "{:?}", c.warnings);
    let c = ok(&[("JWT_AUDIENCE", "https://api.example.com")]);
    assert!(!c.warnings.iter().any(|w| w.contains("JWT_AUDIENCE")), "{:?}", c.warnings);
}

#[test]
fn bcrypt_rounds_says_it_has_no_meaning() {
    let c = ok(&[("BCRYPT_ROUNDS", "12")]);
    assert!(!NOT_ACTED_ON.contains(&"BCRYPT_ROUNDS"));
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    assert!(c.warnings[0].starts_with("BCRYPT_ROUNDS has no meaning for Truxe: it stores no passwords"));
    assert!(!c.warnings[0].contains("not acted on"));
}

/// A CA file as the TLS variables take it (one self-signed certificate).
fn ca_pem_file(dir: &tempfile::TempDir) -> String {
    use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
    let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("key");
    let mut name = x509::X509NameBuilder::new().expect("name");
    name.append_entry_by_text("CN", "test CA").expect("cn");
    let name = name.build();
    let mut cert = x509::X509Builder::new().expect("builder");
    cert.set_subject_name(&name).expect("subject");
    cert.set_issuer_name(&name).expect("issuer");
    cert.set_pubkey(&key).expect("pubkey");
    cert.set_not_before(&Asn1Time::days_from_now(0).expect("time")).expect("nb");
    cert.set_not_after(&Asn1Time::days_from_now(1).expect("time")).expect("na");
    cert.sign(&key, MessageDigest::sha256()).expect("sign");
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, cert.build().to_pem().expect("pem")).expect("write");
    path.display().to_string()
}

#[test]
fn tls_ca_files_are_read_and_checked_at_load() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = ca_pem_file(&dir);
    let c = ok(&[
        ("DATABASE_URL", "postgres://db/truxe"),
        ("DATABASE_SSL", "true"),
        ("DATABASE_SSL_CA", &ca),
        ("REDIS_URL", "rediss://redis:6380"),
        ("REDIS_TLS_CA", &ca),
        ("SMTP_HOST", "smtp.example.com"),
        ("EMAIL_FROM", "noreply@example.com"),
        ("SMTP_TLS_CA", &ca),
        ("SMTP_TLS_IMPLICIT", "true"),
    ]);
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.database.ssl_ca.as_ref().map(|f| f.path.display().to_string()), Some(ca.clone()));
    let redis = c.redis.expect("redis");
    assert!(redis.tls && redis.tls_reject_unauthorized && redis.tls_ca.is_some());
    let smtp = c.smtp.expect("smtp");
    assert!(smtp.implicit_tls && smtp.tls_reject_unauthorized && smtp.tls_ca.is_some());

    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").expect("write");
    let not_pem = not_pem.display().to_string();
    for name in ["DATABASE_SSL_CA", "REDIS_TLS_CA", "SMTP_TLS_CA"] {
        let base = [
            ("DATABASE_URL", "postgres://db/truxe"),
            ("DATABASE_SSL", "true"),
            ("REDIS_URL", "rediss://redis:6380"),
            ("SMTP_HOST", "smtp.example.com"),
            ("EMAIL_FROM", "noreply@example.com"),
        ];
        for (value, why) in [(not_pem.as_str(), "no PEM certificate"), ("/nonexistent/ca.pem", "cannot read")] {
            let mut vars = base.to_vec();
            vars.push((name, value));
            let message = assert_one_error_naming(&vars, name);
            assert!(message.contains(why) && message.contains(value), "{message}");
        }
    }
}

#[test]
fn tls_settings_that_change_nothing_are_warned_about() {
    let dir = tempfile::tempdir().expect("tmp");
    let ca = ca_pem_file(&dir);
    let warned = |vars: &[(&str, &str)], needle: &str| {
        let c = ok(vars);
        assert!(c.warnings.iter().any(|w| w.contains(needle)), "{needle}: {:?}", c.warnings);
    };
    warned(&[("DATABASE_URL", "postgres://db/truxe"), ("DATABASE_SSL_CA", &ca)], "DATABASE_SSL is not true");
    warned(
        &[
            ("DATABASE_URL", "postgres://db/truxe"),
            ("DATABASE_SSL", "true"),
            ("DATABASE_SSL_REJECT_UNAUTHORIZED", "false"),
            ("DATABASE_SSL_CA", &ca),
        ],
        "DATABASE_SSL_CA is ignored",
    );
    warned(&[("REDIS_URL", "redis://redis:6379"), ("REDIS_TLS_CA", &ca)], "not reached over TLS");
    warned(&[("REDIS_TLS_CA", &ca)], "REDIS_URL is not");
    warned(
        &[("REDIS_URL", "rediss://redis"), ("REDIS_TLS_REJECT_UNAUTHORIZED", "false"), ("REDIS_TLS_CA", &ca)],
        "REDIS_TLS_CA is ignored",
    );
}

#[test]
fn key_rotation_defaults_off_with_an_hour_of_publication() {
    let c = ok(&[]);
    assert_eq!(c.jwt.rotation, None);
    assert_eq!(c.jwt.publish_delay, Duration::from_secs(3_600));
    assert_eq!(c.jwt.jwks_max_age, Duration::from_secs(300));
    assert_eq!(c.jwt.key_refresh_interval(), Duration::from_secs(5));
    for off in ["off", "OFF", "false", "0"] {
        assert_eq!(ok(&[("JWT_KEY_ROTATION", off)]).jwt.rotation, None, "{off}");
    }
    let c = ok(&[("JWT_KEY_ROTATION", "90d"), ("JWT_KEY_PUBLISH_DELAY", "2h"), ("JWT_JWKS_MAX_AGE", "10m")]);
    assert_eq!(c.jwt.rotation, Some(Duration::from_secs(90 * 86_400)));
    assert_eq!((c.jwt.publish_delay, c.jwt.jwks_max_age), (Duration::from_secs(7_200), Duration::from_secs(600)));
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    // Tests rotate in seconds: the refresh interval follows a short delay down.
    let c = ok(&[("JWT_KEY_ROTATION", "4s"), ("JWT_KEY_PUBLISH_DELAY", "2s"), ("JWT_JWKS_MAX_AGE", "1")]);
    assert_eq!(c.jwt.key_refresh_interval(), Duration::from_millis(500));
    assert_eq!(
        ok(&[("JWT_KEY_PUBLISH_DELAY", "1500ms"), ("JWT_JWKS_MAX_AGE", "0")]).jwt.publish_delay,
        Duration::from_secs(2)
    );
}

#[test]
fn bad_key_rotation_values_are_configuration_errors() {
    let message = assert_one_error_naming(&[("JWT_KEY_ROTATION", "abc")], "JWT_KEY_ROTATION");
    assert!(message.contains("\"abc\"") && message.contains("90d") && message.contains("off"), "{message}");
    assert_one_error_naming(&[("JWT_KEY_ROTATION", "-5d")], "JWT_KEY_ROTATION");
    // The delay must outlast a cached JWKS (5 min by default) plus the refresh interval.
    let message = assert_one_error_naming(&[("JWT_KEY_PUBLISH_DELAY", "5m")], "JWT_KEY_PUBLISH_DELAY");
    assert!(message.contains("JWT_JWKS_MAX_AGE, 5m") && message.contains("longer than"), "{message}");
    assert_one_error_naming(&[("JWT_KEY_PUBLISH_DELAY", "60"), ("JWT_JWKS_MAX_AGE", "60")], "JWT_KEY_PUBLISH_DELAY");
    assert_one_error_naming(&[("JWT_KEY_PUBLISH_DELAY", "2s"), ("JWT_JWKS_MAX_AGE", "2")], "JWT_KEY_PUBLISH_DELAY");
    assert_one_error_naming(&[("JWT_KEY_PUBLISH_DELAY", "302s")], "JWT_KEY_PUBLISH_DELAY");
    ok(&[("JWT_KEY_PUBLISH_DELAY", "306s")]);
    assert_one_error_naming(&[("JWT_KEY_PUBLISH_DELAY", "0"), ("JWT_JWKS_MAX_AGE", "0")], "JWT_KEY_PUBLISH_DELAY");
    assert_one_error_naming(&[("JWT_KEY_PUBLISH_DELAY", "31d")], "JWT_KEY_PUBLISH_DELAY");
    assert_one_error_naming(&[("JWT_JWKS_MAX_AGE", "2d")], "JWT_JWKS_MAX_AGE");
    assert_one_error_naming(&[("JWT_JWKS_MAX_AGE", "soon")], "JWT_JWKS_MAX_AGE");
    // A period no longer than the delay would publish a next key before the last one signs.
    let message = assert_one_error_naming(&[("JWT_KEY_ROTATION", "1h")], "JWT_KEY_ROTATION");
    assert!(message.contains("JWT_KEY_PUBLISH_DELAY (1h)"), "{message}");
}

#[test]
fn key_rotation_replaces_jwt_private_key_in_production_but_never_overrides_it() {
    let key = test_key().private_pem().secret().clone();
    let mut vars = production_vars(&key);
    vars.retain(|(name, _)| *name != "JWT_PRIVATE_KEY");
    let message = assert_one_error_naming(&as_refs(&vars), "JWT_PRIVATE_KEY");
    assert!(message.contains("JWT_KEY_ROTATION"), "names the alternative: {message}");
    vars.push(("JWT_KEY_ROTATION", "90d".into()));
    let c = ok(&as_refs(&vars));
    assert_eq!(c.jwt.rotation, Some(Duration::from_secs(90 * 86_400)));
    // With JWT_PRIVATE_KEY too, the schedule does not apply, and the start-up says so.
    let mut vars = production_vars(&key);
    vars.push(("JWT_KEY_ROTATION", "90d".into()));
    let c = ok(&as_refs(&vars));
    let warning = c.warnings.iter().find(|w| w.starts_with("JWT_KEY_ROTATION")).expect("a warning");
    assert!(warning.contains("JWT_PRIVATE_KEY") && warning.contains("automatic rotation is off"), "{warning}");
    // A bad value in production is an error, not a silent fallback to "required key".
    let mut vars = production_vars(&key);
    vars.retain(|(name, _)| *name != "JWT_PRIVATE_KEY");
    vars.push(("JWT_KEY_ROTATION", "abc".into()));
    assert_one_error_naming(&as_refs(&vars), "JWT_KEY_ROTATION");
}

#[test]
fn audit_retention_keeps_everything_unless_set() {
    assert_eq!(ok(&[]).audit_retention, None);
    for forever in ["0", "forever", "Forever"] {
        assert_eq!(ok(&[("TRUXE_AUDIT_RETENTION", forever)]).audit_retention, None, "{forever}");
    }
    assert_eq!(ok(&[("TRUXE_AUDIT_RETENTION", "90d")]).audit_retention, Some(Duration::from_secs(90 * 86_400)));
    assert_eq!(ok(&[("TRUXE_AUDIT_RETENTION", "86400")]).audit_retention, Some(Duration::from_secs(86_400)));
    for bad in ["12h", "90x", "-1d", "soon"] {
        let error = assert_one_error_naming(&[("TRUXE_AUDIT_RETENTION", bad)], "TRUXE_AUDIT_RETENTION");
        assert!(error.contains(bad), "{error}");
    }
}
