//! The SMTP server fails: no mail is lost or sent twice, and no answer waits for it.
//! Enumeration: `forgot` answers every address alike, in the same time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gatehouse::startup::Application;
use reqwest::StatusCode;

use super::{WAIT, advance_until_delivered, forgot, mail_to, spawn_mail_app, with_mail};
use crate::helpers::{Backend, PASSWORD, spawn_app_with, unique_email};
use crate::kit::smtp::{Fault, SmtpServer};

/// The 99th percentile of `n` sequential `forgot` calls, each for a new address.
async fn forgot_p99(app: &crate::helpers::TestApp, n: usize) -> Duration {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let email = unique_email(&format!("p99-{i}"));
        let t = Instant::now();
        let (status, _) = forgot(app, &email).await;
        took.push(t.elapsed());
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    took.sort();
    took[(n * 99).div_ceil(100) - 1]
}

#[both_backends]
async fn with_smtp_refusing_connections_mail_waits_and_arrives_once_when_it_is_back() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let email = unique_email("refused");
    smtp.refuse();
    app.signup_ok(&email, PASSWORD).await;
    let (status, _) = forgot(&app, &email).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = app.store(|s| s.mail_stats()).await;
    assert_eq!(stats.sent, 0);
    assert_eq!(stats.queued + stats.retrying, 2, "{stats:?}");
    // Ready all the same, saying what mail is doing.
    let ready = app.get("/readyz").await;
    assert_eq!(ready.status(), StatusCode::OK);
    let ready: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(ready["mail"]["status"], "on", "{ready}");
    assert_eq!(ready["mail"]["smtp"], "failing", "{ready}");
    assert_eq!(ready["mail"]["queued"], 2, "{ready}");
    let metrics = app.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("gatehouse_mail_outbox{status=\"retrying\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("gatehouse_mail_total{outcome=\"retrying\"}"),
        "{metrics}"
    );

    smtp.accept().await;
    let delivered = advance_until_delivered(&app, &smtp, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.advance(Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.count_to(&email), 2, "each mail once: {delivered:?}");
    // The sender records "sent" after the server's 250: give a loaded machine time.
    let mut stats = app.store(|s| s.mail_stats()).await;
    for _ in 0..250 {
        if stats.sent == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        stats = app.store(|s| s.mail_stats()).await;
    }
    assert_eq!((stats.sent, stats.queued, stats.retrying), (2, 0, 0));
    let ready: serde_json::Value = app.get("/readyz").await.json().await.unwrap();
    assert_eq!(ready["mail"]["smtp"], "up", "{ready}");
}

#[both_backends]
async fn a_421_then_451_delays_the_mail_which_then_arrives_once() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    smtp.fail_next(&[Fault::Unavailable421, Fault::Later451]);
    let email = unique_email("later");
    app.signup_ok(&email, PASSWORD).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.count_to(&email), 0);
    let stats = app.store(|s| s.mail_stats()).await;
    assert_eq!(stats.retrying, 1, "{stats:?}");

    advance_until_delivered(&app, &smtp, 1).await;
    app.advance(Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.count_to(&email), 1);
    assert_eq!(smtp.attempts(), 3, "two refusals, one delivery");
}

#[both_backends]
async fn a_550_marks_the_mail_failed_and_audits_it() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    smtp.fail_next(&[Fault::Rejected550]);
    let email = unique_email("rejected");
    app.signup_ok(&email, PASSWORD).await;
    for _ in 0..200 {
        if app.store(|s| s.mail_stats()).await.failed == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.advance(Duration::from_secs(600));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stats = app.store(|s| s.mail_stats()).await;
    assert_eq!(
        (stats.failed, stats.sent, stats.queued, stats.retrying),
        (1, 0, 0, 0)
    );
    assert_eq!(smtp.attempts(), 1, "a permanent failure is not retried");
    let events = app
        .store(|s| {
            s.list_audit(&gatehouse::storage::AuditFilter {
                kind: Some("mail_failed".into()),
                limit: 10,
                ..Default::default()
            })
        })
        .await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].outcome, "rejected");
}

#[both_backends]
async fn a_connection_killed_mid_data_is_retried_and_the_mail_arrives_once() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    smtp.fail_next(&[Fault::DropMidData]);
    let email = unique_email("cut");
    app.signup_ok(&email, PASSWORD).await;
    advance_until_delivered(&app, &smtp, 1).await;
    app.advance(Duration::from_secs(120));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.count_to(&email), 1);
    assert_eq!(smtp.attempts(), 2);
    // The token of the mail that arrived works.
    let token = mail_to(&smtp, &email).await.token();
    assert_eq!(super::verify(&app, &token).await.status(), StatusCode::OK);
}

#[both_backends]
async fn forgot_answers_fast_with_smtp_up_and_down() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    for i in 0..20 {
        app.signup_ok(&unique_email(&format!("known-{i}")), PASSWORD)
            .await;
    }
    let up = forgot_p99(&app, 200).await;
    smtp.refuse();
    let down = forgot_p99(&app, 200).await;
    eprintln!(
        "forgot p99 ({:?}): SMTP up {up:?}, SMTP down {down:?}",
        Backend::from_env()
    );
    for p99 in [up, down] {
        assert!(p99 < Duration::from_millis(250), "p99 {p99:?}");
    }
}

/// On a multi-threaded runtime: the app's sender runs on the test's runtime (as in
/// production it runs beside the HTTP workers, not on them), and on one thread its SMTP
/// conversation would delay this client's next request, not the server's answer.
#[both_backends(flavor = "multi_thread", worker_threads = 2)]
async fn forgot_answers_known_unknown_and_disabled_addresses_alike() {
    let smtp = SmtpServer::start().await;
    let app = spawn_mail_app(&smtp).await;
    let (known, disabled) = (unique_email("known"), unique_email("disabled"));
    app.signup_ok(&known, PASSWORD).await;
    let off = app.signup_ok(&disabled, PASSWORD).await;
    let id: gatehouse::domain::UserId = off.user.id.parse().unwrap();
    let now = app.now();
    app.store(move |s| s.update_user(id, None, Some(true), now))
        .await;
    smtp.wait_for(2, WAIT).await;

    let answers = [
        forgot(&app, &known).await,
        forgot(&app, &unique_email("nobody")).await,
        forgot(&app, &disabled).await,
    ];
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:?}");
    assert_eq!(answers[0], (StatusCode::ACCEPTED, "{}".to_owned()));
    smtp.wait_for(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(smtp.count_to(&known), 2);
    assert_eq!(smtp.count_to(&disabled), 1, "only the signup's mail");

    // The login timing test's statistic: interleaved series, medians, ratio in 0.6..1.6.
    const TRIES: usize = 25;
    let (mut k, mut u) = (Vec::new(), Vec::new());
    for i in 0..TRIES {
        let t = Instant::now();
        forgot(&app, &known).await;
        k.push(t.elapsed());
        let t = Instant::now();
        forgot(&app, &unique_email(&format!("nobody{i}"))).await;
        u.push(t.elapsed());
    }
    k.sort();
    u.sort();
    let (k, u) = (k[TRIES / 2], u[TRIES / 2]);
    let ratio = u.as_secs_f64() / k.as_secs_f64();
    eprintln!("forgot median known {k:?} vs unknown {u:?}: ratio {ratio:.2}");
    assert!(
        (0.6..=1.6).contains(&ratio),
        "median unknown {u:?} vs known {k:?} ({ratio:.2})"
    );
}

/// Every request comes from another client address (through a trusted proxy), so only
/// the per-address count can refuse the fourth.
#[both_backends]
async fn forgot_is_limited_per_address_known_or_not() {
    let smtp = SmtpServer::start().await;
    let app = spawn_app_with(|s| {
        with_mail(s, &smtp);
        s.rate_limits.enabled = true;
        s.rate_limits.auth = gatehouse::config::Tier {
            per_minute: 6,
            burst: 3,
        };
        s.http.trusted_proxies =
            vec![gatehouse::http::client_ip::Cidr::parse("127.0.0.1/32").expect("cidr")];
    })
    .await;
    let known = unique_email("limited");
    app.signup_ok(&known, PASSWORD).await;
    let mut client = 0;
    let mut from_new_client = |email: String| {
        client += 1;
        let app = &app;
        let xff = format!("192.0.2.{client}");
        async move {
            app.api_client
                .post(app.url("/v1/password/forgot"))
                .header("x-forwarded-for", xff)
                .json(&serde_json::json!({ "email": email }))
                .send()
                .await
                .expect("request")
                .status()
        }
    };
    for email in [known.clone(), unique_email("ghost")] {
        let mut statuses = Vec::new();
        for _ in 0..4 {
            statuses.push(from_new_client(email.clone()).await);
        }
        assert_eq!(
            statuses[..3],
            [StatusCode::ACCEPTED; 3],
            "{email}: {statuses:?}"
        );
        assert_eq!(
            statuses[3],
            StatusCode::TOO_MANY_REQUESTS,
            "{email}: {statuses:?}"
        );
    }
    assert_eq!(
        from_new_client(unique_email("fresh")).await,
        StatusCode::ACCEPTED,
        "another address has its own budget"
    );
}

/// Two app instances on one PostgreSQL database, sharing one outbox: each mail once.
#[tokio::test]
async fn two_instances_on_one_postgres_outbox_send_each_mail_exactly_once() {
    Backend::Postgres
        .scope(async {
            let smtp = SmtpServer::start().await;
            let app = spawn_mail_app(&smtp).await;
            if app.backend != Backend::Postgres {
                panic!("this test needs PostgreSQL (GATEHOUSE_TEST_POSTGRES is off)");
            }
            let other =
                Application::build_with_clock(app.settings.clone(), Arc::new(app.clock.clone()))
                    .await
                    .expect("the second instance");
            tokio::spawn(other.run_until_stopped());
            const USERS: usize = 40;
            let mut emails = Vec::new();
            for i in 0..USERS {
                let email = unique_email(&format!("pair-{i}"));
                app.signup_ok(&email, PASSWORD).await;
                emails.push(email);
            }
            for email in &emails {
                forgot(&app, email).await;
            }
            smtp.wait_for(2 * USERS, Duration::from_secs(30)).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let delivered = smtp.delivered().len();
            let duplicates = delivered - 2 * USERS;
            eprintln!(
                "two instances: {delivered} delivered for {} queued, {duplicates} duplicates",
                2 * USERS
            );
            for email in &emails {
                assert_eq!(smtp.count_to(email), 2, "{email}");
            }
            let stats = app.store(|s| s.mail_stats()).await;
            assert_eq!(stats.sent as usize, 2 * USERS);
        })
        .await;
}
