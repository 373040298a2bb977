use std::time::Duration;

use futures::future::join_all;
use gatehouse::storage::StoredToken;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::{
    PASSWORD, TestApp, Tokens, access_of, assert_error, assert_token_response,
    assert_validation_failed, b64url_decode, header, jwt_claims, refresh_of, sid_of, spawn_app,
    spawn_app_with, unique_email, user_id_of,
};

const HOUR: Duration = Duration::from_secs(3600);

async fn logged_in(app: &TestApp) -> (String, Tokens) {
    let email = unique_email("refresh");
    app.signup_ok(&email, PASSWORD).await;
    let tokens = app.login_ok(&email, PASSWORD).await;
    (email, tokens)
}

async fn assert_refresh_fails(app: &TestApp, token: &str, code: &str) {
    let response = app.post_refresh(token).await;
    assert_error(response, StatusCode::UNAUTHORIZED, code).await;
}

/// A family's tokens as stored, in the order they were issued: from its first token,
/// each spent token's child. A token stored outside this chain is invisible to the
/// `Store`; sqlite_only.rs counts the rows themselves.
async fn family_chain(app: &TestApp, first_token: &str) -> Vec<StoredToken> {
    let first = app
        .stored_token(first_token)
        .await
        .expect("the family's first token is not stored");
    let family = first.family_id;
    let mut chain = vec![first];
    while let Some(child) = chain.last().and_then(|t| t.child.clone()) {
        let token = app
            .store(move |s| s.find_refresh_token(child.hash))
            .await
            .expect("a spent token's child is not stored");
        assert_eq!(token.family_id, family, "a child left its family");
        assert!(chain.len() < 1000, "the chain of children loops");
        chain.push(token);
    }
    chain
}

fn unspent(chain: &[StoredToken]) -> usize {
    chain.iter().filter(|t| t.spent_at.is_none()).count()
}

#[both_backends]
async fn refresh_rotates_the_token_within_the_same_family() {
    let app = spawn_app().await;
    let (email, tokens) = logged_in(&app).await;
    let r0 = refresh_of(&tokens).to_owned();

    let response = app.post_refresh(&r0).await;

    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "cache-control").as_deref(),
        Some("no-store")
    );
    assert_eq!(header(&response, "pragma").as_deref(), Some("no-cache"));
    let rotated: Value = response.json().await.unwrap();
    assert_token_response(&rotated, &email, "user");
    assert_ne!(
        refresh_of(&rotated),
        r0,
        "the refresh token was not rotated"
    );
    assert_ne!(access_of(&rotated), access_of(&tokens));
    assert_eq!(
        sid_of(&rotated),
        sid_of(&tokens),
        "rotation left the family"
    );
    assert_eq!(rotated["user"]["id"], tokens["user"]["id"]);
    let claims = jwt_claims(access_of(&rotated));
    assert_eq!(claims["sub"], tokens["user"]["id"]);
    assert_ne!(claims["jti"], jwt_claims(access_of(&tokens))["jti"]);

    // The new access token works and the new refresh token rotates again.
    let response = app.get_me(access_of(&rotated)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let again = app.refresh_ok(refresh_of(&rotated)).await;
    assert_eq!(sid_of(&again), sid_of(&tokens));
    assert_ne!(refresh_of(&again), refresh_of(&rotated));
}

#[both_backends]
async fn refresh_with_an_unknown_token_is_401_invalid_refresh_token() {
    let app = spawn_app().await;
    logged_in(&app).await;

    // Well-formed but never issued.
    let forged = crate::helpers::b64url([7u8; 32]);
    assert_refresh_fails(&app, &forged, "invalid_refresh_token").await;
    for garbage in ["x", "not a token", "....", &"A".repeat(4000)] {
        assert_refresh_fails(&app, garbage, "invalid_refresh_token").await;
    }
}

#[both_backends]
async fn refresh_with_a_missing_or_empty_token_is_400() {
    let app = spawn_app().await;

    let response = app.post_json("/v1/refresh", &json!({})).await;
    assert_validation_failed(response, &["refresh_token"]).await;

    let response = app.post_refresh("").await;
    assert_validation_failed(response, &["refresh_token"]).await;
}

#[both_backends]
async fn an_access_token_is_not_a_refresh_token() {
    let app = spawn_app().await;
    let (_, tokens) = logged_in(&app).await;

    assert_refresh_fails(&app, access_of(&tokens), "invalid_refresh_token").await;
}

#[both_backends]
async fn reuse_revokes_the_whole_family_including_the_newest_token() {
    let app = spawn_app().await;
    let (email, tokens) = logged_in(&app).await;
    let other_family = app.login_ok(&email, PASSWORD).await;
    let r0 = refresh_of(&tokens).to_owned();
    let r1 = app.refresh_ok(&r0).await;
    let r2 = app.refresh_ok(refresh_of(&r1)).await;

    // r0's child has been used: presenting r0 is reuse.
    assert_refresh_fails(&app, &r0, "refresh_token_reused").await;

    // The newest token of the family is dead too.
    assert_refresh_fails(&app, refresh_of(&r2), "invalid_refresh_token").await;
    // The family is gone from the user's live sessions...
    let live: Vec<String> = app
        .my_sessions_ok(access_of(&other_family))
        .await
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !live.contains(&sid_of(&tokens)),
        "revoked family still listed: {live:?}"
    );
    // ...and other families of the user are untouched.
    assert!(live.contains(&sid_of(&other_family)));
    app.refresh_ok(refresh_of(&other_family)).await;
    // The family stays revoked in storage.
    let session = app
        .stored_session(user_id_of(&tokens), &sid_of(&tokens))
        .await;
    assert_eq!(
        session.revoked_reason.map(|r| r.as_str()),
        Some("reuse_detected")
    );
}

#[both_backends]
async fn replay_inside_the_grace_returns_the_same_child_and_a_fresh_access_token() {
    let app = spawn_app().await;
    assert_eq!(
        app.settings.tokens.refresh_reuse_grace,
        Duration::from_secs(10)
    );
    let (_, tokens) = logged_in(&app).await;
    let r0 = refresh_of(&tokens).to_owned();
    let first = app.refresh_ok(&r0).await;

    app.advance(Duration::from_secs(5));
    let replay = app.refresh_ok(&r0).await;

    assert_eq!(
        refresh_of(&replay),
        refresh_of(&first),
        "the grace must hand back the same child, never a second one"
    );
    assert_ne!(
        access_of(&replay),
        access_of(&first),
        "access token is not fresh"
    );
    assert_ne!(
        jwt_claims(access_of(&replay))["jti"],
        jwt_claims(access_of(&first))["jti"]
    );
    assert_eq!(sid_of(&replay), sid_of(&tokens));
    let chain = family_chain(&app, &r0).await;
    assert_eq!(chain.len(), 2, "a second child was stored");
    assert_eq!(unspent(&chain), 1);
    assert_eq!(
        app.stored_token(refresh_of(&first)).await.as_ref(),
        chain.get(1)
    );

    // The child is still good and the family lives on.
    let next = app.refresh_ok(refresh_of(&first)).await;
    assert_eq!(sid_of(&next), sid_of(&tokens));
}

#[both_backends]
async fn replay_after_the_child_was_used_is_reuse() {
    let app = spawn_app().await;
    let (_, tokens) = logged_in(&app).await;
    let r0 = refresh_of(&tokens).to_owned();
    let child = app.refresh_ok(&r0).await;
    let grandchild = app.refresh_ok(refresh_of(&child)).await;

    // Still inside the grace period, but the child has been used.
    assert_refresh_fails(&app, &r0, "refresh_token_reused").await;
    assert_refresh_fails(&app, refresh_of(&grandchild), "invalid_refresh_token").await;
}

#[both_backends]
async fn replay_after_the_grace_has_passed_is_reuse() {
    let app = spawn_app().await;
    let (_, tokens) = logged_in(&app).await;
    let r0 = refresh_of(&tokens).to_owned();
    let child = app.refresh_ok(&r0).await;

    app.advance(Duration::from_secs(11));

    assert_refresh_fails(&app, &r0, "refresh_token_reused").await;
    // The unused child died with its family.
    assert_refresh_fails(&app, refresh_of(&child), "invalid_refresh_token").await;
}

#[both_backends]
async fn with_the_grace_off_any_replay_is_reuse() {
    let app = spawn_app_with(|s| s.tokens.refresh_reuse_grace = Duration::ZERO).await;
    let (_, tokens) = logged_in(&app).await;
    let r0 = refresh_of(&tokens).to_owned();
    let child = app.refresh_ok(&r0).await;

    assert_refresh_fails(&app, &r0, "refresh_token_reused").await;
    assert_refresh_fails(&app, refresh_of(&child), "invalid_refresh_token").await;
}

#[both_backends(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_inside_the_grace_all_get_the_same_child() {
    let app = spawn_app().await;
    let (_, tokens) = logged_in(&app).await;
    let r0 = refresh_of(&tokens).to_owned();

    let responses = join_all((0..10).map(|_| app.post_refresh(&r0))).await;

    let mut children = Vec::new();
    for response in responses {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            status,
            StatusCode::OK,
            "a concurrent refresh failed: {body}"
        );
        children.push(refresh_of(&body).to_owned());
    }
    assert!(
        children.iter().all(|c| c == &children[0]),
        "concurrent refreshes produced different children: {children:?}"
    );
    assert_ne!(children[0], r0);
    let chain = family_chain(&app, &r0).await;
    assert_eq!(unspent(&chain), 1, "family has more than one live token");
    assert_eq!(chain.len(), 2, "more than one child was stored");
    assert_eq!(
        app.stored_token(&children[0]).await.as_ref(),
        chain.get(1),
        "the child handed out is not the one stored"
    );
    // That one child works.
    app.refresh_ok(&children[0]).await;
}

#[both_backends(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_with_the_grace_off_have_exactly_one_winner() {
    let app = spawn_app_with(|s| s.tokens.refresh_reuse_grace = Duration::ZERO).await;
    let (_, tokens) = logged_in(&app).await;
    let r0 = refresh_of(&tokens).to_owned();

    let responses = join_all((0..10).map(|_| app.post_refresh(&r0))).await;

    let mut winners = Vec::new();
    let mut reused = 0;
    for response in responses {
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        match status {
            StatusCode::OK => winners.push(refresh_of(&body).to_owned()),
            StatusCode::UNAUTHORIZED => {
                let code = body["error"].as_str().unwrap_or_default();
                assert!(
                    code == "refresh_token_reused" || code == "invalid_refresh_token",
                    "unexpected error: {body}"
                );
                if code == "refresh_token_reused" {
                    reused += 1;
                }
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert_eq!(winners.len(), 1, "expected exactly one winner: {winners:?}");
    assert!(reused >= 1, "no loser was reported as reuse");
    let chain = family_chain(&app, &r0).await;
    assert!(chain.len() <= 2, "more than one child was stored");
    assert_eq!(
        app.stored_token(&winners[0]).await.as_ref(),
        chain.get(1),
        "the winner's child is not the one stored"
    );
    // Reuse revoked the family, so the winner's child is dead too.
    assert_refresh_fails(&app, &winners[0], "invalid_refresh_token").await;
}

#[both_backends]
async fn refresh_expires_after_12_hours_idle() {
    let app = spawn_app().await;
    let (_, tokens) = logged_in(&app).await;
    assert_eq!(tokens["refresh_expires_in"], 43_200);

    // Just before the idle expiry it still works...
    app.advance(12 * HOUR - Duration::from_secs(60));
    let rotated = app.refresh_ok(refresh_of(&tokens)).await;
    assert_eq!(rotated["refresh_expires_in"], 43_200);

    // ...and a token left idle for longer than 12 h does not.
    app.advance(12 * HOUR + Duration::from_secs(1));
    assert_refresh_fails(&app, refresh_of(&rotated), "invalid_refresh_token").await;
}

#[both_backends]
async fn a_family_ends_7_days_after_login_whatever_its_use() {
    let app = spawn_app().await;
    let (_, tokens) = logged_in(&app).await;
    let mut current = refresh_of(&tokens).to_owned();

    // Refresh every 6 hours: the idle limit is never hit.
    for step in 1..=27 {
        app.advance(6 * HOUR);
        let rotated = app.refresh_ok(&current).await;
        let expires_in = rotated["refresh_expires_in"].as_i64().unwrap();
        if step < 26 {
            assert_eq!(expires_in, 43_200, "step {step}: {rotated}");
        } else {
            // Capped by the family's absolute expiry (7 d = 168 h after login).
            let left = (168 - 6 * step) * 3600;
            assert!(
                (left - 1..=left).contains(&expires_in),
                "step {step}: refresh_expires_in {expires_in}, expected about {left}"
            );
        }
        current = refresh_of(&rotated).to_owned();
    }

    // 168 h + 1 min after login: the family is over.
    app.advance(6 * HOUR + Duration::from_secs(60));
    assert_refresh_fails(&app, &current, "invalid_refresh_token").await;
}

#[both_backends]
async fn refresh_tokens_are_stored_only_as_hashes() {
    let app = spawn_app().await;
    let (_, tokens) = logged_in(&app).await;
    let rotated = app.refresh_ok(refresh_of(&tokens)).await;
    let plaintexts = [
        refresh_of(&tokens).to_owned(),
        refresh_of(&rotated).to_owned(),
    ];

    // Each token is present as its SHA-256 (of the string or of its 32 bytes).
    // sqlite_only.rs also checks that no table holds the plaintext.
    for token in &plaintexts {
        let mut found = 0;
        for hashed in [token.as_bytes().to_vec(), b64url_decode(token)] {
            let hash: [u8; 32] = ring::digest::digest(&ring::digest::SHA256, &hashed)
                .as_ref()
                .try_into()
                .unwrap();
            if app
                .store(move |s| s.find_refresh_token(hash))
                .await
                .is_some()
            {
                found += 1;
            }
        }
        assert_eq!(found, 1, "no SHA-256 of the token is stored");
    }
}

#[both_backends]
async fn a_family_never_has_two_unspent_tokens() {
    let app = spawn_app().await;
    let (_, tokens) = logged_in(&app).await;
    let first = refresh_of(&tokens).to_owned();
    let mut current = first.clone();
    for issued in 2..=5 {
        current = refresh_of(&app.refresh_ok(&current).await).to_owned();
        let chain = family_chain(&app, &first).await;
        assert_eq!(unspent(&chain), 1);
        assert_eq!(chain.len(), issued);
    }
    let newest = app.stored_token(&current).await.expect("the newest token");
    assert_eq!(newest.spent_at, None);
}

#[both_backends]
async fn a_revoked_family_stays_revoked_for_a_late_replay() {
    let app = spawn_app().await;
    let (_, tokens) = logged_in(&app).await;
    let r0 = refresh_of(&tokens).to_owned();
    let r1 = app.refresh_ok(&r0).await;
    let r2 = app.refresh_ok(refresh_of(&r1)).await;
    assert_refresh_fails(&app, &r0, "refresh_token_reused").await;

    // Days later (family not yet expired) the old tokens are still recognised and refused.
    app.advance(3 * 24 * HOUR);
    let response = app.post_refresh(&r0).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = app.post_refresh(refresh_of(&r1)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    for token in [r0.as_str(), refresh_of(&r1), refresh_of(&r2)] {
        let stored = app.stored_token(token).await.unwrap_or_else(|| {
            panic!("hashes of a revoked family were dropped before its absolute expiry")
        });
        assert!(stored.family_revoked, "the family came back to life");
    }
}
