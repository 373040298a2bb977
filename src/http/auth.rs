//! signup, login, refresh, logout.

use actix_web::{HttpResponse, web};

use super::dto::{LoginRequest, RefreshRequest, SignupRequest, TokenResponse};
use super::error::ApiError;
use super::extract::Json;
use super::{token_response, validated};
use crate::domain::{Email, NewPassword};
use crate::service::{AppState, ClientMeta, FieldError, accounts, sessions, tokens};

fn parsed_email(raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw).map_err(|m| ApiError::validation(vec![FieldError::new("email", m)]))
}

pub async fn signup(
    state: web::Data<AppState>,
    meta: ClientMeta,
    Json(body): Json<SignupRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = validated(body)?;
    let email = parsed_email(body.email.as_deref().unwrap_or_default())?;
    let password = NewPassword::parse(body.password.as_deref().unwrap_or_default())
        .map_err(|m| ApiError::validation(vec![FieldError::new("password", m)]))?;
    let pair = accounts::signup(&state, email, password, &meta).await?;
    Ok(token_response(
        HttpResponse::Created(),
        TokenResponse::from(pair),
    ))
}

pub async fn login(
    state: web::Data<AppState>,
    meta: ClientMeta,
    Json(body): Json<LoginRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = validated(body)?;
    let email = parsed_email(body.email.as_deref().unwrap_or_default())?;
    let password = body.password.unwrap_or_default();
    let pair = accounts::login(&state, email, password, &meta).await?;
    Ok(token_response(
        HttpResponse::Ok(),
        TokenResponse::from(pair),
    ))
}

pub async fn refresh(
    state: web::Data<AppState>,
    meta: ClientMeta,
    Json(body): Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = validated(body)?;
    let presented = body.refresh_token.unwrap_or_default();
    let pair = tokens::refresh(&state, &presented, &meta).await?;
    Ok(token_response(
        HttpResponse::Ok(),
        TokenResponse::from(pair),
    ))
}

pub async fn logout(
    state: web::Data<AppState>,
    meta: ClientMeta,
    Json(body): Json<RefreshRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = validated(body)?;
    let presented = body.refresh_token.unwrap_or_default();
    sessions::logout(&state, &presented, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}
