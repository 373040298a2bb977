//! What must hold of the database after any crash, fault or backup: SQLite's own
//! checks, and the refresh-token families' shape (the same SQL on PostgreSQL, see
//! `inspect.rs`).

use std::path::Path;
use std::time::Duration;

/// What storage keeps of a refresh token: SHA-256 of its text.
pub fn token_hash(token: &str) -> Vec<u8> {
    gatehouse::crypto::sha256(token.as_bytes()).to_vec()
}

/// A read-write connection with a generous busy timeout.
pub fn open_db(path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path)
        .unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    conn.busy_timeout(Duration::from_secs(30))
        .expect("busy timeout");
    conn
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("`{sql}` failed: {e}"))
}

/// The invariants that hold for the live file and for any snapshot of it. Returns one
/// line per violation (empty: all hold).
pub fn storage_violations(conn: &rusqlite::Connection) -> Vec<String> {
    let mut out = Vec::new();
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
        .unwrap_or_else(|e| vec![format!("integrity_check failed to run: {e}")]);
    if integrity != ["ok"] {
        out.push(format!("PRAGMA integrity_check: {integrity:?}"));
    }
    let fk = count(conn, "SELECT COUNT(*) FROM pragma_foreign_key_check");
    if fk != 0 {
        out.push(format!("{fk} foreign-key violations"));
    }
    for (what, sql) in SHAPE_CHECKS {
        let n = count(conn, sql);
        if n != 0 {
            out.push(format!("{n} {what}"));
        }
    }
    out
}

/// The families' shape: (what a violation is, SQL counting them). Plain SQL that
/// SQLite and PostgreSQL both read.
pub const SHAPE_CHECKS: [(&str, &str); 5] = [
    (
        "families with two or more unspent tokens",
        "SELECT COUNT(*) FROM (SELECT family_id FROM refresh_tokens WHERE spent_at IS NULL
         GROUP BY family_id HAVING COUNT(*) > 1) AS x",
    ),
    (
        "families with more than one first token",
        "SELECT COUNT(*) FROM (SELECT family_id FROM refresh_tokens WHERE parent_hash IS NULL
         GROUP BY family_id HAVING COUNT(*) > 1) AS x",
    ),
    (
        "families without a first token",
        "SELECT COUNT(*) FROM refresh_families f WHERE NOT EXISTS
         (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.id AND t.parent_hash IS NULL)",
    ),
    (
        "child tokens whose parent is missing, unspent or in another family",
        "SELECT COUNT(*) FROM refresh_tokens c LEFT JOIN refresh_tokens p ON p.hash = c.parent_hash
         WHERE c.parent_hash IS NOT NULL
           AND (p.hash IS NULL OR p.spent_at IS NULL OR p.family_id <> c.family_id)",
    ),
    (
        "spent tokens with no child (a rotation half-written)",
        "SELECT COUNT(*) FROM refresh_tokens p WHERE p.spent_at IS NOT NULL AND NOT EXISTS
         (SELECT 1 FROM refresh_tokens c WHERE c.parent_hash = p.hash)",
    ),
];
