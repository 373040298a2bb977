//! What an admin may do: find users, change role or disabled, read and revoke sessions.
//! Revoking a family stops its refresh tokens at once; access tokens already issued stay
//! valid for offline verifiers until they expire (at most the access-token lifetime).

use super::accounts::event;
use super::sessions::Caller;
use super::{AppState, ClientMeta, FieldError, ServiceError};
use crate::domain::{FamilyId, RevokeReason, Role, Session, User, UserId, email};
use crate::storage::{AuditEvent, AuditFilter, AuditRecord};

/// Refuses callers whose role is not admin (checked against the database, not the token).
pub fn require_admin(caller: &Caller) -> Result<(), ServiceError> {
    if caller.account.user.role == Role::Admin {
        Ok(())
    } else {
        Err(ServiceError::Forbidden)
    }
}

pub async fn find_users(
    state: &AppState,
    email_query: Option<String>,
    limit: u32,
) -> Result<Vec<User>, ServiceError> {
    let query = email_query
        .map(|q| email::normalize(&q))
        .filter(|q| !q.is_empty());
    state
        .db(move |s| s.search_users(query.as_deref(), limit))
        .await
}

pub async fn update_user(
    state: &AppState,
    caller: &Caller,
    id: UserId,
    role: Option<Role>,
    disabled: Option<bool>,
    meta: &ClientMeta,
) -> Result<User, ServiceError> {
    if id == caller.account.user.id {
        // An admin locking themself out could leave no admin at all.
        let mut errors = Vec::new();
        if role == Some(Role::User) {
            errors.push(FieldError::new("role", "an admin cannot demote themself"));
        }
        if disabled == Some(true) {
            errors.push(FieldError::new(
                "disabled",
                "an admin cannot disable themself",
            ));
        }
        if !errors.is_empty() {
            return Err(ServiceError::Validation(errors));
        }
    }
    let now = state.now();
    let user = state
        .db(move |s| s.update_user(id, role, disabled, now))
        .await?
        .ok_or(ServiceError::NotFound)?;
    if disabled == Some(true) {
        state.metrics.revocation("admin");
    }
    let detail = format!(
        "role={} disabled={}",
        role.map_or("-", Role::as_str),
        disabled.map_or("-".into(), |d| d.to_string())
    );
    state
        .audit(AuditEvent {
            actor_id: Some(caller.account.user.id),
            detail: Some(detail),
            ..event(state, "user_updated", Some(&user), meta, "ok")
        })
        .await;
    Ok(user)
}

pub async fn user_sessions(state: &AppState, id: UserId) -> Result<Vec<Session>, ServiceError> {
    let now = state.now();
    state
        .db(move |s| {
            if s.account_by_id(id)?.is_none() {
                return Ok(None);
            }
            s.list_sessions(id, true, now).map(Some)
        })
        .await?
        .ok_or(ServiceError::NotFound)
}

pub async fn revoke_family(
    state: &AppState,
    caller: &Caller,
    family_id: FamilyId,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    let now = state.now();
    let found = state
        .db(move |s| s.revoke_family(family_id, None, RevokeReason::Admin, now))
        .await?;
    if !found {
        return Err(ServiceError::NotFound);
    }
    state.metrics.revocation("admin");
    state
        .audit(AuditEvent {
            family_id: Some(family_id),
            actor_id: Some(caller.account.user.id),
            ..event(state, "session_revoked", None, meta, "ok")
        })
        .await;
    Ok(())
}

pub async fn revoke_user_families(
    state: &AppState,
    caller: &Caller,
    user_id: UserId,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    let now = state.now();
    let found = state
        .db(move |s| s.revoke_user_families(user_id, RevokeReason::Admin, now))
        .await?;
    if !found {
        return Err(ServiceError::NotFound);
    }
    state.metrics.revocation("admin");
    state
        .audit(AuditEvent {
            user_id: Some(user_id),
            actor_id: Some(caller.account.user.id),
            detail: Some("all sessions".into()),
            ..event(state, "session_revoked", None, meta, "ok")
        })
        .await;
    Ok(())
}

pub async fn audit_log(
    state: &AppState,
    filter: AuditFilter,
) -> Result<Vec<AuditRecord>, ServiceError> {
    state.db(move |s| s.list_audit(&filter)).await
}
