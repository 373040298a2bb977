//! Logins cut off by a crash: only a password proven wrong counts against an account.

use futures::StreamExt as _;
use reqwest::StatusCode;
use serde_json::json;

use crate::invariants::open_db;
use crate::kit::password::PASSWORD;
use crate::kit::process::{self, Binary};

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
