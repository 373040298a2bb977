//! Cross-cutting request handling: per-IP rate limits, request logs and metrics.

use std::net::IpAddr;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError as _, web};

use super::client_ip::{client_bucket, client_ip};
use super::error::ApiError;
use super::limiter::{LimitTier, LimitVerdict, RateLimiters};
use crate::service::AppState;

/// Which budget a route spends. Owning the middleware (rather than a limiter crate's)
/// lets the 429 carry the contract's error shape and `Retry-After`.
#[derive(Clone, Copy)]
enum Bucket {
    Signup,
    Login,
    Refresh,
    Logout,
    /// Reads for GET and HEAD, writes for everything else.
    ByMethod,
    /// As `ByMethod`, on a resource whose writes take the account's password.
    ByMethodPasswordWrites,
    /// Reads by a service client that authenticates with its secret (introspection).
    ClientReads,
}

impl Bucket {
    /// The tier, and whether the request takes a password: those are refused while the
    /// shared store is down (see `OnStoreError`), since the limit is what bounds guessing.
    fn classify(self, method: &Method) -> (LimitTier, bool) {
        // HEAD is a GET without the body: an uptime checker's probe is a read, and must
        // not spend (or be refused by) the writes budget.
        let read = method == Method::GET || method == Method::HEAD;
        match self {
            Bucket::Signup => (LimitTier::Signup, true),
            Bucket::Login => (LimitTier::Login, true),
            // Refresh tokens and logouts carry 256-bit random tokens: nothing to guess,
            // and refusing them would log every user out while Redis is down.
            Bucket::Refresh => (LimitTier::Refresh, false),
            Bucket::Logout => (LimitTier::Logout, false),
            Bucket::ByMethod if read => (LimitTier::Reads, false),
            Bucket::ByMethod => (LimitTier::Writes, false),
            Bucket::ByMethodPasswordWrites if read => (LimitTier::Reads, false),
            Bucket::ByMethodPasswordWrites => (LimitTier::Writes, true),
            Bucket::ClientReads => (LimitTier::Reads, true),
        }
    }
}

async fn limit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
    bucket: Bucket,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    let (Some(state), Some(limiters)) = (
        req.app_data::<web::Data<AppState>>().cloned(),
        req.app_data::<web::Data<RateLimiters>>().cloned(),
    ) else {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    };
    let (tier, takes_password) = bucket.classify(req.method());
    let ip = client_ip(req.request(), &state).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    let refusal = match limiters.check(tier, client_bucket(ip)).await {
        LimitVerdict::Allowed => None,
        LimitVerdict::Limited { retry_after_secs } => {
            state.metrics.rate_limited(tier.name());
            Some(ApiError::rate_limited(retry_after_secs))
        }
        LimitVerdict::StoreUnavailable => {
            let refused = limiters.on_store_error().refuses(takes_password);
            state
                .metrics
                .rate_limit_store_error(if refused { "refused" } else { "passed" });
            // 503, never 500: the client did nothing wrong and may retry shortly.
            refused.then(ApiError::unavailable)
        }
    };
    match refusal {
        None => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
        Some(error) => {
            let res = error.error_response();
            Ok(req.into_response(res).map_into_right_body())
        }
    }
}

pub async fn limit_signup(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    limit(req, next, Bucket::Signup).await
}

pub async fn limit_login(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    limit(req, next, Bucket::Login).await
}

pub async fn limit_refresh(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    limit(req, next, Bucket::Refresh).await
}

pub async fn limit_logout(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    limit(req, next, Bucket::Logout).await
}

pub async fn limit_by_method(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    limit(req, next, Bucket::ByMethod).await
}

/// For `/v1/me` (DELETE takes the password) and `/v1/me/password`.
pub async fn limit_by_method_password_writes(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    limit(req, next, Bucket::ByMethodPasswordWrites).await
}

/// For `/oauth/introspect`: a POST that reads, with a client secret.
pub async fn limit_client_reads(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, Error> {
    limit(req, next, Bucket::ClientReads).await
}

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// One log line and one metrics sample per request, tagged with a request id that is
/// also returned to the client for support tickets. Paths are logged without their
/// query string; bodies and headers never are.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4().simple().to_string();
    let method = method_label(req.method());
    let path = req.path().to_owned();
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let mut res = next.call(req).await?;
    let took = started.elapsed();
    let status = res.status().as_u16();
    let route = res.request().match_pattern();
    if let Some(state) = state {
        state
            .metrics
            .request(route_label(route.as_deref()), method, status, took);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        res.headers_mut().insert(REQUEST_ID.clone(), v);
    }
    tracing::info!(
        request_id = %request_id,
        method = %method,
        path = %path,
        status,
        latency_ms = took.as_secs_f64() * 1000.0,
        "request"
    );
    Ok(res)
}

/// HTTP allows any token as a method (RFC 9110 §9.1), and each one a client makes up
/// would otherwise become a histogram kept for the life of the process and a log field
/// of the client's choosing. The registered methods keep their names; the rest are one.
fn method_label(method: &Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        "CONNECT" => "CONNECT",
        "TRACE" => "TRACE",
        _ => "other",
    }
}

/// Route patterns are a closed set, so metrics labels stay bounded whatever paths
/// clients send.
fn route_label(pattern: Option<&str>) -> &'static str {
    const ROUTES: [&str; 31] = [
        "/.well-known/jwks.json",
        "/.well-known/openid-configuration",
        "/healthz",
        "/readyz",
        "/metrics",
        "/v1/signup",
        "/v1/login",
        "/v1/refresh",
        "/v1/logout",
        "/v1/me",
        "/v1/me/sessions",
        "/v1/me/sessions/{id}",
        "/v1/me/password",
        "/v1/admin/users",
        "/v1/admin/users/{id}",
        "/v1/admin/users/{id}/sessions",
        "/v1/admin/sessions/{family_id}",
        "/v1/admin/audit",
        "/v1/admin/keys",
        "/v1/admin/stats",
        "/admin",
        "/admin/",
        "/admin/{file}",
        "/.well-known/oauth-authorization-server",
        "/v1/admin/clients",
        "/v1/admin/clients/{client_id}",
        "/v1/admin/clients/{client_id}/secret",
        "/v1/revocations",
        "/oauth/token",
        "/oauth/introspect",
        "/oauth/revoke",
    ];
    pattern
        .and_then(|p| ROUTES.iter().find(|r| **r == p).copied())
        .unwrap_or("unmatched")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_methods_share_one_label() {
        assert_eq!(method_label(&Method::PATCH), "PATCH");
        for raw in ["get", "FOO", "PROPFIND", "X-1"] {
            let m = Method::from_bytes(raw.as_bytes()).expect("a token");
            assert_eq!(method_label(&m), "other", "{raw}");
        }
    }

    #[test]
    fn head_spends_the_reads_budget_like_get() {
        for bucket in [Bucket::ByMethod, Bucket::ByMethodPasswordWrites] {
            assert_eq!(
                bucket.classify(&Method::HEAD),
                bucket.classify(&Method::GET)
            );
            assert_eq!(bucket.classify(&Method::HEAD), (LimitTier::Reads, false));
        }
    }
}
