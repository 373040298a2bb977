//! The HTTP suite again, on PostgreSQL: the kit runs a test binary whose name ends in
//! `_postgres` on PostgreSQL (see `kit::app::Backend::from_env`), each app on a database
//! of its own on the server at `GATEHOUSE_TEST_POSTGRES_URL`. Tests that are about
//! SQLite's files name `Backend::Sqlite` and run on it here too.

include!("suite.rs");

// PostgreSQL alone: keys and the refresh secret in the database.
mod db_keys;
// PostgreSQL alone: what the server says in the log.
mod postgres_logs;
