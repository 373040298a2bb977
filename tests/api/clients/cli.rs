use reqwest::StatusCode;

use super::{TestClient, assert_oauth_error, client_token, post_form};
use crate::helpers::spawn_app;

fn field(out: &str, name: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .unwrap_or_else(|| panic!("no {name} in {out}"))
        .trim()
        .to_owned()
}

#[both_backends]
async fn an_operator_manages_clients_with_the_cli() {
    let app = spawn_app().await;
    let out = app
        .cli_ok(
            &[
                "clients",
                "create",
                "--name",
                "billing",
                "--scope",
                "introspect",
                "--scope",
                "b",
            ],
            None,
        )
        .await;
    let client = TestClient {
        id: field(&out, "client_id"),
        secret: field(&out, "client_secret"),
    };
    assert_eq!(field(&out, "scopes"), "b introspect");
    assert_eq!(
        client_token(&app, &client, None).await["scope"],
        "b introspect"
    );

    let listed = app.cli_ok(&["clients", "list"], None).await;
    assert!(
        listed.contains(&client.id) && listed.contains("billing"),
        "{listed}"
    );
    assert!(
        !listed.contains(&client.secret),
        "a listing shows no secret: {listed}"
    );

    let out = app
        .cli_ok(&["clients", "rotate-secret", &client.id], None)
        .await;
    let rotated = TestClient {
        id: client.id.clone(),
        secret: field(&out, "client_secret"),
    };
    assert_ne!(rotated.secret, client.secret);
    client_token(&app, &rotated, None).await;
    client_token(&app, &client, None).await;

    app.cli_ok(&["clients", "delete", &client.id], None).await;
    let grant = [("grant_type", "client_credentials")];
    let response = post_form(&app, "/oauth/token", &grant, Some(&rotated)).await;
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let (code, out) = app.binary().cli(&["clients", "delete", &client.id]).await;
    assert_eq!(code, 1, "{out}");
}
