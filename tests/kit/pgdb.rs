//! A PostgreSQL database of its own for one test, created on the test server and dropped
//! when the test ends. Shared by the store suite and the test kit (`#[path]`-included by
//! each, like the kit itself).

use std::time::Duration;

use gatehouse::storage::postgres::PostgresUrl;

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The test server's URL as configured (it may carry a password: never print it).
pub fn server_url() -> String {
    std::env::var("GATEHOUSE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into())
}

/// A database created for one test and dropped when the test ends, passed or panicked.
pub struct TestDatabase {
    admin: PostgresUrl,
    pub name: String,
}

impl TestDatabase {
    /// `None` (said loudly) when `GATEHOUSE_TEST_POSTGRES=off`; panics, saying how to
    /// start one, when no server answers.
    pub fn new(test: &str) -> Option<Self> {
        if std::env::var("GATEHOUSE_TEST_POSTGRES").is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
            static ONCE: std::sync::Once = std::sync::Once::new();
            ONCE.call_once(|| {
                loud(
                    "GATEHOUSE_TEST_POSTGRES=off: every PostgreSQL test of this binary passes \
                     WITHOUT RUNNING. The PostgreSQL backend is NOT tested by this run.",
                );
            });
            return None;
        }
        let admin = PostgresUrl::parse(&server_url())
            .unwrap_or_else(|e| panic!("GATEHOUSE_TEST_POSTGRES_URL: {e}"));
        let name = format!("gatehouse_test_{}", uuid::Uuid::new_v4().simple());
        // The client is dropped inside too: its drop blocks on its runtime as well.
        let created = off_runtime(|| {
            let mut client = admin_client(&admin).map_err(|e| (true, e))?;
            client
                .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                .map_err(|e| (false, e.into()))
        });
        match created {
            Ok(()) => {}
            Err((true, e)) => panic!(
                "\nNo PostgreSQL server answers at {admin}: {e:#}\n\
                 The PostgreSQL tests need one. Start it with\n    \
                 pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
                 (Debian; `apt-get install postgresql` if missing), or point \
                 GATEHOUSE_TEST_POSTGRES_URL at a server whose user may CREATE DATABASE.\n\
                 GATEHOUSE_TEST_POSTGRES=off skips the PostgreSQL tests (not in CI).\n"
            ),
            Err((false, e)) => panic!("{test}: cannot create the test database {name}: {e}"),
        }
        Some(Self { admin, name })
    }

    /// The server's URL, on this database.
    pub fn url(&self) -> PostgresUrl {
        self.admin.with_dbname(&self.name)
    }

    /// The server's URL as text, on this database, for the binary's environment.
    pub fn url_text(&self) -> String {
        let raw = server_url();
        let (head, query) = raw.split_once('?').unwrap_or((&raw, ""));
        let (scheme, rest) = head.split_once("://").expect("a URL");
        let authority = rest.split('/').next().unwrap_or(rest);
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        format!("{scheme}://{authority}/{}{query}", self.name)
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let dropped = off_runtime(|| {
            admin_client(&self.admin).and_then(|mut c| {
                // FORCE: a connection the app (or a failed test) left open must not keep
                // the database.
                c.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                    self.name
                ))
                .map_err(anyhow::Error::from)
            })
        });
        if let Err(e) = dropped {
            // Straight to stderr: a leaked database is worth seeing after a passing test.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "warning: could not drop test database {}: {e}",
                self.name
            );
        }
    }
}

/// Runs `job` on a thread of its own: the synchronous `postgres` client runs a Tokio
/// runtime inside, which panics on a thread that already drives one, as the async HTTP
/// tests' threads do (both when a `TestApp` is created and when it drops).
fn off_runtime<T: Send>(job: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(job)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

pub fn admin_client(url: &PostgresUrl) -> anyhow::Result<postgres::Client> {
    let mut config = url.config().clone();
    config.connect_timeout(Duration::from_secs(5));
    Ok(config.connect(url.connector()?)?)
}

/// Says `message` on the terminal even when the test passes: libtest captures
/// `eprintln!` of passing tests, but not writes to the stderr handle itself.
pub fn loud(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "\n!!! SKIPPED: {message} !!!\n");
}
