//! The session list: live or all, in the order the sessions were opened.

use super::*;

pub fn sessions_are_listed_live_or_all(store: &S) {
    let u = user(store, "list@example.com");
    let older = open(store, u.id, token(1), t0());
    let newer = open(store, u.id, token(2), t0() + Duration::minutes(1));
    let idle = open(store, u.id, token(3), t0() + Duration::minutes(2));
    let revoked = open(store, u.id, token(4), t0() + Duration::minutes(3));
    let at = t0() + Duration::minutes(30);
    assert!(spend(store, older, token(1), token(5), at));
    store
        .revoke_family(revoked, None, RevokeReason::Logout, at)
        .expect("revoke");

    let all = store.list_sessions(u.id, true, at).expect("list");
    assert_eq!(
        all.iter().map(|s| s.id).collect::<Vec<_>>(),
        [revoked, idle, newer, older],
        "newest first"
    );
    let first = all.iter().find(|s| s.id == older).expect("listed");
    assert_eq!(
        (first.created_at, first.last_used_at, first.expires_at),
        (t0(), at, t0() + Duration::days(1))
    );
    assert_eq!(
        (first.user_agent.as_deref(), first.ip.as_deref()),
        (Some("agent/1.0"), Some("192.0.2.7"))
    );

    // An hour after `idle` opened, its only token has idled out; `older`'s child lives.
    let later = t0() + Duration::minutes(62) + Duration::seconds(30);
    let live: Vec<FamilyId> = store
        .list_sessions(u.id, false, later)
        .expect("list")
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(
        live,
        [older],
        "idle, expired-token and revoked families are not live"
    );
    assert!(
        store
            .list_sessions(UserId::random(), true, at)
            .expect("list")
            .is_empty()
    );
}

/// Families opened within one second (times are kept in whole seconds) are listed in
/// the order they were opened, newest first, not in the order of their random ids.
pub fn sessions_opened_within_one_second_are_listed_newest_first(store: &S) {
    let u = user(store, "same-second@example.com");
    let opened: Vec<FamilyId> = (1..=8).map(|n| open(store, u.id, token(n), t0())).collect();
    let listed: Vec<FamilyId> = store
        .list_sessions(u.id, true, t0())
        .expect("list")
        .iter()
        .map(|s| s.id)
        .collect();
    let newest_first: Vec<FamilyId> = opened.iter().rev().copied().collect();
    assert_eq!(listed, newest_first);
}
