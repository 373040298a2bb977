//! `mfa_totp`, `mfa_recovery_codes` and `mfa_tokens`: second factors. The mirror of
//! `sqlite/mfa.rs`. Every claim is one conditional statement whose returned rows decide:
//! under READ COMMITTED a concurrent UPDATE of the same row waits for the first, then
//! re-checks its WHERE against the committed row, so only one of them changes it.

use ::postgres::types::Type;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::statements::{Connection, Driver};
use super::{Failure, PgStore, col, sec};
use crate::domain::UserId;
use crate::storage::{
    MfaStore, NewMfaToken, StoreError, StoredMfaToken, StoredTotp, TokenHashBytes,
};

fn insert_codes<C: Driver>(
    c: &mut Connection<'_, C>,
    user: &Uuid,
    recovery: &[TokenHashBytes],
    now: &DateTime<Utc>,
) -> Result<(), Failure> {
    c.query_typed(
        "DELETE FROM mfa_recovery_codes WHERE user_id = $1",
        &[(user, Type::UUID)],
    )?;
    for hash in recovery {
        let hash = &hash[..];
        c.query_typed(
            "INSERT INTO mfa_recovery_codes (user_id, hash, created_at) VALUES ($1, $2, $3)",
            &[
                (user, Type::UUID),
                (&hash, Type::BYTEA),
                (now, Type::TIMESTAMPTZ),
            ],
        )?;
    }
    Ok(())
}

fn void_tokens<C: Driver>(
    c: &mut Connection<'_, C>,
    user: &Uuid,
    now: &DateTime<Utc>,
) -> Result<(), Failure> {
    c.query_typed(
        "DELETE FROM mfa_tokens WHERE user_id = $1 AND expires_at <= $2",
        &[(user, Type::UUID), (now, Type::TIMESTAMPTZ)],
    )?;
    c.query_typed(
        "UPDATE mfa_tokens SET spent_at = $2 WHERE user_id = $1 AND spent_at IS NULL",
        &[(user, Type::UUID), (now, Type::TIMESTAMPTZ)],
    )?;
    Ok(())
}

impl MfaStore for PgStore {
    fn put_pending_totp(
        &self,
        user: UserId,
        sealed_secret: &[u8],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (user, now) = (user.as_uuid(), sec(now));
        self.write(|c| {
            let rows = c.query_typed(
                "INSERT INTO mfa_totp (user_id, sealed_secret, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret,
                     created_at = excluded.created_at, last_totp_step = NULL
                 WHERE mfa_totp.enabled_at IS NULL
                 RETURNING 1",
                &[
                    (&user, Type::UUID),
                    (&sealed_secret, Type::BYTEA),
                    (&now, Type::TIMESTAMPTZ),
                ],
            )?;
            Ok::<_, Failure>(rows.len() == 1)
        })
    }

    fn totp_of(&self, user: UserId) -> Result<Option<StoredTotp>, StoreError> {
        let user = user.as_uuid();
        self.read(|c| {
            let row = c.query_typed_opt(
                "SELECT sealed_secret, enabled_at IS NOT NULL, last_totp_step
                 FROM mfa_totp WHERE user_id = $1",
                &[(&user, Type::UUID)],
            )?;
            let Some(row) = row else {
                return Ok::<_, Failure>(None);
            };
            Ok(Some(StoredTotp {
                sealed_secret: col(&row, 0)?,
                enabled: col(&row, 1)?,
                last_step: col(&row, 2)?,
            }))
        })
    }

    fn enable_totp(
        &self,
        user: UserId,
        sealed_secret: &[u8],
        step: i64,
        recovery: &[TokenHashBytes],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (user, now) = (user.as_uuid(), sec(now));
        self.transaction(|tx| {
            let rows = tx.query_typed(
                "UPDATE mfa_totp SET enabled_at = $3, last_totp_step = $4
                 WHERE user_id = $1 AND sealed_secret = $2 AND enabled_at IS NULL
                   AND (last_totp_step IS NULL OR last_totp_step < $4)
                 RETURNING 1",
                &[
                    (&user, Type::UUID),
                    (&sealed_secret, Type::BYTEA),
                    (&now, Type::TIMESTAMPTZ),
                    (&step, Type::INT8),
                ],
            )?;
            if rows.len() != 1 {
                return Ok::<_, Failure>(false);
            }
            insert_codes(tx, &user, recovery, &now)?;
            Ok(true)
        })
    }

    fn claim_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError> {
        let user = user.as_uuid();
        self.write(|c| {
            let rows = c.query_typed(
                "UPDATE mfa_totp SET last_totp_step = $2
                 WHERE user_id = $1 AND enabled_at IS NOT NULL
                   AND (last_totp_step IS NULL OR last_totp_step < $2)
                 RETURNING 1",
                &[(&user, Type::UUID), (&step, Type::INT8)],
            )?;
            Ok::<_, Failure>(rows.len() == 1)
        })
    }

    fn use_recovery_code(&self, user: UserId, hash: &TokenHashBytes) -> Result<bool, StoreError> {
        let (user, hash) = (user.as_uuid(), &hash[..]);
        self.write(|c| {
            let rows = c.query_typed(
                "DELETE FROM mfa_recovery_codes WHERE user_id = $1 AND hash = $2 RETURNING 1",
                &[(&user, Type::UUID), (&hash, Type::BYTEA)],
            )?;
            Ok::<_, Failure>(rows.len() == 1)
        })
    }

    fn replace_recovery_codes(
        &self,
        user: UserId,
        recovery: &[TokenHashBytes],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (user, now) = (user.as_uuid(), sec(now));
        self.transaction(|tx| {
            // Locks the enrolment, so a concurrent disable either comes first (nothing
            // is written here) or waits for these codes and then deletes them.
            let enabled = tx
                .query_typed(
                    "SELECT 1 FROM mfa_totp WHERE user_id = $1 AND enabled_at IS NOT NULL
                     FOR UPDATE",
                    &[(&user, Type::UUID)],
                )?
                .len()
                == 1;
            if enabled {
                insert_codes(tx, &user, recovery, &now)?;
            }
            Ok::<_, Failure>(enabled)
        })
    }

    fn recovery_codes_left(&self, user: UserId) -> Result<u32, StoreError> {
        let user = user.as_uuid();
        self.read(|c| {
            let row = c.query_typed_one(
                "SELECT count(*) FROM mfa_recovery_codes WHERE user_id = $1",
                &[(&user, Type::UUID)],
            )?;
            let n: i64 = col(&row, 0)?;
            Ok::<_, Failure>(u32::try_from(n).unwrap_or(u32::MAX))
        })
    }

    fn remove_mfa(&self, user: UserId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let (user, now) = (user.as_uuid(), sec(now));
        self.transaction(|tx| {
            let enabled: bool = col(
                &tx.query_typed_one(
                    "WITH gone AS (DELETE FROM mfa_totp WHERE user_id = $1
                                   RETURNING enabled_at IS NOT NULL AS enabled)
                     SELECT COALESCE(bool_or(enabled), false) FROM gone",
                    &[(&user, Type::UUID)],
                )?,
                0,
            )?;
            tx.query_typed(
                "DELETE FROM mfa_recovery_codes WHERE user_id = $1",
                &[(&user, Type::UUID)],
            )?;
            void_tokens(tx, &user, &now)?;
            Ok::<_, Failure>(enabled)
        })
    }

    fn create_mfa_token(&self, t: NewMfaToken) -> Result<(), StoreError> {
        let (hash, user) = (&t.hash[..], t.user_id.as_uuid());
        let (now, expires) = (sec(t.now), sec(t.expires_at));
        self.write(|c| {
            // The user's expired ones go as a new one comes (see sqlite/mfa.rs).
            c.query_typed(
                "DELETE FROM mfa_tokens WHERE user_id = $1 AND expires_at <= $2",
                &[(&user, Type::UUID), (&now, Type::TIMESTAMPTZ)],
            )?;
            c.query_typed(
                "INSERT INTO mfa_tokens (hash, user_id, password_generation, created_at,
                                         expires_at, ip, user_agent)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    (&hash, Type::BYTEA),
                    (&user, Type::UUID),
                    (&t.password_generation, Type::INT8),
                    (&now, Type::TIMESTAMPTZ),
                    (&expires, Type::TIMESTAMPTZ),
                    (&t.ip, Type::TEXT),
                    (&t.user_agent, Type::TEXT),
                ],
            )?;
            Ok::<_, Failure>(())
        })
    }

    fn find_mfa_token(&self, hash: &TokenHashBytes) -> Result<Option<StoredMfaToken>, StoreError> {
        let hash = &hash[..];
        self.read(|c| {
            let row = c.query_typed_opt(
                "SELECT user_id, password_generation, expires_at, spent_at IS NOT NULL
                 FROM mfa_tokens WHERE hash = $1",
                &[(&hash, Type::BYTEA)],
            )?;
            let Some(row) = row else {
                return Ok::<_, Failure>(None);
            };
            Ok(Some(StoredMfaToken {
                user_id: UserId::from(col::<Uuid>(&row, 0)?),
                password_generation: col(&row, 1)?,
                expires_at: col(&row, 2)?,
                spent: col(&row, 3)?,
            }))
        })
    }

    fn spend_mfa_token(
        &self,
        hash: &TokenHashBytes,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let (hash, now) = (&hash[..], sec(now));
        self.write(|c| {
            let rows = c.query_typed(
                "UPDATE mfa_tokens SET spent_at = $2
                 WHERE hash = $1 AND spent_at IS NULL AND expires_at > $2
                 RETURNING 1",
                &[(&hash, Type::BYTEA), (&now, Type::TIMESTAMPTZ)],
            )?;
            Ok::<_, Failure>(rows.len() == 1)
        })
    }

    fn void_mfa_tokens(&self, user: UserId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let (user, now) = (user.as_uuid(), sec(now));
        self.write(|c| void_tokens(c, &user, &now))
    }
}
