//! Settings: defaults, `GATEHOUSE_*` environment variables, and the checks that make the
//! service refuse an unsafe configuration instead of warning about it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::crypto::password::PasswordCost;
use crate::http::client_ip::{Cidr, ClientIpHeader};
use crate::storage::sqlite::Synchronous;

#[derive(Clone, Debug)]
pub struct Settings {
    pub bind: String,
    pub database: PathBuf,
    pub keys_dir: PathBuf,
    /// `iss` of every access token, and the base of the discovery document's URLs.
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    /// Idle lifetime of one refresh token.
    pub refresh_ttl: Duration,
    /// Absolute lifetime of a family (a login), whatever its use.
    pub family_ttl: Duration,
    pub refresh_reuse_grace: Duration,
    pub cors_origins: Vec<String>,
    pub jwks_max_age: Duration,
    pub sqlite_synchronous: Synchronous,
    /// Argon2id cost. Production parameters unless code sets it: no variable maps here.
    pub password_cost: PasswordCost,
    /// How many Argon2 computations may run at once.
    pub hash_workers: usize,
    pub http_workers: usize,
    pub db_readers: u32,
    pub rate_limits: RateLimits,
    pub lockout: Lockout,
    /// Proxies whose hop in `client_ip_header` is believed.
    pub trusted_proxies: Vec<Cidr>,
    /// The one header the trusted proxies write the client's address in.
    pub client_ip_header: ClientIpHeader,
    /// Send `Strict-Transport-Security` (only when clients reach us over TLS).
    pub hsts: bool,
    pub audit_retention: Duration,
    pub prune_interval: Duration,
    /// How often a running server re-reads the keys directory (SIGHUP re-reads at once).
    pub keys_reload_interval: Duration,
    /// A request body must arrive within this time (slow-body clients get 408).
    pub body_timeout: Duration,
}

/// Per-IP request budgets, per tier: each allows `per_minute` on average and `burst` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateLimits {
    pub enabled: bool,
    /// signup, login, refresh, logout.
    pub auth: Tier,
    /// Authenticated writes (password change, revocations, admin changes).
    pub writes: Tier,
    /// Authenticated reads.
    pub reads: Tier,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tier {
    pub per_minute: u32,
    pub burst: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lockout {
    /// Failed logins per normalized email per window (whether or not the account exists).
    pub max_failures: u32,
    /// Failed logins per client IP per window.
    pub max_failures_per_ip: u32,
    pub window: Duration,
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            enabled: true,
            auth: Tier {
                per_minute: 10,
                burst: 5,
            },
            writes: Tier {
                per_minute: 30,
                burst: 10,
            },
            reads: Tier {
                per_minute: 300,
                burst: 60,
            },
        }
    }
}

impl Default for Lockout {
    fn default() -> Self {
        Self {
            max_failures: 5,
            max_failures_per_ip: 100,
            window: Duration::from_secs(15 * 60),
        }
    }
}

impl Default for Settings {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            bind: "127.0.0.1:8080".into(),
            database: PathBuf::from("./data/gatehouse.db"),
            keys_dir: PathBuf::from("./keys"),
            issuer: "http://127.0.0.1:8080".into(),
            audience: "gatehouse".into(),
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(12 * 3600),
            family_ttl: Duration::from_secs(7 * 86400),
            refresh_reuse_grace: Duration::from_secs(10),
            cors_origins: Vec::new(),
            jwks_max_age: Duration::from_secs(300),
            sqlite_synchronous: Synchronous::Normal,
            password_cost: PasswordCost::PRODUCTION,
            hash_workers: cores,
            http_workers: cores,
            db_readers: 8,
            rate_limits: RateLimits::default(),
            lockout: Lockout::default(),
            trusted_proxies: Vec::new(),
            client_ip_header: ClientIpHeader::XForwardedFor,
            hsts: false,
            audit_retention: Duration::from_secs(90 * 86400),
            prune_interval: Duration::from_secs(600),
            keys_reload_interval: Duration::from_secs(30),
            body_timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.to_owned(),
        message: message.into(),
    }
}

impl Settings {
    /// Settings for tests: a temp directory, a random port, cheap Argon2, no per-IP limits.
    pub fn for_tests(dir: &Path) -> Self {
        Self {
            bind: "127.0.0.1:0".into(),
            database: dir.join("gatehouse.db"),
            keys_dir: dir.join("keys"),
            issuer: "http://127.0.0.1".into(),
            audience: "gatehouse-tests".into(),
            password_cost: PasswordCost::INSECURE_FOR_TESTS,
            hash_workers: 2,
            http_workers: 2,
            db_readers: 4,
            rate_limits: RateLimits {
                enabled: false,
                ..RateLimits::default()
            },
            ..Self::default()
        }
    }

    /// Defaults overlaid by `GATEHOUSE_*` environment variables, then validated.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    /// Defaults, overlaid by the TOML file (if any), overlaid by `GATEHOUSE_*` variables.
    /// The file uses the variables' names without the prefix, in lower case
    /// (`access_ttl = "15m"`, `cors_origins = ["https://app.example.com"]`).
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let from_file = match file {
            Some(path) => read_toml(path)?,
            None => std::collections::HashMap::new(),
        };
        Self::from_lookup(|key| {
            std::env::var(key)
                .ok()
                .or_else(|| from_file.get(key).cloned())
        })
    }

    /// Defaults overlaid by whatever `lookup` knows (keys are `GATEHOUSE_*` names).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut s = Self::default();
        let get = |key: &str| lookup(key).filter(|v| !v.trim().is_empty());
        if let Some(v) = get("GATEHOUSE_BIND") {
            s.bind = v.trim().to_owned();
        }
        if let Some(v) = get("GATEHOUSE_DATABASE") {
            s.database = PathBuf::from(v);
        }
        if let Some(v) = get("GATEHOUSE_KEYS_DIR") {
            s.keys_dir = PathBuf::from(v);
        }
        if let Some(v) = get("GATEHOUSE_ISSUER") {
            s.issuer = v.trim().trim_end_matches('/').to_owned();
        }
        if let Some(v) = get("GATEHOUSE_AUDIENCE") {
            s.audience = v.trim().to_owned();
        }
        let duration = |key: &str, slot: &mut Duration| -> Result<(), ConfigError> {
            if let Some(v) = get(key) {
                *slot = parse_duration(&v).ok_or_else(|| {
                    err(
                        key,
                        format!("{v:?} is not a duration (examples: 90, 90s, 15m, 12h, 7d)"),
                    )
                })?;
            }
            Ok(())
        };
        duration("GATEHOUSE_ACCESS_TTL", &mut s.access_ttl)?;
        duration("GATEHOUSE_REFRESH_TTL", &mut s.refresh_ttl)?;
        duration("GATEHOUSE_FAMILY_TTL", &mut s.family_ttl)?;
        duration("GATEHOUSE_REFRESH_REUSE_GRACE", &mut s.refresh_reuse_grace)?;
        duration("GATEHOUSE_JWKS_MAX_AGE", &mut s.jwks_max_age)?;
        duration("GATEHOUSE_LOCKOUT_WINDOW", &mut s.lockout.window)?;
        duration("GATEHOUSE_AUDIT_RETENTION", &mut s.audit_retention)?;
        duration("GATEHOUSE_PRUNE_INTERVAL", &mut s.prune_interval)?;
        duration(
            "GATEHOUSE_KEYS_RELOAD_INTERVAL",
            &mut s.keys_reload_interval,
        )?;
        duration("GATEHOUSE_BODY_TIMEOUT", &mut s.body_timeout)?;
        duration(
            "GATEHOUSE_KEYS_RELOAD_INTERVAL",
            &mut s.keys_reload_interval,
        )?;
        if let Some(v) = lookup("GATEHOUSE_CORS_ORIGINS") {
            s.cors_origins = v
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect();
        }
        if let Some(v) = get("GATEHOUSE_SQLITE_SYNCHRONOUS") {
            s.sqlite_synchronous = Synchronous::parse(v.trim()).ok_or_else(|| {
                err(
                    "GATEHOUSE_SQLITE_SYNCHRONOUS",
                    format!("{v:?} is not `normal` or `full`"),
                )
            })?;
        }
        let number = |key: &str, slot: &mut u32, min: u32| -> Result<(), ConfigError> {
            if let Some(v) = get(key) {
                *slot = v
                    .trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n >= min)
                    .ok_or_else(|| err(key, format!("{v:?} is not a whole number ≥ {min}")))?;
            }
            Ok(())
        };
        let mut hash_workers = s.hash_workers as u32;
        number("GATEHOUSE_HASH_WORKERS", &mut hash_workers, 1)?;
        s.hash_workers = hash_workers as usize;
        let mut http_workers = s.http_workers as u32;
        number("GATEHOUSE_HTTP_WORKERS", &mut http_workers, 1)?;
        s.http_workers = http_workers as usize;
        number("GATEHOUSE_DB_READERS", &mut s.db_readers, 1)?;
        number(
            "GATEHOUSE_LOCKOUT_MAX_FAILURES",
            &mut s.lockout.max_failures,
            1,
        )?;
        number(
            "GATEHOUSE_LOCKOUT_MAX_FAILURES_PER_IP",
            &mut s.lockout.max_failures_per_ip,
            1,
        )?;
        if let Some(v) = get("GATEHOUSE_RATE_LIMITS") {
            s.rate_limits.enabled = match v.trim().to_ascii_lowercase().as_str() {
                "on" | "true" | "1" => true,
                "off" | "false" | "0" => false,
                _ => {
                    return Err(err(
                        "GATEHOUSE_RATE_LIMITS",
                        format!("{v:?} is not on or off"),
                    ));
                }
            };
        }
        for (key, tier) in [
            ("GATEHOUSE_RATE_LIMIT_AUTH", &mut s.rate_limits.auth),
            ("GATEHOUSE_RATE_LIMIT_WRITES", &mut s.rate_limits.writes),
            ("GATEHOUSE_RATE_LIMIT_READS", &mut s.rate_limits.reads),
        ] {
            if let Some(v) = get(key) {
                *tier = parse_tier(&v).ok_or_else(|| {
                    err(
                        key,
                        format!("{v:?} is not PER_MINUTE or PER_MINUTE/BURST, e.g. 10/5"),
                    )
                })?;
            }
        }
        if let Some(v) = get("GATEHOUSE_TRUSTED_PROXIES") {
            s.trusted_proxies = v
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| {
                    Cidr::parse(c).ok_or_else(|| {
                        err(
                            "GATEHOUSE_TRUSTED_PROXIES",
                            format!("{c:?} is not an IP or CIDR"),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(v) = get("GATEHOUSE_CLIENT_IP_HEADER") {
            s.client_ip_header = ClientIpHeader::parse(&v).ok_or_else(|| {
                err(
                    "GATEHOUSE_CLIENT_IP_HEADER",
                    format!("{v:?} is not `x-forwarded-for` or `forwarded`"),
                )
            })?;
        }
        if let Some(v) = get("GATEHOUSE_HSTS") {
            s.hsts = matches!(v.trim().to_ascii_lowercase().as_str(), "on" | "true" | "1");
        }
        s.validate()?;
        Ok(s)
    }

    /// Refuses settings that would make the service unsafe or broken, naming the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bind.parse::<SocketAddr>().map_err(|_| {
            err(
                "GATEHOUSE_BIND",
                format!("{:?} is not HOST:PORT", self.bind),
            )
        })?;
        let min = Duration::from_secs(60);
        if self.access_ttl < min || self.access_ttl > Duration::from_secs(3600) {
            return Err(err(
                "GATEHOUSE_ACCESS_TTL",
                "must be between 1 and 60 minutes: access tokens cannot be revoked, so their \
                 lifetime bounds how long a stolen one works",
            ));
        }
        if self.refresh_ttl < min {
            return Err(err("GATEHOUSE_REFRESH_TTL", "must be at least 1 minute"));
        }
        if self.family_ttl < self.refresh_ttl {
            return Err(err(
                "GATEHOUSE_FAMILY_TTL",
                "must be at least GATEHOUSE_REFRESH_TTL (a family outlives each of its tokens)",
            ));
        }
        if self.family_ttl > Duration::from_secs(366 * 86400) {
            return Err(err("GATEHOUSE_FAMILY_TTL", "must be at most 366 days"));
        }
        if self.refresh_reuse_grace > Duration::from_secs(120) {
            return Err(err(
                "GATEHOUSE_REFRESH_REUSE_GRACE",
                "must be at most 2 minutes: a longer grace lets a thief replay a stolen token",
            ));
        }
        if self.jwks_max_age > Duration::from_secs(86400) {
            return Err(err("GATEHOUSE_JWKS_MAX_AGE", "must be at most 1 day"));
        }
        if self.lockout.window < min {
            return Err(err("GATEHOUSE_LOCKOUT_WINDOW", "must be at least 1 minute"));
        }
        validate_url("GATEHOUSE_ISSUER", &self.issuer)?;
        if self.audience.is_empty() {
            return Err(err("GATEHOUSE_AUDIENCE", "must not be empty"));
        }
        for origin in &self.cors_origins {
            if origin.contains('*') {
                return Err(err(
                    "GATEHOUSE_CORS_ORIGINS",
                    "wildcards are refused: list every allowed origin (https://app.example.com)",
                ));
            }
            validate_url("GATEHOUSE_CORS_ORIGINS", origin)?;
            if origin.matches('/').count() > 2 {
                return Err(err(
                    "GATEHOUSE_CORS_ORIGINS",
                    format!("{origin:?} is not an origin: no path allowed"),
                ));
            }
        }
        if self.body_timeout < Duration::from_secs(1)
            || self.body_timeout > Duration::from_secs(120)
        {
            return Err(err(
                "GATEHOUSE_BODY_TIMEOUT",
                "must be between 1 second and 2 minutes",
            ));
        }
        if self.keys_reload_interval < Duration::from_secs(1)
            || self.prune_interval < Duration::from_secs(1)
        {
            return Err(err(
                "GATEHOUSE_KEYS_RELOAD_INTERVAL",
                "reload and prune intervals must be at least 1 second",
            ));
        }
        if self.hash_workers == 0 || self.http_workers == 0 {
            return Err(err("GATEHOUSE_HASH_WORKERS", "must be at least 1"));
        }
        Ok(())
    }

    /// The effective settings as `(name, value)` lines for `config check`. Nothing here is
    /// secret: keys and the refresh secret live in files and are never printed.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        let secs = |d: Duration| format!("{}s", d.as_secs());
        let tier = |t: Tier| format!("{}/min, burst {}", t.per_minute, t.burst);
        vec![
            ("GATEHOUSE_BIND", self.bind.clone()),
            ("GATEHOUSE_DATABASE", self.database.display().to_string()),
            ("GATEHOUSE_KEYS_DIR", self.keys_dir.display().to_string()),
            ("GATEHOUSE_ISSUER", self.issuer.clone()),
            ("GATEHOUSE_AUDIENCE", self.audience.clone()),
            ("GATEHOUSE_ACCESS_TTL", secs(self.access_ttl)),
            ("GATEHOUSE_REFRESH_TTL", secs(self.refresh_ttl)),
            ("GATEHOUSE_FAMILY_TTL", secs(self.family_ttl)),
            (
                "GATEHOUSE_REFRESH_REUSE_GRACE",
                secs(self.refresh_reuse_grace),
            ),
            ("GATEHOUSE_CORS_ORIGINS", self.cors_origins.join(",")),
            ("GATEHOUSE_JWKS_MAX_AGE", secs(self.jwks_max_age)),
            (
                "GATEHOUSE_SQLITE_SYNCHRONOUS",
                format!("{:?}", self.sqlite_synchronous).to_lowercase(),
            ),
            ("GATEHOUSE_HASH_WORKERS", self.hash_workers.to_string()),
            ("GATEHOUSE_HTTP_WORKERS", self.http_workers.to_string()),
            ("GATEHOUSE_DB_READERS", self.db_readers.to_string()),
            (
                "GATEHOUSE_RATE_LIMITS",
                if self.rate_limits.enabled {
                    "on"
                } else {
                    "off"
                }
                .into(),
            ),
            ("GATEHOUSE_RATE_LIMIT_AUTH", tier(self.rate_limits.auth)),
            ("GATEHOUSE_RATE_LIMIT_WRITES", tier(self.rate_limits.writes)),
            ("GATEHOUSE_RATE_LIMIT_READS", tier(self.rate_limits.reads)),
            (
                "GATEHOUSE_LOCKOUT_MAX_FAILURES",
                self.lockout.max_failures.to_string(),
            ),
            (
                "GATEHOUSE_LOCKOUT_MAX_FAILURES_PER_IP",
                self.lockout.max_failures_per_ip.to_string(),
            ),
            ("GATEHOUSE_LOCKOUT_WINDOW", secs(self.lockout.window)),
            (
                "GATEHOUSE_TRUSTED_PROXIES",
                self.trusted_proxies
                    .iter()
                    .map(|c| format!("{}/{}", c.addr, c.prefix))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            (
                "GATEHOUSE_CLIENT_IP_HEADER",
                self.client_ip_header.as_str().into(),
            ),
            (
                "GATEHOUSE_HSTS",
                if self.hsts { "on" } else { "off" }.into(),
            ),
            ("GATEHOUSE_AUDIT_RETENTION", secs(self.audit_retention)),
            ("GATEHOUSE_PRUNE_INTERVAL", secs(self.prune_interval)),
            (
                "GATEHOUSE_KEYS_RELOAD_INTERVAL",
                secs(self.keys_reload_interval),
            ),
        ]
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
        self.trusted_proxies
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
            .collect()
    }

    /// How long keys stay published around a rotation.
    pub fn key_timing(&self) -> crate::crypto::lifecycle::Timing {
        crate::crypto::lifecycle::Timing {
            retire_after: self.access_ttl.as_secs() as i64 + crate::crypto::jwt::LEEWAY_SECS,
            publish_before_signing: (self.jwks_max_age + self.keys_reload_interval).as_secs()
                as i64,
        }
    }

    /// The refresh-child secret lives beside the signing keys.
    pub fn refresh_secret_path(&self) -> PathBuf {
        self.keys_dir.join("refresh.secret")
    }
}

/// Every key a configuration file may hold (the environment variables, less the prefix).
const FILE_KEYS: [&str; 29] = [
    "bind",
    "database",
    "keys_dir",
    "issuer",
    "audience",
    "access_ttl",
    "refresh_ttl",
    "family_ttl",
    "refresh_reuse_grace",
    "cors_origins",
    "jwks_max_age",
    "sqlite_synchronous",
    "hash_workers",
    "http_workers",
    "db_readers",
    "rate_limits",
    "rate_limit_auth",
    "rate_limit_writes",
    "rate_limit_reads",
    "lockout_max_failures",
    "lockout_max_failures_per_ip",
    "lockout_window",
    "trusted_proxies",
    "client_ip_header",
    "hsts",
    "audit_retention",
    "prune_interval",
    "keys_reload_interval",
    "body_timeout",
];

/// Reads a TOML file into `GATEHOUSE_*`-named strings, refusing unknown keys (a typo
/// must not silently leave a default in force).
fn read_toml(path: &Path) -> Result<std::collections::HashMap<String, String>, ConfigError> {
    let key = "GATEHOUSE_CONFIG";
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(key, format!("cannot read {}: {e}", path.display())))?;
    let table: toml::Table = text
        .parse()
        .map_err(|e| err(key, format!("{} is not valid TOML: {e}", path.display())))?;
    let mut out = std::collections::HashMap::new();
    for (name, value) in table {
        if !FILE_KEYS.contains(&name.as_str()) {
            return Err(err(
                key,
                format!("{}: unknown setting {name:?}", path.display()),
            ));
        }
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => if b { "on" } else { "off" }.to_owned(),
            toml::Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect::<Vec<_>>()
                .join(","),
            other => {
                return Err(err(
                    key,
                    format!("{}: {name} cannot be {}", path.display(), other.type_str()),
                ));
            }
        };
        out.insert(format!("GATEHOUSE_{}", name.to_ascii_uppercase()), text);
    }
    Ok(out)
}

fn validate_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| err(key, format!("{url:?} must start with https:// or http://")))?;
    let host = rest.split(['/', ':']).next().unwrap_or("");
    if host.is_empty() || rest.contains(char::is_whitespace) {
        return Err(err(key, format!("{url:?} has no host")));
    }
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.starts_with("http://") && !loopback {
        return Err(err(
            key,
            format!("{url:?} uses plain http on a non-loopback host; use https://"),
        ));
    }
    Ok(())
}

fn parse_tier(s: &str) -> Option<Tier> {
    let (rate, burst) = match s.trim().split_once('/') {
        Some((r, b)) => (r.trim().parse().ok()?, b.trim().parse().ok()?),
        None => {
            let r: u32 = s.trim().parse().ok()?;
            (r, r.div_ceil(2).max(1))
        }
    };
    (rate > 0 && burst > 0).then_some(Tier {
        per_minute: rate,
        burst,
    })
}

/// `90` or `90s`, `15m`, `12h`, `7d`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(scale).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_are_valid_and_use_production_hashing() {
        let s = from(&[]).expect("defaults");
        assert_eq!(s.password_cost, PasswordCost::PRODUCTION);
        assert_eq!(s.access_ttl, Duration::from_secs(900));
        assert_eq!(s.bind, "127.0.0.1:8080");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("90"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("7d"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_duration("1w"), None);
        assert_eq!(parse_duration("-5"), None);
        assert_eq!(parse_duration(""), None);
    }

    #[test]
    fn refuses_unsafe_settings() {
        for (key, value) in [
            ("GATEHOUSE_ACCESS_TTL", "61m"),
            ("GATEHOUSE_ACCESS_TTL", "30s"),
            ("GATEHOUSE_CORS_ORIGINS", "*"),
            ("GATEHOUSE_CORS_ORIGINS", "https://*.example.com"),
            ("GATEHOUSE_CORS_ORIGINS", "https://app.example.com/path"),
            ("GATEHOUSE_ISSUER", "http://auth.example.com"),
            ("GATEHOUSE_ISSUER", "auth.example.com"),
            ("GATEHOUSE_BIND", "nonsense"),
            ("GATEHOUSE_REFRESH_REUSE_GRACE", "10m"),
            ("GATEHOUSE_FAMILY_TTL", "1h"),
            ("GATEHOUSE_SQLITE_SYNCHRONOUS", "off"),
            ("GATEHOUSE_RATE_LIMITS", "maybe"),
            ("GATEHOUSE_TRUSTED_PROXIES", "10.0.0.0/33"),
            ("GATEHOUSE_CLIENT_IP_HEADER", "x-real-ip"),
        ] {
            let e = from(&[(key, value)]).expect_err(value);
            assert_eq!(e.key, key, "{value}");
        }
    }

    #[test]
    fn reads_every_documented_variable() {
        let s = from(&[
            ("GATEHOUSE_ISSUER", "https://auth.example.com/"),
            (
                "GATEHOUSE_CORS_ORIGINS",
                "https://a.example.com, https://b.example.com",
            ),
            ("GATEHOUSE_RATE_LIMITS", "off"),
            ("GATEHOUSE_RATE_LIMIT_AUTH", "20/4"),
            ("GATEHOUSE_TRUSTED_PROXIES", "10.0.0.0/8, ::1"),
            ("GATEHOUSE_SQLITE_SYNCHRONOUS", "full"),
        ])
        .expect("valid");
        assert_eq!(s.issuer, "https://auth.example.com");
        assert_eq!(s.cors_origins.len(), 2);
        assert!(!s.rate_limits.enabled);
        assert_eq!(
            s.rate_limits.auth,
            Tier {
                per_minute: 20,
                burst: 4
            }
        );
        assert_eq!(s.trusted_proxies.len(), 2);
        assert_eq!(s.sqlite_synchronous, Synchronous::Full);
        let s = from(&[("GATEHOUSE_CLIENT_IP_HEADER", "Forwarded")]).expect("valid");
        assert_eq!(s.client_ip_header, ClientIpHeader::Forwarded);
        assert_eq!(
            from(&[]).expect("defaults").client_ip_header,
            ClientIpHeader::XForwardedFor
        );
    }

    #[test]
    fn a_file_is_overlaid_by_the_environment_and_typos_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("gatehouse.toml");
        std::fs::write(
            &path,
            "access_ttl = \"10m\"\ncors_origins = [\"https://a.example.com\"]\nrate_limits = false\n\
             client_ip_header = \"forwarded\"\n",
        )
        .expect("write");
        let file = read_toml(&path).expect("toml");
        assert_eq!(file["GATEHOUSE_ACCESS_TTL"], "10m");
        assert_eq!(file["GATEHOUSE_RATE_LIMITS"], "off");
        let env: HashMap<&str, &str> = [("GATEHOUSE_ACCESS_TTL", "5m")].into();
        let s = Settings::from_lookup(|k| {
            env.get(k)
                .map(|v| v.to_string())
                .or_else(|| file.get(k).cloned())
        })
        .expect("valid");
        assert_eq!(s.access_ttl, Duration::from_secs(300), "environment wins");
        assert_eq!(s.cors_origins, vec!["https://a.example.com".to_owned()]);
        assert!(!s.rate_limits.enabled);
        assert_eq!(s.client_ip_header, ClientIpHeader::Forwarded);

        std::fs::write(&path, "acess_ttl = \"10m\"\n").expect("write");
        let e = read_toml(&path).expect_err("typo");
        assert!(e.message.contains("unknown setting"), "{e}");
    }

    #[test]
    fn trusting_a_whole_range_is_warned_about() {
        for trusted in [
            "0.0.0.0/0",
            "::/0",
            "10.0.0.0/8",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "fc00::/7",
            "8.0.0.0/6",
            "10.1.2.3, 192.168.0.0/15",
        ] {
            let s = from(&[("GATEHOUSE_TRUSTED_PROXIES", trusted)]).expect("valid");
            let warnings = s.warnings();
            assert_eq!(warnings.len(), 1, "{trusted}: {warnings:?}");
            assert!(
                warnings[0].contains("GATEHOUSE_TRUSTED_PROXIES"),
                "{warnings:?}"
            );
        }
        for trusted in [
            "",
            "10.0.0.5",
            "10.1.0.0/16",
            "192.168.1.0/24",
            "fd00::/8",
            "::1",
        ] {
            let s = from(&[("GATEHOUSE_TRUSTED_PROXIES", trusted)]).expect("valid");
            assert_eq!(s.warnings(), Vec::<String>::new(), "{trusted}");
        }
    }
}
