//! The admin console: static files compiled into the binary, served at `/admin/`. The
//! page talks to the public API like any other client; this module only hands out files.
//!
//! Its headers are its own: the API's `default-src 'none'` would block the console's
//! scripts, and `DefaultHeaders` in startup.rs leaves a header a handler set alone.

use actix_web::http::header;
use actix_web::{HttpResponse, web};

use super::error::ApiError;
use super::settings::HttpSettings;

/// Scripts, styles, images and API calls only from this origin, nothing inline, and no
/// framing (clickjacking an admin's revoke button). `form-action 'none'`: the forms are
/// handled by script and must never submit a password anywhere.
pub const CONSOLE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self'; connect-src 'self'; font-src 'none'; object-src 'none'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

macro_rules! asset {
    ($name:literal, $type:expr) => {
        Asset {
            name: $name,
            content_type: $type,
            body: include_bytes!(concat!("console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("console.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("dom.js", JS),
    asset!("pages.js", JS),
    asset!("chart.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

fn serve(http: &HttpSettings, name: &str) -> Result<HttpResponse, ApiError> {
    if !http.admin_console {
        return Err(ApiError::not_found());
    }
    let asset = ASSETS
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(ApiError::not_found)?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, asset.content_type))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONSOLE_CSP))
        // The files change with the binary; no-cache revalidates instead of serving a
        // console that no longer matches the API after an upgrade.
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("Cross-Origin-Opener-Policy", "same-origin"))
        .insert_header(("Cross-Origin-Resource-Policy", "same-origin"))
        .insert_header((
            "Permissions-Policy",
            "camera=(), microphone=(), geolocation=()",
        ))
        .body(asset.body))
}

pub async fn index(http: web::Data<HttpSettings>) -> Result<HttpResponse, ApiError> {
    serve(&http, "index.html")
}

pub async fn file(
    http: web::Data<HttpSettings>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    serve(&http, &name)
}

/// `/admin` → `/admin/`, so relative module paths resolve under `/admin/`.
pub async fn redirect(http: web::Data<HttpSettings>) -> Result<HttpResponse, ApiError> {
    if !http.admin_console {
        return Err(ApiError::not_found());
    }
    Ok(HttpResponse::PermanentRedirect()
        .insert_header((header::LOCATION, "/admin/"))
        .finish())
}
