//! `truxectl users create|list|show|disable|enable|delete|mfa-reset|sessions|consents`, on the database directly.

use anyhow::Context;
use truxe_server::model::user::{User, UserStatus};
use truxe_server::service::consents as consent_service;
use truxe_server::service::mfa as mfa_service;
use truxe_server::service::sessions as session_service;
use truxe_server::service::users::{self as user_service, NewUser};
use truxe_server::store::unix_now;

use crate::migrate::confirm;
use crate::{Global, db};

/// Recorded as the actor of audit events.
const ACTOR: &str = "cli";

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Create a user (the address is normalised: trimmed and lowercased)
    Create {
        #[arg(long, value_name = "EMAIL")]
        email: String,
        /// Display name
        #[arg(long, value_name = "NAME")]
        name: Option<String>,
        /// Mark the address as verified (otherwise the first magic-link sign-in verifies it)
        #[arg(long)]
        verified: bool,
    },
    /// List users, ordered by id (pass the last id shown as --after for the next page)
    List {
        #[arg(long, value_name = "USER_ID")]
        after: Option<String>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=user_service::MAX_PAGE))]
        limit: i64,
    },
    /// Show one user
    Show {
        #[arg(value_name = "EMAIL|ID")]
        user: String,
    },
    /// Stop a user from signing in: ends their sessions and revokes every token they hold
    Disable {
        #[arg(value_name = "EMAIL|ID")]
        user: String,
    },
    /// Allow a disabled user to sign in again
    Enable {
        #[arg(value_name = "EMAIL|ID")]
        user: String,
    },
    /// Delete a user with their sessions, tokens and consents (asks first; --yes to skip)
    Delete {
        #[arg(value_name = "EMAIL|ID")]
        user: String,
    },
    /// Remove a user's two-factor setup and recovery codes, e.g. after a lost phone (asks first)
    MfaReset {
        #[arg(value_name = "EMAIL|ID")]
        user: String,
    },
    /// List a user's browser sessions (live ones; --all for ended ones too), or end them all
    Sessions {
        #[arg(value_name = "EMAIL|ID")]
        user: String,
        /// Also list sessions that were signed out, revoked or have expired
        #[arg(long, conflicts_with = "revoke_all")]
        all: bool,
        /// Sign the user out everywhere: revoke every live session
        #[arg(long)]
        revoke_all: bool,
    },
    /// List the applications a user allowed, or withdraw one (--revoke CLIENT_ID, asks first)
    Consents {
        #[arg(value_name = "EMAIL|ID")]
        user: String,
        /// Withdraw the consent for this client and revoke its tokens for the user
        #[arg(long, value_name = "CLIENT_ID")]
        revoke: Option<String>,
    },
}

pub fn run(command: Command, global: &Global) -> anyhow::Result<()> {
    let (_, mut conn) = db::connect(global)?;
    let conn = &mut *conn;
    match command {
        Command::Create { email, name, verified } => {
            let new = NewUser { email: email.clone(), display_name: name, email_verified: verified };
            let user = user_service::create(conn, &new, ACTOR, unix_now())
                .with_context(|| format!("cannot create user {email:?}"))?;
            if global.json {
                println!("{}", user_json(&user, None));
            } else {
                println!("created {} {}", user.user_id, user.email);
            }
        }
        Command::List { after, limit } => {
            let users = user_service::list(conn, after.as_deref(), limit)?;
            let next_after = if users.len() as i64 == limit { users.last().map(|u| u.user_id.clone()) } else { None };
            if global.json {
                let list: Vec<_> = users.iter().map(|u| user_json(u, None)).collect();
                println!("{}", serde_json::json!({ "users": list, "next_after": next_after }));
            } else {
                print_table(&users);
                if let Some(next) = next_after {
                    println!("more: truxectl users list --after {next}");
                }
            }
        }
        Command::Show { user } => {
            let user = user_service::get(conn, &user)?;
            let codes_left = mfa_service::recovery_codes_left(conn, &user.user_id)?;
            if global.json {
                println!("{}", user_json(&user, Some(codes_left)));
            } else {
                print_user(&user, codes_left);
            }
        }
        Command::Disable { user } => set_status(conn, global, &user, UserStatus::Disabled)?,
        Command::Enable { user } => set_status(conn, global, &user, UserStatus::Active)?,
        Command::Delete { user } => {
            let user = user_service::get(conn, &user)?;
            confirm(
                global,
                &format!(
                    "Delete user {} <{}>? Their sessions, tokens, consents and two-factor setup are deleted too.",
                    user.user_id, user.email
                ),
            )?;
            let deleted = user_service::delete(conn, &user.user_id, ACTOR, unix_now())?;
            if global.json {
                println!("{}", serde_json::json!({ "deleted": deleted.user_id, "email": deleted.email }));
            } else {
                println!("deleted {} {}", deleted.user_id, deleted.email);
            }
        }
        Command::MfaReset { user } => {
            let user = user_service::get(conn, &user)?;
            confirm(
                global,
                &format!(
                    "Reset two-factor authentication of {} <{}>? Their recovery codes stop working and they \
                     sign in with the email link alone until they set it up again.",
                    user.user_id, user.email
                ),
            )?;
            let had_any = mfa_service::reset(conn, &user.user_id, ACTOR, unix_now())?;
            if global.json {
                println!(
                    "{}",
                    serde_json::json!({ "user_id": user.user_id, "email": user.email, "mfa_reset": had_any })
                );
            } else if had_any {
                println!("two-factor authentication reset for {} {}", user.user_id, user.email);
            } else {
                println!("{} {} had no two-factor setup; nothing to reset", user.user_id, user.email);
            }
        }
        Command::Sessions { user, all, revoke_all } => sessions(conn, global, &user, all, revoke_all)?,
        Command::Consents { user, revoke } => consents(conn, global, &user, revoke.as_deref())?,
    }
    Ok(())
}

fn sessions(
    conn: &mut truxe_server::store::AnyConnection,
    global: &Global,
    key: &str,
    all: bool,
    revoke_all: bool,
) -> anyhow::Result<()> {
    let user = user_service::get(conn, key)?;
    let now = unix_now();
    if revoke_all {
        let count = session_service::revoke_all_for_user(conn, &user.user_id, ACTOR, now)?;
        if global.json {
            println!("{}", serde_json::json!({ "user_id": user.user_id, "email": user.email, "revoked": count }));
        } else {
            println!("revoked {count} session(s) of {} {}", user.user_id, user.email);
        }
        return Ok(());
    }
    let sessions = session_service::list_for_user(conn, &user.user_id, !all, now)?;
    let state = |s: &truxe_server::store::sessions::Session| {
        if s.revoked_at.is_some() {
            "revoked"
        } else if s.expires_at <= now {
            "expired"
        } else if s.mfa_pending {
            "pending-mfa"
        } else {
            "live"
        }
    };
    if global.json {
        let list: Vec<_> = sessions
            .iter()
            .map(|s| {
                serde_json::json!({
                    // A prefix of the hash: enough to tell sessions apart, useless as a cookie.
                    "session": &s.session_hash[..12.min(s.session_hash.len())],
                    "state": state(s),
                    "auth_time": s.auth_time,
                    "amr": s.amr_list(),
                    "created_at": s.created_at,
                    "last_seen_at": s.last_seen_at,
                    "expires_at": s.expires_at,
                    "revoked_at": s.revoked_at,
                    "ip": s.ip,
                    "user_agent": s.user_agent,
                })
            })
            .collect();
        println!("{}", serde_json::json!({ "user_id": user.user_id, "email": user.email, "sessions": list }));
        return Ok(());
    }
    if sessions.is_empty() {
        println!("{} {} has no {}sessions", user.user_id, user.email, if all { "" } else { "live " });
        return Ok(());
    }
    println!(
        "{:<12} {:<11} {:<14} {:<23} {:<23} {:<15} USER AGENT",
        "SESSION", "STATE", "AMR", "CREATED", "LAST SEEN", "IP"
    );
    for s in &sessions {
        println!(
            "{:<12} {:<11} {:<14} {:<23} {:<23} {:<15} {}",
            &s.session_hash[..12.min(s.session_hash.len())],
            state(s),
            s.amr.replace(' ', ","),
            format_time(s.created_at),
            format_time(s.last_seen_at),
            s.ip.as_deref().unwrap_or("-"),
            s.user_agent.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

fn consents(
    conn: &mut truxe_server::store::AnyConnection,
    global: &Global,
    key: &str,
    revoke: Option<&str>,
) -> anyhow::Result<()> {
    let user = user_service::get(conn, key)?;
    if let Some(client_id) = revoke {
        confirm(
            global,
            &format!(
                "Withdraw the consent of {} <{}> for {client_id}? The application's tokens for this user stop working.",
                user.user_id, user.email
            ),
        )?;
        let withdrawn = consent_service::withdraw(conn, &user.user_id, client_id, ACTOR, unix_now())?;
        if global.json {
            println!(
                "{}",
                serde_json::json!({
                    "user_id": user.user_id,
                    "client_id": client_id,
                    "consent_withdrawn": withdrawn.consent,
                    "grants_revoked": withdrawn.grants_revoked,
                })
            );
        } else if withdrawn.consent || withdrawn.grants_revoked > 0 {
            println!(
                "withdrew the consent of {} {} for {client_id} ({} grant(s) revoked)",
                user.user_id, user.email, withdrawn.grants_revoked
            );
        } else {
            println!("{} {} had no consent or tokens for {client_id}; nothing to withdraw", user.user_id, user.email);
        }
        return Ok(());
    }
    let consents = consent_service::list_for_user(conn, &user.user_id)?;
    if global.json {
        println!("{}", serde_json::json!({ "user_id": user.user_id, "email": user.email, "consents": consents }));
        return Ok(());
    }
    if consents.is_empty() {
        println!("{} {} has not allowed any application", user.user_id, user.email);
        return Ok(());
    }
    println!("{:<26} {:<30} {:<23} SCOPE", "CLIENT", "NAME", "UPDATED");
    for c in &consents {
        println!("{:<26} {:<30} {:<23} {}", c.client_id, c.client_name, format_time(c.updated_at), c.scope);
    }
    Ok(())
}

fn set_status(
    conn: &mut truxe_server::store::AnyConnection,
    global: &Global,
    key: &str,
    status: UserStatus,
) -> anyhow::Result<()> {
    let user = user_service::get(conn, key)?;
    let (updated, ended) = user_service::set_status_reporting(conn, &user.user_id, status, ACTOR, unix_now())?;
    if global.json {
        let mut value = user_json(&updated, None);
        if let (Some(ended), Some(object)) = (ended, value.as_object_mut()) {
            object.insert("ended".to_string(), serde_json::to_value(ended)?);
        }
        println!("{value}");
    } else {
        let verb = match status {
            UserStatus::Active => "enabled",
            UserStatus::Disabled => "disabled",
        };
        if user.status == status {
            println!("{} {} was already {verb}", updated.user_id, updated.email);
        } else {
            println!("{verb} {} {}", updated.user_id, updated.email);
        }
        if let Some(ended) = ended {
            println!(
                "ended {} session(s); revoked {} grant(s) with their refresh and access tokens; voided {} authorization code(s) and {} sign-in link(s)",
                ended.sessions_ended, ended.grants_revoked, ended.codes_voided, ended.links_voided
            );
        }
    }
    Ok(())
}

fn user_json(user: &User, recovery_codes_left: Option<i64>) -> serde_json::Value {
    let mut value = serde_json::json!({
        "user_id": user.user_id,
        "email": user.email,
        "display_name": user.display_name,
        "email_verified": user.email_verified,
        "status": user.status.as_str(),
        "mfa_enabled": user.mfa_enabled,
        "mfa_enrolled_at": user.mfa_enrolled_at,
        "mfa_locked_until": user.mfa_locked_until,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    });
    if let (Some(left), Some(object)) = (recovery_codes_left, value.as_object_mut()) {
        object.insert("recovery_codes_left".to_string(), left.into());
    }
    value
}

fn print_table(users: &[User]) {
    if users.is_empty() {
        println!("no users");
        return;
    }
    let width = users.iter().map(|u| u.email.chars().count()).max().unwrap_or(0).max(5);
    println!("{:<26} {:<width$} {:<8} {:<8} {:<3} CREATED", "ID", "EMAIL", "STATUS", "VERIFIED", "MFA");
    for u in users {
        println!(
            "{:<26} {:<width$} {:<8} {:<8} {:<3} {}",
            u.user_id,
            u.email,
            u.status.as_str(),
            if u.email_verified { "yes" } else { "no" },
            if u.mfa_enabled { "on" } else { "off" },
            format_time(u.created_at)
        );
    }
}

fn print_user(user: &User, recovery_codes_left: i64) {
    let now = unix_now();
    println!("id:             {}", user.user_id);
    println!("email:          {}", user.email);
    println!("name:           {}", user.display_name.as_deref().unwrap_or("-"));
    println!("email verified: {}", if user.email_verified { "yes" } else { "no" });
    println!("status:         {}", user.status.as_str());
    match user.mfa_enrolled_at {
        Some(at) if user.mfa_enabled => {
            println!("two-factor:     on since {} ({recovery_codes_left} recovery codes left)", format_time(at))
        }
        _ => println!("two-factor:     off"),
    }
    if let Some(until) = user.mfa_locked_until.filter(|until| *until > now) {
        println!("                locked after wrong codes until {}", format_time(until));
    }
    println!("created:        {}", format_time(user.created_at));
    println!("updated:        {}", format_time(user.updated_at));
}

/// `2026-11-28 16:20:08 UTC` from epoch seconds (proleptic Gregorian calendar).
pub(crate) fn format_time(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC", secs / 3_600, secs % 3_600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::format_time;

    #[test]
    fn formats_epoch_seconds_as_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(format_time(1_795_883_408), "2026-11-28 16:30:08 UTC");
        assert_eq!(format_time(-1), "1969-12-31 23:59:59 UTC");
    }
}
