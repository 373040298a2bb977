//! Service clients, the refresh-token read introspection makes, and the revocation feed's
//! reads (`ClientStore`).

use super::*;
use gatehouse::domain::{Client, ClientId, Scopes};
use gatehouse::storage::clients::{NewClient, StoredSecret};

fn client(store: &S, now: DateTime<Utc>, secret: [u8; 32]) -> Client {
    let c = Client {
        id: ClientId::random(),
        name: "billing".into(),
        scopes: Scopes::parse(["introspect", "b"]).expect("scopes"),
        audience: Some("api".into()),
        created_at: now,
        last_used_at: None,
        disabled: false,
    };
    store
        .create_client(&NewClient {
            client: c.clone(),
            secret,
        })
        .expect("create client");
    c
}

pub fn clients_round_trip_and_rotate_their_secrets(store: &S) {
    let now = t0();
    let c = client(store, now, [1; 32]);
    let stored = store.client_by_id(c.id).expect("read").expect("found");
    assert_eq!(stored.client, c);
    assert_eq!(
        stored.secrets,
        vec![StoredSecret {
            hash: [1; 32],
            not_after: None
        }]
    );
    assert_eq!(store.list_clients().expect("list"), vec![c.clone()]);

    // Two rotations: the first secret keeps its end, the second gets one, the third is
    // current; a rotation after the first's end drops it.
    let end1 = now + Duration::hours(1);
    assert!(
        store
            .rotate_client_secret(c.id, [2; 32], now, end1)
            .expect("rotate")
    );
    let later = now + Duration::minutes(10);
    let end2 = later + Duration::hours(1);
    assert!(
        store
            .rotate_client_secret(c.id, [3; 32], later, end2)
            .expect("rotate")
    );
    let mut secrets = store
        .client_by_id(c.id)
        .expect("read")
        .expect("found")
        .secrets;
    secrets.sort_by_key(|s| s.hash);
    assert_eq!(
        secrets,
        vec![
            StoredSecret {
                hash: [1; 32],
                not_after: Some(end1)
            },
            StoredSecret {
                hash: [2; 32],
                not_after: Some(end2)
            },
            StoredSecret {
                hash: [3; 32],
                not_after: None
            },
        ]
    );
    let after = end1 + Duration::seconds(1);
    assert!(
        store
            .rotate_client_secret(c.id, [4; 32], after, after)
            .expect("rotate")
    );
    let hashes: Vec<[u8; 32]> = store
        .client_by_id(c.id)
        .expect("read")
        .expect("found")
        .secrets
        .iter()
        .map(|s| s.hash)
        .collect();
    assert!(!hashes.contains(&[1; 32]), "an ended secret is dropped");

    store.touch_client(c.id, now).expect("touch");
    let used = store
        .client_by_id(c.id)
        .expect("read")
        .expect("found")
        .client;
    assert_eq!(used.last_used_at, Some(now));
    store
        .touch_client(c.id, now + Duration::seconds(30))
        .expect("touch");
    let used = store
        .client_by_id(c.id)
        .expect("read")
        .expect("found")
        .client;
    assert_eq!(used.last_used_at, Some(now), "at most one write a minute");

    let unknown = ClientId::random();
    assert!(
        !store
            .rotate_client_secret(unknown, [9; 32], now, now)
            .expect("unknown")
    );
    assert!(store.delete_client(c.id).expect("delete"));
    assert!(!store.delete_client(c.id).expect("again"));
    assert!(store.client_by_id(c.id).expect("read").is_none());
    assert!(store.list_clients().expect("list").is_empty());
}

pub fn the_feed_lists_revoked_and_deleted_families_in_its_window(store: &S) {
    let now = t0();
    let kept = user(store, "kept@example.com");
    let gone = user(store, "gone@example.com");
    let open = new_family(kept.id, token(1), 0, now);
    let open_id = open.id;
    assert!(store.create_family(open).expect("open"));
    let revoked = new_family(kept.id, token(2), 0, now);
    let revoked_id = revoked.id;
    assert!(store.create_family(revoked).expect("open"));
    let deleted = new_family(gone.id, token(3), 0, now);
    let deleted_id = deleted.id;
    assert!(store.create_family(deleted).expect("open"));

    let at = now + Duration::minutes(1);
    store
        .revoke_family(revoked_id, None, RevokeReason::Logout, at)
        .expect("revoke");
    let later = now + Duration::minutes(2);
    assert!(
        store
            .delete_user(gone.id, &gone.email, later)
            .expect("delete")
    );

    let mut expected = vec![revoked_id, deleted_id];
    expected.sort();
    assert_eq!(store.revoked_since(now).expect("feed"), expected);
    assert_eq!(
        store
            .revoked_since(at + Duration::seconds(1))
            .expect("feed"),
        vec![deleted_id]
    );
    assert!(
        store
            .revoked_since(later + Duration::seconds(1))
            .expect("feed")
            .is_empty()
    );
    assert!(!store.revoked_since(now).expect("feed").contains(&open_id));

    assert_eq!(store.prune_tombstones(later).expect("prune"), 0);
    assert_eq!(
        store
            .prune_tombstones(later + Duration::seconds(1))
            .expect("prune"),
        1
    );
    assert_eq!(store.revoked_since(now).expect("feed"), vec![revoked_id]);

    // Introspection's read: the token's state, when it was issued, nothing spent.
    let (stored, issued) = store
        .introspect_refresh_token(token(1))
        .expect("read")
        .expect("known");
    assert_eq!(
        (stored.family_id, stored.spent_at, issued),
        (open_id, None, now)
    );
    assert!(
        store
            .introspect_refresh_token(token(9))
            .expect("read")
            .is_none()
    );
    let (stored, _) = store
        .introspect_refresh_token(token(2))
        .expect("read")
        .expect("known");
    assert!(stored.family_revoked);
}
