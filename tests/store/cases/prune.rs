//! Pruning: what no rule needs any more goes, what one does stays.

use super::*;

pub fn prune_removes_what_no_rule_needs(store: &S) {
    let u = user(store, "prune@example.com");
    let short = NewFamily {
        family_expires_at: t0() + Duration::hours(2),
        ..new_family(u.id, token(1), 0, t0())
    };
    assert!(store.create_family(short).expect("open"));
    let long = open(store, u.id, token(2), t0());
    let short_family = store
        .find_refresh_token(token(1))
        .expect("read")
        .expect("known")
        .family_id;
    assert!(spend(store, short_family, token(1), token(3), t0()));
    fail(store, &["email:old@example.com".to_owned()], 600, t0());
    fail(
        store,
        &["email:new@example.com".to_owned()],
        600,
        t0() + Duration::hours(3),
    );
    for minutes in [0, 10, 20] {
        store
            .record_audit(AuditEvent::new(
                t0() + Duration::minutes(minutes),
                AuditKind::Signup,
                "ok",
            ))
            .expect("audit");
    }

    let now = t0() + Duration::hours(3);
    let pruned = store
        .prune(now, 600, t0() + Duration::minutes(15))
        .expect("prune");
    // Events before the cutoff: the two families' openings, then minutes 0 and 10.
    assert_eq!(
        (pruned.families, pruned.login_attempts, pruned.audit_events),
        (1, 1, 4)
    );
    assert!(store.find_refresh_token(token(1)).expect("read").is_none());
    assert!(store.find_refresh_token(token(3)).expect("read").is_none());
    assert_eq!(
        store
            .find_refresh_token(token(2))
            .expect("read")
            .expect("kept")
            .family_id,
        long
    );
    assert_eq!(
        store
            .login_failures(&["email:new@example.com".to_owned()], 600, now)
            .expect("read")[0]
            .failures,
        1
    );
    let left = store
        .list_audit(&AuditFilter {
            before: None,
            limit: 10,
            ..AuditFilter::default()
        })
        .expect("audit");
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].at, t0() + Duration::minutes(20));
    assert_eq!(
        store
            .prune(now, 600, t0() + Duration::minutes(15))
            .expect("again"),
        Pruned::default(),
        "nothing left to prune"
    );
}
