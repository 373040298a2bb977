//! Reliability tests (see RELIABILITY.md): crash consistency with SIGKILL and the online
//! backup, storage faults, and properties of the HTTP surface. The crash and fault tests
//! drive the real binary (`CARGO_BIN_EXE_gatehouse`); the properties run one in-process app.

mod common;
mod crash;
mod faults;
mod properties;
mod soak;
