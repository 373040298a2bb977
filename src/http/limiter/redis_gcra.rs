//! The limiter's counters in Redis, shared by every replica.
//!
//! One Lua script per check does the whole GCRA step atomically on the server (read the
//! theoretical arrival time, decide, write it back with an expiry), so a check is one round
//! trip and two replicas can never both spend the last token. The script reads Redis's
//! own clock (`TIME`), so replicas whose clocks disagree still share one budget.
//!
//! Why the plain `redis` crate rather than a limiter crate: a script of a dozen lines
//! keeps the in-memory limiter's exact semantics (governor's GCRA: same rate, burst and
//! `Retry-After`), and its `ConnectionManager` is one multiplexed async connection per
//! process that reconnects by itself after Redis comes back.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::Tier;
use super::{LimitTier, LimitVerdict, whole_secs};

/// The longest a request waits on Redis before the store counts as unavailable: a hung
/// Redis must cost requests a fraction of a second, not hang them.
pub const STORE_TIMEOUT: Duration = Duration::from_millis(250);

/// How long the connection made at start may take (see [`RedisLimiter::warm_up`]).
const WARM_UP_TIMEOUT: Duration = Duration::from_secs(3);

/// After Redis fails to answer, requests skip it for this long and get the configured
/// direction at once: a read must not pay the timeout on every request during an outage,
/// and a struggling Redis is not hammered. Then the next request tries again, so recovery
/// is noticed within about this long.
pub const STORE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// GCRA as governor does it (`governor::gcra`), in microseconds. KEYS[1]: the client's
/// bucket; ARGV[1]: the emission interval T (60 s / rate); ARGV[2]: the tolerance
/// T × (burst − 1). A request is allowed when now ≥ TAT − tolerance, and then moves TAT
/// to max(TAT, now) + T. Returns 0 when allowed, else the microseconds to wait. The key
/// expires when TAT passes: from then on a missing key and a stored one mean the same.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
local earliest = tat - tolerance
if now < earliest then
  return earliest - now
end
local next_tat = math.max(tat, now) + interval
local ttl_ms = math.max(1, math.ceil((next_tat - now) / 1000))
redis.call('SET', KEYS[1], string.format('%.0f', next_tat), 'PX', ttl_ms)
return 0
"#;

/// A `redis://` or `rediss://` (TLS) URL. Its password is never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn parse(s: &str) -> Result<Self, String> {
        const SHAPE: &str = "redis://[:PASSWORD@]HOST[:PORT][/DB] URL, or rediss:// for TLS";
        let s = s.trim();
        if !s.starts_with("redis://") && !s.starts_with("rediss://") {
            return Err(format!("must be a {SHAPE}"));
        }
        // The parser's message could quote the URL, password and all.
        redis::Client::open(s).map_err(|_| format!("is not a valid {SHAPE}"))?;
        Ok(Self(s.to_owned()))
    }

    /// Whether the URL asks for TLS (`rediss://`).
    pub fn tls(&self) -> bool {
        self.0.starts_with("rediss://")
    }

    fn scheme(&self) -> &'static str {
        if self.tls() { "rediss://" } else { "redis://" }
    }

    /// A client for this URL; over TLS, trusting only the certificates in `ca_file`
    /// when given (a private CA), else the system's roots.
    fn client(&self, ca_file: Option<&Path>) -> Result<redis::Client, String> {
        let Some(path) = ca_file.filter(|_| self.tls()) else {
            install_crypto_provider();
            return redis::Client::open(self.0.as_str()).map_err(|e| e.to_string());
        };
        let root_cert = read_ca_file(path)?;
        install_crypto_provider();
        redis::Client::build_with_tls(
            self.0.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        )
        .map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// rustls needs one process-wide crypto provider when more than one is built in; the
/// one PostgreSQL's TLS uses (aws-lc-rs). Installing it twice is harmless.
fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// The PEM certificates of a CA file, refusing a file that holds none: an empty trust
/// store would fail every connection later with a less helpful message.
pub fn read_ca_file(path: &Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(pem)
}

impl fmt::Display for RedisUrl {
    /// The URL with any password replaced by `***`: settings are printed by `config check`
    /// and logged, and land in tickets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = self.scheme();
        let rest = &self.0[scheme.len()..];
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split(':').next().unwrap_or("");
                write!(f, "{scheme}{user}:***@{host}{path}")
            }
            None => write!(f, "{scheme}{authority}{path}"),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

pub struct RedisLimiter {
    url: RedisUrl,
    /// `None` when the URL could not make a client; every check then fails like an
    /// unreachable store (`validate` refuses such a URL first).
    client: Option<redis::Client>,
    /// Connected on first use, then kept: the manager reconnects by itself.
    connection: tokio::sync::OnceCell<ConnectionManager>,
    prefix: String,
    /// (interval, tolerance) in microseconds, in [`LimitTier::ALL`]'s order.
    quotas: Vec<(u64, u64)>,
    script: redis::Script,
    /// The last check's outcome, so an outage is logged once, not once per request.
    reachable: AtomicBool,
    /// Until when (milliseconds since `started`) checks skip Redis; 0 when it answers.
    skip_until_ms: AtomicU64,
    started: Instant,
}

impl RedisLimiter {
    pub fn new(
        url: &RedisUrl,
        ca_file: Option<&Path>,
        prefix: &str,
        quota: impl Fn(LimitTier) -> Tier,
    ) -> Self {
        let quotas = LimitTier::ALL
            .iter()
            .map(|t| {
                let tier = quota(*t);
                // At least 1 µs: rates above 60 million a minute are that rate.
                let interval = (60_000_000 / u64::from(tier.per_minute.max(1))).max(1);
                (interval, interval * u64::from(tier.burst.max(1) - 1))
            })
            .collect();
        Self {
            url: url.clone(),
            client: url.client(ca_file).ok(),
            connection: tokio::sync::OnceCell::new(),
            prefix: prefix.to_owned(),
            quotas,
            script: redis::Script::new(GCRA),
            reachable: AtomicBool::new(true),
            skip_until_ms: AtomicU64::new(0),
            started: Instant::now(),
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    async fn connection(&self) -> redis::RedisResult<ConnectionManager> {
        let client = self.client.clone().ok_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "bad URL"))
        })?;
        self.connection
            .get_or_try_init(|| ConnectionManager::new_with_config(client, manager_config()))
            .await
            .cloned()
    }

    pub async fn check(&self, tier: LimitTier, client: IpAddr) -> LimitVerdict {
        if self.now_ms() < self.skip_until_ms.load(Ordering::Relaxed) {
            return LimitVerdict::StoreUnavailable;
        }
        let i = LimitTier::ALL.iter().position(|t| *t == tier).unwrap_or(0);
        let (interval, tolerance) = self.quotas[i];
        // `{prefix}:{tier}:{bucket}`: an IPv6 bucket is its /64, written `2001:db8:1:2::`.
        let key = format!("{}:{}:{client}", self.prefix, tier.name());
        let outcome = tokio::time::timeout(STORE_TIMEOUT, async {
            let mut conn = self.connection().await?;
            self.script
                .key(key)
                .arg(interval)
                .arg(tolerance)
                .invoke_async::<u64>(&mut conn)
                .await
        })
        .await;
        match outcome {
            Ok(Ok(wait)) => {
                self.mark_reachable();
                if wait == 0 {
                    LimitVerdict::Allowed
                } else {
                    LimitVerdict::Limited {
                        retry_after_secs: whole_secs(Duration::from_micros(wait)),
                    }
                }
            }
            Ok(Err(e)) => {
                self.mark_unreachable(&e.to_string());
                LimitVerdict::StoreUnavailable
            }
            Err(_) => {
                self.mark_unreachable("no answer within the timeout");
                LimitVerdict::StoreUnavailable
            }
        }
    }

    /// Connects and loads the script, with more time than a request gets: started with
    /// the server, so that the first requests pay one round trip, not a connection and
    /// a script load inside their 250 ms (on a busy machine they would not fit, and
    /// signups would meet a 503 right after a start).
    pub async fn warm_up(&self) {
        let ready = tokio::time::timeout(WARM_UP_TIMEOUT, async {
            let mut conn = self.connection().await?;
            self.script.load_async(&mut conn).await
        })
        .await;
        match ready {
            Ok(Ok(_)) => tracing::debug!(store = %self.url, "rate-limit store connected"),
            Ok(Err(e)) => self.mark_unreachable(&e.to_string()),
            Err(_) => self.mark_unreachable("no answer within the start-up timeout"),
        }
    }

    /// Whether Redis answers a PING within [`STORE_TIMEOUT`].
    pub async fn ping(&self) -> bool {
        let answered = tokio::time::timeout(STORE_TIMEOUT, async {
            let mut conn = self.connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        })
        .await;
        match answered {
            Ok(Ok(_)) => {
                self.mark_reachable();
                true
            }
            Ok(Err(e)) => {
                self.mark_unreachable(&e.to_string());
                false
            }
            Err(_) => {
                self.mark_unreachable("no answer within the timeout");
                false
            }
        }
    }

    fn mark_reachable(&self) {
        self.skip_until_ms.store(0, Ordering::Relaxed);
        if !self.reachable.swap(true, Ordering::Relaxed) {
            tracing::info!(store = %self.url, "rate-limit store answers again");
        }
    }

    fn mark_unreachable(&self, error: &str) {
        let retry_at = self.now_ms() + STORE_RETRY_AFTER.as_millis() as u64;
        self.skip_until_ms.store(retry_at, Ordering::Relaxed);
        if self.reachable.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                store = %self.url,
                error,
                "rate-limit store unreachable: GATEHOUSE_RATE_LIMIT_ON_STORE_ERROR decides \
                 which requests pass until it answers again"
            );
        }
    }
}

/// Bounded everywhere: a connection attempt and a response each get [`STORE_TIMEOUT`],
/// and a (re)connection is one attempt without retries, so a refused connection fails at
/// once; the next request after [`STORE_RETRY_AFTER`] starts the next attempt.
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(STORE_TIMEOUT)
        .set_response_timeout(STORE_TIMEOUT)
        .set_number_of_retries(0)
}

/// Why [`probe`] got no answer.
#[derive(Debug)]
pub enum ProbeFailure {
    /// The TLS handshake failed (an unknown CA, a name mismatch, a plain-text server):
    /// a setting to fix, which waiting will not.
    Tls(String),
    /// No answer (down, refused, a timeout, a refused password).
    NoAnswer(String),
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tls(e) | Self::NoAnswer(e) => f.write_str(e),
        }
    }
}

/// Connects to `url` and PINGs it, for `config check` and a TLS start: `Ok` when Redis
/// answers.
pub async fn probe(url: &RedisUrl, ca_file: Option<&Path>) -> Result<(), ProbeFailure> {
    let client = url.client(ca_file).map_err(ProbeFailure::Tls)?;
    let answered = tokio::time::timeout(Duration::from_secs(2), async {
        let mut conn = client.get_multiplexed_async_connection().await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await
    })
    .await;
    match answered {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if tls_failure(&e) => Err(ProbeFailure::Tls(e.to_string())),
        Ok(Err(e)) => Err(ProbeFailure::NoAnswer(e.to_string())),
        Err(_) => Err(ProbeFailure::NoAnswer("no answer within 2 seconds".into())),
    }
}

/// Whether rustls refused the handshake, anywhere in `e`'s causes.
fn tls_failure(e: &redis::RedisError) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .is_some_and(|i| i.is::<rustls::Error>());
        if err.is::<rustls::Error>() || inner {
            return true;
        }
        next = err.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_print_without_their_password() {
        let shown = |s: &str| RedisUrl::parse(s).expect(s).to_string();
        assert_eq!(shown("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            shown("redis://:s3cret@redis.internal:6380/2"),
            "redis://:***@redis.internal:6380/2"
        );
        assert_eq!(
            shown("redis://gh:s3cret@redis.internal/0"),
            "redis://gh:***@redis.internal/0"
        );
        assert!(!format!("{:?}", RedisUrl::parse("redis://:pw@h").expect("url")).contains("pw"));
    }

    #[test]
    fn tls_urls_print_without_their_password() {
        let url = RedisUrl::parse("rediss://:s3cret@cache.example.com:6380/0").expect("rediss");
        assert!(url.tls());
        assert_eq!(url.to_string(), "rediss://:***@cache.example.com:6380/0");
        assert!(!RedisUrl::parse("redis://h").expect("redis").tls());
    }

    #[test]
    fn only_redis_urls_are_taken() {
        assert!(RedisUrl::parse("http://h:6379").is_err());
        assert!(RedisUrl::parse("127.0.0.1:6379").is_err());
        assert!(RedisUrl::parse("redis://h:notaport").is_err());
    }
}
