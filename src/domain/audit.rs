//! What the audit log records: a closed set of event kinds, so a typo cannot invent one
//! and a filter can name only real ones.

macro_rules! kinds {
    ($($variant:ident => $name:literal,)+) => {
        /// One kind of security event.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum AuditKind {
            $($variant,)+
        }

        impl AuditKind {
            pub const ALL: &[AuditKind] = &[$(AuditKind::$variant,)+];

            /// The name stored and shown in the API (`type` of an audit event).
            pub fn as_str(self) -> &'static str {
                match self {
                    $(AuditKind::$variant => $name,)+
                }
            }

            pub fn parse(s: &str) -> Option<Self> {
                match s {
                    $($name => Some(AuditKind::$variant),)+
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    Signup => "signup",
    LoginSucceeded => "login_succeeded",
    LoginFailed => "login_failed",
    LoginLocked => "login_locked",
    RefreshReuseDetected => "refresh_reuse_detected",
    Logout => "logout",
    SessionRevoked => "session_revoked",
    PasswordChanged => "password_changed",
    AccountDeleted => "account_deleted",
    UserUpdated => "user_updated",
    KeyGenerated => "key_generated",
    KeyRotated => "key_rotated",
    KeyRetired => "key_retired",
    KeyAdopted => "key_adopted",
    ClientCreated => "client_created",
    ClientDeleted => "client_deleted",
    ClientSecretRotated => "client_secret_rotated",
    ClientAuthFailed => "client_auth_failed",
    ClientAuthLocked => "client_auth_locked",
    MfaEnrolmentStarted => "mfa_enrolment_started",
    MfaEnabled => "mfa_enabled",
    MfaDisabled => "mfa_disabled",
    MfaReset => "mfa_reset",
    MfaRecoveryCodesRegenerated => "mfa_recovery_codes_regenerated",
    MfaRecoveryCodeUsed => "mfa_recovery_code_used",
    MfaChallengeIssued => "mfa_challenge_issued",
    MfaFailed => "mfa_failed",
    MfaLocked => "mfa_locked",
    MailQueued => "mail_queued",
    MailSent => "mail_sent",
    MailFailed => "mail_failed",
    EmailVerified => "email_verified",
    PasswordResetRequested => "password_reset_requested",
    PasswordReset => "password_reset",
    EmailChanged => "email_changed",
    PasskeyRegistered => "passkey_registered",
    PasskeyRemoved => "passkey_removed",
    PasskeyFailed => "passkey_failed",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_parses_back_from_its_name() {
        for kind in AuditKind::ALL {
            assert_eq!(AuditKind::parse(kind.as_str()), Some(*kind));
        }
        assert_eq!(AuditKind::parse("login"), None);
    }
}
