//! Who calls a `/v1/me` or `/v1/admin` endpoint: a verified access token whose session
//! and user are read from the database on every request.

use super::{AppState, ServiceError};
use crate::crypto::jwt;
use crate::domain::{Amr, FamilyId, Role, User};

/// A caller whose token verified and whose session is live. Holds the user as the API
/// shows it: the password hash stays in storage until a rule needs to check it.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
    /// The token's `sid`: the family (login) the caller acts through.
    pub session: FamilyId,
    /// How the session was authenticated, from the token we signed (a refresh keeps the
    /// family's).
    pub amr: Amr,
}

impl Caller {
    /// Refuses callers whose role is not admin (read from the database, not the token).
    pub fn require_admin(&self) -> Result<(), ServiceError> {
        if self.user.role == Role::Admin {
            Ok(())
        } else {
            Err(ServiceError::Forbidden)
        }
    }
}

/// Verifies a bearer token and loads its user through its session (`sid`). A token of a
/// revoked, expired or password-changed session is refused here although other services,
/// verifying offline, accept it until `exp`: gatehouse's own endpoints can read the
/// session, and a stolen token must not be able to manage the account that revoked it.
/// A database outage is a 503, never an "invalid token": clients must not drop a good
/// token because we are down.
pub async fn authenticate(state: &AppState, bearer: &str) -> Result<Caller, ServiceError> {
    let now = state.now();
    let claims = jwt::verify(
        &state.keys(),
        bearer,
        &state.policy.tokens.issuer,
        &state.policy.tokens.audience,
        now,
    )
    .map_err(|_| ServiceError::InvalidToken)?;
    let (id, session) = (claims.sub, claims.sid);
    let amr = Amr::parse(&claims.amr.join(" ")).unwrap_or_default();
    match state
        .db(move |s| s.account_for_session(id, session, now))
        .await?
    {
        Some(account) if !account.user.disabled => Ok(Caller {
            user: account.user,
            session,
            amr,
        }),
        _ => Err(ServiceError::InvalidToken),
    }
}
