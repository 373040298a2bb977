//! Crash consistency: the real binary under concurrent signups, logins and refresh
//! chains, SIGKILLed at random moments and restarted on the same files, again and again.
//!
//! What the client saw is the truth the database must keep:
//! - every signup answered 201 can log in, after any number of crashes;
//! - every refresh token received in a 200 is stored, and the newest one of each chain
//!   works (or its family was revoked, which is only allowed after the client retried a
//!   token whose rotation's answer was lost in a crash);
//! - no family ever has two unspent tokens, no rotation is half-written;
//! - on SQLite, `PRAGMA integrity_check` is `ok` after every restart.
//!
//! It runs on both backends (`inspect::Db` reads either). On SQLite, an online backup
//! (`gatehouse backup --to`) is taken while the load runs; the copy passes the same
//! storage invariants, holds everything acknowledged before the backup started, and a
//! server started on it lets those users log in and those tokens refresh. (PostgreSQL's
//! backups are `pg_dump`'s, not gatehouse's.)
//!
//! Scale: `GATEHOUSE_CRASH_KILLS` (default 3), `GATEHOUSE_CRASH_ROUND_MS` (longest load
//! phase between a start and its kill, default 1200), `GATEHOUSE_CRASH_WORKERS` (default
//! 6), `GATEHOUSE_CRASH_SEED` to replay a run. scripts/crash.sh runs the large version.
//!
//! `load` is the clients and what each was told; `backup` judges the online backups;
//! `mid_login` is the lockout across crashes.

mod backup;
mod load;
mod mid_login;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::json;

use crate::inspect::Db;
use crate::invariants::token_hash;
use crate::kit::password::PASSWORD;
use crate::kit::pgdb::TestDatabase;
use crate::kit::process::{self, Binary};
use crate::kit::rng::Rng;
use backup::{BackupRun, check_backup};
use load::{Chain, Signup, Stats, User, Worker};

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Harness self-check (`GATEHOUSE_CRASH_SABOTAGE=1`): plays a storage engine that lost
/// acknowledged writes (an account, and the newest refresh token of a chain); the run
/// must then report violations.
fn sabotage(db: &Db, workers: &[Worker]) {
    let chain = workers
        .iter()
        .flat_map(|w| &w.chains)
        .find(|c| !c.uncertain && !c.revoked && c.tokens.len() > 1);
    if let Some(c) = chain {
        let n = db.delete_token(&token_hash(&c.newest().value));
        eprintln!(
            "crash: SABOTAGE deleted {n} acknowledged refresh token (family {})",
            c.family
        );
    }
    let user = workers
        .iter()
        .flat_map(|w| &w.users)
        .find(|u| matches!(u.signup, Signup::Confirmed(_)));
    if let Some(u) = user {
        let n = db.delete_user(&u.email);
        eprintln!(
            "crash: SABOTAGE deleted {n} acknowledged account ({})",
            u.email
        );
    }
}

/// Lost answers whose transaction had committed before the kill, found in the file.
#[derive(Default)]
struct Committed {
    signups: usize,
    rotations: usize,
}

impl Committed {
    fn add(&mut self, o: &Committed) {
        self.signups += o.signups;
        self.rotations += o.rotations;
    }
}

fn lost_but_committed(db: &Db, workers: &[Worker], counted: &mut HashSet<String>) -> Committed {
    let mut out = Committed::default();
    for w in workers {
        for u in w
            .users
            .iter()
            .filter(|u| matches!(u.signup, Signup::Uncertain))
        {
            if db.users_with_email(&u.email) > 0 && counted.insert(u.email.clone()) {
                out.signups += 1;
            }
        }
        for c in w.chains.iter().filter(|c| c.uncertain && !c.revoked) {
            let spent = db.token_spent(&token_hash(&c.newest().value));
            if spent == Some(true) && counted.insert(c.newest().value.clone()) {
                out.rotations += 1;
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let files = Binary::in_dir(dir.path());
    let db = Db::Sqlite(files.database.clone());
    sigkill_run(dir.path(), files, db).await;
}

/// The same harness on PostgreSQL: a database of its own on the test server, gatehouse
/// killed (never the database server) at random moments.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_at_random_moments_loses_nothing_acknowledged_on_postgres() {
    let Some(test_db) = TestDatabase::new("sigkill_on_postgres") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let files = Binary::in_dir(dir.path()).on_postgres(&test_db.url_text());
    let db = Db::Postgres(Box::new(test_db.url()));
    sigkill_run(dir.path(), files, db).await;
}

async fn sigkill_run(dir: &std::path::Path, files: Binary, db: Db) {
    let kills = env_u64("GATEHOUSE_CRASH_KILLS", 3);
    let round_ms = env_u64("GATEHOUSE_CRASH_ROUND_MS", 1200).max(200);
    let workers_n = env_u64("GATEHOUSE_CRASH_WORKERS", 6) as usize;
    let (mut rng, seed) = Rng::from_env_or_time("GATEHOUSE_CRASH_SEED");
    eprintln!(
        "crash ({}): seed {seed} (GATEHOUSE_CRASH_SEED), {kills} kills, rounds up to {round_ms} ms, {workers_n} workers",
        db.name()
    );

    // A long reuse grace: a client whose refresh answer was lost retries after the
    // restart, usually within it, and then gets the very child the crash hid.
    let mut files = files.with("GATEHOUSE_REFRESH_REUSE_GRACE", "120s");
    // Extra server settings, `K=V,K=V` (e.g. to take the lockout out of a large run).
    for pair in std::env::var("GATEHOUSE_CRASH_SERVER_ENV")
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.trim().is_empty())
    {
        let (k, v) = pair
            .split_once('=')
            .expect("GATEHOUSE_CRASH_SERVER_ENV is K=V,K=V");
        files = files.with(k.trim(), v.trim());
    }
    let mut workers: Vec<Worker> = (0..workers_n).map(|i| Worker::new(i, seed)).collect();
    let mut violations: Vec<String> = Vec::new();
    // PostgreSQL's backups are its own tools', not gatehouse's.
    let backup_rounds: HashSet<u64> = [1.min(kills), kills / 2]
        .into_iter()
        .filter(|r| *r < kills && matches!(db, Db::Sqlite(_)))
        .collect();
    let mut backups: Vec<BackupRun> = Vec::new();
    let mut committed = Committed::default();
    let mut counted: HashSet<String> = HashSet::new();
    let started = Instant::now();

    for round in 0..kills {
        let server = files.start().await;
        if round > 0 {
            for v in db.violations() {
                violations.push(format!("after kill {round}: {v}"));
            }
            committed.add(&lost_but_committed(&db, &workers, &mut counted));
            if round == 1 && std::env::var_os("GATEHOUSE_CRASH_SABOTAGE").is_some() {
                sabotage(&db, &workers);
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let handles: Vec<_> = workers
            .drain(..)
            .map(|w| tokio::spawn(w.run(server.base.clone(), stop.clone())))
            .collect();
        if backup_rounds.contains(&round) {
            let path = dir.join(format!("backup-{round}.db"));
            let begun = Instant::now();
            let (code, out) = files
                .cli_within(
                    &["backup", "--to", path.to_str().expect("utf-8 path")],
                    Duration::from_secs(120),
                )
                .await;
            if code == 0 {
                backups.push(BackupRun {
                    started: begun,
                    finished: Instant::now(),
                    path,
                });
            } else {
                violations.push(format!("online backup during load failed: {out}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.between(100, round_ms))).await;
        stop.store(true, Ordering::SeqCst);
        server.kill().await;
        for handle in handles {
            workers.push(handle.await.expect("worker panicked"));
        }
    }

    // Last life: resolve every lost answer, then check all that was acknowledged.
    let server = files.start().await;
    for v in db.violations() {
        violations.push(format!("after the last kill: {v}"));
    }
    committed.add(&lost_but_committed(&db, &workers, &mut counted));
    let client = process::client();
    let mut settled = Vec::new();
    for mut w in workers.drain(..) {
        while w
            .users
            .iter()
            .any(|u| matches!(u.signup, Signup::Uncertain))
            || w.chains.iter().any(|c| c.uncertain && !c.revoked)
        {
            if w.step(&client, &server.base).await.is_err() {
                violations.push("transport error while settling lost answers".into());
                break;
            }
        }
        settled.push(w);
    }

    let mut stats = Stats::default();
    let mut users: Vec<User> = Vec::new();
    let mut chains: Vec<Chain> = Vec::new();
    for w in settled {
        stats.add(&w.stats);
        violations.extend(w.violations);
        users.extend(w.users);
        chains.extend(w.chains);
    }

    // Every acknowledged signup logs in.
    let confirmed: Vec<&User> = users
        .iter()
        .filter(|u| matches!(u.signup, Signup::Confirmed(_)))
        .collect();
    let login_failures: Vec<String> = futures::stream::iter(confirmed.iter())
        .map(|u| {
            let client = client.clone();
            let url = server.url("/v1/login");
            async move {
                let r = client
                    .post(url)
                    .json(&json!({"email": u.email, "password": PASSWORD}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::OK => None,
                    Ok(r) => Some(format!("{}: final login answered {}", u.email, r.status())),
                    Err(e) => Some(format!("{}: final login failed: {e}", u.email)),
                }
            }
        })
        .buffer_unordered(4)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    violations.extend(login_failures);

    // Every refresh token the client received is stored; every family it knows exists.
    let revoked: HashMap<String, Option<String>> = db.families();
    let stored: HashSet<Vec<u8>> = db.token_hashes();
    let mut tokens_received = 0usize;
    for chain in &chains {
        match revoked.get(&chain.family) {
            None => violations.push(format!("family {} is not stored", chain.family)),
            Some(Some(reason)) if !(chain.had_uncertain && reason == "reuse_detected") => {
                violations.push(format!(
                    "family {} was revoked ({reason}) though the client did nothing to cause it",
                    chain.family
                ))
            }
            _ => {}
        }
        for tok in &chain.tokens {
            tokens_received += 1;
            if !stored.contains(&token_hash(&tok.value)) {
                violations.push(format!(
                    "family {}: a refresh token received in a 200 is not stored",
                    chain.family
                ));
            }
        }
    }

    // The newest token of every family that is not revoked works now.
    let live: Vec<&Chain> = chains.iter().filter(|c| !c.revoked).collect();
    let refresh_failures: Vec<String> = futures::stream::iter(live.iter())
        .map(|c| {
            let client = client.clone();
            let url = server.url("/v1/refresh");
            async move {
                let r = client
                    .post(url)
                    .json(&json!({"refresh_token": c.newest().value}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == StatusCode::OK => None,
                    Ok(r) => {
                        let status = r.status();
                        let text = r.text().await.unwrap_or_default();
                        Some(format!(
                            "family {}: the newest token answered {status} after the crashes: {text}",
                            c.family
                        ))
                    }
                    Err(e) => Some(format!("family {}: final refresh failed: {e}", c.family)),
                }
            }
        })
        .buffer_unordered(8)
        .filter_map(|x| async move { x })
        .collect()
        .await;
    violations.extend(refresh_failures);
    server.kill().await;
    for v in db.violations() {
        violations.push(format!("at the end: {v}"));
    }

    // The online backups: a consistent snapshot of everything acknowledged before they began.
    let mut backup_checks = 0usize;
    for backup in &backups {
        backup_checks += check_backup(backup, &files, &users, &chains, &mut violations).await;
    }

    eprintln!(
        "crash ({}): {kills} SIGKILLs survived in {:.1} s; {} accounts confirmed ({} signups, {} \
         lost signups confirmed by login), {} logins, {} rotations, {} /v1/me reads; \
         {} lost answers, of which {} signups and {} rotations had committed before the kill \
         (their retries got 409 + login, or the same child inside the reuse grace); \
         {} families revoked after a late retry of a lost answer; \
         {} refresh tokens received, all checked stored; {} live families refreshed at the \
         end; {} online backups taken under load, {} snapshot checks; {} invariant violations",
        db.name(),
        started.elapsed().as_secs_f64(),
        confirmed.len(),
        stats.signups,
        stats.lost_signups_confirmed_by_login,
        stats.logins,
        stats.refreshes,
        stats.reads,
        stats.lost_answers,
        committed.signups,
        committed.rotations,
        stats.revoked_after_lost_answer,
        tokens_received,
        live.len(),
        backups.len(),
        backup_checks,
        violations.len()
    );
    assert!(
        violations.is_empty(),
        "{} invariant violations (seed {seed}):\n{}",
        violations.len(),
        violations.join("\n")
    );
    assert!(
        stats.signups > 0 && stats.refreshes > 0,
        "the load did nothing: {stats:?}"
    );
}
