// The HTTP suite's modules, included by both of its test binaries: `api` (main.rs) and
// `api_postgres` (postgres.rs). A module added here runs on both backends.

#[path = "../kit/mod.rs"]
mod kit;

mod admin;
mod admin_views;
mod attacks;
mod audit;
mod console;
mod edges;
mod errors;
mod health;
mod helpers;
mod hygiene;
mod jwks;
mod keys;
mod limits_shared;
mod login;
mod logout;
mod me;
mod process;
mod refresh;
mod session_bound;
mod signup;
mod sqlite_only;
mod tokens;
