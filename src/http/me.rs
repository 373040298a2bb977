//! The caller's own account and sessions.

use actix_web::{HttpResponse, web};

use super::dto::{
    DeleteAccountRequest, PasswordChangeRequest, SessionList, TokenResponse, UserDto,
};
use super::error::ApiError;
use super::extract::{Bearer, Json, path_id};
use super::{token_response, validated};
use crate::domain::NewPassword;
use crate::service::{AppState, ClientMeta, FieldError, accounts, sessions};

/// The user, and how many recovery codes they have left (0 without MFA).
#[derive(serde::Serialize)]
struct MeDto {
    #[serde(flatten)]
    user: UserDto,
    recovery_codes_left: u32,
}

pub async fn me(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
) -> Result<HttpResponse, ApiError> {
    let recovery_codes_left =
        crate::service::mfa::recovery_codes_left(&state, &caller.user).await?;
    Ok(HttpResponse::Ok().json(MeDto {
        user: UserDto::from(caller.user),
        recovery_codes_left,
    }))
}

pub async fn list_sessions(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
) -> Result<HttpResponse, ApiError> {
    let list = sessions::list_own(&state, &caller).await?;
    Ok(HttpResponse::Ok().json(SessionList::new(list)))
}

pub async fn revoke_session(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
    meta: ClientMeta,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    sessions::revoke_own(&state, &caller, id, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn change_password(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
    meta: ClientMeta,
    Json(body): Json<PasswordChangeRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = validated(body)?;
    let new = NewPassword::parse(body.new_password.as_deref().unwrap_or_default())
        .map_err(|m| ApiError::validation(vec![FieldError::new("new_password", m)]))?;
    let current = body.current_password.unwrap_or_default();
    let pair = accounts::change_password(&state, caller, current, new, &meta).await?;
    Ok(token_response(
        HttpResponse::Ok(),
        TokenResponse::from(pair),
    ))
}

pub async fn delete_account(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
    meta: ClientMeta,
    Json(body): Json<DeleteAccountRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = validated(body)?;
    let password = body.password.unwrap_or_default();
    accounts::delete_account(&state, caller, password, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}
