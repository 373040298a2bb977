//! Mail (#19): verified addresses, password reset and email change.
//!
//! Every mail is written to the outbox in the transaction of the action that causes it,
//! and sent by [`sender`] in the background: no answer here waits for SMTP. Tokens are
//! 256 bits from the CSPRNG, URL-safe, and stored as SHA-256 hashes only; they appear
//! in the mail's link and nowhere else (never a log, an audit event or an error).

pub mod content;
pub mod sender;
pub mod settings;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use self::content::{Letter, link, render};
use self::settings::MailSettings;
use super::audit::event;
use super::caller::Caller;
use super::{AppState, ClientMeta, ServiceError};
use crate::crypto::{b64url, b64url_decode, random_bytes, sha256};
use crate::domain::{AuditKind, Email, NewPassword, Role, User, UserId};
use crate::storage::mail::{MailPurpose, MailRequest, NewMailToken, OutgoingMail, Redeemed};
use crate::storage::{AuditEvent, NewUser, TokenHashBytes};

/// Mail as the service runs it: the settings and the sender's wake-up call.
pub struct Mail {
    pub settings: MailSettings,
    /// How mail names the service.
    pub service_name: String,
    /// Wakes this process's sender when a request queued mail.
    pub queued: tokio::sync::Notify,
    /// How this process's last conversation with the SMTP server went, for `/readyz`.
    smtp: std::sync::atomic::AtomicU8,
}

/// The SMTP server as this process last found it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpState {
    /// Nothing sent yet.
    Unknown,
    /// The last mail was accepted (or refused for good, which is the mail's fault).
    Up,
    /// The last attempt failed for now: the server is down, busy or cut us off.
    Failing,
}

impl SmtpState {
    pub fn as_str(self) -> &'static str {
        match self {
            SmtpState::Unknown => "unknown",
            SmtpState::Up => "up",
            SmtpState::Failing => "failing",
        }
    }
}

impl Mail {
    /// `None` when `GATEHOUSE_SMTP_URL` is unset: no mail at all.
    pub fn new(settings: &MailSettings, issuer: &str) -> Option<Arc<Self>> {
        settings.smtp_url.as_ref()?;
        let service_name = if settings.service_name.is_empty() {
            issuer_host(issuer).to_owned()
        } else {
            settings.service_name.clone()
        };
        Some(Arc::new(Self {
            settings: settings.clone(),
            service_name,
            queued: tokio::sync::Notify::new(),
            smtp: std::sync::atomic::AtomicU8::new(0),
        }))
    }

    pub fn smtp_state(&self) -> SmtpState {
        match self.smtp.load(std::sync::atomic::Ordering::Relaxed) {
            1 => SmtpState::Up,
            2 => SmtpState::Failing,
            _ => SmtpState::Unknown,
        }
    }

    fn record_smtp(&self, state: SmtpState) {
        let v = match state {
            SmtpState::Unknown => 0,
            SmtpState::Up => 1,
            SmtpState::Failing => 2,
        };
        self.smtp.store(v, std::sync::atomic::Ordering::Relaxed);
    }

    fn mail(&self, to: &Email, letter: &Letter<'_>, expires_at: DateTime<Utc>) -> OutgoingMail {
        let rendered = render(&self.service_name, letter);
        OutgoingMail {
            id: Uuid::new_v4(),
            kind: letter.kind(),
            recipient: to.as_str().to_owned(),
            subject: rendered.subject,
            text: rendered.text,
            html: rendered.html,
            expires_at,
        }
    }

    fn ttl(&self, purpose: MailPurpose) -> chrono::Duration {
        let ttl = match purpose {
            MailPurpose::Reset => self.settings.reset_ttl,
            MailPurpose::Verify | MailPurpose::Change => self.settings.verify_ttl,
        };
        chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX)
    }
}

/// The host of an `http(s)://host[:port]/…` issuer.
fn issuer_host(issuer: &str) -> &str {
    let rest = issuer.split_once("://").map_or(issuer, |(_, r)| r);
    let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    host.rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(h, _)| h)
}

/// A new mail token and its hash.
fn new_token() -> (String, TokenHashBytes) {
    let token = b64url(&random_bytes::<32>());
    let hash = sha256(token.as_bytes());
    (token, hash)
}

/// The hash of a presented token; `None` for one that no token of ours could be (so it
/// costs no database round trip).
fn presented_hash(raw: &str) -> Option<TokenHashBytes> {
    let bytes = b64url_decode(raw)?;
    (bytes.len() == 32).then(|| sha256(raw.as_bytes()))
}

fn enabled(state: &AppState) -> Result<&Arc<Mail>, ServiceError> {
    state.mail.as_ref().ok_or(ServiceError::NotFound)
}

fn queued_event(state: &AppState, meta: &ClientMeta, kind: &'static str) -> AuditEvent {
    AuditEvent {
        detail: Some(format!("kind={kind}")),
        ..event(state, AuditKind::MailQueued, None, meta, "ok")
    }
}

/// Signup with mail on: the user and their verification mail in one transaction.
pub async fn signup_user(
    state: &AppState,
    mail: &Arc<Mail>,
    email: Email,
    password: NewPassword,
) -> Result<User, ServiceError> {
    let hash = state.hasher.hash(password.expose().to_owned()).await?;
    let now = state.now();
    let id = UserId::random();
    let (token, token_hash) = new_token();
    let expires_at = now + mail.ttl(MailPurpose::Verify);
    let letter_link = link(&mail.settings.verify_url, &token);
    let outgoing = mail.mail(&email, &Letter::Verify { link: &letter_link }, expires_at);
    let request = MailRequest {
        user_id: id,
        now,
        supersedes: Vec::new(),
        token: Some(NewMailToken {
            hash: token_hash,
            purpose: MailPurpose::Verify,
            new_email: None,
            expires_at,
        }),
        mails: vec![outgoing],
        audit: vec![queued_event(state, &ClientMeta::default(), "verify")],
    };
    let user = state
        .db(move |s| {
            s.create_user_with_mail(
                NewUser {
                    id,
                    email: &email,
                    password_hash: &hash,
                    role: Role::User,
                    now,
                },
                request,
            )
        })
        .await?;
    mail.queued.notify_one();
    state.metrics.mail("queued");
    Ok(user)
}

/// `POST /v1/me/email/verification`: a new verification mail; earlier ones stop working.
pub async fn resend_verification(
    state: &AppState,
    caller: &Caller,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    let mail = enabled(state)?;
    if caller.user.email_verified {
        return Err(ServiceError::AlreadyVerified);
    }
    let now = state.now();
    let (token, hash) = new_token();
    let expires_at = now + mail.ttl(MailPurpose::Verify);
    let letter_link = link(&mail.settings.verify_url, &token);
    let request = MailRequest {
        user_id: caller.user.id,
        now,
        supersedes: vec![MailPurpose::Verify],
        token: Some(NewMailToken {
            hash,
            purpose: MailPurpose::Verify,
            new_email: None,
            expires_at,
        }),
        mails: vec![mail.mail(
            &caller.user.email,
            &Letter::Verify { link: &letter_link },
            expires_at,
        )],
        audit: vec![queued_event(state, meta, "verify")],
    };
    queue(state, mail, request).await?;
    Ok(())
}

async fn queue(state: &AppState, mail: &Mail, request: MailRequest) -> Result<bool, ServiceError> {
    let queued = state.db(move |s| s.queue_mail(request)).await?;
    if queued {
        mail.queued.notify_one();
        state.metrics.mail("queued");
    }
    Ok(queued)
}

/// `POST /v1/password/forgot`. Answers at once, the same for every address: the lookup
/// and the outbox write run after the answer, so neither the status, the body nor the
/// time of the answer depends on whether the address is known, unknown or disabled.
pub async fn forgot(
    state: Arc<AppState>,
    email: Email,
    meta: ClientMeta,
) -> Result<(), ServiceError> {
    enabled(&state)?;
    tokio::spawn(async move {
        if let Err(e) = queue_reset(&state, &email, &meta).await {
            tracing::error!(error = %crate::domain::error_chain(&e), "could not queue a reset mail");
        }
    });
    Ok(())
}

/// A reset mail to `email`, if it names a known, enabled user: `false` when not.
pub async fn queue_reset(
    state: &AppState,
    email: &Email,
    meta: &ClientMeta,
) -> Result<bool, ServiceError> {
    let mail = enabled(state)?;
    let lookup = email.clone();
    let Some(account) = state.db(move |s| s.account_by_email(&lookup)).await? else {
        return Ok(false);
    };
    if account.user.disabled {
        return Ok(false);
    }
    let now = state.now();
    let (token, hash) = new_token();
    let expires_at = now + mail.ttl(MailPurpose::Reset);
    let letter_link = link(&mail.settings.reset_url, &token);
    let minutes = mail.settings.reset_ttl.as_secs() / 60;
    let request = MailRequest {
        user_id: account.user.id,
        now,
        supersedes: Vec::new(),
        token: Some(NewMailToken {
            hash,
            purpose: MailPurpose::Reset,
            new_email: None,
            expires_at,
        }),
        mails: vec![mail.mail(
            &account.user.email,
            &Letter::Reset {
                link: &letter_link,
                minutes,
            },
            expires_at,
        )],
        audit: vec![
            event(state, AuditKind::PasswordResetRequested, None, meta, "ok"),
            queued_event(state, meta, "reset"),
        ],
    };
    queue(state, mail, request).await
}

/// `POST /v1/password/reset`: never signs in.
pub async fn reset(
    state: &AppState,
    token: &str,
    new_password: NewPassword,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    enabled(state)?;
    // Hashed before the claim, so that the claim and the new password are one
    // transaction; an unknown token costs the same Argon2 (and is rate-limited).
    let password_hash = state.hasher.hash(new_password.expose().to_owned()).await?;
    let Some(hash) = presented_hash(token) else {
        return Err(ServiceError::InvalidMailToken);
    };
    let now = state.now();
    let audit = event(state, AuditKind::PasswordReset, None, meta, "ok");
    let reset = state
        .db(move |s| s.reset_password_with_token(hash, &password_hash, now, audit))
        .await?;
    let user = reset.ok_or(ServiceError::InvalidMailToken)?;
    // A login waiting for its second factor proved the old password: it ends here too.
    crate::service::mfa::void_pending_logins(state, user.id).await
}

/// `POST /v1/email/verify`: the user as they are now.
pub async fn verify(
    state: &AppState,
    token: &str,
    meta: &ClientMeta,
) -> Result<User, ServiceError> {
    enabled(state)?;
    let Some(hash) = presented_hash(token) else {
        return Err(ServiceError::InvalidMailToken);
    };
    let now = state.now();
    let audit = event(state, AuditKind::EmailVerified, None, meta, "ok");
    match state
        .db(move |s| s.redeem_email_token(hash, now, audit))
        .await?
    {
        Redeemed::Done { user, .. } => Ok(user),
        Redeemed::EmailTaken => Err(ServiceError::EmailTaken),
        Redeemed::Invalid => Err(ServiceError::InvalidMailToken),
    }
}

/// `POST /v1/me/email`: a confirmation to the new address, a notice to the old one.
pub async fn change_email(
    state: &AppState,
    caller: Caller,
    new_email: Email,
    password: String,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    let mail = enabled(state)?;
    super::accounts::confirm_password(state, &caller, password, meta).await?;
    let lookup = new_email.clone();
    if new_email == caller.user.email
        || state
            .db(move |s| s.account_by_email(&lookup))
            .await?
            .is_some()
    {
        return Err(ServiceError::EmailTaken);
    }
    let now = state.now();
    let (token, hash) = new_token();
    let expires_at = now + mail.ttl(MailPurpose::Change);
    let letter_link = link(&mail.settings.verify_url, &token);
    let request = MailRequest {
        user_id: caller.user.id,
        now,
        supersedes: vec![MailPurpose::Change],
        token: Some(NewMailToken {
            hash,
            purpose: MailPurpose::Change,
            new_email: Some(new_email.clone()),
            expires_at,
        }),
        mails: vec![
            mail.mail(
                &new_email,
                &Letter::Change {
                    link: &letter_link,
                    new_email: new_email.as_str(),
                },
                expires_at,
            ),
            mail.mail(
                &caller.user.email,
                &Letter::ChangeNotice {
                    new_email: new_email.as_str(),
                },
                expires_at,
            ),
        ],
        audit: vec![
            queued_event(state, meta, "change"),
            queued_event(state, meta, "notice"),
        ],
    };
    queue(state, mail, request).await?;
    Ok(())
}

/// An operator sets a user's password (`gatehouse users set-password`): every session
/// ends and every reset token is spent. Works with mail off too.
pub async fn set_password_by_operator(
    state: &AppState,
    user: UserId,
    password: NewPassword,
) -> Result<(), ServiceError> {
    let hash = state.hasher.hash(password.expose().to_owned()).await?;
    let now = state.now();
    let audit = AuditEvent {
        detail: Some("by=operator".into()),
        ..AuditEvent::new(now, AuditKind::PasswordChanged, "ok")
    };
    if state
        .db(move |s| s.set_password_by_operator(user, &hash, now, audit))
        .await?
    {
        crate::service::mfa::void_pending_logins(state, user).await
    } else {
        Err(ServiceError::NotFound)
    }
}

/// An admin (console or CLI) sends a user a reset mail: `NotFound` for no such user.
pub async fn admin_send_reset(
    state: &AppState,
    user: UserId,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    enabled(state)?;
    let account = state
        .db(move |s| s.account_by_id(user))
        .await?
        .ok_or(ServiceError::NotFound)?;
    queue_reset(state, &account.user.email, meta).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_is_named_by_the_issuer_host() {
        assert_eq!(issuer_host("https://auth.example.com"), "auth.example.com");
        assert_eq!(issuer_host("http://127.0.0.1:8080/x"), "127.0.0.1");
    }

    #[test]
    fn a_token_is_256_bits_url_safe_and_hashed() {
        let (token, hash) = new_token();
        assert_eq!(token.len(), 43);
        assert!(
            token
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(presented_hash(&token), Some(hash));
        assert_eq!(presented_hash("short"), None);
    }
}
