//! Cross-cutting request handling: per-IP rate limits, request logs and metrics.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError as _, web};
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::client_ip::{client_bucket, client_ip};
use super::error::ApiError;
use crate::config::{RateLimits, Tier};
use crate::service::AppState;

/// The per-client token buckets (an IPv4 address or an IPv6 /64), one per strict endpoint and one per general tier, so a flood
/// of one kind (logins) never spends the budget of another (refreshes).
///
/// Why governor behind our own middleware: it is MIT-licensed (actix-governor is GPL),
/// its GCRA buckets cost one atomic per check, and owning the middleware lets the 429
/// carry the contract's error shape and `Retry-After`.
pub struct RateLimiters {
    enabled: bool,
    signup: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    login: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    refresh: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    logout: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    writes: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    reads: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

fn limiter(tier: Tier) -> Arc<DefaultKeyedRateLimiter<IpAddr>> {
    let rate = NonZeroU32::new(tier.per_minute).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(tier.burst).unwrap_or(NonZeroU32::MIN);
    Arc::new(RateLimiter::keyed(
        Quota::per_minute(rate).allow_burst(burst),
    ))
}

impl RateLimiters {
    pub fn new(cfg: &RateLimits) -> Self {
        Self {
            enabled: cfg.enabled,
            signup: limiter(cfg.auth),
            login: limiter(cfg.auth),
            refresh: limiter(cfg.auth),
            logout: limiter(cfg.auth),
            writes: limiter(cfg.writes),
            reads: limiter(cfg.reads),
        }
    }

    /// Forgets clients whose buckets are full again, so memory tracks active clients.
    pub fn forget_idle(&self) {
        for l in [
            &self.signup,
            &self.login,
            &self.refresh,
            &self.logout,
            &self.writes,
            &self.reads,
        ] {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

#[derive(Clone, Copy)]
enum Bucket {
    Signup,
    Login,
    Refresh,
    Logout,
    /// Reads for GET, writes for everything else.
    ByMethod,
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
    if !limiters.enabled {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let (tier, limiter) = match bucket {
        Bucket::Signup => ("signup", &limiters.signup),
        Bucket::Login => ("login", &limiters.login),
        Bucket::Refresh => ("refresh", &limiters.refresh),
        Bucket::Logout => ("logout", &limiters.logout),
        Bucket::ByMethod if req.method() == Method::GET => ("reads", &limiters.reads),
        Bucket::ByMethod => ("writes", &limiters.writes),
    };
    let ip = client_ip(req.request(), &state).unwrap_or(IpAddr::from([0, 0, 0, 0]));
    match limiter.check_key(&client_bucket(ip)) {
        Ok(()) => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
        Err(not_until) => {
            state.metrics.rate_limited(tier);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            let res = ApiError::rate_limited(secs.max(1)).error_response();
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
    const ROUTES: [&str; 23] = [
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
}
