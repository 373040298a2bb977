//! The one error type every endpoint answers with, in the contract's JSON shape.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::error_chain;
use crate::service::{FieldError, ServiceError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Vec<FieldError>,
    pub retry_after_secs: Option<u64>,
    /// Whether a bearer token was presented, for `WWW-Authenticate` (RFC 6750 §3).
    pub bearer_presented: bool,
    /// The `mfa_required` answer to a right password: the token and the methods.
    pub mfa_challenge: Option<Box<(String, Vec<&'static str>)>>,
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<Vec<Detail<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mfa_token: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    methods: Option<&'a [&'static str]>,
}

#[derive(Serialize)]
struct Detail<'a> {
    field: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Vec::new(),
            retry_after_secs: None,
            bearer_presented: false,
            mfa_challenge: None,
        }
    }

    pub fn validation(mut details: Vec<FieldError>) -> Self {
        details.sort_by(|a, b| a.field.cmp(&b.field));
        Self {
            details,
            ..Self::new(
                StatusCode::BAD_REQUEST,
                "validation_failed",
                "The request has invalid fields; see details.",
            )
        }
    }

    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_json", message)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Nothing here.")
    }

    pub fn invalid_token(presented: bool) -> Self {
        Self {
            bearer_presented: presented,
            ..Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_token",
                "The access token is missing, invalid or expired.",
            )
        }
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests; retry later.",
            )
        }
    }

    pub fn unavailable() -> Self {
        Self {
            retry_after_secs: Some(5),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "service_unavailable",
                "The service cannot answer now; retry shortly.",
            )
        }
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "Something went wrong on our side.",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.code)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let details = (!self.details.is_empty()).then(|| {
            self.details
                .iter()
                .map(|d| Detail {
                    field: &d.field,
                    message: &d.message,
                })
                .collect()
        });
        let mut res = HttpResponse::build(self.status);
        res.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if let Some(secs) = self.retry_after_secs {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if self.status == StatusCode::UNAUTHORIZED && self.code == "invalid_token" {
            let challenge = if self.bearer_presented {
                r#"Bearer error="invalid_token""#
            } else {
                "Bearer"
            };
            res.insert_header((header::WWW_AUTHENTICATE, challenge));
        }
        res.json(Body {
            error: self.code,
            message: &self.message,
            details,
            mfa_token: self.mfa_challenge.as_deref().map(|(t, _)| t.as_str()),
            methods: self.mfa_challenge.as_deref().map(|(_, m)| m.as_slice()),
        })
    }
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        use StatusCode as S;
        match e {
            ServiceError::Validation(details) => ApiError::validation(details),
            ServiceError::EmailTaken => ApiError::new(
                S::CONFLICT,
                "email_taken",
                "An account with this email already exists.",
            ),
            ServiceError::InvalidCredentials => ApiError::new(
                S::UNAUTHORIZED,
                "invalid_credentials",
                "The email or password is incorrect.",
            ),
            ServiceError::TooManyAttempts { retry_after_secs } => ApiError {
                retry_after_secs: Some(retry_after_secs),
                ..ApiError::new(
                    S::TOO_MANY_REQUESTS,
                    "too_many_attempts",
                    "Too many failed attempts; retry later.",
                )
            },
            ServiceError::InvalidRefreshToken => ApiError::new(
                S::UNAUTHORIZED,
                "invalid_refresh_token",
                "The refresh token is unknown, expired or revoked.",
            ),
            ServiceError::RefreshTokenReused => ApiError::new(
                S::UNAUTHORIZED,
                "refresh_token_reused",
                "This refresh token was already used; the session has been revoked.",
            ),
            ServiceError::InvalidToken => ApiError::invalid_token(true),
            ServiceError::Forbidden => ApiError::new(
                S::FORBIDDEN,
                "forbidden",
                "This endpoint needs the admin role.",
            ),
            ServiceError::NotFound => ApiError::not_found(),
            ServiceError::MfaRequired { mfa_token, methods } => ApiError {
                mfa_challenge: Some(Box::new((mfa_token, methods))),
                ..ApiError::new(
                    S::UNAUTHORIZED,
                    "mfa_required",
                    "The password is right; send a second-factor code to POST /v1/login/mfa \
                     with this mfa_token.",
                )
            },
            ServiceError::InvalidMfaCode => ApiError::new(
                S::UNAUTHORIZED,
                "invalid_mfa_code",
                "The code is wrong, already used, or not current.",
            ),
            ServiceError::InvalidMfaToken => ApiError::new(
                S::UNAUTHORIZED,
                "invalid_mfa_token",
                "The mfa_token is unknown, used or expired; log in again.",
            ),
            ServiceError::MfaAlreadyEnabled => ApiError::new(
                S::CONFLICT,
                "mfa_already_enabled",
                "A second factor is already on; turn it off first.",
            ),
            ServiceError::MfaNotEnabled => ApiError::new(
                S::CONFLICT,
                "mfa_not_enabled",
                "No second factor is on for this account.",
            ),
            ServiceError::NoPendingEnrolment => ApiError::new(
                S::BAD_REQUEST,
                "no_pending_enrolment",
                "Start an enrolment with POST /v1/me/mfa/totp first.",
            ),
            ServiceError::AdminMfaRequired => ApiError::new(
                S::FORBIDDEN,
                "mfa_required",
                "Admin endpoints need a session opened with a second factor; enrol one and \
                 log in again.",
            ),
            ServiceError::InvalidMailToken => ApiError::new(
                S::BAD_REQUEST,
                "invalid_mail_token",
                "The link is unknown, used, expired or superseded; ask for a new mail.",
            ),
            ServiceError::AlreadyVerified => ApiError::new(
                S::CONFLICT,
                "already_verified",
                "This address is verified already.",
            ),
            ServiceError::InvalidFlow => ApiError::new(
                S::BAD_REQUEST,
                "invalid_flow",
                "The flow_id is unknown, used, expired or for another ceremony; ask for new \
                 options.",
            ),
            ServiceError::InvalidPasskey => ApiError::new(
                S::UNAUTHORIZED,
                "invalid_passkey",
                "The passkey response was refused.",
            ),
            ServiceError::PasskeyRejected => ApiError::new(
                S::BAD_REQUEST,
                "invalid_passkey",
                "The passkey response was refused: its challenge, origin, RP ID, signature or \
                 flags do not match this registration.",
            ),
            ServiceError::PasskeyExists => ApiError::new(
                S::CONFLICT,
                "passkey_exists",
                "This passkey is registered already.",
            ),
            // Logged here, once, with the whole chain of causes; the client is told
            // only the contract's error.
            e @ ServiceError::Unavailable { .. } => {
                tracing::warn!(error = %error_chain(&e), "answering 503");
                ApiError::unavailable()
            }
            e @ ServiceError::Internal { .. } => {
                tracing::error!(error = %error_chain(&e), "answering 500");
                ApiError::internal()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::ResponseError as _;

    use super::*;

    /// The cause reaches the log line whole, and the client not at all.
    #[test]
    fn a_cause_is_kept_for_the_log_and_never_sent() {
        let cause = std::io::Error::other("relation users: disk quota exceeded");
        let e = ServiceError::internal_because("storage", cause);
        let logged = error_chain(&e);
        assert_eq!(
            logged,
            "internal error: storage: relation users: disk quota exceeded"
        );
        let response = ApiError::from(e).error_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = actix_web::body::to_bytes(response.into_body());
        let body = body_text(body);
        assert!(
            !body.contains("quota") && !body.contains("storage"),
            "{body}"
        );
    }

    /// The body of a finished response (its bytes are all there: no I/O to wait for).
    fn body_text(
        body: impl std::future::Future<Output = Result<actix_web::web::Bytes, impl std::fmt::Debug>>,
    ) -> String {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let bytes = runtime.block_on(body).expect("the body");
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn unavailable_answers_503_with_retry_after() {
        let response = ApiError::from(ServiceError::unavailable("queue")).error_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
            Some("5")
        );
    }
}
