//! Reliability tests (see RELIABILITY.md): crash consistency with SIGKILL and the online
//! backup, storage faults, and properties of the HTTP surface. The crash and fault tests
//! drive the real binary (`kit::process`); the properties run one in-process app
//! (`kit::app`).

#[path = "../kit/mod.rs"]
mod kit;

mod crash;
mod faults;
mod inspect;
mod invariants;
mod pg_faults;
mod properties;
mod soak;
