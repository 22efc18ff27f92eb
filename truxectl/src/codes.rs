//! `truxectl codes inspect|list`: authorization codes on the database, everything behind an
//! `invalid_grant` without `psql`. Codes are stored only as their SHA-256; `inspect` hashes the
//! code it is given the way the server does, and nothing here ever prints a code.
//!
//! `inspect` exits 1 when the token endpoint would refuse the code (unknown, used, expired,
//! its client or user switched off, or a given `--client`, `--redirect-uri` or `--code-verifier`
//! that does not fit it), and prints every reason; 0 when it could still be redeemed.

use std::io::Read as _;

use anyhow::Context as _;
use serde::Serialize;
use truxe_server::model::client::GrantType;
use truxe_server::oauth::pkce;
use truxe_server::service::authorize::token_hash;
use truxe_server::service::clients as client_service;
use truxe_server::service::token::is_plausible_opaque;
use truxe_server::service::users as user_service;
use truxe_server::store::grants::{self as grant_store, AuthorizationCode};
use truxe_server::store::{AnyConnection, housekeeping, unix_now, users as user_store};

use crate::clients::redirect;
use crate::users::format_time;
use crate::{Global, db, exit};

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Everything about one code: found, client, user, redirect URI, expiry, used, PKCE; with
    /// --client, --redirect-uri and --code-verifier, checks them as the token endpoint would.
    /// Exit 1 when the code would be refused
    Inspect(InspectOpts),
    /// The most recent codes, newest first (hash prefix, client, user, redirect URI, times, state, PKCE)
    List(ListOpts),
}

#[derive(clap::Args, Debug, Clone)]
pub struct InspectOpts {
    /// The code (the `code` parameter the application received), the whole callback URL that
    /// carried it, or `-` to read it from standard input (keeps it out of the shell history)
    #[arg(value_name = "CODE")]
    pub code: String,
    /// The client_id of the token request
    #[arg(long, value_name = "CLIENT_ID")]
    pub client: Option<String>,
    /// The redirect_uri of the token request
    #[arg(long, value_name = "URI")]
    pub redirect_uri: Option<String>,
    /// The code_verifier of the token request (PKCE)
    #[arg(long, value_name = "VERIFIER")]
    pub code_verifier: Option<String>,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ListOpts {
    /// Only codes issued to this client
    #[arg(long, value_name = "CLIENT_ID")]
    pub client: Option<String>,
    /// Only codes of this user (id or email address)
    #[arg(long, value_name = "EMAIL|ID")]
    pub user: Option<String>,
    /// At most this many (1 to 500)
    #[arg(long, value_name = "N", default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=500))]
    pub limit: i64,
}

pub fn run(command: Command, global: &Global) -> anyhow::Result<()> {
    match command {
        Command::Inspect(opts) => inspect(&opts, global),
        Command::List(opts) => list(&opts, global),
    }
}

/// The code from what the operator has at hand: the code itself, `code=…` of a query string,
/// the callback URL, or `-` for standard input.
fn code_from(input: &str) -> anyhow::Result<String> {
    let input = if input == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("reading the code from standard input")?;
        text
    } else {
        input.to_string()
    };
    let input = input.trim();
    let query = input.split_once('?').map_or(input, |(_, query)| query);
    let query = query.split_once('#').map_or(query, |(query, _)| query);
    if query.contains("code=") {
        let code = url::form_urlencoded::parse(query.as_bytes()).find(|(name, _)| name == "code").map(|(_, v)| v);
        return code.map(|c| c.into_owned()).ok_or_else(|| exit::usage("the URL carries no `code` parameter"));
    }
    Ok(input.to_string())
}

/// A stored code hash, shortened: enough to tell codes apart, useless to redeem one.
fn hash_prefix(code_hash: &str) -> &str {
    &code_hash[..12.min(code_hash.len())]
}

#[derive(Debug, Serialize)]
struct Report {
    found: bool,
    /// The first 12 hex digits of the code's SHA-256 (the code itself is never shown).
    code_hash_prefix: String,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    code: Option<CodeFacts>,
    /// Whether the token endpoint would redeem it now (given what was passed).
    redeemable: bool,
    /// Every reason it would be refused, first the one the server would answer.
    problems: Vec<String>,
    /// What the token request must carry for this code.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    requires: Vec<String>,
}

#[derive(Debug, Serialize)]
struct CodeFacts {
    client_id: String,
    client_name: Option<String>,
    client_status: Option<String>,
    user_id: String,
    user_email: Option<String>,
    user_status: Option<String>,
    redirect_uri: String,
    /// Whether the authorization request named `redirect_uri` (then the token request must).
    redirect_uri_given: bool,
    scope: String,
    created_at: i64,
    expires_at: i64,
    expired: bool,
    used: bool,
    used_at: Option<i64>,
    grant_id: Option<String>,
    grant_revoked: Option<bool>,
    /// `S256`, or `null` when the authorization used no PKCE.
    pkce_method: Option<String>,
    nonce: bool,
}

fn inspect(opts: &InspectOpts, global: &Global) -> anyhow::Result<()> {
    let code = code_from(&opts.code)?;
    if !is_plausible_opaque(&code) {
        return Err(exit::usage(format!(
            "that is not an authorization code of Truxe ({} characters): codes are 43 characters of A-Z a-z 0-9 - _ \
             (the `code` parameter of the callback URL, or the whole URL)",
            code.chars().count()
        )));
    }
    let code_hash = token_hash(&code);
    let (_, mut conn) = db::connect(global)?;
    let now = unix_now();
    let report = match grant_store::find_code(&mut conn, &code_hash)? {
        None => Report {
            found: false,
            code_hash_prefix: hash_prefix(&code_hash).to_string(),
            code: None,
            redeemable: false,
            problems: vec![format!(
                "unknown code: not issued by the server on this database, mistyped, cut short, or removed \
                 (codes are deleted {} h after they expire)",
                housekeeping::EXPIRED_KEPT_SECS / 3600
            )],
            requires: Vec::new(),
        },
        Some(row) => diagnose(&mut conn, &row, opts, now)?,
    };
    print_report(&report, global)?;
    if report.redeemable {
        Ok(())
    } else {
        Err(exit::check_failed(format!(
            "the token endpoint would refuse this code: {}",
            report.problems.first().map_or("", String::as_str)
        )))
    }
}

/// The token endpoint's checks (`service::token::authorization_code`), all of them at once and
/// in its order, for what is known: the parameters not given are not judged.
fn diagnose(conn: &mut AnyConnection, row: &AuthorizationCode, opts: &InspectOpts, now: i64) -> anyhow::Result<Report> {
    let client = client_service::find(conn, &row.client_id)?;
    let user = user_store::find(conn, &row.user_id)?;
    let grant = match &row.grant_id {
        Some(grant_id) => grant_store::find_grant(conn, grant_id)?,
        None => None,
    };
    let mut problems = Vec::new();
    let mut requires = Vec::new();
    match &client {
        None => problems.push(format!("the client {} no longer exists", row.client_id)),
        Some(client) if !client.is_active() => problems.push(format!(
            "the client {} is {}: the token endpoint refuses its authentication (invalid_client)",
            client.client_id,
            client.status.as_str()
        )),
        Some(client) if !client.allows_grant(GrantType::AuthorizationCode) => problems.push(format!(
            "the client {} is not registered for the authorization_code grant (unauthorized_client)",
            client.client_id
        )),
        Some(_) => {}
    }
    if let Some(used_at) = row.consumed_at {
        let revoked = grant.as_ref().is_some_and(|g| g.revoked_at.is_some());
        problems.push(match &row.grant_id {
            Some(grant_id) => format!(
                "already used at {} (grant {grant_id}{}); presenting it again revokes what it issued",
                format_time(used_at),
                if revoked { ", now revoked" } else { "" }
            ),
            None => format!(
                "already used or voided at {} (voided when consent was withdrawn or the user was disabled)",
                format_time(used_at)
            ),
        });
    }
    if let Some(presenter) = &opts.client
        && presenter != row.client_id.as_str()
    {
        problems.push(format!(
            "issued to another client: {} (the token request authenticates as {presenter})",
            row.client_id
        ));
    }
    if row.expires_at <= now {
        problems.push(format!(
            "expired at {} ({} ago; codes live OAUTH_AUTHORIZATION_CODE_EXPIRY, or the client's authorization_code_ttl)",
            format_time(row.expires_at),
            age(now - row.expires_at)
        ));
    }
    match &opts.redirect_uri {
        Some(uri) if *uri != row.redirect_uri => {
            let differences = redirect::differences(&row.redirect_uri, uri).join("; ");
            problems.push(format!(
                "redirect_uri differs from the authorization request's {:?}: {differences}",
                row.redirect_uri
            ));
        }
        _ if row.redirect_uri_given => requires.push(format!("redirect_uri={:?} exactly", row.redirect_uri)),
        _ => requires.push(format!("no redirect_uri, or exactly {:?}", row.redirect_uri)),
    }
    match (&row.code_challenge, &opts.code_verifier) {
        (Some(challenge), Some(verifier)) if !pkce::verify(verifier, challenge) => {
            problems.push("code_verifier does not match the code_challenge (S256 of the verifier)".to_string());
        }
        (None, Some(_)) => {
            problems.push("a code_verifier is given, but the authorization request used no PKCE".to_string());
        }
        (Some(_), None) => {
            requires.push("the code_verifier of the authorization request's code_challenge (S256)".into())
        }
        _ => {}
    }
    match &user {
        None => problems.push(format!("the user {} no longer exists", row.user_id)),
        Some(user) if !user.is_active() => problems.push(format!("the user {} is disabled", user.user_id)),
        Some(_) => {}
    }
    let facts = CodeFacts {
        client_id: row.client_id.to_string(),
        client_name: client.as_ref().map(|c| c.client_name.clone()),
        client_status: client.as_ref().map(|c| c.status.as_str().to_string()),
        user_id: row.user_id.to_string(),
        user_email: user.as_ref().map(|u| u.email.clone()),
        user_status: user.as_ref().map(|u| u.status.as_str().to_string()),
        redirect_uri: row.redirect_uri.clone(),
        redirect_uri_given: row.redirect_uri_given,
        scope: row.scope.clone(),
        created_at: row.created_at,
        expires_at: row.expires_at,
        expired: row.expires_at <= now,
        used: row.consumed_at.is_some(),
        used_at: row.consumed_at,
        grant_id: row.grant_id.as_ref().map(ToString::to_string),
        grant_revoked: grant.as_ref().map(|g| g.revoked_at.is_some()),
        pkce_method: row.code_challenge.as_ref().map(|_| row.code_challenge_method.clone().unwrap_or("S256".into())),
        nonce: row.nonce.is_some(),
    };
    Ok(Report {
        found: true,
        code_hash_prefix: hash_prefix(&row.code_hash).to_string(),
        code: Some(facts),
        redeemable: problems.is_empty(),
        problems,
        requires,
    })
}

/// `3 min 20 s`, `2 h 5 min`, `4 d 3 h`.
fn age(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3_600 => format!("{} min {} s", s / 60, s % 60),
        3_600..86_400 => format!("{} h {} min", s / 3_600, s % 3_600 / 60),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3_600),
    }
}

fn print_report(report: &Report, global: &Global) -> anyhow::Result<()> {
    if global.json {
        println!("{}", serde_json::to_string_pretty(report)?);
        return Ok(());
    }
    let now = unix_now();
    let line = |name: &str, value: String| println!("{name:<14} {value}");
    line("code", format!("{}… (SHA-256 prefix; the code itself is never shown)", report.code_hash_prefix));
    line("found", if report.found { "yes" } else { "no" }.to_string());
    if let Some(c) = &report.code {
        let name = c
            .client_name
            .as_deref()
            .map_or(String::new(), |n| format!(" ({n}, {})", c.client_status.as_deref().unwrap_or("-")));
        line("client", format!("{}{name}", c.client_id));
        let email = c
            .user_email
            .as_deref()
            .map_or(String::new(), |e| format!(" <{e}> ({})", c.user_status.as_deref().unwrap_or("-")));
        line("user", format!("{}{email}", c.user_id));
        let named = if c.redirect_uri_given {
            "named in the authorization request"
        } else {
            "the client's only one, not named"
        };
        line("redirect_uri", format!("{:?} ({named})", c.redirect_uri));
        line("scope", c.scope.clone());
        line("created", format_time(c.created_at));
        let when = if c.expired {
            format!("{} ago", age(now - c.expires_at))
        } else {
            format!("in {}", age(c.expires_at - now))
        };
        line("expires", format!("{} ({when})", format_time(c.expires_at)));
        let used = match (c.used_at, &c.grant_id) {
            (None, _) => "no".to_string(),
            (Some(at), Some(grant)) => format!(
                "yes, at {} (grant {grant}{})",
                format_time(at),
                if c.grant_revoked == Some(true) { ", revoked" } else { "" }
            ),
            (Some(at), None) => format!("voided at {}", format_time(at)),
        };
        line("used", used);
        line("pkce", c.pkce_method.clone().unwrap_or_else(|| "none".to_string()));
        line("nonce", if c.nonce { "yes" } else { "no" }.to_string());
    }
    println!();
    if report.redeemable {
        println!("redeemable: the token endpoint would exchange it now");
    } else {
        println!("refused: the token endpoint would answer invalid_grant (or the error named) because");
        for problem in &report.problems {
            println!("  - {problem}");
        }
    }
    if !report.requires.is_empty() {
        println!("the token request must carry:");
        for requirement in &report.requires {
            println!("  - {requirement}");
        }
    }
    Ok(())
}

#[derive(Debug, Serialize)]
struct Listed {
    code_hash_prefix: String,
    client_id: String,
    user_id: String,
    redirect_uri: String,
    created_at: i64,
    expires_at: i64,
    /// `live`, `expired` or `used`.
    state: &'static str,
    used_at: Option<i64>,
    pkce_method: Option<String>,
}

fn list(opts: &ListOpts, global: &Global) -> anyhow::Result<()> {
    let (_, mut conn) = db::connect(global)?;
    if let Some(client_id) = &opts.client
        && client_service::find(&mut conn, client_id)?.is_none()
    {
        return Err(exit::check_failed(format!("no client with client_id {client_id:?}")));
    }
    let user_id = match &opts.user {
        Some(key) => Some(user_service::get(&mut conn, key)?.user_id),
        None => None,
    };
    let now = unix_now();
    let rows = grant_store::recent_codes(&mut conn, opts.client.as_deref(), user_id.as_deref(), opts.limit)?;
    let listed: Vec<Listed> = rows
        .iter()
        .map(|row| Listed {
            code_hash_prefix: hash_prefix(&row.code_hash).to_string(),
            client_id: row.client_id.to_string(),
            user_id: row.user_id.to_string(),
            redirect_uri: row.redirect_uri.clone(),
            created_at: row.created_at,
            expires_at: row.expires_at,
            state: if row.consumed_at.is_some() {
                "used"
            } else if row.expires_at <= now {
                "expired"
            } else {
                "live"
            },
            used_at: row.consumed_at,
            pkce_method: row
                .code_challenge
                .as_ref()
                .map(|_| row.code_challenge_method.clone().unwrap_or("S256".into())),
        })
        .collect();
    if global.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "codes": listed }))?);
        return Ok(());
    }
    if listed.is_empty() {
        println!("no authorization codes (codes are kept until a day after they expire)");
        return Ok(());
    }
    println!(
        "{:<12} {:<7} {:<5} {:<23} {:<23} {:<26} {:<27} REDIRECT_URI",
        "CODE", "STATE", "PKCE", "CREATED", "EXPIRES", "CLIENT", "USER"
    );
    for c in &listed {
        println!(
            "{:<12} {:<7} {:<5} {:<23} {:<23} {:<26} {:<27} {:?}",
            c.code_hash_prefix,
            c.state,
            c.pkce_method.as_deref().unwrap_or("none"),
            format_time(c.created_at),
            format_time(c.expires_at),
            c.client_id,
            c.user_id,
            c.redirect_uri
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_code_comes_from_whatever_the_operator_pasted() {
        let code = "AbCdEfGhIjKlMnOpQrStUvWxYz0123456789-_abcde";
        assert_eq!(code_from(code).expect("bare"), code);
        assert_eq!(code_from(&format!("  {code}\n")).expect("trimmed"), code);
        let url = format!("https://app.example.com/callback?code={code}&state=xyz&iss=https%3A%2F%2Fauth");
        assert_eq!(code_from(&url).expect("url"), code);
        assert_eq!(code_from(&format!("state=1&code={code}")).expect("query"), code);
        let without = code_from("https://app.example.com/callback?error=access_denied&code=");
        assert_eq!(without.expect("an empty code, refused as implausible later"), "");
        assert!(code_from("https://app.example.com/callback?state=1&xcode=abc").is_err(), "no `code` parameter");
    }

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(age(42), "42 s");
        assert_eq!(age(200), "3 min 20 s");
        assert_eq!(age(7_500), "2 h 5 min");
        assert_eq!(age(3 * 86_400 + 7_200), "3 d 2 h");
        assert_eq!(age(-5), "0 s");
    }
}
