//! Newtypes for the identifiers that travel between layers: a client id, a user id, a grant id
//! and a token's `jti`. Each is a plain string on the wire (serde) and in the database (diesel
//! `Text`), and derefs to `str` so that `&id` goes wherever a `&str` id is taken.

use std::fmt;
use std::ops::Deref;

use diesel::backend::Backend;
use diesel::deserialize::{self, FromSql};
use diesel::serialize::{self, Output, ToSql};
use diesel::sql_types::Text;

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(
            Debug,
            Clone,
            Default,
            PartialEq,
            Eq,
            Hash,
            PartialOrd,
            Ord,
            serde::Serialize,
            serde::Deserialize,
            diesel::expression::AsExpression,
            diesel::deserialize::FromSqlRow,
        )]
        #[serde(transparent)]
        #[diesel(sql_type = diesel::sql_types::Text)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }

            pub fn into_string(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::borrow::Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                $name(value)
            }
        }

        impl From<&str> for $name {
            fn from(value: &str) -> Self {
                $name(value.to_owned())
            }
        }

        impl From<&String> for $name {
            fn from(value: &String) -> Self {
                $name(value.clone())
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }

        impl From<&$name> for String {
            fn from(value: &$name) -> Self {
                value.0.clone()
            }
        }

        impl From<$name> for serde_json::Value {
            fn from(value: $name) -> Self {
                serde_json::Value::String(value.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                &self.0 == other
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl PartialEq<$name> for &str {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl<DB: Backend> ToSql<Text, DB> for $name
        where
            str: ToSql<Text, DB>,
        {
            fn to_sql<'b>(&'b self, out: &mut Output<'b, '_, DB>) -> serialize::Result {
                self.0.as_str().to_sql(out)
            }
        }

        impl<DB: Backend> FromSql<Text, DB> for $name
        where
            String: FromSql<Text, DB>,
        {
            fn from_sql(bytes: DB::RawValue<'_>) -> deserialize::Result<Self> {
                String::from_sql(bytes).map($name)
            }
        }
    };
}

string_id!(
    /// An OAuth client's `client_id` (`cl_…`).
    ClientId
);
string_id!(
    /// A user's id (`usr_…`).
    UserId
);
string_id!(
    /// A grant's id (`grt_…`): what a code redemption starts and refresh tokens hang off.
    GrantId
);
string_id!(
    /// A token's `jti`.
    Jti
);

/// `prefix` followed by 1 to 64 base64url characters, and nothing longer.
fn is_prefixed_token(value: &str, prefix: &str) -> bool {
    value.len() <= prefix.len() + 64
        && value.strip_prefix(prefix).is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl ClientId {
    /// A presented client_id that could be one of ours; anything else (NUL bytes, SQL
    /// metacharacters, kilobytes of text) is refused before it reaches the database.
    pub fn parse(value: &str) -> Option<ClientId> {
        is_prefixed_token(value, super::client::CLIENT_ID_PREFIX).then(|| ClientId::from(value))
    }
}

impl UserId {
    /// A presented user id that could be one of ours, before it reaches the database.
    pub fn parse(value: &str) -> Option<UserId> {
        is_prefixed_token(value, super::user::USER_ID_PREFIX).then(|| UserId::from(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_strings_on_the_wire() {
        let id = ClientId::from("cl_x");
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"cl_x\"");
        assert_eq!(serde_json::from_str::<ClientId>("\"cl_x\"").unwrap(), id);
        assert_eq!(id, "cl_x");
        assert_eq!(id.len(), 4);
        assert_eq!(id.to_string(), "cl_x");
    }

    #[test]
    fn parse_refuses_the_implausible() {
        assert!(ClientId::parse("cl_abc").is_some());
        assert!(ClientId::parse("usr_abc").is_none());
        assert!(UserId::parse("usr_abc").is_some());
        assert!(UserId::parse("usr_").is_none());
    }
}
