//! Who is using a SQLite database file: every `gatehouse serve` on it holds a shared
//! lock on a file beside it (`gatehouse.db-serving.lock`), and `migrate-data` takes the
//! same lock exclusively for the length of its copy.
//!
//! The copy reads one snapshot: a server still writing the file would take logins,
//! refreshes and revocations the copy never sees, so a revoked session would live again
//! on PostgreSQL. With the lock, the copy refuses while a server runs, and a server
//! refuses to start while a copy runs.
//!
//! `flock(2)` on a file of its own, not on the database: SQLite's own locks are POSIX
//! record locks, which a process loses on every descriptor of the file as soon as it
//! closes any one descriptor of it, so the database file itself must be opened by
//! SQLite alone. The kernel drops a `flock` with its process, so a killed server leaves
//! no stale lock behind; the file itself stays (removing it would race a new holder).

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

/// The lock file of the database at `db`.
pub fn lock_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_owned();
    name.push("-serving.lock");
    db.with_file_name(name)
}

/// The lock file, created if need be. `flock` needs no write access, so on a read-only
/// file system (a server may start on a read-only database) an existing one still locks.
fn open(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .or_else(|e| File::open(path).map_err(|_| e))
}

/// A serving process's hold on its database; released when dropped (or the process ends).
#[derive(Debug)]
pub struct Serving {
    _file: Option<File>,
}

/// Takes the shared lock of a server on the database at `db`. Refused while a copy holds
/// it. A lock file that cannot be created (a read-only data directory) only costs the
/// check in `migrate-data`, so the server still starts, and says so.
pub fn serve(db: &Path) -> anyhow::Result<Serving> {
    let path = lock_path(db);
    let file = match open(&path) {
        Ok(file) => file,
        Err(e) => {
            tracing::warn!(
                lock = %path.display(),
                error = %e,
                "cannot create the serving lock: `gatehouse migrate-data` will not see \
                 that this server uses the database"
            );
            return Ok(Serving { _file: None });
        }
    };
    match file.try_lock_shared() {
        Ok(()) => Ok(Serving { _file: Some(file) }),
        Err(TryLockError::WouldBlock) => anyhow::bail!(
            "`gatehouse migrate-data` is copying {} (it holds {}): start the server once \
             the copy has finished",
            db.display(),
            path.display()
        ),
        Err(TryLockError::Error(e)) => {
            anyhow::bail!("cannot take the serving lock {}: {e}", path.display())
        }
    }
}

/// An exclusive hold: no server runs on the database while it lasts.
#[derive(Debug)]
pub struct Quiet {
    _file: Option<File>,
}

/// Takes the lock exclusively, or says why not. `Err` is a message for the operator.
pub fn quiet(db: &Path) -> Result<Quiet, String> {
    let path = lock_path(db);
    let file = match open(&path) {
        Ok(file) => file,
        // Every server of this version creates the file before it serves; a file that
        // does not exist and cannot be created (a read-only copy) has no server on it.
        Err(_) if !path.exists() => return Ok(Quiet { _file: None }),
        Err(e) => {
            return Err(format!(
                "cannot tell whether a gatehouse serves {}: cannot open {}: {e} (run as \
                 the service's user)",
                db.display(),
                path.display()
            ));
        }
    };
    match file.try_lock() {
        Ok(()) => Ok(Quiet { _file: Some(file) }),
        Err(TryLockError::WouldBlock) => Err(format!(
            "{} is in use by a running gatehouse server (it holds {}); nothing was copied. \
             Stop the service first: the copy reads one snapshot, so logins, refreshes and \
             revocations the server takes during and after it would not reach the new \
             database",
            db.display(),
            path.display()
        )),
        Err(TryLockError::Error(e)) => Err(format!(
            "cannot tell whether a gatehouse serves {}: cannot lock {}: {e}",
            db.display(),
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_copy_and_a_server_exclude_each_other_and_servers_share() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("gatehouse.db");
        assert_eq!(lock_path(&db), dir.path().join("gatehouse.db-serving.lock"));

        let first = serve(&db).expect("a first server");
        let second = serve(&db).expect("servers share the lock");
        let refused = quiet(&db).expect_err("a copy beside a server");
        assert!(
            refused.contains("in use by a running gatehouse"),
            "{refused}"
        );
        drop((first, second));

        let copying = quiet(&db).expect("no server any more");
        let refused = serve(&db).expect_err("a server beside a copy");
        assert!(format!("{refused}").contains("migrate-data"), "{refused}");
        drop(copying);
        serve(&db).expect("the copy is over");
    }
}
