//! Signup, login, password change and account deletion.

use uuid::Uuid;

use super::tokens::{self, TokenPair};
use super::{AppState, ClientMeta, FieldError, ServiceError, lockout};
use crate::domain::{Email, NewPassword, Role, User};
use crate::storage::{Account, AuditEvent, NewUser};

/// `POST /v1/signup`.
pub async fn signup(
    state: &AppState,
    email: Email,
    password: NewPassword,
    meta: &ClientMeta,
) -> Result<TokenPair, ServiceError> {
    let user = create_user(state, email, password, Role::User).await?;
    state
        .audit(event(state, "signup", Some(&user), meta, "ok"))
        .await;
    tokens::start_family(state, user, meta).await
}

/// Creates a user (also used by the CLI to create admins).
pub async fn create_user(
    state: &AppState,
    email: Email,
    password: NewPassword,
    role: Role,
) -> Result<User, ServiceError> {
    let hash = state.hasher.hash(password.expose().to_owned()).await?;
    let now = state.now();
    state
        .db(move |s| {
            s.create_user(NewUser {
                id: Uuid::new_v4(),
                email: &email,
                password_hash: &hash,
                role,
                now,
            })
        })
        .await
}

/// `POST /v1/login`.
///
/// An unknown email, a wrong password and a disabled account answer alike and cost the
/// same: one Argon2 verify each (against a dummy hash when there is no account).
pub async fn login(
    state: &AppState,
    email: Email,
    password: String,
    meta: &ClientMeta,
) -> Result<TokenPair, ServiceError> {
    let attempt = lockout::begin(state, &email, meta).await?;
    let lookup = email.clone();
    let account = state.db(move |s| s.account_by_email(&lookup)).await?;
    let matches = state
        .hasher
        .verify(password, account.as_ref().map(|a| a.password_hash.clone()))
        .await?;
    match account {
        Some(Account { user, .. }) if matches && !user.disabled => {
            attempt.succeeded(state).await?;
            state.metrics.login("succeeded");
            state
                .audit(event(state, "login_succeeded", Some(&user), meta, "ok"))
                .await;
            tokens::start_family(state, user, meta).await
        }
        account => {
            attempt.failed(state).await?;
            state.metrics.login("failed");
            let user = account.map(|a| a.user);
            let outcome = match &user {
                None => "unknown_email",
                Some(u) if u.disabled && matches => "disabled",
                Some(_) => "wrong_password",
            };
            state
                .audit(event(state, "login_failed", user.as_ref(), meta, outcome))
                .await;
            Err(ServiceError::InvalidCredentials)
        }
    }
}

/// Checks the caller's current password, under the same lockout as logins.
async fn confirm_password(
    state: &AppState,
    account: &Account,
    password: String,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    let email = Email::from_trusted(account.user.email.clone());
    let attempt = lockout::begin(state, &email, meta).await?;
    let ok = state
        .hasher
        .verify(password, Some(account.password_hash.clone()))
        .await?;
    if !ok {
        attempt.failed(state).await?;
        state
            .audit(event(
                state,
                "login_failed",
                Some(&account.user),
                meta,
                "wrong_current_password",
            ))
            .await;
        return Err(ServiceError::InvalidCredentials);
    }
    attempt.succeeded(state).await
}

/// `POST /v1/me/password`: a new family for this device; every other family revoked.
pub async fn change_password(
    state: &AppState,
    account: Account,
    current: String,
    new: NewPassword,
    meta: &ClientMeta,
) -> Result<TokenPair, ServiceError> {
    if current == new.expose() {
        return Err(ServiceError::Validation(vec![FieldError::new(
            "new_password",
            "must differ from the current password",
        )]));
    }
    confirm_password(state, &account, current, meta).await?;
    let hash = state.hasher.hash(new.expose().to_owned()).await?;
    let now = state.now();
    let user = account.user;
    let (family, token) = tokens::new_family(state, &user, meta, now);
    let pair = tokens::pair_for_new_family(state, user.clone(), &family, token)?;
    let user_id = user.id;
    state
        .db(move |s| s.change_password(user_id, &hash, family))
        .await?;
    state
        .audit(event(state, "password_changed", Some(&user), meta, "ok"))
        .await;
    Ok(pair)
}

/// `DELETE /v1/me`: the user, their families and their lockout rows go; audit events
/// keep only the user id.
pub async fn delete_account(
    state: &AppState,
    account: Account,
    password: String,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    confirm_password(state, &account, password, meta).await?;
    let user = account.user;
    let email = Email::from_trusted(user.email.clone());
    let id = user.id;
    state.db(move |s| s.delete_user(id, &email)).await?;
    state
        .audit(event(
            state,
            "account_deleted",
            Some(&user),
            &ClientMeta::default(),
            "ok",
        ))
        .await;
    Ok(())
}

pub(super) fn event(
    state: &AppState,
    kind: &'static str,
    user: Option<&User>,
    meta: &ClientMeta,
    outcome: &'static str,
) -> AuditEvent {
    AuditEvent {
        at: state.now(),
        kind,
        user_id: user.map(|u| u.id),
        ip: meta.ip.clone(),
        user_agent: meta.user_agent.clone(),
        outcome,
        ..AuditEvent::default()
    }
}
