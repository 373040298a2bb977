//! HTTP integration tests: one binary, so the crate links once. They run on the backend
//! `GATEHOUSE_TEST_BACKEND` names (SQLite by default); `api_postgres` runs the same suite
//! on PostgreSQL, so `cargo test` covers both.

include!("suite.rs");
