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

/// What both discovery documents say: how to verify our tokens, and where a service
/// client gets, introspects and revokes tokens.
fn metadata(issuer: &str) -> serde_json::Value {
    json!({
        "issuer": issuer,
        "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["none", "client_secret_basic", "client_secret_post"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "subject_types_supported": ["public"],
        "response_types_supported": ["token"],
        "claims_supported": ["iss", "aud", "sub", "iat", "nbf", "exp", "jti", "sid", "role", "client_id", "scope"],
    })
}

/// `GET /.well-known/openid-configuration` (OpenID Connect Discovery 1.0 §3, the parts
/// that describe how to verify our tokens and reach the client endpoints).
pub async fn openid_configuration(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .json(metadata(&state.policy.tokens.issuer))
}

/// `GET /.well-known/oauth-authorization-server` (RFC 8414 §3): the same document.
pub async fn oauth_authorization_server(state: web::Data<AppState>) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .json(metadata(&state.policy.tokens.issuer))
}
