//! The cases, each a function of a fresh store. Time is passed in (a fixed clock), so
//! windows and expiries are exact. One module per part of the store; `main.rs` names
//! every case in its `conformance!` list, through the re-exports below.

mod accounts;
mod audit;
mod clients;
mod lockout;
mod mfa;
mod passkeys;
mod prune;
mod sessions;
mod tokens;

pub use accounts::*;
pub use audit::*;
pub use clients::*;
pub use lockout::*;
pub use mfa::*;
pub use passkeys::*;
pub use prune::*;
pub use sessions::*;
pub use tokens::*;

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
        amr: gatehouse::domain::Amr::Pwd,
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
