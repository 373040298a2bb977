//! `clients`, `client_secrets` and `family_tombstones`: the mirror of
//! `sqlite/clients.rs`.

use ::postgres::Row;
use ::postgres::types::Type;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::statements::{Connection, Driver};
use super::{Failure, PgStore, col, families, hash_col, sec};
use crate::domain::{Client, ClientId, FamilyId, Scopes, UserId};
use crate::storage::clients::{
    ClientStore, NewClient, SecretHash, StoredClient, StoredSecret, TOMBSTONE_KEEP,
};
use crate::storage::{StoreError, StoredToken, TokenHashBytes};

const CLIENT_COLUMNS: &str = "id, name, scopes, audience, created_at, last_used_at, disabled";

fn client_at(row: &Row) -> Result<Client, StoreError> {
    let scopes: String = col(row, 2)?;
    Ok(Client {
        id: ClientId::from(col::<Uuid>(row, 0)?),
        name: col(row, 1)?,
        scopes: Scopes::parse_spaced(&scopes)
            .map_err(|_| StoreError::internal("clients.scopes holds an invalid scope"))?,
        audience: col(row, 3)?,
        created_at: col(row, 4)?,
        last_used_at: col(row, 5)?,
        disabled: col(row, 6)?,
    })
}

/// Tombstones for the families of `user` whose access tokens may still be live, listed
/// from their revocation or from `now`: called in `delete_user`'s transaction, before
/// the user's row (and with it the families) goes. The user's row is locked first, so a
/// login holding it `FOR SHARE` commits its family before the families are read (a later
/// statement, under READ COMMITTED, sees it).
pub(super) fn tombstone_families<C: Driver>(
    c: &mut Connection<'_, C>,
    user: UserId,
    now: DateTime<Utc>,
) -> Result<(), Failure> {
    let user = user.as_uuid();
    let (now, horizon) = (sec(now), sec(now - TOMBSTONE_KEEP));
    c.query_typed(
        "SELECT 1 FROM users WHERE id = $1 FOR UPDATE",
        &[(&user, Type::UUID)],
    )?;
    c.query_typed(
        "INSERT INTO family_tombstones (id, listed_from)
         SELECT id, COALESCE(revoked_at, $2) FROM refresh_families
         WHERE user_id = $1 AND (revoked_at IS NULL OR revoked_at > $3)
               AND expires_at > $3
         ON CONFLICT (id) DO NOTHING",
        &[
            (&user, Type::UUID),
            (&now, Type::TIMESTAMPTZ),
            (&horizon, Type::TIMESTAMPTZ),
        ],
    )?;
    Ok(())
}

impl ClientStore for PgStore {
    fn create_client(&self, new: &NewClient) -> Result<(), StoreError> {
        let c = &new.client;
        let (id, scopes, created) = (c.id.as_uuid(), c.scopes.spaced(), sec(c.created_at));
        let secret = &new.secret[..];
        self.write(|conn| {
            conn.query_typed(
                "WITH client AS (
                     INSERT INTO clients (id, name, scopes, audience, created_at, disabled)
                     VALUES ($1, $2, $3, $4, $5, $6)
                     RETURNING id
                 )
                 INSERT INTO client_secrets (client_id, hash, created_at)
                 SELECT id, $7, $5 FROM client",
                &[
                    (&id, Type::UUID),
                    (&c.name, Type::TEXT),
                    (&scopes, Type::TEXT),
                    (&c.audience, Type::TEXT),
                    (&created, Type::TIMESTAMPTZ),
                    (&c.disabled, Type::BOOL),
                    (&secret, Type::BYTEA),
                ],
            )
            .map(drop)
        })
    }

    fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        self.read(|c| -> Result<_, Failure> {
            let rows = c.query_typed(
                &format!("SELECT {CLIENT_COLUMNS} FROM clients ORDER BY created_at, id"),
                &[],
            )?;
            Ok(rows.iter().map(client_at).collect::<Result<_, _>>()?)
        })
    }

    fn client_by_id(&self, id: ClientId) -> Result<Option<StoredClient>, StoreError> {
        let id = id.as_uuid();
        self.read(|c| -> Result<_, Failure> {
            let Some(row) = c.query_typed_opt(
                &format!("SELECT {CLIENT_COLUMNS} FROM clients WHERE id = $1"),
                &[(&id, Type::UUID)],
            )?
            else {
                return Ok(None);
            };
            let client = client_at(&row)?;
            let rows = c.query_typed(
                "SELECT hash, not_after FROM client_secrets WHERE client_id = $1",
                &[(&id, Type::UUID)],
            )?;
            let secrets = rows
                .iter()
                .map(|r| {
                    Ok(StoredSecret {
                        hash: hash_col(r, 0)?,
                        not_after: col(r, 1)?,
                    })
                })
                .collect::<Result<_, StoreError>>()?;
            Ok(Some(StoredClient { client, secrets }))
        })
    }

    fn delete_client(&self, id: ClientId) -> Result<bool, StoreError> {
        let id = id.as_uuid();
        self.write(|c| {
            c.query_typed(
                "DELETE FROM clients WHERE id = $1 RETURNING 1",
                &[(&id, Type::UUID)],
            )
            .map(|rows| !rows.is_empty())
        })
    }

    fn rotate_client_secret(
        &self,
        id: ClientId,
        secret: SecretHash,
        now: DateTime<Utc>,
        old_not_after: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let id = id.as_uuid();
        let (now, until) = (sec(now), sec(old_not_after));
        let secret = &secret[..];
        // One transaction under the client's row lock: two rotations at once replace
        // the current secret one after the other, never both the same one.
        self.transaction(|tx| -> Result<bool, Failure> {
            let known = tx.query_typed(
                "SELECT 1 FROM clients WHERE id = $1 FOR UPDATE",
                &[(&id, Type::UUID)],
            )?;
            if known.is_empty() {
                return Ok(false);
            }
            tx.query_typed(
                "DELETE FROM client_secrets WHERE client_id = $1 AND not_after <= $2",
                &[(&id, Type::UUID), (&now, Type::TIMESTAMPTZ)],
            )?;
            tx.query_typed(
                "UPDATE client_secrets SET not_after = $2
                 WHERE client_id = $1 AND not_after IS NULL",
                &[(&id, Type::UUID), (&until, Type::TIMESTAMPTZ)],
            )?;
            tx.query_typed(
                "INSERT INTO client_secrets (client_id, hash, created_at) VALUES ($1, $2, $3)",
                &[
                    (&id, Type::UUID),
                    (&secret, Type::BYTEA),
                    (&now, Type::TIMESTAMPTZ),
                ],
            )?;
            Ok(true)
        })
    }

    fn touch_client(&self, id: ClientId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let (id, now) = (id.as_uuid(), sec(now));
        let before = now - chrono::Duration::seconds(60);
        self.write(|c| {
            c.query_typed(
                "UPDATE clients SET last_used_at = $2
                 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
                &[
                    (&id, Type::UUID),
                    (&now, Type::TIMESTAMPTZ),
                    (&before, Type::TIMESTAMPTZ),
                ],
            )
            .map(drop)
        })
    }

    fn introspect_refresh_token(
        &self,
        hash: TokenHashBytes,
    ) -> Result<Option<(StoredToken, DateTime<Utc>)>, StoreError> {
        let presented = &hash[..];
        // The family's row `FOR SHARE` conflicts with the `FOR NO KEY UPDATE` a claim
        // (`families::spend`) and a revocation's UPDATE take: this waits for either in
        // flight, and the read after it, a later statement under READ COMMITTED, sees
        // what they committed.
        self.transaction(|tx| -> Result<_, Failure> {
            tx.query_typed(
                "SELECT 1 FROM refresh_families
                 WHERE id = (SELECT family_id FROM refresh_tokens WHERE hash = $1)
                 FOR SHARE",
                &[(&presented, Type::BYTEA)],
            )?;
            let Some(stored) = families::find(tx, &hash)? else {
                return Ok(None);
            };
            let row = tx.query_typed_one(
                "SELECT issued_at FROM refresh_tokens WHERE hash = $1",
                &[(&presented, Type::BYTEA)],
            )?;
            Ok(Some((stored, col(&row, 0)?)))
        })
    }

    fn revoked_since(&self, since: DateTime<Utc>) -> Result<Vec<FamilyId>, StoreError> {
        let since = sec(since);
        self.read(|c| -> Result<_, Failure> {
            let rows = c.query_typed(
                "SELECT id FROM refresh_families WHERE revoked_at >= $1
                 UNION
                 SELECT id FROM family_tombstones WHERE listed_from >= $1
                 ORDER BY 1",
                &[(&since, Type::TIMESTAMPTZ)],
            )?;
            Ok(rows
                .iter()
                .map(|r| col::<Uuid>(r, 0).map(FamilyId::from))
                .collect::<Result<_, _>>()?)
        })
    }

    fn prune_tombstones(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        let before = sec(before);
        self.write(|c| {
            c.query_typed(
                "DELETE FROM family_tombstones WHERE listed_from < $1 RETURNING 1",
                &[(&before, Type::TIMESTAMPTZ)],
            )
            .map(|rows| rows.len())
        })
    }
}
