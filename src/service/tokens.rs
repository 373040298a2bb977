//! Issuing token pairs and rotating refresh tokens.

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::audit::event;
use super::rotation::{self, RotationVerdict};
use super::{AppState, ClientMeta, ServiceError};
use crate::crypto::jwt::{self, AccessClaims};
use crate::crypto::refresh::RefreshToken;
use crate::domain::{Amr, AuditKind, FamilyId, RevokeReason, User};
use crate::storage::{AuditEvent, LeaseId, NewFamily, Spend, StoredToken};

/// What signup, login, refresh and password change return.
pub struct TokenPair {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: RefreshToken,
    pub refresh_expires_in: u64,
    pub user: User,
}

/// The access token is a bearer credential: it never reaches a log.
impl std::fmt::Debug for TokenPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenPair")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("refresh_token", &self.refresh_token)
            .field("refresh_expires_in", &self.refresh_expires_in)
            .field("user", &self.user)
            .finish()
    }
}

fn dur(d: std::time::Duration) -> Duration {
    Duration::from_std(d).unwrap_or(Duration::MAX)
}

/// Signs an access token for `user` in family `sid`, whose login proved `amr`.
pub fn access_token(
    state: &AppState,
    user: &User,
    sid: FamilyId,
    amr: Amr,
    now: DateTime<Utc>,
) -> Result<String, ServiceError> {
    let iat = now.timestamp();
    let claims = AccessClaims {
        iss: state.policy.tokens.issuer.clone(),
        aud: state.policy.tokens.audience.clone(),
        sub: user.id,
        iat,
        nbf: iat,
        exp: iat + state.policy.tokens.access_ttl.as_secs() as i64,
        jti: Uuid::new_v4(),
        sid,
        role: user.role,
        amr: amr.methods().iter().map(|m| (*m).to_owned()).collect(),
    };
    jwt::mint(&state.keys(), &claims)
        .map_err(|e| ServiceError::internal_because("signing an access token", e))
}

fn pair(
    state: &AppState,
    user: User,
    family_id: FamilyId,
    amr: Amr,
    refresh_token: RefreshToken,
    refresh_expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<TokenPair, ServiceError> {
    let access_token = access_token(state, &user, family_id, amr, now)?;
    Ok(TokenPair {
        access_token,
        expires_in: state.policy.tokens.access_ttl.as_secs(),
        refresh_token,
        // Whole seconds on both sides: storage keeps whole seconds.
        refresh_expires_in: (refresh_expires_at.timestamp() - now.timestamp()).max(0) as u64,
        user,
    })
}

/// The family a new login opens, with its first (random) token. `password_generation`
/// is the user's generation when the password was checked; `opened_by` the event the
/// store records with it.
pub fn new_family(
    state: &AppState,
    user: &User,
    password_generation: i64,
    meta: &ClientMeta,
    now: DateTime<Utc>,
    opened_by: AuditKind,
) -> (NewFamily, RefreshToken) {
    let token = RefreshToken::generate();
    let family_expires_at = now + dur(state.policy.tokens.family_ttl);
    let token_expires_at = (now + dur(state.policy.tokens.refresh_ttl)).min(family_expires_at);
    let family = NewFamily {
        id: FamilyId::random(),
        user_id: user.id,
        first_token: token.hash().0,
        now,
        token_expires_at,
        family_expires_at,
        user_agent: meta.user_agent.clone(),
        ip: meta.ip.clone(),
        password_generation,
        opened_by: event(state, opened_by, Some(user), meta, "ok"),
        forgives: None,
        settles: None,
        amr: Amr::Pwd,
    };
    (family, token)
}

/// The token pair of a family just stored by the caller.
pub fn pair_for_new_family(
    state: &AppState,
    user: User,
    family: &NewFamily,
    token: RefreshToken,
) -> Result<TokenPair, ServiceError> {
    pair(
        state,
        user,
        family.id,
        family.amr,
        token,
        family.token_expires_at,
        family.now,
    )
}

/// Opens a family for `user` (one login) and returns its first token pair; the store
/// records `opened_by`, forgives the `forgives` key's failures and ends the `settles`
/// lockout lease with it. When the
/// password checked at `password_generation` is no longer the user's, or the user was
/// disabled or deleted meanwhile, the login fails as a wrong password would.
pub async fn start_family(
    state: &AppState,
    user: User,
    password_generation: i64,
    meta: &ClientMeta,
    opened_by: AuditKind,
    settles: Option<(Option<String>, LeaseId)>,
) -> Result<TokenPair, ServiceError> {
    start_family_with(
        state,
        user,
        password_generation,
        meta,
        opened_by,
        settles,
        Amr::Pwd,
    )
    .await
}

/// `start_family` for a login that proved `amr` (a second factor, or a passkey alone).
pub async fn start_family_with(
    state: &AppState,
    user: User,
    password_generation: i64,
    meta: &ClientMeta,
    opened_by: AuditKind,
    settles: Option<(Option<String>, LeaseId)>,
    amr: Amr,
) -> Result<TokenPair, ServiceError> {
    let now = state.now();
    let (mut family, token) = new_family(state, &user, password_generation, meta, now, opened_by);
    family.amr = amr;
    if let Some((forgives, lease)) = settles {
        family.forgives = forgives;
        family.settles = Some(lease);
    }
    let (id, token_expires_at) = (family.id, family.token_expires_at);
    if !state.db(move |s| s.create_family(family)).await? {
        return Err(ServiceError::InvalidCredentials);
    }
    pair(state, user, id, amr, token, token_expires_at, now)
}

/// `POST /v1/refresh`: spends the presented token and returns its child.
///
/// Read, judge (`rotation::judge`), then act. Only a `Rotate` writes, through the store's
/// atomic claim; a caller that loses the claim to a concurrent one reads again and is
/// judged again: now the token is spent, so it gets the same child inside the grace or
/// revokes the family outside it. Ten concurrent presentations of one token yield one
/// child on any backend.
pub async fn refresh(
    state: &AppState,
    presented: &str,
    meta: &ClientMeta,
) -> Result<TokenPair, ServiceError> {
    /// A lost claim means the token is spent (or its family revoked) when read again, so
    /// the second judgement never rotates; the bound only guards against a bug.
    const CLAIMS: usize = 3;
    let Some(token) = RefreshToken::from_presented(presented) else {
        return Err(ServiceError::InvalidRefreshToken);
    };
    let now = state.now();
    let child = token.child(&state.refresh_secret);
    let (presented, child_hash) = (token.hash().0, child.hash().0);
    let policy = rotation::Lifetimes {
        refresh_ttl: dur(state.policy.tokens.refresh_ttl),
        reuse_grace: dur(state.policy.tokens.refresh_reuse_grace),
    };
    for _ in 0..CLAIMS {
        let Some(stored) = state.db(move |s| s.find_refresh_token(presented)).await? else {
            state.metrics.refresh("invalid");
            return Err(ServiceError::InvalidRefreshToken);
        };
        let child_expires_at = match rotation::judge(&stored, &child_hash, now, policy) {
            RotationVerdict::Invalid => {
                state.metrics.refresh("invalid");
                return Err(ServiceError::InvalidRefreshToken);
            }
            RotationVerdict::Reuse => return Err(reuse_detected(state, &stored, now, meta).await),
            RotationVerdict::Replay { child_expires_at } => {
                state.metrics.refresh("grace_replay");
                child_expires_at
            }
            RotationVerdict::Rotate { child_expires_at } => {
                let spend = Spend {
                    presented,
                    child: child_hash,
                    family_id: stored.family_id,
                    now,
                    child_expires_at,
                };
                if !state.db(move |s| s.spend_refresh_token(spend)).await? {
                    continue;
                }
                state.metrics.refresh("rotated");
                child_expires_at
            }
        };
        return pair(
            state,
            stored.user,
            stored.family_id,
            stored.amr,
            child,
            child_expires_at,
            now,
        );
    }
    Err(ServiceError::internal(
        "a refresh token kept changing under its claims",
    ))
}

/// Revokes the family of a reused token and records the theft.
async fn reuse_detected(
    state: &AppState,
    stored: &StoredToken,
    now: DateTime<Utc>,
    meta: &ClientMeta,
) -> ServiceError {
    let (user_id, family_id) = (stored.user.id, stored.family_id);
    if let Err(e) = state
        .db(move |s| s.revoke_family(family_id, None, RevokeReason::ReuseDetected, now))
        .await
    {
        return e;
    }
    state.metrics.refresh("reuse_detected");
    tracing::warn!(%user_id, %family_id, "refresh token reuse: family revoked");
    state
        .audit(AuditEvent {
            user_id: Some(user_id),
            family_id: Some(family_id),
            ..event(
                state,
                AuditKind::RefreshReuseDetected,
                None,
                meta,
                "family_revoked",
            )
        })
        .await;
    ServiceError::RefreshTokenReused
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Role;

    #[test]
    fn debug_output_never_carries_a_token() {
        let refresh_token = RefreshToken::generate();
        let secret = refresh_token.expose().to_owned();
        let pair = TokenPair {
            access_token: "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl".into(),
            expires_in: 900,
            refresh_token,
            refresh_expires_in: 43_200,
            user: User {
                id: crate::domain::UserId::random(),
                email: crate::domain::Email::parse("debug@example.com").expect("email"),
                role: Role::User,
                disabled: false,
                email_verified: false,
                created_at: Utc::now(),
                mfa_enabled: false,
            },
        };
        let printed = format!("{pair:?}");
        assert!(!printed.contains("eyJ"), "{printed}");
        assert!(!printed.contains(&secret), "{printed}");
        assert!(printed.contains("expires_in: 900"), "{printed}");
    }
}
