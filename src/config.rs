//! Settings: defaults, `GATEHOUSE_*` environment variables, the TOML file, and the checks
//! that make the service refuse an unsafe configuration instead of warning about it.
//!
//! Each setting is declared once, in [`SETTINGS`]: its variable (and so its file key), its
//! default, its parser, its check, how `config check` prints it and what the README says
//! about it. Everything else here reads that table, so a setting cannot be parsed but not
//! printed, or documented with a default it does not have.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::crypto::password::PasswordCost;
use crate::http::client_ip::{Cidr, ClientIpHeader};
use crate::http::limiter::{OnStoreError, RedisUrl};
use crate::storage::DatabaseSettings;
use crate::storage::postgres::PostgresUrl;

/// Every field but `password_cost` is a declared setting (see [`SETTINGS`]).
#[derive(Clone, Debug)]
pub struct Settings {
    pub bind: String,
    /// `GATEHOUSE_DATABASE` when it names a SQLite file (a path or `sqlite://path`);
    /// empty when `database_url` is set. [`Settings::database_settings`] is what opens
    /// storage; tools that read the SQLite file itself use this path.
    pub database: PathBuf,
    /// `GATEHOUSE_DATABASE` when it is a `postgres://` URL.
    pub database_url: Option<PostgresUrl>,
    pub keys_dir: PathBuf,
    /// On PostgreSQL, the file holding the key that seals the keys stored in the
    /// database (required there; unused with SQLite).
    pub key_encryption_key_file: Option<PathBuf>,
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
    pub sqlite_synchronous: SqliteSynchronous,
    /// Argon2id cost. Production parameters unless code sets it: no variable maps here.
    pub password_cost: PasswordCost,
    /// How many Argon2 computations may run at once.
    pub hash_workers: usize,
    pub http_workers: usize,
    pub db_readers: u32,
    /// PostgreSQL connections in this process's pool.
    pub db_pool_size: u32,
    pub db_connect_timeout: Duration,
    /// How long start-up waits for a PostgreSQL server that cannot be reached yet.
    pub db_start_timeout: Duration,
    /// Prepare PostgreSQL statements once per connection.
    pub db_prepared_statements: bool,
    pub rate_limits: RateLimits,
    /// Where the limiter counts: Redis, shared by replicas; `None` is this process.
    pub rate_limit_store: Option<RedisUrl>,
    /// The first part of every limiter key in Redis.
    pub rate_limit_key_prefix: String,
    /// Which limited requests pass while the Redis store does not answer.
    pub rate_limit_on_store_error: OnStoreError,
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
    /// Serve the admin console at `/admin/`.
    pub admin_console: bool,
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

/// What a commit must reach before it returns; the store that is opened maps it to its
/// engine's own setting (SQLite's `synchronous` pragma, see README *Durability*).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqliteSynchronous {
    /// A process crash loses nothing committed; a power loss may lose the last commits.
    Normal,
    /// A power loss loses nothing committed either; slower.
    Full,
}

impl SqliteSynchronous {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "normal" => Some(Self::Normal),
            "full" => Some(Self::Full),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Full => "full",
        }
    }
}

/// One setting, declared once.
pub struct Setting {
    /// The environment variable. The file key is the same name without `GATEHOUSE_`, in
    /// lower case ([`Setting::file_key`]).
    pub env: &'static str,
    pub default: Fallback,
    /// The README's description.
    pub meaning: &'static str,
    /// Parses a value and stores it in its field; the message says what is wrong with it.
    parse: fn(&mut Settings, &str) -> Result<(), String>,
    /// Refuses a value that parsed but is unsafe or broken, also for settings built in
    /// code (tests), which never pass through `parse`.
    check: fn(&Settings) -> Result<(), String>,
    /// The effective value, for `config check`.
    show: fn(&Settings) -> String,
}

/// A setting's value when neither the environment nor the file gives one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// Written as a user would write it and parsed by the same parser, so a default
    /// cannot be something a user could not set. `""` is the empty list.
    Value(&'static str),
    /// The machine's core count.
    Cores,
}

impl Setting {
    /// The key of this setting in a configuration file.
    pub fn file_key(&self) -> String {
        self.env
            .strip_prefix("GATEHOUSE_")
            .unwrap_or(self.env)
            .to_ascii_lowercase()
    }

    fn default_value(&self) -> String {
        match self.default {
            Fallback::Value(v) => v.to_owned(),
            Fallback::Cores => std::thread::available_parallelism()
                .map_or(2, |n| n.get())
                .to_string(),
        }
    }
}

/// Every setting, in the order of the README's table and of `config check`.
pub static SETTINGS: &[Setting] = &[
    Setting {
        env: "GATEHOUSE_BIND",
        default: Fallback::Value("127.0.0.1:8080"),
        meaning: "listen address (`HOST:PORT`)",
        parse: |s, v| set(&mut s.bind, Ok(v.trim().to_owned())),
        check: |s| {
            s.bind
                .parse::<SocketAddr>()
                .map(drop)
                .map_err(|_| format!("{:?} is not HOST:PORT", s.bind))
        },
        show: |s| s.bind.clone(),
    },
    Setting {
        env: "GATEHOUSE_DATABASE",
        default: Fallback::Value("./data/gatehouse.db"),
        meaning: "where the data lives; the form picks the backend: a SQLite file path or \
                  `sqlite://PATH` (created 0600, directory 0700), or a PostgreSQL URL \
                  `postgres://USER:PASSWORD@HOST:PORT/DB?sslmode=verify-full` (see \
                  deploy/README.md *PostgreSQL*); `config check` hides the password",
        parse: |s, v| {
            let v = v.trim();
            if v.starts_with("postgres://") || v.starts_with("postgresql://") {
                s.database_url = Some(PostgresUrl::parse(v)?);
                s.database = PathBuf::new();
                return Ok(());
            }
            let path = match v.split_once("://") {
                Some(("sqlite", path)) => path,
                // A typo'd scheme would otherwise become a directory named after it.
                Some((scheme, _)) => {
                    return Err(format!(
                        "{scheme}:// is not a database gatehouse knows: use a SQLite path, \
                         sqlite://PATH or postgres://…"
                    ));
                }
                None => v,
            };
            if path.is_empty() {
                return Err("sqlite:// needs a path".into());
            }
            s.database_url = None;
            set(&mut s.database, Ok(PathBuf::from(path)))
        },
        check: |s| {
            if s.database_url.is_none() && s.database.as_os_str().is_empty() {
                return Err("names no database".into());
            }
            Ok(())
        },
        show: |s| match &s.database_url {
            // Redacted: `config check` output lands in tickets and logs.
            Some(url) => url.to_string(),
            None => s.database.display().to_string(),
        },
    },
    Setting {
        env: "GATEHOUSE_KEYS_DIR",
        default: Fallback::Value("./keys"),
        meaning: "signing keys (`*.pem`) and `refresh.secret` of a SQLite install (on PostgreSQL \
                  they live in the database); created 0700; refused if group or others may \
                  write it, or read a file in it",
        parse: |s, v| set(&mut s.keys_dir, Ok(PathBuf::from(v))),
        check: fine,
        show: |s| s.keys_dir.display().to_string(),
    },
    Setting {
        env: "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE",
        default: Fallback::Value(""),
        meaning: "PostgreSQL only, and required there: a file of exactly 32 random bytes \
                  (`head -c 32 /dev/urandom`), mode 0600, the same on every replica; it seals \
                  the signing keys and refresh secret stored in the database and is never \
                  stored itself (see deploy/README.md *Keys on PostgreSQL*)",
        parse: |s, v| {
            let v = v.trim();
            s.key_encryption_key_file = (!v.is_empty()).then(|| PathBuf::from(v));
            Ok(())
        },
        check: |s| {
            // Keys in files on PostgreSQL would let each replica make its own signing key
            // and refresh secret, the very split this setting exists to prevent.
            if s.database_url.is_some() && s.key_encryption_key_file.is_none() {
                return Err(
                    "required when GATEHOUSE_DATABASE is PostgreSQL: keys live in the \
                            database there, sealed under this key (create it with \
                            `head -c 32 /dev/urandom > FILE && chmod 600 FILE`; move an \
                            existing keys directory in with `gatehouse keys import`)"
                        .into(),
                );
            }
            Ok(())
        },
        show: |s| {
            s.key_encryption_key_file
                .as_ref()
                .map_or_else(|| "(none)".into(), |p| p.display().to_string())
        },
    },
    Setting {
        env: "GATEHOUSE_ISSUER",
        default: Fallback::Value("http://127.0.0.1:8080"),
        meaning: "`iss` of tokens, base of discovery URLs; `https://` required unless the host \
                  is loopback",
        parse: |s, v| {
            let issuer = v.trim().trim_end_matches('/').to_owned();
            set(&mut s.issuer, Ok(issuer))
        },
        check: |s| validate_url(&s.issuer),
        show: |s| s.issuer.clone(),
    },
    Setting {
        env: "GATEHOUSE_AUDIENCE",
        default: Fallback::Value("gatehouse"),
        meaning: "`aud` of tokens",
        parse: |s, v| set(&mut s.audience, Ok(v.trim().to_owned())),
        check: |s| {
            if s.audience.is_empty() {
                return Err("must not be empty".into());
            }
            Ok(())
        },
        show: |s| s.audience.clone(),
    },
    Setting {
        env: "GATEHOUSE_ACCESS_TTL",
        default: Fallback::Value("15m"),
        meaning: "access-token lifetime, 1–60 minutes",
        parse: |s, v| set(&mut s.access_ttl, duration(v)),
        check: |s| {
            if s.access_ttl < MINUTE || s.access_ttl > Duration::from_secs(3600) {
                return Err("must be between 1 and 60 minutes: access tokens cannot be \
                            revoked, so their lifetime bounds how long a stolen one works"
                    .into());
            }
            Ok(())
        },
        show: |s| secs(s.access_ttl),
    },
    Setting {
        env: "GATEHOUSE_REFRESH_TTL",
        default: Fallback::Value("12h"),
        meaning: "idle lifetime of one refresh token",
        parse: |s, v| set(&mut s.refresh_ttl, duration(v)),
        check: |s| at_least_a_minute(s.refresh_ttl),
        show: |s| secs(s.refresh_ttl),
    },
    Setting {
        env: "GATEHOUSE_FAMILY_TTL",
        default: Fallback::Value("7d"),
        meaning: "absolute lifetime of a login (family), at most 366 days",
        parse: |s, v| set(&mut s.family_ttl, duration(v)),
        check: |s| {
            if s.family_ttl < s.refresh_ttl {
                return Err(
                    "must be at least GATEHOUSE_REFRESH_TTL (a family outlives each \
                            of its tokens)"
                        .into(),
                );
            }
            if s.family_ttl > Duration::from_secs(366 * 86400) {
                return Err("must be at most 366 days".into());
            }
            Ok(())
        },
        show: |s| secs(s.family_ttl),
    },
    Setting {
        env: "GATEHOUSE_REFRESH_REUSE_GRACE",
        default: Fallback::Value("10s"),
        meaning: "reuse grace (see below), `0` turns it off, at most 2 minutes",
        parse: |s, v| set(&mut s.refresh_reuse_grace, duration(v)),
        check: |s| {
            if s.refresh_reuse_grace > Duration::from_secs(120) {
                return Err(
                    "must be at most 2 minutes: a longer grace lets a thief replay a \
                            stolen token"
                        .into(),
                );
            }
            Ok(())
        },
        show: |s| secs(s.refresh_reuse_grace),
    },
    Setting {
        env: "GATEHOUSE_CORS_ORIGINS",
        default: Fallback::Value(""),
        meaning: "comma-separated origins allowed to call from browsers; wildcards are refused",
        parse: |s, v| {
            let origins = v
                .split(',')
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect();
            set(&mut s.cors_origins, Ok(origins))
        },
        check: |s| {
            for origin in &s.cors_origins {
                if origin.contains('*') {
                    return Err("wildcards are refused: list every allowed origin \
                                (https://app.example.com)"
                        .into());
                }
                validate_url(origin)?;
                if origin.matches('/').count() > 2 {
                    return Err(format!("{origin:?} is not an origin: no path allowed"));
                }
            }
            Ok(())
        },
        show: |s| s.cors_origins.join(","),
    },
    Setting {
        env: "GATEHOUSE_JWKS_MAX_AGE",
        default: Fallback::Value("300"),
        meaning: "`Cache-Control: max-age` of the JWKS",
        parse: |s, v| set(&mut s.jwks_max_age, duration(v)),
        check: |s| {
            if s.jwks_max_age > Duration::from_secs(86400) {
                return Err("must be at most 1 day".into());
            }
            Ok(())
        },
        show: |s| secs(s.jwks_max_age),
    },
    Setting {
        env: "GATEHOUSE_SQLITE_SYNCHRONOUS",
        default: Fallback::Value("normal"),
        meaning: "`normal` or `full`: see *Durability*",
        parse: |s, v| {
            let mode = SqliteSynchronous::parse(v)
                .ok_or_else(|| format!("{v:?} is not `normal` or `full`"));
            set(&mut s.sqlite_synchronous, mode)
        },
        check: fine,
        show: |s| s.sqlite_synchronous.as_str().into(),
    },
    Setting {
        env: "GATEHOUSE_RATE_LIMITS",
        default: Fallback::Value("on"),
        meaning: "`off` disables the per-IP limiter (behind a gateway that limits, or for load \
                  tests)",
        parse: |s, v| set(&mut s.rate_limits.enabled, switch(v)),
        check: fine,
        show: |s| on_off(s.rate_limits.enabled),
    },
    Setting {
        env: "GATEHOUSE_RATE_LIMIT_AUTH",
        default: Fallback::Value("10/5"),
        meaning: "per IP: requests per minute / burst, for each of signup, login, refresh, \
                  logout",
        parse: |s, v| set(&mut s.rate_limits.auth, tier(v)),
        check: fine,
        show: |s| show_tier(s.rate_limits.auth),
    },
    Setting {
        env: "GATEHOUSE_RATE_LIMIT_WRITES",
        default: Fallback::Value("30/10"),
        meaning: "per IP, authenticated writes",
        parse: |s, v| set(&mut s.rate_limits.writes, tier(v)),
        check: fine,
        show: |s| show_tier(s.rate_limits.writes),
    },
    Setting {
        env: "GATEHOUSE_RATE_LIMIT_READS",
        default: Fallback::Value("300/60"),
        meaning: "per IP, authenticated reads",
        parse: |s, v| set(&mut s.rate_limits.reads, tier(v)),
        check: fine,
        show: |s| show_tier(s.rate_limits.reads),
    },
    Setting {
        env: "GATEHOUSE_RATE_LIMIT_STORE",
        default: Fallback::Value(""),
        meaning: "where the per-IP limits are counted: unset is this process (one replica); \
                  `redis://[:PASSWORD@]HOST[:PORT][/DB]` counts every replica's requests in \
                  one Redis (see deploy/README.md *Rate limits across replicas*); `config \
                  check` hides the password",
        parse: |s, v| {
            let v = v.trim();
            let store = if v.is_empty() {
                Ok(None)
            } else {
                RedisUrl::parse(v).map(Some)
            };
            set(&mut s.rate_limit_store, store)
        },
        check: fine,
        show: |s| {
            s.rate_limit_store
                .as_ref()
                .map_or_else(String::new, |u| u.to_string())
        },
    },
    Setting {
        env: "GATEHOUSE_RATE_LIMIT_KEY_PREFIX",
        default: Fallback::Value("gatehouse:rl"),
        meaning: "Redis keys are `PREFIX:TIER:CLIENT` and expire by themselves; give each \
                  gatehouse deployment sharing one Redis its own prefix",
        parse: |s, v| set(&mut s.rate_limit_key_prefix, Ok(v.trim().to_owned())),
        check: |s| {
            let p = &s.rate_limit_key_prefix;
            if p.is_empty() || p.len() > 64 || !p.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("must be 1–64 printable characters without spaces".into());
            }
            Ok(())
        },
        show: |s| s.rate_limit_key_prefix.clone(),
    },
    Setting {
        env: "GATEHOUSE_RATE_LIMIT_ON_STORE_ERROR",
        default: Fallback::Value("by-endpoint"),
        meaning: "when Redis does not answer within 250 ms: `by-endpoint` refuses the \
                  endpoints that take a password (signup, login, password change, account \
                  deletion) with 503 and lets the rest through unlimited; `open` lets all \
                  through; `closed` refuses every limited request with 503",
        parse: |s, v| {
            let mode = OnStoreError::parse(v)
                .ok_or_else(|| format!("{v:?} is not `by-endpoint`, `open` or `closed`"));
            set(&mut s.rate_limit_on_store_error, mode)
        },
        check: fine,
        show: |s| s.rate_limit_on_store_error.as_str().into(),
    },
    Setting {
        env: "GATEHOUSE_LOCKOUT_MAX_FAILURES",
        default: Fallback::Value("5"),
        meaning: "failed logins per email per window before 429 `too_many_attempts`",
        parse: |s, v| set(&mut s.lockout.max_failures, count(v)),
        check: fine,
        show: |s| s.lockout.max_failures.to_string(),
    },
    Setting {
        env: "GATEHOUSE_LOCKOUT_MAX_FAILURES_PER_IP",
        default: Fallback::Value("100"),
        meaning: "failed logins per client IP per window",
        parse: |s, v| set(&mut s.lockout.max_failures_per_ip, count(v)),
        check: fine,
        show: |s| s.lockout.max_failures_per_ip.to_string(),
    },
    Setting {
        env: "GATEHOUSE_LOCKOUT_WINDOW",
        default: Fallback::Value("15m"),
        meaning: "lockout window",
        parse: |s, v| set(&mut s.lockout.window, duration(v)),
        check: |s| at_least_a_minute(s.lockout.window),
        show: |s| secs(s.lockout.window),
    },
    Setting {
        env: "GATEHOUSE_TRUSTED_PROXIES",
        default: Fallback::Value(""),
        meaning: "CIDRs of proxies whose hop in `GATEHOUSE_CLIENT_IP_HEADER` is believed; \
                  `config check` warns when a whole private range or `0.0.0.0/0`/`::/0` is \
                  listed",
        parse: |s, v| {
            let proxies = v
                .split(',')
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(|c| Cidr::parse(c).ok_or_else(|| format!("{c:?} is not an IP or CIDR")))
                .collect();
            set(&mut s.trusted_proxies, proxies)
        },
        check: fine,
        show: |s| {
            s.trusted_proxies
                .iter()
                .map(|c| format!("{}/{}", c.addr, c.prefix))
                .collect::<Vec<_>>()
                .join(",")
        },
    },
    Setting {
        env: "GATEHOUSE_CLIENT_IP_HEADER",
        default: Fallback::Value("x-forwarded-for"),
        meaning: "`x-forwarded-for` or `forwarded` (RFC 7239): the one header the trusted \
                  proxies write the client's address in; the other is never read",
        parse: |s, v| {
            let header = ClientIpHeader::parse(v)
                .ok_or_else(|| format!("{v:?} is not `x-forwarded-for` or `forwarded`"));
            set(&mut s.client_ip_header, header)
        },
        check: fine,
        show: |s| s.client_ip_header.as_str().into(),
    },
    Setting {
        env: "GATEHOUSE_HSTS",
        default: Fallback::Value("off"),
        meaning: "send `Strict-Transport-Security` (set when clients reach gatehouse over TLS)",
        parse: |s, v| set(&mut s.hsts, switch(v)),
        check: fine,
        show: |s| on_off(s.hsts),
    },
    Setting {
        env: "GATEHOUSE_HASH_WORKERS",
        default: Fallback::Cores,
        meaning: "Argon2 computations at once",
        parse: |s, v| set(&mut s.hash_workers, count(v).map(|n| n as usize)),
        check: |s| at_least_one(s.hash_workers),
        show: |s| s.hash_workers.to_string(),
    },
    Setting {
        env: "GATEHOUSE_HTTP_WORKERS",
        default: Fallback::Cores,
        meaning: "HTTP worker threads",
        parse: |s, v| set(&mut s.http_workers, count(v).map(|n| n as usize)),
        check: |s| at_least_one(s.http_workers),
        show: |s| s.http_workers.to_string(),
    },
    Setting {
        env: "GATEHOUSE_DB_READERS",
        default: Fallback::Value("8"),
        meaning: "pooled SQLite reader connections",
        parse: |s, v| set(&mut s.db_readers, count(v)),
        check: fine,
        show: |s| s.db_readers.to_string(),
    },
    Setting {
        env: "GATEHOUSE_DB_POOL_SIZE",
        default: Fallback::Value("10"),
        meaning: "PostgreSQL connections per gatehouse process (mind the server's \
                  `max_connections` across replicas)",
        parse: |s, v| set(&mut s.db_pool_size, count(v)),
        check: fine,
        show: |s| s.db_pool_size.to_string(),
    },
    Setting {
        env: "GATEHOUSE_DB_CONNECT_TIMEOUT",
        default: Fallback::Value("5s"),
        meaning: "PostgreSQL: how long to wait for a new connection, or for a free pooled \
                  one, before answering 503",
        parse: |s, v| set(&mut s.db_connect_timeout, duration(v)),
        check: |s| {
            if s.db_connect_timeout < Duration::from_secs(1)
                || s.db_connect_timeout > Duration::from_secs(60)
            {
                return Err("must be between 1 second and 1 minute".into());
            }
            Ok(())
        },
        show: |s| secs(s.db_connect_timeout),
    },
    Setting {
        env: "GATEHOUSE_DB_START_TIMEOUT",
        default: Fallback::Value("30s"),
        meaning: "PostgreSQL: how long start-up (`serve` and the CLI) retries a server that \
                  cannot be reached yet before exiting non-zero; `0` tries once",
        parse: |s, v| set(&mut s.db_start_timeout, duration(v)),
        check: |s| {
            if s.db_start_timeout > Duration::from_secs(600) {
                return Err("must be at most 10 minutes".into());
            }
            Ok(())
        },
        show: |s| secs(s.db_start_timeout),
    },
    Setting {
        env: "GATEHOUSE_DB_PREPARED_STATEMENTS",
        default: Fallback::Value("on"),
        meaning: "PostgreSQL: prepare each statement once per connection, then run it by \
                  name; `off` sends every statement unnamed (parsed and planned each time), \
                  for PgBouncer before 1.21 in transaction pooling (see deploy/README.md \
                  *PostgreSQL*)",
        parse: |s, v| set(&mut s.db_prepared_statements, switch(v)),
        check: fine,
        show: |s| on_off(s.db_prepared_statements),
    },
    Setting {
        env: "GATEHOUSE_AUDIT_RETENTION",
        default: Fallback::Value("90d"),
        meaning: "audit events older than this are pruned",
        parse: |s, v| set(&mut s.audit_retention, duration(v)),
        check: fine,
        show: |s| secs(s.audit_retention),
    },
    Setting {
        env: "GATEHOUSE_PRUNE_INTERVAL",
        default: Fallback::Value("600"),
        meaning: "how often expired families, lockout rows and old audit events are pruned",
        parse: |s, v| set(&mut s.prune_interval, duration(v)),
        check: |s| at_least_a_second(s.prune_interval),
        show: |s| secs(s.prune_interval),
    },
    Setting {
        env: "GATEHOUSE_KEYS_RELOAD_INTERVAL",
        default: Fallback::Value("30"),
        meaning: "how often running servers re-read the keys directory (SIGHUP: at once)",
        parse: |s, v| set(&mut s.keys_reload_interval, duration(v)),
        check: |s| at_least_a_second(s.keys_reload_interval),
        show: |s| secs(s.keys_reload_interval),
    },
    Setting {
        env: "GATEHOUSE_BODY_TIMEOUT",
        default: Fallback::Value("10"),
        meaning: "a request body must arrive within this time, else 408",
        parse: |s, v| set(&mut s.body_timeout, duration(v)),
        check: |s| {
            if s.body_timeout < Duration::from_secs(1) || s.body_timeout > Duration::from_secs(120)
            {
                return Err("must be between 1 second and 2 minutes".into());
            }
            Ok(())
        },
        show: |s| secs(s.body_timeout),
    },
    Setting {
        env: "GATEHOUSE_ADMIN_CONSOLE",
        default: Fallback::Value("on"),
        meaning: "serve the admin console at `/admin/` (`off`: 404, the API alone)",
        parse: |s, v| set(&mut s.admin_console, switch(v)),
        check: fine,
        show: |s| on_off(s.admin_console),
    },
];

const MINUTE: Duration = Duration::from_secs(60);

fn set<T>(slot: &mut T, value: Result<T, String>) -> Result<(), String> {
    *slot = value?;
    Ok(())
}

fn fine(_: &Settings) -> Result<(), String> {
    Ok(())
}

fn at_least_a_minute(d: Duration) -> Result<(), String> {
    if d < MINUTE {
        return Err("must be at least 1 minute".into());
    }
    Ok(())
}

fn at_least_a_second(d: Duration) -> Result<(), String> {
    if d < Duration::from_secs(1) {
        return Err("must be at least 1 second".into());
    }
    Ok(())
}

fn at_least_one(n: usize) -> Result<(), String> {
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(())
}

fn duration(v: &str) -> Result<Duration, String> {
    parse_duration(v)
        .ok_or_else(|| format!("{v:?} is not a duration (examples: 90, 90s, 15m, 12h, 7d)"))
}

/// A whole number of at least 1.
fn count(v: &str) -> Result<u32, String> {
    v.trim()
        .parse::<u32>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{v:?} is not a whole number ≥ 1"))
}

/// Every on/off setting reads the same words; anything else is refused, because a typo
/// that quietly meant `off` would turn off HSTS without a word.
fn switch(v: &str) -> Result<bool, String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" => Ok(true),
        "off" | "false" | "0" => Ok(false),
        _ => Err(format!("{v:?} is not on or off")),
    }
}

fn tier(v: &str) -> Result<Tier, String> {
    parse_tier(v).ok_or_else(|| format!("{v:?} is not PER_MINUTE or PER_MINUTE/BURST, e.g. 10/5"))
}

fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.into()
}

fn show_tier(t: Tier) -> String {
    format!("{}/min, burst {}", t.per_minute, t.burst)
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

impl Default for Settings {
    /// Every setting at its declared default.
    fn default() -> Self {
        // The declared defaults are constants that `every_declared_default_parses_and_is_valid` runs
        // through their parsers, so the placeholders are never what comes out.
        Self::overlay(|_| None).unwrap_or_else(|_| Self::unset())
    }
}

impl Settings {
    /// The fields before the declarations fill them in. Placeholders, overwritten by
    /// [`Settings::overlay`] (the stricter choice where there is one); only
    /// `password_cost`, which no setting maps to, is final.
    fn unset() -> Self {
        Self {
            bind: String::new(),
            database: PathBuf::new(),
            database_url: None,
            keys_dir: PathBuf::new(),
            key_encryption_key_file: None,
            issuer: String::new(),
            audience: String::new(),
            access_ttl: Duration::ZERO,
            refresh_ttl: Duration::ZERO,
            family_ttl: Duration::ZERO,
            refresh_reuse_grace: Duration::ZERO,
            cors_origins: Vec::new(),
            jwks_max_age: Duration::ZERO,
            sqlite_synchronous: SqliteSynchronous::Full,
            password_cost: PasswordCost::PRODUCTION,
            hash_workers: 0,
            http_workers: 0,
            db_readers: 0,
            db_pool_size: 0,
            db_connect_timeout: Duration::ZERO,
            db_start_timeout: Duration::ZERO,
            db_prepared_statements: false,
            rate_limits: RateLimits {
                enabled: true,
                auth: Tier {
                    per_minute: 0,
                    burst: 0,
                },
                writes: Tier {
                    per_minute: 0,
                    burst: 0,
                },
                reads: Tier {
                    per_minute: 0,
                    burst: 0,
                },
            },
            rate_limit_store: None,
            rate_limit_key_prefix: String::new(),
            rate_limit_on_store_error: OnStoreError::Closed,
            lockout: Lockout {
                max_failures: 0,
                max_failures_per_ip: 0,
                window: Duration::ZERO,
            },
            trusted_proxies: Vec::new(),
            client_ip_header: ClientIpHeader::XForwardedFor,
            hsts: true,
            audit_retention: Duration::ZERO,
            prune_interval: Duration::ZERO,
            keys_reload_interval: Duration::ZERO,
            body_timeout: Duration::ZERO,
            admin_console: false,
        }
    }

    /// Settings for tests: a temp directory, a random port, cheap Argon2, no per-IP limits.
    pub fn for_tests(dir: &Path) -> Self {
        let defaults = Self::default();
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
                ..defaults.rate_limits
            },
            ..defaults
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

    /// Defaults overlaid by whatever `lookup` knows (keys are `GATEHOUSE_*` names), then
    /// validated.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let s = Self::overlay(lookup)?;
        s.validate()?;
        Ok(s)
    }

    /// Each setting parsed once, from `lookup` or else from its default.
    fn overlay(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut s = Self::unset();
        for setting in SETTINGS {
            // Empty means unset: `GATEHOUSE_X=` in an env file asks for the default.
            let value = lookup(setting.env)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| setting.default_value());
            (setting.parse)(&mut s, &value).map_err(|m| err(setting.env, m))?;
        }
        Ok(s)
    }

    /// Refuses settings that would make the service unsafe or broken, naming the setting
    /// and the reason.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for setting in SETTINGS {
            (setting.check)(self).map_err(|m| err(setting.env, m))?;
        }
        Ok(())
    }

    /// The effective settings as `(name, value)` lines for `config check`. Nothing here is
    /// secret: keys and the refresh secret live in files and are never printed.
    pub fn describe(&self) -> Vec<(&'static str, String)> {
        SETTINGS.iter().map(|s| (s.env, (s.show)(self))).collect()
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
        let unused_kek = (self.database_url.is_none() && self.key_encryption_key_file.is_some())
            .then(|| {
                "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE is set but the database is SQLite: keys \
                 stay in GATEHOUSE_KEYS_DIR and the file is not read"
                    .to_owned()
            });
        let in_memory_limits =
            (self.rate_limits.enabled && self.rate_limit_store.is_none()).then(|| {
                "GATEHOUSE_RATE_LIMIT_STORE is unset: per-IP limits are counted in this process, \
                 so with N replicas behind a load balancer a client gets N times the configured \
                 limits; set it to a redis:// URL shared by the replicas"
                    .to_owned()
            });
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
            .chain(unused_kek)
            .chain(in_memory_limits)
            .collect()
    }

    /// The store to open, from `GATEHOUSE_DATABASE` and the settings of its backend.
    pub fn database_settings(&self) -> DatabaseSettings {
        match &self.database_url {
            Some(url) => DatabaseSettings::Postgres {
                url: Box::new(url.clone()),
                pool_size: self.db_pool_size,
                connect_timeout: self.db_connect_timeout,
                start_timeout: self.db_start_timeout,
                prepared_statements: self.db_prepared_statements,
            },
            None => DatabaseSettings::Sqlite {
                path: self.database.clone(),
                synchronous: match self.sqlite_synchronous {
                    SqliteSynchronous::Normal => crate::storage::sqlite::Synchronous::Normal,
                    SqliteSynchronous::Full => crate::storage::sqlite::Synchronous::Full,
                },
                readers: self.db_readers,
            },
        }
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
        let Some(setting) = SETTINGS.iter().find(|s| s.file_key() == name) else {
            return Err(err(
                key,
                format!("{}: unknown setting {name:?}", path.display()),
            ));
        };
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
        out.insert(setting.env.to_owned(), text);
    }
    Ok(out)
}

fn validate_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("{url:?} must start with https:// or http://"))?;
    let host = rest.split(['/', ':']).next().unwrap_or("");
    if host.is_empty() || rest.contains(char::is_whitespace) {
        return Err(format!("{url:?} has no host"));
    }
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if url.starts_with("http://") && !loopback {
        return Err(format!(
            "{url:?} uses plain http on a non-loopback host; use https://"
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
    fn the_database_setting_picks_the_backend_by_its_form() {
        let sqlite = |v: &str| match from(&[("GATEHOUSE_DATABASE", v)])
            .expect(v)
            .database_settings()
        {
            DatabaseSettings::Sqlite { path, .. } => path,
            other => panic!("{v}: {other}"),
        };
        assert_eq!(
            sqlite("./data/gatehouse.db"),
            PathBuf::from("./data/gatehouse.db")
        );
        assert_eq!(
            sqlite("sqlite:///var/lib/gh.db"),
            PathBuf::from("/var/lib/gh.db")
        );
        assert_eq!(sqlite("sqlite://rel.db"), PathBuf::from("rel.db"));
        match from(&[]).expect("defaults").database_settings() {
            DatabaseSettings::Sqlite { path, .. } => {
                assert_eq!(path, PathBuf::from("./data/gatehouse.db"))
            }
            other => panic!("the default is SQLite, not {other}"),
        }
        for url in [
            "postgres://gh:s3cret@db.example.com/gatehouse?sslmode=verify-full",
            "postgresql://gh:s3cret@db.example.com:6432/gatehouse",
        ] {
            let kek = ("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", "/run/secrets/kek");
            let e = from(&[("GATEHOUSE_DATABASE", url)]).expect_err("no KEK on PostgreSQL");
            assert_eq!(e.key, "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", "{e}");
            assert!(e.message.contains("required"), "{e}");
            let s = from(&[
                ("GATEHOUSE_DATABASE", url),
                ("GATEHOUSE_DB_POOL_SIZE", "3"),
                kek,
            ])
            .expect(url);
            let DatabaseSettings::Postgres {
                pool_size,
                prepared_statements,
                ..
            } = s.database_settings()
            else {
                panic!("{url} is PostgreSQL");
            };
            assert_eq!(pool_size, 3);
            assert!(prepared_statements, "prepared by default");
            let unprepared = ("GATEHOUSE_DB_PREPARED_STATEMENTS", "off");
            let off = from(&[("GATEHOUSE_DATABASE", url), unprepared, kek]).expect(url);
            let DatabaseSettings::Postgres {
                prepared_statements,
                ..
            } = off.database_settings()
            else {
                panic!("{url} is PostgreSQL");
            };
            assert!(!prepared_statements, "off for a pooler");
            let shown = s.describe();
            let printed = format!("{shown:?} {s:?} {}", s.database_settings());
            assert!(!printed.contains("s3cret"), "{printed}");
            assert!(printed.contains("gh:***@db.example.com"), "{printed}");
        }
        for bad in [
            "mysql://u:s3cret@h/db",
            "sqlite://",
            "postgres://u:s3cret@h/db?sslmode=maybe",
        ] {
            let e = from(&[("GATEHOUSE_DATABASE", bad)]).expect_err(bad);
            assert_eq!(e.key, "GATEHOUSE_DATABASE");
            assert!(!e.to_string().contains("s3cret"), "{e}");
        }
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
            ("GATEHOUSE_HSTS", "onn"),
            ("GATEHOUSE_RATE_LIMITS", "of"),
            ("GATEHOUSE_PRUNE_INTERVAL", "0"),
            ("GATEHOUSE_HTTP_WORKERS", "0"),
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
        assert_eq!(s.sqlite_synchronous, SqliteSynchronous::Full);
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
            let s = from(&[
                ("GATEHOUSE_TRUSTED_PROXIES", trusted),
                ("GATEHOUSE_RATE_LIMIT_STORE", "redis://127.0.0.1:6379"),
            ])
            .expect("valid");
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
            let s = from(&[
                ("GATEHOUSE_TRUSTED_PROXIES", trusted),
                ("GATEHOUSE_RATE_LIMIT_STORE", "redis://127.0.0.1:6379"),
            ])
            .expect("valid");
            assert_eq!(s.warnings(), Vec::<String>::new(), "{trusted}");
        }
    }

    #[test]
    fn an_in_memory_limiter_is_warned_about_unless_limits_are_off() {
        let many = |w: &[String]| w.iter().any(|w| w.contains("N times the configured"));
        assert!(many(&from(&[]).expect("defaults").warnings()));
        let shared =
            from(&[("GATEHOUSE_RATE_LIMIT_STORE", "redis://:pw@10.0.0.7:6379/1")]).expect("redis");
        assert!(!many(&shared.warnings()));
        let shown = shared.describe();
        let store = shown
            .iter()
            .find(|(k, _)| *k == "GATEHOUSE_RATE_LIMIT_STORE")
            .expect("described");
        assert_eq!(store.1, "redis://:***@10.0.0.7:6379/1");
        let off = from(&[("GATEHOUSE_RATE_LIMITS", "off")]).expect("off");
        assert!(!many(&off.warnings()));
        for bad in ["rediss://h", "10.0.0.7:6379", "redis://h:port"] {
            let e = from(&[("GATEHOUSE_RATE_LIMIT_STORE", bad)]).expect_err(bad);
            assert_eq!(e.key, "GATEHOUSE_RATE_LIMIT_STORE", "{bad}");
        }
        let e = from(&[("GATEHOUSE_RATE_LIMIT_ON_STORE_ERROR", "fail-open")]).expect_err("bad");
        assert_eq!(e.key, "GATEHOUSE_RATE_LIMIT_ON_STORE_ERROR");
        let e = from(&[("GATEHOUSE_RATE_LIMIT_KEY_PREFIX", "a b")]).expect_err("bad");
        assert_eq!(e.key, "GATEHOUSE_RATE_LIMIT_KEY_PREFIX");
    }

    #[test]
    fn every_setting_is_declared_once() {
        let mut envs = std::collections::HashSet::new();
        let mut keys = std::collections::HashSet::new();
        for setting in SETTINGS {
            assert!(setting.env.starts_with("GATEHOUSE_"), "{}", setting.env);
            assert!(envs.insert(setting.env), "{} declared twice", setting.env);
            assert!(
                keys.insert(setting.file_key()),
                "{} declared twice",
                setting.env
            );
        }
    }

    #[test]
    fn each_variable_is_read_once() {
        let reads = std::cell::RefCell::new(HashMap::<String, usize>::new());
        Settings::from_lookup(|key| {
            *reads.borrow_mut().entry(key.to_owned()).or_default() += 1;
            None
        })
        .expect("defaults");
        let reads = reads.into_inner();
        assert_eq!(reads.len(), SETTINGS.len());
        for setting in SETTINGS {
            assert_eq!(reads.get(setting.env), Some(&1), "{}", setting.env);
        }
    }

    #[test]
    fn every_declared_default_parses_and_is_valid() {
        let mut s = Settings::unset();
        for setting in SETTINGS {
            (setting.parse)(&mut s, &setting.default_value())
                .unwrap_or_else(|e| panic!("{}: {e}", setting.env));
        }
        s.validate().expect("the defaults are valid");
        assert_eq!(Settings::default().describe(), s.describe());
    }

    #[test]
    fn a_misspelt_switch_stops_the_start_naming_its_variable() {
        for key in ["GATEHOUSE_HSTS", "GATEHOUSE_RATE_LIMITS"] {
            for value in ["onn", "of", "yes", "enabled"] {
                let e = from(&[(key, value)]).expect_err(value);
                assert_eq!(e.key, key, "{value}");
                assert!(e.message.contains("is not on or off"), "{e}");
            }
            for (value, on) in [
                ("on", true),
                ("ON", true),
                (" true ", true),
                ("1", true),
                ("off", false),
                ("False", false),
                ("0", false),
            ] {
                let s = from(&[(key, value)]).expect(value);
                let got = if key == "GATEHOUSE_HSTS" {
                    s.hsts
                } else {
                    s.rate_limits.enabled
                };
                assert_eq!(got, on, "{key}={value}");
            }
        }
    }

    #[test]
    fn every_error_names_its_own_variable() {
        for setting in SETTINGS {
            for value in ["0", "nonsense", "-1", "*"] {
                if let Err(e) = from(&[(setting.env, value)]) {
                    assert_eq!(e.key, setting.env, "{}={value}: {e}", setting.env);
                }
            }
        }
        // Settings built in code reach only `validate()`.
        let dir = tempfile::tempdir().expect("tmp");
        type Change = fn(&mut Settings);
        let zeroed: [(&str, Change); 4] = [
            ("GATEHOUSE_HASH_WORKERS", |s| s.hash_workers = 0),
            ("GATEHOUSE_HTTP_WORKERS", |s| s.http_workers = 0),
            ("GATEHOUSE_PRUNE_INTERVAL", |s| {
                s.prune_interval = Duration::ZERO
            }),
            ("GATEHOUSE_KEYS_RELOAD_INTERVAL", |s| {
                s.keys_reload_interval = Duration::ZERO
            }),
        ];
        for (key, zero) in zeroed {
            let mut s = Settings::for_tests(dir.path());
            zero(&mut s);
            let e = s.validate().expect_err(key);
            assert_eq!(e.key, key);
        }
    }

    #[test]
    fn config_check_prints_every_setting() {
        let lines = from(&[]).expect("defaults").describe();
        let names: Vec<&str> = lines.iter().map(|(name, _)| *name).collect();
        let declared: Vec<&str> = SETTINGS.iter().map(|s| s.env).collect();
        assert_eq!(names, declared);
        assert!(
            lines.contains(&("GATEHOUSE_BODY_TIMEOUT", "10s".to_owned())),
            "{lines:?}"
        );
    }

    #[test]
    fn every_setting_can_be_set_in_a_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("gatehouse.toml");
        let text: String = SETTINGS
            .iter()
            .map(|s| format!("{} = {:?}\n", s.file_key(), s.default_value()))
            .collect();
        std::fs::write(&path, text).expect("write");
        let file = read_toml(&path).expect("every key is known");
        assert_eq!(file.len(), SETTINGS.len());
        Settings::from_lookup(|k| file.get(k).cloned()).expect("valid");
    }

    /// The README's table, as the declarations say it must read.
    fn readme_table() -> String {
        let mut table = "| variable | default | meaning |\n|---|---|---|\n".to_owned();
        for s in SETTINGS {
            let default = match s.default {
                Fallback::Value("") => "*(none)*".to_owned(),
                Fallback::Value(v) => format!("`{v}`"),
                Fallback::Cores => "cores".to_owned(),
            };
            table.push_str(&format!("| `{}` | {default} | {} |\n", s.env, s.meaning));
        }
        table
    }

    #[test]
    fn a_key_encryption_key_on_sqlite_is_a_warning() {
        let kek = ("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE", "/run/secrets/kek");
        let s = from(&[kek]).expect("allowed on SQLite");
        assert!(
            s.warnings().iter().any(|w| w
                .contains("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE is set but the database is SQLite")),
            "{:?}",
            s.warnings()
        );
        let unrelated: Vec<String> = from(&[])
            .expect("defaults")
            .warnings()
            .into_iter()
            .filter(|w| !w.starts_with("GATEHOUSE_RATE_LIMIT_STORE is unset"))
            .collect();
        assert!(unrelated.is_empty(), "{unrelated:?}");
    }

    #[test]
    fn the_readme_documents_exactly_the_declared_settings() {
        let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
            .expect("README.md");
        let section = readme
            .split_once("\n## Configuration\n")
            .map(|(_, rest)| rest)
            .expect("a Configuration section");
        let documented: String = section
            .lines()
            .skip_while(|l| !l.starts_with('|'))
            .take_while(|l| l.starts_with('|'))
            .map(|l| format!("{l}\n"))
            .collect();
        let expected = readme_table();
        assert!(
            documented == expected,
            "README.md's configuration table differs from SETTINGS in src/config.rs; \
             it should read:\n\n{expected}"
        );
    }

    #[test]
    fn the_k8s_configmap_names_only_declared_settings() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/k8s/configmap.yaml");
        let text = std::fs::read_to_string(path).expect("configmap.yaml");
        // Read before the settings, by clap and by the log setup.
        let early = ["GATEHOUSE_CONFIG", "GATEHOUSE_LOG_FORMAT"];
        for line in text.lines() {
            let entry = line.trim_start().trim_start_matches(['#', ' ']);
            let Some((name, _)) = entry.split_once(':') else {
                continue;
            };
            if name.starts_with("GATEHOUSE_") {
                assert!(
                    SETTINGS.iter().any(|s| s.env == name) || early.contains(&name),
                    "configmap.yaml sets {name}, which no setting declares"
                );
            }
        }
    }
}
