//! Liveness, readiness and metrics.

use std::time::Duration;

use actix_web::{HttpResponse, web};
use serde_json::json;

use super::error::ApiError;
use super::limiter::RateLimiters;
use crate::domain::error_chain;
use crate::metrics::Gauges;
use crate::service::AppState;

/// Readiness gives the database this long to answer.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready when the database answers. The rate-limit store is reported but never makes a
/// replica unready: every replica shares the one Redis, so pulling them all from the load
/// balancer would turn "logins refused" into "nothing answers", token verification
/// (JWKS) included.
pub async fn readyz(
    state: web::Data<AppState>,
    limiters: web::Data<RateLimiters>,
) -> Result<HttpResponse, ApiError> {
    let ping = state.db(|s| s.ping());
    let (db, store) = tokio::join!(tokio::time::timeout(READY_TIMEOUT, ping), limiters.status());
    match db {
        Ok(Ok(())) => Ok(HttpResponse::Ok().json(json!({
            "status": "ready",
            "rate_limit_store": store.as_str(),
            "mail": mail_state(&state).await,
        }))),
        // Each failed check is logged with its cause (the SQLSTATE and the server's
        // message on PostgreSQL): "not ready" alone sends an operator guessing.
        Ok(Err(e)) => {
            tracing::warn!(error = %error_chain(&e), "not ready");
            Err(ApiError::unavailable())
        }
        Err(_) => {
            tracing::warn!(
                "not ready: the database did not answer within {} s",
                READY_TIMEOUT.as_secs()
            );
            Err(ApiError::unavailable())
        }
    }
}

/// Mail never makes a replica unready: an SMTP outage only keeps mail queued (it is
/// retried until it expires), and pulling replicas would stop logins too.
async fn mail_state(state: &web::Data<AppState>) -> serde_json::Value {
    let Some(mail) = state.mail.as_ref() else {
        return json!({ "status": "off" });
    };
    let smtp = mail.smtp_state().as_str();
    let now = state.now();
    match tokio::time::timeout(READY_TIMEOUT, state.db(|s| s.mail_stats())).await {
        Ok(Ok(stats)) => json!({
            "status": "on",
            "smtp": smtp,
            "queued": stats.queued + stats.retrying,
            "retrying": stats.retrying,
            "oldest_queued_age_secs": stats.oldest_queued.map(|t| (now - t).num_seconds().max(0)),
        }),
        _ => json!({ "status": "on", "smtp": smtp }),
    }
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let pool = state.store.pool_status();
    let gauges = Gauges {
        hash_queue_depth: state.hasher.queue_depth(),
        hash_in_flight: state.hasher.in_flight(),
        db_connections: pool.connections,
        db_idle_connections: pool.idle,
        db_engine_bytes: pool.engine_bytes,
    };
    let mut body = state.metrics.render(&gauges);
    if state.mail.is_some() {
        let now = state.now();
        if let Ok(Ok(stats)) =
            tokio::time::timeout(READY_TIMEOUT, state.db(|s| s.mail_stats())).await
        {
            body.push_str(&crate::metrics::render_outbox(&stats, now));
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(body)
}
