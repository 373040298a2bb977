//! Passkeys: a credential id names one passkey across users, a flow is taken once before
//! its expiry, and one counter value is recorded once however many replicas race.

use gatehouse::storage::{FlowKind, NewFlow, NewPasskey, PasskeyUse};
use uuid::Uuid;

use super::mfa::race;
use super::*;

fn passkey(user: UserId, credential_id: &[u8], name: &str, now: DateTime<Utc>) -> NewPasskey {
    NewPasskey {
        id: Uuid::new_v4(),
        user_id: user,
        credential_id: credential_id.to_vec(),
        credential: format!("{{\"credential\":\"{name}\"}}"),
        sign_count: 7,
        backup_eligible: name.contains("synced"),
        backup_state: false,
        name: name.into(),
        now,
    }
}

fn mfa_enabled(store: &S, user: UserId) -> bool {
    store
        .account_by_id(user)
        .expect("read")
        .expect("the user")
        .user
        .mfa_enabled
}

pub fn passkeys_are_unique_listed_oldest_first_and_removed_by_their_owner(store: &S) {
    let (a, b) = (
        user(store, "pk-a@example.com"),
        user(store, "pk-b@example.com"),
    );
    assert!(!mfa_enabled(store, a.id));
    let first = passkey(a.id, b"cred-1", "laptop", t0());
    let second = passkey(a.id, b"cred-2", "synced phone", t0() + Duration::seconds(5));
    assert!(store.add_passkey(first.clone()).expect("add"));
    assert!(store.add_passkey(second.clone()).expect("add"));
    assert!(mfa_enabled(store, a.id), "a passkey turns MFA on");
    // One authenticator key, one account: the same credential id for B is refused.
    assert!(
        !store
            .add_passkey(passkey(b.id, b"cred-1", "stolen", t0()))
            .expect("duplicate")
    );
    assert!(store.passkeys_of(b.id).expect("list").is_empty());

    let listed = store.passkeys_of(a.id).expect("list");
    let names: Vec<&str> = listed.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["laptop", "synced phone"]);
    assert_eq!(listed[0].id, first.id);
    assert_eq!(listed[0].credential_id, b"cred-1");
    assert_eq!(listed[0].credential, first.credential);
    assert_eq!((listed[0].sign_count, listed[0].created_at), (7, t0()));
    assert_eq!(listed[0].last_used_at, None);
    assert!(listed[1].backup_eligible && !listed[0].backup_eligible);
    let found = store
        .passkey_by_credential_id(b"cred-2")
        .expect("find")
        .expect("found");
    assert_eq!((found.id, found.user_id), (second.id, a.id));
    assert_eq!(store.passkey_by_credential_id(b"nope").expect("find"), None);

    assert!(!store.remove_passkey(b.id, first.id).expect("not B's"));
    assert!(store.remove_passkey(a.id, first.id).expect("remove"));
    assert!(!store.remove_passkey(a.id, first.id).expect("gone"));
    assert!(mfa_enabled(store, a.id), "one passkey left");
    assert_eq!(store.remove_passkeys(a.id).expect("remove all"), 1);
    assert!(!mfa_enabled(store, a.id));
    assert!(store.passkeys_of(a.id).expect("list").is_empty());
}

pub fn one_counter_value_is_recorded_once_among_concurrent_uses(store: &S) {
    let u = user(store, "pk-count@example.com");
    let row = passkey(u.id, b"cred-count", "key", t0());
    let id = row.id;
    assert!(store.add_passkey(row).expect("add"));
    let used = move |checked_against: i64, sign_count: u32| PasskeyUse {
        id,
        checked_against,
        sign_count,
        backup_state: true,
        credential: format!("{{\"counter\":{sign_count}}}"),
        now: t0() + Duration::seconds(60),
    };
    let shared = Arc::clone(store);
    let winners = race(10, move || {
        shared.record_passkey_use(used(7, 8)).expect("record")
    });
    assert_eq!(winners, 1, "one of ten uses checked against 7 records 8");
    let stored = store
        .passkey_by_credential_id(b"cred-count")
        .expect("find")
        .expect("found");
    assert_eq!(stored.sign_count, 8);
    assert_eq!(stored.credential, "{\"counter\":8}");
    assert_eq!(stored.last_used_at, Some(t0() + Duration::seconds(60)));
    // Checked against a counter that moved on: refused.
    assert!(!store.record_passkey_use(used(7, 9)).expect("stale"));
    assert!(store.record_passkey_use(used(8, 9)).expect("next"));

    // A credential without a counter (0 forever) is recorded each time.
    let synced = passkey(u.id, b"cred-zero", "synced", t0());
    let zero = NewPasskey {
        sign_count: 0,
        ..synced
    };
    let zid = zero.id;
    assert!(store.add_passkey(zero).expect("add"));
    for _ in 0..3 {
        let again = PasskeyUse {
            id: zid,
            ..used(0, 0)
        };
        assert!(store.record_passkey_use(again).expect("zero"));
    }
    // A removed passkey records nothing.
    assert!(store.remove_passkey(u.id, zid).expect("remove"));
    let gone = PasskeyUse {
        id: zid,
        ..used(0, 0)
    };
    assert!(!store.record_passkey_use(gone).expect("gone"));
}

pub fn a_flow_is_taken_once_before_its_expiry(store: &S) {
    let u = user(store, "pk-flow@example.com");
    let flow = |n: u8, kind: FlowKind, expires_at: DateTime<Utc>| NewFlow {
        hash: token(n),
        kind,
        user_id: (kind != FlowKind::Login).then_some(u.id),
        mfa_token_hash: (kind == FlowKind::Mfa).then(|| token(99)),
        state: format!("{{\"ceremony\":{n}}}"),
        expires_at,
        now: t0(),
    };
    let later = t0() + Duration::minutes(5);
    store
        .create_flow(flow(1, FlowKind::Register, later))
        .expect("create");
    store
        .create_flow(flow(2, FlowKind::Mfa, later))
        .expect("create");
    store
        .create_flow(flow(3, FlowKind::Login, t0() + Duration::seconds(1)))
        .expect("create");

    let taken = store
        .take_flow(&token(2), t0())
        .expect("take")
        .expect("there");
    assert_eq!(taken.kind, FlowKind::Mfa);
    assert_eq!(taken.user_id, Some(u.id));
    assert_eq!(taken.mfa_token_hash, Some(token(99)));
    assert_eq!(taken.state, "{\"ceremony\":2}");
    assert_eq!(store.take_flow(&token(2), t0()).expect("again"), None);
    // Past its expiry: gone, and not usable.
    assert_eq!(
        store
            .take_flow(&token(3), t0() + Duration::seconds(1))
            .expect("expired"),
        None
    );

    let shared = Arc::clone(store);
    let winners = race(10, move || {
        shared.take_flow(&token(1), t0()).expect("take").is_some()
    });
    assert_eq!(winners, 1, "one of ten concurrent takes gets the flow");

    // A login flow names no user.
    store
        .create_flow(flow(4, FlowKind::Login, later))
        .expect("create");
    let login = store
        .take_flow(&token(4), t0())
        .expect("take")
        .expect("there");
    assert_eq!(
        (login.kind, login.user_id, login.mfa_token_hash),
        (FlowKind::Login, None, None)
    );
}
