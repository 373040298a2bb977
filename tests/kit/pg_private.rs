//! A PostgreSQL server of the test's own: `initdb` in a temp dir, `pg_ctl` on a free
//! loopback port, from the machine's binaries (`/usr/lib/postgresql/*/bin`). Fault tests
//! stop, restart and kill it; the shared server other tests use is never touched.
//!
//! `initdb` refuses to run as root, and tests may: then the server runs as the
//! `postgres` OS user (through `runuser`), in a directory that user owns. Anything
//! missing fails the test, saying how to fix it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::ports::free_port;

pub struct PrivatePostgres {
    bin: PathBuf,
    /// Owns every file; removed when the server is dropped.
    dir: tempfile::TempDir,
    data: PathBuf,
    pub port: u16,
    /// The OS user the server runs as, when the test runs as root.
    run_as: Option<&'static str>,
}

impl PrivatePostgres {
    /// `initdb` and start. `settings` are `-c name=value` server settings.
    pub fn start(settings: &[&str]) -> Self {
        let server = Self::unstarted();
        let data = server.data.to_str().expect("utf-8 temp path").to_owned();
        server.run(
            "initdb",
            &[
                "-D",
                &data,
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
            ],
        );
        let mut conf = String::from(
            "listen_addresses = '127.0.0.1'\nmax_connections = 40\nshared_buffers = 16MB\n",
        );
        for s in settings {
            conf.push_str(s);
            conf.push('\n');
        }
        server.append_conf("postgresql.conf", &conf);
        server.start_on_a_free_port()
    }

    /// A streaming standby of `primary` (`pg_basebackup -R`), started, known to the
    /// primary as `name` (what `synchronous_standby_names` lists). Once promoted it
    /// waits for no standby of its own, whatever the primary's settings said.
    pub fn standby_of(primary: &PrivatePostgres, name: &str) -> Self {
        Self::standby_via(primary, name, primary.port)
    }

    /// [`PrivatePostgres::standby_of`], streaming from the primary through `port` (a
    /// relay that delays it, say) once copied.
    pub fn standby_via(primary: &PrivatePostgres, name: &str, stream_port: u16) -> Self {
        let server = Self::unstarted();
        let data = server.data.to_str().expect("utf-8 temp path").to_owned();
        let port = primary.port.to_string();
        server.run(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &data,
                "-R",
                "-X",
                "stream",
                "--no-sync",
            ],
        );
        // Later lines of the file win over what -R wrote.
        server.append_conf(
            "postgresql.auto.conf",
            &format!(
                "primary_conninfo = 'host=127.0.0.1 port={stream_port} user=postgres \
                 application_name={name}'\nsynchronous_standby_names = ''\n"
            ),
        );
        server.start_on_a_free_port()
    }

    /// A temp dir the server's OS user owns, nothing in it yet.
    fn unstarted() -> Self {
        let bin = binaries();
        let dir = tempfile::Builder::new()
            .prefix("gatehouse-pg-")
            .tempdir()
            .expect("temp dir");
        let run_as = if unsafe { libc::geteuid() } == 0 {
            Some("postgres")
        } else {
            None
        };
        if let Some(user) = run_as {
            give_to(dir.path(), user);
        }
        let data = dir.path().join("data");
        Self {
            bin,
            dir,
            data,
            port: 0,
            run_as,
        }
    }

    fn append_conf(&self, file: &str, lines: &str) {
        let path = self.data.join(file);
        let mut text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        text.push_str(lines);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    fn start_on_a_free_port(mut self) -> Self {
        for _ in 0..5 {
            self.port = free_port();
            if self.try_start() {
                return self;
            }
        }
        panic!(
            "the private PostgreSQL did not start; its log:\n{}",
            self.log_tail()
        );
    }

    /// `pg_ctl promote`, waiting until the standby takes writes.
    pub fn promote(&self) {
        let data = self.data.to_str().expect("utf-8").to_owned();
        self.run("pg_ctl", &["promote", "-w", "-t", "60", "-D", &data]);
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    fn try_start(&self) -> bool {
        let options = format!(
            "-p {} -k {}",
            self.port,
            self.dir.path().to_str().expect("utf-8 temp path")
        );
        let (ok, _) = self.output(
            "pg_ctl",
            &[
                "start",
                "-w",
                "-t",
                "60",
                "-D",
                self.data.to_str().expect("utf-8"),
                "-l",
                self.log().to_str().expect("utf-8"),
                "-o",
                &options,
            ],
        );
        ok
    }

    /// Starts the server again on the same port (after [`PrivatePostgres::stop`]).
    pub fn start_again(&self) {
        assert!(
            self.try_start(),
            "the private PostgreSQL did not start again on port {}; its log:\n{}",
            self.port,
            self.log_tail()
        );
    }

    /// `pg_ctl stop -m MODE` (`smart`, `fast` or `immediate`), waiting until it is down.
    pub fn stop(&self, mode: &str) {
        let data = self.data.to_str().expect("utf-8").to_owned();
        self.run("pg_ctl", &["stop", "-w", "-m", mode, "-D", &data]);
    }

    /// Roles other than `postgres` must give a password over TCP (SCRAM), so a test can
    /// see a wrong one refused; `postgres` stays trusted for the kit's own connections.
    /// initdb's `--auth=trust` would take any password.
    pub fn require_passwords(&self) {
        std::fs::write(
            self.data.join("pg_hba.conf"),
            "local all postgres trust\n\
             host all postgres 127.0.0.1/32 trust\n\
             host all all 127.0.0.1/32 scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        self.sql("SELECT pg_reload_conf()");
    }

    /// One SQL batch on a fresh admin connection (off any async runtime).
    pub fn sql(&self, sql: &str) {
        let url = self.url();
        let sql = sql.to_owned();
        off_runtime(move || {
            let mut client = connect(&url);
            client
                .batch_execute(&sql)
                .unwrap_or_else(|e| panic!("`{sql}` on the private PostgreSQL: {e}"));
        });
    }

    /// One number from a query.
    pub fn query_i64(&self, sql: &str) -> i64 {
        let url = self.url();
        let sql = sql.to_owned();
        off_runtime(move || {
            let mut client = connect(&url);
            client
                .query_one(&sql, &[])
                .and_then(|r| r.try_get(0))
                .unwrap_or_else(|e| panic!("`{sql}` on the private PostgreSQL: {e}"))
        })
    }

    /// Ends every backend gatehouse opened; returns how many.
    pub fn terminate_gatehouse_backends(&self) -> i64 {
        self.query_i64(
            "SELECT count(pg_terminate_backend(pid))::int8 FROM pg_stat_activity
             WHERE application_name = 'gatehouse' AND pid <> pg_backend_pid()",
        )
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let (ok, out) = self.output(tool, args);
        assert!(ok, "`{tool} {}` failed:\n{out}", args.join(" "));
    }

    fn output(&self, tool: &str, args: &[&str]) -> (bool, String) {
        let program = self.bin.join(tool);
        let mut command = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        let out = command
            .args(args)
            .current_dir(self.dir.path())
            .env_remove("PGDATA")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        if self.data.join("postmaster.pid").exists() {
            let data = self.data.to_str().unwrap_or_default().to_owned();
            let _ = self.output("pg_ctl", &["stop", "-w", "-m", "immediate", "-D", &data]);
        }
    }
}

/// A client of the private server; waits up to 10 s for it to accept connections.
pub fn connect(url: &str) -> postgres::Client {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match postgres::Client::connect(url, postgres::NoTls) {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => {
                panic!("cannot connect to the private PostgreSQL: {e}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// The synchronous client drives a runtime of its own, which cannot start on a thread
/// that drives the test's.
pub fn off_runtime<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(job)
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb` and `pg_ctl`.
fn binaries() -> PathBuf {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((version, bin))
        })
        .collect();
    found.sort();
    match found.pop() {
        Some((_, bin)) => bin,
        None => panic!(
            "\nThe PostgreSQL fault tests start a server of their own and need `initdb` and \
             `pg_ctl` under /usr/lib/postgresql/<version>/bin.\n\
             Install them with `apt-get install postgresql` (Debian/Ubuntu; .ci/run does).\n"
        ),
    }
}

/// Hands `dir` to the OS user `user` (initdb refuses root); fails saying how to fix it
/// when that user does not exist.
fn give_to(dir: &Path, user: &str) {
    let out = Command::new("id")
        .args(["-u", user])
        .output()
        .expect("cannot run id");
    let uid: u32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or_else(|_| {
            panic!(
                "\nThe tests run as root, and initdb refuses root: the private PostgreSQL \
                 runs as the OS user `{user}`, which does not exist here.\n\
                 Create it (`apt-get install postgresql` does), or run the tests as a \
                 user other than root.\n"
            )
        });
    std::os::unix::fs::chown(dir, Some(uid), None)
        .unwrap_or_else(|e| panic!("cannot give {} to {user}: {e}", dir.display()));
}
