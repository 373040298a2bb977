//! Admin endpoints. Revoking a family stops its refresh tokens at once; access tokens it
//! already issued stay valid for offline verifiers until they expire.

use actix_web::{HttpResponse, web};

use super::dto::{
    AdminUserDto, AdminUserList, AdminUserPatch, AuditList, AuditQuery, KeyList, SessionList,
    StatsDto, StatsQuery,
};
use super::error::ApiError;
use super::extract::{Admin, Json, path_id};
use crate::domain::{Role, UserId};
use crate::service::admin::{self, Actor};
use crate::service::{AppState, ClientMeta, FieldError};
use crate::storage::AuditFilter;

fn limit(raw: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    match raw {
        None => Ok(default),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(_) => Err(ApiError::validation(vec![FieldError::new(
            "limit",
            format!("must be between 1 and {max}"),
        )])),
    }
}

pub async fn find_users(
    state: web::Data<AppState>,
    _admin: Admin,
    query: web::Query<super::dto::UserQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = limit(query.limit, 50, 100)?;
    if query
        .email
        .as_ref()
        .is_some_and(|e| e.chars().count() > 254)
    {
        return Err(ApiError::validation(vec![FieldError::new(
            "email",
            "must be at most 254 characters",
        )]));
    }
    let users = admin::find_user_views(&state, query.email, limit).await?;
    Ok(HttpResponse::Ok().json(AdminUserList {
        users: users.into_iter().map(Into::into).collect(),
    }))
}

pub async fn update_user(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    meta: ClientMeta,
    id: web::Path<String>,
    Json(body): Json<AdminUserPatch>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    let mut errors = Vec::new();
    let role = match body.role.as_deref() {
        None => None,
        Some(r) => match Role::parse(r) {
            Some(role) => Some(role),
            None => {
                errors.push(FieldError::new("role", "must be \"user\" or \"admin\""));
                None
            }
        },
    };
    if body.role.is_none() && body.disabled.is_none() {
        errors.push(FieldError::new("role", "give role or disabled (or both)"));
    }
    if !errors.is_empty() {
        return Err(ApiError::validation(errors));
    }
    let user = admin::update_user_view(
        &state,
        Actor::Admin(&caller),
        id,
        role,
        body.disabled,
        &meta,
    )
    .await?;
    Ok(HttpResponse::Ok().json(AdminUserDto::from(user)))
}

pub async fn get_user(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    let user = admin::user_view(&state, id).await?;
    Ok(HttpResponse::Ok().json(AdminUserDto::from(user)))
}

pub async fn keys(state: web::Data<AppState>, _admin: Admin) -> Result<HttpResponse, ApiError> {
    let keys = admin::signing_keys(&state).await?;
    Ok(HttpResponse::Ok().json(KeyList {
        keys: keys.into_iter().map(Into::into).collect(),
    }))
}

pub async fn stats(
    state: web::Data<AppState>,
    _admin: Admin,
    query: web::Query<StatsQuery>,
) -> Result<HttpResponse, ApiError> {
    let since = match query.into_inner().since.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(
            chrono::DateTime::parse_from_rfc3339(raw)
                .map_err(|_| {
                    ApiError::validation(vec![FieldError::new(
                        "since",
                        "must be an RFC 3339 date-time",
                    )])
                })?
                .to_utc(),
        ),
    };
    let stats = admin::audit_stats(&state, since).await?;
    Ok(HttpResponse::Ok().json(StatsDto::from(stats)))
}

pub async fn user_sessions(
    state: web::Data<AppState>,
    _admin: Admin,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    let list = admin::user_sessions(&state, id).await?;
    Ok(HttpResponse::Ok().json(SessionList::new(list)))
}

pub async fn revoke_family(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    meta: ClientMeta,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    admin::revoke_family(&state, Actor::Admin(&caller), id, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn revoke_user_sessions(
    state: web::Data<AppState>,
    Admin(caller): Admin,
    meta: ClientMeta,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = path_id(&id)?;
    admin::revoke_user_families(&state, Actor::Admin(&caller), id, &meta).await?;
    Ok(HttpResponse::NoContent().finish())
}

pub async fn audit(
    state: web::Data<AppState>,
    _admin: Admin,
    query: web::Query<AuditQuery>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let limit = limit(query.limit, 100, 500)?;
    let user_id = match query.user_id.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(raw.parse::<UserId>().map_err(|_| {
            ApiError::validation(vec![FieldError::new("user_id", "must be a UUID")])
        })?),
    };
    let filter = AuditFilter {
        user_id,
        kind: query.kind.filter(|k| !k.is_empty()),
        limit,
        before: query.before,
    };
    let events = admin::audit_log(&state, filter).await?;
    Ok(HttpResponse::Ok().json(AuditList {
        events: events.into_iter().map(Into::into).collect(),
    }))
}
