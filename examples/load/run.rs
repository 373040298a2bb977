//! One invocation against a server: start or reach it, sign up the workers' accounts,
//! run the scenarios and raw limits round after round, and write the JSON document and
//! the table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use gatehouse::storage::sqlite::Synchronous;

use crate::Args;
use crate::client::{Account, Target, client};
use crate::pg::BenchDatabase;
use crate::raw::{self, RawSettings};
use crate::rss::tree_rss_kib;
use crate::scenarios::{Live, Results, run_scenario, scenario_list};
use crate::seed::count_users;
use crate::server::{Spawned, spawn_server, wait_ready};
use crate::stats::Stats;

pub(crate) async fn run(args: Args) -> anyhow::Result<bool> {
    let scenarios = scenario_list(&args.scenarios)?;
    let raws = raw::list(args.raw.as_deref())?;
    let raw_settings = raw_settings(&args)?;
    if let Some(n) = args.replicas {
        if n == 0 || args.spawn.is_none() {
            bail!("--replicas needs --spawn and at least 1");
        }
        if n > 1 && args.postgres.is_none() {
            bail!("--replicas above 1 needs --postgres: SQLite is one process's database");
        }
    }
    let pg = match (&args.postgres, &args.spawn) {
        (Some(url), Some(_)) => Some(BenchDatabase::create(url)?),
        (Some(_), None) => bail!("--postgres needs --spawn"),
        _ => None,
    };
    // Given first, so that an `--env` of the user's replaces it.
    let mut env: Vec<String> = pg.iter().map(BenchDatabase::kek_env).collect();
    if args.replicas.is_some() {
        // A token issued by one replica is presented to the next: one issuer for all.
        env.push("GATEHOUSE_ISSUER=http://127.0.0.1".into());
    }
    env.extend(args.env.iter().cloned());
    if let Some(db) = &pg {
        env.push(format!("GATEHOUSE_DATABASE={}", db.url_text()));
    }
    let (mut spawned, bases, database_users) = reach_server(&args, &env, &scenarios).await?;
    let base = bases.first().cloned().unwrap_or_default();
    let server_pids: Vec<u32> = if spawned.is_empty() {
        args.rss_pid.into_iter().collect()
    } else {
        spawned.iter().filter_map(|s| s.child.id()).collect()
    };
    // Resident memory is the first replica's (they are alike).
    let server_pid = server_pids.first().copied();

    let mut doc = settings_doc(&args, &bases, &raw_settings.sync_name, database_users);
    let mut results = Results::new();
    let mut healthy = true;
    if base.is_empty() {
        measure_raw_only(&args, &raws, &raw_settings, &mut results)?;
    } else {
        let probe = match &pg {
            Some(db) => Some(Arc::new(db.probe()?)),
            None => None,
        };
        let servers = Servers {
            bases: &bases,
            pids: server_pids,
        };
        let live = prepare(&args, servers, probe, &scenarios, &mut doc).await?;
        let bare = run_rounds(live, &scenarios, &raws, &raw_settings, &mut results).await?;
        if let Some(mut handle) = bare {
            let _ = handle.start_kill();
            let _ = handle.wait().await;
            doc["settings"]["bare_workers"] = json!(crate::bare::workers(&args));
        }
        healthy &= scenarios_doc(&mut doc, &results, args.max_error_rate);
        rss_doc(&mut doc, &results, server_pid);
    }
    doc["raw"] = raw::to_json(&results.raw_runs, &raw_settings.sync_name);

    for s in &mut spawned {
        if !s.stop().await? {
            doc["server_crashed"] = json!(true);
            healthy = false;
        }
    }
    if let (Some(db), Some(bin)) = (&pg, &args.spawn) {
        doc["postgres_database"] = json!(db.name);
        if args.round_trips > 0 && !base.is_empty() {
            doc["round_trips"] =
                crate::trips::count(bin, &env, db, &scenarios, args.round_trips).await?;
        }
    }
    // After every server on it has stopped.
    drop(pg);
    doc["healthy"] = json!(healthy);
    write_output(&args, &base, &doc, &results)?;
    Ok(healthy)
}

/// The raw limits' settings; the commit runs at the spawned server's `synchronous`
/// level unless `--raw-sync` says otherwise, so that ratio 1 divides like by like.
fn raw_settings(args: &Args) -> anyhow::Result<RawSettings> {
    let sync_name = args
        .raw_sync
        .clone()
        .or_else(|| {
            args.env
                .iter()
                .find_map(|kv| kv.strip_prefix("GATEHOUSE_SQLITE_SYNCHRONOUS="))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "normal".into());
    let sync = Synchronous::parse(&sync_name)
        .with_context(|| format!("synchronous {sync_name:?}: normal or full"))?;
    Ok(RawSettings {
        threads: args.raw_threads,
        duration: args.raw_duration,
        sync,
        sync_name,
        database: args.database.clone(),
    })
}

/// Spawns the server (or `--replicas` of them) or waits for the one at `--url`; no base
/// URL when there is none and nothing needs one (raw limits only). Also the seeded
/// database's user count.
async fn reach_server(
    args: &Args,
    env: &[String],
    scenarios: &[String],
) -> anyhow::Result<(Vec<Spawned>, Vec<String>, Option<i64>)> {
    match (&args.spawn, &args.url) {
        (Some(bin), _) => {
            let (mut spawned, mut bases) = (Vec::new(), Vec::new());
            // One after the other: the first start makes the keys and the refresh
            // secret in the database, the others load them.
            for _ in 0..args.replicas.unwrap_or(1) {
                let (s, base) = spawn_server(bin, env, args.database.as_deref()).await?;
                spawned.push(s);
                bases.push(base);
            }
            let users = args.database.as_deref().and_then(|db| count_users(db).ok());
            Ok((spawned, bases, users))
        }
        (None, Some(url)) => {
            let base = url.trim_end_matches('/').to_owned();
            wait_ready(&base, None).await?;
            Ok((Vec::new(), vec![base], None))
        }
        (None, None) if scenarios.is_empty() && !args.bare => Ok((Vec::new(), Vec::new(), None)),
        (None, None) => bail!("give --url or --spawn"),
    }
}

fn settings_doc(
    args: &Args,
    bases: &[String],
    sync_name: &str,
    database_users: Option<i64>,
) -> Value {
    json!({
        "label": args.label,
        "url": bases.first().cloned().unwrap_or_default(),
        "replica_urls": bases,
        "settings": {
            "duration_s": args.duration.as_secs_f64(),
            "warmup_s": args.warmup.as_secs_f64(),
            "concurrency": args.concurrency,
            "repeat": args.repeat,
            "env": args.env,
            "synchronous": sync_name,
            "raw_threads": args.raw_threads,
            "raw_duration_s": args.raw_duration.as_secs_f64(),
            "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
            "database_users": database_users,
            "backend": if args.postgres.is_some() { "postgres" } else { "sqlite" },
            "replicas": bases.len(),
        },
        "started_unix_ms": chrono::Utc::now().timestamp_millis(),
    })
}

/// The servers under load: their base URLs and processes (one of each per replica).
struct Servers<'b> {
    bases: &'b [String],
    pids: Vec<u32>,
}

/// Idle memory, the JWKS ETag and body, the workers' accounts and the bare baseline:
/// everything made before the first measurement.
async fn prepare<'a>(
    args: &'a Args,
    servers: Servers<'_>,
    db: Option<Arc<crate::pg::DbProbe>>,
    scenarios: &[String],
    doc: &mut Value,
) -> anyhow::Result<Live<'a>> {
    let base = servers
        .bases
        .first()
        .map(String::as_str)
        .unwrap_or_default();
    let server_pid = servers.pids.first().copied();
    // Half a second for the server to settle after start before "idle" is read.
    tokio::time::sleep(Duration::from_millis(500)).await;
    doc["rss_kib"] = json!({ "idle": server_pid.and_then(tree_rss_kib) });
    let http = client()?;
    let jwks = http
        .get(format!("{base}/.well-known/jwks.json"))
        .send()
        .await?;
    let etag = jwks
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let jwks_body = jwks.bytes().await?;
    let mut target = Target::new(
        servers.pids,
        db,
        servers.bases,
        etag,
        // Emails unique across invocations against the same server.
        format!(
            "{}-{}-{}",
            args.label,
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        ),
    )?;
    target.side_pid = args.side_pid;
    let target = Arc::new(target);
    let needs_accounts = scenarios.iter().any(|s| s != "jwks" && s != "jwks-304");
    let accounts = if needs_accounts {
        sign_up(&target, args.concurrency.max(1)).await?
    } else {
        Vec::new()
    };
    let (bare_process, bare) = if args.bare {
        let (process, target) = start_bare(&jwks_body, crate::bare::workers(args)).await?;
        (Some(process), Some(target))
    } else {
        (None, None)
    };
    Ok(Live {
        args,
        target,
        bare,
        bare_process,
        accounts,
        server_pid,
    })
}

/// `n` accounts, eight signups at a time.
async fn sign_up(target: &Target, n: usize) -> anyhow::Result<Vec<Account>> {
    let t0 = Instant::now();
    let mut accounts = Vec::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(8) {
        let futs = chunk.iter().map(|&i| target.signup(i));
        for a in futures::future::join_all(futs).await {
            accounts.push(a?);
        }
    }
    eprintln!(
        "signed up {} accounts in {:.1}s",
        accounts.len(),
        t0.elapsed().as_secs_f64()
    );
    Ok(accounts)
}

/// The bare baseline's process, and the baseline as a target.
async fn start_bare(
    body: &[u8],
    workers: usize,
) -> anyhow::Result<(tokio::process::Child, Arc<Target>)> {
    let (handle, url) = crate::bare::start(body, workers).await?;
    let target = Arc::new(Target::new(
        handle.id().into_iter().collect(),
        None,
        &[url],
        String::new(),
        String::new(),
    )?);
    Ok((handle, target))
}

/// Every round: the scenarios, then the raw limits while the server idles. Returns the
/// bare baseline's process, to be stopped.
async fn run_rounds(
    mut live: Live<'_>,
    scenarios: &[String],
    raws: &[String],
    raw_settings: &RawSettings,
    results: &mut Results,
) -> anyhow::Result<Option<tokio::process::Child>> {
    let rounds = live.args.repeat.max(1);
    for round in 0..rounds {
        eprintln!("round {}/{rounds}", round + 1);
        for s in scenarios {
            run_scenario(&mut live, s, results).await?;
        }
        for r in raws {
            let (name, settings) = (r.clone(), raw_settings.clone());
            let rate =
                tokio::task::spawn_blocking(move || raw::measure(&name, &settings)).await??;
            let label = raw::label(r, raw_settings);
            eprintln!("  {label:<24} {rate:>10.1}/s");
            results.table.rows.push(format!("{label:<24} {rate:>10.1}"));
            results.raw_runs.entry(r.clone()).or_default().push(rate);
        }
    }
    Ok(live.bare_process.take())
}

/// No server: the raw limits alone, `--repeat` times.
fn measure_raw_only(
    args: &Args,
    raws: &[String],
    settings: &RawSettings,
    results: &mut Results,
) -> anyhow::Result<()> {
    for _ in 0..args.repeat.max(1) {
        for r in raws {
            let rate = raw::measure(r, settings)?;
            eprintln!("  raw {r:<10} {rate:>10.1}/s");
            results.raw_runs.entry(r.clone()).or_default().push(rate);
        }
    }
    Ok(())
}

/// `scenarios`: the median and every round of each; `false` when a scenario's error
/// share exceeds `max_error_rate`.
fn scenarios_doc(doc: &mut Value, results: &Results, max_error_rate: f64) -> bool {
    let mut healthy = true;
    let mut out = serde_json::Map::new();
    for (name, list) in &results.runs {
        let med = Stats::median(list);
        let share = med.error_count() as f64 / med.requests.max(1) as f64;
        if share > max_error_rate {
            eprintln!("load: {name}: {:.2}% of requests failed", share * 100.0);
            healthy = false;
        }
        out.insert(
            name.clone(),
            json!({
                "median": med.json(),
                "runs": list.iter().map(Stats::json).collect::<Vec<_>>(),
            }),
        );
    }
    doc["scenarios"] = Value::Object(out);
    if !results.mixed_parts.is_empty() {
        doc["mixed_parts"] = Value::Array(results.mixed_parts.clone());
    }
    healthy
}

fn rss_doc(doc: &mut Value, results: &Results, server_pid: Option<u32>) {
    doc["rss_kib"]["idle_end"] = json!(server_pid.and_then(tree_rss_kib));
    doc["rss_kib"]["mixed_peak"] = json!(results.rss_mixed_peak.iter().max());
    doc["rss_kib"]["after_mixed"] = json!(results.rss_after_mixed.last());
}

fn write_output(args: &Args, base: &str, doc: &Value, results: &Results) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(doc)?;
    if let Some(path) = &args.json_out {
        std::fs::write(path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    if args.json {
        println!("{text}");
    } else {
        println!("{} ({base})", args.label);
        for row in &results.table.rows {
            println!("  {row}");
        }
        if let Some(rss) = doc.get("rss_kib") {
            println!("  resident memory (KiB): {rss}");
        }
    }
    Ok(())
}
