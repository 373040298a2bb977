//! Passkeys: registering and listing them, logging in with one, and the admin's view.
//! Bodies are declared here, beside the handlers that read them; `credential` is the
//! WebAuthn JSON the browser produced, checked by the service's relying party.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use validator::Validate;

use super::dto::{PasskeyDto, TokenResponse};
use super::error::ApiError;
use super::extract::{Admin, Bearer, Json, path_id};
use super::{token_response, validated};
use crate::service::passkeys::{self, FlowOptions};
use crate::service::{AppState, ClientMeta, mfa};

#[derive(Deserialize, Validate)]
pub struct RegisterBody {
    #[validate(
        required(message = "is required"),
        length(min = 1, max = 64, message = "must be 1 to 64 characters")
    )]
    pub flow_id: Option<String>,
    #[validate(
        required(message = "is required"),
        length(min = 1, max = 256, message = "must be 1 to 64 characters")
    )]
    // Bounded loosely here; the service trims and allows 64 characters.
    pub name: Option<String>,
    #[validate(required(message = "is required"))]
    pub credential: Option<serde_json::Value>,
}

#[derive(Deserialize, Validate)]
pub struct LoginBody {
    #[validate(
        required(message = "is required"),
        length(min = 1, max = 64, message = "must be 1 to 64 characters")
    )]
    pub flow_id: Option<String>,
    #[validate(required(message = "is required"))]
    pub credential: Option<serde_json::Value>,
}

#[derive(Deserialize, Validate)]
pub struct MfaOptionsBody {
    #[validate(
        required(message = "is required"),
        length(min = 1, max = 256, message = "must be 1 to 256 characters")
    )]
    pub mfa_token: Option<String>,
}

#[derive(Serialize)]
struct FlowOptionsDto {
    flow_id: String,
    options: serde_json::Value,
}

#[derive(Serialize)]
struct PasskeysDto {
    passkeys: Vec<PasskeyDto>,
}

/// A challenge is single-use and names a ceremony in flight: never cached.
fn options_response(flow: FlowOptions) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(FlowOptionsDto {
            flow_id: flow.flow_id,
            options: flow.options,
        })
}

fn list_response(passkeys: Vec<passkeys::PasskeyInfo>) -> HttpResponse {
    HttpResponse::Ok().json(PasskeysDto {
        passkeys: passkeys.into_iter().map(PasskeyDto::from).collect(),
    })
}

pub async fn registration_options(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
) -> Result<HttpResponse, ApiError> {
    Ok(options_response(
        passkeys::registration_options(&state, &caller).await?,
    ))
}

pub async fn register(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
    meta: ClientMeta,
    Json(body): Json<RegisterBody>,
) -> Result<HttpResponse, ApiError> {
    let body = validated(body)?;
    let passkey = passkeys::register(
        &state,
        caller,
        &body.flow_id.unwrap_or_default(),
        &body.name.unwrap_or_default(),
        body.credential.unwrap_or_default(),
        &meta,
    )
    .await?;
    Ok(HttpResponse::Created().json(PasskeyDto::from(passkey)))
}

pub async fn list(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
) -> Result<HttpResponse, ApiError> {
    Ok(list_response(passkeys::list(&state, caller.user.id).await?))
}

pub async fn remove(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
    meta: ClientMeta,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    passkeys::remove(&state, None, caller.user.id, id, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn login_options(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(options_response(passkeys::login::options(&state).await?))
}

pub async fn login(
    state: web::Data<AppState>,
    meta: ClientMeta,
    Json(body): Json<LoginBody>,
) -> Result<HttpResponse, ApiError> {
    let body = validated(body)?;
    let pair = passkeys::login::login(
        &state,
        &body.flow_id.unwrap_or_default(),
        body.credential.unwrap_or_default(),
        &meta,
    )
    .await?;
    Ok(token_response(
        HttpResponse::Ok(),
        TokenResponse::from(pair),
    ))
}

pub async fn mfa_options(
    state: web::Data<AppState>,
    Json(body): Json<MfaOptionsBody>,
) -> Result<HttpResponse, ApiError> {
    let body = validated(body)?;
    let flow = mfa::webauthn_options(&state, &body.mfa_token.unwrap_or_default()).await?;
    Ok(options_response(flow))
}

pub async fn admin_list(
    state: web::Data<AppState>,
    Admin(_): Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    Ok(list_response(passkeys::list_for_admin(&state, id).await?))
}

pub async fn admin_remove(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    meta: ClientMeta,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (user, passkey) = path.into_inner();
    let (user, passkey) = (path_id(&user)?, path_id(&passkey)?);
    passkeys::remove(&state, Some(caller.user.id), user, passkey, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}
