//! Free space on the database's file system.
//!
//! A full disk does not fail every write. Once the background checkpoint has copied every
//! WAL frame into the database file, the next write starts the WAL over at its beginning,
//! in room the file already holds, so it commits; the one after that, needing a new page,
//! fails. Readiness that trusted a single probe write would flap between ready and not,
//! so it asks the file system how much room is left.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

/// Below this much free space the store calls itself unready: a few hundred refreshes'
/// worth of WAL pages, well under any real volume.
pub(super) const MIN_FREE_BYTES: u64 = 1 << 20;

/// Bytes an unprivileged process may still write on the file system holding `path`, or
/// `None` when the file system cannot say.
pub(super) fn free_bytes(path: &Path) -> Option<u64> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `dir` is a NUL-terminated path and `stat` is a writable statvfs; the
    // struct is read only when the call reports success.
    let rc = unsafe { libc::statvfs(dir.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    // Both fields are 32-bit on some targets, 64-bit here.
    #[allow(clippy::useless_conversion)]
    let (blocks, block_size) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    Some(blocks.saturating_mul(block_size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_real_directory_reports_room_and_a_missing_one_does_not() {
        let dir = tempfile::tempdir().expect("temp dir");
        let free = free_bytes(&dir.path().join("gatehouse.db")).expect("statvfs");
        assert!(free > 0, "a fresh temp dir reported {free} bytes free");
        assert_eq!(free_bytes(&dir.path().join("missing/gatehouse.db")), None);
    }
}
