//! Service clients: created by admins, authenticated by their secret (RFC 6749 §2.3.1),
//! given tokens of their own (§4.4 client credentials). No row is written per token: a
//! client's tokens die with the client (deleted or disabled) or at their `exp`.

use uuid::Uuid;

use super::admin::Actor;
use super::audit::event;
use super::{AppState, ClientMeta, FieldError, ServiceError, lockout};
use crate::crypto::client_token::{ClientClaims, ClientSecret, hash_secret};
use crate::crypto::{constant_time_eq, jwt};
use crate::domain::{AuditKind, Client, ClientId, Scopes};
use crate::storage::AuditEvent;
use crate::storage::clients::{NewClient, StoredClient};

/// Why a client request failed, as RFC 6749 §5.2 (and RFC 7662 §2.3) name it.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// 400: a missing, repeated or malformed parameter.
    #[error("invalid request: {0}")]
    InvalidRequest(&'static str),
    /// 401 with `WWW-Authenticate: Basic`: no, an unknown or a wrong client credential.
    #[error("invalid client")]
    InvalidClient,
    #[error("unsupported grant type")]
    UnsupportedGrantType,
    #[error("invalid scope")]
    InvalidScope,
    /// 403: the client lacks the scope the endpoint needs.
    #[error("insufficient scope")]
    InsufficientScope,
    #[error("too many attempts")]
    TooManyAttempts { retry_after_secs: u64 },
    #[error(transparent)]
    Service(ServiceError),
}

impl From<ServiceError> for OAuthError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::TooManyAttempts { retry_after_secs } => {
                Self::TooManyAttempts { retry_after_secs }
            }
            other => Self::Service(other),
        }
    }
}

/// What `POST /v1/admin/clients` asks for, already checked by the HTTP layer.
#[derive(Debug)]
pub struct ClientRequest {
    pub name: String,
    pub scopes: Scopes,
    pub audience: Option<String>,
}

/// Longest client name and audience accepted.
const MAX_NAME_CHARS: usize = 100;
const MAX_AUDIENCE_CHARS: usize = 256;

impl ClientRequest {
    /// Checks a request's fields, as the admin API and the CLI receive them; every
    /// failing field is reported at once.
    pub fn parse(
        name: Option<String>,
        scopes: Option<Vec<String>>,
        audience: Option<String>,
    ) -> Result<Self, Vec<FieldError>> {
        let mut errors = Vec::new();
        let name = name.map(|n| n.trim().to_owned()).unwrap_or_default();
        if name.is_empty() || name.chars().count() > MAX_NAME_CHARS {
            errors.push(FieldError::new(
                "name",
                format!("is required, 1 to {MAX_NAME_CHARS} characters"),
            ));
        }
        let scopes = match scopes {
            None => {
                errors.push(FieldError::new(
                    "scopes",
                    "is required (a list, may be empty)",
                ));
                Scopes::default()
            }
            Some(list) => Scopes::parse(list.iter().map(String::as_str)).unwrap_or_else(|m| {
                errors.push(FieldError::new("scopes", m));
                Scopes::default()
            }),
        };
        let audience = match audience.map(|a| a.trim().to_owned()) {
            Some(a) if a.is_empty() || a.chars().count() > MAX_AUDIENCE_CHARS => {
                errors.push(FieldError::new(
                    "audience",
                    format!("must be 1 to {MAX_AUDIENCE_CHARS} characters, or left out"),
                ));
                None
            }
            other => other,
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            name,
            scopes,
            audience,
        })
    }
}

/// A client with a secret to show once.
#[derive(Debug)]
pub struct WithSecret {
    pub client: Client,
    pub secret: ClientSecret,
}

fn admin_event(
    state: &AppState,
    kind: AuditKind,
    actor: Actor<'_>,
    meta: &ClientMeta,
    client: ClientId,
) -> AuditEvent {
    actor.event(state, kind, None, meta, Some(format!("client {client}")))
}

pub async fn create(
    state: &AppState,
    admin: Actor<'_>,
    request: ClientRequest,
    meta: &ClientMeta,
) -> Result<WithSecret, ServiceError> {
    let secret = ClientSecret::generate();
    let client = Client {
        id: ClientId::random(),
        name: request.name,
        scopes: request.scopes,
        audience: request.audience,
        created_at: state.now(),
        last_used_at: None,
        disabled: false,
    };
    let new = NewClient {
        client: client.clone(),
        secret: secret.hash(),
    };
    state.db(move |s| s.create_client(&new)).await?;
    state
        .audit(admin_event(
            state,
            AuditKind::ClientCreated,
            admin,
            meta,
            client.id,
        ))
        .await;
    Ok(WithSecret { client, secret })
}

pub async fn list(state: &AppState) -> Result<Vec<Client>, ServiceError> {
    state.db(|s| s.list_clients()).await
}

/// Deletes a client: its secrets stop working and its tokens introspect inactive at
/// once (offline verifiers accept them until `exp`).
pub async fn delete(
    state: &AppState,
    admin: Actor<'_>,
    id: ClientId,
    meta: &ClientMeta,
) -> Result<(), ServiceError> {
    if !state.db(move |s| s.delete_client(id)).await? {
        return Err(ServiceError::NotFound);
    }
    state
        .audit(admin_event(
            state,
            AuditKind::ClientDeleted,
            admin,
            meta,
            id,
        ))
        .await;
    Ok(())
}

/// A new secret; the current one keeps working for `GATEHOUSE_CLIENT_SECRET_OVERLAP`.
pub async fn rotate_secret(
    state: &AppState,
    admin: Actor<'_>,
    id: ClientId,
    meta: &ClientMeta,
) -> Result<ClientSecret, ServiceError> {
    let secret = ClientSecret::generate();
    let hash = secret.hash();
    let now = state.now();
    let overlap = chrono::Duration::from_std(state.policy.tokens.client_secret_overlap)
        .unwrap_or(chrono::Duration::MAX);
    let until = now + overlap;
    if !state
        .db(move |s| s.rotate_client_secret(id, hash, now, until))
        .await?
    {
        return Err(ServiceError::NotFound);
    }
    state
        .audit(admin_event(
            state,
            AuditKind::ClientSecretRotated,
            admin,
            meta,
            id,
        ))
        .await;
    Ok(secret)
}

/// Whether `presented` is one of the client's secrets in force at `now`. Every stored
/// hash is compared, in constant time, whatever the outcome of the others.
fn secret_matches(
    stored: &StoredClient,
    presented: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    let hash = hash_secret(presented);
    let mut ok = false;
    for s in &stored.secrets {
        let in_force = s.not_after.is_none_or(|end| now < end);
        ok |= constant_time_eq(&s.hash, &hash) & in_force;
    }
    ok
}

/// Authenticates a client by id and secret. Failures count against the client id and
/// the caller's address in the lockout store (as failed logins do, with the per-IP
/// limit for both), are audited, and are all one answer: unknown client, wrong or
/// expired secret, disabled client.
pub async fn authenticate(
    state: &AppState,
    client_id: &str,
    secret: &str,
    meta: &ClientMeta,
) -> Result<Client, OAuthError> {
    let id = client_id.parse::<ClientId>().ok();
    let attempt = lockout::begin_client_check(state, id, meta).await?;
    let now = state.now();
    let stored = match id {
        Some(id) => state.db(move |s| s.client_by_id(id)).await?,
        None => None,
    };
    let ok = stored
        .as_ref()
        .is_some_and(|c| secret_matches(c, secret, now) && !c.client.disabled);
    match stored {
        Some(stored) if ok => {
            attempt.succeeded(state).await?;
            let id = stored.client.id;
            state.db(move |s| s.touch_client(id, now)).await?;
            Ok(stored.client)
        }
        _ => {
            attempt.failed(state).await?;
            state
                .audit(AuditEvent {
                    detail: Some(match id {
                        Some(id) => format!("client {id}"),
                        None => "client id is not a known form".into(),
                    }),
                    ..event(state, AuditKind::ClientAuthFailed, None, meta, "refused")
                })
                .await;
            Err(OAuthError::InvalidClient)
        }
    }
}

/// A client's token response (RFC 6749 §5.1), without a refresh token.
pub struct ClientToken {
    pub access_token: String,
    pub expires_in: u64,
    pub scope: String,
}

/// The token is a bearer credential: it never reaches a log.
impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientToken")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish()
    }
}

/// Issues a token to an authenticated client for `requested` scopes (space-separated;
/// `None` or empty: all of the client's), which must be a subset of its own.
pub fn issue(
    state: &AppState,
    client: &Client,
    requested: Option<&str>,
) -> Result<ClientToken, OAuthError> {
    let scopes = match requested.map(str::trim).filter(|s| !s.is_empty()) {
        None => client.scopes.clone(),
        Some(text) => {
            let asked = Scopes::parse_spaced(text).map_err(|_| OAuthError::InvalidScope)?;
            if !asked.is_subset(&client.scopes) {
                return Err(OAuthError::InvalidScope);
            }
            asked
        }
    };
    let now = state.now().timestamp();
    let ttl = state.policy.tokens.access_ttl.as_secs();
    let claims = ClientClaims {
        iss: state.policy.tokens.issuer.clone(),
        sub: client.id.to_string(),
        client_id: client.id.to_string(),
        aud: client
            .audience
            .clone()
            .unwrap_or_else(|| state.policy.tokens.audience.clone()),
        scope: scopes.spaced(),
        iat: now,
        nbf: now,
        exp: now + ttl as i64,
        jti: Uuid::new_v4(),
    };
    let access_token = jwt::mint(&state.keys(), &claims).map_err(|e| {
        OAuthError::Service(ServiceError::internal_because("signing a client token", e))
    })?;
    Ok(ClientToken {
        access_token,
        expires_in: ttl,
        scope: claims.scope,
    })
}

/// A client behind a bearer client token, while it exists and is enabled, with the
/// scopes the token grants.
pub async fn by_token(
    state: &AppState,
    bearer: &str,
) -> Result<Option<(Client, Scopes)>, ServiceError> {
    let Ok(claims) = crate::crypto::client_token::verify(
        &state.keys(),
        bearer,
        &state.policy.tokens.issuer,
        state.now(),
    ) else {
        return Ok(None);
    };
    let Ok(id) = claims.client_id.parse::<ClientId>() else {
        return Ok(None);
    };
    let Ok(granted) = Scopes::parse_spaced(&claims.scope) else {
        return Ok(None);
    };
    Ok(state
        .db(move |s| s.client_by_id(id))
        .await?
        .filter(|c| !c.client.disabled)
        .map(|c| (c.client, granted)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::clients::StoredSecret;

    #[test]
    fn a_replaced_secret_works_until_its_end_and_not_after() {
        let now = chrono::Utc::now();
        let (old, new) = (ClientSecret::generate(), ClientSecret::generate());
        let stored = StoredClient {
            client: Client {
                id: ClientId::random(),
                name: "svc".into(),
                scopes: Scopes::default(),
                audience: None,
                created_at: now,
                last_used_at: None,
                disabled: false,
            },
            secrets: vec![
                StoredSecret {
                    hash: old.hash(),
                    not_after: Some(now + chrono::Duration::seconds(10)),
                },
                StoredSecret {
                    hash: new.hash(),
                    not_after: None,
                },
            ],
        };
        assert!(secret_matches(&stored, old.expose(), now));
        assert!(secret_matches(&stored, new.expose(), now));
        let later = now + chrono::Duration::seconds(10);
        assert!(!secret_matches(&stored, old.expose(), later));
        assert!(secret_matches(&stored, new.expose(), later));
        assert!(!secret_matches(&stored, "not-a-secret", now));
    }
}
