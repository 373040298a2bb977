//! What a service asks about tokens: introspection (RFC 7662), revocation (RFC 7009) and
//! the revocation feed that lets an offline verifier refuse a revoked session's access
//! tokens before their `exp`.

use chrono::{DateTime, Utc};

use super::{AppState, ClientMeta, ServiceError, sessions};
use crate::crypto::jwt::{self, LEEWAY_SECS};
use crate::crypto::refresh::RefreshToken;
use crate::crypto::{b64url, client_token, sha256};
use crate::domain::{ClientId, FamilyId};

/// What introspection tells of a live token; `None` is `{"active": false}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Active {
    pub token_type: &'static str,
    pub sub: String,
    pub client_id: Option<String>,
    pub scope: Option<String>,
    pub sid: Option<FamilyId>,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
    pub aud: String,
}

/// Whether `token` is live now. An access token (a user's or a client's) is live while
/// it verifies and what stands behind it does: the user's session and account, or the
/// client. A refresh token is live while it could be refreshed: unspent, unexpired, its
/// family open and its user enabled; it is read the way a refresh reads it, under the
/// family's lock, and never spent. Anything else, whatever the reason, is `None`.
pub async fn introspect(state: &AppState, token: &str) -> Result<Option<Active>, ServiceError> {
    if token.contains('.') {
        return access_token(state, token).await;
    }
    refresh_token(state, token).await
}

async fn access_token(state: &AppState, token: &str) -> Result<Option<Active>, ServiceError> {
    let now = state.now();
    let keys = state.keys();
    let tokens = &state.policy.tokens;
    if let Ok(claims) = jwt::verify(&keys, token, &tokens.issuer, &tokens.audience, now) {
        let (user, sid) = (claims.sub, claims.sid);
        let live = state
            .db(move |s| s.account_for_session(user, sid, now))
            .await?
            .is_some_and(|a| !a.user.disabled);
        return Ok(live.then(|| Active {
            token_type: "access_token",
            sub: claims.sub.to_string(),
            client_id: None,
            scope: None,
            sid: Some(claims.sid),
            exp: claims.exp,
            iat: claims.iat,
            iss: claims.iss,
            aud: claims.aud,
        }));
    }
    let Ok(claims) = client_token::verify(&keys, token, &tokens.issuer, now) else {
        return Ok(None);
    };
    let Ok(id) = claims.client_id.parse::<ClientId>() else {
        return Ok(None);
    };
    let live = state
        .db(move |s| s.client_by_id(id))
        .await?
        .is_some_and(|c| !c.client.disabled);
    Ok(live.then_some(Active {
        token_type: "access_token",
        sub: claims.sub,
        client_id: Some(claims.client_id),
        scope: Some(claims.scope),
        sid: None,
        exp: claims.exp,
        iat: claims.iat,
        iss: claims.iss,
        aud: claims.aud,
    }))
}

async fn refresh_token(state: &AppState, token: &str) -> Result<Option<Active>, ServiceError> {
    let Some(token) = RefreshToken::from_presented(token) else {
        return Ok(None);
    };
    let hash = token.hash().0;
    let now = state.now();
    let Some((t, issued_at)) = state.db(move |s| s.introspect_refresh_token(hash)).await? else {
        return Ok(None);
    };
    let live = !t.family_revoked
        && !t.family_stale
        && !t.user.disabled
        && t.spent_at.is_none()
        && t.expires_at > now
        && t.family_expires_at > now;
    Ok(live.then(|| Active {
        token_type: "refresh_token",
        sub: t.user.id.to_string(),
        client_id: None,
        scope: None,
        sid: Some(t.family_id),
        exp: t.expires_at.timestamp(),
        iat: issued_at.timestamp(),
        iss: state.policy.tokens.issuer.clone(),
        aud: state.policy.tokens.audience.clone(),
    }))
}

/// `POST /oauth/revoke`: a refresh token, spent or not, revokes its whole family
/// (`logout`), exactly as `POST /v1/logout`. Access tokens cannot be revoked one by one
/// (RFC 7009 §2.1 lets a server say nothing of them): revoke their session, or delete
/// their client. Unknown tokens change nothing; the answer is the same.
pub async fn revoke(state: &AppState, token: &str, meta: &ClientMeta) -> Result<(), ServiceError> {
    sessions::logout(state, token, meta).await
}

/// The revocation feed: the ids of families revoked, or deleted with their user, within
/// the last access-token lifetime and the verifiers' leeway, so every access token they
/// issued that a verifier could still accept is covered.
#[derive(Debug, Clone)]
pub struct Feed {
    pub sids: Vec<FamilyId>,
    pub generated_at: DateTime<Utc>,
    /// A weak validator of the list alone (not of `generated_at`): it changes exactly
    /// when the list does.
    pub etag: String,
}

pub async fn feed(state: &AppState) -> Result<Feed, ServiceError> {
    let now = state.now();
    let window = chrono::Duration::from_std(state.policy.tokens.access_ttl)
        .unwrap_or(chrono::Duration::MAX)
        + chrono::Duration::seconds(LEEWAY_SECS);
    let since = now - window;
    let sids = state.db(move |s| s.revoked_since(since)).await?;
    let mut joined = String::with_capacity(sids.len() * 37);
    for sid in &sids {
        joined.push_str(&sid.to_string());
        joined.push('\n');
    }
    let digest = sha256(joined.as_bytes());
    Ok(Feed {
        etag: format!("W/\"{}\"", b64url(&digest[..16])),
        sids,
        generated_at: now,
    })
}
