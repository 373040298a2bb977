//! `gatehouse clients create|list|rotate-secret|delete`: the operator's side of the
//! admin API's client endpoints, through the same service functions and audit events.

use super::{ClientsCommand, Failure};
use crate::domain::ClientId;
use crate::service::admin::Actor;
use crate::service::clients::{self, ClientRequest};
use crate::service::{AppState, ClientMeta, ServiceError};

fn client_id(raw: &str) -> Result<ClientId, Failure> {
    raw.parse()
        .map_err(|_| Failure::User(format!("{raw} is not a client id")))
}

fn not_found(raw: &str) -> impl FnOnce(ServiceError) -> Failure + '_ {
    move |e| match e {
        ServiceError::NotFound => Failure::User(format!("no client {raw}")),
        other => other.into(),
    }
}

pub(super) async fn run(state: &AppState, command: ClientsCommand) -> Result<(), Failure> {
    let cli = ClientMeta::default();
    match command {
        ClientsCommand::Create {
            name,
            scopes,
            audience,
        } => {
            let request = ClientRequest::parse(Some(name), Some(scopes), audience)
                .map_err(ServiceError::Validation)?;
            let made = clients::create(state, Actor::Operator, request, &cli).await?;
            println!("client_id:     {}", made.client.id);
            println!("client_secret: {}", made.secret.expose());
            println!("scopes:        {}", made.client.scopes.spaced());
            eprintln!("the secret is shown this once; only its hash is stored");
        }
        ClientsCommand::List => {
            for c in clients::list(state).await? {
                println!(
                    "{}\t{}\tscopes={}\taudience={}\tcreated {}\tlast used {}\t{}",
                    c.id,
                    c.name,
                    c.scopes.spaced(),
                    c.audience.as_deref().unwrap_or("-"),
                    c.created_at.to_rfc3339(),
                    c.last_used_at
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "never".into()),
                    if c.disabled { "disabled" } else { "active" },
                );
            }
        }
        ClientsCommand::RotateSecret { client_id: raw } => {
            let id = client_id(&raw)?;
            let secret = clients::rotate_secret(state, Actor::Operator, id, &cli)
                .await
                .map_err(not_found(&raw))?;
            println!("client_id:     {id}");
            println!("client_secret: {}", secret.expose());
            let overlap = state.policy.tokens.client_secret_overlap.as_secs();
            eprintln!("the previous secret keeps working for {overlap} s");
        }
        ClientsCommand::Delete { client_id: raw } => {
            let id = client_id(&raw)?;
            clients::delete(state, Actor::Operator, id, &cli)
                .await
                .map_err(not_found(&raw))?;
            println!("client {id} deleted; its tokens introspect inactive from now on");
        }
    }
    Ok(())
}
