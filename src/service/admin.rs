//! What an admin may do, over the API or at the CLI: find and create users, change role
//! or disabled, read and revoke sessions, read the audit log. Revoking a family stops its
//! refresh tokens at once; access tokens already issued stay valid for offline verifiers
//! until they expire (at most the access-token lifetime).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};

use super::audit::event;
use super::caller::Caller;
use super::{AppState, ClientMeta, FieldError, ServiceError, accounts};
use crate::crypto::lifecycle::{self, KeyStatus};
use crate::domain::{
    AuditKind, Email, FamilyId, NewPassword, RevokeReason, Role, Session, User, UserId, email,
};
use crate::storage::{AuditEvent, AuditFilter, AuditRecord, Store, StoreError};

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
    pub(super) fn event(
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
    state.db(move |s| search_users(s, email_query, limit)).await
}

/// The user with this email, if any.
pub async fn user_by_email(state: &AppState, email: Email) -> Result<Option<User>, ServiceError> {
    state.db(move |s| user_with_email(s, &email)).await
}

// The reads on a store alone, for the CLI's read-only commands: they need no keys and no
// refresh secret, and must not create them (nor a database) on an install that has none.

/// Users whose email starts with `email_query` (normalized as an email is), or all.
pub fn search_users(
    store: &dyn Store,
    email_query: Option<String>,
    limit: u32,
) -> Result<Vec<User>, StoreError> {
    let query = email_query
        .map(|q| email::normalize(&q))
        .filter(|q| !q.is_empty());
    store.search_users(query.as_deref(), limit)
}

pub fn user_with_email(store: &dyn Store, email: &Email) -> Result<Option<User>, StoreError> {
    Ok(store.account_by_email(email)?.map(|a| a.user))
}

/// Every session of the user, ended ones included; `None` when there is no such user.
pub fn sessions_of(
    store: &dyn Store,
    id: UserId,
    now: DateTime<Utc>,
) -> Result<Option<Vec<Session>>, StoreError> {
    if store.account_by_id(id)?.is_none() {
        return Ok(None);
    }
    store.list_sessions(id, true, now).map(Some)
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
        // A login of theirs waiting for its second factor ends too.
        super::mfa::void_pending_logins(state, id).await?;
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
        .db(move |s| sessions_of(s, id, now))
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
    let owner = state
        .db(move |s| s.revoke_family(family_id, None, RevokeReason::Admin, now))
        .await?
        .ok_or(ServiceError::NotFound)?;
    state.metrics.revocation("admin");
    // Recorded against the session's owner, so the user's audit view shows it.
    state
        .audit(AuditEvent {
            user_id: Some(owner),
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

/// A user as an admin sees them.
#[derive(Clone, Debug)]
pub struct UserView {
    pub user: User,
    /// When their newest stored session was opened (see `Store::last_logins`).
    pub last_login_at: Option<DateTime<Utc>>,
}

async fn views(state: &AppState, users: Vec<User>) -> Result<Vec<UserView>, ServiceError> {
    let ids: Vec<UserId> = users.iter().map(|u| u.id).collect();
    let logins = state.db(move |s| s.last_logins(&ids)).await?;
    Ok(users
        .into_iter()
        .zip(logins.into_iter().chain(std::iter::repeat(None)))
        .map(|(user, last_login_at)| UserView {
            user,
            last_login_at,
        })
        .collect())
}

/// `find_users`, with each user's last login.
pub async fn find_user_views(
    state: &AppState,
    email_query: Option<String>,
    limit: u32,
) -> Result<Vec<UserView>, ServiceError> {
    let users = find_users(state, email_query, limit).await?;
    views(state, users).await
}

/// One user by id, with their last login.
pub async fn user_view(state: &AppState, id: UserId) -> Result<UserView, ServiceError> {
    let user = state
        .db(move |s| s.account_by_id(id))
        .await?
        .ok_or(ServiceError::NotFound)?
        .user;
    let mut found = views(state, vec![user]).await?;
    found.pop().ok_or(ServiceError::NotFound)
}

/// `update_user`, answering with the user as an admin sees them.
pub async fn update_user_view(
    state: &AppState,
    actor: Actor<'_>,
    id: UserId,
    role: Option<Role>,
    disabled: Option<bool>,
    meta: &ClientMeta,
) -> Result<UserView, ServiceError> {
    let user = update_user(state, actor, id, role, disabled, meta).await?;
    let mut found = views(state, vec![user]).await?;
    found.pop().ok_or(ServiceError::NotFound)
}

/// The keys published now and the stage of each. The stages are read from where the
/// keys are kept (`keys.json`, or the database) on every call, off the executor: a
/// rotation by the CLI shows at once, while the ring itself changes only at the next
/// reload.
pub async fn signing_keys(state: &AppState) -> Result<Vec<KeyStatus>, ServiceError> {
    let ring = state.keys();
    let source = Arc::clone(&state.key_store);
    let timing = state.policy.key_timing;
    tokio::task::spawn_blocking(move || {
        let life = source
            .lifecycle()
            .map_err(|e| ServiceError::internal_because("reading the key lifecycle", e))?;
        Ok(lifecycle::status(&ring, &life, timing))
    })
    .await
    .map_err(|e| ServiceError::internal_because("the key status task failed", e))?
}

/// The farthest back the stats reach: a month of hours keeps a response small.
pub const STATS_MAX_HOURS: i64 = 31 * 24;

/// Audit events per hour and kind, from the hour `since` falls in (default: 24 hours
/// ago) until now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditStats {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// The start of each hour, oldest first.
    pub hours: Vec<DateTime<Utc>>,
    /// One count per hour for every audit kind, zeros included, so that a chart needs
    /// no gaps filled.
    pub counts: Vec<(AuditKind, Vec<u64>)>,
}

/// The hours a stats request covers, or why `since` is refused.
pub fn stats_window(
    since: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, Vec<DateTime<Utc>>), ServiceError> {
    let since = since.unwrap_or(now - Duration::hours(24));
    let refuse = |m: &str| Err(ServiceError::Validation(vec![FieldError::new("since", m)]));
    if since > now {
        return refuse("must not be in the future");
    }
    if since < now - Duration::hours(STATS_MAX_HOURS) {
        return refuse("must be at most 31 days ago");
    }
    let first = since.timestamp() - since.timestamp().rem_euclid(3600);
    let hours = (first..=now.timestamp())
        .step_by(3600)
        .filter_map(|t| DateTime::from_timestamp(t, 0))
        .collect::<Vec<_>>();
    let from = hours.first().copied().unwrap_or(now);
    Ok((from, hours))
}

pub async fn audit_stats(
    state: &AppState,
    since: Option<DateTime<Utc>>,
) -> Result<AuditStats, ServiceError> {
    let to = state.now();
    let (from, hours) = stats_window(since, to)?;
    let rows = state
        .db(move |s| s.count_audit_by_hour(from, to + Duration::seconds(1)))
        .await?;
    let mut counts: Vec<(AuditKind, Vec<u64>)> = AuditKind::ALL
        .iter()
        .map(|k| (*k, vec![0; hours.len()]))
        .collect();
    for row in rows {
        let slot = ((row.hour - from).num_seconds() / 3600) as usize;
        if let Some((_, series)) = counts.iter_mut().find(|(k, _)| k.as_str() == row.kind)
            && let Some(n) = series.get_mut(slot)
        {
            *n += row.count;
        }
    }
    Ok(AuditStats {
        from,
        to,
        hours,
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").to_utc()
    }

    #[test]
    fn the_stats_window_starts_on_the_hour_of_since_and_ends_with_the_current_hour() {
        let now = at("2026-11-30T01:35:10Z");
        let (from, hours) = stats_window(None, now).expect("default");
        assert_eq!(from, at("2026-11-29T01:00:00Z"));
        assert_eq!(hours.len(), 25, "24 whole hours and the current one");
        assert_eq!(hours.last(), Some(&at("2026-11-30T01:00:00Z")));

        let (from, hours) = stats_window(Some(at("2026-11-30T01:00:00Z")), now).expect("hour");
        assert_eq!((from, hours.len()), (at("2026-11-30T01:00:00Z"), 1));
    }

    #[test]
    fn a_since_in_the_future_or_past_a_month_is_refused() {
        let now = at("2026-11-30T01:35:10Z");
        for since in ["2026-11-30T01:35:11Z", "2026-10-30T01:35:09Z"] {
            match stats_window(Some(at(since)), now) {
                Err(ServiceError::Validation(errors)) => assert_eq!(errors[0].field, "since"),
                other => panic!("{since}: {other:?}"),
            }
        }
        stats_window(Some(at("2026-10-30T01:35:10Z")), now).expect("exactly 31 days");
    }
}
