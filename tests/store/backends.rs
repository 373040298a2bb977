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
    if std::env::var("GATEHOUSE_TEST_POSTGRES").is_ok_and(|v| v.eq_ignore_ascii_case("off")) {
        eprintln!(
            "\n!!! SKIPPED {test} on PostgreSQL: GATEHOUSE_TEST_POSTGRES=off. The PostgreSQL \
             backend is NOT tested by this run. !!!\n"
        );
        return None;
    }
    let raw = std::env::var("GATEHOUSE_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_URL.into());
    let url =
        PostgresUrl::parse(&raw).unwrap_or_else(|e| panic!("GATEHOUSE_TEST_POSTGRES_URL: {e}"));
    let name = format!("gatehouse_test_{}", uuid::Uuid::new_v4().simple());
    let database = TestDatabase::create(&url, &name);
    let store = storage::open(&DatabaseSettings::Postgres {
        url: Box::new(url.with_dbname(&name)),
        pool_size: 8,
        connect_timeout: Duration::from_secs(10),
    })
    .unwrap_or_else(|e| panic!("cannot open the test database {name}: {e:#}"));
    Some(Backend {
        store,
        _dir: None,
        _database: Some(database),
    })
}

/// A database created for one test and dropped when the test ends, passed or panicked.
struct TestDatabase {
    admin: PostgresUrl,
    name: String,
}

impl TestDatabase {
    fn create(admin: &PostgresUrl, name: &str) -> Self {
        let mut client = admin_client(admin).unwrap_or_else(|e| {
            panic!(
                "\nNo PostgreSQL server answers at {admin}: {e}\n\
                 The store conformance tests need one. Start it with\n    \
                 pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start\n\
                 (Debian; `apt-get install postgresql` if missing), or point \
                 GATEHOUSE_TEST_POSTGRES_URL at a server whose user may CREATE DATABASE.\n\
                 GATEHOUSE_TEST_POSTGRES=off skips the PostgreSQL cases (not in CI).\n"
            )
        });
        client
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("cannot create the test database {name}: {e}"));
        Self {
            admin: admin.clone(),
            name: name.to_owned(),
        }
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
            eprintln!("warning: could not drop test database {}: {e}", self.name);
        }
    }
}

fn admin_client(url: &PostgresUrl) -> anyhow::Result<postgres::Client> {
    let mut config = url.config().clone();
    config.connect_timeout(Duration::from_secs(5));
    Ok(config.connect(url.connector()?)?)
}
