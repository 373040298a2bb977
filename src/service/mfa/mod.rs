//! Second factors: TOTP enrolment, the login's second step, recovery codes, and turning
//! MFA off (by the user, or an admin's reset).
//!
//! A code is accepted once: the TOTP step it matched is claimed in the store (a
//! conditional UPDATE), a recovery code is deleted; the row count decides, on one
//! process or ten. Wrong codes count per user in a lockout counter of their own (see
//! `lockout::begin_mfa_check`), and per `mfa_token` (five, then the token is spent).

pub mod settings;

use chrono::{DateTime, Utc};

pub use self::settings::MfaSettings;
use super::audit::event;
use super::caller::Caller;
use super::tokens::{self, TokenPair};
use super::{AppState, ClientMeta, ServiceError, accounts, lockout, passkeys};
use crate::crypto::sealing::KeyEncryptionKey;
use crate::crypto::totp::{
    RECOVERY_CODES, RecoveryCode, TotpSecret, looks_like_totp, recovery_code_hash,
};
use crate::crypto::{b64url, random_bytes, sha256};
use crate::domain::{Amr, AuditKind, RevokeReason, User, UserId};
use crate::storage::{
    Account, AuditEvent, NewMfaToken, Store, StoreError, StoredMfaToken, TokenHashBytes,
};

/// Wrong codes one `mfa_token` may take; the fifth spends it.
pub const TOKEN_MAX_FAILURES: u32 = 5;
/// 256 bits, base64url: the same shape as a refresh token.
const MFA_TOKEN_BYTES: usize = 32;
const MFA_TOKEN_CHARS: usize = 43;
/// What the TOTP sealing key is derived for (see `sealer`).
const SEALING_PURPOSE: &str = "mfa totp secret sealing";

/// What an enrolment shows once: the secret and the URI an app reads.
pub struct Enrolment {
    pub secret: String,
    pub otpauth_uri: String,
}

impl std::fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Enrolment(<redacted>)")
    }
}

/// The second factors a user can answer a challenge with: TOTP and its recovery codes
/// while TOTP is on, `webauthn` while they have a passkey (and passkeys are on).
async fn methods(state: &AppState, user: &User) -> Result<Vec<&'static str>, ServiceError> {
    let mut methods = Vec::with_capacity(3);
    if totp_enabled(state, user.id).await? {
        methods.extend(["totp", "recovery_code"]);
    }
    if passkeys::usable_by(state, user.id).await? {
        methods.push("webauthn");
    }
    Ok(methods)
}

/// TOTP is on (confirmed). `User::mfa_enabled` is wider: it counts passkeys too.
async fn totp_enabled(state: &AppState, user: UserId) -> Result<bool, ServiceError> {
    let totp = state.db(move |s| s.totp_of(user)).await?;
    Ok(totp.is_some_and(|t| t.enabled))
}

/// The AES-256-GCM key that seals TOTP secrets: derived from the refresh secret, which
/// every replica shares (in the database, sealed under the key-encryption key, when the
/// key ring lives there; in the keys directory otherwise). A database dump alone opens
/// no TOTP secret.
fn sealer(state: &AppState) -> KeyEncryptionKey {
    KeyEncryptionKey::from_bytes(&state.refresh_secret.derive_key(SEALING_PURPOSE))
}

/// Associated data naming the user: a sealed secret copied to another user's row does
/// not open.
fn seal_label(user: UserId) -> String {
    format!("mfa-totp:{user}")
}

fn open_secret(sealer: &KeyEncryptionKey, user: UserId, sealed: &[u8]) -> Option<TotpSecret> {
    sealer
        .open(&seal_label(user), sealed)
        .ok()
        .and_then(TotpSecret::from_bytes)
}

/// The label an app shows beside the account: the issuer's host name.
fn issuer_label(issuer: &str) -> &str {
    let rest = issuer.split_once("://").map_or(issuer, |(_, r)| r);
    let host = rest.split(['/', ':']).next().unwrap_or_default();
    if host.is_empty() { "gatehouse" } else { host }
}

/// The lockout key of one `mfa_token`: a prefix of its hash (96 bits name it well enough).
fn token_key(hash: &TokenHashBytes) -> String {
    format!("mfa:token:{}", b64url(&hash[..12]))
}

/// Wrong answers stored against one `mfa_token` (its lockout key) in the window.
async fn token_failures(state: &AppState, key: &str) -> Result<u32, ServiceError> {
    let (key, now) = (key.to_owned(), state.now());
    let window = state.policy.lockout.window.as_secs() as i64;
    let counts = state
        .db(move |s| s.login_failures(std::slice::from_ref(&key), window, now))
        .await?;
    Ok(counts.first().map_or(0, |c| c.failures))
}

/// Which factor a right code was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Used {
    Totp,
    RecoveryCode,
    /// A passkey; `synced` when backup-eligible.
    Passkey {
        synced: bool,
    },
}

impl Used {
    /// The `amr` of a password login finished with this factor.
    fn amr(self) -> Amr {
        match self {
            Used::Totp | Used::RecoveryCode => Amr::PwdOtp,
            Used::Passkey { synced } => Amr::passkey(synced, true),
        }
    }
}

/// How a login's second step answers its challenge.
pub enum Answer {
    /// A TOTP code or a recovery code.
    Code(String),
    /// A passkey's response to the flow opened by `webauthn_options`.
    Passkey {
        flow_id: String,
        credential: serde_json::Value,
    },
}

/// Checks `code` for the enabled MFA of `user` and spends it: claims the TOTP step it
/// matched, or deletes the recovery code. `None` for a wrong, used or replayed code.
fn spend_code(
    store: &dyn Store,
    sealer: &KeyEncryptionKey,
    user: UserId,
    code: &str,
    now: DateTime<Utc>,
) -> Result<Option<Used>, StoreError> {
    let code = code.trim();
    if looks_like_totp(code) {
        let Some(stored) = store.totp_of(user)?.filter(|t| t.enabled) else {
            return Ok(None);
        };
        let secret = open_secret(sealer, user, &stored.sealed_secret)
            .ok_or_else(|| StoreError::internal("a stored TOTP secret does not open"))?;
        let Some(step) = secret.matching_step(code, now.timestamp()) else {
            return Ok(None);
        };
        return Ok(store.claim_totp_step(user, step)?.then_some(Used::Totp));
    }
    match recovery_code_hash(code) {
        Some(hash) => Ok(store
            .use_recovery_code(user, &hash)?
            .then_some(Used::RecoveryCode)),
        None => Ok(None),
    }
}

/// Spends `code` for a signed-in user under the per-user limit; `InvalidMfaCode` when
/// it is wrong (counted), `TooManyAttempts` past the limit.
async fn check_code(
    state: &AppState,
    user: &User,
    code: String,
    meta: &ClientMeta,
) -> Result<Used, ServiceError> {
    let attempt = lockout::begin_mfa_check(state, user, None, meta).await?;
    let (sealer, id, now) = (sealer(state), user.id, state.now());
    let used = state
        .db(move |s| spend_code(s, &sealer, id, &code, now))
        .await?;
    match used {
        Some(used) => {
            attempt.succeeded(state).await?;
            if used == Used::RecoveryCode {
                state
                    .audit(event(
                        state,
                        AuditKind::MfaRecoveryCodeUsed,
                        Some(user),
                        meta,
                        "ok",
                    ))
                    .await;
            }
            Ok(used)
        }
        None => {
            attempt.failed(state).await?;
            state
                .audit(event(
                    state,
                    AuditKind::MfaFailed,
                    Some(user),
                    meta,
                    "wrong_code",
                ))
                .await;
            Err(ServiceError::InvalidMfaCode)
        }
    }
}

fn new_recovery_codes() -> (Vec<String>, Vec<TokenHashBytes>) {
    (0..RECOVERY_CODES)
        .map(|_| {
            let code = RecoveryCode::generate();
            (code.expose().to_owned(), code.hash())
        })
        .unzip()
}

/// `POST /v1/me/mfa/totp`: a new pending secret (replacing a pending one).
pub async fn start_enrolment(
    state: &AppState,
    caller: Caller,
    password: String,
    meta: &ClientMeta,
) -> Result<Enrolment, ServiceError> {
    if totp_enabled(state, caller.user.id).await? {
        return Err(ServiceError::MfaAlreadyEnabled);
    }
    accounts::confirm_password(state, &caller, password, meta).await?;
    let user = caller.user;
    let secret = TotpSecret::generate();
    let sealed = sealer(state)
        .seal(&seal_label(user.id), secret.expose())
        .map_err(|e| ServiceError::internal_because("sealing a TOTP secret", e))?;
    let (id, now) = (user.id, state.now());
    if !state
        .db(move |s| s.put_pending_totp(id, &sealed, now))
        .await?
    {
        return Err(ServiceError::MfaAlreadyEnabled);
    }
    state
        .audit(event(
            state,
            AuditKind::MfaEnrolmentStarted,
            Some(&user),
            meta,
            "ok",
        ))
        .await;
    Ok(Enrolment {
        otpauth_uri: secret.otpauth_uri(
            issuer_label(&state.policy.tokens.issuer),
            user.email.as_str(),
        ),
        secret: secret.base32(),
    })
}

/// `POST /v1/me/mfa/totp/confirm`: the first code turns MFA on (its step is claimed,
/// so it cannot log in afterwards) and the first recovery codes are shown.
pub async fn confirm_enrolment(
    state: &AppState,
    caller: Caller,
    code: String,
    meta: &ClientMeta,
) -> Result<Vec<String>, ServiceError> {
    let user = caller.user;
    let id = user.id;
    let pending = state
        .db(move |s| s.totp_of(id))
        .await?
        .filter(|t| !t.enabled)
        .ok_or(ServiceError::NoPendingEnrolment)?;
    let attempt = lockout::begin_mfa_check(state, &user, None, meta).await?;
    let secret = open_secret(&sealer(state), id, &pending.sealed_secret)
        .ok_or_else(|| ServiceError::internal("a stored TOTP secret does not open"))?;
    let now = state.now();
    let step = secret.matching_step(code.trim(), now.timestamp());
    let (shown, hashes) = new_recovery_codes();
    let enabled = match step {
        Some(step) => {
            let sealed = pending.sealed_secret;
            state
                .db(move |s| s.enable_totp(id, &sealed, step, &hashes, now))
                .await?
        }
        None => false,
    };
    if !enabled {
        attempt.failed(state).await?;
        state
            .audit(event(
                state,
                AuditKind::MfaFailed,
                Some(&user),
                meta,
                "wrong_code",
            ))
            .await;
        return Err(ServiceError::InvalidMfaCode);
    }
    attempt.succeeded(state).await?;
    state
        .audit(event(
            state,
            AuditKind::MfaEnabled,
            Some(&user),
            meta,
            "totp",
        ))
        .await;
    Ok(shown)
}

/// `POST /v1/me/mfa/recovery-codes`: a new set; the old one stops working.
pub async fn regenerate_recovery_codes(
    state: &AppState,
    caller: Caller,
    code: String,
    meta: &ClientMeta,
) -> Result<Vec<String>, ServiceError> {
    let user = caller.user;
    if !totp_enabled(state, user.id).await? {
        return Err(ServiceError::MfaNotEnabled);
    }
    check_code(state, &user, code, meta).await?;
    let (shown, hashes) = new_recovery_codes();
    let (id, now) = (user.id, state.now());
    if !state
        .db(move |s| s.replace_recovery_codes(id, &hashes, now))
        .await?
    {
        return Err(ServiceError::MfaNotEnabled);
    }
    state
        .audit(event(
            state,
            AuditKind::MfaRecoveryCodesRegenerated,
            Some(&user),
            meta,
            "ok",
        ))
        .await;
    Ok(shown)
}

/// `DELETE /v1/me/mfa`: the password and a code turn MFA off.
pub async fn disable(
    state: &AppState,
    caller: Caller,
    password: String,
    code: String,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    if !totp_enabled(state, caller.user.id).await? {
        return Err(ServiceError::MfaNotEnabled);
    }
    accounts::confirm_password(state, &caller, password, meta).await?;
    let user = caller.user;
    check_code(state, &user, code, meta).await?;
    let (id, now) = (user.id, state.now());
    if !state.db(move |s| s.remove_mfa(id, now)).await? {
        return Err(ServiceError::MfaNotEnabled);
    }
    state
        .audit(event(
            state,
            AuditKind::MfaDisabled,
            Some(&user),
            meta,
            "ok",
        ))
        .await;
    Ok(())
}

/// `DELETE /v1/admin/users/{id}/mfa` and `gatehouse users reset-mfa`: TOTP, recovery
/// codes and passkeys removed, every family revoked (`admin`), outstanding logins voided.
/// `admin` is the admin who asked (none for the operator's CLI).
pub async fn admin_reset(
    state: &AppState,
    admin: Option<UserId>,
    user: UserId,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    let now = state.now();
    let found = state
        .db(move |s| {
            s.remove_mfa(user, now)?;
            s.remove_passkeys(user)?;
            s.revoke_user_families(user, RevokeReason::Admin, now)
        })
        .await?;
    if !found {
        return Err(ServiceError::NotFound);
    }
    state
        .audit(AuditEvent {
            user_id: Some(user),
            actor_id: admin,
            ..event(state, AuditKind::MfaReset, None, meta, "ok")
        })
        .await;
    Ok(())
}

/// Voids every login of `user` waiting for its second factor. A password change, a
/// password reset, a disable and an MFA reset call it: what those logins proved is no
/// longer enough.
pub async fn void_pending_logins(state: &AppState, user: UserId) -> Result<(), ServiceError> {
    let now = state.now();
    state.db(move |s| s.void_mfa_tokens(user, now)).await
}

/// The `mfa_required` answer to a right password: a new `mfa_token` for this login.
pub(crate) async fn challenge(
    state: &AppState,
    user: User,
    password_generation: i64,
    meta: &ClientMeta,
) -> Result<ServiceError, ServiceError> {
    let token = b64url(&random_bytes::<MFA_TOKEN_BYTES>());
    let now = state.now();
    let ttl = chrono::Duration::from_std(state.policy.mfa.token_ttl)
        .unwrap_or(chrono::Duration::minutes(5));
    let row = NewMfaToken {
        hash: sha256(token.as_bytes()),
        user_id: user.id,
        password_generation,
        now,
        expires_at: now + ttl,
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
    };
    state.db(move |s| s.create_mfa_token(row)).await?;
    state
        .audit(event(
            state,
            AuditKind::MfaChallengeIssued,
            Some(&user),
            meta,
            "ok",
        ))
        .await;
    Ok(ServiceError::MfaRequired {
        mfa_token: token,
        methods: methods(state, &user).await?,
    })
}

/// The login waiting behind `presented` (an `mfa_token`): its hash, what was stored,
/// and the user, who must still be enabled and have a second factor.
async fn pending_login(
    state: &AppState,
    presented: &str,
) -> Result<(TokenHashBytes, StoredMfaToken, Account), ServiceError> {
    let ok_shape = presented.len() == MFA_TOKEN_CHARS
        && presented
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !ok_shape {
        return Err(ServiceError::InvalidMfaToken);
    }
    let hash = sha256(presented.as_bytes());
    let now = state.now();
    let stored = state
        .db(move |s| s.find_mfa_token(&hash))
        .await?
        .filter(|t| !t.spent && t.expires_at > now)
        .ok_or(ServiceError::InvalidMfaToken)?;
    let user_id = stored.user_id;
    let account = state
        .db(move |s| s.account_by_id(user_id))
        .await?
        .filter(|a| !a.user.disabled && a.user.mfa_enabled)
        .ok_or(ServiceError::InvalidMfaToken)?;
    Ok((hash, stored, account))
}

/// `POST /v1/login/mfa/webauthn/options`: request options listing the passkeys of the
/// user whose login `presented` holds, under a flow bound to that login.
pub async fn webauthn_options(
    state: &AppState,
    presented: &str,
) -> Result<passkeys::FlowOptions, ServiceError> {
    if state.passkeys.is_none() {
        return Err(ServiceError::NotFound);
    }
    let (hash, _, account) = pending_login(state, presented).await?;
    passkeys::login::second_factor_options(state, &account.user, hash)
        .await?
        .ok_or(ServiceError::InvalidMfaToken)
}

/// `POST /v1/login/mfa`: the second step of a login. A right answer opens the session
/// (`amr` `pwd otp mfa`, or `pwd hwk mfa` / `pwd swk mfa` for a passkey) and spends the
/// token; a wrong one counts against the token (five spend it) and the user.
pub async fn login(
    state: &AppState,
    presented: &str,
    answer: Answer,
    meta: &ClientMeta,
) -> Result<TokenPair, ServiceError> {
    let (hash, stored, account) = pending_login(state, presented).await?;
    let now = state.now();
    // A passkey's flow is spent by this request whatever comes of it, and must be this
    // login's: taken before anything is counted.
    let answer = match answer {
        Answer::Code(code) => Checked::Code(code),
        Answer::Passkey {
            flow_id,
            credential,
        } => Checked::Passkey(
            passkeys::login::take_second_factor_flow(state, &flow_id, &hash).await?,
            credential,
        ),
    };
    let user = account.user;
    let key = token_key(&hash);
    let attempt =
        match lockout::begin_mfa_check(state, &user, Some((key.clone(), TOKEN_MAX_FAILURES)), meta)
            .await
        {
            Ok(attempt) => attempt,
            // The token's own five are used up: it is spent, whatever the user's count.
            Err(ServiceError::TooManyAttempts { .. })
                if token_failures(state, &key).await? >= TOKEN_MAX_FAILURES =>
            {
                return Err(ServiceError::InvalidMfaToken);
            }
            Err(e) => return Err(e),
        };
    let (used, wrong) = match answer {
        Checked::Code(code) => {
            let (sealer, id) = (sealer(state), user.id);
            let used = state
                .db(move |s| spend_code(s, &sealer, id, &code, now))
                .await?;
            (used, ServiceError::InvalidMfaCode)
        }
        Checked::Passkey(flow, credential) => {
            let checked =
                passkeys::login::check_second_factor(state, &user, flow, credential).await?;
            let used = match checked {
                Ok(synced) => Some(Used::Passkey { synced }),
                Err(reason) => {
                    tracing::info!(user = %user.id, %reason, "passkey second factor refused");
                    None
                }
            };
            (used, ServiceError::InvalidPasskey)
        }
    };
    let Some(used) = used else {
        attempt.failed(state).await?;
        state
            .audit(event(
                state,
                AuditKind::MfaFailed,
                Some(&user),
                meta,
                match wrong {
                    ServiceError::InvalidPasskey => "wrong_passkey",
                    _ => "wrong_code",
                },
            ))
            .await;
        if token_failures(state, &key).await? >= TOKEN_MAX_FAILURES {
            state.db(move |s| s.spend_mfa_token(&hash, now)).await?;
        }
        return Err(wrong);
    };
    if used == Used::RecoveryCode {
        state
            .audit(event(
                state,
                AuditKind::MfaRecoveryCodeUsed,
                Some(&user),
                meta,
                "ok",
            ))
            .await;
    }
    // The claim that makes the login: of concurrent right answers on one token, one
    // opens a session.
    if !state.db(move |s| s.spend_mfa_token(&hash, now)).await? {
        return Err(ServiceError::InvalidMfaToken);
    }
    let pair = tokens::start_family_with(
        state,
        user,
        stored.password_generation,
        meta,
        AuditKind::LoginSucceeded,
        Some(attempt.settled_by_login()),
        used.amr(),
    )
    .await;
    match pair {
        Ok(pair) => {
            attempt.opened();
            state.metrics.login("succeeded");
            Ok(pair)
        }
        // The password changed, or the account was disabled, since the first step.
        Err(ServiceError::InvalidCredentials) => Err(ServiceError::InvalidMfaToken),
        Err(e) => Err(e),
    }
}

/// An answer whose passkey flow has been taken.
enum Checked {
    Code(String),
    Passkey(passkeys::login::SecondFactorFlow, serde_json::Value),
}

/// How many recovery codes the user has left (for `GET /v1/me`).
pub async fn recovery_codes_left(state: &AppState, user: &User) -> Result<u32, ServiceError> {
    if !user.mfa_enabled {
        return Ok(0);
    }
    let id = user.id;
    state.db(move |s| s.recovery_codes_left(id)).await
}

/// With `GATEHOUSE_ADMIN_MFA=required`, refuses an admin whose session was opened
/// without a second factor.
pub fn require_admin_mfa(state: &AppState, caller: &Caller) -> Result<(), ServiceError> {
    if state.policy.mfa.admin_mfa_required && !caller.amr.is_mfa() {
        return Err(ServiceError::AdminMfaRequired);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issuer_label_is_the_issuers_host() {
        assert_eq!(issuer_label("https://auth.example.com"), "auth.example.com");
        assert_eq!(issuer_label("http://127.0.0.1:8080/x"), "127.0.0.1");
        assert_eq!(issuer_label(""), "gatehouse");
    }

    #[test]
    fn an_mfa_token_key_never_holds_the_token() {
        let token = b64url(&random_bytes::<MFA_TOKEN_BYTES>());
        assert_eq!(token.len(), MFA_TOKEN_CHARS);
        let key = token_key(&sha256(token.as_bytes()));
        assert!(!key.contains(&token[..12]));
    }
}
