//! Redis for the rate limiter's tests: the shared server (never stopped or reconfigured;
//! each app counts under a key prefix of its own) and private `redis-server`s that fault
//! tests start, stop and freeze on a free port.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use gatehouse::http::limiter::RedisUrl;

use super::pgdb::loud;
use super::ports::free_port;

const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The shared test Redis, or `None` (said loudly, once) when `GATEHOUSE_TEST_REDIS=off`.
/// Panics, saying how to start one, when none answers.
pub fn shared() -> Option<RedisUrl> {
    if std::env::var("GATEHOUSE_TEST_REDIS").is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            loud(
                "GATEHOUSE_TEST_REDIS=off: the rate-limit tests meant for Redis count in \
                 memory instead, and the Redis-only tests pass WITHOUT RUNNING. The shared \
                 (Redis) limiter is NOT tested by this run.",
            )
        });
        return None;
    }
    static CHECKED: OnceLock<Result<String, String>> = OnceLock::new();
    let raw = std::env::var("GATEHOUSE_TEST_REDIS_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let answered = CHECKED.get_or_init(|| {
        let url = RedisUrl::parse(&raw).map_err(|e| format!("GATEHOUSE_TEST_REDIS_URL: {e}"))?;
        let addr = host_port(&raw);
        ping(&addr, Duration::from_secs(2))
            .map(|()| raw.clone())
            .map_err(|e| format!("No Redis answers at {url}: {e}"))
    });
    match answered {
        Ok(raw) => Some(RedisUrl::parse(raw).expect("checked above")),
        Err(e) => panic!(
            "\n{e}\nThe rate-limit tests on Redis need one. Start it with\n    \
             redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save \"\" \
             --appendonly no\n(Debian: `apt-get install redis-server` if missing), or point \
             GATEHOUSE_TEST_REDIS_URL at one.\nGATEHOUSE_TEST_REDIS=off skips them (not in CI).\n"
        ),
    }
}

/// A key prefix no other test uses, so tests on the shared Redis never share a budget.
pub fn unique_prefix() -> String {
    format!("gatehouse-test:{}", uuid::Uuid::new_v4().simple())
}

/// `HOST:PORT` of a `redis://` URL without credentials or database.
fn host_port(raw: &str) -> String {
    let rest = raw.trim_start_matches("redis://");
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') && !host.ends_with(']') {
        host.to_owned()
    } else {
        format!("{host}:6379")
    }
}

/// Sends PING in RESP and waits for `+PONG`: a blocking check without the async client,
/// usable from any thread.
fn ping(addr: &str, timeout: Duration) -> Result<(), String> {
    let sock = addr
        .parse()
        .map_err(|_| format!("{addr} is not an address the tests can reach"))?;
    let mut stream = TcpStream::connect_timeout(&sock, timeout).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    stream.write_all(b"PING\r\n").map_err(|e| e.to_string())?;
    let mut buf = [0u8; 64];
    let n = stream.read(&mut buf).map_err(|e| e.to_string())?;
    if buf[..n].starts_with(b"+PONG") {
        Ok(())
    } else {
        Err(format!("answered {:?}", String::from_utf8_lossy(&buf[..n])))
    }
}

/// A `redis-server` of the test's own on a free loopback port, without persistence;
/// killed when dropped. Faults (stop, freeze) go against it, never the shared one.
pub struct PrivateRedis {
    pub port: u16,
    child: Option<Child>,
    frozen: bool,
}

impl PrivateRedis {
    pub fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            child: None,
            frozen: false,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> RedisUrl {
        RedisUrl::parse(&format!("redis://127.0.0.1:{}", self.port)).expect("a Redis URL")
    }

    /// Starts the server again on the same port (after [`PrivateRedis::stop`]), empty.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "this redis-server is still running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): the Redis fault tests start one of their \
                     own; `apt-get install redis-server`"
                )
            });
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        let deadline = Instant::now() + Duration::from_secs(10);
        while ping(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the private redis-server on port {} did not answer within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL: an outage, not a goodbye) and reaps it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.frozen = false;
    }

    /// SIGSTOP: the server keeps its port and connections but answers nothing, as a hung
    /// Redis does.
    pub fn freeze(&mut self) {
        self.signal("-STOP");
        self.frozen = true;
    }

    pub fn thaw(&mut self) {
        self.signal("-CONT");
        self.frozen = false;
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("not running").id().to_string();
        let status = Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill {sig} {pid}: {status}");
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if self.frozen {
            self.thaw();
        }
        self.stop();
    }
}

/// A `redis-server` of the test's own that speaks only TLS, on a free loopback port,
/// with a certificate for `127.0.0.1` signed by a CA made for it (openssl CLI); and a
/// second CA that signed nothing, for a client that trusts the wrong one. Killed when
/// dropped.
pub struct TlsRedis {
    pub port: u16,
    /// PEM of the CA that signed the server's certificate.
    pub ca: std::path::PathBuf,
    /// PEM of a CA that did not.
    pub other_ca: std::path::PathBuf,
    child: Child,
    _dir: tempfile::TempDir,
}

impl TlsRedis {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let d = dir.path();
        let path = |name: &str| d.join(name).to_str().expect("utf-8 temp path").to_owned();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .unwrap_or_else(|e| {
                    panic!("cannot run openssl ({e}): the Redis TLS tests make their certificates with it; `apt-get install openssl`")
                });
            assert!(
                out.status.success(),
                "openssl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        };
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=gatehouse test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
                "-keyout",
                &path(&format!("{ca}.key")),
                "-out",
                &path(&format!("{ca}.pem")),
            ]);
        }
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            &path("server.key"),
            "-out",
            &path("server.csr"),
        ]);
        std::fs::write(
            d.join("server.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
        )
        .expect("write server.ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path("server.csr"),
            "-CA",
            &path("ca.pem"),
            "-CAkey",
            &path("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &path("server.ext"),
            "-out",
            &path("server.pem"),
        ]);
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--tls-cert-file", &path("server.pem")])
            .args(["--tls-key-file", &path("server.key")])
            .args(["--tls-ca-cert-file", &path("ca.pem")])
            .args(["--tls-auth-clients", "no"])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): `apt-get install redis-server`")
            });
        let mut redis = Self {
            port,
            ca: d.join("ca.pem"),
            other_ca: d.join("other-ca.pem"),
            child,
            _dir: dir,
        };
        // Listening is enough: the handshake is what the tests are about.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = redis.child.try_wait() {
                panic!("redis-server with TLS exited ({status}): is it built with TLS?");
            }
            assert!(
                Instant::now() < deadline,
                "the TLS redis-server on port {port} did not listen within 10 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        redis
    }

    /// `rediss://127.0.0.1:PORT`
    pub fn url(&self) -> RedisUrl {
        RedisUrl::parse(&format!("rediss://127.0.0.1:{}", self.port)).expect("a rediss URL")
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
