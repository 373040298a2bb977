//! A fresh store per test, on each backend.

use std::sync::Arc;
use std::time::Duration;

use gatehouse::storage::postgres::PostgresUrl;
use gatehouse::storage::sqlite::Synchronous;
use gatehouse::storage::{self, DatabaseSettings, Store};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The store, then what it lives in: fields drop in this order, so the pool closes
/// before its database is dropped or its directory deleted.
pub struct Backend {
    pub store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

pub fn sqlite() -> Backend {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = storage::open(&DatabaseSettings::Sqlite {
        path: dir.path().join("gatehouse.db"),
        synchronous: Synchronous::Normal,
        readers: 4,
    })
    .expect("open SQLite");
    Backend {
        store,
        _dir: Some(dir),
        _database: None,
    }
}

/// A store on a new database of the test server, or `None` (said loudly) when
/// `GATEHOUSE_TEST_POSTGRES=off`.
pub fn postgres(test: &str) -> Option<Backend> {
    let database = TestDatabase::new(test)?;
    let store = storage::open(&DatabaseSettings::Postgres {
        url: Box::new(database.url()),
        pool_size: 8,
        connect_timeout: Duration::from_secs(10),
    })
    .unwrap_or_else(|e| panic!("cannot open the test database {}: {e:#}", database.name));
    Some(Backend {
        store,
        _dir: None,
        _database: Some(database),
    })
}

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
        let mut client = admin_client(&admin).unwrap_or_else(|e| {
            panic!(
                "\nNo PostgreSQL server answers at {admin}: {e:#}\n\
                 The store conformance tests need one. Start it with\n    \
                 pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
                 (Debian; `apt-get install postgresql` if missing), or point \
                 GATEHOUSE_TEST_POSTGRES_URL at a server whose user may CREATE DATABASE.\n\
                 GATEHOUSE_TEST_POSTGRES=off skips the PostgreSQL cases (not in CI).\n"
            )
        });
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("{test}: cannot create the test database {name}: {e}"));
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
        let dropped = admin_client(&self.admin).and_then(|mut c| {
            // FORCE: a connection a failed test left open must not keep the database.
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .map_err(anyhow::Error::from)
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
