//! `mail_tokens` and `mail_outbox` (#19). The mirror of `postgres/mail.rs`.
//!
//! One process serves a SQLite file and every write goes through its one writer, so a
//! claim needs no row locks: the conditional UPDATEs below decide in writer order.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension as _, Transaction, params};
use uuid::Uuid;

use super::{SqliteStore, accounts, audit, families, opt_uuid_col, time, ts};
use crate::domain::{Email, RevokeReason, User, UserId};
use crate::storage::mail::*;
use crate::storage::{AuditEvent, NewUser, StoreError, TokenHashBytes};

/// Adds `password_reset` to the CHECK on `refresh_families.revoked_reason` (migration
/// 5). SQLite cannot alter a CHECK, and rebuilding the table would drop every refresh
/// token with it (ON DELETE CASCADE), so the table's stored definition is edited as
/// SQLite's documentation describes for loosening a constraint ("Making Other Kinds Of
/// Table Schema Changes"): no stored row changes meaning, and the schema version moves
/// on so that every connection reads the new definition.
pub(super) fn allow_password_reset_reason(tx: &Transaction<'_>) -> rusqlite::Result<()> {
    let version: i64 = tx.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
    tx.execute_batch("PRAGMA writable_schema = ON")?;
    tx.execute(
        r#"UPDATE sqlite_schema
           SET sql = replace(sql, '''password_change'')', '''password_change'', ''password_reset'')')
           WHERE type = 'table' AND name = 'refresh_families'"#,
        [],
    )?;
    tx.execute_batch(&format!(
        "PRAGMA schema_version = {}; PRAGMA writable_schema = OFF;",
        version + 1
    ))?;
    Ok(())
}

fn enabled(tx: &Transaction<'_>, user: UserId) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached("SELECT disabled FROM users WHERE id = ?1")?
        .query_row([user.to_string()], |r| r.get::<_, bool>(0))
        .optional()?
        .is_some_and(|disabled| !disabled))
}

fn spend_all(
    tx: &Transaction<'_>,
    user: UserId,
    purpose: MailPurpose,
    now: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "UPDATE mail_tokens SET spent_at = ?3
         WHERE user_id = ?1 AND purpose = ?2 AND spent_at IS NULL",
    )?
    .execute(params![user.to_string(), purpose.as_str(), ts(now)])
}

/// `event` for `user`; an email-change token's is `email_changed`.
fn redeemed_event(event: &AuditEvent, user: UserId, purpose: MailPurpose) -> AuditEvent {
    AuditEvent {
        kind: match purpose {
            MailPurpose::Change => crate::domain::AuditKind::EmailChanged,
            _ => event.kind,
        },
        ..with_user(event, user)
    }
}

fn with_user(event: &AuditEvent, user: UserId) -> AuditEvent {
    AuditEvent {
        user_id: Some(user),
        ..event.clone()
    }
}

/// The live token `hash` of an enabled user, if it is one of `purposes`.
fn live_token(
    tx: &Transaction<'_>,
    hash: &TokenHashBytes,
    now: DateTime<Utc>,
) -> rusqlite::Result<Option<(UserId, MailPurpose, Option<String>)>> {
    tx.prepare_cached(
        "SELECT t.user_id, t.purpose, t.new_email FROM mail_tokens t JOIN users u ON u.id = t.user_id
         WHERE t.hash = ?1 AND t.spent_at IS NULL AND t.expires_at > ?2 AND u.disabled = 0",
    )?
    .query_row(params![&hash[..], ts(now)], |r| {
        let purpose: String = r.get(1)?;
        Ok((
            super::uuid_col(r, 0)?,
            MailPurpose::parse(&purpose),
            r.get::<_, Option<String>>(2)?,
        ))
    })
    .optional()
    .map(|found| found.and_then(|(u, p, e)| p.map(|p| (u, p, e))))
}

fn claim(
    tx: &Transaction<'_>,
    hash: &TokenHashBytes,
    now: DateTime<Utc>,
) -> rusqlite::Result<bool> {
    Ok(tx
        .prepare_cached(
            "UPDATE mail_tokens SET spent_at = ?2 WHERE hash = ?1 AND spent_at IS NULL",
        )?
        .execute(params![&hash[..], ts(now)])?
        == 1)
}

fn user(tx: &Transaction<'_>, id: UserId) -> rusqlite::Result<Option<User>> {
    Ok(accounts::by_id(tx, id)?.map(|a| a.user))
}

/// The mail columns `DueMail` reads, in its order.
const DUE_COLUMNS: &str = "id, user_id, kind, recipient, subject, body_text, body_html, attempts, \
                           created_at, expires_at";

fn due(row: &rusqlite::Row<'_>) -> rusqlite::Result<DueMail> {
    Ok(DueMail {
        id: super::uuid_col(row, 0)?,
        user_id: opt_uuid_col(row, 1)?,
        kind: row.get(2)?,
        recipient: row.get(3)?,
        subject: row.get(4)?,
        text: row.get(5)?,
        html: row.get(6)?,
        attempts: row.get(7)?,
        created_at: time(row.get(8)?),
        expires_at: time(row.get(9)?),
    })
}

fn queue_in(tx: &Transaction<'_>, request: &MailRequest) -> rusqlite::Result<bool> {
    if !enabled(tx, request.user_id)? {
        return Ok(false);
    }
    for purpose in &request.supersedes {
        spend_all(tx, request.user_id, *purpose, request.now)?;
    }
    if let Some(token) = &request.token {
        tx.prepare_cached(
            "INSERT INTO mail_tokens (hash, user_id, purpose, new_email, created_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            &token.hash[..],
            request.user_id.to_string(),
            token.purpose.as_str(),
            token.new_email.as_ref().map(Email::as_str),
            ts(request.now),
            ts(token.expires_at)
        ])?;
    }
    for mail in &request.mails {
        tx.prepare_cached(
            "INSERT INTO mail_outbox (id, user_id, kind, recipient, subject, body_text,
                 body_html, status, created_at, next_attempt_at, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'queued', ?8, ?8, ?9)",
        )?
        .execute(params![
            mail.id.to_string(),
            request.user_id.to_string(),
            mail.kind,
            mail.recipient,
            mail.subject,
            mail.text,
            mail.html,
            ts(request.now),
            ts(mail.expires_at)
        ])?;
    }
    for event in &request.audit {
        audit::insert(tx, &with_user(event, request.user_id))?;
    }
    Ok(true)
}

fn count(r: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<u64> {
    Ok(u64::try_from(r.get::<_, i64>(idx)?).unwrap_or(0))
}

impl MailStore for SqliteStore {
    fn queue_mail(&self, request: MailRequest) -> Result<bool, StoreError> {
        self.write(|tx| queue_in(tx, &request))
    }

    fn create_user_with_mail(
        &self,
        new: NewUser<'_>,
        request: MailRequest,
    ) -> Result<User, StoreError> {
        self.write(|tx| {
            let Some(user) = accounts::insert(tx, &new)? else {
                return Ok(None);
            };
            queue_in(tx, &request)?;
            Ok(Some(user))
        })?
        .ok_or(StoreError::EmailTaken)
    }

    fn redeem_email_token(
        &self,
        hash: TokenHashBytes,
        now: DateTime<Utc>,
        event: AuditEvent,
    ) -> Result<Redeemed, StoreError> {
        self.write(|tx| {
            let Some((id, purpose, new_email)) = live_token(tx, &hash, now)? else {
                return Ok(Redeemed::Invalid);
            };
            let changed = match (purpose, new_email) {
                (MailPurpose::Verify, _) => tx.execute(
                    "UPDATE users SET email_verified = 1, updated_at = ?2 WHERE id = ?1",
                    params![id.to_string(), ts(now)],
                ),
                (MailPurpose::Change, Some(email)) => tx.execute(
                    "UPDATE users SET email = ?2, email_verified = 1, updated_at = ?3 WHERE id = ?1",
                    params![id.to_string(), email, ts(now)],
                ),
                _ => return Ok(Redeemed::Invalid),
            };
            match changed {
                // The UPDATE failed and wrote nothing; the token stays unspent.
                Err(e) if super::is_unique_violation(&e) => return Ok(Redeemed::EmailTaken),
                other => other?,
            };
            if !claim(tx, &hash, now)? {
                return Ok(Redeemed::Invalid);
            }
            audit::insert(tx, &redeemed_event(&event, id, purpose))?;
            Ok(match user(tx, id)? {
                Some(user) => Redeemed::Done { user, purpose },
                None => Redeemed::Invalid,
            })
        })
    }

    fn reset_password_with_token(
        &self,
        hash: TokenHashBytes,
        password_hash: &str,
        now: DateTime<Utc>,
        event: AuditEvent,
    ) -> Result<Option<User>, StoreError> {
        self.write(|tx| {
            let Some((id, MailPurpose::Reset, _)) = live_token(tx, &hash, now)? else {
                return Ok(None);
            };
            if !claim(tx, &hash, now)? {
                return Ok(None);
            }
            tx.execute(
                "UPDATE users SET password_hash = ?2, password_generation = password_generation + 1,
                        email_verified = 1, updated_at = ?3
                 WHERE id = ?1",
                params![id.to_string(), password_hash, ts(now)],
            )?;
            families::revoke_all(tx, id, RevokeReason::PasswordReset, now)?;
            spend_all(tx, id, MailPurpose::Reset, now)?;
            audit::insert(tx, &with_user(&event, id))?;
            user(tx, id)
        })
    }

    fn set_password_by_operator(
        &self,
        user: UserId,
        password_hash: &str,
        now: DateTime<Utc>,
        event: AuditEvent,
    ) -> Result<bool, StoreError> {
        self.write(|tx| {
            let changed = tx.execute(
                "UPDATE users SET password_hash = ?2, password_generation = password_generation + 1,
                        updated_at = ?3
                 WHERE id = ?1",
                params![user.to_string(), password_hash, ts(now)],
            )?;
            if changed == 0 {
                return Ok(false);
            }
            families::revoke_all(tx, user, RevokeReason::Admin, now)?;
            spend_all(tx, user, MailPurpose::Reset, now)?;
            audit::insert(tx, &with_user(&event, user))?;
            Ok(true)
        })
    }

    fn spend_mail_tokens(
        &self,
        user: UserId,
        purpose: MailPurpose,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.write(|tx| spend_all(tx, user, purpose, now))
    }

    fn claim_due_mail(
        &self,
        now: DateTime<Utc>,
        lease_secs: i64,
        limit: u32,
    ) -> Result<Vec<DueMail>, StoreError> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(&format!(
                "UPDATE mail_outbox SET lease_until = unixepoch() + ?2, attempts = attempts + 1
                 WHERE id IN (SELECT id FROM mail_outbox
                     WHERE status = 'queued' AND next_attempt_at <= ?1 AND expires_at > ?1
                       AND (lease_until IS NULL OR lease_until <= unixepoch())
                     ORDER BY next_attempt_at LIMIT ?3)
                 RETURNING {DUE_COLUMNS}"
            ))?;
            stmt.query_map(params![ts(now), lease_secs, limit], due)?
                .collect()
        })
    }

    fn finish_mail(
        &self,
        id: Uuid,
        outcome: MailOutcome,
        now: DateTime<Utc>,
        event: Option<AuditEvent>,
    ) -> Result<(), StoreError> {
        self.write(|tx| {
            match &outcome {
                MailOutcome::Sent => tx.execute(
                    "UPDATE mail_outbox SET status = 'sent', finished_at = ?2, lease_until = NULL,
                            body_text = '', body_html = '', last_error = NULL
                     WHERE id = ?1 AND status = 'queued'",
                    params![id.to_string(), ts(now)],
                )?,
                MailOutcome::Retry {
                    next_attempt_at,
                    error,
                } => tx.execute(
                    "UPDATE mail_outbox SET next_attempt_at = ?2, lease_until = NULL, last_error = ?3
                     WHERE id = ?1 AND status = 'queued'",
                    params![id.to_string(), ts(*next_attempt_at), error],
                )?,
                MailOutcome::Failed { error } => tx.execute(
                    "UPDATE mail_outbox SET status = 'failed', finished_at = ?2, lease_until = NULL,
                            body_text = '', body_html = '', last_error = ?3
                     WHERE id = ?1 AND status = 'queued'",
                    params![id.to_string(), ts(now), error],
                )?,
            };
            if let Some(event) = &event {
                audit::insert(tx, event)?;
            }
            Ok(())
        })
    }

    fn expire_mail(&self, now: DateTime<Utc>) -> Result<Vec<(Uuid, Option<UserId>)>, StoreError> {
        self.write(|tx| {
            let mut stmt = tx.prepare_cached(
                "UPDATE mail_outbox SET status = 'expired', finished_at = ?1,
                        body_text = '', body_html = ''
                 WHERE status = 'queued' AND expires_at <= ?1
                   AND (lease_until IS NULL OR lease_until <= unixepoch())
                 RETURNING id, user_id",
            )?;
            stmt.query_map(params![ts(now)], |r| {
                Ok((super::uuid_col(r, 0)?, opt_uuid_col(r, 1)?))
            })?
            .collect()
        })
    }

    fn mail_stats(&self) -> Result<MailStats, StoreError> {
        self.read(|c| {
            c.query_row(
                "SELECT COUNT(CASE WHEN status = 'queued' AND attempts = 0 THEN 1 END),
                        COUNT(CASE WHEN status = 'queued' AND attempts > 0 THEN 1 END),
                        COUNT(CASE WHEN status = 'sent' THEN 1 END),
                        COUNT(CASE WHEN status = 'failed' THEN 1 END),
                        COUNT(CASE WHEN status = 'expired' THEN 1 END),
                        MIN(CASE WHEN status = 'queued' THEN created_at END)
                 FROM mail_outbox",
                [],
                |r| {
                    Ok(MailStats {
                        queued: count(r, 0)?,
                        retrying: count(r, 1)?,
                        sent: count(r, 2)?,
                        failed: count(r, 3)?,
                        expired: count(r, 4)?,
                        oldest_queued: r.get::<_, Option<i64>>(5)?.map(time),
                    })
                },
            )
        })
    }

    fn user_mail(&self, user: UserId, limit: u32) -> Result<Vec<MailDelivery>, StoreError> {
        self.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, kind, status, attempts, created_at, finished_at FROM mail_outbox
                 WHERE user_id = ?1 ORDER BY created_at DESC, rowid DESC LIMIT ?2",
            )?;
            stmt.query_map(params![user.to_string(), limit], |r| {
                Ok(MailDelivery {
                    id: super::uuid_col(r, 0)?,
                    kind: r.get(1)?,
                    status: r.get(2)?,
                    attempts: r.get(3)?,
                    created_at: time(r.get(4)?),
                    finished_at: r.get::<_, Option<i64>>(5)?.map(time),
                })
            })?
            .collect()
        })
    }

    fn prune_mail(
        &self,
        now: DateTime<Utc>,
        finished_before: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        self.write(|tx| {
            let mails = tx.execute(
                "DELETE FROM mail_outbox WHERE status <> 'queued' AND finished_at < ?1",
                params![ts(finished_before)],
            )?;
            let tokens = tx.execute(
                "DELETE FROM mail_tokens WHERE expires_at <= ?1",
                params![ts(now)],
            )?;
            Ok(mails + tokens)
        })
    }
}
