//! The audit log: listing, filtering, paging, hourly counts, and last logins.

use super::*;

pub fn audit_is_listed_newest_first_and_filtered(store: &S) {
    let u = user(store, "audit@example.com");
    let admin = UserId::random();
    let kinds = [
        AuditKind::Signup,
        AuditKind::LoginFailed,
        AuditKind::LoginSucceeded,
        AuditKind::LoginFailed,
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        store
            .record_audit(AuditEvent {
                user_id: Some(u.id),
                actor_id: (i == 0).then_some(admin),
                ip: Some(format!("192.0.2.{i}")),
                detail: Some(format!("event {i}")),
                ..AuditEvent::new(t0() + Duration::seconds(i as i64), kind, "ok")
            })
            .expect("audit");
    }
    store
        .record_audit(AuditEvent::new(t0(), AuditKind::KeyRotated, "ok"))
        .expect("audit");

    let all = store
        .list_audit(&AuditFilter {
            before: None,
            limit: 100,
            ..AuditFilter::default()
        })
        .expect("audit");
    assert_eq!(all.len(), 5);
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    assert_eq!(all[0].kind, "key_rotated");
    assert_eq!(all[0].user_id, None);

    let mine = store
        .list_audit(&AuditFilter {
            before: None,
            user_id: Some(u.id),
            kind: None,
            limit: 100,
        })
        .expect("audit");
    assert_eq!(mine.len(), 4);
    let signup = mine.last().expect("the first event");
    assert_eq!(
        (signup.kind.as_str(), signup.actor_id, signup.at),
        ("signup", Some(admin), t0())
    );
    assert_eq!(
        (
            signup.ip.as_deref(),
            signup.detail.as_deref(),
            signup.outcome.as_str()
        ),
        (Some("192.0.2.0"), Some("event 0"), "ok")
    );

    let failed = store
        .list_audit(&AuditFilter {
            before: None,
            user_id: Some(u.id),
            kind: Some("login_failed".into()),
            limit: 1,
        })
        .expect("audit");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].detail.as_deref(), Some("event 3"));

    // A type no event has, NUL included (PostgreSQL text cannot hold it): none, no error.
    for kind in ["no_such_kind", "login\0failed", "\0"] {
        let none = store
            .list_audit(&AuditFilter {
                before: None,
                user_id: None,
                kind: Some(kind.into()),
                limit: 10,
            })
            .expect("audit");
        assert!(none.is_empty(), "{kind:?}: {none:?}");
    }
}

pub fn audit_pages_and_hourly_counts_and_last_logins(store: &S) {
    let u = user(store, "console@example.com");
    let never = user(store, "never@example.com");
    // Two hours of events: 3 failed logins and a success in the first, a reuse in the
    // second; one event outside the counted range.
    let hour = t0(); // 1,800,000,000 s is on the hour
    let events = [
        (Duration::minutes(1), AuditKind::LoginFailed),
        (Duration::minutes(2), AuditKind::LoginFailed),
        (Duration::minutes(59), AuditKind::LoginFailed),
        (Duration::minutes(30), AuditKind::LoginSucceeded),
        (Duration::minutes(61), AuditKind::RefreshReuseDetected),
        (Duration::hours(5), AuditKind::LoginFailed),
    ];
    for (offset, kind) in events {
        store
            .record_audit(AuditEvent {
                user_id: Some(u.id),
                ..AuditEvent::new(hour + offset, kind, "ok")
            })
            .expect("audit");
    }
    let counts = store
        .count_audit_by_hour(hour, hour + Duration::hours(2))
        .expect("counts");
    let seen: Vec<(DateTime<Utc>, &str, u64)> = counts
        .iter()
        .map(|c| (c.hour, c.kind.as_str(), c.count))
        .collect();
    assert_eq!(
        seen,
        vec![
            (hour, "login_failed", 3),
            (hour, "login_succeeded", 1),
            (hour + Duration::hours(1), "refresh_reuse_detected", 1),
        ]
    );

    // Paging: `before` an id lists only older events, newest first.
    let page = |before: Option<i64>| {
        store
            .list_audit(&AuditFilter {
                before,
                user_id: Some(u.id),
                kind: None,
                limit: 4,
            })
            .expect("audit")
    };
    let first = page(None);
    assert_eq!(first.len(), 4);
    let second = page(first.last().map(|e| e.id));
    assert_eq!(second.len(), 2);
    assert!(second.iter().all(|e| e.id < first[3].id));

    // Last login: the newest family still stored, per user, in the order asked.
    open(store, u.id, token(1), t0());
    open(store, u.id, token(2), t0() + Duration::hours(2));
    let last = store.last_logins(&[never.id, u.id]).expect("last logins");
    assert_eq!(last, vec![None, Some(t0() + Duration::hours(2))]);
}
