//! Request extractors: who the client is (IP, user agent) and who the caller is (bearer).

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};

use super::client_ip::{client_bucket, client_ip};
use super::error::ApiError;
use super::settings::HttpSettings;
use crate::service::caller::{self, Caller};
use crate::service::{AppState, ClientMeta, ServiceError};

/// User agents are stored per session; longer ones are cut, not refused.
const MAX_USER_AGENT: usize = 256;

pub fn state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(ApiError::internal)
}

pub fn client_meta(req: &HttpRequest, state: &AppState) -> ClientMeta {
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
    let ip = client_ip(req, state);
    ClientMeta {
        ip: ip.map(|ip| ip.to_string()),
        ip_bucket: ip.map(|ip| client_bucket(ip).to_string()),
        user_agent,
    }
}

impl FromRequest for ClientMeta {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(state(req).map(|s| client_meta(req, &s)))
    }
}

/// The bearer token of the `Authorization` header, if it has one of sane length.
fn bearer_token(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(token.trim().to_owned())
}

/// A verified caller (`/v1/me`): 401 `invalid_token` otherwise.
pub struct Bearer(pub Caller);

impl FromRequest for Bearer {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = state(&req)?;
            let presented = req.headers().contains_key(header::AUTHORIZATION);
            let Some(token) = bearer_token(&req) else {
                return Err(ApiError::invalid_token(presented));
            };
            match caller::authenticate(&state, &token).await {
                Ok(caller) => Ok(Bearer(caller)),
                Err(ServiceError::InvalidToken) => Err(ApiError::invalid_token(true)),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// A verified caller whose role, read from the database, is admin: 403 otherwise.
pub struct Admin(pub Caller);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bearer = Bearer::from_request(req, payload);
        let req = req.clone();
        Box::pin(async move {
            let Bearer(caller) = bearer.await?;
            caller.require_admin()?;
            let state = state(&req)?;
            crate::service::mfa::require_admin_mfa(&state, &caller)?;
            Ok(Admin(caller))
        })
    }
}

/// A JSON request body: `Content-Type: application/json` (or `+json`), at most
/// `MAX_BODY_BYTES` (413 beyond), valid UTF-8 as RFC 8259 §8.1 requires (serde_json
/// would skip invalid bytes inside ignored fields), then deserialized.
pub struct Json<T>(pub T);

impl<T: serde::de::DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req.mime_type().ok().flatten().is_some_and(|m| {
            m.type_() == mime::APPLICATION
                && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
        });
        let body = web::Bytes::from_request(req, payload);
        let timeout = req
            .app_data::<web::Data<HttpSettings>>()
            .map_or(std::time::Duration::from_secs(10), |s| s.body_timeout);
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::new(
                    actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "Send the body as JSON with Content-Type: application/json.",
                ));
            }
            let Ok(read) = tokio::time::timeout(timeout, body).await else {
                return Err(ApiError::new(
                    actix_web::http::StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "The request body did not arrive in time.",
                ));
            };
            let bytes = read.map_err(|e| match e.as_error::<actix_web::error::PayloadError>() {
                Some(actix_web::error::PayloadError::Overflow) => ApiError::new(
                    actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "The body is larger than 16 KiB.",
                ),
                _ => ApiError::invalid_json("The body could not be read."),
            })?;
            if std::str::from_utf8(&bytes).is_err() {
                return Err(ApiError::invalid_json("The body is not valid UTF-8."));
            }
            // serde would also take an array for a struct, its fields in order; the
            // contract's bodies are objects, and only objects.
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
            if first.is_some_and(|b| *b != b'{') {
                return Err(ApiError::invalid_json("The body must be a JSON object."));
            }
            match serde_json::from_slice::<T>(&bytes) {
                Ok(value) => Ok(Json(value)),
                Err(e) if e.is_data() => Err(ApiError::invalid_json(format!(
                    "A field has the wrong type: {}",
                    without_type_names(&e.to_string())
                ))),
                Err(_) => Err(ApiError::invalid_json("The body is not valid JSON.")),
            }
        })
    }
}

/// A path segment that must be a UUID; anything else names nothing, so 404.
pub fn path_id<T: std::str::FromStr>(raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found())
}

/// serde names our Rust types in its messages ("expected struct SignupRequest"); a
/// client needs to know only that an object was expected.
fn without_type_names(message: &str) -> String {
    const MARK: &str = "expected struct ";
    match message.find(MARK) {
        Some(at) => {
            let rest = &message[at + MARK.len()..];
            let name_end = rest.find(|c: char| !c.is_alphanumeric() && c != '_');
            let after = name_end.map_or("", |end| &rest[end..]);
            format!("{}expected a JSON object{after}", &message[..at])
        }
        None => message.to_owned(),
    }
}
