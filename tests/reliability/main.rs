//! Reliability tests (see RELIABILITY.md): crash consistency with SIGKILL and the online
//! backup, storage faults on SQLite and on a private PostgreSQL server, moving an
//! install to PostgreSQL (`migrate-data`), three replicas behind one URL, and properties
//! of the HTTP surface. The crash, fault, migration and replica tests drive the real
//! binary (`kit::process`); the properties run one in-process app (`kit::app`).

#[path = "../kit/mod.rs"]
mod kit;

mod crash;
mod failover;
mod faults;
mod inspect;
mod invariants;
mod mfa_replicas;
mod migrate_data;
mod passkey_replicas;
mod pg_faults;
mod properties;
mod redis_outage;
mod replicas;
mod soak;
