//! Statements prepared once per pooled connection, then run by name.
//!
//! Sent unnamed (`query_typed`), every call makes PostgreSQL parse and plan its text
//! again: most of the server's CPU per refresh and per `/v1/me` (BENCHMARKS.md).
//! Prepared, a call is one Bind/Execute round trip on a statement the session keeps; the
//! first call of a text on a connection costs one more round trip, to prepare it.
//!
//! [`Connection`] has the driver's method names and argument shapes, so the closures given
//! to `PgStore::read`, `write` and `transaction` read as they did on a
//! `postgres::Client`; whether a text is prepared is decided here, once.
//!
//! With `GATEHOUSE_DB_PREPARED_STATEMENTS=off` nothing is prepared and every call is sent
//! unnamed, for poolers that cannot carry a named statement from one transaction to the
//! next (PgBouncer before 1.21 in transaction pooling, or later ones without
//! `max_prepared_statements`).

use std::collections::HashMap;

use ::postgres::error::SqlState;
use ::postgres::types::{ToSql, Type};
use ::postgres::{Client, Error, GenericClient, Row, Statement, Transaction};

pub(super) type Params<'a> = [(&'a (dyn ToSql + Sync), Type)];

/// Statements kept per connection. gatehouse's texts are fixed (about 40); the bound
/// keeps a text built from data, should one ever be written, from growing the cache and
/// the server's session memory without end: past it, a new text is sent unnamed.
const CAPACITY: usize = 128;

/// A connection's prepared statements, kept in its r2d2 extensions: they live and die
/// with the connection they were prepared on (a replaced connection starts empty).
#[derive(Default)]
pub(super) struct Statements(Cache<Statement>);

/// Values by SQL text and parameter types, at most `capacity` of them.
struct Cache<S> {
    by_text: HashMap<String, (Vec<Type>, S)>,
    capacity: usize,
}

impl<S: Clone> Default for Cache<S> {
    fn default() -> Self {
        Self::with_capacity(CAPACITY)
    }
}

impl<S: Clone> Cache<S> {
    fn with_capacity(capacity: usize) -> Self {
        Self {
            by_text: HashMap::new(),
            capacity,
        }
    }

    fn get(&self, sql: &str, params: &Params<'_>) -> Option<S> {
        let (types, value) = self.by_text.get(sql)?;
        types
            .iter()
            .eq(params.iter().map(|(_, t)| t))
            .then(|| value.clone())
    }

    /// Whether `sql` may be stored: it is there already (with other types: replaced), or
    /// there is room.
    fn admits(&self, sql: &str) -> bool {
        self.by_text.len() < self.capacity || self.by_text.contains_key(sql)
    }

    fn insert(&mut self, sql: &str, types: Vec<Type>, value: S) {
        if self.admits(sql) {
            self.by_text.insert(sql.to_owned(), (types, value));
        }
    }

    fn clear(&mut self) {
        self.by_text.clear();
    }
}

/// A pooled connection, or a transaction on one, that prepares what it runs when given
/// a cache and sends it unnamed when not.
pub(super) struct Connection<'c, C> {
    client: C,
    statements: Option<&'c mut Statements>,
}

/// What a closure given to `PgStore::read` and `write` gets.
pub(super) type Conn<'c> = Connection<'c, &'c mut Client>;

/// What a closure given to `PgStore::transaction` gets.
pub(super) type Tx<'c> = Connection<'c, Transaction<'c>>;

/// The driver's client under a session.
pub(super) trait Driver {
    type Client: GenericClient;
    /// A failed statement aborts the transaction around it: nothing more runs in it, so
    /// the whole transaction must be repeated instead (see `PgStore::run`).
    const IN_TRANSACTION: bool;
    fn client(&mut self) -> &mut Self::Client;
}

impl Driver for &mut Client {
    type Client = Client;
    const IN_TRANSACTION: bool = false;
    fn client(&mut self) -> &mut Client {
        self
    }
}

impl<'t> Driver for Transaction<'t> {
    type Client = Transaction<'t>;
    const IN_TRANSACTION: bool = true;
    fn client(&mut self) -> &mut Transaction<'t> {
        self
    }
}

impl<'c> Conn<'c> {
    /// `statements`: prepare and keep what runs here; `None` sends every text unnamed.
    pub(super) fn new(client: &'c mut Client, statements: Option<&'c mut Statements>) -> Self {
        Self { client, statements }
    }

    /// A transaction at READ COMMITTED, named in its BEGIN whatever the role's or the
    /// database's default: every transaction of several statements here relies on a
    /// later statement reading what committed while an earlier one waited for a lock
    /// (under REPEATABLE READ it would read the snapshot from before the wait).
    pub(super) fn transaction(&mut self) -> Result<Tx<'_>, Error> {
        Ok(Connection {
            client: self
                .client
                .build_transaction()
                .isolation_level(::postgres::IsolationLevel::ReadCommitted)
                .start()?,
            statements: self.statements.as_deref_mut(),
        })
    }
}

impl Tx<'_> {
    pub(super) fn commit(self) -> Result<(), Error> {
        self.client.commit()
    }
}

impl<C: Driver> Connection<'_, C> {
    pub(super) fn query_typed(
        &mut self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Vec<Row>, Error> {
        self.run(sql, params, C::Client::query_typed, |c, s, v| c.query(s, v))
    }

    pub(super) fn query_typed_opt(
        &mut self,
        sql: &str,
        params: &Params<'_>,
    ) -> Result<Option<Row>, Error> {
        self.run(sql, params, C::Client::query_typed_opt, |c, s, v| {
            c.query_opt(s, v)
        })
    }

    pub(super) fn query_typed_one(&mut self, sql: &str, params: &Params<'_>) -> Result<Row, Error> {
        self.run(sql, params, C::Client::query_typed_one, |c, s, v| {
            c.query_one(s, v)
        })
    }

    fn run<T>(
        &mut self,
        sql: &str,
        params: &Params<'_>,
        unnamed: impl Fn(&mut C::Client, &str, &Params<'_>) -> Result<T, Error>,
        named: impl Fn(&mut C::Client, &Statement, &[&(dyn ToSql + Sync)]) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let client = self.client.client();
        let Some(Statements(cache)) = self.statements.as_deref_mut() else {
            return unnamed(client, sql, params);
        };
        let values: Vec<&(dyn ToSql + Sync)> = params.iter().map(|(v, _)| *v).collect();
        let (statement, cached) = match cache.get(sql, params) {
            Some(statement) => (statement, true),
            None if !cache.admits(sql) => return unnamed(client, sql, params),
            None => (prepare(client, cache, sql, params)?, false),
        };
        match named(client, &statement, &values) {
            Err(e) if cached && forgotten(&e) => {
                // The server dropped the session's statements (`DEALLOCATE ALL`, or a
                // pooler's `DISCARD ALL` when it reassigned the server connection):
                // every cached one is gone, not only this one.
                cache.clear();
                if C::IN_TRANSACTION {
                    return Err(e);
                }
                // A statement the server could not find did not run, so preparing and
                // running it again is safe for a write too.
                let statement = prepare(client, cache, sql, params)?;
                named(client, &statement, &values)
            }
            result => result,
        }
    }
}

fn prepare<C: GenericClient>(
    client: &mut C,
    cache: &mut Cache<Statement>,
    sql: &str,
    params: &Params<'_>,
) -> Result<Statement, Error> {
    let types: Vec<Type> = params.iter().map(|(_, t)| t.clone()).collect();
    let statement = client.prepare_typed(sql, &types)?;
    cache.insert(sql, types, statement.clone());
    Ok(statement)
}

/// SQLSTATE 26000: a statement name the session does not know.
pub(super) fn forgotten(e: &Error) -> bool {
    e.code() == Some(&SqlState::INVALID_SQL_STATEMENT_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params<'a>(types: &[Type], value: &'a i64) -> Vec<(&'a (dyn ToSql + Sync), Type)> {
        types
            .iter()
            .map(|t| (value as &(dyn ToSql + Sync), t.clone()))
            .collect()
    }

    #[test]
    fn a_text_is_found_only_with_the_types_it_was_prepared_with() {
        let mut cache = Cache::with_capacity(4);
        cache.insert("SELECT $1", vec![Type::INT8], 1);
        let v = 0i64;
        assert_eq!(cache.get("SELECT $1", &params(&[Type::INT8], &v)), Some(1));
        assert_eq!(cache.get("SELECT $1", &params(&[Type::INT4], &v)), None);
        assert_eq!(cache.get("SELECT $1", &params(&[], &v)), None);
        assert_eq!(cache.get("SELECT $2", &params(&[Type::INT8], &v)), None);
        cache.insert("SELECT $1", vec![Type::INT4], 2);
        assert_eq!(cache.get("SELECT $1", &params(&[Type::INT4], &v)), Some(2));
    }

    #[test]
    fn the_cache_stops_growing_at_its_capacity() {
        let mut cache = Cache::with_capacity(3);
        for n in 0..10 {
            cache.insert(&format!("SELECT {n}"), Vec::new(), n);
        }
        assert_eq!(cache.by_text.len(), 3);
        assert!(!cache.admits("SELECT 10"));
        // A text already there may still be replaced (prepared again after a miss).
        assert!(cache.admits("SELECT 0"));
        cache.clear();
        assert!(cache.admits("SELECT 10"));
    }
}
