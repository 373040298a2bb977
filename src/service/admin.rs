//! What an admin may do, over the API or at the CLI: find and create users, change role
//! or disabled, read and revoke sessions, read the audit log. Revoking a family stops its
//! refresh tokens at once; access tokens already issued stay valid for offline verifiers
//! until they expire (at most the access-token lifetime).

use super::audit::event;
use super::caller::Caller;
use super::{AppState, ClientMeta, FieldError, ServiceError, accounts};
use crate::domain::{
    AuditKind, Email, FamilyId, NewPassword, RevokeReason, Role, Session, User, UserId, email,
};
use crate::storage::{AuditEvent, AuditFilter, AuditRecord};

/// Who performs an admin action. The audit log tells the two apart.
#[derive(Clone, Copy)]
pub enum Actor<'a> {
    /// An admin over the API.
    Admin(&'a Caller),
    /// An operator at the CLI, with access to the database itself.
    Operator,
}

impl Actor<'_> {
    fn id(self) -> Option<UserId> {
        match self {
            Actor::Admin(caller) => Some(caller.user.id),
            Actor::Operator => None,
        }
    }

    /// The audit event of an action by this actor; `detail` says what was done.
    fn event(
        self,
        state: &AppState,
        kind: AuditKind,
        user: Option<&User>,
        meta: &ClientMeta,
        detail: Option<String>,
    ) -> AuditEvent {
        let detail = match self {
            Actor::Admin(_) => detail,
            Actor::Operator => Some(format!("cli: {}", detail.as_deref().unwrap_or(""))),
        };
        AuditEvent {
            actor_id: self.id(),
            detail,
            ..event(state, kind, user, meta, "ok")
        }
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

/// The user with this email, if any.
pub async fn user_by_email(state: &AppState, email: Email) -> Result<Option<User>, ServiceError> {
    Ok(state
        .db(move |s| s.account_by_email(&email))
        .await?
        .map(|a| a.user))
}

/// Creates a user with a role (the CLI's way to make the first admin).
pub async fn create_user(
    state: &AppState,
    actor: Actor<'_>,
    email: Email,
    password: NewPassword,
    role: Role,
) -> Result<User, ServiceError> {
    let user = accounts::create_user(state, email, password, role).await?;
    let detail = format!("created with role {}", role.as_str());
    state
        .audit(actor.event(
            state,
            AuditKind::Signup,
            Some(&user),
            &ClientMeta::default(),
            Some(detail),
        ))
        .await;
    Ok(user)
}

pub async fn update_user(
    state: &AppState,
    actor: Actor<'_>,
    id: UserId,
    role: Option<Role>,
    disabled: Option<bool>,
    meta: &ClientMeta,
) -> Result<User, ServiceError> {
    if actor.id() == Some(id) {
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
        .audit(actor.event(
            state,
            AuditKind::UserUpdated,
            Some(&user),
            meta,
            Some(detail),
        ))
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
    actor: Actor<'_>,
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
            ..actor.event(state, AuditKind::SessionRevoked, None, meta, None)
        })
        .await;
    Ok(())
}

pub async fn revoke_user_families(
    state: &AppState,
    actor: Actor<'_>,
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
            ..actor.event(
                state,
                AuditKind::SessionRevoked,
                None,
                meta,
                Some("all sessions".into()),
            )
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
