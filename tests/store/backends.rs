//! A fresh store per test, on each backend.

use std::sync::Arc;
use std::time::Duration;

use gatehouse::domain::UserId;
use gatehouse::storage::sqlite::Synchronous;
use gatehouse::storage::{self, DatabaseSettings, Store};

use crate::pgdb::{TestDatabase, admin_client};

/// The store, then what it lives in: fields drop in this order, so the pool closes
/// before its database is dropped or its directory deleted.
pub struct Backend {
    pub store: Arc<dyn Store>,
    _dir: Option<tempfile::TempDir>,
    _database: Option<TestDatabase>,
}

/// A case takes `&Backend` where it reaches past the store (`set_role_unchecked`), and
/// `&Arc<dyn Store>` everywhere else, which this lets the macro pass alike.
impl std::ops::Deref for Backend {
    type Target = Arc<dyn Store>;
    fn deref(&self) -> &Self::Target {
        &self.store
    }
}

impl Backend {
    /// Gives a user a role the schema refuses, on a connection of its own and past the
    /// CHECK constraint: the row a hand edit or a newer gatehouse could leave, which no
    /// store method can write.
    pub fn set_role_unchecked(&self, user: UserId, role: &str) {
        if let Some(db) = &self._database {
            let mut client = admin_client(&db.url()).expect("connect to the test database");
            client
                .batch_execute("ALTER TABLE users DROP CONSTRAINT users_role_check")
                .expect("drop the role CHECK");
            let changed = client
                .execute(
                    "UPDATE users SET role = $1 WHERE id = $2",
                    &[&role, &user.as_uuid()],
                )
                .expect("set the role");
            assert_eq!(changed, 1, "the user's row");
        } else if let Some(dir) = &self._dir {
            let conn = rusqlite::Connection::open(dir.path().join("gatehouse.db"))
                .expect("open the SQLite file");
            conn.execute_batch("PRAGMA ignore_check_constraints = ON")
                .expect("ignore the role CHECK");
            let changed = conn
                .execute(
                    "UPDATE users SET role = ?1 WHERE id = ?2",
                    rusqlite::params![role, user.to_string()],
                )
                .expect("set the role");
            assert_eq!(changed, 1, "the user's row");
        }
    }
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
