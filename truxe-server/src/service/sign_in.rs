//! Magic-link sign-in: request a link (rate limited per address, no user enumeration) and
//! redeem it (single use). Blocking calls; run them through `store::run`.

use base64::Engine;

use crate::config::MagicLinkLimit;
use crate::model::user::{Email, User};
use crate::oauth::client_secret::hmac_sha256;
use crate::secret::Secret;
use crate::service::users::{self as user_service, SignIn, UserError};
use crate::store::magic_links::{self, AddressLimit, Limited, MagicLink};
use crate::store::{AnyConnection, StoreError, users as user_store};

/// `server_secrets` name of the key magic-link tokens are hashed under.
pub const MAGIC_LINK_KEY: &str = "magic_link_hmac_key";

/// 256 random bits, base64url without padding.
pub const TOKEN_LEN: usize = 43;

pub fn new_token() -> Secret<String> {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    Secret::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// Whether a presented token has the shape of one of ours (checked before hashing anything).
pub fn is_plausible_token(token: &str) -> bool {
    token.len() == TOKEN_LEN && token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Hex HMAC-SHA256 of a token under the server key: what the `magic_links` table keeps.
pub fn hash_token(key: &[u8], token: &str) -> String {
    hmac_sha256(key, token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// What asking for a link led to. The person asking always sees the same page; only
/// [`LinkRequest::Send`] sends mail.
#[derive(Debug)]
pub enum LinkRequest {
    /// Mail `token` to `email`; `user_id` is the account's (`None`: open sign-up will create it).
    Send { email: String, token: Secret<String>, user_id: Option<String> },
    /// Too many links to this address lately.
    RateLimited,
    /// No account (and sign-up is closed), or the account is disabled.
    NoLink,
}

/// The parameters of [`request_link`] that come from configuration and the request.
#[derive(Debug, Clone)]
pub struct LinkParams<'a> {
    pub open_signup: bool,
    pub ttl_secs: i64,
    /// A local path, already checked by the caller.
    pub return_to: Option<&'a str>,
    pub ip: Option<&'a str>,
    /// The per-address limit (`None` when `RATE_LIMIT_ENABLED=false`).
    pub limit: Option<MagicLinkLimit>,
}

/// The store's form of a configured limit.
fn address_limit(limit: MagicLinkLimit) -> AddressLimit {
    AddressLimit {
        max: i64::from(limit.max),
        window_secs: i64::try_from(limit.window.as_secs()).unwrap_or(i64::MAX).max(1),
    }
}

/// Creates a link for an active account (or for an unknown address under open sign-up)
/// unless the address had its `params.limit` of links in the window already. The limit holds
/// under concurrency: parallel requests for one address never store (or send) more than it.
pub fn request_link(
    conn: &mut AnyConnection,
    key: &[u8],
    email: &Email,
    params: &LinkParams<'_>,
    now: i64,
) -> Result<LinkRequest, StoreError> {
    let user = user_store::find_by_email(conn, email.as_str())?;
    let user_id = match &user {
        Some(user) if user.is_active() => Some(user.user_id.clone()),
        Some(_) => return Ok(LinkRequest::NoLink),
        None if params.open_signup => None,
        None => return Ok(LinkRequest::NoLink),
    };
    let token = new_token();
    let stored = magic_links::insert_within_limit(
        conn,
        &MagicLink {
            token_hash: hash_token(key, token.secret()),
            email: email.as_str().to_string(),
            user_id: user_id.clone(),
            created_at: now,
            expires_at: now.saturating_add(params.ttl_secs.max(1)),
            consumed_at: None,
            return_to: params.return_to.map(str::to_string),
            ip: params.ip.map(str::to_string),
        },
        params.limit.map(address_limit),
    )?;
    Ok(match stored {
        Limited::Inserted => {
            LinkRequest::Send { email: email.as_str().to_string(), token, user_id: user_id.map(|id| id.to_string()) }
        }
        Limited::OverLimit => LinkRequest::RateLimited,
    })
}

/// Whether a link can still be used, without using it (the "Continue" page): the address it
/// signs into while it is usable, so a forwarded or planted link shows whose account it opens.
pub fn peek_link(conn: &mut AnyConnection, key: &[u8], token: &str, now: i64) -> Result<Option<String>, StoreError> {
    if !is_plausible_token(token) {
        return Ok(None);
    }
    Ok(magic_links::find(conn, &hash_token(key, token))?.filter(|link| link.is_usable(now)).map(|link| link.email))
}

/// What redeeming a link led to.
#[derive(Debug)]
pub enum Redeemed {
    /// Sign this user in, then continue at `return_to`.
    SignIn { user: User, return_to: Option<String> },
    /// Unknown, expired or already used.
    InvalidLink,
    /// The account was disabled after the link was sent.
    Disabled,
    /// The account was deleted after the link was sent (or sign-up was closed meanwhile).
    NoAccount,
}

/// Uses a link (once: of concurrent redemptions exactly one wins) and finds or, under open
/// sign-up, creates its account; the address is then verified.
pub fn redeem_link(
    conn: &mut AnyConnection,
    key: &[u8],
    token: &str,
    open_signup: bool,
    now: i64,
) -> Result<Redeemed, UserError> {
    if !is_plausible_token(token) {
        return Ok(Redeemed::InvalidLink);
    }
    let Some(link) = magic_links::consume(conn, &hash_token(key, token), now)? else {
        return Ok(Redeemed::InvalidLink);
    };
    Ok(match user_service::find_or_create_for_sign_in(conn, &link.email, open_signup, now)? {
        SignIn::Existing(user) | SignIn::Created(user) => Redeemed::SignIn { user, return_to: link.return_to },
        SignIn::Disabled(_) => Redeemed::Disabled,
        SignIn::NoAccount => Redeemed::NoAccount,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_plausible_and_hashed() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a.secret(), b.secret());
        assert!(is_plausible_token(a.secret()));
        for bad in ["", "short", &"+".repeat(TOKEN_LEN), &"a".repeat(TOKEN_LEN + 1), &"\u{0}".repeat(TOKEN_LEN)] {
            assert!(!is_plausible_token(bad), "{bad:?}");
        }
        let hash = hash_token(b"key", a.secret());
        assert_eq!(hash.len(), 64);
        assert_ne!(hash, hash_token(b"other", a.secret()));
        assert!(!hash.contains(a.secret().as_str()));
    }
}
