//! Logging in with a passkey: alone (a discoverable credential names its user), or as
//! the second step of a password login (`service::mfa` holds that login and calls here).
//!
//! A verified assertion becomes a login only once its counter is recorded: one
//! conditional UPDATE on the stored counter, so two replicas given the same response
//! (or two responses with one counter value) open one session.

use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, Passkey, PasskeyAuthentication,
    PublicKeyCredential, Webauthn, WebauthnResult,
};

use super::{
    FlowOptions, ceremony, credential_id, internal, open_flow, passkey_of, relying_party, take_flow,
};
use crate::crypto::{b64url, sha256};
use crate::domain::{Amr, AuditKind, User};
use crate::service::audit::event;
use crate::service::tokens::{self, TokenPair};
use crate::service::{AppState, ClientMeta, ServiceError, lockout};
use crate::storage::{Account, AuditEvent, FlowKind, PasskeyUse, StoredPasskey, TokenHashBytes};

/// The lockout key of one credential: a prefix of its id's hash.
fn credential_key(id: &[u8]) -> String {
    format!("passkey:{}", b64url(&sha256(id)[..12]))
}

/// Why an assertion was refused, for the log and the audit (never the client).
type Refusal = String;

/// The counter rule: a counter that is not zero must be above the stored one; a
/// credential that has only ever reported zero (synced passkeys) has none to check.
fn counter_moves_on(stored: i64, reported: u32) -> bool {
    let reported = i64::from(reported);
    (reported == 0 && stored == 0) || reported > stored
}

/// Checks the signature with `check`, applies the counter rule and records the use:
/// whether the credential is backup-eligible (a synced passkey) when accepted.
async fn accept(
    state: &AppState,
    stored: StoredPasskey,
    check: impl FnOnce(&Passkey) -> WebauthnResult<AuthenticationResult>,
) -> Result<Result<bool, Refusal>, ServiceError> {
    let mut passkey = passkey_of(&stored)?;
    let result = match check(&passkey) {
        Ok(result) => result,
        Err(e) => return Ok(Err(e.to_string())),
    };
    if !counter_moves_on(stored.sign_count, result.counter()) {
        return Ok(Err(format!(
            "signature counter {} is not above the stored {}",
            result.counter(),
            stored.sign_count
        )));
    }
    passkey.update_credential(&result);
    let used = PasskeyUse {
        id: stored.id,
        checked_against: stored.sign_count,
        sign_count: result.counter(),
        backup_state: result.backup_state(),
        credential: serde_json::to_string(&passkey).map_err(internal("serializing a passkey"))?,
        now: state.now(),
    };
    if !state.db(move |s| s.record_passkey_use(used)).await? {
        return Ok(Err("the counter moved meanwhile (a concurrent use)".into()));
    }
    Ok(Ok(result.backup_eligible() || stored.backup_eligible))
}

/// `POST /v1/passkeys/login/options`: request options without `allowCredentials`, so
/// the browser offers the passkeys it holds for this RP ID.
pub async fn options(state: &AppState) -> Result<FlowOptions, ServiceError> {
    let webauthn = relying_party(state)?;
    let (request, ceremony) = webauthn
        .start_discoverable_authentication()
        .map_err(|e| ServiceError::internal_because("starting a passkey login", e))?;
    let mut options =
        serde_json::to_value(&request.public_key).map_err(internal("serializing options"))?;
    if let Some(options) = options.as_object_mut() {
        options.remove("allowCredentials");
    }
    open_flow(state, FlowKind::Login, None, None, &ceremony, options).await
}

/// `POST /v1/passkeys/login`: a passkey alone opens a session (`amr` `hwk user mfa`, or
/// `swk` for a synced passkey), with the lockout and audit of a password login.
pub async fn login(
    state: &AppState,
    flow_id: &str,
    credential: serde_json::Value,
    meta: &ClientMeta,
) -> Result<TokenPair, ServiceError> {
    let webauthn = relying_party(state)?;
    let flow = take_flow(state, flow_id, FlowKind::Login).await?;
    let ceremony: DiscoverableAuthentication = ceremony(&flow)?;
    let Ok(response) = serde_json::from_value::<PublicKeyCredential>(credential) else {
        return Err(ServiceError::InvalidPasskey);
    };
    let key = credential_key(response.get_credential_id());
    let attempt = lockout::begin_passkey_check(state, Some(key), meta).await?;
    let (account, synced) = match judge(state, webauthn, ceremony, &response).await? {
        Ok(accepted) => accepted,
        Err((user, reason)) => {
            attempt.failed(state).await?;
            state.metrics.login("failed");
            state
                .audit(AuditEvent {
                    detail: Some(reason),
                    ..event(
                        state,
                        AuditKind::PasskeyFailed,
                        user.as_ref(),
                        meta,
                        "login",
                    )
                })
                .await;
            return Err(ServiceError::InvalidPasskey);
        }
    };
    let pair = tokens::start_family_with(
        state,
        account.user,
        account.password_generation,
        meta,
        AuditKind::LoginSucceeded,
        Some(attempt.settled_by_login()),
        Amr::passkey(synced, false),
    )
    .await?;
    attempt.opened();
    state.metrics.login("succeeded");
    Ok(pair)
}

/// Judges a passwordless response: the account and whether the passkey is synced, or
/// why it was refused (and whose it claimed to be).
async fn judge(
    state: &AppState,
    webauthn: &Webauthn,
    ceremony: DiscoverableAuthentication,
    response: &PublicKeyCredential,
) -> Result<Result<(Account, bool), (Option<User>, Refusal)>, ServiceError> {
    let (user_handle, id) = match webauthn.identify_discoverable_authentication(response) {
        Ok((handle, id)) => (handle, id.to_vec()),
        Err(e) => return Ok(Err((None, e.to_string()))),
    };
    let Some(stored) = state.db(move |s| s.passkey_by_credential_id(&id)).await? else {
        return Ok(Err((None, "unknown credential".into())));
    };
    let owner = stored.user_id;
    let Some(account) = state.db(move |s| s.account_by_id(owner)).await? else {
        return Ok(Err((None, "the credential's user is gone".into())));
    };
    if owner.as_uuid() != user_handle {
        let reason = "the user handle is not the credential's user".into();
        return Ok(Err((Some(account.user), reason)));
    }
    if account.user.disabled {
        return Ok(Err((Some(account.user), "disabled user".into())));
    }
    let accepted = accept(state, stored, |passkey| {
        webauthn.finish_discoverable_authentication_v2(response, ceremony, passkey)
    })
    .await?;
    Ok(match accepted {
        Ok(synced) => Ok((account, synced)),
        Err(reason) => Err((Some(account.user), reason)),
    })
}

/// Request options for the second step of `user`'s password login, listing their
/// passkeys; the flow is bound to that login's `mfa_token` (`token_hash`). `None` when
/// the user has no passkey.
pub async fn second_factor_options(
    state: &AppState,
    user: &User,
    token_hash: TokenHashBytes,
) -> Result<Option<FlowOptions>, ServiceError> {
    let webauthn = relying_party(state)?;
    let id = user.id;
    let stored = state.db(move |s| s.passkeys_of(id)).await?;
    if stored.is_empty() {
        return Ok(None);
    }
    let passkeys = stored
        .iter()
        .map(passkey_of)
        .collect::<Result<Vec<_>, _>>()?;
    let (request, ceremony) = webauthn
        .start_passkey_authentication(&passkeys)
        .map_err(|e| ServiceError::internal_because("starting a passkey check", e))?;
    let options =
        serde_json::to_value(&request.public_key).map_err(internal("serializing options"))?;
    open_flow(
        state,
        FlowKind::Mfa,
        Some(id),
        Some(token_hash),
        &ceremony,
        options,
    )
    .await
    .map(Some)
}

/// Takes the flow of a login's second step: `InvalidFlow` unless it was opened for
/// this `mfa_token`.
pub async fn take_second_factor_flow(
    state: &AppState,
    flow_id: &str,
    token_hash: &TokenHashBytes,
) -> Result<SecondFactorFlow, ServiceError> {
    relying_party(state)?;
    let flow = take_flow(state, flow_id, FlowKind::Mfa).await?;
    if flow.mfa_token_hash.as_ref() != Some(token_hash) {
        return Err(ServiceError::InvalidFlow);
    }
    Ok(SecondFactorFlow {
        ceremony: ceremony(&flow)?,
    })
}

/// A login's second-step ceremony, taken and waiting for its check.
pub struct SecondFactorFlow {
    ceremony: PasskeyAuthentication,
}

/// Checks a second-step response for `user`: `Ok(synced)` when a passkey of theirs
/// signed this flow's challenge, `Err(reason)` otherwise (the caller counts it as a
/// wrong code).
pub async fn check_second_factor(
    state: &AppState,
    user: &User,
    flow: SecondFactorFlow,
    credential: serde_json::Value,
) -> Result<Result<bool, Refusal>, ServiceError> {
    let webauthn = relying_party(state)?;
    let Ok(response) = serde_json::from_value::<PublicKeyCredential>(credential) else {
        return Ok(Err("not a WebAuthn response".into()));
    };
    let id = response.get_credential_id().to_vec();
    let stored = state
        .db(move |s| s.passkey_by_credential_id(&id))
        .await?
        .filter(|p| p.user_id == user.id);
    let Some(stored) = stored else {
        return Ok(Err("not one of the user's passkeys".into()));
    };
    let allowed = credential_id(&stored);
    accept(state, stored, |_| {
        let result = webauthn.finish_passkey_authentication(&response, &flow.ceremony)?;
        // The library checked the response against the credentials listed at options
        // time; this is the one the counter is recorded for.
        if *result.cred_id() != allowed {
            return Err(webauthn_rs::prelude::WebauthnError::CredentialNotFound);
        }
        Ok(result)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_must_rise_unless_it_never_started() {
        assert!(counter_moves_on(0, 0), "a synced passkey always reports 0");
        assert!(counter_moves_on(0, 1));
        assert!(counter_moves_on(5, 6));
        assert!(
            !counter_moves_on(5, 5),
            "the same value twice is a clone or a replay"
        );
        assert!(!counter_moves_on(5, 4));
        assert!(!counter_moves_on(5, 0), "a counter that went back to 0");
    }

    #[test]
    fn a_credential_key_never_holds_the_credential_id() {
        let id = [7u8; 32];
        assert!(!credential_key(&id).contains(&b64url(&id)[..8]));
    }
}
