//! Registration (`/v1/me/passkeys/options`, `/v1/me/passkeys`), listing and deletion.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{
    Alg, Flags, ORIGIN, PasskeyDevice, SoftKey, Tweaks, descriptor_ids, ids, spawn_passkey_app,
};
use crate::helpers::{assert_error, assert_validation_failed, expect_json};

#[both_backends]
async fn a_real_client_registers_a_passkey_that_is_listed_and_turns_mfa_on() {
    let app = spawn_passkey_app().await;
    let user = app.passkey_user("pk-register").await;
    assert!(!user.tokens.user.mfa_enabled);
    assert!(app.my_passkeys(user.access()).await.is_empty());

    let mut device = PasskeyDevice::new();
    let created = app.register_device(&user, &mut device, "Laptop").await;

    let listed = app.my_passkeys(user.access()).await;
    assert_eq!(
        listed,
        vec![created.clone()],
        "the listing shows what was created"
    );
    let me = expect_json(app.get_me(user.access()).await, StatusCode::OK).await;
    assert_eq!(
        me["mfa_enabled"], true,
        "a passkey is a second factor: {me}"
    );
    // The next options exclude it, so that an authenticator does not register twice.
    let flow = app.registration_options(&user).await;
    assert_eq!(
        descriptor_ids(&flow.options, "excludeCredentials"),
        [device.id()].into(),
        "{}",
        flow.options
    );
}

#[both_backends]
async fn several_passkeys_are_listed_oldest_first_excluded_and_each_logs_in() {
    let app = spawn_passkey_app().await;
    let user = app.passkey_user("pk-several").await;
    let mut es = SoftKey::es256();
    let mut rs = SoftKey::rs256();
    let mut device = PasskeyDevice::new();

    let first = app.register_soft(&user, &mut es, "Phone").await;
    app.advance(Duration::from_secs(60));
    let second = app.register_soft(&user, &mut rs, "Security key").await;
    app.advance(Duration::from_secs(60));
    let third = app.register_device(&user, &mut device, "Laptop").await;

    let listed = app.my_passkeys(user.access()).await;
    assert_eq!(ids(&listed), ids(&[first, second, third]), "oldest first");
    let names: Vec<&str> = listed.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["Phone", "Security key", "Laptop"]);
    let flow = app.registration_options(&user).await;
    assert_eq!(
        descriptor_ids(&flow.options, "excludeCredentials"),
        [es.id(), rs.id(), device.id()].into()
    );

    for body in [
        app.soft_login_ok(&mut es).await,
        app.soft_login_ok(&mut rs).await,
        app.device_login_ok(&mut device).await,
    ] {
        assert_eq!(body["user"]["id"], user.id(), "{body}");
    }
    // Each login stamped its own passkey.
    for passkey in app.my_passkeys(user.access()).await {
        assert!(passkey["last_used_at"].is_string(), "{passkey}");
    }
}

#[both_backends]
async fn es256_and_rs256_credentials_both_register_and_log_in() {
    let app = spawn_passkey_app().await;
    for alg in [Alg::Es256, Alg::Rs256] {
        let user = app.passkey_user("pk-alg").await;
        let mut key = SoftKey::new(alg);
        app.register_soft(&user, &mut key, &format!("{alg:?}"))
            .await;
        let body = app.soft_login_ok(&mut key).await;
        assert_eq!(body["user"]["id"], user.id(), "{alg:?}: {body}");
        // And again: the counter moved on, the signature is fresh.
        let body = app.soft_login_ok(&mut key).await;
        assert_eq!(body["user"]["id"], user.id(), "{alg:?}: {body}");
    }
}

/// An authenticator that ignores `excludeCredentials` sends a credential that is already
/// registered: 409 `passkey_exists`, whoever registered it.
#[both_backends]
async fn a_credential_registered_by_another_user_is_409_passkey_exists() {
    let app = spawn_passkey_app().await;
    let alice = app.passkey_user("pk-dup-a").await;
    let bob = app.passkey_user("pk-dup-b").await;
    let mut key = SoftKey::es256();
    app.register_soft(&alice, &mut key, "Key").await;

    let flow = app.registration_options(&bob).await;
    let credential = key.register(&flow.options, ORIGIN);
    assert_error(
        app.post_passkey(bob.access(), &flow.id, "Bob's now", &credential)
            .await,
        StatusCode::CONFLICT,
        "passkey_exists",
    )
    .await;
    assert!(app.my_passkeys(bob.access()).await.is_empty());
    assert_eq!(app.my_passkeys(alice.access()).await.len(), 1);
    // Still Alice's (the key now remembers Bob's user handle: answer with hers).
    let hers = Tweaks {
        user_handle: Some(alice.handle()),
        ..Tweaks::default()
    };
    let body = expect_json(app.soft_login_with(&mut key, &hers).await, StatusCode::OK).await;
    assert_eq!(body["user"]["id"], alice.id(), "{body}");
}

/// The same, by the user who registered it ("already registered, to anyone").
#[both_backends]
async fn a_credential_registered_twice_by_its_own_user_is_409_passkey_exists() {
    let app = spawn_passkey_app().await;
    let alice = app.passkey_user("pk-dup-self").await;
    let mut key = SoftKey::es256();
    app.register_soft(&alice, &mut key, "Key").await;

    let flow = app.registration_options(&alice).await;
    let credential = key.register(&flow.options, ORIGIN);
    assert_error(
        app.post_passkey(alice.access(), &flow.id, "Again", &credential)
            .await,
        StatusCode::CONFLICT,
        "passkey_exists",
    )
    .await;
    assert_eq!(app.my_passkeys(alice.access()).await.len(), 1);
}

#[both_backends]
async fn names_are_1_to_64_characters_after_trimming_without_control_characters() {
    let app = spawn_passkey_app().await;
    let user = app.passkey_user("pk-names").await;
    let long = "n".repeat(65);
    for bad in ["", "   ", long.as_str(), "bad\u{7}name", "line\nbreak"] {
        let flow = app.registration_options(&user).await;
        let credential = SoftKey::es256().register(&flow.options, ORIGIN);
        assert_validation_failed(
            app.post_passkey(user.access(), &flow.id, bad, &credential)
                .await,
            &["name"],
        )
        .await;
    }
    // A missing field is named too.
    let flow = app.registration_options(&user).await;
    let credential = SoftKey::es256().register(&flow.options, ORIGIN);
    assert_validation_failed(
        app.post_json_with_token(
            "/v1/me/passkeys",
            user.access(),
            &json!({ "flow_id": flow.id, "credential": credential }),
        )
        .await,
        &["name"],
    )
    .await;
    assert!(app.my_passkeys(user.access()).await.is_empty());

    // Trimmed; 64 characters (not bytes) are fine.
    let mut key = SoftKey::es256();
    let flow = app.registration_options(&user).await;
    let credential = key.register(&flow.options, ORIGIN);
    let created = expect_json(
        app.post_passkey(user.access(), &flow.id, "  Laptop  ", &credential)
            .await,
        StatusCode::CREATED,
    )
    .await;
    assert_eq!(created["name"], "Laptop", "{created}");
    let longest = "é".repeat(64);
    app.register_soft(&user, &mut SoftKey::es256(), &longest)
        .await;
}

/// What a registration must refuse, each with a fresh flow: 400 `invalid_passkey`, and
/// nothing stored.
#[both_backends]
async fn wrong_origin_rp_id_challenge_type_or_no_user_verification_is_400_at_registration() {
    let app = spawn_passkey_app().await;
    let user = app.passkey_user("pk-reg-refused").await;
    let no_uv = Flags {
        uv: false,
        ..Flags::DEVICE
    };
    let other = app.registration_options(&user).await;
    let other_challenge = other.options["challenge"].as_str().unwrap().to_owned();
    let mut cases = super::foreign_pages();
    cases.extend([
        (
            "http, not https",
            "http://app.example.com",
            Tweaks::default(),
        ),
        (
            "user verification off",
            ORIGIN,
            Tweaks {
                flags: Some(no_uv),
                ..Tweaks::default()
            },
        ),
        (
            "user presence off",
            ORIGIN,
            Tweaks {
                flags: Some(Flags {
                    up: false,
                    ..Flags::DEVICE
                }),
                ..Tweaks::default()
            },
        ),
        (
            "another flow's challenge",
            ORIGIN,
            Tweaks {
                challenge: Some(other_challenge),
                ..Tweaks::default()
            },
        ),
        (
            "a login's clientData type",
            ORIGIN,
            Tweaks {
                ceremony_type: Some("webauthn.get".into()),
                ..Tweaks::default()
            },
        ),
    ]);
    for (what, origin, tweaks) in cases {
        for alg in [Alg::Es256, Alg::Rs256] {
            let flow = app.registration_options(&user).await;
            let mut key = SoftKey::new(alg);
            let credential = key.register_with(&flow.options, origin, &tweaks);
            let body = assert_error(
                app.post_passkey(user.access(), &flow.id, "Refused", &credential)
                    .await,
                StatusCode::BAD_REQUEST,
                "invalid_passkey",
            )
            .await;
            eprintln!("{what} ({alg:?}): {body}");
            // The flow was spent by the refusal: the honest answer to it is too late.
            let honest = key.register(&flow.options, ORIGIN);
            assert_error(
                app.post_passkey(user.access(), &flow.id, "Honest", &honest)
                    .await,
                StatusCode::BAD_REQUEST,
                "invalid_flow",
            )
            .await;
        }
    }
    assert!(app.my_passkeys(user.access()).await.is_empty());
}

/// A `credential` that is not a RegistrationResponseJSON: 400 `invalid_passkey`.
#[both_backends]
async fn a_credential_that_is_not_the_webauthn_json_is_400_invalid_passkey() {
    let app = spawn_passkey_app().await;
    let user = app.passkey_user("pk-shape").await;
    let flow = app.registration_options(&user).await;
    let good = SoftKey::es256().register(&flow.options, ORIGIN);
    let mut not_base64 = good.clone();
    not_base64["response"]["attestationObject"] = json!("*** not base64 ***");
    let mut not_cbor = good.clone();
    not_cbor["response"]["attestationObject"] = json!("AAAA");
    let mut no_response = good.clone();
    no_response.as_object_mut().unwrap().remove("response");
    for bad in [
        json!("a string"),
        json!({}),
        json!([1, 2, 3]),
        no_response,
        not_base64,
        not_cbor,
    ] {
        let flow = app.registration_options(&user).await;
        assert_error(
            app.post_passkey(user.access(), &flow.id, "Bad", &bad).await,
            StatusCode::BAD_REQUEST,
            "invalid_passkey",
        )
        .await;
    }
    assert!(app.my_passkeys(user.access()).await.is_empty());
}

#[both_backends]
async fn a_registration_flow_is_single_use_expires_and_belongs_to_its_user_and_kind() {
    let app = spawn_passkey_app().await;
    let alice = app.passkey_user("pk-flow-a").await;
    let bob = app.passkey_user("pk-flow-b").await;
    let invalid_flow = |response| assert_error(response, StatusCode::BAD_REQUEST, "invalid_flow");

    // Twice: the second is refused, even for another credential.
    let flow = app.registration_options(&alice).await;
    let credential = SoftKey::es256().register(&flow.options, ORIGIN);
    expect_json(
        app.post_passkey(alice.access(), &flow.id, "Once", &credential)
            .await,
        StatusCode::CREATED,
    )
    .await;
    let another = SoftKey::es256().register(&flow.options, ORIGIN);
    invalid_flow(
        app.post_passkey(alice.access(), &flow.id, "Twice", &another)
            .await,
    )
    .await;

    // Alice's flow, answered by Bob (for his own user handle or hers).
    let flow = app.registration_options(&alice).await;
    let credential = SoftKey::es256().register(&flow.options, ORIGIN);
    invalid_flow(
        app.post_passkey(bob.access(), &flow.id, "Bob", &credential)
            .await,
    )
    .await;

    // A login flow is another kind.
    let login = app.login_options().await;
    let mut options = app.registration_options(&alice).await.options;
    options["challenge"] = login.options["challenge"].clone();
    let credential = SoftKey::es256().register(&options, ORIGIN);
    invalid_flow(
        app.post_passkey(alice.access(), &login.id, "Login", &credential)
            .await,
    )
    .await;

    // Unknown ids.
    let flow = app.registration_options(&alice).await;
    let credential = SoftKey::es256().register(&flow.options, ORIGIN);
    for unknown in [
        "x".to_owned(),
        "A".repeat(43),
        format!("{}A", &flow.id[..42]),
    ] {
        if unknown == flow.id {
            continue;
        }
        invalid_flow(
            app.post_passkey(alice.access(), &unknown, "Unknown", &credential)
                .await,
        )
        .await;
    }

    // Five minutes: still good just before, gone after.
    let flow = app.registration_options(&alice).await;
    let credential = SoftKey::es256().register(&flow.options, ORIGIN);
    app.advance(Duration::from_secs(5 * 60 - 5));
    expect_json(
        app.post_passkey(alice.access(), &flow.id, "Late", &credential)
            .await,
        StatusCode::CREATED,
    )
    .await;
    let flow = app.registration_options(&alice).await;
    let credential = SoftKey::es256().register(&flow.options, ORIGIN);
    app.advance(Duration::from_secs(5 * 60 + 1));
    invalid_flow(
        app.post_passkey(alice.access(), &flow.id, "Too late", &credential)
            .await,
    )
    .await;

    assert_eq!(app.my_passkeys(alice.access()).await.len(), 2);
    assert!(app.my_passkeys(bob.access()).await.is_empty());
}

#[both_backends]
async fn the_passkey_endpoints_need_a_bearer_token() {
    let app = spawn_passkey_app().await;
    for response in [
        app.post_json("/v1/me/passkeys/options", &json!({})).await,
        app.post_json("/v1/me/passkeys", &json!({})).await,
        app.get("/v1/me/passkeys").await,
        app.delete(&format!("/v1/me/passkeys/{}", uuid::Uuid::new_v4()))
            .await,
    ] {
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_token").await;
    }
}

#[both_backends]
async fn a_deleted_passkey_no_longer_logs_in_and_another_users_passkey_is_404() {
    let app = spawn_passkey_app().await;
    let alice = app.passkey_user("pk-delete-a").await;
    let bob = app.passkey_user("pk-delete-b").await;
    let mut kept = SoftKey::es256();
    let mut removed = SoftKey::es256();
    let mut bobs = SoftKey::es256();
    app.register_soft(&alice, &mut kept, "Kept").await;
    let gone = app.register_soft(&alice, &mut removed, "Removed").await;
    let bob_passkey = app.register_soft(&bob, &mut bobs, "Bob's").await;
    app.soft_login_ok(&mut removed).await;

    let path = |p: &Value| format!("/v1/me/passkeys/{}", p["id"].as_str().unwrap());
    // Bob's passkey is not Alice's to delete, nor to see.
    assert_error(
        app.delete_with_token(&path(&bob_passkey), alice.access(), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_eq!(app.my_passkeys(bob.access()).await.len(), 1);

    let response = app
        .delete_with_token(&path(&gone), alice.access(), None)
        .await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_error(
        app.delete_with_token(&path(&gone), alice.access(), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    for unknown in [uuid::Uuid::new_v4().to_string(), "not-an-id".to_owned()] {
        assert_error(
            app.delete_with_token(&format!("/v1/me/passkeys/{unknown}"), alice.access(), None)
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }

    let left = app.my_passkeys(alice.access()).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["name"], "Kept");
    app.soft_login_refused(&mut removed, &Tweaks::default())
        .await;
    app.soft_login_ok(&mut kept).await;
    app.soft_login_ok(&mut bobs).await;
}
