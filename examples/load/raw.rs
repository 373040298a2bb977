//! Raw limits, measured in this process while the server idles: RS256 signatures, the
//! rotation commit (alone and with the CPUs busy), Argon2id verifications.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use serde_json::{Value, json};

use gatehouse::crypto::jwt::{self, AccessClaims};
use gatehouse::crypto::keys::{KeyRing, generate_into, load_dir};
use gatehouse::crypto::refresh::{RefreshSecret, RefreshToken};
use gatehouse::domain::{AuditKind, Email, FamilyId, Role, UserId};
use gatehouse::storage::sqlite::{SqliteStore, Synchronous};
use gatehouse::storage::{AuditEvent, NewFamily, NewUser, Spend, Store};

use crate::PASSWORD;
use crate::server::copy_durably;
use crate::stats::{median, round};

/// What the raw measurements need to know of the run.
#[derive(Clone)]
pub(crate) struct RawSettings {
    pub(crate) threads: usize,
    pub(crate) duration: Duration,
    pub(crate) sync: Synchronous,
    pub(crate) sync_name: String,
    /// The growth check's database: the commit runs on a copy of it.
    pub(crate) database: Option<PathBuf>,
}

/// Measures one raw limit (a name from `list`), per second.
pub(crate) fn measure(name: &str, s: &RawSettings) -> anyhow::Result<f64> {
    let db = s.database.as_deref();
    match name {
        "sign" => sign(s.threads, s.duration),
        "commit" => commit(s.sync, s.duration, 0, db),
        "commit-busy" => commit(s.sync, s.duration, s.threads, db),
        _ => argon2_verify(s.threads, s.duration),
    }
}

/// The table's name of a raw limit.
pub(crate) fn label(name: &str, s: &RawSettings) -> String {
    let (threads, sync_name) = (s.threads, &s.sync_name);
    match name {
        "sign" => format!("raw: RS256 sign x{threads}"),
        "commit" => format!("raw: rotation commit ({sync_name})"),
        "commit-busy" => format!("raw: commit, CPUs busy ({sync_name})"),
        _ => format!("raw: argon2id verify x{threads}"),
    }
}

/// The raw limits of `--raw`, in the order given; `all` is every one.
pub(crate) fn list(spec: Option<&str>) -> anyhow::Result<Vec<String>> {
    let Some(spec) = spec else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for s in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        match s {
            "all" => out.extend(["sign", "commit", "commit-busy", "argon2"].map(String::from)),
            "sign" | "commit" | "commit-busy" | "argon2" => out.push(s.to_owned()),
            s => bail!("unknown raw limit {s:?}"),
        }
    }
    Ok(out)
}

/// `{name: {median_per_s, runs}}`, and the commit's `synchronous` level when measured.
pub(crate) fn to_json(raw_runs: &BTreeMap<String, Vec<f64>>, sync: &str) -> Value {
    let mut raw = serde_json::Map::new();
    for (name, list) in raw_runs {
        raw.insert(
            name.clone(),
            json!({ "median_per_s": round(median(list)), "runs": list.iter().map(|x| round(*x)).collect::<Vec<_>>() }),
        );
    }
    if raw_runs.contains_key("commit") || raw_runs.contains_key("commit-busy") {
        raw.insert("commit_synchronous".into(), json!(sync));
    }
    Value::Object(raw)
}

fn raw_claims() -> AccessClaims {
    let now = chrono::Utc::now().timestamp();
    AccessClaims {
        iss: "http://127.0.0.1:8080".into(),
        aud: "gatehouse".into(),
        sub: UserId::random(),
        iat: now,
        nbf: now,
        exp: now + 900,
        jti: uuid::Uuid::new_v4(),
        sid: FamilyId::random(),
        role: Role::User,
        amr: vec!["pwd".into()],
    }
}

/// RS256 signatures per second with the service's own signer on `threads` threads.
fn sign(threads: usize, duration: Duration) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    generate_into(dir.path(), chrono::Utc::now())?;
    let ring = Arc::new(KeyRing::new(load_dir(dir.path())?)?);
    let deadline = Instant::now() + duration;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let ring = Arc::clone(&ring);
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    // A fresh jti per token, as the service does.
                    let token = jwt::mint(&ring, &raw_claims()).expect("mint");
                    std::hint::black_box(token);
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    Ok(total as f64 / duration.as_secs_f64())
}

/// Rotation transactions per second, alone, on a file database at `sync`.
///
/// With `busy_threads` > 0, that many threads spin on RS256 signing meanwhile, as the
/// server's workers do under refresh load: the committing thread then waits for a CPU
/// after each fsync. With `copy_of`, the database is a copy of that file (growth check).
fn commit(
    sync: Synchronous,
    duration: Duration,
    busy_threads: usize,
    copy_of: Option<&Path>,
) -> anyhow::Result<f64> {
    let stop = Arc::new(AtomicBool::new(false));
    let mut busy = Vec::new();
    if busy_threads > 0 {
        let dir = tempfile::tempdir()?;
        generate_into(dir.path(), chrono::Utc::now())?;
        let ring = Arc::new(KeyRing::new(load_dir(dir.path())?)?);
        for _ in 0..busy_threads {
            let (ring, stop) = (Arc::clone(&ring), Arc::clone(&stop));
            busy.push(std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::black_box(jwt::mint(&ring, &raw_claims()).expect("mint"));
                }
            }));
        }
    }
    let rate = commit_alone(sync, duration, copy_of);
    stop.store(true, Ordering::Relaxed);
    for b in busy {
        let _ = b.join();
    }
    rate
}

fn commit_alone(
    sync: Synchronous,
    duration: Duration,
    copy_of: Option<&Path>,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("raw.db");
    if let Some(src) = copy_of {
        copy_durably(src, &path)?;
    }
    let store = SqliteStore::open(&path, sync, 1)?;
    let secret = RefreshSecret::from_bytes(&[7u8; 32]);
    let mut token = new_chain(&store)?;
    let deadline = Instant::now() + duration;
    let mut n = 0u64;
    while Instant::now() < deadline {
        token = rotate_once(&store, &secret, &token)?;
        n += 1;
    }
    Ok(n as f64 / duration.as_secs_f64())
}

/// A user with one family; returns the family's first token.
fn new_chain(store: &SqliteStore) -> anyhow::Result<RefreshToken> {
    let now = chrono::Utc::now();
    let email = Email::parse(&format!(
        "raw-{}@example.com",
        uuid::Uuid::new_v4().simple()
    ))
    .map_err(|e| anyhow::anyhow!("email {e}"))?;
    let user = store.create_user(NewUser {
        id: UserId::random(),
        email: &email,
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaA",
        role: Role::User,
        now,
    })?;
    let token = RefreshToken::generate();
    store.create_family(NewFamily {
        id: FamilyId::random(),
        user_id: user.id,
        first_token: token.hash().0,
        now,
        token_expires_at: now + chrono::Duration::hours(12),
        family_expires_at: now + chrono::Duration::days(7),
        user_agent: None,
        ip: None,
        password_generation: 0,
        opened_by: AuditEvent::new(now, AuditKind::Signup, "ok"),
        forgives: None,
        settles: None,
        amr: gatehouse::domain::Amr::Pwd,
    })?;
    Ok(token)
}

fn rotate_once(
    store: &SqliteStore,
    secret: &RefreshSecret,
    presented: &RefreshToken,
) -> anyhow::Result<RefreshToken> {
    // What a refresh costs the store: the read the rule judges, then the claim.
    let child = presented.child(secret);
    let now = chrono::Utc::now();
    let stored = store
        .find_refresh_token(presented.hash().0)?
        .ok_or_else(|| anyhow::anyhow!("the chain's token is unknown"))?;
    anyhow::ensure!(stored.spent_at.is_none(), "the chain's token is spent");
    let claimed = store.spend_refresh_token(Spend {
        presented: presented.hash().0,
        child: child.hash().0,
        family_id: stored.family_id,
        now,
        child_expires_at: now + chrono::Duration::hours(12),
    })?;
    anyhow::ensure!(claimed, "the claim on an unspent token failed");
    Ok(child)
}

/// Argon2id verifications per second with the production parameters on `threads`.
fn argon2_verify(threads: usize, duration: Duration) -> anyhow::Result<f64> {
    use argon2::password_hash::phc::PasswordHash;
    use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _};
    use argon2::{Algorithm, Argon2, Params, Version};
    let cost = gatehouse::crypto::password::PasswordCost::PRODUCTION;
    let params = Params::new(cost.memory_kib, cost.iterations, cost.parallelism, None)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let argon2 = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
    let phc = argon2
        .hash_password(PASSWORD.as_bytes())
        .map_err(|e| anyhow::anyhow!("{e}"))?
        .to_string();
    let deadline = Instant::now() + duration;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let argon2 = argon2.clone();
            let phc = phc.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let parsed = PasswordHash::new(&phc).expect("phc");
                    assert!(argon2.verify_password(PASSWORD.as_bytes(), &parsed).is_ok());
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    Ok(total as f64 / duration.as_secs_f64())
}
