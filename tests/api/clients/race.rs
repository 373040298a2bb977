//! Revoke vs refresh vs introspect on one family, at once, through three replicas on
//! one PostgreSQL database: once the revocation's 200 has been received, no
//! introspection sent after it may say "active", of the presented token, of a child a
//! concurrent refresh got, or of that refresh's access token.

use std::sync::Arc;
use std::time::Instant;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::kit::app::unique_email;
use crate::kit::password::PASSWORD;
use crate::kit::process;
use crate::kit::replicas::Replicas;

const ITERATIONS: usize = 50;

struct Front {
    replicas: Replicas,
    http: reqwest::Client,
    id: String,
    secret: String,
}

impl Front {
    async fn post_json(
        &self,
        path: &str,
        body: Value,
        bearer: Option<&str>,
    ) -> (StatusCode, Value) {
        let mut request = self.http.post(self.replicas.url(path)).json(&body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("no answer");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn form(&self, path: &str, form: &[(&str, &str)]) -> (StatusCode, Value) {
        let response = self
            .http
            .post(self.replicas.url(path))
            .basic_auth(&self.id, Some(&self.secret))
            .form(form)
            .send()
            .await
            .expect("no answer");
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Whether `token` introspects active; panics on anything but a 200.
    async fn active(&self, token: &str) -> bool {
        let (status, body) = self.form("/oauth/introspect", &[("token", token)]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["active"] == true
    }
}

#[derive(Debug, Default)]
struct Counts {
    refresh_won: usize,
    refresh_lost: usize,
    active_before_revoke_done: usize,
    inactive_during: usize,
    checked_after: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_family_never_introspects_active_after_the_revoke_answered_across_replicas() {
    let Some(replicas) = Replicas::start("clients_race", 3, |b| {
        b.with("GATEHOUSE_RATE_LIMITS", "off")
    })
    .await
    else {
        return;
    };
    let admin_email = unique_email("race-admin");
    replicas
        .binary
        .cli_ok(
            &["users", "create", "--email", &admin_email, "--admin"],
            Some(&format!("{PASSWORD}\n")),
        )
        .await;
    let http = process::client();
    let mut front = Front {
        replicas,
        http,
        id: String::new(),
        secret: String::new(),
    };
    let (status, login) = front
        .post_json(
            "/v1/login",
            json!({"email": admin_email, "password": PASSWORD}),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let admin = login["access_token"]
        .as_str()
        .expect("admin token")
        .to_owned();
    let (status, client) = front
        .post_json(
            "/v1/admin/clients",
            json!({"name": "race", "scopes": ["introspect"]}),
            Some(&admin),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{client}");
    front.id = client["client_id"].as_str().expect("id").into();
    front.secret = client["client_secret"].as_str().expect("secret").into();
    let front = Arc::new(front);

    let mut counts = Counts::default();
    for i in 0..ITERATIONS {
        let (status, tokens) = front
            .post_json(
                "/v1/signup",
                json!({"email": unique_email(&format!("race{i}")), "password": PASSWORD}),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{tokens}");
        let refresh = tokens["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_owned();
        let access = tokens["access_token"].as_str().expect("access").to_owned();

        // Without client authentication (a refresh token is a bearer secret), so the
        // revocation is as quick to reach the database as the refresh; the refresh starts
        // 0 to 4 ms later, so that each wins some iterations.
        let revoke = {
            let (front, token) = (Arc::clone(&front), refresh.clone());
            tokio::spawn(async move {
                let response = front
                    .http
                    .post(front.replicas.url("/oauth/revoke"))
                    .form(&[("token", &token)])
                    .send()
                    .await
                    .expect("no answer");
                assert_eq!(response.status(), StatusCode::OK);
                Instant::now()
            })
        };
        let rotate = {
            let (front, token) = (Arc::clone(&front), refresh.clone());
            let delay = std::time::Duration::from_millis((i % 5) as u64);
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                front
                    .post_json("/v1/refresh", json!({"refresh_token": token}), None)
                    .await
            })
        };
        // Introspections of the presented token while the two race: each notes when it
        // was sent, to be judged against when the revocation's answer arrived.
        let watch = {
            let (front, token) = (Arc::clone(&front), refresh.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for _ in 0..6 {
                    let sent = Instant::now();
                    seen.push((sent, front.active(&token).await));
                }
                seen
            })
        };
        let revoked_at = revoke.await.expect("revoke task");
        let (status, rotated) = rotate.await.expect("refresh task");
        let seen = watch.await.expect("introspect task");

        for (sent, active) in seen {
            if sent > revoked_at {
                assert!(!active, "iteration {i}: active after the revoke's 200");
                counts.checked_after += 1;
            } else if active {
                counts.active_before_revoke_done += 1;
            } else {
                counts.inactive_during += 1;
            }
        }
        let mut after = vec![refresh, access];
        match status {
            StatusCode::OK => {
                counts.refresh_won += 1;
                for key in ["refresh_token", "access_token"] {
                    after.push(rotated[key].as_str().expect("token").to_owned());
                }
            }
            StatusCode::UNAUTHORIZED => counts.refresh_lost += 1,
            other => panic!("iteration {i}: refresh answered {other}: {rotated}"),
        }
        for token in &after {
            assert!(
                !front.active(token).await,
                "iteration {i}: a token of the revoked family is active"
            );
            counts.checked_after += 1;
        }
    }
    eprintln!("revoke vs refresh vs introspect, {ITERATIONS} iterations: {counts:?}");
    assert_eq!(counts.refresh_won + counts.refresh_lost, ITERATIONS);
}
