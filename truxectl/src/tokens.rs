//! `truxectl tokens revoke (--jti J | --client C | --user U)`: revoke access and refresh tokens
//! on the database, through the server's own revocation (`service::token::revoke`), with an
//! audit event. With `REDIS_URL` configured the servers are also told (revoked-`jti` marks), but
//! the database is the revocation: every server checks it on each introspection and userinfo
//! request, so a Redis that cannot be reached delays nothing and loses nothing.

use anyhow::{Context as _, bail};
use truxe_server::service::clients as client_service;
use truxe_server::service::policy::Rules;
use truxe_server::service::token::revoke::{
    self as revocation, AdminRevocation, AdminRevokeError, AdminTarget, Unchanged,
};
use truxe_server::service::users as user_service;
use truxe_server::shared;
use truxe_server::store::{self, migrations, unix_now};

use crate::migrate::confirm;
use crate::{Global, db, exit};

/// Audit actor for changes made on the database directly.
const ACTOR: &str = "cli";

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Revoke one token by its jti (a refresh token takes its whole grant along), or every access
    /// and refresh token of a client, of a user, or of a user at one client (--client with --user;
    /// asks first)
    Revoke(RevokeOpts),
}

#[derive(clap::Args, Debug, Clone)]
#[command(group(clap::ArgGroup::new("selector").required(true).multiple(true).args(["jti", "client", "user"])))]
pub struct RevokeOpts {
    /// The token's `jti` (an access token's claim, or a refresh token's id from the audit log)
    #[arg(long, value_name = "JTI", conflicts_with_all = ["client", "user"])]
    pub jti: Option<String>,
    /// Every token issued to this client
    #[arg(long, value_name = "CLIENT_ID")]
    pub client: Option<String>,
    /// Every token of this user (id or email address)
    #[arg(long, value_name = "EMAIL|ID")]
    pub user: Option<String>,
}

/// Whether a value could be a token id of ours (32 hex digits today; anything of that alphabet
/// and a sane length is looked up, the rest is a usage error).
fn is_plausible_jti(value: &str) -> bool {
    (8..=128).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn run(command: Command, global: &Global) -> anyhow::Result<()> {
    let Command::Revoke(opts) = command;
    if let Some(jti) = &opts.jti
        && !is_plausible_jti(jti)
    {
        return Err(exit::usage(format!(
            "--jti: {jti:?} is not a token id: token ids are 8 to 128 characters of A-Z a-z 0-9 - _"
        )));
    }
    let config = db::server_config(global)?;
    let rules = Rules::from_config(&config);
    let database = db::for_cli(config.database.clone(), global)?;
    let target = database.url.redacted();
    let mut conn = store::connect(&database)?.get().with_context(|| format!("cannot open {target}"))?;
    if !migrations::pending(&mut conn)?.is_empty() {
        bail!("{target} has pending migrations: run `truxectl migrate` first");
    }

    let client = match &opts.client {
        Some(client_id) => Some(
            client_service::find(&mut conn, client_id)?
                .ok_or_else(|| exit::check_failed(format!("no client with client_id {client_id:?}")))?,
        ),
        None => None,
    };
    let user = match &opts.user {
        Some(key) => Some(user_service::get(&mut conn, key)?),
        None => None,
    };
    let (what, selector) = match (&opts.jti, &client, &user) {
        (Some(jti), _, _) => (format!("the token {jti}"), AdminTarget::Jti(jti)),
        (None, client, user) => {
            let who = match (client, user) {
                (Some(c), Some(u)) => {
                    format!("user {} <{}> at client {} ({})", u.user_id, u.email, c.client_id, c.client_name)
                }
                (Some(c), None) => format!("client {} ({})", c.client_id, c.client_name),
                (None, Some(u)) => format!("user {} <{}>", u.user_id, u.email),
                (None, None) => return Err(exit::usage("give --jti, --client or --user")),
            };
            confirm(
                global,
                &format!("Revoke every access and refresh token of {who}? Applications must sign in again."),
            )?;
            let target = AdminTarget::Holder {
                client_id: client.as_ref().map(|c| c.client_id.as_str()),
                user_id: user.as_ref().map(|u| u.user_id.as_str()),
            };
            (who, target)
        }
    };

    let now = unix_now();
    let revoked = match revocation::revoke_as_admin(&mut conn, selector, ACTOR, rules.access_token_ttl, now) {
        Ok(revoked) => revoked,
        Err(AdminRevokeError::UnknownJti(jti, window)) => {
            return Err(exit::check_failed(format!(
                "no token with jti {jti}: not a refresh token's id, and no access token with it was issued in the last \
                 {} h (the audit log's token.issued events); it may have expired, or belong to another database",
                window / 3600
            )));
        }
        Err(AdminRevokeError::Store(error)) => return Err(anyhow::Error::new(error).context(format!("on {target}"))),
    };
    let redis = tell_redis(config.redis.as_ref(), &revoked, now);
    output(&what, &revoked, redis, opts.jti.is_none(), global)
}

/// What became of the revoked-`jti` marks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Redis {
    NotConfigured,
    NothingToMark,
    Marked,
    Unreachable,
}

impl Redis {
    fn as_str(self) -> &'static str {
        match self {
            Redis::NotConfigured => "not_configured",
            Redis::NothingToMark => "nothing_to_mark",
            Redis::Marked => "marked",
            Redis::Unreachable => "unreachable",
        }
    }
}

fn tell_redis(config: Option<&truxe_server::config::RedisConfig>, revoked: &AdminRevocation, now: i64) -> Redis {
    let Some(config) = config else {
        return Redis::NotConfigured;
    };
    let marks: Vec<(String, i64)> =
        revoked.revoked_jtis.iter().map(|(jti, exp)| (jti.to_string(), exp.saturating_sub(now))).collect();
    if marks.iter().all(|(_, remaining)| *remaining <= 0) {
        return Redis::NothingToMark;
    }
    match shared::mark_revoked_once(config, &marks) {
        Ok(()) => Redis::Marked,
        Err(error) => {
            eprintln!(
                "warning: the revocation is in the database, but Redis could not be told ({error}). Nothing is lost: \
                 every server checks the database on each introspection and userinfo request, and a Redis mark \
                 (oauth:revoked:{{jti}}) would only have answered sooner"
            );
            Redis::Unreachable
        }
    }
}

fn output(what: &str, revoked: &AdminRevocation, redis: Redis, holder: bool, global: &Global) -> anyhow::Result<()> {
    if global.json {
        let mut value = serde_json::to_value(revoked)?;
        if let Some(object) = value.as_object_mut() {
            object.insert("redis".to_string(), redis.as_str().into());
        }
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    match revoked.unchanged {
        Some(Unchanged::AlreadyRevoked) => println!("{what} was already revoked; nothing changed"),
        Some(Unchanged::Expired) => println!("{what} has expired: nothing accepts it any more; nothing changed"),
        None => println!(
            "revoked {} access token(s) and {} refresh token(s) ({} grant(s)) of {what}",
            revoked.access_tokens, revoked.refresh_tokens, revoked.grants
        ),
    }
    if redis == Redis::Marked {
        println!("the servers' Redis holds a revoked mark for each access token");
    }
    if holder && revoked.unchanged.is_none() {
        println!(
            "New tokens can still be issued: `truxectl clients disable` stops a client, `truxectl users disable` a user."
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_ids_are_checked_before_the_database() {
        assert!(is_plausible_jti("0f1e2d3c4b5a69788796a5b4c3d2e1f0"));
        for bad in ["", "short", "has space in it", "quote'or'1=1--", &"a".repeat(129), "100%_like"] {
            assert!(!is_plausible_jti(bad), "{bad}");
        }
    }
}
