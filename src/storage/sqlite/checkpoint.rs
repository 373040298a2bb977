//! WAL checkpoints on a thread of their own.
//!
//! SQLite's automatic checkpoint runs inside the commit that crosses the threshold, on
//! the one writer connection, while every other write waits for it. On a large database
//! a checkpoint copies ~1000 pages scattered over the file and syncs it, which cost a
//! quarter of refresh throughput at a million users (measured: 2,840/s with automatic
//! checkpoints, 3,690/s with none). Here a background connection checkpoints (PASSIVE:
//! it never blocks the writer or a reader) a few times a second, and the writer keeps
//! automatic checkpoints only as a backstop at `WRITER_BACKSTOP_PAGES`: by then the
//! background pass has copied nearly every frame, so the writer's own pass is short, and
//! it is what lets the WAL start over from its beginning under a steady write load.

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::Connection;

/// How often the background connection checkpoints.
const EVERY: Duration = Duration::from_millis(200);

/// The writer's automatic checkpoint threshold, in WAL pages (SQLite's default is 1000).
pub(super) const WRITER_BACKSTOP_PAGES: u32 = 10_000;

/// Stops the checkpoint thread when dropped (with the store).
pub(super) struct Checkpointer {
    _stop: mpsc::Sender<()>,
}

impl Checkpointer {
    pub(super) fn start(path: &Path, cache_kib: u32) -> anyhow::Result<Self> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(Duration::from_millis(100))?;
        conn.execute_batch(&format!("PRAGMA cache_size = -{cache_kib};"))?;
        let (stop, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&conn, &stopped))?;
        Ok(Self { _stop: stop })
    }
}

fn run(conn: &Connection, stopped: &mpsc::Receiver<()>) {
    let mut failing = false;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
        // (busy, frames in the WAL, frames checkpointed); nothing to do costs nothing.
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
        match result {
            Ok(_) if failing => {
                failing = false;
                tracing::info!("WAL checkpoints work again");
            }
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{SqliteStore, Synchronous};
    use crate::domain::{Email, Role};
    use crate::storage::{NewUser, Store as _};

    #[test]
    fn the_background_thread_moves_committed_pages_into_the_database_file() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("gatehouse.db");
        let store = SqliteStore::open(&path, Synchronous::Normal, 1).expect("open");
        let size = || std::fs::metadata(&path).expect("db file").len();
        let before = size();
        for i in 0..200 {
            let email = Email::parse(&format!("user{i}@example.com")).expect("email");
            store
                .create_user(NewUser {
                    id: crate::domain::UserId::random(),
                    email: &email,
                    password_hash: &"x".repeat(100),
                    role: Role::User,
                    now: chrono::Utc::now(),
                })
                .expect("insert");
        }
        // Far below the writer's own threshold: only the background pass can copy these
        // pages from the WAL into the file.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while size() <= before && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(
            size() > before,
            "the database file stayed at {before} bytes: nothing was checkpointed"
        );
    }
}
