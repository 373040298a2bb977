//! The pool's connection manager: r2d2_postgres's, plus what a restarted or killed server
//! needs so that no request pays for it.
//!
//! - A connection the server closed while it idled in the pool (a restart, a failover,
//!   `pg_terminate_backend`, an idle timeout) is found at checkout and replaced, before
//!   any statement is sent on it. Without that, every pooled connection failed one
//!   request with 503 after a restart: a read could retry, but a write may not (it may
//!   have committed). See [`check`] for what the check costs.
//! - Whether the server refused the last connection attempt, so that while it is down a
//!   request answers 503 at once instead of holding a worker for the whole checkout
//!   timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use ::postgres::Client;
use r2d2::{ManageConnection, PooledConnection};
use r2d2_postgres::PostgresConnectionManager;
use tokio_postgres_rustls::MakeRustlsConnect;

pub(super) struct Manager {
    inner: PostgresConnectionManager<MakeRustlsConnect>,
    reach: Arc<Reachability>,
}

impl Manager {
    pub(super) fn new(
        inner: PostgresConnectionManager<MakeRustlsConnect>,
        reach: Arc<Reachability>,
    ) -> Self {
        Self { inner, reach }
    }
}

impl ManageConnection for Manager {
    type Connection = Client;
    type Error = ::postgres::Error;

    fn connect(&self) -> Result<Client, Self::Error> {
        let result = self.connect_unrecorded();
        self.reach.record(&result);
        result
    }

    /// Unused (the pool does not test on checkout: see [`check`]).
    fn is_valid(&self, client: &mut Client) -> Result<(), Self::Error> {
        client.simple_query("").map(|_| ())
    }

    fn has_broken(&self, client: &mut Client) -> bool {
        client.is_closed()
    }
}

impl Manager {
    /// A connection, without telling [`Reachability`]: for the first connection at start,
    /// whose failure is reported (and, when final, ends the start) by its caller. Its
    /// "refuses connections, retrying in the background" would be wrong there: nothing
    /// retries a wrong password, and nothing runs in the background yet.
    pub(super) fn connect_unrecorded(&self) -> Result<Client, ::postgres::Error> {
        self.inner.connect().and_then(|mut client| {
            // The rules' single statements rely on READ COMMITTED's re-check of a row
            // that a concurrent writer changed (a second claim of a token matches
            // nothing). A role or database default of REPEATABLE READ or SERIALIZABLE
            // would turn that into serialization failures, retried but capped: this
            // session runs at the level the code assumes, whatever the defaults. The
            // multi-statement transactions also name it in their BEGIN, which a
            // transaction-pooling proxy cannot lose.
            client.batch_execute(
                "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED",
            )?;
            Ok(client)
        })
    }
}

/// A connection idle at least this long is checked with an empty query before use. Any
/// connection that slept through a restart or failover idled longer (the server took at
/// least that long to stop and start), so every stale one is caught; under load
/// connections idle far less, so the check costs nothing there, and otherwise at most
/// one round trip per connection per interval.
///
/// Why not check without a round trip: the synchronous client drives its socket only
/// inside its own calls, so the server's goodbye sits unread in the kernel until the next
/// statement; and a check of every checkout would double a refresh's round trips.
const CHECK_AFTER_IDLE: Duration = Duration::from_millis(100);

/// When the connection was last handed out (kept in its r2d2 extensions).
struct CheckedOut(Instant);

pub(super) enum Check {
    Usable,
    /// Closed by the server: dropped by the pool when handed back (`has_broken`).
    Stale,
    /// Open, but the server did not answer the check in time.
    Unresponsive,
}

/// Whether a connection just taken from the pool may carry a statement.
pub(super) fn check(conn: &mut PooledConnection<Manager>, timeout: Duration) -> Check {
    let now = Instant::now();
    let last = PooledConnection::extensions_mut(conn).insert(CheckedOut(now));
    match last {
        Some(CheckedOut(at)) if now.duration_since(at) >= CHECK_AFTER_IDLE => {
            match conn.is_valid(timeout) {
                Ok(()) => Check::Usable,
                Err(_) if conn.is_closed() => Check::Stale,
                Err(_) => Check::Unresponsive,
            }
        }
        _ => Check::Usable,
    }
}

/// What the last connection attempt found.
#[derive(Default)]
pub(super) struct Reachability {
    refused: AtomicBool,
    /// Why the latest attempt failed, in words an operator can act on. r2d2 keeps only
    /// the driver's top line ("db error", "error connecting to server"), which drops
    /// the SQLSTATE and the server's message.
    why: Mutex<Option<String>>,
}

impl Reachability {
    /// True while the server refused the latest attempt and none succeeded since.
    pub(super) fn refused(&self) -> bool {
        self.refused.load(Ordering::Relaxed)
    }

    /// Why the latest attempt failed, while none succeeded since.
    pub(super) fn why(&self) -> Option<String> {
        self.why.lock().clone()
    }

    /// Logs the changes only: the pool retries in the background, and an outage must
    /// not write a line per attempt.
    fn record(&self, result: &Result<Client, ::postgres::Error>) {
        match result {
            Ok(_) => {
                *self.why.lock() = None;
                if self.refused.swap(false, Ordering::Relaxed) {
                    tracing::warn!("PostgreSQL accepts connections again");
                }
            }
            Err(e) => {
                let why = super::describe(e);
                *self.why.lock() = Some(why.clone());
                if !self.refused.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        error = %why,
                        "PostgreSQL refuses connections: requests that need it answer 503 \
                         until it is back (retrying in the background)"
                    );
                }
            }
        }
    }
}
