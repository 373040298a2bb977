//! `/oauth/token`, `/oauth/introspect` and `/oauth/revoke`: form-encoded requests
//! (RFC 6749 §4.4, RFC 7662, RFC 7009) and RFC 6749 §5.2 error bodies, here and only
//! here; the rest of the API keeps the contract's own error shape.

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::{StatusCode, header};
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, HttpResponse, web};
use base64::Engine as _;
use serde::Serialize;

use super::settings::HttpSettings;
use crate::domain::client::SCOPE_INTROSPECT;
use crate::domain::error_chain;
use crate::service::clients::{self, OAuthError};
use crate::service::introspection::{self, Active};
use crate::service::{AppState, ClientMeta, ServiceError};

/// An RFC 6749 §5.2 error response.
#[derive(Debug)]
pub struct OAuthResponseError(pub OAuthError);

impl From<OAuthError> for OAuthResponseError {
    fn from(e: OAuthError) -> Self {
        Self(e)
    }
}

impl From<ServiceError> for OAuthResponseError {
    fn from(e: ServiceError) -> Self {
        Self(OAuthError::from(e))
    }
}

impl std::fmt::Display for OAuthResponseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    error_description: &'a str,
}

impl actix_web::ResponseError for OAuthResponseError {
    fn status_code(&self) -> StatusCode {
        self.parts().0
    }

    fn error_response(&self) -> HttpResponse {
        let (status, error, description) = self.parts();
        // Logged here, once, with the whole chain of causes, as `ApiError` does.
        match &self.0 {
            OAuthError::Service(e @ ServiceError::Unavailable { .. }) => {
                tracing::warn!(error = %error_chain(e), "answering 503");
            }
            OAuthError::Service(e) => tracing::error!(error = %error_chain(e), "answering 500"),
            _ => {}
        }
        let mut res = HttpResponse::build(status);
        res.insert_header((header::CACHE_CONTROL, "no-store"))
            .insert_header((header::PRAGMA, "no-cache"));
        match &self.0 {
            // RFC 6749 §5.2: a 401 names the scheme the client may authenticate with.
            OAuthError::InvalidClient => {
                res.insert_header((header::WWW_AUTHENTICATE, r#"Basic realm="gatehouse""#));
            }
            OAuthError::TooManyAttempts { retry_after_secs } => {
                res.insert_header((header::RETRY_AFTER, retry_after_secs.to_string()));
            }
            OAuthError::Service(ServiceError::Unavailable { .. }) => {
                res.insert_header((header::RETRY_AFTER, "5"));
            }
            _ => {}
        }
        res.json(ErrorBody {
            error,
            error_description: description,
        })
    }
}

impl OAuthResponseError {
    fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match &self.0 {
            OAuthError::InvalidRequest(why) => (S::BAD_REQUEST, "invalid_request", why),
            OAuthError::InvalidClient => (
                S::UNAUTHORIZED,
                "invalid_client",
                "Client authentication failed.",
            ),
            OAuthError::UnsupportedGrantType => (
                S::BAD_REQUEST,
                "unsupported_grant_type",
                "Only grant_type=client_credentials is supported.",
            ),
            OAuthError::InvalidScope => (
                S::BAD_REQUEST,
                "invalid_scope",
                "The scope asked for is not the client's.",
            ),
            OAuthError::InsufficientScope => (
                S::FORBIDDEN,
                "insufficient_scope",
                "This client does not hold the scope this endpoint needs.",
            ),
            OAuthError::TooManyAttempts { .. } => (
                S::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "Too many failed client authentications; retry later.",
            ),
            OAuthError::Service(e) => match e {
                ServiceError::Unavailable { .. } => (
                    S::SERVICE_UNAVAILABLE,
                    "temporarily_unavailable",
                    "The service cannot answer now; retry shortly.",
                ),
                _ => (
                    S::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "Something went wrong on our side.",
                ),
            },
        }
    }
}

/// A form body's parameters (`application/x-www-form-urlencoded`, at most 16 KiB, in
/// time), each at most once (RFC 6749 §3.2).
pub struct Form(Vec<(String, String)>);

impl Form {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn parse(body: &[u8]) -> Result<Self, OAuthError> {
        let text = std::str::from_utf8(body)
            .map_err(|_| OAuthError::InvalidRequest("The body is not valid UTF-8."))?;
        let mut out: Vec<(String, String)> = Vec::new();
        for pair in text.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (k, v) = (form_decode(k)?, form_decode(v)?);
            if out.iter().any(|(seen, _)| *seen == k) {
                return Err(OAuthError::InvalidRequest(
                    "A parameter is repeated (RFC 6749 section 3.2).",
                ));
            }
            out.push((k, v));
        }
        Ok(Self(out))
    }
}

/// One `application/x-www-form-urlencoded` name or value: `+` is a space, then
/// percent-decoding, then UTF-8.
fn form_decode(raw: &str) -> Result<String, OAuthError> {
    let spaced = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| OAuthError::InvalidRequest("A parameter is not valid UTF-8."))
}

impl FromRequest for Form {
    type Error = OAuthResponseError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, OAuthResponseError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_form = req
            .mime_type()
            .ok()
            .flatten()
            .is_some_and(|m| m.essence_str() == "application/x-www-form-urlencoded");
        let body = web::Bytes::from_request(req, payload);
        let timeout = req
            .app_data::<web::Data<HttpSettings>>()
            .map_or(std::time::Duration::from_secs(10), |s| s.body_timeout);
        Box::pin(async move {
            if !is_form {
                return Err(OAuthError::InvalidRequest(
                    "Send the body as application/x-www-form-urlencoded.",
                )
                .into());
            }
            let Ok(read) = tokio::time::timeout(timeout, body).await else {
                return Err(OAuthError::InvalidRequest("The body did not arrive in time.").into());
            };
            let bytes = read.map_err(|_| {
                OAuthError::InvalidRequest("The body could not be read (at most 16 KiB).")
            })?;
            Ok(Form::parse(&bytes)?)
        })
    }
}

/// The client credentials of a request: HTTP Basic (`client_secret_basic`, id and secret
/// form-encoded first, RFC 6749 §2.3.1) or the form's `client_id` and `client_secret`
/// (`client_secret_post`). `None` when it has neither; both at once is refused (§2.3).
fn credentials(req: &HttpRequest, form: &Form) -> Result<Option<(String, String)>, OAuthError> {
    let basic = match req.headers().get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| OAuthError::InvalidClient)?;
            let (scheme, rest) = value.split_once(' ').ok_or(OAuthError::InvalidClient)?;
            if !scheme.eq_ignore_ascii_case("basic") {
                return Err(OAuthError::InvalidClient);
            }
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest.trim())
                .map_err(|_| OAuthError::InvalidClient)?;
            let text = String::from_utf8(decoded).map_err(|_| OAuthError::InvalidClient)?;
            let (id, secret) = text.split_once(':').ok_or(OAuthError::InvalidClient)?;
            Some((form_decode(id)?, form_decode(secret)?))
        }
    };
    let posted = match (form.get("client_id"), form.get("client_secret")) {
        (Some(id), Some(secret)) => Some((id.to_owned(), secret.to_owned())),
        (None, None) => None,
        // An id alone is a public client, which gatehouse does not have.
        _ if basic.is_none() => return Err(OAuthError::InvalidClient),
        _ => None,
    };
    match (basic, posted) {
        (Some(_), Some(_)) => Err(OAuthError::InvalidRequest(
            "Authenticate the client one way only: HTTP Basic or the form's client_secret.",
        )),
        (Some(c), None) | (None, Some(c)) => Ok(Some(c)),
        (None, None) => Ok(None),
    }
}

/// Client ids and secrets longer than this are refused unread: ours are 36 and 43.
const MAX_CREDENTIAL: usize = 256;

async fn authenticated(
    state: &AppState,
    req: &HttpRequest,
    form: &Form,
    meta: &ClientMeta,
) -> Result<Option<crate::domain::Client>, OAuthError> {
    let Some((id, secret)) = credentials(req, form)? else {
        return Ok(None);
    };
    if id.len() > MAX_CREDENTIAL || secret.len() > MAX_CREDENTIAL {
        return Err(OAuthError::InvalidClient);
    }
    clients::authenticate(state, &id, &secret, meta)
        .await
        .map(Some)
}

#[derive(Serialize)]
struct TokenBody<'a> {
    access_token: &'a str,
    token_type: &'static str,
    expires_in: u64,
    scope: &'a str,
}

/// `POST /oauth/token`, `grant_type=client_credentials`.
pub async fn token(
    state: web::Data<AppState>,
    meta: ClientMeta,
    req: HttpRequest,
    form: Form,
) -> Result<HttpResponse, OAuthResponseError> {
    let grant = form.get("grant_type");
    if grant.is_none() {
        return Err(OAuthError::InvalidRequest("grant_type is required.").into());
    }
    let client = authenticated(&state, &req, &form, &meta)
        .await?
        .ok_or(OAuthError::InvalidClient)?;
    if grant != Some("client_credentials") {
        return Err(OAuthError::UnsupportedGrantType.into());
    }
    let issued = clients::issue(&state, &client, form.get("scope"))?;
    Ok(super::token_response(
        HttpResponse::Ok(),
        TokenBody {
            access_token: &issued.access_token,
            token_type: "Bearer",
            expires_in: issued.expires_in,
            scope: &issued.scope,
        },
    ))
}

#[derive(Serialize)]
struct IntrospectionBody {
    active: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    live: Option<LiveBody>,
}

#[derive(Serialize)]
struct LiveBody {
    token_type: &'static str,
    sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sid: Option<String>,
    exp: i64,
    iat: i64,
    iss: String,
    aud: String,
}

impl From<Active> for LiveBody {
    fn from(a: Active) -> Self {
        Self {
            token_type: a.token_type,
            sub: a.sub,
            client_id: a.client_id,
            scope: a.scope,
            sid: a.sid.map(|s| s.to_string()),
            exp: a.exp,
            iat: a.iat,
            iss: a.iss,
            aud: a.aud,
        }
    }
}

/// `POST /oauth/introspect`, for a client holding the scope `introspect`.
pub async fn introspect(
    state: web::Data<AppState>,
    meta: ClientMeta,
    req: HttpRequest,
    form: Form,
) -> Result<HttpResponse, OAuthResponseError> {
    let client = authenticated(&state, &req, &form, &meta)
        .await?
        .ok_or(OAuthError::InvalidClient)?;
    if !client.scopes.contains(SCOPE_INTROSPECT) {
        return Err(OAuthError::InsufficientScope.into());
    }
    let token = form
        .get("token")
        .ok_or(OAuthError::InvalidRequest("token is required."))?;
    // `token_type_hint` is only a hint (RFC 7662 §2.1): the token's shape decides.
    let active = introspection::introspect(&state, token).await?;
    Ok(super::token_response(
        HttpResponse::Ok(),
        IntrospectionBody {
            active: active.is_some(),
            live: active.map(Into::into),
        },
    ))
}

/// `POST /oauth/revoke`: 200 whatever the token. Client authentication is optional (a
/// refresh token is a bearer secret already), but credentials that are sent must be
/// right.
pub async fn revoke(
    state: web::Data<AppState>,
    meta: ClientMeta,
    req: HttpRequest,
    form: Form,
) -> Result<HttpResponse, OAuthResponseError> {
    authenticated(&state, &req, &form, &meta).await?;
    let token = form
        .get("token")
        .ok_or(OAuthError::InvalidRequest("token is required."))?;
    introspection::revoke(&state, token, &meta).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish())
}
