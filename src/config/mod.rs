//! Settings: defaults, `GATEHOUSE_*` environment variables, the TOML file, and the checks
//! that make the service refuse an unsafe configuration instead of warning about it.
//!
//! Each setting is declared once, with [`crate::declare::group!`], in the group of the
//! part that reads it: the service's [`TokenSettings`] and [`Lockout`], the HTTP layer's
//! [`HttpSettings`] and [`RateLimits`], and here what `startup` and the CLI read
//! ([`ServerSettings`], [`StorageSettings`]). This module assembles the groups; it is
//! the top of the crate with `startup` and `cli`, and nothing below imports it.

mod file;
mod server;
mod storage;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::crypto::password::PasswordCost;
use crate::declare::{Group, Invalid, Setting};
use crate::http::client_ip::Cidr;
pub use crate::http::limiter::{RateLimits, Tier};
pub use crate::http::settings::HttpSettings;
pub use crate::service::mail::settings::MailSettings;
pub use crate::service::mfa::MfaSettings;
pub use crate::service::passkeys::WebauthnSettings;
pub use crate::service::policy::{Lockout, Policy, TokenSettings};
use crate::storage::DatabaseSettings;

pub use self::server::ServerSettings;
pub use self::storage::{Database, MISSING_KEK, StorageSettings};

/// The whole configuration, grouped by the part that reads each group. Only `startup`
/// and the CLI hold it; each layer below receives its own group or a value made from it.
#[derive(Clone, Debug)]
pub struct Settings {
    pub server: ServerSettings,
    pub storage: StorageSettings,
    pub tokens: TokenSettings,
    pub lockout: Lockout,
    pub mfa: MfaSettings,
    pub http: HttpSettings,
    pub rate_limits: RateLimits,
    /// Mail (#19): off unless `GATEHOUSE_SMTP_URL` is set.
    pub mail: MailSettings,
    /// Passkeys (#21): off unless `GATEHOUSE_WEBAUTHN_RP_ID` is set.
    pub webauthn: WebauthnSettings,
    /// Argon2id cost. Production parameters unless code sets it: no variable maps here.
    pub password_cost: PasswordCost,
}

/// Every setting, in the order of the README's table and of `config check`.
pub fn settings() -> impl Iterator<Item = &'static Setting> {
    [
        ServerSettings::SETTINGS,
        StorageSettings::SETTINGS,
        TokenSettings::SETTINGS,
        Lockout::SETTINGS,
        MfaSettings::SETTINGS,
        HttpSettings::SETTINGS,
        RateLimits::SETTINGS,
        MailSettings::SETTINGS,
        WebauthnSettings::SETTINGS,
    ]
    .into_iter()
    .flatten()
}

#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: &str, message: impl Into<String>) -> Self {
        Self {
            key: key.to_owned(),
            message: message.into(),
        }
    }
}

impl From<Invalid> for ConfigError {
    fn from(e: Invalid) -> Self {
        Self::new(e.env, e.message)
    }
}

impl Default for Settings {
    /// Every setting at its declared default.
    fn default() -> Self {
        // The declared defaults are constants (and the core count, a number ≥ 1), and
        // `every_declared_default_parses_and_is_valid` runs each through its parser.
        #[allow(clippy::expect_used)]
        Self::overlay(|_| None).expect("the declared defaults parse")
    }
}

impl Settings {
    /// Settings for tests: a temp directory, a random port, cheap Argon2, no per-IP limits.
    pub fn for_tests(dir: &Path) -> Self {
        let mut s = Self::default();
        s.server.bind = "127.0.0.1:0".into();
        s.server.keys_dir = dir.join("keys");
        s.server.hash_workers = 2;
        s.server.http_workers = 2;
        s.storage.database = Database::Sqlite(dir.join("gatehouse.db"));
        s.storage.db_readers = 4;
        s.tokens.issuer = "http://127.0.0.1".into();
        s.tokens.audience = "gatehouse-tests".into();
        s.password_cost = PasswordCost::INSECURE_FOR_TESTS;
        s.rate_limits.enabled = false;
        s
    }

    /// Defaults overlaid by `GATEHOUSE_*` environment variables, then validated.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Defaults, overlaid by the TOML file (if any), overlaid by `GATEHOUSE_*` variables.
    /// The file uses the variables' names without the prefix, in lower case
    /// (`access_ttl = "15m"`, `cors_origins = ["https://app.example.com"]`).
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, |key| std::env::var(key).ok())
    }

    /// [`Settings::load`] with `env` for the environment. A refused value that came from
    /// the file is named as the file says it (`/etc/gatehouse.toml: access_ttl`), not by
    /// a variable its author never wrote.
    fn load_with(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let from_file = match file {
            Some(path) => file::read_toml(path)?,
            None => std::collections::HashMap::new(),
        };
        Self::from_lookup(|key| env(key).or_else(|| from_file.get(key).cloned())).map_err(
            |e| match (file, settings().find(|s| s.env == e.key)) {
                (Some(path), Some(setting))
                    if env(&e.key).is_none() && from_file.contains_key(&e.key) =>
                {
                    ConfigError::new(
                        &format!("{}: {}", path.display(), setting.file_key()),
                        e.message,
                    )
                }
                _ => e,
            },
        )
    }

    /// [`Settings::load`] without the checks: for advice on a refused configuration
    /// (which database a missing setting is about), never to run with.
    pub fn load_unchecked(file: Option<&Path>) -> Result<Self, ConfigError> {
        let from_file = match file {
            Some(path) => file::read_toml(path)?,
            None => std::collections::HashMap::new(),
        };
        Self::overlay(|key| {
            std::env::var(key)
                .ok()
                .or_else(|| from_file.get(key).cloned())
        })
    }

    /// Defaults overlaid by whatever `lookup` knows (keys are `GATEHOUSE_*` names), then
    /// validated.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let s = Self::overlay(lookup)?;
        s.validate()?;
        Ok(s)
    }

    /// Each setting parsed once, from `lookup` or else from its default.
    fn overlay(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut value = |setting: &'static Setting| {
            // Empty means unset: `GATEHOUSE_X=` in an env file asks for the default.
            lookup(setting.env)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| setting.default_value())
        };
        Ok(Self {
            server: Group::read(&mut value)?,
            storage: Group::read(&mut value)?,
            tokens: Group::read(&mut value)?,
            lockout: Group::read(&mut value)?,
            mfa: Group::read(&mut value)?,
            http: Group::read(&mut value)?,
            rate_limits: Group::read(&mut value)?,
            mail: Group::read(&mut value)?,
            webauthn: Group::read(&mut value)?,
            password_cost: PasswordCost::PRODUCTION,
        })
    }

    /// Refuses settings that would make the service unsafe or broken, naming the setting
    /// and the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.check()?;
        self.storage.check()?;
        self.tokens.check()?;
        self.lockout.check()?;
        self.mfa.check()?;
        self.http.check()?;
        self.rate_limits.check()?;
        self.mail.check()?;
        self.webauthn.check()?;
        Ok(())
    }

    /// The effective settings as `(name, value)` lines for `config check`. Nothing here is
    /// secret: keys and the refresh secret live in files and are never printed.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        [
            self.server.describe(),
            self.storage.describe(),
            self.tokens.describe(),
            self.lockout.describe(),
            self.mfa.describe(),
            self.http.describe(),
            self.rate_limits.describe(),
            self.mail.describe(),
            self.webauthn.describe(),
        ]
        .concat()
    }

    /// Settings that are allowed but probably a mistake, one sentence each, for
    /// `config check`.
    pub fn warnings(&self) -> Vec<String> {
        // Trusting a whole range trusts every client in it to name its own address,
        // and with it to pick its rate-limit and lockout buckets.
        const BROAD: [&str; 6] = [
            "0.0.0.0/0",
            "::/0",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fc00::/7",
        ];
        let unused_kek = (matches!(self.storage.database, Database::Sqlite(_))
            && self.storage.key_encryption_key_file.is_some())
        .then(|| {
            "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE is set but the database is SQLite: keys \
             stay in GATEHOUSE_KEYS_DIR and the file is not read"
                .to_owned()
        });
        // On SQLite one process serves the file, so there are no replicas to multiply
        // the limits: the warning would only ask for a Redis that changes nothing.
        let replicated = !matches!(self.storage.database, Database::Sqlite(_));
        let in_memory_limits = (replicated
            && self.rate_limits.enabled
            && self.rate_limits.store.is_none())
        .then(|| {
            "GATEHOUSE_RATE_LIMIT_STORE is unset: per-IP limits are counted in this process, \
                 so with N replicas behind a load balancer a client gets N times the configured \
                 limits; set it to a redis:// URL shared by the replicas"
                .to_owned()
        });
        self.http
            .trusted_proxies
            .iter()
            .filter_map(|proxy| {
                let range = BROAD.iter().copied().find(|range| {
                    Cidr::parse(range).is_some_and(|r| {
                        proxy.prefix <= r.prefix
                            && proxy.addr.is_ipv4() == r.addr.is_ipv4()
                            && proxy.contains(r.addr)
                    })
                })?;
                Some(format!(
                    "GATEHOUSE_TRUSTED_PROXIES: {}/{} trusts all of {range}: any client there can \
                     forge its address and escape rate limits and lockout; list only your proxies",
                    proxy.addr, proxy.prefix
                ))
            })
            .chain(unused_kek)
            .chain(in_memory_limits)
            .chain((!self.mfa.admin_mfa_required).then(|| {
                "GATEHOUSE_ADMIN_MFA is off: an admin's password alone opens the admin API; \
                 set it to `required` once every admin has enrolled a second factor"
                    .to_owned()
            }))
            .chain(self.mail.warnings())
            .collect()
    }

    /// One warning per `GATEHOUSE_*` name in `names` that no setting reads, with the
    /// declared name it is closest to when it looks like a typo of one. A warning, not
    /// an error like an unknown key in the file: other tools may share the prefix in
    /// the same environment, but `GATEHOUSE_ACESS_TTL=5m` must not pass unnoticed while
    /// the default stays in force.
    pub fn unknown_variables(names: impl IntoIterator<Item = String>) -> Vec<String> {
        // Read before the settings (by clap and the log setup), so not declared here.
        const OTHERS: [&str; 2] = ["GATEHOUSE_CONFIG", "GATEHOUSE_LOG_FORMAT"];
        let mut unknown: Vec<String> = names
            .into_iter()
            .filter(|n| n.starts_with("GATEHOUSE_"))
            .filter(|n| !OTHERS.contains(&n.as_str()) && !settings().any(|s| s.env == n))
            .collect();
        unknown.sort();
        unknown
            .into_iter()
            .map(|name| {
                let near = settings()
                    .map(|s| s.env)
                    .chain(OTHERS)
                    .map(|known| (edit_distance(&name, known), known))
                    .min()
                    .filter(|(d, _)| *d <= 2);
                match near {
                    Some((_, known)) => format!(
                        "{name} is not a gatehouse setting and is ignored: did you mean {known}?"
                    ),
                    None => format!("{name} is not a gatehouse setting and is ignored"),
                }
            })
            .collect()
    }

    /// The store to open, from `GATEHOUSE_DATABASE` and the settings of its backend.
    pub fn database_settings(&self) -> DatabaseSettings {
        self.storage.database_settings()
    }

    /// What the service's rules read.
    pub fn policy(&self) -> Policy {
        Policy {
            tokens: self.tokens.clone(),
            lockout: self.lockout,
            key_timing: self.key_timing(),
            mfa: self.mfa,
        }
    }

    /// How long keys stay published around a rotation.
    pub fn key_timing(&self) -> crate::crypto::lifecycle::Timing {
        crate::crypto::lifecycle::Timing {
            retire_after: self.tokens.access_ttl.as_secs() as i64 + crate::crypto::jwt::LEEWAY_SECS,
            publish_before_signing: (self.http.jwks_max_age + self.server.keys_reload_interval)
                .as_secs() as i64,
        }
    }

    /// The refresh-child secret lives beside the signing keys.
    pub fn refresh_secret_path(&self) -> PathBuf {
        self.server.keys_dir.join("refresh.secret")
    }
}

/// Levenshtein distance, for "did you mean" (names are short ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}
