//! The online backup (`gatehouse backup --to`) taken under load: each copy is judged
//! against what clients were told before it began, and one of a realistic size must
//! complete while the server keeps writing.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::load::{Chain, Signup, User};
use crate::invariants::{open_db, storage_violations, token_hash};
use crate::kit::password::PASSWORD;
use crate::kit::process::{self, Binary};

/// What the backup round records to judge the snapshot.
pub(super) struct BackupRun {
    pub(super) started: Instant,
    pub(super) finished: Instant,
    pub(super) path: std::path::PathBuf,
}

/// Checks one online backup; returns how many checks it made.
pub(super) async fn check_backup(
    backup: &BackupRun,
    files: &Binary,
    users: &[User],
    chains: &[Chain],
    violations: &mut Vec<String>,
) -> usize {
    let name = backup.path.display().to_string();
    let mut checks = 0;
    let conn = open_db(&backup.path);
    for v in storage_violations(&conn) {
        violations.push(format!("backup {name}: {v}"));
    }
    checks += 1;
    let before: Vec<&User> = users
        .iter()
        .filter(|u| matches!(u.signup, Signup::Confirmed(at) if at < backup.started))
        .collect();
    for user in &before {
        let n: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM users WHERE email = ?1",
                [&user.email],
                |r| r.get(0),
            )
            .expect("count users");
        checks += 1;
        if n != 1 {
            violations.push(format!(
                "backup {name}: {} (201 before the backup began) is missing",
                user.email
            ));
        }
    }
    for chain in chains {
        for tok in chain.tokens.iter().filter(|t| t.received < backup.started) {
            let n: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM refresh_tokens WHERE hash = ?1",
                    [token_hash(&tok.value)],
                    |r| r.get(0),
                )
                .expect("count tokens");
            checks += 1;
            if n != 1 {
                violations.push(format!(
                    "backup {name}: a token of family {} received before the backup began is missing",
                    chain.family
                ));
            }
        }
    }
    let revoked: HashSet<String> = conn
        .prepare("SELECT id FROM refresh_families WHERE revoked_at IS NOT NULL")
        .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect::<Result<_, _>>())
        .expect("revoked families");
    drop(conn);

    // Restore: a server over a copy of the copy, with the same keys and refresh secret.
    let restore_dir = tempfile::tempdir().expect("temp dir");
    let restored = Binary {
        database: restore_dir.path().join("gatehouse.db"),
        log: restore_dir.path().join("server.log"),
        ..files.clone()
    };
    std::fs::copy(&backup.path, &restored.database).expect("copy the backup");
    let server = restored.start().await;
    let client = process::client();
    for user in before.iter().take(20) {
        let r = client
            .post(server.url("/v1/login"))
            .json(&json!({"email": user.email, "password": PASSWORD}))
            .send()
            .await
            .expect("login on the restored copy");
        checks += 1;
        if r.status() != StatusCode::OK {
            violations.push(format!(
                "restored {name}: {} cannot log in ({})",
                user.email,
                r.status()
            ));
        }
    }
    // A token received before the backup began and not presented until it ended was
    // the newest of its family in the snapshot: it must refresh there.
    let mut tried = 0;
    for chain in chains.iter().filter(|c| !revoked.contains(&c.family)) {
        let Some(tok) = chain.tokens.iter().find(|t| {
            t.received < backup.started && t.presented.is_none_or(|p| p > backup.finished)
        }) else {
            continue;
        };
        if tried == 30 {
            break;
        }
        tried += 1;
        checks += 1;
        let r = client
            .post(server.url("/v1/refresh"))
            .json(&json!({"refresh_token": tok.value}))
            .send()
            .await
            .expect("refresh on the restored copy");
        if r.status() != StatusCode::OK {
            let status = r.status();
            let text = r.text().await.unwrap_or_default();
            violations.push(format!(
                "restored {name}: family {}'s newest token at backup time answered {status}: {text}",
                chain.family
            ));
        }
    }
    server.kill().await;
    let conn = open_db(&restored.database);
    for v in storage_violations(&conn) {
        violations.push(format!("restored {name} after use: {v}"));
    }
    checks
}

/// The online backup on a database of a realistic size (~60 MiB) while the server keeps
/// writing at a modest rate (~10 rotations a second). An idle copy of this file takes
/// about a second; the bound is 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn online_backup_of_a_large_database_completes_under_steady_writes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = Binary::in_dir(dir.path());
    files.start().await.kill().await; // creates and migrates the file
    {
        // Recent audit events (pruning leaves them alone): bulk that the backup must copy.
        let mut conn = open_db(&files.database);
        let now = chrono::Utc::now().timestamp();
        let tx = conn.transaction().expect("tx");
        {
            let mut insert = tx
                .prepare(
                    "INSERT INTO audit_events (at, type, outcome, detail)
                     VALUES (?1, 'login_failed', 'wrong_password', ?2)",
                )
                .expect("prepare");
            let detail = "x".repeat(200);
            for _ in 0..200_000 {
                insert
                    .execute(rusqlite::params![now, detail])
                    .expect("insert");
            }
        }
        tx.commit().expect("commit");
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
            .expect("checkpoint");
    }
    let size_mib = std::fs::metadata(&files.database).expect("size").len() / (1 << 20);
    let server = files.start().await;
    let client = process::client();
    let r = client
        .post(server.url("/v1/signup"))
        .json(&json!({"email": "backup-load@example.com", "password": PASSWORD}))
        .send()
        .await
        .expect("signup");
    assert_eq!(r.status(), StatusCode::CREATED);
    let body: Value = r.json().await.expect("json");
    let mut token = body["refresh_token"].as_str().expect("token").to_owned();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, url) = (stop.clone(), server.url("/v1/refresh"));
        tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let r = client
                    .post(&url)
                    .json(&json!({"refresh_token": token}))
                    .send()
                    .await
                    .expect("refresh");
                assert_eq!(r.status(), StatusCode::OK);
                let body: Value = r.json().await.expect("json");
                token = body["refresh_token"].as_str().expect("token").to_owned();
                n += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let to = dir.path().join("backup.db");
    let started = Instant::now();
    let (code, out) = files
        .cli_within(
            &["backup", "--to", to.to_str().expect("utf-8")],
            Duration::from_secs(30),
        )
        .await;
    let took = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    let rotations = writer.await.expect("writer");
    server.kill().await;
    eprintln!(
        "backup of {size_mib} MiB under {rotations} rotations: exit {code} in {:.1} s: {}",
        took.as_secs_f64(),
        out.trim()
    );
    assert_eq!(
        code, 0,
        "`gatehouse backup` of a {size_mib} MiB database did not complete under ~10 \
         writes/s: {out}"
    );
    let conn = open_db(&to);
    let violations = storage_violations(&conn);
    assert!(violations.is_empty(), "the backup: {violations:?}");
}
