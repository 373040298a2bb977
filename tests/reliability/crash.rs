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

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::inspect::Db;
use crate::invariants::{open_db, storage_violations, token_hash};
use crate::kit::body::sid_in;
use crate::kit::password::PASSWORD;
use crate::kit::pgdb::TestDatabase;
use crate::kit::process::{self, Binary};
use crate::kit::rng::Rng;

fn env_u64(key: &str, default: u64) -> u64 {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Debug)]
enum Signup {
    /// The client got a 201 (or confirmed a lost answer with a login) at this moment.
    Confirmed(Instant),
    /// The request was sent and its answer lost in a crash.
    Uncertain,
}

#[derive(Clone, Debug)]
struct User {
    email: String,
    signup: Signup,
}

#[derive(Clone, Debug)]
struct Tok {
    value: String,
    received: Instant,
    /// When the client first presented it (to refresh it).
    presented: Option<Instant>,
}

#[derive(Clone, Debug)]
struct Chain {
    family: String,
    access: String,
    tokens: Vec<Tok>,
    /// The last refresh was sent and its answer lost: the newest token may be spent.
    uncertain: bool,
    /// Ever had a lost answer (the only case where a revoked family is expected).
    had_uncertain: bool,
    /// Revoked for reuse after a lost answer's retry came too late: no longer used.
    revoked: bool,
}

impl Chain {
    fn new(body: &Value, now: Instant) -> Result<Self, String> {
        let access = body["access_token"]
            .as_str()
            .ok_or_else(|| format!("no access_token in {body}"))?;
        let refresh = body["refresh_token"]
            .as_str()
            .ok_or_else(|| format!("no refresh_token in {body}"))?;
        Ok(Self {
            family: sid_in(access).ok_or("access token without sid")?,
            access: access.to_owned(),
            tokens: vec![Tok {
                value: refresh.to_owned(),
                received: now,
                presented: None,
            }],
            uncertain: false,
            had_uncertain: false,
            revoked: false,
        })
    }

    fn newest(&self) -> &Tok {
        self.tokens.last().expect("a chain has a token")
    }
}

#[derive(Default, Debug, Clone, Copy)]
struct Stats {
    signups: u64,
    logins: u64,
    refreshes: u64,
    reads: u64,
    lost_answers: u64,
    lost_signups_confirmed_by_login: u64,
    revoked_after_lost_answer: u64,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.signups += o.signups;
        self.logins += o.logins;
        self.refreshes += o.refreshes;
        self.reads += o.reads;
        self.lost_answers += o.lost_answers;
        self.lost_signups_confirmed_by_login += o.lost_signups_confirmed_by_login;
        self.revoked_after_lost_answer += o.revoked_after_lost_answer;
    }
}

struct Worker {
    id: usize,
    rng: Rng,
    serial: u64,
    users: Vec<User>,
    chains: Vec<Chain>,
    stats: Stats,
    violations: Vec<String>,
}

/// A transport failure: the server went away (or never answered).
struct Lost(String);

impl Worker {
    fn new(id: usize, seed: u64) -> Self {
        Self {
            id,
            rng: Rng::new(seed ^ (id as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            serial: 0,
            users: Vec::new(),
            chains: Vec::new(),
            stats: Stats::default(),
            violations: Vec::new(),
        }
    }

    async fn post(
        client: &reqwest::Client,
        url: String,
        body: Value,
    ) -> Result<(StatusCode, Value), Lost> {
        let response = client
            .post(url)
            .json(&body)
            .send()
            .await
            .map_err(|e| Lost(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| Lost(e.to_string()))?;
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, value))
    }

    /// Runs one server life: requests until the server is killed.
    async fn run(mut self, base: String, stop: Arc<AtomicBool>) -> Self {
        let client = process::client();
        while !stop.load(Ordering::SeqCst) {
            if let Err(Lost(e)) = self.step(&client, &base).await {
                if !stop.load(Ordering::SeqCst) {
                    self.violations.push(format!(
                        "worker {}: transport error while the server was up: {e}",
                        self.id
                    ));
                }
                break;
            }
        }
        self
    }

    async fn step(&mut self, client: &reqwest::Client, base: &str) -> Result<(), Lost> {
        // Lost answers first: the client retries what it does not know the fate of.
        if let Some(i) = self
            .users
            .iter()
            .position(|u| matches!(u.signup, Signup::Uncertain))
        {
            return self.signup(client, base, Some(i)).await;
        }
        if let Some(i) = self.chains.iter().position(|c| c.uncertain && !c.revoked) {
            return self.refresh(client, base, i).await;
        }
        let live: Vec<usize> = (0..self.chains.len())
            .filter(|&i| !self.chains[i].revoked)
            .collect();
        let roll = self.rng.below(100);
        if roll < 15 || self.users.is_empty() {
            self.signup(client, base, None).await
        } else if roll < 30 || live.is_empty() {
            let i = self.rng.below(self.users.len() as u64) as usize;
            self.login(client, base, i).await
        } else if roll < 92 {
            let i = live[self.rng.below(live.len() as u64) as usize];
            self.refresh(client, base, i).await
        } else {
            let i = live[self.rng.below(live.len() as u64) as usize];
            self.me(client, base, i).await
        }
    }

    async fn signup(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        retry: Option<usize>,
    ) -> Result<(), Lost> {
        let i = match retry {
            Some(i) => i,
            None => {
                self.serial += 1;
                let email = format!(
                    "crash-w{}-{}-{}@example.com",
                    self.id,
                    self.serial,
                    self.rng.below(1 << 40)
                );
                self.users.push(User {
                    email,
                    signup: Signup::Uncertain,
                });
                self.users.len() - 1
            }
        };
        let email = self.users[i].email.clone();
        let body = json!({"email": email, "password": PASSWORD});
        let result = Self::post(client, format!("{base}/v1/signup"), body).await;
        let (status, body) = result.inspect_err(|_| self.stats.lost_answers += 1)?;
        match status {
            StatusCode::CREATED => {
                self.users[i].signup = Signup::Confirmed(Instant::now());
                self.stats.signups += 1;
                self.add_chain(&body, "signup");
            }
            StatusCode::CONFLICT if retry.is_some() => {
                // The lost signup had committed: the account must accept its password.
                let login = json!({"email": email, "password": PASSWORD});
                let (status, body) = Self::post(client, format!("{base}/v1/login"), login).await?;
                if status == StatusCode::OK {
                    self.users[i].signup = Signup::Confirmed(Instant::now());
                    self.stats.lost_signups_confirmed_by_login += 1;
                    self.add_chain(&body, "login");
                } else {
                    self.violations.push(format!(
                        "{email}: signup answered 409 after a lost answer, but login answered {status}: {body}"
                    ));
                    self.users.remove(i);
                }
            }
            other => {
                self.violations
                    .push(format!("{email}: signup answered {other}: {body}"));
                self.users.remove(i);
            }
        }
        Ok(())
    }

    async fn login(&mut self, client: &reqwest::Client, base: &str, i: usize) -> Result<(), Lost> {
        let email = self.users[i].email.clone();
        if !matches!(self.users[i].signup, Signup::Confirmed(_)) {
            return Ok(());
        }
        let body = json!({"email": email, "password": PASSWORD});
        let (status, body) = Self::post(client, format!("{base}/v1/login"), body)
            .await
            .inspect_err(|_| self.stats.lost_answers += 1)?;
        if status == StatusCode::OK {
            self.stats.logins += 1;
            self.add_chain(&body, "login");
        } else {
            self.violations.push(format!(
                "{email}: login of a confirmed account answered {status}: {body}"
            ));
        }
        Ok(())
    }

    fn add_chain(&mut self, body: &Value, what: &str) {
        match Chain::new(body, Instant::now()) {
            Ok(chain) => self.chains.push(chain),
            Err(e) => self
                .violations
                .push(format!("{what}: bad token response: {e}")),
        }
    }

    async fn refresh(
        &mut self,
        client: &reqwest::Client,
        base: &str,
        i: usize,
    ) -> Result<(), Lost> {
        let token = self.chains[i].newest().value.clone();
        let now = Instant::now();
        let newest = self.chains[i].tokens.last_mut().expect("token");
        newest.presented.get_or_insert(now);
        let body = json!({"refresh_token": token});
        let result = Self::post(client, format!("{base}/v1/refresh"), body).await;
        let chain = &mut self.chains[i];
        let (status, body) = match result {
            Ok(answer) => answer,
            Err(lost) => {
                chain.uncertain = true;
                chain.had_uncertain = true;
                self.stats.lost_answers += 1;
                return Err(lost);
            }
        };
        let was_uncertain = std::mem::replace(&mut chain.uncertain, false);
        match (status, body["error"].as_str()) {
            (StatusCode::OK, _) => {
                let (Some(access), Some(refresh)) = (
                    body["access_token"].as_str(),
                    body["refresh_token"].as_str(),
                ) else {
                    self.violations
                        .push(format!("refresh 200 without tokens: {body}"));
                    return Ok(());
                };
                if refresh == token {
                    self.violations
                        .push(format!("refresh returned the presented token: {body}"));
                }
                if sid_in(access).as_deref() != Some(chain.family.as_str()) {
                    self.violations.push(format!(
                        "refresh of family {} returned an access token of another family",
                        chain.family
                    ));
                }
                chain.access = access.to_owned();
                chain.tokens.push(Tok {
                    value: refresh.to_owned(),
                    received: Instant::now(),
                    presented: None,
                });
                self.stats.refreshes += 1;
            }
            (StatusCode::UNAUTHORIZED, Some("refresh_token_reused")) if was_uncertain => {
                // The lost rotation had committed and the retry came after the grace:
                // reuse, the family is revoked. Allowed, and counted.
                chain.revoked = true;
                self.stats.revoked_after_lost_answer += 1;
            }
            (status, _) => {
                chain.revoked = true;
                self.violations.push(format!(
                    "family {}: a refresh token received in a 200 answered {status}: {body} \
                     (retry after a lost answer: {was_uncertain})",
                    chain.family
                ));
            }
        }
        Ok(())
    }

    async fn me(&mut self, client: &reqwest::Client, base: &str, i: usize) -> Result<(), Lost> {
        let access = self.chains[i].access.clone();
        let response = client
            .get(format!("{base}/v1/me"))
            .bearer_auth(&access)
            .send()
            .await
            .map_err(|e| Lost(e.to_string()))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| Lost(e.to_string()))?;
        if status == StatusCode::OK {
            self.stats.reads += 1;
        } else {
            self.violations.push(format!(
                "GET /v1/me with a fresh access token answered {status}: {text}"
            ));
        }
        Ok(())
    }
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

/// What the backup round records to judge the snapshot.
struct BackupRun {
    started: Instant,
    finished: Instant,
    path: std::path::PathBuf,
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

/// Checks one online backup; returns how many checks it made.
async fn check_backup(
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

/// Logins in flight when the process dies must not count as failed attempts: only a
/// password proven wrong may. (An earlier version stored a failure before every check
/// and refunded it on success, so each crash mid-login left failures behind, and after
/// 100 of them (by default) every account behind one IP was locked out, though nobody
/// typed a wrong password.) The per-IP limit is lowered to 10 here, below the 30 logins
/// sent at once, so a burst of right passwords above the limit is checked too.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_mid_login_does_not_count_as_failed_attempts() {
    const LOGINS: usize = 30;
    const CRASHES: usize = 3;
    let dir = tempfile::tempdir().expect("temp dir");
    let files = Binary::in_dir(dir.path()).with("GATEHOUSE_LOCKOUT_MAX_FAILURES_PER_IP", "10");
    let server = files.start().await;
    let client = process::client();
    let emails: Vec<String> = (0..LOGINS)
        .map(|i| format!("mid-login-{i}@example.com"))
        .collect();
    let signups = futures::stream::iter(emails.iter())
        .map(|email| {
            let request = client
                .post(server.url("/v1/signup"))
                .json(&json!({"email": email, "password": PASSWORD}));
            async move { request.send().await.map(|r| r.status()) }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await;
    assert!(
        signups.iter().all(|s| matches!(s, Ok(StatusCode::CREATED))),
        "{signups:?}"
    );

    let login_all = |url: String| {
        let logins = futures::stream::FuturesUnordered::new();
        for email in &emails {
            logins.push(
                client
                    .post(format!("{url}/v1/login"))
                    .json(&json!({"email": email, "password": PASSWORD}))
                    .send(),
            );
        }
        logins
    };

    // Thirty right passwords at once from one IP, three times the per-IP limit: every
    // one logs in (those beyond the limit wait for the checks in flight).
    let statuses: Vec<_> = login_all(server.url(""))
        .map(|r| r.map(|r| r.status()))
        .collect()
        .await;
    assert!(
        statuses.iter().all(|s| matches!(s, Ok(StatusCode::OK))),
        "a burst of right passwords above the per-IP limit: {statuses:?}"
    );

    // The server dies as soon as the first login answers: the rest are queued for Argon2
    // or in the middle of it.
    let mut server = Some(server);
    let mut unanswered = 0;
    for _ in 0..CRASHES {
        let running = match server.take() {
            Some(s) => s,
            None => files.start().await,
        };
        let mut logins = login_all(running.url(""));
        let first = logins.next().await.expect("a login");
        assert!(
            matches!(&first, Ok(r) if r.status() == StatusCode::OK),
            "{first:?}"
        );
        running.kill().await;
        while let Some(r) = logins.next().await {
            if r.is_err() {
                unanswered += 1;
            }
        }
    }
    assert!(
        unanswered >= CRASHES * 10,
        "the crashes did not catch logins in flight (only {unanswered} unanswered)"
    );

    let conn = open_db(&files.database);
    let counted: i64 = conn
        .query_row(
            "SELECT COALESCE(SUM(failures), 0) FROM login_attempts",
            [],
            |r| r.get(0),
        )
        .expect("login_attempts");
    assert_eq!(
        counted, 0,
        "{unanswered} logins with the right password died in {CRASHES} crashes; none may \
         count as a failure"
    );
    let server = files.start().await;
    let r = client
        .post(server.url("/v1/login"))
        .json(&json!({"email": emails[0], "password": PASSWORD}))
        .send()
        .await
        .expect("login after the restart");
    let status = r.status();
    let text = r.text().await.unwrap_or_default();
    server.kill().await;
    assert_eq!(
        status,
        StatusCode::OK,
        "after {CRASHES} crashes with logins in flight, the right password is refused: {text}"
    );
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
