//! The HTTP surface: routes, body limits, error mapping. Handlers are short: extract,
//! call one service function, map the result.

mod admin;
mod auth;
pub mod client_ip;
mod clients;
pub mod console;
pub mod dto;
pub mod error;
pub mod extract;
mod health;
pub mod limiter;
mod mail;
mod me;
mod mfa;
pub mod middleware;
mod oauth;
mod passkeys;
mod qr;
pub mod settings;
mod wellknown;

use actix_web::error::QueryPayloadError;
use actix_web::http::header;
use actix_web::middleware::from_fn;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder, guard, web};
use serde::Serialize;
use validator::Validate;

use self::error::ApiError;
use crate::service::FieldError;

/// The contract's body limit.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Runs `validator` on a request body; every failing field is reported at once.
pub fn validated<T: Validate>(body: T) -> Result<T, ApiError> {
    match body.validate() {
        Ok(()) => Ok(body),
        Err(errors) => Err(ApiError::validation(dto::field_errors(&errors))),
    }
}

/// Token responses must never be cached (RFC 6749 §5.1).
fn token_response(mut res: HttpResponseBuilder, body: impl Serialize) -> HttpResponse {
    res.insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header((header::PRAGMA, "no-cache"))
        .json(body)
}

fn query_error(err: QueryPayloadError, _req: &HttpRequest) -> actix_web::Error {
    ApiError::validation(vec![FieldError::new("query", err.to_string())]).into()
}

async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found())
}

/// 405 in the contract's error shape, with the `Allow` header RFC 9110 §15.5.6 requires.
fn method_not_allowed(allow: &'static str) -> HttpResponse {
    use actix_web::ResponseError as _;
    let mut res = ApiError::new(
        actix_web::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This method is not allowed on this path.",
    )
    .error_response();
    res.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
    res
}

/// A resource whose unsupported methods answer 405, naming the `allow`ed ones.
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move { method_not_allowed(allow) }))
}

/// GET and HEAD on one handler (RFC 9110 §9.3.2: HEAD is GET without the body), so uptime
/// checkers that probe with HEAD get the GET's status and headers instead of a 405. actix
/// drops the body of a response to HEAD itself and keeps the GET's `Content-Length`.
fn read() -> actix_web::Route {
    web::route().guard(guard::Any(guard::Get()).or(guard::Head()))
}

/// Every route of the contract.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(web::QueryConfig::default().error_handler(query_error))
        .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
        .service(resource("/.well-known/jwks.json", "GET, HEAD").route(read().to(wellknown::jwks)))
        .service(
            resource("/.well-known/openid-configuration", "GET, HEAD")
                .route(read().to(wellknown::openid_configuration)),
        )
        .service(
            resource("/.well-known/oauth-authorization-server", "GET, HEAD")
                .route(read().to(wellknown::oauth_authorization_server)),
        )
        .service(resource("/healthz", "GET, HEAD").route(read().to(health::healthz)))
        .service(resource("/readyz", "GET, HEAD").route(read().to(health::readyz)))
        .service(resource("/metrics", "GET, HEAD").route(read().to(health::metrics)))
        .service(
            resource("/v1/signup", "POST")
                .wrap(from_fn(middleware::limit_signup))
                .route(web::post().to(auth::signup)),
        )
        .service(
            resource("/v1/login", "POST")
                .wrap(from_fn(middleware::limit_login))
                .route(web::post().to(auth::login)),
        )
        .service(
            resource("/v1/login/mfa", "POST")
                .wrap(from_fn(middleware::limit_login))
                .route(web::post().to(mfa::login)),
        )
        .service(
            resource("/v1/login/mfa/webauthn/options", "POST")
                .wrap(from_fn(middleware::limit_login))
                .route(web::post().to(passkeys::mfa_options)),
        )
        .service(
            resource("/v1/passkeys/login/options", "POST")
                .wrap(from_fn(middleware::limit_login))
                .route(web::post().to(passkeys::login_options)),
        )
        .service(
            resource("/v1/passkeys/login", "POST")
                .wrap(from_fn(middleware::limit_login))
                .route(web::post().to(passkeys::login)),
        )
        // Before `/v1/me/passkeys/{id}`, which would take `options` for an id.
        .service(
            resource("/v1/me/passkeys/options", "POST")
                .wrap(from_fn(middleware::limit_by_method))
                .route(web::post().to(passkeys::registration_options)),
        )
        .service(
            resource("/v1/me/passkeys", "GET, HEAD, POST")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(passkeys::list))
                .route(web::post().to(passkeys::register)),
        )
        .service(
            resource("/v1/me/passkeys/{id}", "DELETE")
                .wrap(from_fn(middleware::limit_by_method))
                .route(web::delete().to(passkeys::remove)),
        )
        .service(
            resource("/v1/admin/users/{id}/passkeys", "GET, HEAD")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(passkeys::admin_list)),
        )
        .service(
            resource("/v1/admin/users/{id}/passkeys/{passkey_id}", "DELETE")
                .wrap(from_fn(middleware::limit_by_method))
                .route(web::delete().to(passkeys::admin_remove)),
        )
        .service(
            resource("/v1/me/mfa", "DELETE")
                .wrap(from_fn(middleware::limit_by_method_password_writes))
                .route(web::delete().to(mfa::disable)),
        )
        .service(
            resource("/v1/me/mfa/totp", "POST")
                .wrap(from_fn(middleware::limit_by_method_password_writes))
                .route(web::post().to(mfa::start_totp)),
        )
        .service(
            resource("/v1/me/mfa/totp/confirm", "POST")
                .wrap(from_fn(middleware::limit_by_method_password_writes))
                .route(web::post().to(mfa::confirm_totp)),
        )
        .service(
            resource("/v1/me/mfa/recovery-codes", "POST")
                .wrap(from_fn(middleware::limit_by_method_password_writes))
                .route(web::post().to(mfa::regenerate_recovery_codes)),
        )
        .service(
            resource("/v1/admin/users/{id}/mfa", "DELETE")
                .wrap(from_fn(middleware::limit_by_method))
                .route(web::delete().to(mfa::admin_reset)),
        )
        .service(
            resource("/v1/refresh", "POST")
                .wrap(from_fn(middleware::limit_refresh))
                .route(web::post().to(auth::refresh)),
        )
        .service(
            resource("/v1/logout", "POST")
                .wrap(from_fn(middleware::limit_logout))
                .route(web::post().to(auth::logout)),
        )
        .service(
            resource("/v1/me", "GET, HEAD, DELETE")
                .wrap(from_fn(middleware::limit_by_method_password_writes))
                .route(read().to(me::me))
                .route(web::delete().to(me::delete_account)),
        )
        .service(
            resource("/v1/me/sessions", "GET, HEAD")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(me::list_sessions)),
        )
        .service(
            resource("/v1/me/sessions/{id}", "DELETE")
                .wrap(from_fn(middleware::limit_by_method))
                .route(web::delete().to(me::revoke_session)),
        )
        .service(
            resource("/v1/me/password", "POST")
                .wrap(from_fn(middleware::limit_by_method_password_writes))
                .route(web::post().to(me::change_password)),
        )
        // Mail (#19): the endpoints that take a token or name an address spend the
        // login tier per client IP; `forgot` also per address (see `mail::forgot`).
        .service(
            resource("/v1/password/forgot", "POST")
                .wrap(from_fn(middleware::limit_login))
                .route(web::post().to(mail::forgot)),
        )
        .service(
            resource("/v1/password/reset", "POST")
                .wrap(from_fn(middleware::limit_login))
                .route(web::post().to(mail::reset)),
        )
        .service(
            resource("/v1/email/verify", "POST")
                .wrap(from_fn(middleware::limit_login))
                .route(web::post().to(mail::verify)),
        )
        .service(
            resource("/v1/me/email/verification", "POST")
                .wrap(from_fn(middleware::limit_by_method))
                .route(web::post().to(mail::resend_verification)),
        )
        .service(
            resource("/v1/me/email", "POST")
                .wrap(from_fn(middleware::limit_by_method_password_writes))
                .route(web::post().to(mail::change_email)),
        )
        .service(
            resource("/v1/admin/users/{id}/mail", "GET, HEAD")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(mail::user_mail)),
        )
        .service(
            resource("/v1/admin/users/{id}/password-reset", "POST")
                .wrap(from_fn(middleware::limit_by_method))
                .route(web::post().to(mail::send_reset)),
        )
        .service(
            resource("/v1/admin/users", "GET, HEAD")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(admin::find_users)),
        )
        .service(
            resource("/v1/admin/users/{id}", "GET, HEAD, PATCH")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(admin::get_user))
                .route(web::patch().to(admin::update_user)),
        )
        .service(
            resource("/v1/admin/users/{id}/sessions", "GET, HEAD, DELETE")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(admin::user_sessions))
                .route(web::delete().to(admin::revoke_user_sessions)),
        )
        .service(
            resource("/v1/admin/sessions/{family_id}", "DELETE")
                .wrap(from_fn(middleware::limit_by_method))
                .route(web::delete().to(admin::revoke_family)),
        )
        .service(
            resource("/v1/admin/audit", "GET, HEAD")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(admin::audit)),
        )
        .service(
            resource("/v1/admin/keys", "GET, HEAD")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(admin::keys)),
        )
        .service(
            resource("/v1/admin/stats", "GET, HEAD")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(admin::stats)),
        )
        .service(
            resource("/v1/admin/clients", "GET, HEAD, POST")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(clients::list))
                .route(web::post().to(clients::create)),
        )
        .service(
            resource("/v1/admin/clients/{client_id}", "DELETE")
                .wrap(from_fn(middleware::limit_by_method))
                .route(web::delete().to(clients::delete)),
        )
        .service(
            resource("/v1/admin/clients/{client_id}/secret", "POST")
                .wrap(from_fn(middleware::limit_by_method))
                .route(web::post().to(clients::rotate_secret)),
        )
        .service(
            resource("/v1/revocations", "GET, HEAD")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(clients::feed)),
        )
        // Client credentials are secrets: the token endpoint spends the strict budget
        // of logins; introspection, which resource servers call per request, the reads
        // budget. Both count failed client authentications in the lockout store.
        .service(
            resource("/oauth/token", "POST")
                .wrap(from_fn(middleware::limit_login))
                .route(web::post().to(oauth::token)),
        )
        .service(
            resource("/oauth/introspect", "POST")
                .wrap(from_fn(middleware::limit_client_reads))
                .route(web::post().to(oauth::introspect)),
        )
        .service(
            resource("/oauth/revoke", "POST")
                .wrap(from_fn(middleware::limit_logout))
                .route(web::post().to(oauth::revoke)),
        )
        .service(
            resource("/admin", "GET, HEAD")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(console::redirect)),
        )
        .service(
            resource("/admin/", "GET, HEAD")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(console::index)),
        )
        .service(
            resource("/admin/{file}", "GET, HEAD")
                .wrap(from_fn(middleware::limit_by_method))
                .route(read().to(console::file)),
        )
        .default_service(web::to(not_found));
}
