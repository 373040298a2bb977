//! Logout, the caller's own sessions, and authenticating a bearer token.

use super::accounts::event;
use super::{AppState, ClientMeta, ServiceError};
use crate::crypto::jwt::{self, AccessClaims};
use crate::crypto::refresh::RefreshToken;
use crate::domain::{FamilyId, RevokeReason, Session};
use crate::storage::{Account, AuditEvent};

/// The caller of a `/v1/me` or `/v1/admin` endpoint: a verified token whose user still
/// exists and is enabled and whose session is live, read from the database on every
/// request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub account: Account,
    pub claims: AccessClaims,
}

/// Verifies a bearer token and loads its user through its session (`sid`). A token of a
/// revoked, expired or password-changed session is refused here although other services,
/// verifying offline, accept it until `exp`: gatehouse's own endpoints can read the
/// session, and a stolen token must not be able to manage the account that revoked it.
/// A database outage is a 503, never an "invalid token": clients must not drop a good
/// token because we are down.
pub async fn authenticate(state: &AppState, bearer: &str) -> Result<Caller, ServiceError> {
    let now = state.now();
    let claims = jwt::verify(
        &state.keys(),
        bearer,
        &state.settings.issuer,
        &state.settings.audience,
        now,
    )
    .map_err(|_| ServiceError::InvalidToken)?;
    let (id, sid) = (claims.sub, claims.sid);
    match state
        .db(move |s| s.account_for_session(id, sid, now))
        .await?
    {
        Some(account) if !account.user.disabled => Ok(Caller { account, claims }),
        _ => Err(ServiceError::InvalidToken),
    }
}

/// `POST /v1/logout`: revokes the family of any token of it, spent or not. Unknown
/// tokens get the same answer, so logout tells nothing about a token.
pub async fn logout(
    state: &AppState,
    presented: &str,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    let Some(token) = RefreshToken::from_presented(presented) else {
        return Ok(());
    };
    let now = state.now();
    let hash = token.hash().0;
    let found = state
        .db(move |s| s.revoke_family_of_token(hash, RevokeReason::Logout, now))
        .await?;
    if let Some((user_id, family_id)) = found {
        state.metrics.revocation("logout");
        state
            .audit(AuditEvent {
                user_id: Some(user_id),
                family_id: Some(family_id),
                ..event(state, "logout", None, meta, "ok")
            })
            .await;
    }
    Ok(())
}

/// `GET /v1/me/sessions`: live families only.
pub async fn list_own(state: &AppState, caller: &Caller) -> Result<Vec<Session>, ServiceError> {
    let id = caller.account.user.id;
    let now = state.now();
    state.db(move |s| s.list_sessions(id, false, now)).await
}

/// `DELETE /v1/me/sessions/{id}`: 404 unless the family is the caller's.
pub async fn revoke_own(
    state: &AppState,
    caller: &Caller,
    family_id: FamilyId,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    let owner = caller.account.user.id;
    let now = state.now();
    let found = state
        .db(move |s| s.revoke_family(family_id, Some(owner), RevokeReason::Logout, now))
        .await?;
    if !found {
        return Err(ServiceError::NotFound);
    }
    state.metrics.revocation("logout");
    state
        .audit(AuditEvent {
            family_id: Some(family_id),
            actor_id: Some(owner),
            ..event(
                state,
                "session_revoked",
                Some(&caller.account.user),
                meta,
                "ok",
            )
        })
        .await;
    Ok(())
}
