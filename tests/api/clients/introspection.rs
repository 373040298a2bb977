use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use super::{
    TestClient, admin_token, assert_inactive, assert_oauth_error, create_client, introspect,
    post_form,
};
use crate::helpers::{
    PASSWORD, access_of, b64url, expect_json, jwt_claims, refresh_of, sid_of, spawn_app,
    unique_email, user_id_of,
};

#[both_backends]
async fn introspection_tells_live_access_tokens_from_every_dead_one() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let checker = create_client(&app, &admin, &["introspect"]).await;

    let live = app.signup_ok(&unique_email("live"), PASSWORD).await;
    let body = introspect(&app, &checker, access_of(&live)).await;
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["token_type"], "access_token");
    assert_eq!(body["sub"], user_id_of(&live));
    assert_eq!(body["sid"], sid_of(&live).as_str());
    assert_eq!(body["iss"], app.settings.tokens.issuer.as_str());
    assert_eq!(body["aud"], app.settings.tokens.audience.as_str());
    assert_eq!(body["exp"], jwt_claims(access_of(&live))["exp"]);
    assert_eq!(body["iat"], jwt_claims(access_of(&live))["iat"]);

    // Its session revoked.
    let revoked = app.signup_ok(&unique_email("revoked"), PASSWORD).await;
    app.post_logout(refresh_of(&revoked)).await;
    assert_inactive(
        &introspect(&app, &checker, access_of(&revoked)).await,
        "revoked session",
    );

    // Its user disabled.
    let disabled = app.signup_ok(&unique_email("disabled"), PASSWORD).await;
    let response = app
        .patch_with_token(
            &format!("/v1/admin/users/{}", user_id_of(&disabled)),
            &admin,
            &json!({ "disabled": true }),
        )
        .await;
    expect_json(response, StatusCode::OK).await;
    assert_inactive(
        &introspect(&app, &checker, access_of(&disabled)).await,
        "disabled user",
    );

    // Its user deleted.
    let deleted = app.signup_ok(&unique_email("deleted"), PASSWORD).await;
    let response = app
        .delete_with_token(
            "/v1/me",
            access_of(&deleted),
            Some(json!({ "password": PASSWORD })),
        )
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_inactive(
        &introspect(&app, &checker, access_of(&deleted)).await,
        "deleted user",
    );

    // Forged: the claims changed under the signature; junk.
    let token = access_of(&live);
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    let mut claims = jwt_claims(token);
    claims["sub"] = json!(user_id_of(&revoked));
    parts[1] = b64url(serde_json::to_vec(&claims).expect("json"));
    let forged = parts.join(".");
    assert_inactive(&introspect(&app, &checker, &forged).await, "forged");
    for junk in ["", "a.b.c", "not-a-token"] {
        assert_inactive(&introspect(&app, &checker, junk).await, junk);
    }

    // Expired: still live just before, not after.
    assert_eq!(introspect(&app, &checker, token).await["active"], true);
    app.advance(Duration::from_secs(900 + 31));
    assert_inactive(&introspect(&app, &checker, token).await, "expired");
}

#[both_backends]
async fn introspection_reads_refresh_tokens_without_spending_them() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let checker = create_client(&app, &admin, &["introspect"]).await;

    let tokens = app.signup_ok(&unique_email("refresh"), PASSWORD).await;
    for _ in 0..2 {
        let body = introspect(&app, &checker, refresh_of(&tokens)).await;
        assert_eq!(body["active"], true, "{body}");
        assert_eq!(body["token_type"], "refresh_token");
        assert_eq!(body["sub"], user_id_of(&tokens));
        assert_eq!(body["sid"], sid_of(&tokens).as_str());
        let (iat, exp) = (
            body["iat"].as_i64().expect("iat"),
            body["exp"].as_i64().expect("exp"),
        );
        assert_eq!(exp - iat, 12 * 3600, "{body}");
    }
    let stored = app.stored_token(refresh_of(&tokens)).await.expect("stored");
    assert!(stored.spent_at.is_none(), "introspection spent the token");

    // Spent by a refresh: inactive; its child is live.
    let child = app.refresh_ok(refresh_of(&tokens)).await;
    assert_inactive(
        &introspect(&app, &checker, refresh_of(&tokens)).await,
        "spent",
    );
    assert_eq!(
        introspect(&app, &checker, refresh_of(&child)).await["active"],
        true
    );

    // Revoked: inactive, the spent parent too.
    app.post_logout(refresh_of(&child)).await;
    assert_inactive(
        &introspect(&app, &checker, refresh_of(&child)).await,
        "revoked",
    );

    // Expired (idle): live just before its end, not at it.
    let idle = app.signup_ok(&unique_email("idle"), PASSWORD).await;
    app.advance(Duration::from_secs(12 * 3600 - 1));
    assert_eq!(
        introspect(&app, &checker, refresh_of(&idle)).await["active"],
        true
    );
    app.advance(Duration::from_secs(1));
    assert_inactive(
        &introspect(&app, &checker, refresh_of(&idle)).await,
        "expired",
    );
    // Unknown, of the right shape.
    assert_inactive(
        &introspect(&app, &checker, &"A".repeat(43)).await,
        "unknown",
    );
}

#[both_backends]
async fn introspection_needs_a_client_holding_the_scope() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let plain = create_client(&app, &admin, &["revocations"]).await;
    let checker = create_client(&app, &admin, &["introspect"]).await;
    let user = app.signup_ok(&unique_email("scope"), PASSWORD).await;
    let form = [("token", access_of(&user))];

    let response = post_form(&app, "/oauth/introspect", &form, None).await;
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let response = post_form(&app, "/oauth/introspect", &form, Some(&plain)).await;
    assert_oauth_error(response, StatusCode::FORBIDDEN, "insufficient_scope").await;
    let wrong = TestClient {
        secret: "z".repeat(43),
        ..checker.clone()
    };
    let response = post_form(&app, "/oauth/introspect", &form, Some(&wrong)).await;
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let response = post_form(&app, "/oauth/introspect", &[], Some(&checker)).await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    // By client_secret_post too.
    let response = post_form(
        &app,
        "/oauth/introspect",
        &[
            ("token", access_of(&user)),
            ("token_type_hint", "refresh_token"),
            ("client_id", &checker.id),
            ("client_secret", &checker.secret),
        ],
        None,
    )
    .await;
    assert_eq!(expect_json(response, StatusCode::OK).await["active"], true);
}

#[both_backends]
async fn revocation_always_answers_200_and_any_refresh_token_ends_its_family() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let client = create_client(&app, &admin, &[]).await;
    let tokens = app.signup_ok(&unique_email("revoke"), PASSWORD).await;
    let child = app.refresh_ok(refresh_of(&tokens)).await;

    for token in ["unknown", &"B".repeat(43), access_of(&child)] {
        let response = post_form(&app, "/oauth/revoke", &[("token", token)], None).await;
        assert_eq!(response.status(), StatusCode::OK, "{token}");
    }
    // An access token is not revocable alone: the session is untouched.
    app.refresh_ok(refresh_of(&child)).await;

    // The spent first token revokes the whole family, with client authentication too.
    let response = post_form(
        &app,
        "/oauth/revoke",
        &[
            ("token", refresh_of(&tokens)),
            ("token_type_hint", "refresh_token"),
        ],
        Some(&client),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let session = app
        .stored_session(user_id_of(&tokens), &sid_of(&tokens))
        .await;
    assert_eq!(session.revoked_reason.map(|r| r.as_str()), Some("logout"));
    let response = app.post_refresh(refresh_of(&child)).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);

    // Wrong credentials are refused; no token is a malformed request.
    let wrong = TestClient {
        secret: "q".repeat(43),
        ..client.clone()
    };
    let response = post_form(&app, "/oauth/revoke", &[("token", "x")], Some(&wrong)).await;
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let response = post_form(&app, "/oauth/revoke", &[], None).await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
}
