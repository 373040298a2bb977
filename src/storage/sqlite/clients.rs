//! `clients`, `client_secrets` and `family_tombstones`: the mirror of
//! `postgres/clients.rs`.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{SqliteStore, families, time, ts, uuid_col};
use crate::domain::{Client, ClientId, FamilyId, Scopes, UserId};
use crate::storage::clients::{
    ClientStore, NewClient, SecretHash, StoredClient, StoredSecret, TOMBSTONE_KEEP,
};
use crate::storage::{StoreError, StoredToken, TokenHashBytes};

const CLIENT_COLUMNS: &str = "id, name, scopes, audience, created_at, last_used_at, disabled";

fn client_at(row: &rusqlite::Row<'_>) -> rusqlite::Result<Client> {
    let scopes: String = row.get(2)?;
    Ok(Client {
        id: uuid_col(row, 0)?,
        name: row.get(1)?,
        scopes: Scopes::parse_spaced(&scopes).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
        })?,
        audience: row.get(3)?,
        created_at: time(row.get(4)?),
        last_used_at: row.get::<_, Option<i64>>(5)?.map(time),
        disabled: row.get(6)?,
    })
}

fn secret_at(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredSecret> {
    let hash: Vec<u8> = row.get(0)?;
    Ok(StoredSecret {
        hash: hash.try_into().map_err(|_| {
            rusqlite::Error::FromSqlConversionFailure(
                0,
                rusqlite::types::Type::Blob,
                "a secret hash is 32 bytes".into(),
            )
        })?,
        not_after: row.get::<_, Option<i64>>(1)?.map(time),
    })
}

/// Tombstones for the families of `user` whose access tokens may still be live, listed
/// from their revocation or from `now`: called in `delete_user`'s transaction, before
/// the user's row (and with it the families) goes.
pub(super) fn tombstone_families(
    conn: &Connection,
    user: UserId,
    now: DateTime<Utc>,
) -> rusqlite::Result<()> {
    let horizon = ts(now - TOMBSTONE_KEEP);
    conn.execute(
        "INSERT OR IGNORE INTO family_tombstones (id, listed_from)
         SELECT id, COALESCE(revoked_at, ?2) FROM refresh_families
         WHERE user_id = ?1 AND (revoked_at IS NULL OR revoked_at > ?3)
               AND expires_at > ?3",
        params![user.to_string(), ts(now), horizon],
    )?;
    Ok(())
}

impl ClientStore for SqliteStore {
    fn create_client(&self, new: &NewClient) -> Result<(), StoreError> {
        let c = &new.client;
        self.write(|tx| {
            tx.execute(
                "INSERT INTO clients (id, name, scopes, audience, created_at, disabled)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    c.id.to_string(),
                    c.name,
                    c.scopes.spaced(),
                    c.audience,
                    ts(c.created_at),
                    c.disabled
                ],
            )?;
            tx.execute(
                "INSERT INTO client_secrets (client_id, hash, created_at) VALUES (?1, ?2, ?3)",
                params![c.id.to_string(), &new.secret[..], ts(c.created_at)],
            )?;
            Ok(())
        })
    }

    fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {CLIENT_COLUMNS} FROM clients ORDER BY created_at, id"
            ))?
            .query_map([], client_at)?
            .collect()
        })
    }

    fn client_by_id(&self, id: ClientId) -> Result<Option<StoredClient>, StoreError> {
        self.read(|c| {
            let Some(client) = c
                .prepare_cached(&format!(
                    "SELECT {CLIENT_COLUMNS} FROM clients WHERE id = ?1"
                ))?
                .query_row([id.to_string()], client_at)
                .optional()?
            else {
                return Ok(None);
            };
            let secrets = c
                .prepare_cached("SELECT hash, not_after FROM client_secrets WHERE client_id = ?1")?
                .query_map([id.to_string()], secret_at)?
                .collect::<rusqlite::Result<_>>()?;
            Ok(Some(StoredClient { client, secrets }))
        })
    }

    fn delete_client(&self, id: ClientId) -> Result<bool, StoreError> {
        self.write(|tx| Ok(tx.execute("DELETE FROM clients WHERE id = ?1", [id.to_string()])? > 0))
    }

    fn rotate_client_secret(
        &self,
        id: ClientId,
        secret: SecretHash,
        now: DateTime<Utc>,
        old_not_after: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        self.write(|tx| {
            let known = tx
                .query_row("SELECT 1 FROM clients WHERE id = ?1", [&id], |_| Ok(()))
                .optional()?;
            if known.is_none() {
                return Ok(false);
            }
            tx.execute(
                "DELETE FROM client_secrets WHERE client_id = ?1 AND not_after <= ?2",
                params![id, ts(now)],
            )?;
            tx.execute(
                "UPDATE client_secrets SET not_after = ?2
                 WHERE client_id = ?1 AND not_after IS NULL",
                params![id, ts(old_not_after)],
            )?;
            tx.execute(
                "INSERT INTO client_secrets (client_id, hash, created_at) VALUES (?1, ?2, ?3)",
                params![id, &secret[..], ts(now)],
            )?;
            Ok(true)
        })
    }

    fn touch_client(&self, id: ClientId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.write(|tx| {
            tx.execute(
                "UPDATE clients SET last_used_at = ?2
                 WHERE id = ?1 AND (last_used_at IS NULL OR last_used_at < ?2 - 60)",
                params![id.to_string(), ts(now)],
            )
            .map(drop)
        })
    }

    fn introspect_refresh_token(
        &self,
        hash: TokenHashBytes,
    ) -> Result<Option<(StoredToken, DateTime<Utc>)>, StoreError> {
        // One writer: every claim and revocation before this read has committed, and
        // none runs during it. A read on the writer, not a reader's snapshot.
        self.write(|tx| {
            let Some(stored) = families::find(tx, &hash)? else {
                return Ok(None);
            };
            let issued: i64 = tx.query_row(
                "SELECT issued_at FROM refresh_tokens WHERE hash = ?1",
                [&hash[..]],
                |r| r.get(0),
            )?;
            Ok(Some((stored, time(issued))))
        })
    }

    fn revoked_since(&self, since: DateTime<Utc>) -> Result<Vec<FamilyId>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT id FROM refresh_families WHERE revoked_at >= ?1
                 UNION
                 SELECT id FROM family_tombstones WHERE listed_from >= ?1
                 ORDER BY 1",
            )?
            .query_map([ts(since)], |row| uuid_col(row, 0))?
            .collect()
        })
    }

    fn prune_tombstones(&self, before: DateTime<Utc>) -> Result<usize, StoreError> {
        self.write(|tx| {
            tx.execute(
                "DELETE FROM family_tombstones WHERE listed_from < ?1",
                [ts(before)],
            )
        })
    }
}
