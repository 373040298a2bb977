//! The mail endpoints (#19): verification, password reset, email change, and the admin
//! views of a user's mail. Without `GATEHOUSE_SMTP_URL` every one answers 404.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::{HttpResponse, web};
use serde::{Deserialize, Serialize};
use serde_json::json;
use validator::Validate;

use super::dto::{UserDto, email_rule, new_password_rule};
use super::error::ApiError;
use super::extract::{Admin, Bearer, Json, path_id};
use super::limiter::{LimitTier, LimitVerdict, RateLimiters};
use super::validated;
use crate::crypto::sha256;
use crate::domain::{Email, NewPassword, UserId};
use crate::service::{AppState, ClientMeta, FieldError, mail};
use crate::storage::mail::MailDelivery;

/// Longest token accepted before it is looked at (ours are 43 characters).
const MAX_TOKEN_CHARS: u64 = 512;

#[derive(Deserialize, Validate)]
pub struct ForgotRequest {
    #[validate(required(message = "is required"), custom(function = "email_rule"))]
    pub email: Option<String>,
}

#[derive(Deserialize, Validate)]
pub struct TokenRequest {
    #[validate(
        required(message = "is required"),
        length(min = 1, max = MAX_TOKEN_CHARS, message = "must be 1 to 512 characters")
    )]
    pub token: Option<String>,
}

#[derive(Deserialize, Validate)]
pub struct ResetRequest {
    #[validate(
        required(message = "is required"),
        length(min = 1, max = MAX_TOKEN_CHARS, message = "must be 1 to 512 characters")
    )]
    pub token: Option<String>,
    #[validate(
        required(message = "is required"),
        custom(function = "new_password_rule")
    )]
    pub new_password: Option<String>,
}

#[derive(Deserialize, Validate)]
pub struct EmailChangeRequest {
    #[validate(required(message = "is required"), custom(function = "email_rule"))]
    pub new_email: Option<String>,
    #[validate(
        required(message = "is required"),
        length(min = 1, max = 128, message = "must be 1 to 128 characters")
    )]
    pub password: Option<String>,
}

#[derive(Serialize)]
struct DeliveryDto {
    id: String,
    kind: String,
    status: String,
    attempts: u32,
    created_at: String,
    finished_at: Option<String>,
}

impl From<MailDelivery> for DeliveryDto {
    fn from(d: MailDelivery) -> Self {
        let t =
            |t: chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Self {
            id: d.id.to_string(),
            kind: d.kind,
            status: d.status,
            attempts: d.attempts,
            created_at: t(d.created_at),
            finished_at: d.finished_at.map(t),
        }
    }
}

fn parsed_email(field: &str, raw: &str) -> Result<Email, ApiError> {
    Email::parse(raw).map_err(|m| ApiError::validation(vec![FieldError::new(field, m)]))
}

fn mail_on(state: &AppState) -> Result<(), ApiError> {
    state
        .mail
        .as_ref()
        .map(drop)
        .ok_or_else(ApiError::not_found)
}

fn accepted() -> HttpResponse {
    HttpResponse::Accepted().json(json!({}))
}

/// The limiter bucket an address counts under: a hash of it as an IPv6 /64 in
/// `0100::/16`, so that the limiter (in memory or in Redis) counts per address with the
/// same tier and store as per IP. That range is IETF-reserved (within `::/8`, beside
/// RFC 6666's discard prefix): no client comes from there.
fn address_bucket(email: &Email) -> IpAddr {
    let h = sha256(format!("mail-address:{}", email.as_str()).as_bytes());
    let mut bytes = [0u8; 16];
    bytes[0] = 0x01;
    // The limiter counts IPv6 per /64: the hash goes in the bits it keeps.
    bytes[2..8].copy_from_slice(&h[..6]);
    IpAddr::V6(Ipv6Addr::from(bytes))
}

/// Counts one request against `email`'s budget, known or not.
async fn limit_address(
    state: &AppState,
    limiters: &RateLimiters,
    email: &Email,
) -> Result<(), ApiError> {
    match limiters
        .check(LimitTier::Login, address_bucket(email))
        .await
    {
        LimitVerdict::Allowed => Ok(()),
        LimitVerdict::Limited { retry_after_secs } => {
            state.metrics.rate_limited("mail_address");
            Err(ApiError::rate_limited(retry_after_secs))
        }
        LimitVerdict::StoreUnavailable => {
            if limiters.on_store_error().refuses(true) {
                Err(ApiError::unavailable())
            } else {
                Ok(())
            }
        }
    }
}

pub async fn forgot(
    state: web::Data<AppState>,
    limiters: web::Data<RateLimiters>,
    meta: ClientMeta,
    Json(body): Json<ForgotRequest>,
) -> Result<HttpResponse, ApiError> {
    mail_on(&state)?;
    let body = validated(body)?;
    let email = parsed_email("email", body.email.as_deref().unwrap_or_default())?;
    limit_address(&state, &limiters, &email).await?;
    mail::forgot(state.into_inner(), email, meta).await?;
    Ok(accepted())
}

pub async fn reset(
    state: web::Data<AppState>,
    meta: ClientMeta,
    Json(body): Json<ResetRequest>,
) -> Result<HttpResponse, ApiError> {
    mail_on(&state)?;
    let body = validated(body)?;
    let password = NewPassword::parse(body.new_password.as_deref().unwrap_or_default())
        .map_err(|m| ApiError::validation(vec![FieldError::new("new_password", m)]))?;
    mail::reset(
        &state,
        body.token.as_deref().unwrap_or_default(),
        password,
        &meta,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn verify(
    state: web::Data<AppState>,
    meta: ClientMeta,
    Json(body): Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    mail_on(&state)?;
    let body = validated(body)?;
    let user = mail::verify(&state, body.token.as_deref().unwrap_or_default(), &meta).await?;
    Ok(HttpResponse::Ok().json(UserDto::from(user)))
}

pub async fn resend_verification(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
    meta: ClientMeta,
) -> Result<HttpResponse, ApiError> {
    mail_on(&state)?;
    mail::resend_verification(&state, &caller, &meta).await?;
    Ok(accepted())
}

pub async fn change_email(
    state: web::Data<AppState>,
    Bearer(caller): Bearer,
    meta: ClientMeta,
    Json(body): Json<EmailChangeRequest>,
) -> Result<HttpResponse, ApiError> {
    mail_on(&state)?;
    let body = validated(body)?;
    let new_email = parsed_email("new_email", body.new_email.as_deref().unwrap_or_default())?;
    let password = body.password.unwrap_or_default();
    mail::change_email(&state, caller, new_email, password, &meta).await?;
    Ok(accepted())
}

/// `GET /v1/admin/users/{id}/mail`: the user's newest mails, status only.
pub async fn user_mail(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id: UserId = path_id(&id)?;
    if state.db(move |s| s.account_by_id(id)).await?.is_none() {
        return Err(ApiError::not_found());
    }
    let mails = state.db(move |s| s.user_mail(id, 50)).await?;
    Ok(HttpResponse::Ok().json(json!({
        "mails": mails.into_iter().map(DeliveryDto::from).collect::<Vec<_>>(),
    })))
}

/// `POST /v1/admin/users/{id}/password-reset`: a reset mail to the user (none to a
/// disabled one, as from `forgot`).
pub async fn send_reset(
    state: web::Data<AppState>,
    Admin(_caller): Admin,
    meta: ClientMeta,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    mail_on(&state)?;
    let id: UserId = path_id(&id)?;
    mail::admin_send_reset(&state, id, &meta).await?;
    Ok(accepted())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_counts_under_a_bucket_of_its_own_that_no_client_has() {
        let a = address_bucket(&Email::parse("a@example.com").expect("email"));
        let b = address_bucket(&Email::parse("b@example.com").expect("email"));
        assert_ne!(a, b);
        assert_eq!(super::super::client_ip::client_bucket(a), a);
        let IpAddr::V6(v6) = a else { panic!("v6") };
        assert_eq!(v6.segments()[0], 0x0100);
    }
}
