//! `passkeys` and `webauthn_flows`. The mirror of `sqlite/passkeys.rs`: under READ
//! COMMITTED a concurrent UPDATE or DELETE of the same row waits for the first, then
//! re-checks its WHERE against the committed row, so one caller sees the row change.

use ::postgres::Row;
use ::postgres::types::Type;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{Failure, PgStore, col, hash_col, sec};
use crate::domain::UserId;
use crate::storage::{
    FlowKind, NewFlow, NewPasskey, PasskeyStore, PasskeyUse, StoreError, StoredPasskey, TakenFlow,
    TokenHashBytes,
};

const PASSKEY_COLUMNS: &str = "id, user_id, credential_id, credential, sign_count, \
                               backup_eligible, name, created_at, last_used_at";

fn passkey(row: &Row) -> Result<StoredPasskey, StoreError> {
    Ok(StoredPasskey {
        id: col(row, 0)?,
        user_id: UserId::from(col::<Uuid>(row, 1)?),
        credential_id: col(row, 2)?,
        credential: col(row, 3)?,
        sign_count: col(row, 4)?,
        backup_eligible: col(row, 5)?,
        name: col(row, 6)?,
        created_at: col(row, 7)?,
        last_used_at: col(row, 8)?,
    })
}

impl PasskeyStore for PgStore {
    fn add_passkey(&self, p: NewPasskey) -> Result<bool, StoreError> {
        let (user, now, count) = (p.user_id.as_uuid(), sec(p.now), i64::from(p.sign_count));
        self.write(|c| {
            let rows = c.query_typed(
                "INSERT INTO passkeys (id, user_id, credential_id, credential, sign_count,
                                       backup_eligible, backup_state, name, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (credential_id) DO NOTHING
                 RETURNING 1",
                &[
                    (&p.id, Type::UUID),
                    (&user, Type::UUID),
                    (&p.credential_id, Type::BYTEA),
                    (&p.credential, Type::TEXT),
                    (&count, Type::INT8),
                    (&p.backup_eligible, Type::BOOL),
                    (&p.backup_state, Type::BOOL),
                    (&p.name, Type::TEXT),
                    (&now, Type::TIMESTAMPTZ),
                ],
            )?;
            Ok::<_, Failure>(rows.len() == 1)
        })
    }

    fn passkeys_of(&self, user: UserId) -> Result<Vec<StoredPasskey>, StoreError> {
        let user = user.as_uuid();
        self.read(|c| {
            let rows = c.query_typed(
                &format!(
                    "SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE user_id = $1
                     ORDER BY created_at, id"
                ),
                &[(&user, Type::UUID)],
            )?;
            Ok::<_, Failure>(rows.iter().map(passkey).collect::<Result<Vec<_>, _>>()?)
        })
    }

    fn passkey_by_credential_id(
        &self,
        credential_id: &[u8],
    ) -> Result<Option<StoredPasskey>, StoreError> {
        self.read(|c| {
            let row = c.query_typed_opt(
                &format!("SELECT {PASSKEY_COLUMNS} FROM passkeys WHERE credential_id = $1"),
                &[(&credential_id, Type::BYTEA)],
            )?;
            Ok::<_, Failure>(row.as_ref().map(passkey).transpose()?)
        })
    }

    fn remove_passkey(&self, user: UserId, id: Uuid) -> Result<bool, StoreError> {
        let user = user.as_uuid();
        self.write(|c| {
            let rows = c.query_typed(
                "DELETE FROM passkeys WHERE id = $1 AND user_id = $2 RETURNING 1",
                &[(&id, Type::UUID), (&user, Type::UUID)],
            )?;
            Ok::<_, Failure>(rows.len() == 1)
        })
    }

    fn remove_passkeys(&self, user: UserId) -> Result<u64, StoreError> {
        let user = user.as_uuid();
        self.write(|c| {
            let rows = c.query_typed(
                "DELETE FROM passkeys WHERE user_id = $1 RETURNING 1",
                &[(&user, Type::UUID)],
            )?;
            Ok::<_, Failure>(rows.len() as u64)
        })
    }

    fn record_passkey_use(&self, used: PasskeyUse) -> Result<bool, StoreError> {
        let (now, count) = (sec(used.now), i64::from(used.sign_count));
        self.write(|c| {
            let rows = c.query_typed(
                "UPDATE passkeys SET sign_count = $3, backup_state = $4, credential = $5,
                                     last_used_at = $6
                 WHERE id = $1 AND sign_count = $2
                 RETURNING 1",
                &[
                    (&used.id, Type::UUID),
                    (&used.checked_against, Type::INT8),
                    (&count, Type::INT8),
                    (&used.backup_state, Type::BOOL),
                    (&used.credential, Type::TEXT),
                    (&now, Type::TIMESTAMPTZ),
                ],
            )?;
            Ok::<_, Failure>(rows.len() == 1)
        })
    }

    fn create_flow(&self, flow: NewFlow) -> Result<(), StoreError> {
        let (now, expires_at) = (sec(flow.now), sec(flow.expires_at));
        let user = flow.user_id.map(|u| u.as_uuid());
        let mfa = flow.mfa_token_hash.map(|h| h.to_vec());
        let hash = &flow.hash[..];
        self.transaction(|tx| {
            // Abandoned ceremonies go as new ones come: no pruning pass of their own.
            tx.query_typed(
                "DELETE FROM webauthn_flows WHERE expires_at <= $1",
                &[(&now, Type::TIMESTAMPTZ)],
            )?;
            tx.query_typed(
                "INSERT INTO webauthn_flows (hash, kind, user_id, mfa_token_hash, state, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
                &[
                    (&hash, Type::BYTEA),
                    (&flow.kind.as_str(), Type::TEXT),
                    (&user, Type::UUID),
                    (&mfa, Type::BYTEA),
                    (&flow.state, Type::TEXT),
                    (&expires_at, Type::TIMESTAMPTZ),
                ],
            )?;
            Ok::<_, Failure>(())
        })
    }

    fn take_flow(
        &self,
        hash: &TokenHashBytes,
        now: DateTime<Utc>,
    ) -> Result<Option<TakenFlow>, StoreError> {
        let (hash, now) = (&hash[..], sec(now));
        self.write(|c| {
            let row = c.query_typed_opt(
                "DELETE FROM webauthn_flows WHERE hash = $1
                 RETURNING kind, user_id, mfa_token_hash, state, expires_at",
                &[(&hash, Type::BYTEA)],
            )?;
            let Some(row) = row else {
                return Ok::<_, Failure>(None);
            };
            let expires_at: DateTime<Utc> = col(&row, 4)?;
            let kind = FlowKind::parse(&col::<String>(&row, 0)?);
            let (Some(kind), true) = (kind, expires_at > now) else {
                return Ok(None);
            };
            let mfa_token_hash = match col::<Option<Vec<u8>>>(&row, 2)? {
                Some(_) => Some(hash_col(&row, 2)?),
                None => None,
            };
            Ok(Some(TakenFlow {
                kind,
                user_id: col::<Option<Uuid>>(&row, 1)?.map(UserId::from),
                mfa_token_hash,
                state: col(&row, 3)?,
            }))
        })
    }
}
