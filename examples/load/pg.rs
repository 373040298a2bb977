//! `--postgres`: a fresh database of the run's own on a shared PostgreSQL server,
//! dropped at the end (also on an error or Ctrl-C), and the CPU time of the server
//! processes working for it, which the gatehouse process's own CPU does not include.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use gatehouse::storage::postgres::PostgresUrl;

/// A database created for one invocation; dropped (WITH FORCE) when this drops.
pub(crate) struct BenchDatabase {
    admin: PostgresUrl,
    admin_text: String,
    pub(crate) name: String,
    /// The key-encryption key gatehouse requires on PostgreSQL (its signing keys live in
    /// the database, sealed under it): one per database, shared by every server on it.
    kek: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl BenchDatabase {
    /// Creates `gatehouse_bench_<random>` on the server at `admin_text` (a URL whose user
    /// may CREATE DATABASE); no other database is touched.
    pub(crate) fn create(admin_text: &str) -> anyhow::Result<Self> {
        let admin =
            PostgresUrl::parse(admin_text).map_err(|e| anyhow::anyhow!("--postgres: {e}"))?;
        let name = format!("gatehouse_bench_{}", uuid::Uuid::new_v4().simple());
        off_runtime(|| -> anyhow::Result<()> {
            let mut client = connect(&admin).with_context(|| {
                format!(
                    "no PostgreSQL server answers at {admin} (start one, set \
                     GATEHOUSE_BENCH_POSTGRES_URL, or run bench/run.sh --no-postgres)"
                )
            })?;
            client
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .with_context(|| format!("cannot create database {name}"))
        })?;
        eprintln!("created PostgreSQL database {name}");
        let dir = tempfile::tempdir()?;
        let kek = dir.path().join("kek");
        {
            use std::io::Write as _;
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&kek)?
                .write_all(&gatehouse::crypto::random_bytes::<32>())?;
        }
        Ok(Self {
            admin,
            admin_text: admin_text.to_owned(),
            name,
            kek,
            _dir: dir,
        })
    }

    /// The environment a server on this database needs besides its URL.
    pub(crate) fn kek_env(&self) -> String {
        format!("GATEHOUSE_KEY_ENCRYPTION_KEY_FILE={}", self.kek.display())
    }

    /// The URL the server is given: the admin URL's user, host and parameters, on this
    /// database.
    pub(crate) fn url_text(&self) -> String {
        let raw = &self.admin_text;
        let (head, query) = raw.split_once('?').unwrap_or((raw, ""));
        let (scheme, rest) = head.split_once("://").unwrap_or(("postgres", head));
        let authority = rest.split('/').next().unwrap_or(rest);
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("{scheme}://{authority}/{}{query}", self.name)
    }

    /// The same URL with the host and port replaced, for the counting relay.
    pub(crate) fn url_text_via(&self, port: u16) -> String {
        let url = self.url_text();
        let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", &url));
        let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        format!(
            "{scheme}://{}127.0.0.1:{port}{tail}",
            user.unwrap_or_default()
        )
    }

    /// The server's TCP address, when it is reached over TCP (the relay needs one).
    pub(crate) fn tcp_upstream(&self) -> Option<std::net::SocketAddr> {
        let config = self.admin.config();
        if config.get_hosts().len() != 1 {
            return None;
        }
        let port = config.get_ports().first().copied().unwrap_or(5432);
        match &config.get_hosts()[0] {
            ::postgres::config::Host::Tcp(h) => {
                std::net::ToSocketAddrs::to_socket_addrs(&(h.as_str(), port))
                    .ok()?
                    .next()
            }
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Samples the CPU of the server processes connected to this database.
    pub(crate) fn probe(&self) -> anyhow::Result<DbProbe> {
        DbProbe::start(self.admin.clone(), self.name.clone())
    }
}

impl Drop for BenchDatabase {
    fn drop(&mut self) {
        let dropped = off_runtime(|| {
            connect(&self.admin).and_then(|mut c| {
                // FORCE: a server killed a moment ago may still hold connections.
                c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                ))
                .map_err(anyhow::Error::from)
            })
        });
        match dropped {
            Ok(()) => eprintln!("dropped PostgreSQL database {}", self.name),
            Err(e) => eprintln!(
                "load: warning: could not drop PostgreSQL database {}: {e:#}",
                self.name
            ),
        }
    }
}

fn connect(url: &PostgresUrl) -> anyhow::Result<::postgres::Client> {
    let mut config = url.config().clone();
    config.connect_timeout(Duration::from_secs(5));
    config.application_name("gatehouse-load");
    Ok(config.connect(url.connector()?)?)
}

/// The synchronous client runs a runtime of its own, which must not start on a thread
/// that drives the load tool's.
fn off_runtime<T: Send>(job: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(job)
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

type Job = Box<dyn FnOnce(&mut ::postgres::Client) + Send>;

/// One admin connection on a thread of its own, asked for the backends of the database
/// at the start and end of each measured window.
pub(crate) struct DbProbe {
    jobs: mpsc::Sender<Job>,
    name: String,
}

/// CPU seconds of each backend process at one instant.
pub(crate) type CpuSample = BTreeMap<u32, f64>;

impl DbProbe {
    fn start(admin: PostgresUrl, name: String) -> anyhow::Result<Self> {
        let (jobs, rx) = mpsc::channel::<Job>();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("pg-probe".into())
            .spawn(move || {
                let mut client = match connect(&admin) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                while let Ok(job) = rx.recv() {
                    job(&mut client);
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(Self { jobs, name }),
            Ok(Err(e)) => Err(e),
            Err(_) => bail!("the PostgreSQL probe thread died"),
        }
    }

    /// The CPU time so far of every server process connected to the database (client
    /// backends, and autovacuum workers cleaning up after the load), read from /proc.
    pub(crate) async fn sample(&self) -> CpuSample {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let name = self.name.clone();
        let job: Job = Box::new(move |c| {
            let pids: Vec<u32> = c
                .query(
                    "SELECT pid FROM pg_stat_activity WHERE datname = $1",
                    &[&name],
                )
                .map(|rows| {
                    rows.iter()
                        .filter_map(|r| u32::try_from(r.get::<_, i32>(0)).ok())
                        .collect()
                })
                .unwrap_or_default();
            let _ = tx.send(pids);
        });
        if self.jobs.send(job).is_err() {
            return CpuSample::new();
        }
        let pids = rx.await.unwrap_or_default();
        pids.into_iter()
            .filter_map(|p| Some((p, crate::rss::cpu_secs(p)?)))
            .collect()
    }
}

/// CPU seconds the database's server processes spent between two samples; a backend
/// that appeared in between counts from its start (its connection setup included).
pub(crate) fn cpu_delta(before: &CpuSample, after: &CpuSample) -> f64 {
    after
        .iter()
        .map(|(pid, cpu)| cpu - before.get(pid).copied().unwrap_or(0.0))
        .sum()
}
