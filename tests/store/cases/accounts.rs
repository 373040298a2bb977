//! Users: creation, search, roles and disabling, password changes and the families
//! they end, deletion, and the account behind an access token.

use super::*;
use crate::backends::Backend;

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
    assert!(
        store
            .delete_user(u.id, &u.email, chrono::Utc::now())
            .expect("delete")
    );
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

    assert!(
        store
            .delete_user(u.id, &u.email, chrono::Utc::now())
            .expect("delete")
    );
    assert!(
        !store
            .delete_user(u.id, &u.email, chrono::Utc::now())
            .expect("delete again")
    );
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
                    assert!(
                        store
                            .delete_user(u.id, &u.email, chrono::Utc::now())
                            .expect("delete")
                    );
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

/// A role gatehouse does not know (a hand edit, a row a newer gatehouse wrote) fails
/// every read of that user as an internal error, on every backend: never read as
/// `user`, never a panic, and the error names neither the row's hash nor the SQL. Other
/// users are unaffected.
pub fn an_unknown_role_in_the_database_is_an_internal_error(backend: &Backend) {
    let store: &S = backend;
    let tampered = user(store, "tampered@example.com");
    let family = open(store, tampered.id, token(1), t0());
    let fine = user(store, "fine@example.com");
    backend.set_role_unchecked(tampered.id, "superuser");

    let reads: [(&str, Result<(), StoreError>); 6] = [
        (
            "account_by_email",
            store
                .account_by_email(&email("tampered@example.com"))
                .map(drop),
        ),
        ("account_by_id", store.account_by_id(tampered.id).map(drop)),
        (
            "account_for_session",
            store
                .account_for_session(tampered.id, family, t0())
                .map(drop),
        ),
        (
            "search_users",
            store.search_users(Some("tampered"), 10).map(drop),
        ),
        (
            "find_refresh_token",
            store.find_refresh_token(token(1)).map(drop),
        ),
        (
            "update_user",
            store
                .update_user(tampered.id, None, Some(false), t0())
                .map(drop),
        ),
    ];
    for (read, got) in reads {
        match got {
            Err(e @ StoreError::Internal { .. }) => {
                let chain = e.chain();
                assert!(
                    !chain.contains(HASH) && !chain.contains("SELECT"),
                    "{read}: {chain}"
                );
            }
            other => panic!("{read}: expected an internal error, got {other:?}"),
        }
    }
    let account = store
        .account_by_id(fine.id)
        .expect("another user reads")
        .expect("found");
    assert_eq!(account.user.role, Role::User);
}
