//! The rules of the service: rotation, reuse, lockout, equal work for unknown emails.
//! Nothing here knows HTTP or SQL; time comes from the injected clock.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod caller;
pub mod clients;
pub mod introspection;
pub mod keystore;
pub mod lockout;
pub mod mail;
pub mod mfa;
pub mod passkeys;
pub mod policy;
pub mod rotation;
pub mod sessions;
pub mod tokens;

use std::borrow::Cow;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::crypto::keys::KeyRing;
use crate::crypto::keystore::KeyStore;
use crate::crypto::password::{HashError, PasswordHasher};
use crate::crypto::refresh::RefreshSecret;
use crate::metrics::Metrics;
use crate::storage::{Store, StoreError};

pub use self::policy::Policy;

/// Everything a request needs, built once at start and shared by every worker.
/// No globals: two apps with different keys can run in one process.
pub struct AppState {
    /// What the rules read: lifetimes, audience, lockout limits, key timing.
    pub policy: Policy,
    pub store: Arc<dyn Store>,
    keys: RwLock<Arc<KeyRing>>,
    /// Where the ring is kept (the keys directory, or the database), for reloads and
    /// the admin view of the stages.
    pub key_store: Arc<dyn KeyStore>,
    pub hasher: PasswordHasher,
    pub refresh_secret: RefreshSecret,
    pub clock: Arc<dyn Clock>,
    pub metrics: Metrics,
    /// Wakes this process's login attempts waiting for checks in flight.
    pub attempts: Arc<lockout::AttemptSignals>,
    /// Mail (#19), when `GATEHOUSE_SMTP_URL` is set; set by `startup` after `new`.
    pub mail: Option<Arc<mail::Mail>>,
    /// The WebAuthn relying party (#21), when `GATEHOUSE_WEBAUTHN_RP_ID` is set; set by
    /// `startup` after `new`.
    pub passkeys: Option<Arc<passkeys::RelyingParty>>,
}

impl AppState {
    pub fn new(
        policy: Policy,
        store: Arc<dyn Store>,
        keys: KeyRing,
        key_store: Arc<dyn KeyStore>,
        hasher: PasswordHasher,
        refresh_secret: RefreshSecret,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            store,
            keys: RwLock::new(Arc::new(keys)),
            key_store,
            hasher,
            refresh_secret,
            clock,
            metrics: Metrics::default(),
            attempts: Arc::default(),
            mail: None,
            passkeys: None,
            policy,
        }
    }

    /// The key ring in force now (a cheap pointer copy).
    pub fn keys(&self) -> Arc<KeyRing> {
        Arc::clone(&self.keys.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Swaps in a new key ring; requests already holding the old one finish with it.
    pub fn replace_keys(&self, keys: KeyRing) {
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Runs blocking storage work on the blocking pool, off the async executor.
    pub async fn db<T: Send + 'static>(
        &self,
        job: impl FnOnce(&dyn Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, ServiceError> {
        let store = Arc::clone(&self.store);
        tokio::task::spawn_blocking(move || job(store.as_ref()))
            .await
            .map_err(|e| ServiceError::internal_because("the storage task failed", e))?
            .map_err(ServiceError::from)
    }
}

/// Who is calling, as far as the request tells.
#[derive(Clone, Debug, Default)]
pub struct ClientMeta {
    pub ip: Option<String>,
    /// What per-client limits count `ip` under (an IPv6 client's /64), worked out by the
    /// layer that read the address, so that the service need not know about networks.
    pub ip_bucket: Option<String>,
    pub user_agent: Option<String>,
}

/// One failing input field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_owned(),
            message: message.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("email taken")]
    EmailTaken,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("too many attempts")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error("invalid refresh token")]
    InvalidRefreshToken,
    #[error("refresh token reused")]
    RefreshTokenReused,
    #[error("invalid access token")]
    InvalidToken,
    #[error("forbidden")]
    Forbidden,
    #[error("not found")]
    NotFound,
    /// The password was right; the login waits for a second factor (`mfa_token`).
    #[error("second factor required")]
    MfaRequired {
        mfa_token: String,
        methods: Vec<&'static str>,
    },
    #[error("invalid second-factor code")]
    InvalidMfaCode,
    #[error("invalid mfa_token")]
    InvalidMfaToken,
    #[error("mfa already enabled")]
    MfaAlreadyEnabled,
    #[error("mfa not enabled")]
    MfaNotEnabled,
    #[error("no pending enrolment")]
    NoPendingEnrolment,
    /// An admin endpoint, with `GATEHOUSE_ADMIN_MFA=required`, called through a session
    /// opened without a second factor.
    #[error("admin session without a second factor")]
    AdminMfaRequired,
    /// A mail token that is unknown, used, expired or superseded.
    #[error("invalid mail token")]
    InvalidMailToken,
    #[error("already verified")]
    AlreadyVerified,
    /// A WebAuthn `flow_id` that is unknown, used, expired, or made for another purpose.
    #[error("invalid webauthn flow")]
    InvalidFlow,
    /// A passkey response refused at login (401).
    #[error("invalid passkey")]
    InvalidPasskey,
    /// A registration response refused (400): the credential is not registered.
    #[error("passkey refused at registration")]
    PasskeyRejected,
    #[error("passkey already registered")]
    PasskeyExists,
    /// A part the answer needs cannot serve now (the database, the hashing queue): 503,
    /// to retry. `source` is the cause, for the log only.
    #[error("unavailable: {reason}")]
    Unavailable {
        reason: Cow<'static, str>,
        #[source]
        source: Option<Cause>,
    },
    /// A bug or a broken invariant: 500. `source` is the cause, for the log only.
    #[error("internal error: {reason}")]
    Internal {
        reason: Cow<'static, str>,
        #[source]
        source: Option<Cause>,
    },
}

/// The cause an `Unavailable` or `Internal` carries to the log.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

impl ServiceError {
    pub fn unavailable(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Unavailable {
            reason: reason.into(),
            source: None,
        }
    }

    pub fn internal(reason: impl Into<Cow<'static, str>>) -> Self {
        Self::Internal {
            reason: reason.into(),
            source: None,
        }
    }

    pub fn internal_because(
        reason: impl Into<Cow<'static, str>>,
        source: impl Into<Cause>,
    ) -> Self {
        Self::Internal {
            reason: reason.into(),
            source: Some(source.into()),
        }
    }
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::EmailTaken => ServiceError::EmailTaken,
            e @ StoreError::Unavailable { .. } => ServiceError::Unavailable {
                reason: "storage".into(),
                source: Some(Box::new(e)),
            },
            e @ StoreError::Internal { .. } => ServiceError::internal_because("storage", e),
        }
    }
}

impl From<HashError> for ServiceError {
    fn from(e: HashError) -> Self {
        match e {
            HashError::Busy | HashError::TooLate => ServiceError::Unavailable {
                reason: "password hashing".into(),
                source: Some(Box::new(e)),
            },
            other => ServiceError::internal_because("password hashing", other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check refused for waiting too long is an outage to retry (503), like a full
    /// queue: never a verdict on the password, never a 500.
    #[test]
    fn a_check_too_late_for_its_lease_is_unavailable_not_a_verdict() {
        for e in [HashError::TooLate, HashError::Busy] {
            assert!(matches!(
                ServiceError::from(e),
                ServiceError::Unavailable { .. }
            ));
        }
    }
}
