//! PostgreSQL failover under load: a private primary and a streaming standby
//! (`pg_basebackup -R`), two `gatehouse serve` processes on the multi-host URL
//! `postgres://primary,standby/…?target_session_attrs=read-write`, the primary killed
//! (`pg_ctl stop -m immediate`) and the standby promoted (`pg_ctl promote`).
//!
//! With synchronous replication nothing acknowledged may be lost: every account whose
//! signup answered 201 logs in, every chain's newest refresh token refreshes (so no
//! acknowledged rotation was lost), no family is revoked as reuse, and nothing answers
//! 500. With asynchronous replication what was lost is printed, not asserted: that is
//! what an asynchronous standby may lose, and deploy/README.md says so.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::json;

use super::pg_faults::{Load, blocking, check_acknowledged, percentile, readyz};
use crate::kit::password::PASSWORD;
use crate::kit::pg_private::PrivatePostgres;
use crate::kit::pg_relay::Relay;
use crate::kit::process::{Binary, Server};

/// How long the load runs before the primary dies, and after the promote.
const BEFORE: Duration = Duration::from_secs(2);
const AFTER: Duration = Duration::from_secs(3);
/// The gap between the kill and the promote (an orchestrator's detection time, short).
const GAP: Duration = Duration::from_millis(500);
/// How far behind the asynchronous standby's WAL is held.
const LAG: Duration = Duration::from_millis(300);

/// What one failover run saw.
struct Run {
    requests: usize,
    acknowledged_signups: usize,
    acknowledged_refreshes: usize,
    unavailable: usize,
    /// From `pg_ctl promote` returning to the first write acknowledged.
    first_write: Option<Duration>,
    /// From the promote to both processes' `/readyz` answering 200.
    ready: Option<Duration>,
    median_503_ms: f64,
    /// Server errors other than 503, and requests over the time bound.
    errors: Vec<String>,
    /// What was acknowledged and is gone, or revoked as reuse.
    lost: Vec<String>,
    reuse_revocations: i64,
}

/// The primary, its standby (`synchronous`: listed in `synchronous_standby_names`), and
/// the two processes on both.
async fn failover(synchronous: bool) -> Run {
    let primary_settings: &[&str] = if synchronous {
        &["synchronous_standby_names = 'standby1'"]
    } else {
        &[]
    };
    let primary = PrivatePostgres::start(primary_settings);
    // Asynchronous: the WAL reaches the standby through a relay that holds it back, as
    // a standby lagging behind a busy primary does, so the kill finds commits that were
    // acknowledged and never shipped.
    let lag = (!synchronous).then(|| Relay::start_delayed(primary.port, LAG));
    let standby = match &lag {
        Some(relay) => PrivatePostgres::standby_via(&primary, "standby1", relay.port),
        None => PrivatePostgres::standby_of(&primary, "standby1"),
    };
    wait_for_streaming(&primary, synchronous);

    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write",
        primary.port, standby.port
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let first = Binary::in_dir(dir.path())
        .on_postgres(&url)
        .with("GATEHOUSE_DB_POOL_SIZE", "4")
        .with("GATEHOUSE_DB_CONNECT_TIMEOUT", "2s")
        // A client whose refresh answered 503 retries the same token: within the grace
        // it gets the child, should the 503's rotation have committed after all.
        .with("GATEHOUSE_REFRESH_REUSE_GRACE", "120s");
    let mut second = first.clone();
    second.log = dir.path().join("server-2.log");
    let a = first.start().await;
    let b = second.start().await;
    let bases = [a.base.clone(), b.base.clone()];

    let load = Load::start_on(&bases, 4, None).await;
    tokio::time::sleep(BEFORE).await;
    let killed = Instant::now();
    let primary = std::sync::Arc::new(primary);
    let p = primary.clone();
    blocking(move || p.stop("immediate")).await;
    tokio::time::sleep(GAP).await;
    let standby = std::sync::Arc::new(standby);
    let s = standby.clone();
    blocking(move || s.promote()).await;
    let promoted = Instant::now();
    let ready = ready_again(&[&a, &b], promoted).await;
    tokio::time::sleep(AFTER.saturating_sub(promoted.elapsed())).await;
    let mut workers = load.finish().await;

    let events: Vec<_> = workers.iter().flat_map(|w| w.events.iter()).collect();
    let first_write = events
        .iter()
        .filter(|e| e.op.writes() && e.status.is_success() && e.sent >= killed)
        .map(|e| e.sent + e.took)
        .filter(|done| *done >= promoted)
        .min()
        .map(|done| done - promoted);
    let unavailable: Vec<Duration> = events
        .iter()
        .filter(|e| e.status == StatusCode::SERVICE_UNAVAILABLE)
        .map(|e| e.took)
        .collect();
    let acknowledged_refreshes = events
        .iter()
        .filter(|e| e.op == super::pg_faults::Op::Refresh && e.status == StatusCode::OK)
        .count();
    let requests = events.len();
    let (errors, mut lost): (Vec<String>, Vec<String>) = workers
        .iter_mut()
        .flat_map(|w| std::mem::take(&mut w.violations))
        .partition(|v| v.contains("answered 5") || v.contains(" took ") || v.contains("no answer"));
    lost.extend(check_acknowledged(&a, &workers).await);
    let reuse_revocations = standby
        .query_i64("SELECT count(*) FROM refresh_families WHERE revoked_reason = 'reuse_detected'");
    let acknowledged_signups = workers.iter().map(|w| w.confirmed.len()).sum();
    a.kill().await;
    b.kill().await;
    drop(lag);
    Run {
        requests,
        acknowledged_signups,
        acknowledged_refreshes,
        unavailable: unavailable.len(),
        first_write,
        ready,
        median_503_ms: percentile(unavailable, 0.5).as_secs_f64() * 1e3,
        errors,
        lost,
        reuse_revocations,
    }
}

/// Waits until the standby streams (and, when `synchronous`, is the synchronous one), so
/// that the load starts on a replicated primary.
fn wait_for_streaming(primary: &PrivatePostgres, synchronous: bool) {
    let want = if synchronous { "sync" } else { "async" };
    let sql = format!(
        "SELECT count(*) FROM pg_stat_replication
         WHERE application_name = 'standby1' AND state = 'streaming' AND sync_state = '{want}'"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while primary.query_i64(&sql) != 1 {
        assert!(
            Instant::now() < deadline,
            "the standby does not stream ({want}) within 30 s; the primary's log:\n{}",
            primary.log_tail()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// From `since` to every server's `/readyz` answering 200 (at most 20 s).
async fn ready_again(servers: &[&Server], since: Instant) -> Option<Duration> {
    for server in servers {
        while readyz(server).await != StatusCode::OK {
            if since.elapsed() > Duration::from_secs(20) {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    Some(since.elapsed())
}

fn report(kind: &str, run: &Run) {
    eprintln!(
        "failover ({kind}): {} requests; {} signups and {} refreshes acknowledged; {} answered \
         503 (median {:.0} ms); first write acknowledged {} after pg_ctl promote returned; \
         /readyz 200 on both processes {} after it; lost: {} acknowledged accounts, {} \
         chains whose acknowledged token no longer refreshes ({} findings in all); {} \
         families revoked as reuse",
        run.requests,
        run.acknowledged_signups,
        run.acknowledged_refreshes,
        run.unavailable,
        run.median_503_ms,
        ms(run.first_write),
        ms(run.ready),
        run.lost
            .iter()
            .filter(|l| l.contains("(201) cannot log in"))
            .count(),
        run.lost
            .iter()
            .filter(|l| l.contains("a refresh token received in a 200")
                || l.contains("the newest token of a chain"))
            .count(),
        run.lost.len(),
        run.reuse_revocations,
    );
}

fn ms(d: Option<Duration>) -> String {
    d.map_or("never".into(), |d| {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_to_a_synchronous_standby_loses_no_acknowledged_write() {
    let run = failover(true).await;
    report("synchronous standby", &run);
    let mut violations = run.errors.clone();
    violations.extend(run.lost.iter().cloned());
    if run.reuse_revocations > 0 {
        violations.push(format!(
            "{} families revoked as reuse",
            run.reuse_revocations
        ));
    }
    if run.first_write.is_none() {
        violations.push("no write acknowledged after the promote".into());
    }
    if run.ready.is_none() {
        violations.push("/readyz not 200 on both processes within 20 s of the promote".into());
    }
    assert!(
        run.acknowledged_signups > 0,
        "the load acknowledged no signup"
    );
    assert!(
        run.unavailable > 0,
        "the load did not run through the failover"
    );
    assert!(
        violations.is_empty(),
        "{} violations:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

/// What an asynchronous standby may lose is printed: the last commits the primary
/// acknowledged before it died, which never reached the standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failover_to_an_asynchronous_standby_reports_what_it_lost() {
    let run = failover(false).await;
    report("asynchronous standby", &run);
    for lost in &run.lost {
        eprintln!("  lost: {lost}");
    }
    // Losing an acknowledged write is what asynchronous replication allows; answering
    // 500 or hanging is not.
    assert!(
        run.errors.is_empty(),
        "{} errors:\n{}",
        run.errors.len(),
        run.errors.join("\n")
    );
    assert!(
        run.first_write.is_some(),
        "no write acknowledged after the promote"
    );
}

/// A rotation whose commit outcome gatehouse cannot know: the connection is lost right
/// after the claim was sent, the server commits it, no answer comes back. The refresh
/// answers 503 (never 500, never a verdict on the token); the client's retry with the
/// same token is judged by the rotation rule, so inside the reuse grace it gets the
/// child the lost answer held, the chain goes on, and the family is not revoked as
/// reuse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_lost_after_its_commit_answers_503_and_its_retry_gets_the_same_child() {
    let pg = PrivatePostgres::start(&[]);
    let relay = Relay::start(pg.port);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Binary::in_dir(dir.path())
        .on_postgres(&format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
            relay.port
        ))
        // The relay finds the claim by its text, which a prepared statement does not send.
        .with("GATEHOUSE_DB_PREPARED_STATEMENTS", "off")
        .with("GATEHOUSE_REFRESH_REUSE_GRACE", "120s")
        .start()
        .await;
    let (status, body) = server
        .post_json(
            "/v1/signup",
            &json!({"email": "in-doubt@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let first = body["refresh_token"]
        .as_str()
        .expect("a refresh token")
        .to_owned();

    // The claim's statement (storage/postgres/families.rs `spend`) names this CTE.
    relay.cut_after(b"claimed AS (");
    let (status, body) = server
        .post_json("/v1/refresh", &json!({"refresh_token": first}))
        .await;
    assert_eq!(relay.cuts(), 1, "the relay did not cut the claim");
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "a rotation of unknown outcome: {body}"
    );
    assert_eq!(body["error"], "service_unavailable");
    // It did commit: the token is spent and its child stored, which the client never got.
    let spent = blocking({
        let pg = std::sync::Arc::new(pg);
        move || {
            let n = pg.query_i64("SELECT count(*) FROM refresh_tokens WHERE spent_at IS NOT NULL");
            (n, pg)
        }
    })
    .await;
    let (spent, pg) = spent;
    assert_eq!(
        spent, 1,
        "the cut claim did not commit: the test proves nothing"
    );

    let (status, retried) = server
        .post_json("/v1/refresh", &json!({"refresh_token": first}))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the retry of a rotation of unknown outcome: {retried}"
    );
    let child = retried["refresh_token"]
        .as_str()
        .expect("the child")
        .to_owned();
    let (status, next) = server
        .post_json("/v1/refresh", &json!({"refresh_token": child}))
        .await;
    assert_eq!(status, StatusCode::OK, "the chain goes on: {next}");
    let reuse =
        pg.query_i64("SELECT count(*) FROM refresh_families WHERE revoked_reason IS NOT NULL");
    assert_eq!(reuse, 0, "a family was revoked");
    server.kill().await;
}

/// The log says why the database is unavailable in the server's or the system's words:
/// with PostgreSQL stopped, "connection refused", where it used to say only "error
/// connecting to server" (and "db error" for a server's refusal, its SQLSTATE lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_is_logged_with_the_refusal_not_just_db_error() {
    let pg = PrivatePostgres::start(&[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let server = Binary::in_dir(dir.path())
        .on_postgres(&pg.url())
        .with("GATEHOUSE_DB_POOL_SIZE", "2")
        .with("GATEHOUSE_DB_CONNECT_TIMEOUT", "1s")
        .start()
        .await;
    let pg = std::sync::Arc::new(pg);
    let p = pg.clone();
    blocking(move || p.stop("fast")).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(readyz(&server).await, StatusCode::SERVICE_UNAVAILABLE);
    let (status, body) = server
        .post_json(
            "/v1/signup",
            &json!({"email": "refused@example.com", "password": PASSWORD}),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let log = server.stop_and_collect().await;
    for what in [
        "not ready",
        "answering 503",
        "PostgreSQL refuses connections",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(what) && l.contains("Connection refused")),
            "no `{what}` line says the connection was refused:\n{log}"
        );
    }
}
