//! Second factors: enrolment, recovery codes, turning MFA off, the login's second step
//! and the admin's reset. Bodies are declared here, beside the handlers that read them.

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use validator::Validate;

use super::dto::TokenResponse;
use super::error::ApiError;
use super::extract::{Admin, Bearer, Json, path_id};
use super::{token_response, validated};
use crate::service::{AppState, ClientMeta, mfa};

/// A TOTP code is 6 digits and a recovery code 19 characters; anything much longer is
/// refused before it reaches the store.
const MAX_CODE_CHARS: u64 = 64;
const MAX_PASSWORD_CHARS: u64 = 128;

#[derive(Deserialize, Validate)]
pub struct PasswordBody {
    #[validate(
        required(message = "is required"),
        length(min = 1, max = MAX_PASSWORD_CHARS, message = "must be 1 to 128 characters")
    )]
    pub password: Option<String>,
}

#[derive(Deserialize, Validate)]
pub struct CodeBody {
    #[validate(
        required(message = "is required"),
        length(min = 1, max = MAX_CODE_CHARS, message = "must be 1 to 64 characters")
    )]
    pub code: Option<String>,
}

#[derive(Deserialize, Validate)]
pub struct DisableBody {
    #[validate(
        required(message = "is required"),
        length(min = 1, max = MAX_PASSWORD_CHARS, message = "must be 1 to 128 characters")
    )]
    pub password: Option<String>,
    #[validate(
        required(message = "is required"),
        length(min = 1, max = MAX_CODE_CHARS, message = "must be 1 to 64 characters")
    )]
    pub code: Option<String>,
}

/// A TOTP or recovery `code`, or a passkey's `flow_id` and `credential`.
#[derive(Deserialize, Validate)]
pub struct LoginMfaBody {
    #[validate(
        required(message = "is required"),
        length(min = 1, max = 256, message = "must be 1 to 256 characters")
    )]
    pub mfa_token: Option<String>,
    #[validate(length(min = 1, max = MAX_CODE_CHARS, message = "must be 1 to 64 characters"))]
    pub code: Option<String>,
    #[validate(length(min = 1, max = 64, message = "must be 1 to 64 characters"))]
    pub flow_id: Option<String>,
    pub credential: Option<serde_json::Value>,
}

impl LoginMfaBody {
    /// The answer the body carries: a code, or a passkey's response with its flow.
    fn answer(&mut self) -> Result<mfa::Answer, ApiError> {
        use crate::service::{FieldError, ServiceError};
        match (
            self.code.take(),
            self.flow_id.take(),
            self.credential.take(),
        ) {
            (Some(code), None, None) => Ok(mfa::Answer::Code(code)),
            (None, Some(flow_id), Some(credential)) => Ok(mfa::Answer::Passkey {
                flow_id,
                credential,
            }),
            (None, None, None) => Err(ServiceError::Validation(vec![FieldError::new(
                "code",
                "is required (or flow_id and credential, for a passkey)",
            )])
            .into()),
            (Some(_), _, _) => Err(ServiceError::Validation(vec![FieldError::new(
                "code",
                "send either code, or flow_id and credential, not both",
            )])
            .into()),
            (None, flow_id, _) => Err(ServiceError::Validation(vec![FieldError::new(
                if flow_id.is_some() {
                    "credential"
                } else {
                    "flow_id"
                },
                "is required with a passkey's answer",
            )])
            .into()),
        }
    }
}

#[derive(Serialize)]
struct EnrolmentDto {
    secret: String,
    otpauth_uri: String,
    /// The URI as a QR code (an SVG document): the console shows it; an app may too.
    #[serde(skip_serializing_if = "Option::is_none")]
    otpauth_qr_svg: Option<String>,
}

#[derive(Serialize)]
struct RecoveryCodesDto {
    recovery_codes: Vec<String>,
}

/// Secrets shown once: never cached anywhere on the way.
fn no_store(mut res: actix_web::HttpResponseBuilder, body: impl Serialize) -> HttpResponse {
    res.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"))
        .json(body)
}

pub async fn start_totp(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
    meta: ClientMeta,
    Json(body): Json<PasswordBody>,
) -> Result<HttpResponse, ApiError> {
    let body = validated(body)?;
    let enrolment =
        mfa::start_enrolment(&state, caller, body.password.unwrap_or_default(), &meta).await?;
    Ok(no_store(
        HttpResponse::Ok(),
        EnrolmentDto {
            secret: enrolment.secret,
            otpauth_qr_svg: super::qr::svg(&enrolment.otpauth_uri),
            otpauth_uri: enrolment.otpauth_uri,
        },
    ))
}

pub async fn confirm_totp(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
    meta: ClientMeta,
    Json(body): Json<CodeBody>,
) -> Result<HttpResponse, ApiError> {
    let body = validated(body)?;
    let recovery_codes =
        mfa::confirm_enrolment(&state, caller, body.code.unwrap_or_default(), &meta).await?;
    Ok(no_store(
        HttpResponse::Ok(),
        RecoveryCodesDto { recovery_codes },
    ))
}

pub async fn regenerate_recovery_codes(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
    meta: ClientMeta,
    Json(body): Json<CodeBody>,
) -> Result<HttpResponse, ApiError> {
    let body = validated(body)?;
    let recovery_codes =
        mfa::regenerate_recovery_codes(&state, caller, body.code.unwrap_or_default(), &meta)
            .await?;
    Ok(no_store(
        HttpResponse::Ok(),
        RecoveryCodesDto { recovery_codes },
    ))
}

pub async fn disable(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
    meta: ClientMeta,
    Json(body): Json<DisableBody>,
) -> Result<HttpResponse, ApiError> {
    let body = validated(body)?;
    mfa::disable(
        &state,
        caller,
        body.password.unwrap_or_default(),
        body.code.unwrap_or_default(),
        &meta,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn login(
    state: web::Data<AppState>,
    meta: ClientMeta,
    Json(body): Json<LoginMfaBody>,
) -> Result<HttpResponse, ApiError> {
    let mut body = validated(body)?;
    let answer = body.answer()?;
    let token = body.mfa_token.unwrap_or_default();
    let pair = mfa::login(&state, &token, answer, &meta).await?;
    Ok(token_response(
        HttpResponse::Ok(),
        TokenResponse::from(pair),
    ))
}

pub async fn admin_reset(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    meta: ClientMeta,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    mfa::admin_reset(&state, Some(caller.user.id), id, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}
