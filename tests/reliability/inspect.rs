//! The database behind a (killed) server, read on either backend: what the crash harness
//! compares with what its clients were told. Plain SQL both engines read, with `$n`
//! parameters (SQLite reads them too); for the harness self-check it can also lose
//! acknowledged rows on purpose.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

use gatehouse::storage::postgres::PostgresUrl;

use crate::invariants::{SHAPE_CHECKS, open_db, storage_violations};
use crate::kit::pgdb::admin_client;

/// Where the data is.
pub enum Db {
    Sqlite(PathBuf),
    Postgres(Box<PostgresUrl>),
}

/// One value a query reads, on either backend.
trait Value: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a> + Send {}
impl<T: rusqlite::types::FromSql + for<'a> postgres::types::FromSql<'a> + Send> Value for T {}

/// A parameter, on either backend.
enum Param<'a> {
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl Db {
    pub fn name(&self) -> &'static str {
        match self {
            Db::Sqlite(_) => "SQLite",
            Db::Postgres(_) => "PostgreSQL",
        }
    }

    /// Every invariant of the stored families (and, on SQLite, the file's integrity);
    /// one line per violation.
    pub fn violations(&self) -> Vec<String> {
        match self {
            Db::Sqlite(path) => storage_violations(&open_db(path)),
            // PostgreSQL enforces its foreign keys and checksums its own pages: the
            // families' shape is what is left to check.
            Db::Postgres(_) => SHAPE_CHECKS
                .iter()
                .filter_map(|(what, sql)| {
                    let n: i64 = self.one(sql, &[]).expect("a count");
                    (n != 0).then(|| format!("{n} {what}"))
                })
                .collect(),
        }
    }

    pub fn users_with_email(&self, email: &str) -> i64 {
        self.one(
            "SELECT COUNT(*) FROM users WHERE email = $1",
            &[Param::Text(email)],
        )
        .expect("a count")
    }

    /// `Some(spent)` when the token is stored.
    pub fn token_spent(&self, hash: &[u8]) -> Option<bool> {
        self.one(
            "SELECT spent_at IS NOT NULL FROM refresh_tokens WHERE hash = $1",
            &[Param::Bytes(hash)],
        )
    }

    /// Every family: id → why it was revoked (`None`: live).
    pub fn families(&self) -> HashMap<String, Option<String>> {
        self.all2(
            match self {
                Db::Sqlite(_) => "SELECT id, revoked_reason FROM refresh_families",
                Db::Postgres(_) => "SELECT id::text, revoked_reason FROM refresh_families",
            },
            &[],
        )
        .into_iter()
        .collect()
    }

    pub fn token_hashes(&self) -> HashSet<Vec<u8>> {
        self.all2::<Vec<u8>, bool>("SELECT hash, true FROM refresh_tokens", &[])
            .into_iter()
            .map(|(h, _)| h)
            .collect()
    }

    /// For the harness self-check only: plays a storage engine that lost a row.
    pub fn delete_token(&self, hash: &[u8]) -> usize {
        self.execute(
            "DELETE FROM refresh_tokens WHERE hash = $1",
            &[Param::Bytes(hash)],
        )
    }

    /// For the harness self-check only.
    pub fn delete_user(&self, email: &str) -> usize {
        self.execute("DELETE FROM users WHERE email = $1", &[Param::Text(email)])
    }

    fn one<T: Value>(&self, sql: &str, params: &[Param<'_>]) -> Option<T> {
        match self {
            Db::Sqlite(path) => {
                let conn = open_db(path);
                let mut statement = conn.prepare(sql).expect("prepare");
                let mut rows = statement
                    .query(rusqlite::params_from_iter(params.iter().map(lite)))
                    .unwrap_or_else(|e| panic!("`{sql}`: {e}"));
                rows.next()
                    .unwrap_or_else(|e| panic!("`{sql}`: {e}"))
                    .map(|r| r.get(0).unwrap_or_else(|e| panic!("`{sql}`: {e}")))
            }
            Db::Postgres(url) => on_pg(url, |c| {
                c.query_opt(sql, &pg_params(params))
                    .unwrap_or_else(|e| panic!("`{sql}`: {e}"))
                    .map(|r| r.get(0))
            }),
        }
    }

    fn all2<A: Value, B: Value>(&self, sql: &str, params: &[Param<'_>]) -> Vec<(A, B)> {
        match self {
            Db::Sqlite(path) => {
                let conn = open_db(path);
                let mut statement = conn.prepare(sql).expect("prepare");
                statement
                    .query_map(rusqlite::params_from_iter(params.iter().map(lite)), |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .and_then(|rows| rows.collect())
                    .unwrap_or_else(|e| panic!("`{sql}`: {e}"))
            }
            Db::Postgres(url) => on_pg(url, |c| {
                c.query(sql, &pg_params(params))
                    .unwrap_or_else(|e| panic!("`{sql}`: {e}"))
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect()
            }),
        }
    }

    fn execute(&self, sql: &str, params: &[Param<'_>]) -> usize {
        match self {
            Db::Sqlite(path) => open_db(path)
                .execute(sql, rusqlite::params_from_iter(params.iter().map(lite)))
                .unwrap_or_else(|e| panic!("`{sql}`: {e}")),
            Db::Postgres(url) => on_pg(url, |c| {
                c.execute(sql, &pg_params(params))
                    .unwrap_or_else(|e| panic!("`{sql}`: {e}")) as usize
            }),
        }
    }
}

fn lite<'a>(p: &'a Param<'a>) -> &'a dyn rusqlite::ToSql {
    match p {
        Param::Text(t) => t,
        Param::Bytes(b) => b,
    }
}

fn pg_params<'a>(params: &'a [Param<'a>]) -> Vec<&'a (dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| -> &(dyn postgres::types::ToSql + Sync) {
            match p {
                Param::Text(t) => t,
                Param::Bytes(b) => b,
            }
        })
        .collect()
}

/// The synchronous client drives a runtime of its own, which cannot start on a thread
/// that drives the test's: each query runs on a thread of its own.
fn on_pg<T: Send>(url: &PostgresUrl, job: impl FnOnce(&mut postgres::Client) -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let mut client = admin_client(url).expect("connect to the test database");
                job(&mut client)
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
