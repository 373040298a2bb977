//! Resident memory and CPU time of a process and its descendants, from /proc (a Node
//! cluster is several processes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::pg::{DbProbe, cpu_delta};

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Resident memory of `pid` and all its descendants (a Node cluster is several
/// processes), in KiB.
pub(crate) fn tree_rss_kib(pid: u32) -> Option<u64> {
    let pids = tree_pids(pid)?;
    Some(pids.iter().filter_map(|p| rss_kib(*p)).sum())
}

/// `pid` and all its descendants.
fn tree_pids(pid: u32) -> Option<Vec<u32>> {
    let mut parents: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(p) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // The command name may hold spaces; the fields after its ')' are plain.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parents.entry(ppid).or_default().push(p);
        }
    }
    std::fs::metadata(format!("/proc/{pid}")).ok()?;
    let mut out = vec![pid];
    let mut stack = parents.get(&pid).cloned().unwrap_or_default();
    while let Some(p) = stack.pop() {
        out.push(p);
        stack.extend(parents.get(&p).cloned().unwrap_or_default());
    }
    Some(out)
}

/// User + system CPU seconds of one process (all its threads), from /proc/PID/stat.
pub(crate) fn cpu_secs(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    // After the name: state is field 3; utime and stime are fields 14 and 15.
    let utime: f64 = fields.nth(11)?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    // USER_HZ is 100 on every Linux this runs on.
    Some((utime + stime) / 100.0)
}

fn tree_cpu_secs(pid: u32) -> Option<f64> {
    Some(tree_pids(pid)?.iter().filter_map(|p| cpu_secs(*p)).sum())
}

/// Samples resident memory every `every` until stopped; returns the samples.
pub(crate) fn sample_rss(
    pid: Option<u32>,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<(f64, u64)>> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut samples = Vec::new();
        let Some(pid) = pid else { return samples };
        while !stop.load(Ordering::Relaxed) {
            if let Some(kib) = tree_rss_kib(pid) {
                samples.push((start.elapsed().as_secs_f64(), kib));
            }
            let until = Instant::now() + every;
            while Instant::now() < until && !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        samples
    })
}

/// CPU seconds spent in one measured window.
#[derive(Default)]
pub(crate) struct WindowCpu {
    /// Every server process (replica) with its descendants, summed.
    pub(crate) server: f64,
    /// This load tool.
    pub(crate) client: f64,
    /// The database server's processes for the run's database (`--postgres`).
    pub(crate) db: Option<f64>,
    /// The `--side-pid` process (a private redis-server).
    pub(crate) side: Option<f64>,
}

/// CPU seconds (user + system) the servers, this process, the side process and, with
/// `--postgres`, the database server's processes for the run's database spend between
/// two instants.
pub(crate) async fn cpu_between(
    servers: Vec<u32>,
    side: Option<u32>,
    db: Option<Arc<DbProbe>>,
    from: Instant,
    to: Instant,
) -> WindowCpu {
    let sample = || {
        let server: f64 = servers.iter().filter_map(|p| tree_cpu_secs(*p)).sum();
        let me = cpu_secs(std::process::id()).unwrap_or(0.0);
        let side = side.and_then(tree_cpu_secs);
        (server, me, side)
    };
    tokio::time::sleep_until(tokio::time::Instant::from_std(from)).await;
    let a = sample();
    let db_a = match &db {
        Some(p) => Some(p.sample().await),
        None => None,
    };
    tokio::time::sleep_until(tokio::time::Instant::from_std(to)).await;
    let b = sample();
    let db_cpu = match (&db, db_a) {
        (Some(p), Some(before)) => Some(cpu_delta(&before, &p.sample().await)),
        _ => None,
    };
    WindowCpu {
        server: b.0 - a.0,
        client: b.1 - a.1,
        db: db_cpu,
        side: b.2.zip(a.2).map(|(b, a)| b - a),
    }
}
