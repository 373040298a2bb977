//! The admin API for service clients, and the revocation feed they poll.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::extract::{Admin, Json, path_id};
use crate::domain::Client;
use crate::domain::client::SCOPE_REVOCATIONS;
use crate::service::admin::Actor;
use crate::service::clients::{self, ClientRequest};
use crate::service::introspection;
use crate::service::{AppState, ClientMeta, caller};

/// `Cache-Control: max-age` of the feed: the contract allows at most 10 s.
const FEED_MAX_AGE_SECS: u64 = 5;

#[derive(Deserialize)]
pub struct CreateClient {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub audience: Option<String>,
}

#[derive(Serialize)]
pub struct ClientDto {
    pub client_id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub audience: Option<String>,
    pub created_at: String,
    pub last_used_at: Option<String>,
    pub disabled: bool,
}

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

impl From<Client> for ClientDto {
    fn from(c: Client) -> Self {
        Self {
            client_id: c.id.to_string(),
            scopes: c.scopes.iter().map(str::to_owned).collect(),
            name: c.name,
            audience: c.audience,
            created_at: rfc3339(c.created_at),
            last_used_at: c.last_used_at.map(rfc3339),
            disabled: c.disabled,
        }
    }
}

#[derive(Serialize)]
struct CreatedClient {
    client_id: String,
    client_secret: String,
    name: String,
    scopes: Vec<String>,
    audience: Option<String>,
    created_at: String,
}

#[derive(Serialize)]
struct NewSecret {
    client_id: String,
    client_secret: String,
}

fn checked(body: CreateClient) -> Result<ClientRequest, ApiError> {
    ClientRequest::parse(body.name, body.scopes, body.audience).map_err(ApiError::validation)
}

/// `POST /v1/admin/clients`: 201 with the secret, shown this once.
pub async fn create(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    meta: ClientMeta,
    Json(body): Json<CreateClient>,
) -> Result<HttpResponse, ApiError> {
    let request = checked(body)?;
    let made = clients::create(&state, Actor::Admin(&admin), request, &meta).await?;
    let c = made.client;
    Ok(super::token_response(
        HttpResponse::Created(),
        CreatedClient {
            client_id: c.id.to_string(),
            client_secret: made.secret.expose().to_owned(),
            scopes: c.scopes.iter().map(str::to_owned).collect(),
            name: c.name,
            audience: c.audience,
            created_at: rfc3339(c.created_at),
        },
    ))
}

#[derive(Serialize)]
struct ClientList {
    clients: Vec<ClientDto>,
}

pub async fn list(state: web::Data<AppState>, _admin: Admin) -> Result<HttpResponse, ApiError> {
    let all = clients::list(&state).await?;
    Ok(HttpResponse::Ok().json(ClientList {
        clients: all.into_iter().map(Into::into).collect(),
    }))
}

pub async fn delete(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    meta: ClientMeta,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    clients::delete(&state, Actor::Admin(&admin), id, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// `POST /v1/admin/clients/{client_id}/secret`: a new secret; the old one works for
/// `GATEHOUSE_CLIENT_SECRET_OVERLAP` more.
pub async fn rotate_secret(
    state: web::Data<AppState>,
    Admin(admin): Admin,
    meta: ClientMeta,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    let secret = clients::rotate_secret(&state, Actor::Admin(&admin), id, &meta).await?;
    Ok(super::token_response(
        HttpResponse::Ok(),
        NewSecret {
            client_id: id.to_string(),
            client_secret: secret.expose().to_owned(),
        },
    ))
}

#[derive(Serialize)]
struct FeedBody {
    sids: Vec<String>,
    generated_at: String,
}

fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn forbidden() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        "This endpoint needs a client token with the scope revocations.",
    )
}

/// `GET /v1/revocations`: for a client token granting `revocations`. A user's valid
/// token is 403 (it authenticates, but not as a client), anything else 401.
pub async fn feed(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let presented = req.headers().contains_key(header::AUTHORIZATION);
    let Some(token) = bearer(&req) else {
        return Err(ApiError::invalid_token(presented));
    };
    match clients::by_token(&state, token).await? {
        Some((client, granted)) => {
            if !(client.scopes.contains(SCOPE_REVOCATIONS) && granted.contains(SCOPE_REVOCATIONS)) {
                return Err(forbidden());
            }
        }
        None => {
            return match caller::authenticate(&state, token).await {
                Ok(_) => Err(forbidden()),
                Err(crate::service::ServiceError::InvalidToken) => {
                    Err(ApiError::invalid_token(true))
                }
                Err(e) => Err(e.into()),
            };
        }
    }
    let feed = introspection::feed(&state).await?;
    let matches = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(',')
                .any(|t| weak_eq(t.trim(), &feed.etag) || t.trim() == "*")
        });
    let cache = format!("private, max-age={FEED_MAX_AGE_SECS}");
    let mut res = if matches {
        HttpResponse::NotModified()
    } else {
        HttpResponse::Ok()
    };
    res.insert_header((header::CACHE_CONTROL, cache))
        .insert_header((header::ETAG, feed.etag.clone()))
        .insert_header((header::VARY, "Authorization"));
    if matches {
        return Ok(res.finish());
    }
    Ok(res.json(FeedBody {
        sids: feed.sids.iter().map(ToString::to_string).collect(),
        generated_at: rfc3339(feed.generated_at),
    }))
}

/// RFC 9110 §8.8.3.2: `If-None-Match` compares weakly, so `W/"x"` and `"x"` match.
fn weak_eq(a: &str, b: &str) -> bool {
    a.trim_start_matches("W/") == b.trim_start_matches("W/")
}
