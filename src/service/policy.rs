//! What the rules read, declared here (see [`crate::declare`]): tokens' lifetimes and
//! audience, the lockout limits. [`Policy`] is the one value the service receives;
//! nothing here depends on `config`, which only assembles it.

use std::time::Duration;

use crate::crypto::lifecycle::Timing;
use crate::declare::{self, Fallback, group};

/// Everything the service's rules read, and nothing else.
#[derive(Clone, Debug)]
pub struct Policy {
    pub tokens: TokenSettings,
    pub lockout: Lockout,
    /// How long keys stay published around a rotation.
    pub key_timing: Timing,
    /// Second factors: the `mfa_token`'s life, the wrong-code limit, admins' MFA.
    pub mfa: super::mfa::MfaSettings,
}

group! {
    /// The tokens the service issues and accepts.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct TokenSettings {
        /// `iss` of every access token, and the base of the discovery document's URLs.
        pub issuer: String {
            env: "GATEHOUSE_ISSUER",
            default: Fallback::Value("http://127.0.0.1:8080"),
            meaning: "`iss` of tokens, base of discovery URLs; `https://` required unless the \
                      host is loopback",
            parse: |v| Ok(v.trim().trim_end_matches('/').to_owned()),
            check: |s| declare::validate_url(&s.issuer),
            show: Clone::clone,
        },
        pub audience: String {
            env: "GATEHOUSE_AUDIENCE",
            default: Fallback::Value("gatehouse"),
            meaning: "`aud` of tokens",
            parse: declare::text,
            check: |s| {
                if s.audience.is_empty() {
                    return Err("must not be empty".into());
                }
                Ok(())
            },
            show: Clone::clone,
        },
        pub access_ttl: Duration {
            env: "GATEHOUSE_ACCESS_TTL",
            default: Fallback::Value("15m"),
            meaning: "access-token lifetime, 1–60 minutes",
            parse: declare::duration,
            check: |s| {
                if s.access_ttl < declare::MINUTE || s.access_ttl > Duration::from_secs(3600) {
                    return Err("must be between 1 and 60 minutes: access tokens cannot be \
                                revoked, so their lifetime bounds how long a stolen one works"
                        .into());
                }
                Ok(())
            },
            show: declare::secs,
        },
        /// Idle lifetime of one refresh token.
        pub refresh_ttl: Duration {
            env: "GATEHOUSE_REFRESH_TTL",
            default: Fallback::Value("12h"),
            meaning: "idle lifetime of one refresh token",
            parse: declare::duration,
            check: |s| declare::at_least_a_minute(s.refresh_ttl),
            show: declare::secs,
        },
        /// Absolute lifetime of a family (a login), whatever its use.
        pub family_ttl: Duration {
            env: "GATEHOUSE_FAMILY_TTL",
            default: Fallback::Value("7d"),
            meaning: "absolute lifetime of a login (family), at most 366 days",
            parse: declare::duration,
            check: |s| {
                if s.family_ttl < s.refresh_ttl {
                    return Err("must be at least GATEHOUSE_REFRESH_TTL (a family outlives \
                                each of its tokens)"
                        .into());
                }
                if s.family_ttl > Duration::from_secs(366 * 86400) {
                    return Err("must be at most 366 days".into());
                }
                Ok(())
            },
            show: declare::secs,
        },
        pub refresh_reuse_grace: Duration {
            env: "GATEHOUSE_REFRESH_REUSE_GRACE",
            default: Fallback::Value("10s"),
            meaning: "reuse grace (see below), `0` turns it off, at most 2 minutes",
            parse: declare::duration,
            check: |s| {
                if s.refresh_reuse_grace > Duration::from_secs(120) {
                    return Err("must be at most 2 minutes: a longer grace lets a thief replay \
                                a stolen token"
                        .into());
                }
                Ok(())
            },
            show: declare::secs,
        },
        /// How long a client's replaced secret keeps working after a rotation.
        pub client_secret_overlap: Duration {
            env: "GATEHOUSE_CLIENT_SECRET_OVERLAP",
            default: Fallback::Value("24h"),
            meaning: "how long a service client's old secret keeps working after \
                      `POST /v1/admin/clients/{client_id}/secret`, `0` ends it at once, at most 30 days",
            parse: declare::duration,
            check: |s| {
                if s.client_secret_overlap > Duration::from_secs(30 * 86400) {
                    return Err("must be at most 30 days: a replaced secret that works for \
                                longer is a second secret nobody rotates"
                        .into());
                }
                Ok(())
            },
            show: declare::secs,
        },
    }
}

group! {
    /// How many failed logins a window allows.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Lockout {
        /// Failed logins per normalized email per window (whether or not the account
        /// exists).
        pub max_failures: u32 {
            env: "GATEHOUSE_LOCKOUT_MAX_FAILURES",
            default: Fallback::Value("5"),
            meaning: "failed logins per email per window before 429 `too_many_attempts`",
            parse: declare::count,
            show: u32::to_string,
        },
        /// Failed logins per client IP per window.
        pub max_failures_per_ip: u32 {
            env: "GATEHOUSE_LOCKOUT_MAX_FAILURES_PER_IP",
            default: Fallback::Value("100"),
            meaning: "failed logins per client IP per window",
            parse: declare::count,
            show: u32::to_string,
        },
        pub window: Duration {
            env: "GATEHOUSE_LOCKOUT_WINDOW",
            default: Fallback::Value("15m"),
            meaning: "lockout window",
            parse: declare::duration,
            check: |s| declare::at_least_a_minute(s.window),
            show: declare::secs,
        },
    }
}
