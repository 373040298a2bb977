use chrono::{DateTime, Utc};

use super::{Amr, FamilyId};

/// Why a refresh-token family stopped working.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    ReuseDetected,
    Admin,
    PasswordChange,
    /// A password reset by mail token (every family of the user).
    PasswordReset,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RevokeReason::Logout => "logout",
            RevokeReason::ReuseDetected => "reuse_detected",
            RevokeReason::Admin => "admin",
            RevokeReason::PasswordChange => "password_change",
            RevokeReason::PasswordReset => "password_reset",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "logout" => Some(RevokeReason::Logout),
            "reuse_detected" => Some(RevokeReason::ReuseDetected),
            "admin" => Some(RevokeReason::Admin),
            "password_change" => Some(RevokeReason::PasswordChange),
            "password_reset" => Some(RevokeReason::PasswordReset),
            _ => None,
        }
    }
}

/// One refresh-token family, as listed to its owner or an admin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    pub id: FamilyId,
    pub created_at: DateTime<Utc>,
    pub last_used_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_reason: Option<RevokeReason>,
    pub user_agent: Option<String>,
    pub ip: Option<String>,
    /// How the login that opened it was authenticated.
    pub amr: Amr,
}
