//! Reliability tests (see RELIABILITY.md): crash consistency with SIGKILL and the online
//! backup, storage faults, moving an install to PostgreSQL (`migrate-data`), and
//! properties of the HTTP surface. The crash, fault and migration tests drive the real
//! binary (`kit::process`); the properties run one in-process app (`kit::app`).

#[path = "../kit/mod.rs"]
mod kit;

mod crash;
mod faults;
mod invariants;
mod migrate_data;
mod properties;
mod replicas;
mod soak;
