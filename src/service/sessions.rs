//! Logout and the caller's own sessions.

use super::audit::event;
use super::caller::Caller;
use super::{AppState, ClientMeta, ServiceError};
use crate::crypto::refresh::RefreshToken;
use crate::domain::{AuditKind, FamilyId, RevokeReason, Session};
use crate::storage::AuditEvent;

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
                ..event(state, AuditKind::Logout, None, meta, "ok")
            })
            .await;
    }
    Ok(())
}

/// `GET /v1/me/sessions`: live families only.
pub async fn list_own(state: &AppState, caller: &Caller) -> Result<Vec<Session>, ServiceError> {
    let id = caller.user.id;
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
    let owner = caller.user.id;
    let now = state.now();
    let found = state
        .db(move |s| s.revoke_family(family_id, Some(owner), RevokeReason::Logout, now))
        .await?;
    if found.is_none() {
        return Err(ServiceError::NotFound);
    }
    state.metrics.revocation("logout");
    state
        .audit(AuditEvent {
            family_id: Some(family_id),
            actor_id: Some(owner),
            ..event(
                state,
                AuditKind::SessionRevoked,
                Some(&caller.user),
                meta,
                "ok",
            )
        })
        .await;
    Ok(())
}
