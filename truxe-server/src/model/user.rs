//! An end user (the person who signs in) and the email address that identifies them.

use std::fmt;

use base64::Engine;

pub use super::UserId;

pub const USER_ID_PREFIX: &str = "usr_";

/// Longest address accepted: RFC 5321 §4.5.3.1.3 limits a path to 256 octets including the
/// angle brackets, which leaves 254 for the address (RFC 3696 errata 1690).
pub const MAX_EMAIL_LEN: usize = 254;
/// RFC 5321 §4.5.3.1.1.
pub const MAX_LOCAL_PART_LEN: usize = 64;
/// RFC 1035 §2.3.4.
const MAX_LABEL_LEN: usize = 63;

pub const MAX_DISPLAY_NAME_CHARS: usize = 200;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserStatus {
    Active,
    /// Cannot sign in; existing sessions and tokens are the caller's to revoke.
    Disabled,
}

impl UserStatus {
    pub const ALL: [UserStatus; 2] = [UserStatus::Active, UserStatus::Disabled];

    pub fn as_str(self) -> &'static str {
        match self {
            UserStatus::Active => "active",
            UserStatus::Disabled => "disabled",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// A user row. The TOTP secret is not part of it: only `service::mfa` reads that column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub user_id: UserId,
    /// Normalised (see [`Email::parse`]).
    pub email: String,
    pub display_name: Option<String>,
    pub email_verified: bool,
    pub status: UserStatus,
    /// A confirmed TOTP enrolment (a pending one does not count).
    pub mfa_enabled: bool,
    pub mfa_enrolled_at: Option<i64>,
    /// Consecutive wrong second-factor codes since the last success or lockout.
    pub mfa_failed_attempts: i32,
    pub mfa_locked_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl User {
    pub fn is_active(&self) -> bool {
        self.status == UserStatus::Active
    }
}

/// `usr_` followed by 128 random bits, base64url without padding.
pub fn new_user_id() -> UserId {
    let mut bytes = [0u8; 16];
    rand::fill(&mut bytes);
    format!("{USER_ID_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)).into()
}

/// Whether a presented user id could be one of ours (see [`UserId::parse`]).
pub fn is_plausible_user_id(value: &str) -> bool {
    UserId::parse(value).is_some()
}

/// Why an email address was refused. The message never repeats the address (it may be
/// kilobytes of attacker input); callers quote it themselves when that helps.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("the email address is empty")]
    Empty,
    #[error("the email address is longer than {MAX_EMAIL_LEN} characters")]
    TooLong,
    #[error("the email address must contain exactly one '@'")]
    At,
    #[error("the part before '@' must be 1 to {MAX_LOCAL_PART_LEN} characters")]
    LocalPartLength,
    #[error("the email address contains a space, a control character or one of \" ( ) , : ; < > [ \\ ]")]
    Character,
    #[error("the part before '@' must not start or end with '.' or contain \"..\"")]
    Dots,
    #[error("the domain must be a name with a dot, such as example.com")]
    Domain,
}

/// A normalised, plausible email address (RFC 5322 `addr-spec`, dot-atom form).
///
/// Normalisation: surrounding whitespace is trimmed and the whole address, the local part
/// included, is lowercased. RFC 5321 lets a server treat the local part as case-sensitive, but no
/// mainstream provider does, and treating `Alice@x` and `alice@x` as two accounts invites
/// duplicates and look-alike sign-ups; the mail is then sent to the lowercased address. Quoted
/// local parts (`"a b"@x`) and address literals (`a@[192.0.2.1]`) are refused: nobody signs in
/// with them, and they are where parsers disagree.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(input: &str) -> Result<Email, EmailError> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(EmailError::Empty);
        }
        // Checked on the input as well, so that lowercasing cannot be made to allocate for
        // an oversized value (and some characters grow when lowercased).
        if trimmed.len() > MAX_EMAIL_LEN {
            return Err(EmailError::TooLong);
        }
        let email = trimmed.to_lowercase();
        if email.len() > MAX_EMAIL_LEN {
            return Err(EmailError::TooLong);
        }
        if email.chars().any(|c| c.is_whitespace() || c.is_control() || "\"(),:;<>[\\]".contains(c)) {
            return Err(EmailError::Character);
        }
        let mut parts = email.split('@');
        let (Some(local), Some(domain), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(EmailError::At);
        };
        if local.is_empty() || local.len() > MAX_LOCAL_PART_LEN {
            return Err(EmailError::LocalPartLength);
        }
        if local.starts_with('.') || local.ends_with('.') || local.contains("..") {
            return Err(EmailError::Dots);
        }
        if !is_plausible_domain(domain) {
            return Err(EmailError::Domain);
        }
        Ok(Email(email))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map_or("", |(_, domain)| domain)
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// At least two labels; each 1–63 letters, digits or hyphens (any script, for IDNs written in
/// Unicode), not starting or ending with a hyphen; the top-level label not all digits.
fn is_plausible_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_LEN
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_alphanumeric() || c == '-')
        })
        && labels.last().is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()))
}

/// Trims a display name; empty means none. Refuses control characters and overlong names.
pub fn normalize_display_name(input: Option<&str>) -> Result<Option<String>, String> {
    let Some(name) = input.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > MAX_DISPLAY_NAME_CHARS {
        return Err(format!("the display name is longer than {MAX_DISPLAY_NAME_CHARS} characters"));
    }
    if name.chars().any(char::is_control) {
        return Err("the display name contains a control character".to_string());
    }
    Ok(Some(name.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip() {
        for s in UserStatus::ALL {
            assert_eq!(UserStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(UserStatus::parse("Active"), None);
    }

    #[test]
    fn user_ids() {
        let (a, b) = (new_user_id(), new_user_id());
        assert!(a.starts_with("usr_"));
        assert_eq!(a.len(), 4 + 22);
        assert_ne!(a, b);
        assert!(is_plausible_user_id(&a));
        for bad in ["", "usr_", "cl_abc", "usr_a b", "usr_a'", &format!("usr_{}", "a".repeat(65))] {
            assert!(!is_plausible_user_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn emails_are_trimmed_and_lowercased() {
        let email = Email::parse("  Alice.Smith+Tag@Example.COM \n").expect("valid");
        assert_eq!(email.as_str(), "alice.smith+tag@example.com");
        assert_eq!(email.domain(), "example.com");
        assert_eq!(Email::parse("ÉLODIE@Exämple.de").expect("valid").as_str(), "élodie@exämple.de");
        for ok in ["a@b.co", "o'brien@example.ie", "x_y-z@sub.example.co.uk", "1234@123.example"] {
            assert!(Email::parse(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn implausible_emails_are_refused() {
        let cases: &[(&str, EmailError)] = &[
            ("", EmailError::Empty),
            ("   ", EmailError::Empty),
            ("alice", EmailError::At),
            ("a@b@example.com", EmailError::At),
            ("@example.com", EmailError::LocalPartLength),
            ("alice@", EmailError::Domain),
            ("alice@localhost", EmailError::Domain),
            ("alice@example.", EmailError::Domain),
            ("alice@.example.com", EmailError::Domain),
            ("alice@exa_mple.com", EmailError::Domain),
            ("alice@-example.com", EmailError::Domain),
            ("alice@192.168.0.1", EmailError::Domain),
            ("al ice@example.com", EmailError::Character),
            ("alice@exam\u{7}ple.com", EmailError::Character),
            ("\"alice\"@example.com", EmailError::Character),
            ("alice@[192.0.2.1]", EmailError::Character),
            ("<alice@example.com>", EmailError::Character),
            ("a,b@example.com", EmailError::Character),
            (".alice@example.com", EmailError::Dots),
            ("alice.@example.com", EmailError::Dots),
            ("al..ice@example.com", EmailError::Dots),
        ];
        for (input, expected) in cases {
            assert_eq!(Email::parse(input).as_ref(), Err(expected), "{input:?}");
        }
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(Email::parse(&long_local), Err(EmailError::LocalPartLength));
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(64))).is_ok());
        let long_domain =
            format!("a@{}.com", ["b".repeat(63), "c".repeat(63), "d".repeat(63), "e".repeat(60)].join("."));
        assert_eq!(Email::parse(&long_domain), Err(EmailError::TooLong));
        let long_label = format!("a@{}.com", "b".repeat(64));
        assert_eq!(Email::parse(&long_label), Err(EmailError::Domain));
    }

    #[test]
    fn display_names() {
        assert_eq!(normalize_display_name(None), Ok(None));
        assert_eq!(normalize_display_name(Some("  ")), Ok(None));
        assert_eq!(normalize_display_name(Some(" Alice ")), Ok(Some("Alice".to_string())));
        assert!(normalize_display_name(Some("a\u{0}b")).is_err());
        assert!(normalize_display_name(Some(&"x".repeat(201))).is_err());
    }
}
