//! Client ids, client secrets and their rotation.

use std::time::Duration;

use base64::Engine;
use diesel::Connection;

use super::{ClientError, ClientView, Context, ValidationError, WithSecret, event, find_existing};
use crate::model::client::{self as model, Client};
use crate::oauth::client_secret;
use crate::store::audit::{self, AuditAction};
use crate::store::{self, AnyConnection};

/// How long a replaced secret may keep working after `regenerate-secret`.
pub const MAX_SECRET_GRACE: Duration = Duration::from_secs(30 * 86_400);

/// Whether `presented` is the client's secret: the current one, or the one it replaced while
/// that one's grace period lasts. Says nothing about the client's status or auth method.
pub fn authenticate_secret(client: &Client, key: &[u8], presented: &str, now: i64) -> bool {
    let current = client.secret_hash.as_deref().is_some_and(|hash| client_secret::verify(key, presented, hash));
    let previous = match (&client.previous_secret_hash, client.previous_secret_expires_at) {
        (Some(hash), Some(until)) if now < until => client_secret::verify(key, presented, hash),
        _ => false,
    };
    current || previous
}

fn random_token(prefix: &str, bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// `cl_` and 128 random bits.
pub fn generate_client_id() -> crate::model::ClientId {
    random_token(model::CLIENT_ID_PREFIX, 16).into()
}

/// Gives a confidential client a new secret. With a `grace` above zero the old secret keeps
/// working until then (only the latest replaced secret: rotating again ends an earlier grace).
pub fn regenerate_secret(
    conn: &mut AnyConnection,
    ctx: &Context<'_>,
    client_id: &str,
    grace: Duration,
) -> Result<WithSecret, ClientError> {
    if !model::is_plausible_client_id(client_id) {
        return Err(ClientError::NotFound);
    }
    if grace > MAX_SECRET_GRACE {
        return Err(ValidationError::field(
            "grace_seconds",
            format!("at most {} seconds (30 days)", MAX_SECRET_GRACE.as_secs()),
        )
        .into());
    }
    let grace_seconds = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
    conn.transaction::<_, ClientError, _>(|conn| {
        store::clients::lock_for_update(conn, client_id)?;
        let mut client = find_existing(conn, client_id)?;
        if !client.token_endpoint_auth_method.is_confidential() {
            return Err(ValidationError::field(
                "token_endpoint_auth_method",
                "this is a public client (none): it has no secret to regenerate",
            )
            .into());
        }
        let secret = client_secret::generate();
        let old = client.secret_hash.replace(client_secret::hash(ctx.secret_key, secret.secret()));
        let until = ctx.now.saturating_add(grace_seconds);
        (client.previous_secret_hash, client.previous_secret_expires_at) = match old {
            Some(old) if grace_seconds > 0 => (Some(old), Some(until)),
            _ => (None, None),
        };
        client.updated_at = ctx.now;
        if !store::clients::update_secret(conn, &client)? {
            return Err(ClientError::NotFound);
        }
        let mut details = serde_json::json!({ "grace_seconds": grace_seconds });
        if client.previous_secret_expires_at.is_some() {
            details["previous_secret_valid_until"] = serde_json::json!(until);
        }
        audit::record(conn, &event(ctx, AuditAction::ClientSecretRotated, client_id, details), ctx.now)?;
        Ok(WithSecret { client: ClientView::from(&client), client_secret: Some(secret) })
    })
}
