//! Passkeys across three replicas on one PostgreSQL database (`kit::replicas`): a ceremony
//! started on one replica finishes on another, because its flow lives in the database;
//! and it finishes once, whichever replicas the answer is sent to, all at once. Likewise
//! one signature-counter value is accepted once (the conditional UPDATE).

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::kit::app::unique_email;
use crate::kit::authenticator::{Alg, SoftKey, Tweaks};
use crate::kit::password::PASSWORD;
use crate::kit::process::{self, Binary};
use crate::kit::replicas::{Replicas, post};

const REPLICAS: usize = 3;
const RP_ID: &str = "example.com";
const ORIGIN: &str = "https://app.example.com";

fn passkeys_on(binary: Binary) -> Binary {
    binary
        .with("GATEHOUSE_WEBAUTHN_RP_ID", RP_ID)
        .with("GATEHOUSE_WEBAUTHN_ORIGINS", ORIGIN)
}

/// `(flow_id, options)` from an options answer, asserting 200.
fn flow_of((status, body): (StatusCode, Value)) -> (String, Value) {
    assert_eq!(status, StatusCode::OK, "{body}");
    let flow_id = body["flow_id"].as_str().expect("flow_id").to_owned();
    (flow_id, body["options"].clone())
}

fn amr(body: &Value) -> Value {
    let token = body["access_token"].as_str().expect("access_token");
    let payload = token.split('.').nth(1).expect("a JWT");
    let claims: Value = serde_json::from_slice(&crate::kit::authenticator::from_b64url(payload))
        .expect("JSON claims");
    claims["amr"].clone()
}

/// Signs a user up through replica 0; the email and the access token.
async fn signed_up(replicas: &Replicas, client: &reqwest::Client) -> (String, String) {
    let email = unique_email("pk-replicas");
    let (status, body) = post(
        client,
        replicas.replica(0).url("/v1/signup"),
        None,
        json!({"email": email, "password": PASSWORD}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    (
        email,
        body["access_token"].as_str().expect("token").to_owned(),
    )
}

/// Registers `key`: options from replica `from`, the answer to replica `to`; then the
/// same answer to replica `again` finds its flow spent.
async fn register_across(
    replicas: &Replicas,
    client: &reqwest::Client,
    access: &str,
    key: &mut SoftKey,
    [from, to, again]: [usize; 3],
) {
    let (flow_id, options) = flow_of(
        post(
            client,
            replicas.replica(from).url("/v1/me/passkeys/options"),
            Some(access),
            json!({}),
        )
        .await,
    );
    let credential = key.register(&options, ORIGIN);
    let body = json!({"flow_id": flow_id, "name": format!("from {from} to {to}"), "credential": credential});
    let (status, created) = post(
        client,
        replicas.replica(to).url("/v1/me/passkeys"),
        Some(access),
        body.clone(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let (status, again_body) = post(
        client,
        replicas.replica(again).url("/v1/me/passkeys"),
        Some(access),
        body,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{again_body}");
    assert_eq!(again_body["error"], "invalid_flow", "{again_body}");
}

/// Every ceremony started on one replica and finished on the next; the answer resent to
/// the third finds its flow spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn options_from_one_replica_and_the_answer_to_another_succeed_once() {
    let Some(replicas) = Replicas::start("replicas_passkey_cross", REPLICAS, passkeys_on).await
    else {
        return;
    };
    let client = process::client();
    let (email, access) = signed_up(&replicas, &client).await;
    let mut keys = [
        SoftKey::es256(),
        SoftKey::rs256(),
        SoftKey::synced(Alg::Es256),
    ];
    for (i, key) in keys.iter_mut().enumerate() {
        register_across(
            &replicas,
            &client,
            &access,
            key,
            [i, (i + 1) % REPLICAS, (i + 2) % REPLICAS],
        )
        .await;
    }
    let (status, listed) = {
        let response = client
            .get(replicas.replica(2).url("/v1/me/passkeys"))
            .bearer_auth(&access)
            .send()
            .await
            .expect("an answer");
        (
            response.status(),
            response.json::<Value>().await.expect("JSON"),
        )
    };
    assert_eq!(status, StatusCode::OK, "{listed}");
    assert_eq!(
        listed["passkeys"].as_array().map(Vec::len),
        Some(3),
        "{listed}"
    );

    // Passwordless, each key, each pair of replicas.
    for (i, key) in keys.iter_mut().enumerate() {
        let (from, to, again) = (i, (i + 1) % REPLICAS, (i + 2) % REPLICAS);
        let (flow_id, options) = flow_of(
            post(
                &client,
                replicas.replica(from).url("/v1/passkeys/login/options"),
                None,
                json!({}),
            )
            .await,
        );
        let body = json!({"flow_id": flow_id, "credential": key.authenticate(&options, ORIGIN)});
        let (status, tokens) = post(
            &client,
            replicas.replica(to).url("/v1/passkeys/login"),
            None,
            body.clone(),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        assert_eq!(tokens["user"]["email"], email.as_str(), "{tokens}");
        let kind = if i == 2 { "swk" } else { "hwk" };
        assert_eq!(amr(&tokens), json!([kind, "user", "mfa"]));
        let (status, replayed) = post(
            &client,
            replicas.replica(again).url("/v1/passkeys/login"),
            None,
            body,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{replayed}");
        assert_eq!(replayed["error"], "invalid_flow", "{replayed}");
    }

    // The second factor: password on one replica, options on the next, answer on the third.
    for (i, key) in keys.iter_mut().enumerate() {
        let (status, challenge) = post(
            &client,
            replicas.replica(i).url("/v1/login"),
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{challenge}");
        assert_eq!(challenge["methods"], json!(["webauthn"]), "{challenge}");
        let mfa_token = challenge["mfa_token"].as_str().expect("mfa_token");
        let (flow_id, options) = flow_of(
            post(
                &client,
                replicas
                    .replica((i + 1) % REPLICAS)
                    .url("/v1/login/mfa/webauthn/options"),
                None,
                json!({"mfa_token": mfa_token}),
            )
            .await,
        );
        let (status, tokens) = post(
            &client,
            replicas.replica((i + 2) % REPLICAS).url("/v1/login/mfa"),
            None,
            json!({
                "mfa_token": mfa_token,
                "flow_id": flow_id,
                "credential": key.authenticate(&options, ORIGIN),
            }),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{tokens}");
        let kind = if i == 2 { "swk" } else { "hwk" };
        assert_eq!(amr(&tokens), json!(["pwd", kind, "mfa"]));
    }
}

/// One assertion sent to all three replicas at the same moment: one session, two
/// `invalid_flow`; several rounds, the options from a different replica each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_assertion_sent_to_three_replicas_at_once_opens_one_session() {
    let Some(replicas) = Replicas::start("replicas_passkey_race", REPLICAS, passkeys_on).await
    else {
        return;
    };
    let client = process::client();
    let (_, access) = signed_up(&replicas, &client).await;
    let mut key = SoftKey::synced(Alg::Es256);
    register_across(&replicas, &client, &access, &mut key, [0, 1, 2]).await;

    for round in 0..6 {
        let (flow_id, options) = flow_of(
            post(
                &client,
                replicas
                    .replica(round % REPLICAS)
                    .url("/v1/passkeys/login/options"),
                None,
                json!({}),
            )
            .await,
        );
        let body = json!({"flow_id": flow_id, "credential": key.authenticate(&options, ORIGIN)});
        let answers = join_all((0..REPLICAS).map(|i| {
            post(
                &client,
                replicas.replica(i).url("/v1/passkeys/login"),
                None,
                body.clone(),
            )
        }))
        .await;
        let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
        let spent = answers
            .iter()
            .filter(|(s, b)| *s == StatusCode::BAD_REQUEST && b["error"] == "invalid_flow")
            .count();
        eprintln!("round {round}: {ok} x 200, {spent} x invalid_flow");
        assert_eq!(ok, 1, "{answers:?}");
        assert_eq!(spent, REPLICAS - 1, "{answers:?}");
    }
}

/// Three flows, three assertions carrying the same counter value, one to each replica at
/// once: the counter is taken once (one 200), the others are a counter not above the
/// stored one (401 `invalid_passkey`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_counter_value_is_accepted_once_across_replicas() {
    let Some(replicas) = Replicas::start("replicas_passkey_counter", REPLICAS, |b| {
        // The refused duplicates are failures of the credential: keep them under the lockout.
        passkeys_on(b).with("GATEHOUSE_LOCKOUT_MAX_FAILURES", "50")
    })
    .await
    else {
        return;
    };
    let client = process::client();
    let (_, access) = signed_up(&replicas, &client).await;
    let mut key = SoftKey::es256();
    register_across(&replicas, &client, &access, &mut key, [0, 1, 2]).await;

    for round in 0..3u32 {
        let value = 10 * (round + 1);
        let mut bodies = Vec::new();
        for i in 0..REPLICAS {
            let (flow_id, options) = flow_of(
                post(
                    &client,
                    replicas.replica(i).url("/v1/passkeys/login/options"),
                    None,
                    json!({}),
                )
                .await,
            );
            let tweaks = Tweaks {
                counter: Some(value),
                ..Tweaks::default()
            };
            let credential = key.authenticate_with(&options, ORIGIN, &tweaks);
            bodies.push(json!({"flow_id": flow_id, "credential": credential}));
        }
        let answers = join_all(bodies.iter().enumerate().map(|(i, body)| {
            post(
                &client,
                replicas
                    .replica((i + 1) % REPLICAS)
                    .url("/v1/passkeys/login"),
                None,
                body.clone(),
            )
        }))
        .await;
        let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
        let refused = answers
            .iter()
            .filter(|(s, b)| *s == StatusCode::UNAUTHORIZED && b["error"] == "invalid_passkey")
            .count();
        eprintln!("counter {value}: {ok} x 200, {refused} x invalid_passkey");
        assert_eq!(ok, 1, "{answers:?}");
        assert_eq!(refused, REPLICAS - 1, "{answers:?}");
    }
}
