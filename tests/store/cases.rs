//! The cases, each a function of a fresh store. Time is passed in (a fixed clock), so
//! windows and expiries are exact.

use std::sync::{Arc, Barrier};

use chrono::{DateTime, Duration, Utc};
use gatehouse::domain::{AuditKind, Email, FamilyId, RevokeReason, Role, User, UserId};
use gatehouse::storage::{
    AttemptCount, AuditEvent, AuditFilter, KeyLoad, Lease, LeaseId, NewFamily, NewUser, Pruned,
    Settle, Spend, Store, StoreError, TokenHashBytes, email_attempt_key,
};

type S = Arc<dyn Store>;

const HASH: &str = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$aGFzaA";

/// A fixed "now", in whole seconds like everything the store keeps.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("a valid time")
}

fn email(s: &str) -> Email {
    Email::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn user_at(store: &S, address: &str, now: DateTime<Utc>) -> User {
    store
        .create_user(NewUser {
            id: UserId::random(),
            email: &email(address),
            password_hash: HASH,
            role: Role::User,
            now,
        })
        .expect("create user")
}

pub fn user(store: &S, address: &str) -> User {
    user_at(store, address, t0())
}

pub fn token(n: u8) -> TokenHashBytes {
    [n; 32]
}

pub fn new_family(
    user: UserId,
    first: TokenHashBytes,
    generation: i64,
    now: DateTime<Utc>,
) -> NewFamily {
    NewFamily {
        id: FamilyId::random(),
        user_id: user,
        first_token: first,
        now,
        token_expires_at: now + Duration::hours(1),
        family_expires_at: now + Duration::days(1),
        user_agent: Some("agent/1.0".into()),
        ip: Some("192.0.2.7".into()),
        password_generation: generation,
        opened_by: AuditEvent {
            user_id: Some(user),
            ip: Some("192.0.2.7".into()),
            user_agent: Some("agent/1.0".into()),
            ..AuditEvent::new(now, AuditKind::LoginSucceeded, "ok")
        },
        forgives: None,
        settles: None,
    }
}

/// Opens a family at generation 0; panics unless it opened.
fn open(store: &S, user: UserId, first: TokenHashBytes, now: DateTime<Utc>) -> FamilyId {
    let family = new_family(user, first, 0, now);
    let id = family.id;
    assert!(
        store.create_family(family).expect("create family"),
        "family refused"
    );
    id
}

fn spend(
    store: &S,
    family: FamilyId,
    presented: TokenHashBytes,
    child: TokenHashBytes,
    now: DateTime<Utc>,
) -> bool {
    store
        .spend_refresh_token(Spend {
            presented,
            child,
            family_id: family,
            now,
            child_expires_at: now + Duration::hours(1),
        })
        .expect("spend")
}

pub fn schema_is_migrated_and_the_store_answers(store: &S) {
    let version = store.schema_version().expect("schema version");
    assert_eq!(
        store.migrate().expect("migrating again"),
        version,
        "a second migration changes nothing"
    );
    assert!(
        !version.starts_with('0'),
        "the schema is migrated: {version}"
    );
    store.ping().expect("ping");
    assert!(store.pool_status().connections >= 1);
}

pub fn users_are_created_found_and_unique(store: &S) {
    let created = user(store, "Ann@Example.com");
    assert_eq!(created.email.as_str(), "ann@example.com");
    assert_eq!((created.role, created.disabled), (Role::User, false));
    assert_eq!(created.created_at, t0());

    let by_email = store
        .account_by_email(&email("ann@example.com"))
        .expect("read")
        .expect("found by email");
    assert_eq!(by_email.user, created);
    assert_eq!(
        (
            by_email.password_hash.as_str(),
            by_email.password_generation
        ),
        (HASH, 0)
    );
    let by_id = store
        .account_by_id(created.id)
        .expect("read")
        .expect("found by id");
    assert_eq!(by_id.user, created);

    let again = store.create_user(NewUser {
        id: UserId::random(),
        email: &email("ann@example.com"),
        password_hash: HASH,
        role: Role::Admin,
        now: t0(),
    });
    assert!(matches!(again, Err(StoreError::EmailTaken)), "{again:?}");

    assert!(
        store
            .account_by_email(&email("nobody@example.com"))
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .account_by_id(UserId::random())
            .expect("read")
            .is_none()
    );
}

pub fn search_matches_a_prefix_with_wildcards_as_plain_characters(store: &S) {
    let addresses = [
        "a_b@example.com",
        "axb@example.com",
        "a%c@example.com",
        "abc@example.com",
        "zed@example.com",
    ];
    for (i, address) in addresses.iter().enumerate() {
        user_at(store, address, t0() + Duration::seconds(i as i64));
    }
    let found = |q: Option<&str>, limit: u32| -> Vec<String> {
        store
            .search_users(q, limit)
            .expect("search")
            .into_iter()
            .map(|u| u.email.as_str().to_owned())
            .collect()
    };
    assert_eq!(found(Some("a_"), 10), ["a_b@example.com"]);
    assert_eq!(found(Some("a%"), 10), ["a%c@example.com"]);
    assert_eq!(
        found(Some("a"), 10),
        [
            "a%c@example.com",
            "a_b@example.com",
            "abc@example.com",
            "axb@example.com"
        ],
        "byte order, like SQLite's"
    );
    assert_eq!(found(Some("a"), 2).len(), 2);
    assert_eq!(found(Some("zed@example.com"), 10), ["zed@example.com"]);
    assert!(found(Some("q"), 10).is_empty());
    // PostgreSQL text cannot hold NUL: an empty answer, as on SQLite, never an error.
    assert!(found(Some("a\0"), 10).is_empty());
    assert!(found(Some("\0"), 10).is_empty());
    assert_eq!(
        found(None, 2),
        ["zed@example.com", "abc@example.com"],
        "newest first"
    );
}

pub fn update_user_sets_role_and_disabling_revokes_every_family(store: &S) {
    let u = user(store, "upd@example.com");
    let family = open(store, u.id, token(1), t0());
    let later = t0() + Duration::minutes(1);

    let promoted = store
        .update_user(u.id, Some(Role::Admin), None, later)
        .expect("update")
        .expect("found");
    assert_eq!((promoted.role, promoted.disabled), (Role::Admin, false));
    assert!(
        !store
            .find_refresh_token(token(1))
            .expect("read")
            .expect("known")
            .family_revoked
    );

    let disabled = store
        .update_user(u.id, None, Some(true), later)
        .expect("update")
        .expect("found");
    assert_eq!((disabled.role, disabled.disabled), (Role::Admin, true));
    let sessions = store.list_sessions(u.id, true, later).expect("list");
    assert_eq!(sessions.len(), 1);
    assert_eq!(sessions[0].id, family);
    assert_eq!(sessions[0].revoked_reason, Some(RevokeReason::Admin));
    assert_eq!(sessions[0].revoked_at, Some(later));

    let enabled = store
        .update_user(u.id, None, Some(false), later)
        .expect("update")
        .expect("found");
    assert!(!enabled.disabled);
    assert!(
        store
            .find_refresh_token(token(1))
            .expect("read")
            .expect("known")
            .family_revoked,
        "enabling the user does not bring the family back"
    );
    assert!(
        store
            .update_user(UserId::random(), Some(Role::Admin), None, later)
            .expect("update")
            .is_none()
    );
}

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

pub fn create_family_refuses_a_stale_generation_a_disabled_or_a_deleted_user(store: &S) {
    let u = user(store, "gen@example.com");
    assert!(
        !store
            .create_family(new_family(u.id, token(1), 1, t0()))
            .expect("ahead"),
        "a generation the user is not at"
    );
    assert!(
        store
            .change_password(u.id, "h1", new_family(u.id, token(2), 0, t0()))
            .expect("change")
    );
    assert!(
        !store
            .create_family(new_family(u.id, token(3), 0, t0()))
            .expect("stale"),
        "a login checked against the old password"
    );
    assert!(store.find_refresh_token(token(3)).expect("read").is_none());
    assert!(
        store
            .create_family(new_family(u.id, token(4), 1, t0()))
            .expect("current")
    );

    store
        .update_user(u.id, None, Some(true), t0())
        .expect("disable");
    assert!(
        !store
            .create_family(new_family(u.id, token(5), 1, t0()))
            .expect("disabled")
    );
    store
        .update_user(u.id, None, Some(false), t0())
        .expect("enable");
    assert!(store.delete_user(u.id, &u.email).expect("delete"));
    assert!(
        !store
            .create_family(new_family(u.id, token(6), 1, t0()))
            .expect("deleted: refused, not an error")
    );
    assert!(
        !store
            .create_family(new_family(UserId::random(), token(7), 0, t0()))
            .expect("unknown user")
    );
}

pub fn two_password_changes_from_one_generation_one_wins(store: &S) {
    let u = user(store, "pw@example.com");
    let old = open(store, u.id, token(1), t0());
    let later = t0() + Duration::minutes(1);
    let barrier = Arc::new(Barrier::new(2));
    let results: Vec<(bool, FamilyId, String)> = std::thread::scope(|scope| {
        let handles: Vec<_> = [("h1", token(2)), ("h2", token(3))]
            .into_iter()
            .map(|(hash, first)| {
                let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
                scope.spawn(move || {
                    let family = new_family(u.id, first, 0, later);
                    let id = family.id;
                    barrier.wait();
                    let won = store.change_password(u.id, hash, family).expect("change");
                    (won, id, hash.to_owned())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a change panicked"))
            .collect()
    });
    let winners: Vec<_> = results.iter().filter(|(won, ..)| *won).collect();
    assert_eq!(winners.len(), 1, "exactly one change wins: {results:?}");
    let (_, new_family_id, hash) = winners[0];
    let account = store.account_by_id(u.id).expect("read").expect("user");
    assert_eq!(
        (account.password_hash.as_str(), account.password_generation),
        (hash.as_str(), 1)
    );
    let sessions = store.list_sessions(u.id, true, later).expect("list");
    assert_eq!(
        sessions.len(),
        2,
        "the loser stored no family: {sessions:?}"
    );
    let of = |id: FamilyId| sessions.iter().find(|s| s.id == id).expect("listed");
    assert_eq!(of(old).revoked_reason, Some(RevokeReason::PasswordChange));
    assert_eq!(of(*new_family_id).revoked_at, None);
    assert!(
        store
            .account_for_session(u.id, *new_family_id, later)
            .expect("read")
            .is_some(),
        "the winner's new session works"
    );
    assert!(
        store
            .account_for_session(u.id, old, later)
            .expect("read")
            .is_none()
    );
}

/// Logins that verified the old password race a password change: whatever the order,
/// no family under the old password is left alive.
pub fn logins_racing_a_password_change_leave_no_live_family_behind(store: &S) {
    const LOGINS: u8 = 8;
    let u = user(store, "racing@example.com");
    let barrier = Arc::new(Barrier::new(usize::from(LOGINS) + 1));
    std::thread::scope(|scope| {
        for i in 0..LOGINS {
            let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
            scope.spawn(move || {
                barrier.wait();
                store
                    .create_family(new_family(u.id, [10 + i; 32], 0, t0()))
                    .expect("login")
            });
        }
        let (store, barrier) = (Arc::clone(store), Arc::clone(&barrier));
        scope.spawn(move || {
            barrier.wait();
            assert!(
                store
                    .change_password(u.id, "h1", new_family(u.id, token(1), 0, t0()))
                    .expect("change")
            );
        });
    });
    let live = store.list_sessions(u.id, false, t0()).expect("list");
    assert_eq!(live.len(), 1, "only the changer's family lives: {live:?}");
    for i in 0..LOGINS {
        if let Some(found) = store.find_refresh_token([10 + i; 32]).expect("read") {
            assert!(found.family_revoked, "an old-password family was left live");
        }
    }
}

pub fn delete_user_scrubs_audit_and_forgets_families_and_lockout(store: &S) {
    let u = user(store, "gone@example.com");
    let keep = user(store, "kept@example.com");
    let family = open(store, u.id, token(1), t0());
    assert!(spend(store, family, token(1), token(2), t0()));
    for who in [&u, &keep] {
        store
            .record_audit(AuditEvent {
                user_id: Some(who.id),
                family_id: Some(family),
                ip: Some("192.0.2.1".into()),
                user_agent: Some("agent".into()),
                detail: Some("personal".into()),
                ..AuditEvent::new(t0(), AuditKind::LoginSucceeded, "ok")
            })
            .expect("audit");
    }
    let keys = [
        email_attempt_key(&u.email),
        email_attempt_key(&keep.email),
        "ip:192.0.2.1".to_owned(),
    ];
    fail(store, &keys, 900, t0());

    assert!(store.delete_user(u.id, &u.email).expect("delete"));
    assert!(!store.delete_user(u.id, &u.email).expect("delete again"));
    assert!(store.account_by_id(u.id).expect("read").is_none());
    assert!(store.find_refresh_token(token(1)).expect("read").is_none());
    assert!(store.find_refresh_token(token(2)).expect("read").is_none());
    assert!(
        store
            .list_sessions(u.id, true, t0())
            .expect("list")
            .is_empty()
    );

    let events = store
        .list_audit(&AuditFilter {
            before: None,
            user_id: Some(u.id),
            kind: None,
            limit: 10,
        })
        .expect("audit");
    // The family's opening and the event above stay, with the bare user id.
    assert_eq!(events.len(), 2, "{events:?}");
    for e in &events {
        assert_eq!((&e.ip, &e.user_agent, &e.detail), (&None, &None, &None));
        assert_eq!(e.family_id, Some(family));
    }
    let kept = store
        .list_audit(&AuditFilter {
            before: None,
            user_id: Some(keep.id),
            kind: None,
            limit: 10,
        })
        .expect("audit");
    assert_eq!(kept[0].detail.as_deref(), Some("personal"));

    let counts = store.login_failures(&keys, 900, t0()).expect("counts");
    assert_eq!(
        counts.iter().map(|c| c.failures).collect::<Vec<_>>(),
        [0, 1, 1],
        "only the deleted email's counter goes"
    );
}

/// Logins racing a disable or a deletion of their user, for real, on many rounds: in
/// whichever order the store serializes them, no family is left live for a disabled user,
/// and no event of a deleted one keeps what could identify them. (The PostgreSQL
/// suite also holds a login inside its transaction while the disable waits:
/// `postgres_only::a_disable_waiting_for_a_login_revokes_the_family_it_opened`.)
pub fn logins_racing_a_disable_or_a_deletion_leave_nothing_behind(store: &S) {
    for round in 0..16u8 {
        let u = user(store, &format!("raced{round}@example.com"));
        let barrier = Barrier::new(2);
        let deleting = round % 2 == 1;
        std::thread::scope(|scope| {
            scope.spawn(|| {
                barrier.wait();
                store
                    .create_family(new_family(u.id, token(round), 0, t0()))
                    .expect("login");
            });
            scope.spawn(|| {
                barrier.wait();
                if deleting {
                    assert!(store.delete_user(u.id, &u.email).expect("delete"));
                } else {
                    store
                        .update_user(u.id, None, Some(true), t0())
                        .expect("disable")
                        .expect("found");
                }
            });
        });
        let live = store.list_sessions(u.id, false, t0()).expect("sessions");
        assert!(live.is_empty(), "round {round}: a live family: {live:?}");
        if deleting {
            for e in audit_of(store, u.id) {
                assert_eq!(
                    (&e.ip, &e.user_agent, &e.detail),
                    (&None, &None, &None),
                    "round {round}: {e:?}"
                );
            }
        }
    }
}

pub fn audit_of(store: &S, user: UserId) -> Vec<gatehouse::storage::AuditRecord> {
    store
        .list_audit(&AuditFilter {
            before: None,
            user_id: Some(user),
            kind: None,
            limit: 100,
        })
        .expect("audit")
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

pub fn lockout_windows_count_expire_and_clear(store: &S) {
    const WINDOW: i64 = 600;
    let keys = ["email:a@example.com".to_owned(), "ip:192.0.2.9".to_owned()];
    let unknown = ["email:none@example.com".to_owned()];
    assert_eq!(
        store.login_failures(&unknown, WINDOW, t0()).expect("read"),
        [AttemptCount::default()]
    );
    for s in 0..3 {
        fail(store, &keys, WINDOW, t0() + Duration::seconds(s));
    }
    let at = t0() + Duration::seconds(100);
    assert_eq!(
        store.login_failures(&keys, WINDOW, at).expect("read"),
        [AttemptCount {
            failures: 3,
            window_left_secs: 500
        }; 2],
        "a fixed window from the first failure"
    );
    // In `keys`' order, whatever the store's.
    let reversed = [keys[1].clone(), unknown[0].clone(), keys[0].clone()];
    let counts = store.login_failures(&reversed, WINDOW, at).expect("read");
    assert_eq!(
        counts.iter().map(|c| c.failures).collect::<Vec<_>>(),
        [3, 0, 3]
    );

    // The window ends: nothing counts, and the next failure opens a new window.
    let end = t0() + Duration::seconds(WINDOW);
    assert_eq!(
        store.login_failures(&keys, WINDOW, end).expect("read"),
        [AttemptCount::default(); 2]
    );
    fail(store, &keys[..1], WINDOW, end);
    assert_eq!(
        store
            .login_failures(&keys[..1], WINDOW, end + Duration::seconds(10))
            .expect("read"),
        [AttemptCount {
            failures: 1,
            window_left_secs: WINDOW - 10
        }]
    );

    store
        .settle_attempt(
            LeaseId::random(),
            Settle::Succeeded {
                forgive: Some(&keys[0]),
            },
        )
        .expect("clear");
    store
        .settle_attempt(
            LeaseId::random(),
            Settle::Succeeded {
                forgive: Some(&unknown[0]),
            },
        )
        .expect("clear a key never seen");
    let counts = store
        .login_failures(&keys, WINDOW, t0() + Duration::seconds(1))
        .expect("read");
    assert_eq!(counts[0], AttemptCount::default(), "cleared");
    assert_eq!(counts[1].failures, 3, "the other key keeps its failures");
}

pub fn concurrent_failures_are_all_counted(store: &S) {
    const THREADS: u32 = 8;
    const EACH: u32 = 5;
    let keys = ["email:busy@example.com".to_owned(), "ip:unknown".to_owned()];
    std::thread::scope(|scope| {
        for _ in 0..THREADS {
            let (store, keys) = (Arc::clone(store), keys.clone());
            scope.spawn(move || {
                for _ in 0..EACH {
                    fail(&store, &keys, 600, t0());
                }
            });
        }
    });
    let counts = store.login_failures(&keys, 600, t0()).expect("read");
    assert!(
        counts.iter().all(|c| c.failures == THREADS * EACH),
        "{counts:?}"
    );
}

/// One failure on each of `keys`, as a check without a lease of its own settles it.
fn fail(store: &S, keys: &[String], window_secs: i64, now: DateTime<Utc>) {
    let how = Settle::Failed {
        keys,
        window_secs,
        now,
    };
    store
        .settle_attempt(LeaseId::random(), how)
        .expect("record a failure");
}

fn lease(keys: &[String], now: DateTime<Utc>) -> Lease {
    Lease {
        id: LeaseId::random(),
        keys: keys.to_vec(),
        window_secs: 600,
        now,
        ttl: Duration::seconds(60),
    }
}

/// The lockout rule in its simplest form: room while failures plus checks in flight are
/// under `max` on every key.
fn room(max: u32) -> impl Fn(&[KeyLoad]) -> bool + Sync {
    move |loads: &[KeyLoad]| loads.iter().all(|l| l.stored.failures + l.in_flight < max)
}

/// Threads on their own connections reserving one key, each failing what it got: the
/// store's per-key lock admits exactly `MAX` checks, however they interleave.
pub fn reservations_from_many_connections_admit_exactly_the_limit(store: &S) {
    reservation_race(store, 12);
}

/// `THREADS` guessers on one key, each failing what it was admitted for: exactly `MAX`.
pub fn reservation_race(store: &S, threads: usize) {
    const MAX: u32 = 5;
    let keys = [
        "email:raced@example.com".to_owned(),
        "ip:192.0.2.99".to_owned(),
    ];
    let admitted = std::sync::atomic::AtomicU32::new(0);
    let barrier = Barrier::new(threads);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                barrier.wait();
                for _ in 0..100_000 {
                    let asked = lease(&keys, t0());
                    let r = store.reserve_attempt(&asked, &room(MAX)).expect("reserve");
                    if r.leased {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let how = Settle::Failed {
                            keys: &keys,
                            window_secs: 600,
                            now: t0(),
                        };
                        store.settle_attempt(asked.id, how).expect("settle");
                    } else if r.loads[0].stored.failures >= MAX {
                        return;
                    }
                }
            });
        }
    });
    assert_eq!(admitted.into_inner(), MAX);
    let counts = store.login_failures(&keys, 600, t0()).expect("read");
    assert!(counts.iter().all(|c| c.failures == MAX), "{counts:?}");
}

/// A lease counts while live, ends as its check is settled or its family opens, and
/// stops counting once expired; failures and forgiveness land with it.
pub fn leases_count_until_settled_opened_or_expired(store: &S) {
    let u = user(store, "leased@example.com");
    let keys = [email_attempt_key(&u.email), "ip:192.0.2.5".to_owned()];
    let in_flight = |store: &S, at: DateTime<Utc>| -> Vec<u32> {
        let probe = lease(&keys, at);
        let r = store.reserve_attempt(&probe, &|_| false).expect("probe");
        assert!(!r.leased);
        r.loads.iter().map(|l| l.in_flight).collect()
    };
    let take = |store: &S| -> LeaseId {
        let asked = lease(&keys, t0());
        assert!(
            store
                .reserve_attempt(&asked, &room(5))
                .expect("reserve")
                .leased
        );
        asked.id
    };

    let abandoned = take(store);
    let failed = take(store);
    assert_eq!(in_flight(store, t0()), [2, 2]);
    store
        .settle_attempt(abandoned, Settle::Abandoned)
        .expect("abandon");
    let how = Settle::Failed {
        keys: &keys,
        window_secs: 600,
        now: t0(),
    };
    store.settle_attempt(failed, how).expect("fail");
    assert_eq!(in_flight(store, t0()), [0, 0]);
    let counts = store.login_failures(&keys, 600, t0()).expect("read");
    assert_eq!(
        counts.iter().map(|c| c.failures).collect::<Vec<_>>(),
        [1, 1]
    );

    // A refused family leaves its lease (the login then settles it as failed)...
    let login = take(store);
    let stale = NewFamily {
        settles: Some(login),
        forgives: Some(keys[0].clone()),
        ..new_family(u.id, token(1), 9, t0())
    };
    assert!(!store.create_family(stale).expect("refused"));
    assert_eq!(in_flight(store, t0()), [1, 1]);
    // ...an opened one ends it and forgives the email, not the IP.
    let opened = NewFamily {
        settles: Some(login),
        forgives: Some(keys[0].clone()),
        ..new_family(u.id, token(2), 0, t0())
    };
    assert!(store.create_family(opened).expect("opened"));
    assert_eq!(in_flight(store, t0()), [0, 0]);
    let counts = store.login_failures(&keys, 600, t0()).expect("read");
    assert_eq!(
        counts.iter().map(|c| c.failures).collect::<Vec<_>>(),
        [0, 1]
    );

    let right = take(store);
    store
        .settle_attempt(right, Settle::Succeeded { forgive: None })
        .expect("succeed");
    assert_eq!(in_flight(store, t0()), [0, 0]);

    // A lease whose process died counts until it expires, and is released then. Its
    // life runs on the database's clock (the server's on PostgreSQL, the caller's on
    // SQLite), so the test lets both pass.
    let short = Lease {
        ttl: Duration::seconds(1),
        ..lease(&keys, t0())
    };
    assert!(
        store
            .reserve_attempt(&short, &room(5))
            .expect("reserve")
            .leased
    );
    assert_eq!(in_flight(store, t0()), [1, 1]);
    std::thread::sleep(std::time::Duration::from_millis(1_100));
    assert_eq!(in_flight(store, t0() + Duration::seconds(1)), [0, 0]);
    store.release_orphaned_leases().expect("release");
    assert_eq!(in_flight(store, t0()), [0, 0], "expired leases are gone");
}

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

pub fn account_for_session_requires_a_live_current_family(store: &S) {
    let u = user(store, "me@example.com");
    let other = user(store, "other@example.com");
    let family = open(store, u.id, token(1), t0());
    let at = t0() + Duration::minutes(1);
    let account = store
        .account_for_session(u.id, family, at)
        .expect("read")
        .expect("a live session");
    assert_eq!(account.user, u);
    assert!(
        store
            .account_for_session(other.id, family, at)
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .account_for_session(u.id, FamilyId::random(), at)
            .expect("read")
            .is_none()
    );
    assert!(
        store
            .account_for_session(u.id, family, t0() + Duration::days(1))
            .expect("read")
            .is_none(),
        "past the family's absolute expiry"
    );
    // Spending tokens does not end the session.
    assert!(spend(store, family, token(1), token(2), at));
    assert!(
        store
            .account_for_session(u.id, family, at)
            .expect("read")
            .is_some()
    );

    let stale = open(store, u.id, token(3), t0());
    assert!(
        store
            .change_password(u.id, "h1", new_family(u.id, token(4), 0, at))
            .expect("change")
    );
    assert!(
        store
            .account_for_session(u.id, stale, at)
            .expect("read")
            .is_none()
    );

    let revoked = open(store, other.id, token(5), t0());
    store
        .revoke_family(revoked, None, RevokeReason::Logout, at)
        .expect("revoke");
    assert!(
        store
            .account_for_session(other.id, revoked, at)
            .expect("read")
            .is_none()
    );
}

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
