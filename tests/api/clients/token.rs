use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use super::{
    TestClient, admin_token, assert_inactive, assert_oauth_error, client_access, client_token,
    create_client, introspect, post_form,
};
use crate::helpers::{
    assert_invalid_token, expect_json, header, jwt_claims, kid_of, spawn_app, spawn_app_with,
};

/// Verifies `token` with the published keys, RS256, issuer and `audience`, as a
/// resource server does.
fn verified_offline(set: &serde_json::Value, token: &str, audience: &str) {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode};
    let kid = kid_of(token);
    let jwk = set["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .expect("the token's key is published");
    let key = DecodingKey::from_rsa_components(
        jwk["n"].as_str().expect("n"),
        jwk["e"].as_str().expect("e"),
    )
    .expect("an RSA key");
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[audience]);
    validation.set_issuer(&["http://127.0.0.1"]);
    decode::<serde_json::Value>(token, &key, &validation).expect("verifies offline");
}

#[both_backends]
async fn a_client_gets_a_token_by_basic_and_by_post_with_the_contract_claims() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let client = create_client(&app, &admin, &["a", "b"]).await;

    let basic = post_form(
        &app,
        "/oauth/token",
        &[("grant_type", "client_credentials")],
        Some(&client),
    )
    .await;
    assert_eq!(header(&basic, "cache-control").as_deref(), Some("no-store"));
    let by_basic = expect_json(basic, StatusCode::OK).await;
    let posted = post_form(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client.id),
            ("client_secret", &client.secret),
        ],
        None,
    )
    .await;
    let by_post = expect_json(posted, StatusCode::OK).await;

    for body in [&by_basic, &by_post] {
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(body["expires_in"], 900);
        assert_eq!(
            body["scope"], "a b",
            "all of the client's scopes by default"
        );
        assert!(body.get("refresh_token").is_none(), "{body}");
        let token = body["access_token"].as_str().expect("token");
        verified_offline(&app.jwks_ok().await, token, &app.settings.tokens.audience);
        let claims = jwt_claims(token);
        assert_eq!(claims["iss"], app.settings.tokens.issuer.as_str());
        assert_eq!(claims["sub"], client.id.as_str());
        assert_eq!(claims["client_id"], client.id.as_str());
        assert_eq!(claims["aud"], app.settings.tokens.audience.as_str());
        assert_eq!(claims["scope"], "a b");
        let (iat, exp) = (
            claims["iat"].as_i64().expect("iat"),
            claims["exp"].as_i64().expect("exp"),
        );
        assert_eq!(exp - iat, 900);
        assert_eq!(claims["nbf"], iat);
        assert!(claims["jti"].is_string());
        assert!(
            claims.get("sid").is_none() && claims.get("role").is_none(),
            "{claims}"
        );
    }
}

#[both_backends]
async fn a_client_gets_a_subset_of_its_scopes_and_never_more() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let client = create_client(&app, &admin, &["a", "b", "c"]).await;
    let body = client_token(&app, &client, Some("c a")).await;
    assert_eq!(body["scope"], "a c");
    assert_eq!(
        jwt_claims(body["access_token"].as_str().expect("token"))["scope"],
        "a c"
    );
    for refused in ["d", "a d", "a\"b"] {
        let response = post_form(
            &app,
            "/oauth/token",
            &[("grant_type", "client_credentials"), ("scope", refused)],
            Some(&client),
        )
        .await;
        assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_scope").await;
    }
}

#[both_backends]
async fn a_client_with_an_audience_gets_tokens_for_it() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let response = app
        .post_json_with_token(
            "/v1/admin/clients",
            &admin,
            &json!({ "name": "x", "scopes": [], "audience": "payments" }),
        )
        .await;
    let body = expect_json(response, StatusCode::CREATED).await;
    let client = TestClient {
        id: body["client_id"].as_str().expect("id").into(),
        secret: body["client_secret"].as_str().expect("secret").into(),
    };
    let token = client_access(&app, &client).await;
    assert_eq!(jwt_claims(&token)["aud"], "payments");
    assert_eq!(jwt_claims(&token)["scope"], "");
}

#[both_backends]
async fn the_token_endpoint_answers_rfc_6749_errors() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let client = create_client(&app, &admin, &[]).await;
    let grant = [("grant_type", "client_credentials")];

    let response = post_form(&app, "/oauth/token", &grant, None).await;
    assert_eq!(
        header(&response, "www-authenticate").as_deref(),
        Some(r#"Basic realm="gatehouse""#)
    );
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let wrong = TestClient {
        secret: "x".repeat(43),
        ..client.clone()
    };
    let response = post_form(&app, "/oauth/token", &grant, Some(&wrong)).await;
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let unknown = TestClient {
        id: "00000000-0000-0000-0000-000000000000".into(),
        ..client.clone()
    };
    let response = post_form(&app, "/oauth/token", &grant, Some(&unknown)).await;
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    let response = post_form(
        &app,
        "/oauth/token",
        &[("grant_type", "password")],
        Some(&client),
    )
    .await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "unsupported_grant_type").await;
    let response = post_form(&app, "/oauth/token", &[], Some(&client)).await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    // Both authentication methods at once (RFC 6749 §2.3).
    let response = post_form(
        &app,
        "/oauth/token",
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &client.id),
            ("client_secret", &client.secret),
        ],
        Some(&client),
    )
    .await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    // A repeated parameter (RFC 6749 §3.2), and JSON instead of a form.
    let response = app
        .api_client
        .post(app.url("/oauth/token"))
        .basic_auth(&client.id, Some(&client.secret))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=client_credentials&grant_type=client_credentials")
        .send()
        .await
        .expect("request");
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    let response = app
        .post_json(
            "/oauth/token",
            &json!({ "grant_type": "client_credentials" }),
        )
        .await;
    assert_oauth_error(response, StatusCode::BAD_REQUEST, "invalid_request").await;
    // The rest of the API keeps the contract's shape.
    let response = app.get("/v1/me").await;
    assert_invalid_token(response, false).await;
}

#[both_backends]
async fn user_endpoints_refuse_a_client_token() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let client = create_client(&app, &admin, &["introspect"]).await;
    let token = client_access(&app, &client).await;
    for path in [
        "/v1/me",
        "/v1/me/sessions",
        "/v1/admin/users",
        "/v1/admin/clients",
    ] {
        let response = app.get_with_token(path, &token).await;
        assert_invalid_token(response, true).await;
    }
}

#[both_backends]
async fn an_old_secret_works_until_the_overlap_ends_then_is_invalid_client() {
    let app = spawn_app_with(|s| s.tokens.client_secret_overlap = Duration::from_secs(60)).await;
    let admin = admin_token(&app).await;
    let old = create_client(&app, &admin, &[]).await;
    let response = app
        .post_json_with_token(
            &format!("/v1/admin/clients/{}/secret", old.id),
            &admin,
            &json!({}),
        )
        .await;
    let body = expect_json(response, StatusCode::OK).await;
    let new = TestClient {
        id: old.id.clone(),
        secret: body["client_secret"].as_str().expect("secret").into(),
    };
    client_token(&app, &old, None).await;
    client_token(&app, &new, None).await;
    app.advance(Duration::from_secs(59));
    client_token(&app, &old, None).await;
    app.advance(Duration::from_secs(1));
    let grant = [("grant_type", "client_credentials")];
    let response = post_form(&app, "/oauth/token", &grant, Some(&old)).await;
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    client_token(&app, &new, None).await;
    let listed = expect_json(
        app.get_with_token("/v1/admin/clients", &admin).await,
        StatusCode::OK,
    )
    .await;
    assert!(listed["clients"][0]["last_used_at"].is_string(), "{listed}");
}

#[both_backends]
async fn a_deleted_client_gets_no_token_and_its_tokens_introspect_inactive() {
    let app = spawn_app().await;
    let admin = admin_token(&app).await;
    let checker = create_client(&app, &admin, &["introspect"]).await;
    let doomed = create_client(&app, &admin, &["x"]).await;
    let token = client_access(&app, &doomed).await;
    let live = introspect(&app, &checker, &token).await;
    assert_eq!(live["active"], true, "{live}");
    assert_eq!(live["token_type"], "access_token");
    assert_eq!(live["client_id"], doomed.id.as_str());
    assert_eq!(live["sub"], doomed.id.as_str());
    assert_eq!(live["scope"], "x");
    assert!(live.get("sid").is_none(), "{live}");
    for field in ["exp", "iat", "iss", "aud"] {
        assert!(live.get(field).is_some(), "{field}: {live}");
    }

    let response = app
        .delete_with_token(&format!("/v1/admin/clients/{}", doomed.id), &admin, None)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_inactive(
        &introspect(&app, &checker, &token).await,
        "a deleted client's token",
    );
    let response = post_form(
        &app,
        "/oauth/token",
        &[("grant_type", "client_credentials")],
        Some(&doomed),
    )
    .await;
    assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
}

#[both_backends]
async fn client_authentication_failures_are_limited_per_client_and_audited() {
    let app = spawn_app_with(|s| s.lockout.max_failures_per_ip = 3).await;
    let admin = admin_token(&app).await;
    let client = create_client(&app, &admin, &[]).await;
    let wrong = TestClient {
        secret: "y".repeat(43),
        ..client.clone()
    };
    let grant = [("grant_type", "client_credentials")];
    for _ in 0..3 {
        let response = post_form(&app, "/oauth/token", &grant, Some(&wrong)).await;
        assert_oauth_error(response, StatusCode::UNAUTHORIZED, "invalid_client").await;
    }
    // Locked: even the right secret waits for the window.
    let response = post_form(&app, "/oauth/token", &grant, Some(&client)).await;
    assert!(header(&response, "retry-after").is_some());
    assert_oauth_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
    app.advance(app.settings.lockout.window + Duration::from_secs(1));
    client_token(&app, &client, None).await;

    let audit = expect_json(
        app.get_with_token("/v1/admin/audit?type=client_auth_failed", &admin)
            .await,
        StatusCode::OK,
    )
    .await;
    let text = audit.to_string();
    assert!(text.contains(&client.id), "{audit}");
    assert!(!text.contains(&wrong.secret), "{audit}");
}

#[tokio::test]
async fn discovery_and_rfc_8414_metadata_name_the_client_endpoints() {
    let app = spawn_app().await;
    let issuer = app.settings.tokens.issuer.clone();
    let oidc = expect_json(
        app.get("/.well-known/openid-configuration").await,
        StatusCode::OK,
    )
    .await;
    let rfc8414 = expect_json(
        app.get("/.well-known/oauth-authorization-server").await,
        StatusCode::OK,
    )
    .await;
    assert_eq!(oidc, rfc8414, "one document at both addresses");
    assert_eq!(oidc["issuer"], issuer.as_str());
    assert_eq!(oidc["token_endpoint"], format!("{issuer}/oauth/token"));
    assert_eq!(
        oidc["introspection_endpoint"],
        format!("{issuer}/oauth/introspect")
    );
    assert_eq!(
        oidc["revocation_endpoint"],
        format!("{issuer}/oauth/revoke")
    );
    assert_eq!(oidc["grant_types_supported"], json!(["client_credentials"]));
    assert_eq!(
        oidc["token_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post"])
    );
    assert_eq!(oidc["jwks_uri"], format!("{issuer}/.well-known/jwks.json"));
}
