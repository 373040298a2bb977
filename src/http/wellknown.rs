//! JWKS and discovery: public, cacheable, and never behind the login queue.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;

use super::settings::HttpSettings;
use crate::service::AppState;

/// `GET /.well-known/jwks.json`: bytes serialized once per key change, with a strong
/// ETag so caches revalidate with `If-None-Match` for a 304.
pub async fn jwks(
    state: web::Data<AppState>,
    http: web::Data<HttpSettings>,
    req: HttpRequest,
) -> HttpResponse {
    let keys = state.keys();
    let jwks = keys.jwks();
    let cache = format!("public, max-age={}", http.jwks_max_age.as_secs());
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| t.trim() == jwks.etag || t.trim() == "*")
        });
    let mut res = if matches {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::ETAG, jwks.etag.clone()));
    if matches {
        res.finish()
    } else {
        res.content_type("application/json").body(jwks.body.clone())
    }
}

/// `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §3, the parts
/// that describe how to verify our tokens).
pub async fn openid_configuration(state: web::Data<AppState>) -> HttpResponse {
    let issuer = &state.policy.tokens.issuer;
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .json(json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
            "id_token_signing_alg_values_supported": ["RS256"],
            "token_endpoint_auth_methods_supported": ["none"],
            "subject_types_supported": ["public"],
            "response_types_supported": ["token"],
            "claims_supported": ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "role"],
        }))
}
