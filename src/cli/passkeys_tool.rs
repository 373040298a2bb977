//! `gatehouse users passkeys|remove-passkey`: the operator's side of the admin API's
//! passkey endpoints, through the same service functions and audit events.

use super::{Failure, user_by_email};
use crate::domain::{User, UserId};
use crate::service::{AppState, ClientMeta, ServiceError, passkeys};

pub(super) enum PasskeysCommand {
    List(String),
    Remove { email: String, passkey: String },
}

/// The user named by an email or an id.
async fn user(state: &AppState, named: &str) -> Result<User, Failure> {
    let Ok(id) = named.parse::<UserId>() else {
        return user_by_email(state, named).await;
    };
    let account = state.db(move |s| s.account_by_id(id)).await?;
    account
        .map(|a| a.user)
        .ok_or_else(|| Failure::User(format!("no user with id {named}")))
}

/// Passkeys off answer 404 in the API; here the operator is told which setting.
fn off(e: ServiceError) -> Failure {
    match e {
        ServiceError::NotFound => {
            Failure::User("GATEHOUSE_WEBAUTHN_RP_ID is unset: passkeys are off".into())
        }
        other => other.into(),
    }
}

pub(super) async fn run(state: &AppState, command: PasskeysCommand) -> Result<(), Failure> {
    match command {
        PasskeysCommand::List(email) => {
            let user = user(state, &email).await?;
            let list = passkeys::list_for_admin(state, user.id)
                .await
                .map_err(off)?;
            if list.is_empty() {
                println!("{} has no passkey", user.email.as_str());
            }
            for p in list {
                println!(
                    "{}\t{}\tcreated {}\tlast used {}",
                    p.id,
                    p.name,
                    p.created_at.to_rfc3339(),
                    p.last_used_at
                        .map_or_else(|| "never".to_owned(), |t| t.to_rfc3339())
                );
            }
        }
        PasskeysCommand::Remove { email, passkey } => {
            let user = user(state, &email).await?;
            let id = passkey
                .parse()
                .map_err(|_| Failure::User(format!("{passkey} is not a passkey id")))?;
            let removed = passkeys::remove(state, None, user.id, id, &ClientMeta::default()).await;
            match removed {
                Err(ServiceError::NotFound) if state.passkeys.is_some() => {
                    return Err(Failure::User(format!(
                        "{} has no passkey {passkey}",
                        user.email.as_str()
                    )));
                }
                other => other.map_err(off)?,
            }
            println!(
                "passkey {passkey} of {} removed (their sessions stay; \
                 `gatehouse sessions revoke --user` ends them)",
                user.email.as_str()
            );
        }
    }
    Ok(())
}
