//! Seeding a large database (`--seed-db`): the growth check, and the soak, which must
//! not start on a database smaller than SQLite's page caches.

use std::path::Path;
use std::time::Instant;

use rusqlite::params;

use gatehouse::storage::sqlite::{SqliteStore, Synchronous};

/// Adds `users` users, one family each (with its first token), in one transaction,
/// straight through SQL; the schema comes from gatehouse's own migrations.
pub(crate) fn seed_db(path: &Path, users: usize) -> anyhow::Result<()> {
    let t0 = Instant::now();
    drop(SqliteStore::open(path, Synchronous::Normal, 1)?);
    let mut conn = rusqlite::Connection::open(path)?;
    // A throwaway benchmark file: no fsync per commit; it is synced once at the end.
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA cache_size = -262144;",
    )?;
    let phc = production_phc()?;
    let tx = conn.transaction()?;
    insert_rows(&tx, users, &phc, t0)?;
    tx.commit()?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); ANALYZE;")?;
    let count: i64 = conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
    let families: i64 =
        conn.query_row("SELECT count(*) FROM refresh_families", [], |r| r.get(0))?;
    drop(conn);
    std::fs::File::open(path)?.sync_all()?;
    let size = std::fs::metadata(path)?.len();
    eprintln!(
        "seeded {}: {count} users, {families} families, {:.0} MiB, in {:.0}s",
        path.display(),
        size as f64 / 1048576.0,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One real Argon2id hash for everyone (its cost is not what is measured here).
fn production_phc() -> anyhow::Result<String> {
    use argon2::password_hash::PasswordHasher as _;
    let p = gatehouse::crypto::password::PasswordCost::PRODUCTION;
    let params = argon2::Params::new(p.memory_kib, p.iterations, p.parallelism, None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(
        argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
            .hash_password(b"Seeded-User-Pass-1!")
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .to_string(),
    )
}

fn insert_rows(
    tx: &rusqlite::Transaction<'_>,
    users: usize,
    phc: &str,
    t0: Instant,
) -> anyhow::Result<()> {
    let now = chrono::Utc::now().timestamp();
    // Emails unique across seeds, so a database can be extended by a second run.
    let tag = chrono::Utc::now().timestamp_millis();
    let mut user = tx.prepare(
        "INSERT INTO users (id, email, password_hash, role, disabled, created_at, updated_at)
         VALUES (?1, ?2, ?3, 'user', 0, ?4, ?4)",
    )?;
    let mut family = tx.prepare(
        "INSERT INTO refresh_families (id, user_id, created_at, last_used_at, expires_at)
         VALUES (?1, ?2, ?3, ?3, ?4)",
    )?;
    let mut token = tx.prepare(
        "INSERT INTO refresh_tokens (hash, family_id, parent_hash, issued_at, expires_at)
         VALUES (?1, ?2, NULL, ?3, ?4)",
    )?;
    for i in 0..users {
        let uid = uuid::Uuid::new_v4().to_string();
        let fid = uuid::Uuid::new_v4().to_string();
        let created = now - (i % 86_400) as i64;
        user.execute(params![
            uid,
            format!("seed-{tag}-{i}@example.com"),
            phc,
            created
        ])?;
        family.execute(params![fid, uid, created, created + 7 * 86_400])?;
        let hash = gatehouse::crypto::random_bytes::<32>();
        token.execute(params![&hash[..], fid, created, created + 12 * 3600])?;
        if i > 0 && i % 100_000 == 0 {
            eprintln!("  {i} users ({:.0}s)", t0.elapsed().as_secs_f64());
        }
    }
    Ok(())
}

pub(crate) fn count_users(path: &Path) -> anyhow::Result<i64> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    Ok(conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?)
}
