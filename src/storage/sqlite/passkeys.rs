//! `passkeys` and `webauthn_flows`. The mirror of `postgres/passkeys.rs`: each claim runs
//! on the one writer connection in a `BEGIN IMMEDIATE` transaction, and its row count
//! decides.

use rusqlite::{OptionalExtension as _, params};
use uuid::Uuid;

use super::{SqliteStore, opt_uuid_col, time, ts, uuid_col};
use crate::domain::UserId;
use crate::storage::{
    FlowKind, NewFlow, NewPasskey, PasskeyStore, PasskeyUse, StoreError, StoredPasskey, TakenFlow,
    TokenHashBytes,
};

const PASSKEY_COLUMNS: &str = "id, user_id, credential_id, credential, sign_count, \
                               backup_eligible, name, created_at, last_used_at";

fn passkey(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredPasskey> {
    Ok(StoredPasskey {
        id: uuid_col(row, 0)?,
        user_id: uuid_col(row, 1)?,
        credential_id: row.get(2)?,
        credential: row.get(3)?,
        sign_count: row.get(4)?,
        backup_eligible: row.get(5)?,
        name: row.get(6)?,
        created_at: time(row.get(7)?),
        last_used_at: row.get::<_, Option<i64>>(8)?.map(time),
    })
}

fn hash_col(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Option<TokenHashBytes>> {
    let bytes: Option<Vec<u8>> = row.get(at)?;
    Ok(bytes.and_then(|b| TokenHashBytes::try_from(b.as_slice()).ok()))
}

impl PasskeyStore for SqliteStore {
    fn add_passkey(&self, p: NewPasskey) -> Result<bool, StoreError> {
        self.write(|tx| {
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO passkeys (id, user_id, credential_id, credential, sign_count,
                                           backup_eligible, backup_state, name, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                     ON CONFLICT (credential_id) DO NOTHING",
                )?
                .execute(params![
                    p.id.to_string(),
                    p.user_id.to_string(),
                    p.credential_id,
                    p.credential,
                    p.sign_count,
                    p.backup_eligible,
                    p.backup_state,
                    p.name,
                    ts(p.now)
                ])?;
            Ok(inserted == 1)
        })
    }

    fn passkeys_of(&self, user: UserId) -> Result<Vec<StoredPasskey>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = ?1
                 ORDER BY created_at, rowid"
            ))?
            .query_map([user.to_string()], passkey)?
            .collect()
        })
    }

    fn passkey_by_credential_id(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<StoredPasskey>, StoreError> {
        self.read(|c| {
            c.prepare_cached(&format!(
                "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = ?1"
            ))?
            .query_row([credential_id], passkey)
            .optional()
        })
    }

    fn remove_passkey(&self, user: UserId, id: Uuid) -> Result<bool, StoreError> {
        self.write(|tx| {
            let deleted = tx.execute(
                "DELETE FROM passkeys WHERE id = ?1 AND user_id = ?2",
                params![id.to_string(), user.to_string()],
            )?;
            Ok(deleted == 1)
        })
    }

    fn remove_passkeys(&self, user: UserId) -> Result<u64, StoreError> {
        self.write(|tx| {
            let deleted = tx.execute(
                "DELETE FROM passkeys WHERE user_id = ?1",
                [user.to_string()],
            )?;
            Ok(deleted as u64)
        })
    }

    fn record_passkey_use(&self, used: PasskeyUse) -> Result<bool, StoreError> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE passkeys SET sign_count = ?3, backup_state = ?4, credential = ?5,
                                         last_used_at = ?6
                     WHERE id = ?1 AND sign_count = ?2",
                )?
                .execute(params![
                    used.id.to_string(),
                    used.checked_against,
                    used.sign_count,
                    used.backup_state,
                    used.credential,
                    ts(used.now)
                ])?;
            Ok(changed == 1)
        })
    }

    fn create_flow(&self, flow: NewFlow) -> Result<(), StoreError> {
        self.write(|tx| {
            // Abandoned ceremonies go as new ones come: no pruning pass of their own.
            tx.prepare_cached("DELETE FROM webauthn_flows WHERE expires_at <= ?1")?
                .execute([ts(flow.now)])?;
            tx.prepare_cached(
                "INSERT INTO webauthn_flows (hash, kind, user_id, mfa_token_hash, state, expires_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                &flow.hash[..],
                flow.kind.as_str(),
                flow.user_id.map(|u| u.to_string()),
                flow.mfa_token_hash.as_ref().map(|h| &h[..]),
                flow.state,
                ts(flow.expires_at)
            ])?;
            Ok(())
        })
    }

    fn take_flow(
        &self,
        hash: &TokenHashBytes,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<TakenFlow>, StoreError> {
        self.write(|tx| {
            let taken = tx
                .prepare_cached(
                    "DELETE FROM webauthn_flows WHERE hash = ?1
                     RETURNING kind, user_id, mfa_token_hash, state, expires_at",
                )?
                .query_row([&hash[..]], |row| {
                    let kind: String = row.get(0)?;
                    let expires_at: i64 = row.get(4)?;
                    Ok((
                        FlowKind::parse(&kind),
                        opt_uuid_col::<UserId>(row, 1)?,
                        hash_col(row, 2)?,
                        row.get::<_, String>(3)?,
                        expires_at,
                    ))
                })
                .optional()?;
            Ok(taken.and_then(|(kind, user, mfa, state, expires_at)| {
                (expires_at > ts(now)).then_some(())?;
                Some(TakenFlow {
                    kind: kind?,
                    user_id: user,
                    mfa_token_hash: mfa,
                    state,
                })
            }))
        })
    }
}
