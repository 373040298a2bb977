//! A fresh store per test, on each backend.

use std::sync::Arc;
use std::time::Duration;

use gatehouse::storage::sqlite::Synchronous;
use gatehouse::storage::{self, DatabaseSettings, Store};

use crate::pgdb::TestDatabase;

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
/// `GATEHOUSE_TEST_POSTGRES=off`; `prepared` as `GATEHOUSE_DB_PREPARED_STATEMENTS`.
pub fn postgres(test: &str, prepared: bool) -> Option<Backend> {
    let database = TestDatabase::new(test)?;
    let store = storage::open(&DatabaseSettings::Postgres {
        url: Box::new(database.url()),
        pool_size: 8,
        connect_timeout: Duration::from_secs(10),
        start_timeout: Duration::ZERO,
        prepared_statements: prepared,
    })
    .unwrap_or_else(|e| panic!("cannot open the test database {}: {e:#}", database.name));
    Some(Backend {
        store,
        _dir: None,
        _database: Some(database),
    })
}
