//! The real `gatehouse` binary: `serve` on a free port, its CLI, its logs, its signals.
//!
//! The environment is cleared first, so a `GATEHOUSE_*` or `RUST_LOG` in the shell of
//! whoever runs the tests cannot change what a test sees.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt as _;

use super::ports::free_port;

/// How long a CLI command may run unless the caller says otherwise.
const CLI_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `serve` may take to answer `/healthz` (a debug build on a busy machine).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The binary `cargo test` built for this test. Only integration tests get the variable;
/// other users (the load tool) name the binary with [`Binary::of`].
pub fn test_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_gatehouse") {
        Some(path) => PathBuf::from(path),
        None => panic!("not built as an integration test: use Binary::of"),
    }
}

/// An HTTP client for one server life: generous timeouts, no stale pooled connections
/// (a restarted server is a new peer on a new port).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent("gatehouse-kit/1.0")
        .build()
        .expect("cannot build the HTTP client")
}

/// The binary with its files and environment; start it, or run a CLI command on the
/// same files. Cloning it and changing a path gives another server on other files.
#[derive(Clone, Debug)]
pub struct Binary {
    pub program: PathBuf,
    pub database: PathBuf,
    pub keys_dir: PathBuf,
    /// stdout and stderr of every start, appended.
    pub log: PathBuf,
    pub env: Vec<(String, String)>,
}

impl Binary {
    /// `dir/gatehouse.db`, `dir/keys`, `dir/server.log`; production Argon2 (only the
    /// in-process app can have the cheap one), no per-IP limits, two workers of each
    /// kind, and an issuer without a port, so tokens stay valid across restarts.
    pub fn in_dir(dir: &Path) -> Self {
        Self::of(&test_binary(), dir)
    }

    /// [`Binary::in_dir`] for another build of the binary (a release build, say).
    pub fn of(program: &Path, dir: &Path) -> Self {
        Self {
            program: program.to_owned(),
            database: dir.join("gatehouse.db"),
            keys_dir: dir.join("keys"),
            log: dir.join("server.log"),
            env: vec![
                ("GATEHOUSE_RATE_LIMITS".into(), "off".into()),
                ("GATEHOUSE_HASH_WORKERS".into(), "2".into()),
                ("GATEHOUSE_HTTP_WORKERS".into(), "2".into()),
                ("GATEHOUSE_ISSUER".into(), "http://127.0.0.1".into()),
                ("RUST_LOG".into(), "warn".into()),
            ],
        }
    }

    /// On the PostgreSQL database at `url` instead of SQLite, with a key-encryption key of
    /// its own (a fresh 0600 file beside the other files) for the keys stored there.
    /// Clones share the file, so replicas share the keys.
    pub fn on_postgres(self, url: &str) -> Self {
        let dir = self
            .database
            .parent()
            .expect("the files' directory")
            .to_owned();
        let kek = super::app::write_kek(&dir);
        self.with("GATEHOUSE_DATABASE", url).with(
            "GATEHOUSE_KEY_ENCRYPTION_KEY_FILE",
            &kek.display().to_string(),
        )
    }

    /// Sets (or replaces) one environment variable.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        self.command_of(&self.program, args)
    }

    /// `program` with this binary's environment (the binary itself, or a wrapper of it).
    fn command_of(&self, program: &Path, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(program);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("GATEHOUSE_DATABASE", &self.database)
            .env("GATEHOUSE_KEYS_DIR", &self.keys_dir)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true);
        command
    }

    /// Runs a CLI command to completion: its exit code (-1 when a signal ended it) and
    /// its stdout followed by its stderr.
    pub async fn cli(&self, args: &[&str]) -> (i32, String) {
        self.cli_within(args, CLI_TIMEOUT).await
    }

    /// [`Binary::cli`], but a command still running after `timeout` is killed and
    /// reported as exit code -1.
    pub async fn cli_within(&self, args: &[&str], timeout: Duration) -> (i32, String) {
        let run = self.run(args, None);
        match tokio::time::timeout(timeout, run).await {
            Ok(out) => (out.code, format!("{}{}", out.stdout, out.stderr)),
            Err(_) => (
                -1,
                format!(
                    "`gatehouse {}` did not finish within {timeout:?}",
                    args.join(" ")
                ),
            ),
        }
    }

    /// [`Binary::cli`] on a terminal: a pseudo-terminal from util-linux's `script`
    /// holds stdin, stdout and stderr, as when a person runs the command. Its exit code,
    /// and everything the terminal showed.
    pub async fn cli_in_terminal(&self, args: &[&str]) -> (i32, String) {
        let quote = |word: &str| format!("'{}'", word.replace('\'', r#"'\''"#));
        let line = std::iter::once(self.program.to_str().expect("a UTF-8 path"))
            .chain(args.iter().copied())
            .map(quote)
            .collect::<Vec<_>>()
            .join(" ");
        // -e: script exits with the command's code; /dev/null: no typescript file.
        let run = self
            .command_of(Path::new("script"), &["-qec", &line, "/dev/null"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output();
        match tokio::time::timeout(CLI_TIMEOUT, run).await {
            Ok(Ok(out)) => (
                out.status.code().unwrap_or(-1),
                format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            ),
            Ok(Err(e)) => panic!("cannot run `script` (util-linux) for a terminal: {e}"),
            Err(_) => (
                -1,
                format!("`gatehouse {}` hung on a terminal", args.join(" ")),
            ),
        }
    }

    /// Runs a CLI command feeding it `stdin`; panics unless it exits 0. Returns stdout.
    pub async fn cli_ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = tokio::time::timeout(CLI_TIMEOUT, self.run(args, stdin))
            .await
            .unwrap_or_else(|_| panic!("`gatehouse {}` hung", args.join(" ")));
        assert_eq!(
            out.code,
            0,
            "`gatehouse {}` failed:\nstdout: {}\nstderr: {}",
            args.join(" "),
            out.stdout,
            out.stderr,
        );
        out.stdout
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot start the gatehouse CLI");
        let mut pipe = child.stdin.take().expect("the CLI has no stdin");
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes())
                .await
                .expect("cannot write to the CLI");
        }
        // Closed either way: a CLI that reads stdin must see its end, not wait for it.
        drop(pipe);
        let out = child
            .wait_with_output()
            .await
            .expect("cannot wait for the CLI");
        CliOutput {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Starts `gatehouse serve` and waits for `/healthz`; panics if it cannot.
    pub async fn start(&self) -> Server {
        match self.try_start().await {
            Ok(server) => server,
            Err(e) => panic!("the server did not start: {e}"),
        }
    }

    /// Starts `gatehouse serve` on a free port and waits for `/healthz` (liveness: a
    /// server on a read-only database is up and serving reads, yet not ready).
    /// `Err` carries the exit status and the log's tail when the process exits instead.
    pub async fn try_start(&self) -> Result<Server, String> {
        let mut last = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.log)
                .expect("cannot open the server log");
            let log_from = log.metadata().expect("log metadata").len();
            let mut child = self
                .command(&["serve"])
                .env("GATEHOUSE_BIND", format!("127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::from(log.try_clone().expect("log fd")))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("cannot start gatehouse");
            let base = format!("http://127.0.0.1:{port}");
            let client = client();
            let deadline = Instant::now() + START_TIMEOUT;
            loop {
                if let Ok(Some(status)) = child.try_wait() {
                    last = format!("exited with {status}; log tail:\n{}", self.log_tail());
                    break;
                }
                if let Ok(r) = client.get(format!("{base}/healthz")).send().await
                    && r.status().is_success()
                {
                    return Ok(Server {
                        child,
                        base,
                        client,
                        log: self.log.clone(),
                        log_from,
                    });
                }
                if Instant::now() > deadline {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    return Err(format!(
                        "no /healthz within {START_TIMEOUT:?}; log tail:\n{}",
                        self.log_tail()
                    ));
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            // Lost the port to someone else? Try another; any other exit is final.
            if !last.contains("cannot listen") {
                return Err(last);
            }
        }
        Err(last)
    }

    /// The last 20 lines of the server log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

struct CliOutput {
    code: i32,
    stdout: String,
    stderr: String,
}

/// A running `gatehouse serve`; SIGKILLed when dropped.
pub struct Server {
    child: tokio::process::Child,
    /// `http://127.0.0.1:<port>`
    pub base: String,
    pub client: reqwest::Client,
    log: PathBuf,
    /// Where this life's output starts in the (appended) log.
    log_from: u64,
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// POSTs `body` as JSON to `path`: the status, and the answer as JSON (`Null` when
    /// it is not JSON).
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> (reqwest::StatusCode, serde_json::Value) {
        let r = self
            .client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request");
        let status = r.status();
        let text = r.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::Null),
        )
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("the server has exited")
    }

    /// Sends SIGTERM and returns at once (requests in flight may still be answered).
    pub fn terminate(&self) {
        let pid = self.pid().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("cannot run kill");
        assert!(status.success(), "kill -TERM {pid}: {status}");
    }

    /// SIGTERM, waits for a clean exit (status 0 within 30 s), and returns everything
    /// this life of the server wrote to stdout and stderr.
    pub async fn stop_and_collect(mut self) -> String {
        self.terminate();
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("gatehouse did not exit after SIGTERM")
            .expect("cannot wait for gatehouse");
        assert!(status.success(), "exit status after SIGTERM: {status}");
        let mut file = std::fs::File::open(&self.log).expect("cannot open the server log");
        file.seek(SeekFrom::Start(self.log_from)).expect("seek");
        let mut out = String::new();
        file.read_to_string(&mut out).expect("the log is not UTF-8");
        out
    }

    /// SIGKILL (no chance to flush, checkpoint or answer), then reap.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
