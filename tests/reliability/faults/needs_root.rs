//! Faults only root can make: a full disk (a small tmpfs) and a read-only file system
//! (a tmpfs remounted read-only; chmod does not stop root). They run wherever the tests
//! run as root with CAP_SYS_ADMIN, as on CI; anywhere else they fail, saying so, and
//! `--skip needs_root` leaves them out.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use super::{Api, BOUND, Findings};
use crate::invariants::open_db;
use crate::kit::app::unique_email;
use crate::kit::process::Binary;

/// A tmpfs mounted for one test, unmounted (lazily) when dropped.
struct Tmpfs {
    path: PathBuf,
}

impl Tmpfs {
    /// Panics unless the mount succeeds: these tests never pass without their fault.
    fn mount(path: &Path, size: &str) -> Self {
        std::fs::create_dir_all(path).expect("mount point");
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(path)
            .output()
            .expect("cannot run mount");
        assert!(
            out.status.success(),
            "needs root: cannot mount a tmpfs ({}). Run as root with CAP_SYS_ADMIN, as CI \
             does, or leave these tests out with `--skip needs_root`",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Self {
            path: path.to_owned(),
        }
    }

    fn remount(&self, options: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{options}")])
            .arg(&self.path)
            .status()
            .expect("mount");
        assert!(status.success(), "remount {options} failed");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Fills the file system holding `dir` up to the last byte; returns the filler's path.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write as _;
    let path = dir.join("filler");
    let mut file = std::fs::File::create(&path).expect("filler");
    let chunk = vec![0u8; 64 * 1024];
    loop {
        if file.write_all(&chunk).is_err() {
            break;
        }
    }
    for size in [4096usize, 512, 1] {
        while file.write_all(&chunk[..size]).is_ok() {}
    }
    let _ = file.flush();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_disk_gets_503_on_writes_keeps_jwks_and_recovers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = Tmpfs::mount(&dir.path().join("disk"), "4m");
    let files = Binary {
        database: disk.path.join("gatehouse.db"),
        ..Binary::in_dir(dir.path())
    };
    let server = files.start().await;
    let api = Api::new(&server);
    let (email, access, mut refresh) = api.account("full").await;
    let mut f = Findings::default();

    let filler = fill(&disk.path);
    // The WAL may still have room from earlier commits: rotate until a write needs a new
    // page and fails. Every answer is a 200 (its commit fitted) or the 503 we expect.
    let mut failed = None;
    let mut fitted = 0;
    for _ in 0..400 {
        let a = api.refresh(&refresh).await;
        if a.status == StatusCode::OK {
            refresh = a.body["refresh_token"]
                .as_str()
                .expect("refresh")
                .to_owned();
            fitted += 1;
            continue;
        }
        failed = Some(a);
        break;
    }
    let failed = failed.expect("400 rotations fitted on a full disk");
    eprintln!("full disk: {fitted} rotations still fitted, then {failed:?}");
    f.unavailable("refresh on a full disk", &failed);
    // Once the background checkpoint has emptied the WAL, the next write starts it over in
    // room it already holds and commits; so a write may still succeed, but never a 500.
    let on_full = unique_email("full-during");
    let signed_up = f.committed_or_unavailable(
        "signup on a full disk",
        &api.signup(&on_full).await,
        StatusCode::CREATED,
    );
    f.committed_or_unavailable(
        "login on a full disk",
        &api.login(&email).await,
        StatusCode::OK,
    );
    let jwks = api.get("/.well-known/jwks.json", None).await;
    f.status("JWKS on a full disk", &jwks, StatusCode::OK);
    let me = api.get("/v1/me", Some(&access)).await;
    f.status("GET /v1/me on a full disk", &me, StatusCode::OK);
    let ready = api.get("/readyz", None).await;
    f.ready(
        "while the disk is full",
        ready.status,
        StatusCode::SERVICE_UNAVAILABLE,
    );

    std::fs::remove_file(filler).expect("free the disk");
    let ready = api.readyz_becomes(StatusCode::OK).await;
    f.ready("after freeing the disk", ready, StatusCode::OK);
    let a = api.refresh(&refresh).await;
    f.status("refresh after freeing the disk", &a, StatusCode::OK);
    let fresh = unique_email("full-after");
    let a = api.signup(&fresh).await;
    f.status("signup after freeing the disk", &a, StatusCode::CREATED);
    if signed_up {
        f.status(
            "login of the account signed up on the full disk",
            &api.login(&on_full).await,
            StatusCode::OK,
        );
    }
    f.status(
        "login after freeing the disk",
        &api.login(&email).await,
        StatusCode::OK,
    );
    server.kill().await;
    f.sound(&files.database);
    f.assert_none("full disk");
}

/// chmod 0400 does not stop root (CAP_DAC_OVERRIDE), so the database lives on a tmpfs
/// remounted read-only. (A live remount is refused while the server has files open for
/// writing, so the fault is applied between two lives of the server.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn starting_on_a_read_only_database_refuses_clearly_or_serves_reads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = Tmpfs::mount(&dir.path().join("disk"), "16m");
    let files = Binary {
        database: disk.path.join("gatehouse.db"),
        ..Binary::in_dir(dir.path())
    };
    let server = files.start().await;
    let api = Api::new(&server);
    let (email, access, refresh) = api.account("ro-start").await;
    server.kill().await;
    let mut f = Findings::default();

    // Twice: right after a crash (the -wal and -shm files are there), then after a clean
    // close (no -wal, no -shm). The service may refuse or serve; either way correctly.
    for case in ["after a crash", "after a clean close"] {
        if case == "after a clean close" {
            // The last connection to close checkpoints the WAL and deletes -wal and -shm.
            let conn = open_db(&files.database);
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
                .expect("checkpoint");
            drop(conn);
        }
        read_only_start(&files, &disk, case, (&email, &access, &refresh), &mut f).await;
    }
    f.sound(&files.database);
    f.assert_none("read-only database");
}

async fn read_only_start(
    files: &Binary,
    disk: &Tmpfs,
    case: &str,
    (email, access, refresh): (&str, &str, &str),
    f: &mut Findings,
) {
    disk.remount("ro");
    match files.try_start().await {
        Err(log) => {
            eprintln!("read-only start {case}: refused: {log}");
            if !(log.contains("gatehouse.db") || log.to_lowercase().contains("read")) {
                f.0.push(format!("the refusal does not say what is wrong: {log}"));
            }
            disk.remount("rw");
        }
        Ok(server) => {
            eprintln!("read-only start {case}: the server starts and serves");
            let api = Api::new(&server);
            let jwks = api.get("/.well-known/jwks.json", None).await;
            f.status(
                &format!("JWKS (read-only start {case})"),
                &jwks,
                StatusCode::OK,
            );
            let me = api.get("/v1/me", Some(access)).await;
            f.status(
                &format!("GET /v1/me (read-only start {case})"),
                &me,
                StatusCode::OK,
            );
            f.unavailable(
                &format!("refresh (read-only start {case})"),
                &api.refresh(refresh).await,
            );
            f.unavailable(
                &format!("login (read-only start {case})"),
                &api.login(email).await,
            );
            let ready = api.get("/readyz", None).await;
            f.ready(
                &format!("on a read-only database ({case})"),
                ready.status,
                StatusCode::SERVICE_UNAVAILABLE,
            );

            // The fault goes: the file system is writable again. No restart.
            disk.remount("rw");
            let ready = api.readyz_becomes(StatusCode::OK).await;
            f.ready(
                &format!("after remounting read-write ({case})"),
                ready,
                StatusCode::OK,
            );
            // Give it the whole bound to come back by itself.
            let deadline = Instant::now() + BOUND;
            let a = loop {
                let a = api.refresh(refresh).await;
                if a.status != StatusCode::SERVICE_UNAVAILABLE || Instant::now() > deadline {
                    break a;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            };
            f.status(
                &format!("refresh after remounting read-write ({case})"),
                &a,
                StatusCode::OK,
            );
            f.status(
                &format!("login after remounting read-write ({case})"),
                &api.login(email).await,
                StatusCode::OK,
            );
            server.kill().await;
        }
    }
}
