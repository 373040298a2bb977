//! gatehouse: a standalone authentication and token service.
//!
//! `http` → `service` → `domain`, `crypto`, `storage`: each layer knows only the ones to
//! its right. `startup` wires them together; `main.rs` is the CLI.

#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable
    )
)]

pub mod cli;
pub mod clock;
pub mod config;
pub mod crypto;
pub mod declare;
pub mod domain;
pub mod http;
pub mod memory;
pub mod metrics;
pub mod service;
pub mod startup;
pub mod storage;
pub mod telemetry;

/// The layering above, enforced over the module graph (see the module's doc).
#[cfg(test)]
mod layering;
