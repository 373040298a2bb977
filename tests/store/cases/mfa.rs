//! Second factors: a TOTP step, a recovery code and an `mfa_token` are each claimed by
//! one caller only, among many at once; enrolment and removal keep their state straight.

use gatehouse::storage::NewMfaToken;

use super::*;

const SEALED: &[u8] = b"sealed secret bytes, opaque to the store";

fn enabled_user(store: &S, address: &str) -> User {
    let u = user(store, address);
    assert!(store.put_pending_totp(u.id, SEALED, t0()).expect("pending"));
    assert!(
        store
            .enable_totp(u.id, SEALED, 100, &[token(1), token(2)], t0())
            .expect("enable")
    );
    u
}

/// `threads` callers at once, released together; how many got `true`.
pub(super) fn race(threads: usize, claim: impl Fn() -> bool + Send + Sync + 'static) -> usize {
    let claim = Arc::new(claim);
    let barrier = Arc::new(Barrier::new(threads));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (claim, barrier) = (Arc::clone(&claim), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                claim()
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("a claim panicked"))
        .filter(|won| *won)
        .count()
}

pub fn a_totp_enrolment_is_pending_then_enabled_once(store: &S) {
    let u = user(store, "enrol@example.com");
    assert_eq!(store.totp_of(u.id).expect("read"), None);
    assert!(
        store
            .put_pending_totp(u.id, b"first", t0())
            .expect("pending")
    );
    // A second start replaces the pending secret.
    assert!(store.put_pending_totp(u.id, SEALED, t0()).expect("replace"));
    let pending = store.totp_of(u.id).expect("read").expect("stored");
    assert_eq!(
        (pending.sealed_secret.as_slice(), pending.enabled),
        (SEALED, false)
    );
    // Confirming the replaced secret changes nothing.
    assert!(
        !store
            .enable_totp(u.id, b"first", 5, &[token(1)], t0())
            .expect("stale")
    );
    assert!(
        !store
            .account_by_id(u.id)
            .expect("read")
            .expect("user")
            .user
            .mfa_enabled
    );
    assert!(
        store
            .enable_totp(u.id, SEALED, 5, &[token(1), token(2)], t0())
            .expect("enable")
    );
    let on = store.totp_of(u.id).expect("read").expect("stored");
    assert_eq!((on.enabled, on.last_step), (true, Some(5)));
    assert!(
        store
            .account_by_id(u.id)
            .expect("read")
            .expect("user")
            .user
            .mfa_enabled
    );
    assert_eq!(store.recovery_codes_left(u.id).expect("count"), 2);
    // Enabled: neither a new pending secret nor a second confirmation.
    assert!(
        !store
            .put_pending_totp(u.id, b"other", t0())
            .expect("refused")
    );
    assert!(
        !store
            .enable_totp(u.id, SEALED, 6, &[], t0())
            .expect("refused")
    );
    // The confirming step counts as claimed.
    assert!(!store.claim_totp_step(u.id, 5).expect("claim"));
    assert!(store.claim_totp_step(u.id, 6).expect("claim"));
    assert!(!store.claim_totp_step(u.id, 6).expect("again"));
    assert!(!store.claim_totp_step(u.id, 4).expect("older"));

    assert!(store.remove_mfa(u.id, t0()).expect("remove"));
    assert_eq!(store.totp_of(u.id).expect("read"), None);
    assert_eq!(store.recovery_codes_left(u.id).expect("count"), 0);
    assert!(!store.remove_mfa(u.id, t0()).expect("nothing left"));
}

pub fn concurrent_claims_of_one_totp_step_have_one_winner(store: &S) {
    let u = enabled_user(store, "step@example.com");
    for step in [101, 102, 103] {
        let s = Arc::clone(store);
        let id = u.id;
        let won = race(10, move || s.claim_totp_step(id, step).expect("claim"));
        assert_eq!(won, 1, "step {step}");
    }
}

pub fn a_recovery_code_is_spent_once_and_a_new_set_replaces_the_old(store: &S) {
    let u = enabled_user(store, "codes@example.com");
    let s = Arc::clone(store);
    let id = u.id;
    let won = race(8, move || s.use_recovery_code(id, &token(1)).expect("use"));
    assert_eq!(won, 1);
    assert_eq!(store.recovery_codes_left(u.id).expect("count"), 1);
    let other = user(store, "other@example.com");
    assert!(
        !store
            .use_recovery_code(other.id, &token(2))
            .expect("not theirs")
    );

    assert!(
        store
            .replace_recovery_codes(u.id, &[token(7), token(8), token(9)], t0())
            .expect("replace")
    );
    assert!(!store.use_recovery_code(u.id, &token(2)).expect("old set"));
    assert!(store.use_recovery_code(u.id, &token(8)).expect("new set"));
    assert!(
        !store
            .replace_recovery_codes(other.id, &[token(7)], t0())
            .expect("no mfa")
    );
}

pub fn an_mfa_token_is_spent_once_before_its_expiry_and_voided_by_the_user(store: &S) {
    let u = enabled_user(store, "login@example.com");
    let new = |hash: TokenHashBytes| NewMfaToken {
        hash,
        user_id: u.id,
        password_generation: 0,
        now: t0(),
        expires_at: t0() + Duration::minutes(5),
        ip: Some("192.0.2.7".into()),
        user_agent: None,
    };
    for n in [1, 2, 3] {
        store.create_mfa_token(new(token(n))).expect("create");
    }
    let found = store
        .find_mfa_token(&token(1))
        .expect("find")
        .expect("stored");
    assert_eq!((found.user_id, found.spent), (u.id, false));
    assert_eq!(store.find_mfa_token(&token(9)).expect("find"), None);

    let s = Arc::clone(store);
    let won = race(8, move || {
        s.spend_mfa_token(&token(1), t0()).expect("spend")
    });
    assert_eq!(won, 1);
    assert!(
        store
            .find_mfa_token(&token(1))
            .expect("find")
            .expect("stored")
            .spent
    );
    // Expired: not spendable.
    assert!(
        !store
            .spend_mfa_token(&token(2), t0() + Duration::minutes(5))
            .expect("late")
    );
    // Voided with the user's other pending logins.
    store.void_mfa_tokens(u.id, t0()).expect("void");
    assert!(
        store
            .find_mfa_token(&token(3))
            .expect("find")
            .expect("stored")
            .spent
    );
    assert!(!store.spend_mfa_token(&token(3), t0()).expect("voided"));
}
