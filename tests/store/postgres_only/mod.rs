//! What only the PostgreSQL backend has: URLs and their TLS modes, the CLI on a URL,
//! the pool's connections, round trips and prepared statements, and races that the
//! server's locks decide. One module each.

mod cli;
mod connections;
mod races;
mod round_trips;
mod statements;
mod urls;

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use gatehouse::storage::postgres::PostgresUrl;
use gatehouse::storage::{self, DatabaseSettings};

use crate::pgdb::{TestDatabase, admin_client, loud};
