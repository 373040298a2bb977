//! The HTTP suite, one binary on both backends. A test that depends on storage is written
//! once and marked `#[both_backends]` (`tests/macros`): it runs as `<name>::sqlite` and
//! `<name>::postgres`, the latter on a database of its own on the server at
//! `GATEHOUSE_TEST_POSTGRES_URL` and counting its rate limits in Redis. A test that does
//! not (the browser, the HTTP surface, SQLite's files) is a plain `#[tokio::test]` and
//! runs once, on the backend `GATEHOUSE_TEST_BACKEND` names (SQLite by default).
//! `backends` checks that the variants really run where their names say.

// So that every module may write `#[both_backends]` without importing it.
#[macro_use]
extern crate gatehouse_test_macros;

#[path = "../kit/mod.rs"]
mod kit;

mod admin;
mod admin_views;
mod attacks;
mod audit;
mod backends;
// Service clients: client credentials, introspection, revocation, the feed.
mod clients;
// `config check` says OK only where `serve` would start.
mod config_check;
mod console;
// PostgreSQL alone: keys and the refresh secret in the database.
mod db_keys;
mod edges;
mod errors;
mod head;
mod health;
mod helpers;
mod hygiene;
mod jwks;
mod keys;
mod limits_shared;
mod login;
mod logout;
mod mail;
mod me;
mod mfa;
// Passkeys (WebAuthn, #21): registration, passwordless login, second factor, admin.
mod passkeys;
mod postgres_logs;
mod process;
mod redis_tls;
mod refresh;
mod session_bound;
mod signup;
mod sqlite_only;
mod tokens;
