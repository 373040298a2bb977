//! Mail tokens and the outbox (#19): what the mail rules need from a store.
//!
//! A mail is written to the outbox in the transaction of the action that causes it
//! ([`MailStore::queue_mail`]), and a background sender claims due mails, sends them and
//! records how it went. Tokens are stored as SHA-256 hashes only; the outbox keeps the
//! rendered mail (which carries the token's link) only while the mail is queued, and
//! blanks it once it is sent, failed or expired.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{AuditEvent, NewUser, StoreError, TokenHashBytes};
use crate::domain::{Email, User, UserId};

/// What a mail token does when redeemed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MailPurpose {
    /// Proves the user's current address.
    Verify,
    /// Moves the user to `new_email` (and proves it).
    Change,
    /// Replaces the password.
    Reset,
}

impl MailPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            MailPurpose::Verify => "verify",
            MailPurpose::Change => "change",
            MailPurpose::Reset => "reset",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "verify" => Some(MailPurpose::Verify),
            "change" => Some(MailPurpose::Change),
            "reset" => Some(MailPurpose::Reset),
            _ => None,
        }
    }
}

/// A token stored with a mail: its hash, never the token.
#[derive(Clone, Debug)]
pub struct NewMailToken {
    pub hash: TokenHashBytes,
    pub purpose: MailPurpose,
    pub new_email: Option<Email>,
    pub expires_at: DateTime<Utc>,
}

/// A rendered mail for the outbox. Its bodies carry a token's link: `Debug` leaves them out.
#[derive(Clone)]
pub struct OutgoingMail {
    pub id: Uuid,
    /// `verify`, `change`, `notice` or `reset`: what the admin view shows.
    pub kind: &'static str,
    pub recipient: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// A queued mail past this is not sent (its token has expired too).
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for OutgoingMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingMail")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("recipient", &self.recipient)
            .field("body", &"<redacted>")
            .finish()
    }
}

/// One action's mail: a token (if any), the mails and the audit events, in one
/// transaction.
#[derive(Debug)]
pub struct MailRequest {
    pub user_id: UserId,
    pub now: DateTime<Utc>,
    /// Every unspent token of the user with one of these purposes is spent first: a
    /// new verification mail supersedes the earlier ones.
    pub supersedes: Vec<MailPurpose>,
    pub token: Option<NewMailToken>,
    pub mails: Vec<OutgoingMail>,
    /// Recorded with `user_id` set to the request's user.
    pub audit: Vec<AuditEvent>,
}

/// How redeeming a verification or email-change token ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// The user as they are now (verified; with the new email for a change).
    Done { user: User, purpose: MailPurpose },
    /// The new address of an email-change token belongs to someone else now; the token
    /// stays unspent.
    EmailTaken,
    /// Unknown, spent, superseded, expired, of another purpose, or of a disabled user.
    Invalid,
}

/// A mail the sender claimed. `Debug` leaves the bodies out.
#[derive(Clone)]
pub struct DueMail {
    pub id: Uuid,
    pub user_id: Option<UserId>,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Including this one.
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl std::fmt::Debug for DueMail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DueMail")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("attempts", &self.attempts)
            .field("body", &"<redacted>")
            .finish()
    }
}

/// How one attempt to send a claimed mail ended.
#[derive(Debug, Clone)]
pub enum MailOutcome {
    Sent,
    /// A temporary failure: try again at `next_attempt_at`.
    Retry {
        next_attempt_at: DateTime<Utc>,
        error: String,
    },
    /// A permanent failure (5xx): never sent.
    Failed {
        error: String,
    },
}

/// The outbox at a glance, for metrics and `/readyz`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MailStats {
    /// Queued, not tried yet.
    pub queued: u64,
    /// Queued after at least one temporary failure.
    pub retrying: u64,
    pub sent: u64,
    pub failed: u64,
    pub expired: u64,
    /// When the oldest mail still queued was written.
    pub oldest_queued: Option<DateTime<Utc>>,
}

/// One mail to a user as the admin API shows it: status only, never a body or token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailDelivery {
    pub id: Uuid,
    pub kind: String,
    pub status: String,
    pub attempts: u32,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

pub trait MailStore {
    /// Writes `request`'s superseding, token, mails and audit events in one transaction,
    /// only while the user exists and is enabled; `false` (nothing written) otherwise.
    fn queue_mail(&self, request: MailRequest) -> Result<bool, StoreError>;

    /// Creates `new` and queues `request` (whose `user_id` is `new.id`) in one
    /// transaction: a signup and its verification mail. `EmailTaken` writes nothing.
    fn create_user_with_mail(
        &self,
        new: NewUser<'_>,
        request: MailRequest,
    ) -> Result<User, StoreError>;

    /// Redeems a verification or email-change token: spends it (one conditional
    /// UPDATE: of concurrent redemptions at most one wins) and applies it, with `audit`
    /// (its `user_id` filled in; `email_changed` for an email-change token), in one
    /// transaction. A token that is unknown, spent,
    /// expired at `now`, a reset token, or a disabled user's is `Invalid`.
    fn redeem_email_token(
        &self,
        hash: TokenHashBytes,
        now: DateTime<Utc>,
        audit: AuditEvent,
    ) -> Result<Redeemed, StoreError>;

    /// Redeems a reset token: spends it (of concurrent redemptions at most one wins),
    /// replaces the password hash, moves the user to the next password generation,
    /// marks the address verified, revokes every family (`password_reset`), spends
    /// every other reset token of the user and records `audit`, in one transaction.
    /// `None` (nothing written) when the token is not a live reset token of an enabled
    /// user.
    fn reset_password_with_token(
        &self,
        hash: TokenHashBytes,
        password_hash: &str,
        now: DateTime<Utc>,
        audit: AuditEvent,
    ) -> Result<Option<User>, StoreError>;

    /// An operator sets a user's password (`gatehouse users set-password`): replaces the
    /// hash, moves to the next password generation, revokes every family (`admin`),
    /// spends every outstanding reset token and records `audit`, in one transaction.
    /// `false` (nothing written) when the user does not exist.
    fn set_password_by_operator(
        &self,
        user: UserId,
        password_hash: &str,
        now: DateTime<Utc>,
        audit: AuditEvent,
    ) -> Result<bool, StoreError>;

    /// Spends every unspent token of `user` with `purpose` (a changed password spends
    /// the reset tokens); how many.
    fn spend_mail_tokens(
        &self,
        user: UserId,
        purpose: MailPurpose,
        now: DateTime<Utc>,
    ) -> Result<usize, StoreError>;

    /// Claims up to `limit` queued mails due at `now` and not expired, leasing each for
    /// `lease_secs` of the database's own clock: while the lease lasts, no other sender
    /// (another replica) claims it. On PostgreSQL the claim skips rows another claim
    /// holds locked (`FOR UPDATE SKIP LOCKED`), so concurrent senders never wait for or
    /// take each other's mails. Each claim counts one attempt.
    fn claim_due_mail(
        &self,
        now: DateTime<Utc>,
        lease_secs: i64,
        limit: u32,
    ) -> Result<Vec<DueMail>, StoreError>;

    /// Records how sending a claimed mail ended, and ends its lease; a sent or failed
    /// mail's bodies are blanked. With `audit` (in the same transaction) when given.
    fn finish_mail(
        &self,
        id: Uuid,
        outcome: MailOutcome,
        now: DateTime<Utc>,
        audit: Option<AuditEvent>,
    ) -> Result<(), StoreError>;

    /// Marks queued, unleased mails past their expiry `expired` (bodies blanked); their
    /// ids and users.
    fn expire_mail(&self, now: DateTime<Utc>) -> Result<Vec<(Uuid, Option<UserId>)>, StoreError>;

    fn mail_stats(&self) -> Result<MailStats, StoreError>;

    /// A user's newest mails, newest first.
    fn user_mail(&self, user: UserId, limit: u32) -> Result<Vec<MailDelivery>, StoreError>;

    /// Deletes finished mails (sent, failed, expired) older than `finished_before`, and
    /// tokens expired at `now`; how many rows went.
    fn prune_mail(
        &self,
        now: DateTime<Utc>,
        finished_before: DateTime<Utc>,
    ) -> Result<usize, StoreError>;
}
