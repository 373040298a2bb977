use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Email, UserId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A user as the API shows it: never the password hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub role: Role,
    pub disabled: bool,
    /// The address was proven by a mail token (verification, email change or reset).
    pub email_verified: bool,
    pub created_at: DateTime<Utc>,
    /// A second factor is on: a password alone no longer opens a session.
    pub mfa_enabled: bool,
}
