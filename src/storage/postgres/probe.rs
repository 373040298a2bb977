//! What `config check` asks of a PostgreSQL database before it says `serve` would start:
//! the server answers and takes the credentials, the schema is one this build can
//! migrate, the role may write, and which sealed secret the keys are checked against.
//! It reads only: a check must never migrate, store a check value or create a key.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use postgres::types::Type;

use super::{PostgresUrl, first_connection, manager, migrate};

/// Every table of the schema (migrations/postgres/), which `serve` reads and writes.
const TABLES: &[&str] = &[
    "users",
    "refresh_families",
    "refresh_tokens",
    "login_attempts",
    "audit_events",
    "login_leases",
    "signing_keys",
    "sealed_secrets",
    "clients",
    "client_secrets",
    "family_tombstones",
];

/// What the database holds, as far as starting a server depends on it.
#[derive(Debug)]
pub struct Probe {
    /// The schema version it is at (0: empty), and the one `serve` brings it to.
    pub schema: i64,
    pub latest: i64,
    /// The sealed secret stored under the purpose asked for, if any.
    pub secret: Option<Vec<u8>>,
}

/// Connects as `serve` would (waiting up to `start_timeout` for a server that cannot
/// be reached yet) and reads what [`Probe`] holds; fails, saying why, where `serve`
/// would fail: refused credentials, a schema newer than this build, a read-only server
/// or a role that may not write the tables (or create them, before the first start).
pub fn probe(
    url: &PostgresUrl,
    connect_timeout: Duration,
    start_timeout: Duration,
    secret_purpose: &str,
) -> anyhow::Result<Probe> {
    let manager = manager(url, connect_timeout, Arc::default())?;
    let mut client = first_connection(&manager, url, start_timeout)?;
    let schema = migrate::current(&mut client)?;
    let latest = migrate::latest();
    if schema > latest {
        return Err(migrate::newer(schema as i32, latest as i32).into());
    }
    let row = client
        .query_one(
            "SELECT current_setting('transaction_read_only') = 'on', pg_is_in_recovery()",
            &[],
        )
        .context("cannot ask PostgreSQL whether it accepts writes")?;
    let (read_only, standby): (bool, bool) = (row.try_get(0)?, row.try_get(1)?);
    anyhow::ensure!(
        !standby,
        "PostgreSQL at {url} is a standby (in recovery): gatehouse writes on every \
         login; point GATEHOUSE_DATABASE at the primary"
    );
    anyhow::ensure!(
        !read_only,
        "PostgreSQL at {url} opens read-only transactions \
         (default_transaction_read_only): gatehouse writes on every login"
    );
    if schema < latest {
        // `serve` migrates first, which creates tables.
        let may_create: Option<bool> = client
            .query_one(
                "SELECT has_schema_privilege(current_schema(), 'CREATE')",
                &[],
            )?
            .try_get(0)?;
        anyhow::ensure!(
            may_create == Some(true),
            "the database user of {url} may not create tables in its schema, which the \
             first `serve` (or `gatehouse migrate`) must do (GRANT CREATE ON SCHEMA …)"
        );
    }
    if schema > 0 {
        let tables: Vec<String> = TABLES.iter().map(|t| (*t).to_owned()).collect();
        let denied: Vec<String> = client
            .query_typed(
                "SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NOT NULL \
                 AND NOT has_table_privilege(t, 'SELECT, INSERT, UPDATE, DELETE')",
                &[(&tables, Type::TEXT_ARRAY)],
            )?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        anyhow::ensure!(
            denied.is_empty(),
            "the database user of {url} may not read and write the table(s) {}",
            denied.join(", ")
        );
    }
    let secret = if client
        .query_one("SELECT to_regclass('sealed_secrets') IS NOT NULL", &[])?
        .try_get::<_, bool>(0)?
    {
        client
            .query_typed_opt(
                "SELECT sealed FROM sealed_secrets WHERE purpose = $1",
                &[(&secret_purpose, Type::TEXT)],
            )?
            .map(|r| r.try_get(0))
            .transpose()?
    } else {
        None
    };
    Ok(Probe {
        schema,
        latest,
        secret,
    })
}
