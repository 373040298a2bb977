//! The gatehouse server a run spawns (`--spawn`), and waiting for a server to be ready.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::client::client;

/// A gatehouse process with its temporary database, keys and log; killed when dropped.
pub(crate) struct Spawned {
    pub(crate) child: tokio::process::Child,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

impl Spawned {
    /// Stops the server; `false` (with its log's tail printed) when it had already
    /// exited, since a crash during the run makes every figure suspect.
    pub(crate) async fn stop(&mut self) -> anyhow::Result<bool> {
        match self.child.try_wait()? {
            Some(status) => {
                eprintln!(
                    "load: the server exited during the run ({status}):\n{}",
                    log_tail(&self.log)
                );
                Ok(false)
            }
            None => {
                self.child.start_kill()?;
                let _ = self.child.wait().await;
                Ok(true)
            }
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts `binary` on a free loopback port, with a temporary database (a durable copy of
/// `database`, if given) and keys, and rate limits off: the load comes from one address
/// and would trip them. Returns it and its base URL once `/readyz` answers.
pub(crate) async fn spawn_server(
    binary: &Path,
    extra_env: &[String],
    database: Option<&Path>,
) -> anyhow::Result<(Spawned, String)> {
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let db = data.join("gatehouse.db");
    if let Some(src) = database {
        use std::os::unix::fs::DirBuilderExt as _;
        std::fs::DirBuilder::new().mode(0o700).create(&data)?;
        eprintln!("copying {} ...", src.display());
        copy_durably(src, &db)?;
    }
    let port = free_port()?;
    let log = dir.path().join("server.log");
    let out = std::fs::File::create(&log)?;
    let mut cmd = tokio::process::Command::new(binary);
    cmd.env("GATEHOUSE_RATE_LIMITS", "off")
        .env("GATEHOUSE_DATABASE", &db)
        .env("GATEHOUSE_KEYS_DIR", dir.path().join("keys"))
        .env("GATEHOUSE_BIND", format!("127.0.0.1:{port}"))
        .env("GATEHOUSE_ISSUER", format!("http://127.0.0.1:{port}"))
        .env("GATEHOUSE_ACCESS_TTL", "60m")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true);
    for kv in extra_env {
        let (k, v) = kv
            .split_once('=')
            .with_context(|| format!("--env {kv:?} is not KEY=VALUE"))?;
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let mut spawned = Spawned {
        child,
        _dir: dir,
        log,
    };
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    wait_ready(&base, Some(&mut spawned)).await?;
    eprintln!(
        "spawned {} on {base} (pid {}), ready in {:.1}s",
        binary.display(),
        spawned.child.id().unwrap_or(0),
        started.elapsed().as_secs_f64()
    );
    Ok((spawned, base))
}

/// Polls `/readyz` until it answers 2xx (60 s at most, or until the spawned server dies).
pub(crate) async fn wait_ready(
    base: &str,
    mut spawned: Option<&mut Spawned>,
) -> anyhow::Result<()> {
    let probe = client()?;
    let started = Instant::now();
    loop {
        if let Some(s) = spawned.as_deref_mut()
            && let Some(status) = s.child.try_wait()?
        {
            bail!(
                "the server exited at start ({status}):\n{}",
                log_tail(&s.log)
            );
        }
        if let Ok(res) = probe.get(format!("{base}/readyz")).send().await
            && res.status().is_success()
        {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(60) {
            let log = spawned.map(|s| log_tail(&s.log)).unwrap_or_default();
            bail!("{base} was not ready within 60 s\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Copies a database and waits until the copy is on disk. Otherwise the first
/// checkpoint's fsync would write back the whole fresh copy (700 MiB for the growth
/// database) inside the measured window, and the run would measure the copy.
pub(crate) fn copy_durably(src: &Path, dst: &Path) -> anyhow::Result<()> {
    std::fs::copy(src, dst).with_context(|| format!("cannot copy {}", src.display()))?;
    std::fs::File::open(dst)?.sync_all()?;
    Ok(())
}
