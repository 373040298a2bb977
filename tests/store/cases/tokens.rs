//! Refresh tokens and their families: finding, spending once, revoking, and opening
//! a family with everything its login writes.

use super::*;

pub fn a_token_is_found_with_its_family_user_and_child(store: &S) {
    let u = user(store, "find@example.com");
    let family = open(store, u.id, token(1), t0());
    let found = store
        .find_refresh_token(token(1))
        .expect("read")
        .expect("known");
    assert_eq!(found.family_id, family);
    assert_eq!(found.user, u);
    assert_eq!(found.expires_at, t0() + Duration::hours(1));
    assert_eq!(found.family_expires_at, t0() + Duration::days(1));
    assert_eq!(found.spent_at, None);
    assert!(!found.family_revoked && !found.family_stale);
    assert_eq!(found.child, None);
    assert!(store.find_refresh_token(token(9)).expect("read").is_none());
}

pub fn a_token_is_spent_once_and_its_child_stored(store: &S) {
    let u = user(store, "spend@example.com");
    let family = open(store, u.id, token(1), t0());
    let at = t0() + Duration::minutes(5);
    assert!(spend(store, family, token(1), token(2), at));
    assert!(
        !spend(store, family, token(1), token(3), at),
        "spent already"
    );

    let parent = store
        .find_refresh_token(token(1))
        .expect("read")
        .expect("known");
    assert_eq!(parent.spent_at, Some(at));
    let child = parent.child.expect("the child is stored");
    assert_eq!((child.hash, child.spent), (token(2), false));
    assert_eq!(child.expires_at, at + Duration::hours(1));
    assert!(store.find_refresh_token(token(3)).expect("read").is_none());

    let second = store
        .find_refresh_token(token(2))
        .expect("read")
        .expect("the child is a token");
    assert_eq!((second.family_id, second.spent_at), (family, None));
    let sessions = store.list_sessions(u.id, true, at).expect("list");
    assert_eq!(sessions[0].last_used_at, at, "spending touches the family");

    assert!(spend(store, family, token(2), token(4), at));
    let parent = store
        .find_refresh_token(token(2))
        .expect("read")
        .expect("known");
    assert!(parent.child.is_some());
    let grandparent = store
        .find_refresh_token(token(1))
        .expect("read")
        .expect("known");
    assert!(
        grandparent.child.expect("child").spent,
        "its child is spent now"
    );

    // A claim naming another family spends nothing.
    let other = open(store, u.id, token(5), t0());
    assert!(!spend(store, other, token(4), token(6), at));
    assert!(spend(store, family, token(4), token(6), at));
}

pub fn concurrent_claims_on_one_token_have_one_winner(store: &S) {
    const CLAIMS: u8 = 16;
    for round in 0..3u8 {
        let u = user(store, &format!("race{round}@example.com"));
        let first = [100 + round; 32];
        let family = open(store, u.id, first, t0());
        let barrier = Arc::new(Barrier::new(usize::from(CLAIMS)));
        let winners: Vec<TokenHashBytes> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..CLAIMS)
                .map(|i| {
                    let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
                    let mut child = [i; 32];
                    child[0] = round;
                    child[1] = 200;
                    scope.spawn(move || {
                        barrier.wait();
                        spend(&store, family, first, child, t0()).then_some(child)
                    })
                })
                .collect();
            handles
                .into_iter()
                .filter_map(|h| h.join().expect("a claim panicked"))
                .collect()
        });
        assert_eq!(winners.len(), 1, "round {round}: exactly one claim wins");
        let stored = store
            .find_refresh_token(first)
            .expect("read")
            .expect("known");
        assert_eq!(stored.child.expect("one child").hash, winners[0]);
    }
}

pub fn revoked_families_stay_revoked(store: &S) {
    let u = user(store, "revoke@example.com");
    let stranger = user(store, "stranger@example.com");
    let family = open(store, u.id, token(1), t0());
    let first = t0() + Duration::minutes(1);
    let second = t0() + Duration::minutes(2);

    assert_eq!(
        store
            .revoke_family(family, Some(stranger.id), RevokeReason::Logout, first)
            .expect("revoke"),
        None,
        "another user's family is not found"
    );
    assert!(
        !store
            .find_refresh_token(token(1))
            .expect("read")
            .expect("known")
            .family_revoked
    );
    assert_eq!(
        store
            .revoke_family(family, Some(u.id), RevokeReason::Logout, first)
            .expect("revoke"),
        Some(u.id)
    );
    assert_eq!(
        store
            .revoke_family(family, None, RevokeReason::Admin, second)
            .expect("revoke again"),
        Some(u.id),
        "a revoked family is still found, with its owner"
    );
    let sessions = store.list_sessions(u.id, true, second).expect("list");
    assert_eq!(
        (sessions[0].revoked_at, sessions[0].revoked_reason),
        (Some(first), Some(RevokeReason::Logout)),
        "the first revocation stays"
    );
    assert!(!spend(store, family, token(1), token(2), second));
    let found = store
        .find_refresh_token(token(1))
        .expect("read")
        .expect("known");
    assert!(found.family_revoked && found.spent_at.is_none() && found.child.is_none());
    assert_eq!(
        store
            .revoke_family(FamilyId::random(), None, RevokeReason::Admin, second)
            .expect("revoke"),
        None
    );

    // By token: the family of a spent token too, and its owner is returned.
    let other = open(store, u.id, token(3), t0());
    assert!(spend(store, other, token(3), token(4), first));
    assert_eq!(
        store
            .revoke_family_of_token(token(3), RevokeReason::ReuseDetected, second)
            .expect("revoke"),
        Some((u.id, other))
    );
    assert!(!spend(store, other, token(4), token(5), second));
    assert_eq!(
        store
            .revoke_family_of_token(token(99), RevokeReason::ReuseDetected, second)
            .expect("revoke"),
        None
    );

    // Every family of a user.
    let live = open(store, u.id, token(6), t0());
    assert!(
        store
            .revoke_user_families(u.id, RevokeReason::Admin, second)
            .expect("revoke all")
    );
    assert!(!spend(store, live, token(6), token(7), second));
    assert!(
        !store
            .revoke_user_families(UserId::random(), RevokeReason::Admin, second)
            .expect("revoke all")
    );
    assert!(
        store
            .list_sessions(u.id, false, second)
            .expect("list")
            .is_empty()
    );
    let all = store.list_sessions(u.id, true, second).expect("list");
    assert_eq!(all.len(), 3);
    assert!(all.iter().all(|s| s.revoked_at.is_some()));
    // The first revocation of each family stayed.
    let reason_of = |id: FamilyId| {
        all.iter()
            .find(|s| s.id == id)
            .and_then(|s| s.revoked_reason)
    };
    assert_eq!(reason_of(family), Some(RevokeReason::Logout));
    assert_eq!(reason_of(other), Some(RevokeReason::ReuseDetected));
    assert_eq!(reason_of(live), Some(RevokeReason::Admin));
}

/// A login's writes are one transaction: the family, its first token, the event that
/// opened it (naming the family) and the forgiving of its email's failures all land, or,
/// when the family is refused, none of them.
pub fn a_family_opens_with_its_event_and_forgiveness_or_not_at_all(store: &S) {
    const WINDOW: i64 = 600;
    let u = user(store, "opened@example.com");
    let key = email_attempt_key(&u.email);
    let failures = |store: &S| {
        store
            .login_failures(std::slice::from_ref(&key), WINDOW, t0())
            .expect("read")[0]
            .failures
    };
    let events = |store: &S| {
        store
            .list_audit(&AuditFilter {
                user_id: Some(u.id),
                kind: Some(AuditKind::LoginSucceeded.as_str().into()),
                limit: 10,
                before: None,
            })
            .expect("audit")
    };
    fail(store, std::slice::from_ref(&key), WINDOW, t0());

    let stale = NewFamily {
        opened_by: AuditEvent {
            user_id: Some(u.id),
            ..AuditEvent::new(t0(), AuditKind::LoginSucceeded, "ok")
        },
        forgives: Some(key.clone()),
        ..new_family(u.id, token(1), 7, t0())
    };
    assert!(!store.create_family(stale).expect("refused"));
    assert!(
        events(store).is_empty(),
        "an event for a family never stored"
    );
    assert_eq!(
        failures(store),
        1,
        "forgiven by a login that opened nothing"
    );

    let opened = NewFamily {
        opened_by: AuditEvent {
            user_id: Some(u.id),
            ip: Some("192.0.2.44".into()),
            ..AuditEvent::new(t0(), AuditKind::LoginSucceeded, "ok")
        },
        forgives: Some(key.clone()),
        ..new_family(u.id, token(2), 0, t0())
    };
    let family = opened.id;
    assert!(store.create_family(opened).expect("opened"));
    let recorded = events(store);
    assert_eq!(recorded.len(), 1, "{recorded:?}");
    assert_eq!(
        recorded[0].family_id,
        Some(family),
        "the event names its family"
    );
    assert_eq!(recorded[0].ip.as_deref(), Some("192.0.2.44"));
    assert_eq!(failures(store), 0, "the right password forgives the email");
}
