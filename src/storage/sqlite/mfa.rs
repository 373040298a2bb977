//! `mfa_totp`, `mfa_recovery_codes` and `mfa_tokens`: second factors. The mirror of
//! `postgres/mfa.rs`. Every claim runs on the one writer connection in a `BEGIN
//! IMMEDIATE` transaction, and its row count decides.

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension as _, params};

use super::{SqliteStore, time, ts, uuid_col};
use crate::domain::UserId;
use crate::storage::{
    MfaStore, NewMfaToken, StoreError, StoredMfaToken, StoredTotp, TokenHashBytes,
};

fn insert_codes(
    conn: &Connection,
    user: &str,
    recovery: &[TokenHashBytes],
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute("DELETE FROM mfa_recovery_codes WHERE user_id = ?1", [user])?;
    let mut stmt = conn.prepare_cached(
        "INSERT INTO mfa_recovery_codes (user_id, hash, created_at) VALUES (?1, ?2, ?3)",
    )?;
    for hash in recovery {
        stmt.execute(params![user, &hash[..], now])?;
    }
    Ok(())
}

fn void_tokens(conn: &Connection, user: &str, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "DELETE FROM mfa_tokens WHERE user_id = ?1 AND expires_at <= ?2",
        params![user, now],
    )?;
    conn.execute(
        "UPDATE mfa_tokens SET spent_at = ?2 WHERE user_id = ?1 AND spent_at IS NULL",
        params![user, now],
    )?;
    Ok(())
}

impl MfaStore for SqliteStore {
    fn put_pending_totp(
        &self,
        user: UserId,
        sealed_secret: &[u8],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let changed = tx.execute(
                "INSERT INTO mfa_totp (user_id, sealed_secret, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id) DO UPDATE SET sealed_secret = excluded.sealed_secret,
                     created_at = excluded.created_at, last_totp_step = NULL
                 WHERE mfa_totp.enabled_at IS NULL",
                params![user.to_string(), sealed_secret, ts(now)],
            )?;
            Ok(changed == 1)
        })
    }

    fn totp_of(&self, user: UserId) -> Result<Option<StoredTotp>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT sealed_secret, enabled_at IS NOT NULL, last_totp_step
                 FROM mfa_totp WHERE user_id = ?1",
            )?
            .query_row([user.to_string()], |row| {
                Ok(StoredTotp {
                    sealed_secret: row.get(0)?,
                    enabled: row.get(1)?,
                    last_step: row.get(2)?,
                })
            })
            .optional()
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
        let (id, now) = (user.to_string(), ts(now));
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE mfa_totp SET enabled_at = ?3, last_totp_step = ?4
                 WHERE user_id = ?1 AND sealed_secret = ?2 AND enabled_at IS NULL
                   AND (last_totp_step IS NULL OR last_totp_step < ?4)",
                params![id, sealed_secret, now, step],
            )?;
            if changed != 1 {
                return Ok(false);
            }
            insert_codes(tx, &id, recovery, now)?;
            Ok(true)
        })
    }

    fn claim_totp_step(&self, user: UserId, step: i64) -> Result<bool, StoreError> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE mfa_totp SET last_totp_step = ?2
                     WHERE user_id = ?1 AND enabled_at IS NOT NULL
                       AND (last_totp_step IS NULL OR last_totp_step < ?2)",
                )?
                .execute(params![user.to_string(), step])?;
            Ok(changed == 1)
        })
    }

    fn use_recovery_code(&self, user: UserId, hash: &TokenHashBytes) -> Result<bool, StoreError> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached("DELETE FROM mfa_recovery_codes WHERE user_id = ?1 AND hash = ?2")?
                .execute(params![user.to_string(), &hash[..]])?;
            Ok(changed == 1)
        })
    }

    fn replace_recovery_codes(
        &self,
        user: UserId,
        recovery: &[TokenHashBytes],
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let id = user.to_string();
        self.write(|tx| {
            let enabled: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM mfa_totp
                                WHERE user_id = ?1 AND enabled_at IS NOT NULL)",
                [&id],
                |r| r.get(0),
            )?;
            if enabled {
                insert_codes(tx, &id, recovery, ts(now))?;
            }
            Ok(enabled)
        })
    }

    fn recovery_codes_left(&self, user: UserId) -> Result<u32, StoreError> {
        self.read(|c| {
            c.prepare_cached("SELECT count(*) FROM mfa_recovery_codes WHERE user_id = ?1")?
                .query_row([user.to_string()], |r| r.get(0))
        })
    }

    fn remove_mfa(&self, user: UserId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let id = user.to_string();
        self.write(|tx| {
            let enabled = tx.execute(
                "DELETE FROM mfa_totp WHERE user_id = ?1 AND enabled_at IS NOT NULL",
                [&id],
            )? == 1;
            tx.execute("DELETE FROM mfa_totp WHERE user_id = ?1", [&id])?;
            tx.execute("DELETE FROM mfa_recovery_codes WHERE user_id = ?1", [&id])?;
            void_tokens(tx, &id, ts(now))?;
            Ok(enabled)
        })
    }

    fn create_mfa_token(&self, t: NewMfaToken) -> Result<(), StoreError> {
        self.write(|tx| {
            // The user's expired ones go as a new one comes: a table that never grows
            // past a few rows per user, without a pruning pass of its own.
            tx.prepare_cached("DELETE FROM mfa_tokens WHERE user_id = ?1 AND expires_at <= ?2")?
                .execute(params![t.user_id.to_string(), ts(t.now)])?;
            tx.prepare_cached(
                "INSERT INTO mfa_tokens (hash, user_id, password_generation, created_at,
                                         expires_at, ip, user_agent)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                &t.hash[..],
                t.user_id.to_string(),
                t.password_generation,
                ts(t.now),
                ts(t.expires_at),
                t.ip,
                t.user_agent
            ])?;
            Ok(())
        })
    }

    fn find_mfa_token(&self, hash: &TokenHashBytes) -> Result<Option<StoredMfaToken>, StoreError> {
        self.read(|c| {
            c.prepare_cached(
                "SELECT user_id, password_generation, expires_at, spent_at IS NOT NULL
                 FROM mfa_tokens WHERE hash = ?1",
            )?
            .query_row([&hash[..]], |row| {
                Ok(StoredMfaToken {
                    user_id: uuid_col(row, 0)?,
                    password_generation: row.get(1)?,
                    expires_at: time(row.get(2)?),
                    spent: row.get(3)?,
                })
            })
            .optional()
        })
    }

    fn spend_mfa_token(
        &self,
        hash: &TokenHashBytes,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let changed = tx
                .prepare_cached(
                    "UPDATE mfa_tokens SET spent_at = ?2
                     WHERE hash = ?1 AND spent_at IS NULL AND expires_at > ?2",
                )?
                .execute(params![&hash[..], ts(now)])?;
            Ok(changed == 1)
        })
    }

    fn void_mfa_tokens(&self, user: UserId, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.write(|tx| void_tokens(tx, &user.to_string(), ts(now)))
    }
}
