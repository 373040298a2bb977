//! Signup, login, password change and account deletion.

use super::audit::event;
use super::caller::Caller;
use super::tokens::{self, TokenPair};
use super::{AppState, ClientMeta, FieldError, ServiceError, lockout};
use crate::domain::{AuditKind, Email, NewPassword, Role, User, UserId};
use crate::storage::{Account, NewUser};

/// `POST /v1/signup`.
pub async fn signup(
    state: &AppState,
    email: Email,
    password: NewPassword,
    meta: &ClientMeta,
) -> Result<TokenPair, ServiceError> {
    let user = match &state.mail {
        // The verification mail is queued in the transaction that creates the user.
        Some(mail) => super::mail::signup_user(state, mail, email, password).await?,
        None => create_user(state, email, password, Role::User).await?,
    };
    // A new user is at password generation 0.
    tokens::start_family(state, user, 0, meta, AuditKind::Signup, None).await
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
                id: UserId::random(),
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
    let matches = attempt
        .verify(
            state,
            password,
            account.as_ref().map(|a| a.password_hash.clone()),
        )
        .await?;
    let (user, outcome) = match account {
        Some(Account {
            user,
            password_generation,
            ..
        }) if matches && !user.disabled && user.mfa_enabled => {
            // The password is proved; the session waits for the second factor. The
            // lease ends here: the code is counted by a limit of its own.
            attempt.succeeded(state).await?;
            state.metrics.login("mfa_required");
            return Err(super::mfa::challenge(state, user, password_generation, meta).await?);
        }
        Some(Account {
            user,
            password_generation,
            ..
        }) if matches && !user.disabled => {
            // The family opens only if the password just verified is still the user's:
            // a password change, a disable or a deletion may have committed while
            // Argon2 ran.
            let opened = tokens::start_family(
                state,
                user.clone(),
                password_generation,
                meta,
                AuditKind::LoginSucceeded,
                Some(attempt.settled_by_login()),
            )
            .await;
            match opened {
                Ok(pair) => {
                    attempt.opened();
                    state.metrics.login("succeeded");
                    return Ok(pair);
                }
                Err(ServiceError::InvalidCredentials) => (Some(user), "account_changed"),
                Err(e) => return Err(e),
            }
        }
        None => (None, "unknown_email"),
        Some(Account { user, .. }) if user.disabled && matches => (Some(user), "disabled"),
        Some(Account { user, .. }) => (Some(user), "wrong_password"),
    };
    attempt.failed(state).await?;
    state.metrics.login("failed");
    state
        .audit(event(
            state,
            AuditKind::LoginFailed,
            user.as_ref(),
            meta,
            outcome,
        ))
        .await;
    Err(ServiceError::InvalidCredentials)
}

/// Checks a signed-in caller's current password and returns the password generation it
/// was checked against. Wrong ones count against the caller's session, not the login
/// lockout (see `lockout::begin_password_check`).
pub(crate) async fn confirm_password(
    state: &AppState,
    caller: &Caller,
    password: String,
    meta: &ClientMeta,
) -> Result<i64, ServiceError> {
    let attempt = lockout::begin_password_check(state, &caller.user, caller.session, meta).await?;
    let id = caller.user.id;
    // Gone since the token was checked: as wrong as a wrong password.
    let account = state
        .db(move |s| s.account_by_id(id))
        .await?
        .ok_or(ServiceError::InvalidCredentials)?;
    let ok = attempt
        .verify(state, password, Some(account.password_hash))
        .await?;
    if !ok {
        attempt.failed(state).await?;
        state
            .audit(event(
                state,
                AuditKind::LoginFailed,
                Some(&caller.user),
                meta,
                "wrong_current_password",
            ))
            .await;
        return Err(ServiceError::InvalidCredentials);
    }
    attempt.succeeded(state).await?;
    Ok(account.password_generation)
}

/// `POST /v1/me/password`: a new family for this device; every other family revoked.
pub async fn change_password(
    state: &AppState,
    caller: Caller,
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
    let generation = confirm_password(state, &caller, current, meta).await?;
    let hash = state.hasher.hash(new.expose().to_owned()).await?;
    let now = state.now();
    let user = caller.user;
    let (mut family, token) = tokens::new_family(
        state,
        &user,
        generation,
        meta,
        now,
        AuditKind::PasswordChanged,
    );
    // This device proved the password again; what else its session proved stays.
    family.amr = caller.amr;
    let pair = tokens::pair_for_new_family(state, user.clone(), &family, token)?;
    let user_id = user.id;
    // Another change (or a deletion) committed since the current password was checked:
    // the password this request proved is no longer the user's.
    if !state
        .db(move |s| s.change_password(user_id, &hash, family))
        .await?
    {
        return Err(ServiceError::InvalidCredentials);
    }
    // A login waiting for its second factor proved the old password: it ends here.
    super::mfa::void_pending_logins(state, user_id).await?;
    // A changed password spends every outstanding reset token (the contract's mail
    // section): a reset link mailed before the change must not undo it.
    let now = state.now();
    state
        .db(move |s| s.spend_mail_tokens(user_id, crate::storage::mail::MailPurpose::Reset, now))
        .await?;
    Ok(pair)
}

/// `DELETE /v1/me`: the user, their families and their lockout rows go; audit events
/// keep only the user id.
pub async fn delete_account(
    state: &AppState,
    caller: Caller,
    password: String,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    confirm_password(state, &caller, password, meta).await?;
    let user = caller.user;
    let email = user.email.clone();
    let id = user.id;
    let now = state.now();
    state.db(move |s| s.delete_user(id, &email, now)).await?;
    state
        .audit(event(
            state,
            AuditKind::AccountDeleted,
            Some(&user),
            &ClientMeta::default(),
            "ok",
        ))
        .await;
    Ok(())
}
