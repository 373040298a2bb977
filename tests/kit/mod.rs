//! The one test kit: every test binary starts gatehouse through it.
//!
//! - [`app`]: the app in this process, on a random port, with its own database, keys and
//!   hand-driven clock, and one method per endpoint. Most tests want this.
//! - [`process`]: the real binary as an operator runs it (signals, logs, CLI, crashes).
//! - [`replicas`]: several of them on one PostgreSQL database behind one round-robin URL.
//! - [`body`], [`contract`], [`jwt`]: typed responses, the contract's assertions, and
//!   tokens taken apart or forged.
//! - [`smtp`]: a real SMTP server on a free port, to read mail and to fault.
//! - [`redis`]: the shared Redis for the limiter, and private `redis-server`s to fault.
//! - [`password`], [`ports`], [`rng`], [`rss`]: small shared pieces.
//!
//! Included as a module (`#[path = "../kit/mod.rs"] mod kit;`) rather than built as a
//! crate: `env!("CARGO_BIN_EXE_gatehouse")` exists only while an integration test itself
//! compiles, and a dev-dependency that depends back on gatehouse would need a workspace.
//! Each includer uses a different part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod app;
pub mod authenticator;
pub mod body;
pub mod browser;
pub mod contract;
pub mod jwt;
pub mod passkey;
pub mod password;
pub mod pg_private;
pub mod pg_relay;
pub mod pgdb;
pub mod ports;
pub mod process;
pub mod redis;
pub mod replicas;
pub mod rng;
pub mod rss;
pub mod smtp;
pub mod totp;
