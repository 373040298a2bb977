//! Passwordless login (`/v1/passkeys/login/options`, `/v1/passkeys/login`): what it opens,
//! and everything it refuses.

use std::time::Duration;

use gatehouse::storage::AuditFilter;
use reqwest::StatusCode;
use serde_json::{Value, json};

use super::{
    Alg, Flags, ORIGIN, PasskeyDevice, SoftKey, Tweaks, User, amr, amr_of, spawn_passkey_app,
};
use crate::helpers::{
    TestApp, access_of, assert_error, assert_token_response, expect_json, refresh_of,
};

/// `user` with `key` registered.
async fn user_with_key(app: &TestApp, tag: &str, key: &mut SoftKey) -> User {
    let user = app.passkey_user(tag).await;
    app.register_soft(&user, key, "Key").await;
    user
}

/// The audit events of `kind` about `user`, as `(outcome, detail)`.
async fn audited(app: &TestApp, user: &User, kind: &str) -> Vec<(String, Option<String>)> {
    let user_id = user.id().parse().expect("a user id");
    let kind = kind.to_owned();
    app.store(move |s| {
        s.list_audit(&AuditFilter {
            user_id: Some(user_id),
            kind: Some(kind),
            limit: 100,
            before: None,
        })
    })
    .await
    .into_iter()
    .map(|e| (e.outcome, e.detail))
    .collect()
}

#[both_backends]
async fn a_passkey_alone_logs_in_with_hwk_user_mfa_and_the_session_works() {
    let app = spawn_passkey_app().await;
    let mut key = SoftKey::es256();
    let user = user_with_key(&app, "pk-login", &mut key).await;

    let body = app.soft_login_ok(&mut key).await;
    assert_token_response(&body, &user.email, "user");
    assert_eq!(amr(&body), json!(["hwk", "user", "mfa"]), "{body}");
    assert_eq!(body["user"]["mfa_enabled"], true, "{body}");
    assert_ne!(
        access_of(&body),
        user.access(),
        "a new session, not the signup's"
    );

    let me = expect_json(app.get_me(access_of(&body)).await, StatusCode::OK).await;
    assert_eq!(me["email"], user.email.as_str(), "{me}");
    let refreshed = app.refresh_ok(refresh_of(&body)).await;
    assert_eq!(amr(refreshed.json()), json!(["hwk", "user", "mfa"]));
    expect_json(app.get_me(access_of(&refreshed)).await, StatusCode::OK).await;

    let passkeys = app.my_passkeys(user.access()).await;
    let used = passkeys[0]["last_used_at"].as_str().expect("stamped");
    let used = chrono::DateTime::parse_from_rfc3339(used).expect("RFC 3339");
    assert!(
        (app.now() - used.to_utc()).num_seconds().abs() <= 2,
        "last_used_at is the login's time: {used} vs {}",
        app.now()
    );
}

/// The design's audit kinds: `passkey_registered`, `passkey_login`, `passkey_failed`,
/// `passkey_removed`, each for the user concerned.
#[both_backends]
async fn passkey_ceremonies_are_audited_by_kind() {
    let app = spawn_passkey_app().await;
    let mut key = SoftKey::es256();
    let user = user_with_key(&app, "pk-audit", &mut key).await;
    app.soft_login_ok(&mut key).await;
    let bad = Tweaks {
        corrupt_signature: true,
        ..Tweaks::default()
    };
    app.soft_login_refused(&mut key, &bad).await;
    let passkey = app.my_passkeys(user.access()).await.remove(0);
    let path = format!("/v1/me/passkeys/{}", passkey["id"].as_str().expect("id"));
    let response = app.delete_with_token(&path, user.access(), None).await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    assert_eq!(audited(&app, &user, "passkey_registered").await.len(), 1);
    assert_eq!(audited(&app, &user, "passkey_removed").await.len(), 1);
    let logins = audited(&app, &user, "passkey_login").await;
    assert!(
        logins.iter().any(|(outcome, _)| outcome == "ok"),
        "a passkey_login with outcome ok: {logins:?}"
    );
    // The refusal: passkey_failed, or a passkey_login whose outcome is the reason.
    let failed = audited(&app, &user, "passkey_failed").await;
    assert!(
        !failed.is_empty() || logins.iter().any(|(outcome, _)| outcome != "ok"),
        "the refused login is audited: {failed:?} {logins:?}"
    );
}

#[both_backends]
async fn the_passkey_crates_synced_passkey_logs_in_with_swk() {
    let app = spawn_passkey_app().await;
    // passkey-authenticator marks every credential backup eligible (BE) and backed up.
    for mut device in [PasskeyDevice::new(), PasskeyDevice::counting()] {
        let user = app.passkey_user("pk-device").await;
        app.register_device(&user, &mut device, "Password manager")
            .await;
        for _ in 0..2 {
            let body = app.device_login_ok(&mut device).await;
            assert_eq!(body["user"]["id"], user.id(), "{body}");
            assert_eq!(amr(&body), json!(["swk", "user", "mfa"]), "{body}");
        }
    }
}

#[both_backends]
async fn a_replayed_assertion_is_400_invalid_flow_and_under_a_new_flow_401() {
    let app = spawn_passkey_app().await;
    let mut key = SoftKey::es256();
    user_with_key(&app, "pk-replay", &mut key).await;

    let flow = app.login_options().await;
    let assertion = key.authenticate(&flow.options, ORIGIN);
    expect_json(
        app.post_passkey_login(&flow.id, &assertion).await,
        StatusCode::OK,
    )
    .await;
    assert_error(
        app.post_passkey_login(&flow.id, &assertion).await,
        StatusCode::BAD_REQUEST,
        "invalid_flow",
    )
    .await;
    // The captured assertion under a flow of its own: the challenge is not that flow's.
    let fresh = app.login_options().await;
    assert_error(
        app.post_passkey_login(&fresh.id, &assertion).await,
        StatusCode::UNAUTHORIZED,
        "invalid_passkey",
    )
    .await;
}

#[both_backends]
async fn a_challenge_from_another_flow_is_401_and_spends_only_the_flow_it_was_sent_with() {
    let app = spawn_passkey_app().await;
    let mut key = SoftKey::es256();
    user_with_key(&app, "pk-crossflow", &mut key).await;

    let a = app.login_options().await;
    let b = app.login_options().await;
    assert_ne!(a.options["challenge"], b.options["challenge"]);
    let signed_for_b = key.authenticate(&b.options, ORIGIN);
    assert_error(
        app.post_passkey_login(&a.id, &signed_for_b).await,
        StatusCode::UNAUTHORIZED,
        "invalid_passkey",
    )
    .await;
    // A's flow is spent; B's is untouched and takes its own answer.
    let honest_a = key.authenticate(&a.options, ORIGIN);
    assert_error(
        app.post_passkey_login(&a.id, &honest_a).await,
        StatusCode::BAD_REQUEST,
        "invalid_flow",
    )
    .await;
    let honest_b = key.authenticate(&b.options, ORIGIN);
    expect_json(
        app.post_passkey_login(&b.id, &honest_b).await,
        StatusCode::OK,
    )
    .await;

    // A registration's challenge is not a login's either.
    let user = app.passkey_user("pk-crossflow-reg").await;
    let registration = app.registration_options(&user).await;
    let tweaks = Tweaks {
        challenge: registration.options["challenge"]
            .as_str()
            .map(str::to_owned),
        ..Tweaks::default()
    };
    app.soft_login_refused(&mut key, &tweaks).await;
}

/// Each refusal with a key of its own, so that no lockout builds up.
#[both_backends]
async fn wrong_origin_rp_id_type_or_signature_at_login_is_401_invalid_passkey() {
    let app = spawn_passkey_app().await;
    let mut cases = super::foreign_pages();
    cases.extend([
        (
            "a registration's clientData type",
            ORIGIN,
            Tweaks {
                ceremony_type: Some("webauthn.create".into()),
                ..Tweaks::default()
            },
        ),
        (
            "a signature over something else",
            ORIGIN,
            Tweaks {
                corrupt_signature: true,
                ..Tweaks::default()
            },
        ),
    ]);
    for (what, origin, tweaks) in cases {
        for alg in [Alg::Es256, Alg::Rs256] {
            let mut key = SoftKey::new(alg);
            user_with_key(&app, "pk-login-refused", &mut key).await;
            let flow = app.login_options().await;
            let credential = key.authenticate_with(&flow.options, origin, &tweaks);
            let body = assert_error(
                app.post_passkey_login(&flow.id, &credential).await,
                StatusCode::UNAUTHORIZED,
                "invalid_passkey",
            )
            .await;
            eprintln!("{what} ({alg:?}): {body}");
            // The key itself is fine.
            app.soft_login_ok(&mut key).await;
        }
    }
}

#[both_backends]
async fn without_user_verification_registration_is_400_and_login_is_401() {
    let app = spawn_passkey_app().await;
    let no_uv = Tweaks {
        flags: Some(Flags {
            uv: false,
            ..Flags::DEVICE
        }),
        ..Tweaks::default()
    };
    let user = app.passkey_user("pk-uv").await;
    let flow = app.registration_options(&user).await;
    let credential = SoftKey::es256().register_with(&flow.options, ORIGIN, &no_uv);
    assert_error(
        app.post_passkey(user.access(), &flow.id, "No UV", &credential)
            .await,
        StatusCode::BAD_REQUEST,
        "invalid_passkey",
    )
    .await;
    assert!(app.my_passkeys(user.access()).await.is_empty());

    let mut key = SoftKey::es256();
    app.register_soft(&user, &mut key, "UV").await;
    app.soft_login_refused(&mut key, &no_uv).await;
    // Nor a synced key without it.
    let mut synced = SoftKey::synced(Alg::Es256);
    app.register_soft(&user, &mut synced, "Synced").await;
    let synced_no_uv = Tweaks {
        flags: Some(Flags {
            uv: false,
            ..Flags::SYNCED
        }),
        ..Tweaks::default()
    };
    app.soft_login_refused(&mut synced, &synced_no_uv).await;
    app.soft_login_ok(&mut key).await;
    app.soft_login_ok(&mut synced).await;
}

#[both_backends]
async fn a_counter_that_does_not_go_up_is_401_and_a_higher_one_is_accepted() {
    let app = spawn_passkey_app().await;
    let mut key = SoftKey::es256();
    user_with_key(&app, "pk-counter", &mut key).await;
    app.soft_login_ok(&mut key).await;
    app.soft_login_ok(&mut key).await;
    let seen = key.counter();
    assert!(seen >= 2, "the key counts: {seen}");

    for stale in [seen, seen - 1] {
        let tweaks = Tweaks {
            counter: Some(stale),
            ..Tweaks::default()
        };
        app.soft_login_refused(&mut key, &tweaks).await;
    }
    // A jump forward is fine (another RP's uses of a global counter).
    let jump = Tweaks {
        counter: Some(seen + 100),
        ..Tweaks::default()
    };
    expect_json(app.soft_login_with(&mut key, &jump).await, StatusCode::OK).await;
    app.soft_login_ok(&mut key).await;

    // The same with the passkey crates: the device's stored counter put back (a clone).
    let mut device = PasskeyDevice::counting();
    let user = app.passkey_user("pk-counter-device").await;
    app.register_device(&user, &mut device, "Counting").await;
    app.device_login_ok(&mut device).await;
    app.device_login_ok(&mut device).await;
    let counter = device.counter().expect("a counting device");
    device.set_counter(counter - 1);
    let flow = app.login_options().await;
    let credential = device.authenticate(&flow.options, ORIGIN).await;
    assert_error(
        app.post_passkey_login(&flow.id, &credential).await,
        StatusCode::UNAUTHORIZED,
        "invalid_passkey",
    )
    .await;
    device.set_counter(counter + 5);
    app.device_login_ok(&mut device).await;
}

#[both_backends]
async fn a_credential_that_always_reports_zero_is_accepted_every_time() {
    let app = spawn_passkey_app().await;
    // Synced (BE, BS): swk.
    for alg in [Alg::Es256, Alg::Rs256] {
        let mut synced = SoftKey::synced(alg);
        let user = user_with_key(&app, "pk-zero", &mut synced).await;
        for _ in 0..4 {
            let body = app.soft_login_ok(&mut synced).await;
            assert_eq!(synced.counter(), 0);
            assert_eq!(body["user"]["id"], user.id(), "{body}");
            assert_eq!(amr(&body), amr_of("swk", &["user", "mfa"]), "{alg:?}");
        }
    }
    // Device-bound, but without a counter: hwk, and 0 is fine too.
    let zero = Tweaks {
        counter: Some(0),
        ..Tweaks::default()
    };
    let user = app.passkey_user("pk-zero-device").await;
    let mut key = SoftKey::es256();
    let flow = app.registration_options(&user).await;
    let credential = key.register_with(&flow.options, ORIGIN, &zero);
    expect_json(
        app.post_passkey(user.access(), &flow.id, "No counter", &credential)
            .await,
        StatusCode::CREATED,
    )
    .await;
    for _ in 0..3 {
        let body = expect_json(app.soft_login_with(&mut key, &zero).await, StatusCode::OK).await;
        assert_eq!(amr(&body), amr_of("hwk", &["user", "mfa"]));
    }
}

#[both_backends]
async fn a_credential_answering_for_another_user_is_401() {
    let app = spawn_passkey_app().await;
    let mut alices = SoftKey::es256();
    let alice = user_with_key(&app, "pk-handle-a", &mut alices).await;
    let mut bobs = SoftKey::es256();
    let bob = user_with_key(&app, "pk-handle-b", &mut bobs).await;

    // Alice's credential, claiming to be Bob's account (or anyone's).
    for handle in [bob.handle(), uuid::Uuid::new_v4().as_bytes().to_vec()] {
        let tweaks = Tweaks {
            user_handle: Some(handle),
            ..Tweaks::default()
        };
        app.soft_login_refused(&mut alices, &tweaks).await;
    }
    // A discoverable login must name its user (WebAuthn §7.2 step 6): no userHandle, no
    // login.
    let flow = app.login_options().await;
    let mut credential = alices.authenticate(&flow.options, ORIGIN);
    credential["response"]["userHandle"] = Value::Null;
    assert_error(
        app.post_passkey_login(&flow.id, &credential).await,
        StatusCode::UNAUTHORIZED,
        "invalid_passkey",
    )
    .await;

    let body = app.soft_login_ok(&mut alices).await;
    assert_eq!(body["user"]["id"], alice.id());
    let body = app.soft_login_ok(&mut bobs).await;
    assert_eq!(body["user"]["id"], bob.id());
}

#[both_backends]
async fn an_unknown_credential_is_401() {
    let app = spawn_passkey_app().await;
    let mut registered = SoftKey::es256();
    let user = user_with_key(&app, "pk-unknown", &mut registered).await;
    // Never registered, though it names a real user.
    let mut stranger = SoftKey::es256();
    let flow = app.registration_options(&user).await;
    stranger.register(&flow.options, ORIGIN);
    app.soft_login_refused(&mut stranger, &Tweaks::default())
        .await;
    // The registered key's id with the stranger's signature.
    let flow = app.login_options().await;
    let mut credential = stranger.authenticate(&flow.options, ORIGIN);
    credential["id"] = json!(registered.id());
    credential["rawId"] = json!(registered.id());
    assert_error(
        app.post_passkey_login(&flow.id, &credential).await,
        StatusCode::UNAUTHORIZED,
        "invalid_passkey",
    )
    .await;
}

#[both_backends]
async fn a_disabled_user_cannot_log_in_with_a_passkey() {
    let app = spawn_passkey_app().await;
    let admin = app.passkey_admin().await;
    let mut key = SoftKey::synced(Alg::Es256);
    let user = user_with_key(&app, "pk-disabled", &mut key).await;
    let path = format!("/v1/admin/users/{}", user.id());

    expect_json(
        app.patch_with_token(&path, &admin, &json!({ "disabled": true }))
            .await,
        StatusCode::OK,
    )
    .await;
    app.soft_login_refused(&mut key, &Tweaks::default()).await;

    expect_json(
        app.patch_with_token(&path, &admin, &json!({ "disabled": false }))
            .await,
        StatusCode::OK,
    )
    .await;
    app.soft_login_ok(&mut key).await;
}

#[both_backends]
async fn a_login_flow_is_single_use_expires_and_is_not_a_registration_flow() {
    let app = spawn_passkey_app().await;
    let mut key = SoftKey::es256();
    let user = user_with_key(&app, "pk-login-flow", &mut key).await;
    let invalid_flow = |response| assert_error(response, StatusCode::BAD_REQUEST, "invalid_flow");

    let flow = app.login_options().await;
    let credential = key.authenticate(&flow.options, ORIGIN);
    app.advance(Duration::from_secs(5 * 60 + 1));
    invalid_flow(app.post_passkey_login(&flow.id, &credential).await).await;

    let registration = app.registration_options(&user).await;
    let mut options = app.login_options().await.options;
    options["challenge"] = registration.options["challenge"].clone();
    let credential = key.authenticate(&options, ORIGIN);
    invalid_flow(app.post_passkey_login(&registration.id, &credential).await).await;

    let credential = key.authenticate(&app.login_options().await.options, ORIGIN);
    for unknown in ["x".to_owned(), "A".repeat(43)] {
        invalid_flow(app.post_passkey_login(&unknown, &credential).await).await;
    }
    app.soft_login_ok(&mut key).await;
}

#[both_backends]
async fn a_login_credential_that_is_not_the_webauthn_json_is_401_invalid_passkey() {
    let app = spawn_passkey_app().await;
    let mut key = SoftKey::es256();
    user_with_key(&app, "pk-login-shape", &mut key).await;
    let good = key.authenticate(&app.login_options().await.options, ORIGIN);
    let mut not_base64 = good.clone();
    not_base64["response"]["signature"] = json!("*** not base64 ***");
    let mut no_response = good.clone();
    no_response.as_object_mut().unwrap().remove("response");
    for bad in [json!("a string"), json!({}), no_response, not_base64] {
        let flow = app.login_options().await;
        assert_error(
            app.post_passkey_login(&flow.id, &bad).await,
            StatusCode::UNAUTHORIZED,
            "invalid_passkey",
        )
        .await;
    }
}

/// Bad assertions for one credential pile up: 429 `too_many_attempts` with Retry-After,
/// for the right one too, until the lockout window passes.
#[both_backends]
async fn repeated_bad_passkey_logins_end_in_429_until_the_window_passes() {
    let app = spawn_passkey_app().await;
    let mut key = SoftKey::es256();
    user_with_key(&app, "pk-lockout", &mut key).await;
    let bad = Tweaks {
        corrupt_signature: true,
        ..Tweaks::default()
    };

    let mut refused = 0;
    let retry_after = loop {
        let response = app.soft_login_with(&mut key, &bad).await;
        if response.status() == StatusCode::TOO_MANY_REQUESTS {
            let retry_after: u64 = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .expect("Retry-After");
            assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;
            break retry_after;
        }
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_passkey").await;
        refused += 1;
        assert!(refused < 30, "no lockout after {refused} bad assertions");
    };
    eprintln!("locked out after {refused} bad assertions; Retry-After {retry_after}");
    assert!(refused >= 1, "the first bad assertion is checked");
    assert!(retry_after > 0 && retry_after <= 15 * 60, "{retry_after}");

    let response = app.soft_login_with(&mut key, &Tweaks::default()).await;
    assert_error(response, StatusCode::TOO_MANY_REQUESTS, "too_many_attempts").await;

    app.advance(Duration::from_secs(retry_after + 1));
    app.soft_login_ok(&mut key).await;
}

/// Fifty passwordless logins in a row each open a session of their own, with the
/// passkey's `amr`. The ceremony's times (options, then login) and a password login's,
/// measured in the same run, are printed as medians and p99 (`--nocapture`); no timing
/// is asserted.
#[both_backends]
async fn fifty_passwordless_logins_each_open_a_session_of_their_own() {
    const ROUNDS: usize = 50;
    let app = spawn_passkey_app().await;
    let mut key = SoftKey::es256();
    user_with_key(&app, "pk-fifty", &mut key).await;
    // A user without a second factor, for the password login measured beside it.
    let plain = app.passkey_user("pk-fifty-plain").await;
    let (mut ceremony, mut password) = (Vec::new(), Vec::new());
    let mut sessions = std::collections::BTreeSet::new();
    for _ in 0..ROUNDS {
        let started = std::time::Instant::now();
        let body = app.soft_login_ok(&mut key).await;
        ceremony.push(started.elapsed());
        assert_eq!(amr(&body), json!(["hwk", "user", "mfa"]), "{body}");
        let claims = crate::helpers::jwt_claims(access_of(&body));
        sessions.insert(claims["sid"].as_str().expect("a sid").to_owned());

        let started = std::time::Instant::now();
        app.login_ok(&plain.email, crate::helpers::PASSWORD).await;
        password.push(started.elapsed());
    }
    assert_eq!(sessions.len(), ROUNDS, "one new session per login");
    let stats = |times: &mut Vec<Duration>| {
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        (
            ms(times[times.len() / 2]),
            ms(times[times.len() * 99 / 100]),
        )
    };
    let ((c50, c99), (p50, p99)) = (stats(&mut ceremony), stats(&mut password));
    println!(
        "{:?}: passkey ceremony (options + login) p50 {c50:.1} ms p99 {c99:.1} ms; \
         password login (test Argon2 cost) p50 {p50:.1} ms p99 {p99:.1} ms; \
         ceremony/password median ratio {:.2}",
        crate::helpers::Backend::from_env(),
        c50 / p50
    );
}
