//! The background sender: claims due mail from the outbox, sends it over SMTP and
//! records how it went. Runs in every replica; the store's claim (a lease, and on
//! PostgreSQL `FOR UPDATE SKIP LOCKED`) hands each mail to one of them at a time.
//!
//! A temporary failure (no connection, a timeout, a 4xx reply, a connection dropped
//! mid-conversation) is retried with exponential backoff and jitter until the mail
//! expires with its token; a permanent one (a 5xx reply, an address lettre refuses) is
//! final. SMTP being down never stops start-up nor any request: only this task waits.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::header::{Header, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::Mail;
use super::settings::{SmtpTls, SmtpUrl};
use crate::crypto::random_bytes;
use crate::domain::AuditKind;
use crate::service::AppState;
use crate::storage::AuditEvent;
use crate::storage::mail::{DueMail, MailOutcome};

/// Mails claimed per round.
const BATCH: u32 = 16;
/// The longest wait between two attempts at one mail.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// `Auto-Submitted: auto-generated` (RFC 3834): no auto-replies to these mails.
#[derive(Clone)]
struct AutoSubmitted;

impl Header for AutoSubmitted {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Auto-Submitted")
    }

    fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(Self)
    }

    fn display(&self) -> HeaderValue {
        HeaderValue::new(Self::name(), "auto-generated".to_owned())
    }
}

/// How an attempt ended, before it is stored.
enum Attempt {
    Sent,
    Temporary(String),
    Permanent(String),
}

pub struct Sender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// The right-hand side of Message-IDs.
    domain: String,
}

impl Sender {
    pub fn new(mail: &Mail) -> anyhow::Result<Self> {
        let url = mail
            .settings
            .smtp_url
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("GATEHOUSE_SMTP_URL is unset"))?;
        let from: Mailbox = mail
            .settings
            .from
            .parse()
            .map_err(|e| anyhow::anyhow!("GATEHOUSE_MAIL_FROM: {e}"))?;
        let domain = from.email.domain().to_owned();
        Ok(Self {
            transport: transport(url, mail.settings.smtp_timeout)?,
            from,
            domain,
        })
    }

    async fn send(&self, due: &DueMail) -> Attempt {
        let to: Mailbox = match due.recipient.parse() {
            Ok(to) => to,
            Err(_) => return Attempt::Permanent("the recipient is not a mail address".into()),
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(due.subject.clone())
            .message_id(Some(format!("<{}@{}>", due.id, self.domain)))
            .date_now()
            .header(AutoSubmitted)
            .multipart(MultiPart::alternative_plain_html(
                due.text.clone(),
                due.html.clone(),
            ));
        let message = match message {
            Ok(m) => m,
            Err(e) => return Attempt::Permanent(format!("cannot build the mail: {e}")),
        };
        match self.transport.send(message).await {
            Ok(_) => Attempt::Sent,
            // The reply's text is the server's: kept (it never holds our token, which
            // travels only in DATA), cut short.
            Err(e) if e.is_permanent() => Attempt::Permanent(short(&e.to_string())),
            Err(e) => Attempt::Temporary(short(&e.to_string())),
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(300).collect()
}

fn transport(
    url: &SmtpUrl,
    timeout: Duration,
) -> anyhow::Result<AsyncSmtpTransport<Tokio1Executor>> {
    let tls = match url.tls {
        SmtpTls::None => Tls::None,
        SmtpTls::StartTls => Tls::Required(TlsParameters::new(url.host.clone())?),
        SmtpTls::Implicit => Tls::Wrapper(TlsParameters::new(url.host.clone())?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(url.host.clone())
        .port(url.port)
        .tls(tls)
        .timeout(Some(timeout));
    if let Some(user) = &url.user {
        builder = builder.credentials(Credentials::new(
            user.clone(),
            url.password.clone().unwrap_or_default(),
        ));
    }
    Ok(builder.build())
}

/// The wait before attempt `attempts + 1`: `base` doubled per attempt made, at most
/// [`MAX_BACKOFF`], then scaled into [50 %, 100 %] at random so that replicas retrying
/// after one outage spread out.
pub fn backoff(base: Duration, attempts: u32, unit: f64) -> Duration {
    let doubled = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(16));
    doubled
        .min(MAX_BACKOFF)
        .mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

fn jitter_unit() -> f64 {
    f64::from(u16::from_le_bytes(random_bytes::<2>())) / f64::from(u16::MAX)
}

/// Sends mail until the process ends.
pub async fn run(state: Arc<AppState>, mail: Arc<Mail>) {
    let sender = match Sender::new(&mail) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "mail sender cannot start; mail stays queued");
            return;
        }
    };
    let lease_secs = (mail.settings.smtp_timeout.as_secs() as i64) * 2 + 30;
    let mut pruned_at = std::time::Instant::now();
    loop {
        if pruned_at.elapsed() >= PRUNE_EVERY {
            pruned_at = std::time::Instant::now();
            prune(&state).await;
        }
        let claimed = match round(&state, &mail, &sender, lease_secs).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %crate::domain::error_chain(&e), "mail sender round failed");
                0
            }
        };
        if claimed < BATCH as usize {
            let _ = tokio::time::timeout(mail.settings.poll_interval, mail.queued.notified()).await;
        }
    }
}

/// How often finished mail and expired tokens are pruned, and how long a finished mail
/// stays for the admin view.
const PRUNE_EVERY: Duration = Duration::from_secs(600);
const KEEP_FINISHED: chrono::Duration = chrono::Duration::days(7);

async fn prune(state: &AppState) {
    let now = state.now();
    match state
        .db(move |s| s.prune_mail(now, now - KEEP_FINISHED))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(rows = n, "pruned finished mail and expired mail tokens"),
        Err(e) => tracing::warn!(error = %crate::domain::error_chain(&e), "mail pruning failed"),
    }
}

/// One round: expire what is too old, claim what is due, send it. How many were claimed.
async fn round(
    state: &AppState,
    mail: &Mail,
    sender: &Sender,
    lease_secs: i64,
) -> Result<usize, crate::service::ServiceError> {
    let now = state.now();
    for (id, user) in state.db(move |s| s.expire_mail(now)).await? {
        state.metrics.mail("expired");
        state
            .audit(AuditEvent {
                user_id: user,
                detail: Some(format!("mail={id} expired before it could be sent")),
                ..AuditEvent::new(now, AuditKind::MailFailed, "expired")
            })
            .await;
    }
    let due = state
        .db(move |s| s.claim_due_mail(now, lease_secs, BATCH))
        .await?;
    let claimed = due.len();
    for m in due {
        let attempt = sender.send(&m).await;
        finish(state, mail, &m, attempt).await?;
    }
    Ok(claimed)
}

async fn finish(
    state: &AppState,
    mail: &Mail,
    m: &DueMail,
    attempt: Attempt,
) -> Result<(), crate::service::ServiceError> {
    let now = state.now();
    let event = |kind, outcome, detail: String| AuditEvent {
        user_id: m.user_id,
        detail: Some(detail),
        ..AuditEvent::new(now, kind, outcome)
    };
    mail.record_smtp(match attempt {
        Attempt::Temporary(_) => super::SmtpState::Failing,
        Attempt::Sent | Attempt::Permanent(_) => super::SmtpState::Up,
    });
    let (outcome, audit) = match attempt {
        Attempt::Sent => {
            state.metrics.mail("sent");
            (
                MailOutcome::Sent,
                Some(event(
                    AuditKind::MailSent,
                    "ok",
                    format!("mail={} kind={} attempts={}", m.id, m.kind, m.attempts),
                )),
            )
        }
        Attempt::Permanent(error) => {
            state.metrics.mail("failed");
            tracing::warn!(mail = %m.id, kind = %m.kind, error = %error, "mail refused for good");
            (
                MailOutcome::Failed {
                    error: error.clone(),
                },
                Some(event(
                    AuditKind::MailFailed,
                    "rejected",
                    format!("mail={} kind={} error={error}", m.id, m.kind),
                )),
            )
        }
        Attempt::Temporary(error) => {
            state.metrics.mail("retrying");
            let wait = backoff(mail.settings.retry_base, m.attempts, jitter_unit());
            let next: DateTime<Utc> =
                now + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::MAX);
            tracing::info!(
                mail = %m.id,
                attempts = m.attempts,
                retry_in_secs = wait.as_secs(),
                error = %error,
                "mail not sent yet; will retry"
            );
            (
                MailOutcome::Retry {
                    next_attempt_at: next,
                    error,
                },
                None,
            )
        }
    };
    let id = m.id;
    state
        .db(move |s| s.finish_mail(id, outcome, now, audit))
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_an_hour_with_jitter_in_the_upper_half() {
        let base = Duration::from_secs(30);
        assert_eq!(backoff(base, 1, 1.0), Duration::from_secs(30));
        assert_eq!(backoff(base, 2, 1.0), Duration::from_secs(60));
        assert_eq!(backoff(base, 3, 0.0), Duration::from_secs(60));
        assert_eq!(backoff(base, 40, 1.0), MAX_BACKOFF);
    }
}
