//! `mail_tokens` and `mail_outbox` (#19). The mirror of `sqlite/mail.rs`.
//!
//! Several replicas may send from one outbox: a claim takes due rows `FOR UPDATE SKIP
//! LOCKED` (so concurrent claims never take, nor wait for, the same rows) and leases
//! them on the server's clock, so a mail is in one sender's hands at a time and comes
//! back to the queue by itself if that sender dies.

use ::postgres::Row;
use ::postgres::types::Type;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::statements::{Connection, Driver};
use super::{Failure, PgStore, accounts, audit, col, families, sec};
use crate::domain::{Email, RevokeReason, User, UserId};
use crate::storage::mail::*;
use crate::storage::{AuditEvent, NewUser, StoreError, TokenHashBytes};

fn enabled<C: Driver>(c: &mut Connection<'_, C>, user: UserId) -> Result<bool, Failure> {
    let id = user.as_uuid();
    // FOR SHARE: a disable committing meanwhile waits for this transaction, or is seen.
    let row = c.query_typed_opt(
        "SELECT disabled FROM users WHERE id = $1 FOR SHARE",
        &[(&id, Type::UUID)],
    )?;
    Ok(match row {
        Some(row) => !col::<bool>(&row, 0)?,
        None => false,
    })
}

fn spend_all<C: Driver>(
    c: &mut Connection<'_, C>,
    user: UserId,
    purpose: MailPurpose,
    now: DateTime<Utc>,
) -> Result<usize, Failure> {
    let (id, purpose, now) = (user.as_uuid(), purpose.as_str(), sec(now));
    let rows = c.query_typed(
        "UPDATE mail_tokens SET spent_at = $3
         WHERE user_id = $1 AND purpose = $2 AND spent_at IS NULL RETURNING 1",
        &[
            (&id, Type::UUID),
            (&purpose, Type::TEXT),
            (&now, Type::TIMESTAMPTZ),
        ],
    )?;
    Ok(rows.len())
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

/// The claim: spends the live token `hash` of an enabled user, in one conditional
/// UPDATE. Under READ COMMITTED a concurrent claim waits for this row lock, re-reads the
/// row and finds it spent: of any number of claims, one gets the row.
fn claim<C: Driver>(
    c: &mut Connection<'_, C>,
    hash: &TokenHashBytes,
    now: DateTime<Utc>,
) -> Result<Option<(UserId, MailPurpose, Option<String>)>, Failure> {
    let (hash, now) = (&hash[..], sec(now));
    let row = c.query_typed_opt(
        "UPDATE mail_tokens t SET spent_at = $2
         FROM users u
         WHERE t.hash = $1 AND t.spent_at IS NULL AND t.expires_at > $2
           AND u.id = t.user_id AND NOT u.disabled
         RETURNING t.user_id, t.purpose, t.new_email",
        &[(&hash, Type::BYTEA), (&now, Type::TIMESTAMPTZ)],
    )?;
    let Some(row) = row else {
        return Ok(None);
    };
    let purpose: String = col(&row, 1)?;
    Ok(MailPurpose::parse(&purpose)
        .map(|p| -> Result<_, StoreError> {
            Ok((UserId::from(col::<Uuid>(&row, 0)?), p, col(&row, 2)?))
        })
        .transpose()?)
}

fn user<C: Driver>(c: &mut Connection<'_, C>, id: UserId) -> Result<Option<User>, Failure> {
    Ok(accounts::by_id_in(c, id)?.map(|a| a.user))
}

/// The mail columns `DueMail` reads, in its order.
const DUE_COLUMNS: &str = "m.id, m.user_id, m.kind, m.recipient, m.subject, m.body_text, \
                           m.body_html, m.attempts, m.created_at, m.expires_at";

fn due(row: &Row) -> Result<DueMail, StoreError> {
    Ok(DueMail {
        id: col(row, 0)?,
        user_id: col::<Option<Uuid>>(row, 1)?.map(UserId::from),
        kind: col(row, 2)?,
        recipient: col(row, 3)?,
        subject: col(row, 4)?,
        text: col(row, 5)?,
        html: col(row, 6)?,
        attempts: u32::try_from(col::<i32>(row, 7)?).unwrap_or(0),
        created_at: col(row, 8)?,
        expires_at: col(row, 9)?,
    })
}

fn count(row: &Row, idx: usize) -> Result<u64, StoreError> {
    Ok(u64::try_from(col::<i64>(row, idx)?).unwrap_or(0))
}

fn queue_in<C: Driver>(tx: &mut Connection<'_, C>, request: &MailRequest) -> Result<bool, Failure> {
    if !enabled(tx, request.user_id)? {
        return Ok(false);
    }
    for purpose in &request.supersedes {
        spend_all(tx, request.user_id, *purpose, request.now)?;
    }
    let (user, now) = (request.user_id.as_uuid(), sec(request.now));
    if let Some(token) = &request.token {
        let (hash, purpose, expires) = (
            &token.hash[..],
            token.purpose.as_str(),
            sec(token.expires_at),
        );
        let new_email = token.new_email.as_ref().map(Email::as_str);
        tx.query_typed(
            "INSERT INTO mail_tokens (hash, user_id, purpose, new_email, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                (&hash, Type::BYTEA),
                (&user, Type::UUID),
                (&purpose, Type::TEXT),
                (&new_email, Type::TEXT),
                (&now, Type::TIMESTAMPTZ),
                (&expires, Type::TIMESTAMPTZ),
            ],
        )?;
    }
    for mail in &request.mails {
        let expires = sec(mail.expires_at);
        tx.query_typed(
            "INSERT INTO mail_outbox (id, user_id, kind, recipient, subject, body_text,
                 body_html, status, created_at, next_attempt_at, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $8, $9)",
            &[
                (&mail.id, Type::UUID),
                (&user, Type::UUID),
                (&mail.kind, Type::TEXT),
                (&mail.recipient, Type::TEXT),
                (&mail.subject, Type::TEXT),
                (&mail.text, Type::TEXT),
                (&mail.html, Type::TEXT),
                (&now, Type::TIMESTAMPTZ),
                (&expires, Type::TIMESTAMPTZ),
            ],
        )?;
    }
    for event in &request.audit {
        audit::insert(tx, &with_user(event, request.user_id))?;
    }
    Ok(true)
}

impl MailStore for PgStore {
    fn queue_mail(&self, request: MailRequest) -> Result<bool, StoreError> {
        self.transaction(|tx| queue_in(tx, &request))
    }

    fn create_user_with_mail(
        &self,
        new: NewUser<'_>,
        request: MailRequest,
    ) -> Result<User, StoreError> {
        // A taken email fails the INSERT with the unique constraint's SQLSTATE, which
        // `PgStore::run` maps to `EmailTaken`; the transaction writes nothing.
        self.transaction(|tx| {
            let user = accounts::insert_in(tx, &new)?;
            queue_in(tx, &request)?;
            Ok::<_, Failure>(user)
        })
    }

    fn redeem_email_token(
        &self,
        hash: TokenHashBytes,
        now: DateTime<Utc>,
        event: AuditEvent,
    ) -> Result<Redeemed, StoreError> {
        let redeemed = self.transaction(|tx| {
            let Some((id, purpose, new_email)) = claim(tx, &hash, now)? else {
                return Ok::<_, Failure>(None);
            };
            let (uid, at) = (id.as_uuid(), sec(now));
            match (purpose, new_email) {
                (MailPurpose::Verify, _) => {
                    tx.query_typed(
                        "UPDATE users SET email_verified = true, updated_at = $2 WHERE id = $1",
                        &[(&uid, Type::UUID), (&at, Type::TIMESTAMPTZ)],
                    )?;
                }
                // A taken address fails the statement with the unique constraint's
                // SQLSTATE: the transaction rolls back, the token with it (`EmailTaken`).
                (MailPurpose::Change, Some(email)) => {
                    tx.query_typed(
                        "UPDATE users SET email = $2, email_verified = true, updated_at = $3
                         WHERE id = $1",
                        &[
                            (&uid, Type::UUID),
                            (&email, Type::TEXT),
                            (&at, Type::TIMESTAMPTZ),
                        ],
                    )?;
                }
                // A reset token (or a change token without its address): roll back, so a
                // reset token presented here stays usable where it belongs.
                _ => return Err(Failure::Row(StoreError::internal("not an email token"))),
            }
            audit::insert(tx, &redeemed_event(&event, id, purpose))?;
            Ok(user(tx, id)?.map(|user| Redeemed::Done { user, purpose }))
        });
        match redeemed {
            Ok(Some(done)) => Ok(done),
            Ok(None) => Ok(Redeemed::Invalid),
            Err(StoreError::EmailTaken) => Ok(Redeemed::EmailTaken),
            Err(StoreError::Internal { reason, .. }) if reason == "not an email token" => {
                Ok(Redeemed::Invalid)
            }
            Err(e) => Err(e),
        }
    }

    fn reset_password_with_token(
        &self,
        hash: TokenHashBytes,
        password_hash: &str,
        now: DateTime<Utc>,
        event: AuditEvent,
    ) -> Result<Option<User>, StoreError> {
        let reset = self.transaction(|tx| {
            let Some((id, purpose, _)) = claim(tx, &hash, now)? else {
                return Ok::<_, Failure>(None);
            };
            if purpose != MailPurpose::Reset {
                return Err(Failure::Row(StoreError::internal("not a reset token")));
            }
            let (uid, at) = (id.as_uuid(), sec(now));
            tx.query_typed(
                "UPDATE users SET password_hash = $2, password_generation = password_generation + 1,
                        email_verified = true, updated_at = $3
                 WHERE id = $1",
                &[
                    (&uid, Type::UUID),
                    (&password_hash, Type::TEXT),
                    (&at, Type::TIMESTAMPTZ),
                ],
            )?;
            families::revoke_all(tx, id, RevokeReason::PasswordReset, now)?;
            spend_all(tx, id, MailPurpose::Reset, now)?;
            audit::insert(tx, &with_user(&event, id))?;
            user(tx, id)
        });
        match reset {
            Err(StoreError::Internal { reason, .. }) if reason == "not a reset token" => Ok(None),
            other => other,
        }
    }

    fn set_password_by_operator(
        &self,
        user: UserId,
        password_hash: &str,
        now: DateTime<Utc>,
        event: AuditEvent,
    ) -> Result<bool, StoreError> {
        // Separate statements in one transaction: the revocation must see every family
        // committed while the UPDATE waited for the user's row (see `change_password`).
        self.transaction(|tx| {
            let (uid, at) = (user.as_uuid(), sec(now));
            let rows = tx.query_typed(
                "UPDATE users SET password_hash = $2, password_generation = password_generation + 1,
                        updated_at = $3
                 WHERE id = $1 RETURNING 1",
                &[
                    (&uid, Type::UUID),
                    (&password_hash, Type::TEXT),
                    (&at, Type::TIMESTAMPTZ),
                ],
            )?;
            if rows.is_empty() {
                return Ok::<_, Failure>(false);
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
        self.write(|c| spend_all(c, user, purpose, now))
    }

    fn claim_due_mail(
        &self,
        now: DateTime<Utc>,
        lease_secs: i64,
        limit: u32,
    ) -> Result<Vec<DueMail>, StoreError> {
        let (now, lease, limit) = (sec(now), lease_secs as f64, i64::from(limit));
        self.write(|c| {
            let rows = c.query_typed(
                &format!(
                    "WITH due AS (
                         SELECT id FROM mail_outbox
                         WHERE status = 'queued' AND next_attempt_at <= $1 AND expires_at > $1
                           AND (lease_until IS NULL OR lease_until <= statement_timestamp())
                         ORDER BY next_attempt_at LIMIT $3
                         FOR UPDATE SKIP LOCKED)
                     UPDATE mail_outbox m
                     SET lease_until = statement_timestamp() + make_interval(secs => $2),
                         attempts = m.attempts + 1
                     FROM due WHERE m.id = due.id
                     RETURNING {DUE_COLUMNS}"
                ),
                &[
                    (&now, Type::TIMESTAMPTZ),
                    (&lease, Type::FLOAT8),
                    (&limit, Type::INT8),
                ],
            )?;
            rows.iter()
                .map(due)
                .collect::<Result<Vec<_>, _>>()
                .map_err(Failure::Row)
        })
    }

    fn finish_mail(
        &self,
        id: Uuid,
        outcome: MailOutcome,
        now: DateTime<Utc>,
        event: Option<AuditEvent>,
    ) -> Result<(), StoreError> {
        let now = sec(now);
        self.transaction(|tx| {
            match &outcome {
                MailOutcome::Sent => tx.query_typed(
                    "UPDATE mail_outbox SET status = 'sent', finished_at = $2, lease_until = NULL,
                            body_text = '', body_html = '', last_error = NULL
                     WHERE id = $1 AND status = 'queued'",
                    &[(&id, Type::UUID), (&now, Type::TIMESTAMPTZ)],
                )?,
                MailOutcome::Retry {
                    next_attempt_at,
                    error,
                } => {
                    let next = sec(*next_attempt_at);
                    tx.query_typed(
                        "UPDATE mail_outbox SET next_attempt_at = $2, lease_until = NULL,
                                last_error = $3
                         WHERE id = $1 AND status = 'queued'",
                        &[
                            (&id, Type::UUID),
                            (&next, Type::TIMESTAMPTZ),
                            (error, Type::TEXT),
                        ],
                    )?
                }
                MailOutcome::Failed { error } => tx.query_typed(
                    "UPDATE mail_outbox SET status = 'failed', finished_at = $2, lease_until = NULL,
                            body_text = '', body_html = '', last_error = $3
                     WHERE id = $1 AND status = 'queued'",
                    &[
                        (&id, Type::UUID),
                        (&now, Type::TIMESTAMPTZ),
                        (error, Type::TEXT),
                    ],
                )?,
            };
            if let Some(event) = &event {
                audit::insert(tx, event)?;
            }
            Ok::<_, Failure>(())
        })
    }

    fn expire_mail(&self, now: DateTime<Utc>) -> Result<Vec<(Uuid, Option<UserId>)>, StoreError> {
        let now = sec(now);
        self.write(|c| {
            let rows = c.query_typed(
                "UPDATE mail_outbox SET status = 'expired', finished_at = $1,
                        body_text = '', body_html = ''
                 WHERE status = 'queued' AND expires_at <= $1
                   AND (lease_until IS NULL OR lease_until <= statement_timestamp())
                 RETURNING id, user_id",
                &[(&now, Type::TIMESTAMPTZ)],
            )?;
            rows.iter()
                .map(|r| Ok((col(r, 0)?, col::<Option<Uuid>>(r, 1)?.map(UserId::from))))
                .collect::<Result<Vec<_>, StoreError>>()
                .map_err(Failure::Row)
        })
    }

    fn mail_stats(&self) -> Result<MailStats, StoreError> {
        self.read(|c| {
            let row = c.query_typed_one(
                "SELECT COUNT(CASE WHEN status = 'queued' AND attempts = 0 THEN 1 END),
                        COUNT(CASE WHEN status = 'queued' AND attempts > 0 THEN 1 END),
                        COUNT(CASE WHEN status = 'sent' THEN 1 END),
                        COUNT(CASE WHEN status = 'failed' THEN 1 END),
                        COUNT(CASE WHEN status = 'expired' THEN 1 END),
                        MIN(CASE WHEN status = 'queued' THEN created_at END)
                 FROM mail_outbox",
                &[],
            )?;
            Ok::<_, Failure>(MailStats {
                queued: count(&row, 0)?,
                retrying: count(&row, 1)?,
                sent: count(&row, 2)?,
                failed: count(&row, 3)?,
                expired: count(&row, 4)?,
                oldest_queued: col(&row, 5)?,
            })
        })
    }

    fn user_mail(&self, user: UserId, limit: u32) -> Result<Vec<MailDelivery>, StoreError> {
        let (id, limit) = (user.as_uuid(), i64::from(limit));
        self.read(|c| {
            let rows = c.query_typed(
                "SELECT id, kind, status, attempts, created_at, finished_at FROM mail_outbox
                 WHERE user_id = $1 ORDER BY created_at DESC, seq DESC LIMIT $2",
                &[(&id, Type::UUID), (&limit, Type::INT8)],
            )?;
            rows.iter()
                .map(|r| {
                    Ok(MailDelivery {
                        id: col(r, 0)?,
                        kind: col(r, 1)?,
                        status: col(r, 2)?,
                        attempts: u32::try_from(col::<i32>(r, 3)?).unwrap_or(0),
                        created_at: col(r, 4)?,
                        finished_at: col(r, 5)?,
                    })
                })
                .collect::<Result<Vec<_>, StoreError>>()
                .map_err(Failure::Row)
        })
    }

    fn prune_mail(
        &self,
        now: DateTime<Utc>,
        finished_before: DateTime<Utc>,
    ) -> Result<usize, StoreError> {
        let (now, before) = (sec(now), sec(finished_before));
        self.write(|c| {
            let row = c.query_typed_one(
                "WITH mails AS (DELETE FROM mail_outbox
                                WHERE status <> 'queued' AND finished_at < $2 RETURNING 1),
                      tokens AS (DELETE FROM mail_tokens WHERE expires_at <= $1 RETURNING 1)
                 SELECT (SELECT count(*) FROM mails) + (SELECT count(*) FROM tokens)",
                &[(&now, Type::TIMESTAMPTZ), (&before, Type::TIMESTAMPTZ)],
            )?;
            Ok::<_, Failure>(usize::try_from(col::<i64>(&row, 0)?).unwrap_or(0))
        })
    }
}
