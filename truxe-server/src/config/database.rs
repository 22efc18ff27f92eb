//! `DATABASE_URL` and `REDIS_URL`: which forms are accepted, and how they are shown in logs.

use std::path::Path;
use std::path::PathBuf;

use crate::secret::Secret;

/// Where the data lives. The PostgreSQL URL usually carries a password, so it stays a `Secret`;
/// use [`DatabaseUrl::redacted`] for anything a person will read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    Postgres(Secret<String>),
    Sqlite(PathBuf),
}

const ACCEPTED_FORMS: &str = "expected postgres://USER:PASSWORD@HOST:PORT/DATABASE, postgresql://..., sqlite:///absolute/path.db or sqlite://relative/path.db";

impl DatabaseUrl {
    /// Accepts `postgres://` / `postgresql://` (with a host and a database name) and
    /// `sqlite://PATH`. Messages never repeat the URL, since it may hold a password.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let scheme_end = s.find("://");
        let scheme = scheme_end.map(|i| s[..i].to_ascii_lowercase());
        match scheme.as_deref() {
            Some("postgres" | "postgresql") => parse_postgres(s),
            Some("sqlite") => parse_sqlite(&s["sqlite://".len()..]),
            Some(other)
                if !other.is_empty() && other.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
            {
                Err(format!("the scheme {other:?} is not supported ({ACCEPTED_FORMS})"))
            }
            _ => Err(format!("not a database URL ({ACCEPTED_FORMS})")),
        }
    }

    /// The URL with its password replaced by `***`, for logs and messages.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) => redact_url(url.secret()),
        }
    }

    /// The libpq connection URL. `DATABASE_SSL` adds an `sslmode` unless the URL already names
    /// one: `verify-full` when certificates are checked (`DATABASE_SSL_REJECT_UNAUTHORIZED`,
    /// the default), `require` otherwise. Verifying, it names the root certificates unless the
    /// URL does: `ca` (`DATABASE_SSL_CA`), else the system trust store. `None` for SQLite.
    pub fn postgres_connection_string(
        &self,
        ssl: bool,
        reject_unauthorized: bool,
        ca: Option<&Path>,
    ) -> Option<String> {
        let DatabaseUrl::Postgres(url) = self else {
            return None;
        };
        let url = url.secret();
        let has_sslmode = url::Url::parse(url).map(|u| u.query_pairs().any(|(k, _)| k == "sslmode")).unwrap_or(false);
        if !ssl || has_sslmode {
            return Some(url.clone());
        }
        let mode = if reject_unauthorized { "verify-full" } else { "require" };
        let separator = match url.find('?') {
            None => "?",
            Some(i) if i + 1 == url.len() || url.ends_with('&') => "",
            Some(_) => "&",
        };
        let mut out = format!("{url}{separator}sslmode={mode}");
        // Node's driver verified against the system CA bundle; libpq before 16 only reads
        // ~/.postgresql/root.crt, so name the bundle (or the operator's CA) unless the URL names
        // a root. Not with `require`: libpq would then verify the chain after all.
        let has_root = url.contains("sslrootcert=");
        let root = ca.map(Path::to_path_buf).or_else(super::system_ca_file);
        if let (true, false, Some(root)) = (reject_unauthorized, has_root, root) {
            out.push_str(&format!("&sslrootcert={}", percent_encode(&root.to_string_lossy())));
        }
        Some(out)
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self, DatabaseUrl::Postgres(_))
    }
}

fn parse_postgres(s: &str) -> Result<DatabaseUrl, String> {
    // url's own messages ("invalid port number", "empty host") never quote the input.
    let url = url::Url::parse(s).map_err(|e| format!("not a valid PostgreSQL URL: {e} ({ACCEPTED_FORMS})"))?;
    let query_host = url.query_pairs().any(|(k, v)| k == "host" && !v.is_empty());
    if url.host_str().is_none_or(str::is_empty) && !query_host {
        return Err(format!("the PostgreSQL URL has no host ({ACCEPTED_FORMS})"));
    }
    let database = url.path().trim_start_matches('/');
    let query_db = url.query_pairs().any(|(k, v)| k == "dbname" && !v.is_empty());
    if database.is_empty() && !query_db {
        return Err(format!("the PostgreSQL URL names no database; add /DATABASE after the host ({ACCEPTED_FORMS})"));
    }
    if url.fragment().is_some() {
        return Err("the PostgreSQL URL has a '#' fragment; percent-encode '#' in passwords as %23".to_string());
    }
    Ok(DatabaseUrl::Postgres(Secret::new(s.to_string())))
}

fn parse_sqlite(path: &str) -> Result<DatabaseUrl, String> {
    if path.is_empty() {
        return Err(format!("the SQLite URL has an empty path ({ACCEPTED_FORMS})"));
    }
    if path == ":memory:" || path.contains("mode=memory") {
        return Err(
            "in-memory SQLite is not supported: every pooled connection would see its own empty database; use a file path"
                .to_string(),
        );
    }
    if path.contains('?') {
        return Err(format!("SQLite URLs take no ?options here ({ACCEPTED_FORMS})"));
    }
    Ok(DatabaseUrl::Sqlite(PathBuf::from(path)))
}

/// Percent-encodes all but unreserved characters and `/` (libpq decodes `%XX` in URI values, and
/// only that: a `+` stays a `+`).
fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Replaces the password of any URL with `***`; unparsable input is hidden entirely.
pub(crate) fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut url) => {
            if url.password().is_some() && url.set_password(Some("***")).is_err() {
                return format!("{}://***", url.scheme());
            }
            url.to_string()
        }
        Err(_) => "***".to_string(),
    }
}

/// `REDIS_URL` as given, with `REDIS_TLS=true` turning `redis://` into `rediss://`.
pub(crate) fn parse_redis(raw: &str, tls: bool) -> Result<(Secret<String>, bool), String> {
    let raw = raw.trim();
    let scheme_len = raw.find("://").unwrap_or(0);
    let scheme = raw[..scheme_len].to_ascii_lowercase();
    let rest = &raw[scheme_len..];
    let (url, tls) = match scheme.as_str() {
        "redis" if tls => (format!("rediss{rest}"), true),
        "redis" => (raw.to_string(), false),
        "rediss" => (raw.to_string(), true),
        _ => return Err("not a Redis URL (expected redis://[:PASSWORD@]HOST[:PORT][/DB] or rediss://...)".to_string()),
    };
    let parsed = url::Url::parse(&url).map_err(|e| format!("not a valid Redis URL: {e}"))?;
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err("the Redis URL has no host".to_string());
    }
    Ok((Secret::new(url), tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_forms() {
        for ok in [
            "postgres://truxe:pw@db:5432/truxe",
            "postgresql://username:password@db-host:5432/truxe_prod",
            "postgres://db/truxe",
            "POSTGRES://db/truxe",
            "postgres:///truxe?host=/var/run/postgresql",
            "postgres://db/truxe?sslmode=require",
        ] {
            assert!(matches!(DatabaseUrl::parse(ok), Ok(DatabaseUrl::Postgres(_))), "{ok}");
        }
    }

    #[test]
    fn malformed_urls_are_refused_without_echoing_passwords() {
        for bad in [
            "",
            "truxe.db",
            "mysql://u:hunter2@db/truxe",
            "postgres://u:hunter2@db",
            "postgres://u:hunter2@db/",
            "postgres://u:hunter2@:5432/truxe",
            "postgres://u:hunter2@db:99999/truxe",
            "postgres:///truxe",
            "sqlite://",
            "sqlite://:memory:",
            "sqlite:truxe.db",
            "sqlite://truxe.db?mode=rwc",
            "hunter2",
        ] {
            let err = DatabaseUrl::parse(bad).expect_err(bad);
            assert!(!err.contains("hunter2"), "{bad}: {err}");
            assert!(!err.is_empty());
        }
        let err = DatabaseUrl::parse("mysql://u:p@db/x").expect_err("mysql");
        assert!(err.contains("postgres://") && err.contains("sqlite://"), "{err}");
    }

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/truxe/truxe.db"),
            Ok(DatabaseUrl::Sqlite("/var/lib/truxe/truxe.db".into()))
        );
        assert_eq!(DatabaseUrl::parse("sqlite://data/truxe.db"), Ok(DatabaseUrl::Sqlite("data/truxe.db".into())));
    }

    #[test]
    fn redaction() {
        let url = DatabaseUrl::parse("postgres://truxe:hunter2@db:5432/truxe").expect("valid");
        assert_eq!(url.redacted(), "postgres://truxe:***@db:5432/truxe");
        assert!(!format!("{url:?}").contains("hunter2"));
        let url = DatabaseUrl::parse("postgres://db/truxe").expect("valid");
        assert_eq!(url.redacted(), "postgres://db/truxe");
        assert_eq!(DatabaseUrl::Sqlite("a/b.db".into()).redacted(), "sqlite://a/b.db");
    }

    #[test]
    fn sslmode_is_added_only_when_asked_and_missing() {
        let url = DatabaseUrl::parse("postgres://u:p@db/truxe").expect("valid");
        assert_eq!(url.postgres_connection_string(false, true, None).as_deref(), Some("postgres://u:p@db/truxe"));
        let verify = url.postgres_connection_string(true, true, None).unwrap_or_default();
        assert!(verify.starts_with("postgres://u:p@db/truxe?sslmode=verify-full"), "{verify}");
        if let Some(system) = super::super::system_ca_file() {
            assert!(verify.ends_with(&format!("&sslrootcert={}", system.display())), "{verify}");
        }
        let with_ca = url.postgres_connection_string(true, true, Some(Path::new("/etc/truxe/db ca.pem")));
        assert_eq!(
            with_ca.as_deref(),
            Some("postgres://u:p@db/truxe?sslmode=verify-full&sslrootcert=/etc/truxe/db%20ca.pem")
        );
        let own_root = DatabaseUrl::parse("postgres://db/truxe?sslrootcert=/etc/truxe/ca.pem").expect("valid");
        assert_eq!(
            own_root.postgres_connection_string(true, true, Some(Path::new("/other.pem"))).as_deref(),
            Some("postgres://db/truxe?sslrootcert=/etc/truxe/ca.pem&sslmode=verify-full")
        );
        assert_eq!(
            url.postgres_connection_string(true, false, Some(Path::new("/ca.pem"))).as_deref(),
            Some("postgres://u:p@db/truxe?sslmode=require")
        );
        let url = DatabaseUrl::parse("postgres://db/truxe?connect_timeout=5").expect("valid");
        assert_eq!(
            url.postgres_connection_string(true, false, None).as_deref(),
            Some("postgres://db/truxe?connect_timeout=5&sslmode=require")
        );
        let url = DatabaseUrl::parse("postgres://db/truxe?sslmode=disable").expect("valid");
        assert_eq!(
            url.postgres_connection_string(true, true, None).as_deref(),
            Some("postgres://db/truxe?sslmode=disable")
        );
        assert_eq!(DatabaseUrl::Sqlite("x.db".into()).postgres_connection_string(true, true, None), None);
    }

    #[test]
    fn redis_urls() {
        let (url, tls) = parse_redis("redis://:pw@redis-host:6379", true).expect("valid");
        assert_eq!((url.secret().as_str(), tls), ("rediss://:pw@redis-host:6379", true));
        let (url, tls) = parse_redis("redis://127.0.0.1:6379/0", false).expect("valid");
        assert_eq!((url.secret().as_str(), tls), ("redis://127.0.0.1:6379/0", false));
        let (_, tls) = parse_redis("rediss://h", false).expect("valid");
        assert!(tls);
        for bad in ["http://h", "h:6379", "redis://", "redis://:hunter2@"] {
            let err = parse_redis(bad, false).expect_err(bad);
            assert!(!err.contains("hunter2"), "{err}");
        }
    }
}
