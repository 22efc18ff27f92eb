//! `truxectl doctor [--url URL]`: the deployment guide's pre-launch checklist as one command.
//!
//! Every check runs, whatever failed before it, and prints one line (`ok`, `warn` or `FAIL`);
//! the exit status is 1 when any check failed. The configuration is read the way the server
//! reads it, and judged as production reads it (whatever `TRUXE_ENV` says): a development
//! configuration is exactly what this command should find wanting. Nothing is changed: no key,
//! token or data directory is created, no migration is applied.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use truxe_server::config::{self, Config, DatabaseUrl};
use truxe_server::keys::{Algorithm, SigningKey};
use truxe_server::store::{self, AnyConnection};

use crate::Global;

#[derive(clap::Args, Debug, Clone)]
pub struct DoctorOpts {
    /// The running server's public URL: its discovery must name the configured issuer
    #[arg(long, value_name = "URL", env = "TRUXE_URL")]
    pub url: Option<String>,
    /// Where the backups are (default: /var/backups/truxe when it exists, else ./backups)
    #[arg(long, value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Serialize, Debug)]
pub struct Check {
    pub check: String,
    pub status: Status,
    pub detail: String,
}

/// The findings of one run, in the order they were made.
#[derive(Default)]
struct Report(Vec<Check>);

impl Report {
    fn add(&mut self, check: &str, status: Status, detail: impl Into<String>) {
        self.0.push(Check { check: check.to_string(), status, detail: detail.into() });
    }
    fn ok(&mut self, check: &str, detail: impl Into<String>) {
        self.add(check, Status::Ok, detail);
    }
    fn warn(&mut self, check: &str, detail: impl Into<String>) {
        self.add(check, Status::Warn, detail);
    }
    fn fail(&mut self, check: &str, detail: impl Into<String>) {
        self.add(check, Status::Fail, detail);
    }
    fn failed(&self) -> bool {
        self.0.iter().any(|c| c.status == Status::Fail)
    }
}

pub fn run(opts: DoctorOpts, global: &Global) -> ExitCode {
    let report = examine(&opts, global);
    if global.json {
        let json = serde_json::json!({ "ok": !report.failed(), "checks": report.0 });
        println!("{}", serde_json::to_string_pretty(&json).unwrap_or_default());
    } else {
        for check in &report.0 {
            println!("{:<5} {}: {}", check.status.label(), check.check, check.detail);
        }
        let (fails, warns) = count(&report);
        println!("\n{fails} failed, {warns} warning(s), {} check(s)", report.0.len());
    }
    if report.failed() { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

fn count(report: &Report) -> (usize, usize) {
    let of = |s| report.0.iter().filter(|c| c.status == s).count();
    (of(Status::Fail), of(Status::Warn))
}

fn examine(opts: &DoctorOpts, global: &Global) -> Report {
    let mut report = Report::default();
    let lookup = match config::layered_lookup(global.env_file.as_deref()) {
        Ok(lookup) => lookup,
        Err(errors) => {
            report.fail("configuration", errors.to_string());
            return report;
        }
    };
    let lookup = |name: &str| match (name, &global.database_url) {
        ("DATABASE_URL", Some(url)) => Some(url.clone()),
        _ => lookup(name),
    };
    let mode = lookup("TRUXE_ENV").or_else(|| lookup("NODE_ENV")).unwrap_or_default();
    if mode.eq_ignore_ascii_case("production") {
        report.ok("production mode", "TRUXE_ENV/NODE_ENV is production");
    } else {
        report.fail(
            "production mode",
            "neither TRUXE_ENV nor NODE_ENV is \"production\": the server takes development shortcuts",
        );
    }

    // Judged as production judges it; the checks that need a configuration use the one the
    // server would really run with when production refuses it.
    let production = Config::from_lookup(&|name: &str| match name {
        "TRUXE_ENV" => Some("production".to_string()),
        "NODE_ENV" => None,
        _ => lookup(name),
    });
    let config = match production {
        Ok(config) => {
            report.ok("configuration", "valid for production");
            Some(config)
        }
        Err(errors) => {
            for problem in &errors.0 {
                let (name, message) = problem.split_once(": ").unwrap_or(("configuration", problem.as_str()));
                report.fail(&format!("configuration {name}"), message);
            }
            Config::from_lookup(&lookup).ok()
        }
    };
    let Some(config) = config else {
        report.fail("checks skipped", "no usable configuration: the checks below need one");
        return report;
    };

    check_secrets(&mut report, &config);
    let env_kid = check_signing_key(&mut report, &config);
    check_origins_and_limits(&mut report, &config);
    check_files(&mut report, &config, global, &lookup);
    check_backups(&mut report, opts.backup_dir.clone().unwrap_or_else(crate::backup::catalog::default_dir));

    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            report.fail("runtime", format!("cannot start the async runtime: {error}"));
            return report;
        }
    };
    let others = check_database(&mut report, &config, env_kid.as_deref());
    runtime.block_on(async {
        check_redis(&mut report, &config, others).await;
        check_smtp(&mut report, &config).await;
        check_issuer(&mut report, &config, opts.url.as_deref()).await;
    });
    report
}

fn check_secrets(report: &mut Report, config: &Config) {
    for (name, value) in [("SESSION_SECRET", &config.session.secret), ("ADMIN_TOKEN", &config.admin_token)] {
        match value {
            Some(secret) => match config::secret_problem(secret.secret()) {
                None => report.ok(name, format!("{} characters", secret.secret().chars().count())),
                Some(problem) => report.fail(name, problem),
            },
            None => report.fail(name, "not set (production requires it)"),
        }
    }
}

/// The configured key's strength; returns the kid of `JWT_PRIVATE_KEY` for the key schedule.
fn check_signing_key(report: &mut Report, config: &Config) -> Option<String> {
    let Some(pem) = &config.jwt.private_key_pem else {
        match config.jwt.rotation {
            Some(period) => report.ok(
                "signing key",
                format!("generated into the database, rotated every {}", config::format_duration(period)),
            ),
            None => report.fail("signing key", "neither JWT_PRIVATE_KEY nor JWT_KEY_ROTATION is set"),
        }
        return None;
    };
    match SigningKey::from_pem(pem.secret(), config.jwt.public_key_pem.as_deref(), config.jwt.algorithm) {
        Ok(key) => {
            let strength = match key.algorithm() {
                Algorithm::RS256 if key.bits() < 2048 => Err(format!("RSA {} bits; at least 2048", key.bits())),
                Algorithm::RS256 => Ok(format!("RS256, RSA {} bits", key.bits())),
                other => Ok(other.as_str().to_string()),
            };
            match strength {
                Ok(what) => report.ok("signing key", format!("JWT_PRIVATE_KEY: {what}, kid {}", key.kid())),
                Err(problem) => report.fail("signing key", problem),
            }
            Some(key.kid().to_string())
        }
        Err(error) => {
            report.fail("signing key", error.to_string());
            None
        }
    }
}

/// The key schedule as the servers see it in the database: which key signs and since when,
/// whether it is the operator's, what the JWKS publishes (overlap during a rotation).
fn check_key_schedule(report: &mut Report, config: &Config, conn: &mut AnyConnection, env_kid: Option<&str>) {
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())).unwrap_or(0);
    match store::signing_keys::summary(conn, env_kid, now) {
        Ok(summary) => {
            for (level, note) in summary.notes(config.jwt.rotation) {
                let status = match level {
                    store::signing_keys::NoteLevel::Ok => Status::Ok,
                    store::signing_keys::NoteLevel::Warn => Status::Warn,
                    store::signing_keys::NoteLevel::Fail => Status::Fail,
                };
                report.add("key schedule", status, note);
            }
        }
        Err(error) => report.fail("key schedule", format!("cannot read the signing keys: {error}")),
    }
}

fn check_origins_and_limits(report: &mut Report, config: &Config) {
    if config.allowed_origins.iter().any(|o| o == "*") {
        report.fail("ALLOWED_ORIGINS", "holds \"*\"; list each origin");
    } else if config.allowed_origins.is_empty() {
        report.ok("ALLOWED_ORIGINS", "none: no browser application may call the token endpoint directly");
    } else {
        let plain: Vec<&str> = config
            .allowed_origins
            .iter()
            .map(String::as_str)
            .filter(|o| o.starts_with("http://") && !is_loopback_origin(o))
            .collect();
        if plain.is_empty() {
            report.ok("ALLOWED_ORIGINS", config.allowed_origins.join(", "));
        } else {
            report.warn("ALLOWED_ORIGINS", format!("not https: {}", plain.join(", ")));
        }
    }
    if config.rate_limit.enabled {
        report.ok("rate limits", "on");
    } else {
        report.fail("rate limits", "RATE_LIMIT_ENABLED=false: nothing stops a flood (development and load tests only)");
    }
    if config.issuer.starts_with("https://") {
        report.ok("issuer", config.issuer.clone());
    } else {
        report.fail("issuer", format!("{:?} is not https", config.issuer));
    }
}

fn is_loopback_origin(origin: &str) -> bool {
    url::Url::parse(origin).is_ok_and(|u| match u.host() {
        Some(url::Host::Domain(d)) => d == "localhost",
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    })
}

/// Files that hold secrets: the env files read, every `NAME_FILE` set, the data directory's
/// generated key. Readable or writable by others is a failure; by the group a warning unless
/// the group is the one the package makes for the server (`root:truxe`, 0640).
fn check_files(report: &mut Report, config: &Config, global: &Global, lookup: &dyn Fn(&str) -> Option<String>) {
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    if let Some(path) = &global.env_file {
        files.push(("--env-file".into(), path.clone()));
    }
    if Path::new(".env").is_file() {
        files.push((".env".into(), PathBuf::from(".env")));
    }
    for name in ["JWT_PRIVATE_KEY", "SESSION_SECRET", "ADMIN_TOKEN", "SMTP_PASSWORD", "DATABASE_URL", "REDIS_URL"] {
        if let Some(path) = lookup(&format!("{name}_FILE")) {
            files.push((format!("{name}_FILE"), PathBuf::from(path)));
        }
    }
    let generated = config.data_dir.join(truxe_server::datadir::SIGNING_KEY_FILE);
    if config.jwt.private_key_pem.is_none() && generated.is_file() {
        files.push(("generated signing key".into(), generated));
    }
    if files.is_empty() {
        report.ok("file permissions", "no secret files to check (values come from the environment)");
    }
    for (what, path) in files {
        match permission_problem(&path) {
            Ok(None) => report.ok("file permissions", format!("{what} {}", path.display())),
            Ok(Some((Status::Warn, problem))) => {
                report.warn("file permissions", format!("{what} {}: {problem}", path.display()))
            }
            Ok(Some((_, problem))) => report.fail("file permissions", format!("{what} {}: {problem}", path.display())),
            Err(error) => report.fail("file permissions", format!("{what} {}: {error}", path.display())),
        }
    }
}

#[cfg(unix)]
fn permission_problem(path: &Path) -> std::io::Result<Option<(Status, String)>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    let mode = meta.mode() & 0o777;
    Ok(judge_mode(mode))
}

#[cfg(not(unix))]
fn permission_problem(_path: &Path) -> std::io::Result<Option<(Status, String)>> {
    Ok(None)
}

/// Others may neither read nor write a secret; the group may read it (0640, the package's
/// `root:truxe`), never write it.
pub fn judge_mode(mode: u32) -> Option<(Status, String)> {
    if mode & 0o007 != 0 {
        Some((Status::Fail, format!("mode {mode:04o}: others may read or write it (chmod 0640 or 0600)")))
    } else if mode & 0o020 != 0 {
        Some((Status::Fail, format!("mode {mode:04o}: the group may write it (chmod 0640)")))
    } else {
        None
    }
}

/// The newest backup must be less than a day old and verified (`truxectl backup create
/// --verify`, as the packaged daily timer runs it), its verification record of this very file.
fn check_backups(report: &mut Report, dir: PathBuf) {
    let entries = match crate::backup::catalog::list(&dir) {
        Ok(entries) => entries,
        Err(error) => {
            report.fail("backups", format!("{error:#} (run `truxectl backup create --verify`)"));
            return;
        }
    };
    let now = time::OffsetDateTime::now_utc();
    let recent: Vec<_> = entries.iter().filter(|e| now - e.named_at < time::Duration::days(1)).collect();
    let verified =
        recent.iter().find(|e| e.verified_ok() && e.verification.as_ref().is_some_and(|v| v.matches(&e.path)));
    match (verified, recent.first(), entries.first()) {
        (Some(entry), _, _) => report.ok("backups", format!("{} verified, less than a day old", entry.path.display())),
        (None, Some(entry), _) => report.fail(
            "backups",
            format!(
                "{} is less than a day old but not verified: run `truxectl backup verify` on it",
                entry.path.display()
            ),
        ),
        (None, None, Some(entry)) => report.fail(
            "backups",
            format!(
                "the newest backup, {}, is more than a day old: is the truxe-backup.timer running?",
                entry.path.display()
            ),
        ),
        (None, None, None) => {
            report.fail("backups", format!("none in {} (run `truxectl backup create --verify`)", dir.display()))
        }
    }
}

/// Reachable, migrated, clock agreeing; returns how many server instances use it.
fn check_database(report: &mut Report, config: &Config, env_kid: Option<&str>) -> i64 {
    let mut database = config.database.clone();
    database.pool_min = 0;
    database.pool_max = 1;
    let where_ = database.url.redacted();
    if database.is_embedded_default {
        report.fail("database", format!("DATABASE_URL is not set: the embedded SQLite file {where_}"));
        return 0;
    }
    if let DatabaseUrl::Sqlite(path) = &database.url {
        // Opening a missing SQLite file would create it: doctor changes nothing.
        if !path.is_file() {
            report.fail("database", format!("{where_} does not exist"));
            return 0;
        }
        report.warn("database", format!("SQLite ({where_}): one instance only; PostgreSQL is the production store"));
    }
    let pool = match store::connect(&database) {
        Ok(pool) => pool,
        Err(error) => {
            report.fail("database", format!("cannot connect: {error}"));
            return 0;
        }
    };
    let mut conn = match pool.get() {
        Ok(conn) => conn,
        Err(error) => {
            report.fail("database", format!("cannot connect to {where_}: {error}"));
            return 0;
        }
    };
    report.ok("database", format!("reachable ({where_})"));
    match store::migrations::pending(&mut conn) {
        Ok(pending) if pending.is_empty() => {
            report.ok("migrations", "none pending");
            check_key_schedule(report, config, &mut conn, env_kid);
        }
        Ok(pending) => report.fail(
            "migrations",
            format!(
                "{} pending ({}): run `truxectl migrate`",
                pending.len(),
                pending.iter().map(|m| format!("{}_{}", m.version, m.name)).collect::<Vec<_>>().join(", ")
            ),
        ),
        Err(error) => report.fail("migrations", error.to_string()),
    }
    match database_clock(&mut conn) {
        Ok(Some(database_now)) => {
            let local = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
            let skew = (local - database_now).abs();
            if skew > 30.0 {
                report.fail(
                    "clock",
                    format!("{skew:.1} s apart from the database's: tokens would be refused (set up NTP)"),
                );
            } else if skew > 2.0 {
                report.warn("clock", format!("{skew:.1} s apart from the database's"));
            } else {
                report.ok("clock", format!("{:.0} ms from the database's", skew * 1000.0));
            }
        }
        Ok(None) => report.ok("clock", "SQLite: the database uses this host's clock"),
        Err(error) => report.warn("clock", format!("cannot read the database's clock: {error}")),
    }
    match store::instances::others(&mut conn) {
        Ok(others) => others,
        Err(error) => {
            report.warn("instances", format!("cannot count the server instances: {error}"));
            0
        }
    }
}

fn database_clock(conn: &mut AnyConnection) -> Result<Option<f64>, diesel::result::Error> {
    use diesel::RunQueryDsl;
    let AnyConnection::Postgresql(pg) = conn else {
        return Ok(None);
    };
    diesel::select(diesel::dsl::sql::<diesel::sql_types::Double>("extract(epoch from clock_timestamp())::float8"))
        .get_result(pg)
        .map(Some)
}

async fn check_redis(report: &mut Report, config: &Config, instances: i64) {
    let Some(redis) = &config.redis else {
        if instances > 1 {
            report.fail(
                "redis",
                format!("{instances} server instances use this database but REDIS_URL is not set: each counts its own rate limits"),
            );
        } else {
            report.warn("redis", "REDIS_URL is not set: one instance only (rate limits and caches in process)");
        }
        return;
    };
    let result = match store::redis::connect(redis) {
        Ok(pool) => tokio::time::timeout(Duration::from_secs(5), store::redis::ping(&pool))
            .await
            .unwrap_or_else(|_| Err(store::redis::RedisError::Command("no answer within 5 s".into()))),
        Err(error) => Err(error),
    };
    match result {
        Ok(()) => report.ok("redis", format!("answers ({} instance(s) on the database)", instances)),
        Err(error) => report.fail("redis", error.to_string()),
    }
}

async fn check_smtp(report: &mut Report, config: &Config) {
    let Some(smtp) = &config.smtp else {
        report.fail("smtp", "SMTP_HOST is not set: magic links would only be logged");
        return;
    };
    let mailer = match truxe_server::mail::Mailer::smtp(smtp) {
        Ok(mailer) => mailer,
        Err(error) => {
            report.fail("smtp", error.to_string());
            return;
        }
    };
    let auth = if smtp.user.is_some() { ", authenticated" } else { "" };
    match tokio::time::timeout(Duration::from_secs(15), mailer.test_connection()).await {
        Ok(Ok(true)) => report.ok("smtp", format!("{}{auth}", mailer.describe())),
        Ok(Ok(false)) => report.fail("smtp", format!("{}: the server did not accept the session", mailer.describe())),
        Ok(Err(error)) => report.fail("smtp", error.to_string()),
        Err(_) => report.fail("smtp", format!("{}: no answer within 15 s", mailer.describe())),
    }
}

/// `--url`: the served discovery document must name the configured issuer, and its JWKS must
/// publish the configured key.
async fn check_issuer(report: &mut Report, config: &Config, url: Option<&str>) {
    let Some(url) = url else {
        report.warn("discovery", "not checked (give --url with the server's public URL)");
        return;
    };
    let base = url.trim().trim_end_matches('/');
    let http = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(http) => http,
        Err(error) => {
            report.fail("discovery", error.to_string());
            return;
        }
    };
    let document = format!("{base}/.well-known/openid-configuration");
    let metadata: serde_json::Value = match http.get(&document).send().await {
        Ok(response) if response.status().is_success() => match response.json().await {
            Ok(json) => json,
            Err(error) => {
                report.fail("discovery", format!("{document}: not JSON ({error})"));
                return;
            }
        },
        Ok(response) => {
            report.fail("discovery", format!("{document}: HTTP {}", response.status()));
            return;
        }
        Err(error) => {
            report.fail("discovery", format!("{document}: {error}"));
            return;
        }
    };
    match metadata["issuer"].as_str() {
        Some(issuer) if issuer == config.issuer => report.ok("discovery", format!("{document} names {issuer}")),
        Some(issuer) => report
            .fail("discovery", format!("{document} names issuer {issuer:?}, the configuration {:?}", config.issuer)),
        None => report.fail("discovery", format!("{document} has no issuer")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_must_not_be_open_to_others() {
        assert_eq!(judge_mode(0o600), None);
        assert_eq!(judge_mode(0o640), None);
        assert_eq!(judge_mode(0o400), None);
        assert!(matches!(judge_mode(0o644), Some((Status::Fail, _))));
        assert!(matches!(judge_mode(0o604), Some((Status::Fail, _))));
        assert!(matches!(judge_mode(0o660), Some((Status::Fail, _))));
        assert!(matches!(judge_mode(0o666), Some((Status::Fail, _))));
    }

    #[test]
    fn loopback_origins_may_be_http() {
        assert!(is_loopback_origin("http://localhost:5173"));
        assert!(is_loopback_origin("http://127.0.0.1:8080"));
        assert!(is_loopback_origin("http://[::1]:3000"));
        assert!(!is_loopback_origin("http://app.example.com"));
    }

    #[test]
    fn a_report_fails_when_one_check_fails() {
        let mut report = Report::default();
        report.ok("a", "fine");
        report.warn("b", "hmm");
        assert!(!report.failed());
        report.fail("c", "broken");
        assert!(report.failed());
        assert_eq!(count(&report), (1, 1));
    }
}
