//! `config check` on SQLite: what can be proven about the database file without
//! creating or changing anything.

use std::path::Path;

use anyhow::Context as _;
use rusqlite::Connection;

use super::SqliteStore;

impl SqliteStore {
    /// What `config check` proves without creating or changing anything: the file
    /// opens as a database SQLite may write, or, before the first start, `open` could
    /// create it (its directory, or the nearest one that exists, may be written).
    pub fn probe(path: &Path) -> anyhow::Result<()> {
        use rusqlite::OpenFlags;
        if path.exists() {
            let conn = Connection::open_with_flags(
                path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )
            .with_context(|| format!("cannot open database {}", path.display()))?;
            conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| {
                r.get::<_, i64>(0)
            })
            .with_context(|| format!("cannot read database {}", path.display()))?;
            anyhow::ensure!(
                !conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true),
                "the database {} is read-only (a read-only file system, or no write \
                 permission on the file or its directory); gatehouse must be able to write it",
                path.display()
            );
            return Ok(());
        }
        let mut dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        while !dir.exists() {
            dir = match dir.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
        }
        anyhow::ensure!(
            dir.is_dir(),
            "cannot create the database {}: {} is not a directory",
            path.display(),
            dir.display()
        );
        let c_dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
            .context("a database path with a NUL byte")?;
        // SAFETY: `c_dir` is a NUL-terminated string that outlives the call.
        let writable = unsafe { libc::access(c_dir.as_ptr(), libc::W_OK | libc::X_OK) } == 0;
        anyhow::ensure!(
            writable,
            "cannot create the database {}: {} is not writable ({})",
            path.display(),
            dir.display(),
            std::io::Error::last_os_error()
        );
        Ok(())
    }
}
