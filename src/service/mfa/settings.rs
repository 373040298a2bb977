//! The second factor's settings, declared here (see [`crate::declare`]).

use std::time::Duration;

use crate::declare::{self, Fallback, group};

group! {
    /// How logins wait for their second factor, and who must have one.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct MfaSettings {
        /// How long an `mfa_token` (a login between its password and its code) lives.
        pub token_ttl: Duration {
            env: "GATEHOUSE_MFA_TOKEN_TTL",
            default: Fallback::Value("5m"),
            meaning: "lifetime of an `mfa_token` (password checked, code not yet), 1–15 minutes",
            parse: declare::duration,
            check: |s| {
                if s.token_ttl < declare::MINUTE || s.token_ttl > Duration::from_secs(900) {
                    return Err("must be between 1 and 15 minutes: a login half done is a \
                                password already proved"
                        .into());
                }
                Ok(())
            },
            show: declare::secs,
        },
        /// Wrong second-factor codes per user per `GATEHOUSE_LOCKOUT_WINDOW`.
        pub max_failures: u32 {
            env: "GATEHOUSE_MFA_MAX_FAILURES",
            default: Fallback::Value("10"),
            meaning: "wrong MFA codes per user per lockout window before 429 (a counter of its \
                      own, shared by every replica through the database)",
            parse: declare::count,
            check: |s| {
                if s.max_failures == 0 {
                    return Err("must be at least 1".into());
                }
                Ok(())
            },
            show: u32::to_string,
        },
        /// Admins must have opened their session with a second factor.
        pub admin_mfa_required: bool {
            env: "GATEHOUSE_ADMIN_MFA",
            default: Fallback::Value("off"),
            meaning: "`required`: every /v1/admin endpoint answers 403 `mfa_required` to an \
                      admin whose session was opened without a second factor; `off`",
            parse: |v| match v.trim() {
                "required" => Ok(true),
                "off" => Ok(false),
                _ => Err("must be `required` or `off`".into()),
            },
            show: |on| if *on { "required".into() } else { "off".into() },
        },
    }
}
