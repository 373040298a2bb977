//! Passkeys (contract: "Passkeys (WebAuthn)"; design: notes/passkeys-design.md; #21), on
//! both backends, driven by real ceremonies: 1Password's `passkey-client` over
//! `passkey-authenticator` ([`PasskeyDevice`]) where an honest browser and platform
//! authenticator are wanted, our own software authenticator ([`SoftKey`]) where a test
//! needs RS256, chosen flags, a chosen counter, or a wrong origin, RP ID, challenge or user
//! handle.
//!
//! - `register`: options, registration, listing, deletion, names, flows, refusals.
//! - `login`: passwordless login and everything it refuses, lockout.
//! - `second_factor`: a passkey after the password (`mfa_required`, `/v1/login/mfa`).
//! - `admin`: the admin's list, removal and MFA reset; the CLI.
//! - `unconfigured`: no RP ID, no passkeys (404).

mod admin;
mod login;
mod register;
mod second_factor;
mod unconfigured;

use std::collections::BTreeSet;

use chrono::DateTime;
use gatehouse::config::Settings;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::helpers::{
    PASSWORD, TestApp, Tokens, access_of, assert_error, expect_json, jwt_claims, spawn_app_with,
    unique_email, user_id_of,
};
pub use crate::kit::authenticator::{Alg, Flags, SoftKey, Tweaks, b64url, from_b64url};
pub use crate::kit::passkey::PasskeyDevice;

/// The relying party the API tests configure (design: "Tests use").
pub const RP_ID: &str = "example.com";
/// The one origin allowed to run ceremonies.
pub const ORIGIN: &str = "https://app.example.com";
/// A page that is not ours.
pub const EVIL_ORIGIN: &str = "https://app.example.net";

/// Answers signed for a page that is not one of ours, each a `(what, origin, tweaks)`:
/// another site, a page under the RP ID that is not a listed origin, and the RP ID hash of
/// another site. Registration and login refuse every one.
pub fn foreign_pages() -> Vec<(&'static str, &'static str, Tweaks)> {
    vec![
        ("another site's origin", EVIL_ORIGIN, Tweaks::default()),
        (
            "an unlisted origin",
            "https://other.example.com",
            Tweaks::default(),
        ),
        (
            "another RP ID's hash",
            ORIGIN,
            Tweaks {
                rp_id: Some("example.net".into()),
                ..Tweaks::default()
            },
        ),
    ]
}

/// Turns passkeys on: RP ID [`RP_ID`], origins [`ORIGIN`].
pub fn configure(settings: &mut Settings) {
    settings.webauthn.rp_id = Some(RP_ID.to_owned());
    settings.webauthn.origins = vec![url::Url::parse(ORIGIN).expect("an origin")];
}

/// An app with passkeys on.
pub async fn spawn_passkey_app() -> TestApp {
    spawn_app_with(configure).await
}

/// A signed-up user: the address and the signup's tokens.
pub struct User {
    pub email: String,
    pub tokens: Tokens,
}

impl User {
    pub fn access(&self) -> &str {
        access_of(&self.tokens)
    }

    pub fn id(&self) -> &str {
        user_id_of(&self.tokens)
    }

    /// The WebAuthn user handle the design gives this user: the UUID's 16 bytes.
    pub fn handle(&self) -> Vec<u8> {
        Uuid::parse_str(self.id())
            .expect("user ids are UUIDs")
            .as_bytes()
            .to_vec()
    }
}

/// A `{flow_id, options}` answer.
pub struct Flow {
    pub id: String,
    pub options: Value,
}

/// The `amr` claim of a token response's access token.
pub fn amr(body: &Value) -> Value {
    jwt_claims(
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access_token in {body}")),
    )["amr"]
        .clone()
}

/// `amr` as the design writes it: `hwk` or `swk`, then the rest.
pub fn amr_of(key_kind: &str, rest: &[&str]) -> Value {
    let mut all = vec![key_kind];
    all.extend_from_slice(rest);
    json!(all)
}

/// A flow id: 43 characters of base64url, 256 bits.
fn assert_flow_id(flow_id: &str) {
    assert_eq!(flow_id.len(), 43, "flow_id is not 43 characters: {flow_id}");
    assert_eq!(from_b64url(flow_id).len(), 32, "flow_id: {flow_id}");
}

/// A challenge: base64url of at least 16 bytes.
fn assert_challenge(options: &Value) {
    let challenge = options["challenge"]
        .as_str()
        .unwrap_or_else(|| panic!("no challenge in {options}"));
    assert!(
        from_b64url(challenge).len() >= 16,
        "a challenge of at least 128 bits: {options}"
    );
}

/// Asserts a Passkey object `{id, name, created_at, last_used_at}`; returns its id.
pub fn assert_passkey_shape(passkey: &Value) -> String {
    let keys: BTreeSet<&str> = passkey
        .as_object()
        .unwrap_or_else(|| panic!("a passkey is an object: {passkey}"))
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        BTreeSet::from(["id", "name", "created_at", "last_used_at"]),
        "{passkey}"
    );
    assert!(passkey["name"].is_string(), "{passkey}");
    let created = passkey["created_at"].as_str().expect("created_at");
    DateTime::parse_from_rfc3339(created).unwrap_or_else(|e| panic!("created_at ({e}): {passkey}"));
    match &passkey["last_used_at"] {
        Value::Null => {}
        Value::String(at) => {
            DateTime::parse_from_rfc3339(at)
                .unwrap_or_else(|e| panic!("last_used_at ({e}): {passkey}"));
        }
        other => panic!("last_used_at is {other}: {passkey}"),
    }
    passkey["id"]
        .as_str()
        .unwrap_or_else(|| panic!("id: {passkey}"))
        .to_owned()
}

/// The ids of the `allowCredentials` / `excludeCredentials` entries of `options`, each
/// checked to be `{type: "public-key", id, transports?}`.
pub fn descriptor_ids(options: &Value, key: &str) -> BTreeSet<String> {
    options[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} array in {options}"))
        .iter()
        .map(|d| {
            assert_eq!(d["type"], "public-key", "{d}");
            if let Some(transports) = d.get("transports") {
                assert!(transports.is_array(), "{d}");
            }
            d["id"]
                .as_str()
                .unwrap_or_else(|| panic!("no id in {d}"))
                .to_owned()
        })
        .collect()
}

impl TestApp {
    /// Signs a new user up with [`PASSWORD`].
    pub async fn passkey_user(&self, tag: &str) -> User {
        let email = unique_email(tag);
        let tokens = self.signup_ok(&email, PASSWORD).await;
        User { email, tokens }
    }

    pub async fn post_registration_options(&self, access: &str) -> Response {
        self.post_json_with_token("/v1/me/passkeys/options", access, &json!({}))
            .await
    }

    /// `POST /v1/me/passkeys/options`, asserting 200 and the design's creation options
    /// for `user`.
    pub async fn registration_options(&self, user: &User) -> Flow {
        let body = expect_json(
            self.post_registration_options(user.access()).await,
            StatusCode::OK,
        )
        .await;
        let flow_id = body["flow_id"].as_str().expect("flow_id").to_owned();
        assert_flow_id(&flow_id);
        let options = body["options"].clone();
        assert!(options.get("publicKey").is_none(), "no wrapper: {options}");
        assert_eq!(options["rp"]["id"], RP_ID, "{options}");
        assert!(options["rp"]["name"].is_string(), "{options}");
        assert_eq!(options["user"]["id"], b64url(&user.handle()), "{options}");
        for field in ["name", "displayName"] {
            assert!(
                options["user"][field]
                    .as_str()
                    .is_some_and(|v| !v.is_empty()),
                "user.{field}: {options}"
            );
        }
        assert_challenge(&options);
        let algorithms: Vec<i64> = options["pubKeyCredParams"]
            .as_array()
            .unwrap_or_else(|| panic!("pubKeyCredParams: {options}"))
            .iter()
            .map(|p| {
                assert_eq!(p["type"], "public-key", "{options}");
                p["alg"].as_i64().expect("alg")
            })
            .collect();
        assert!(
            algorithms.contains(&-7) && algorithms.contains(&-257),
            "ES256 and RS256 offered: {options}"
        );
        assert!(options["timeout"].is_u64(), "{options}");
        let selection = &options["authenticatorSelection"];
        assert_eq!(selection["residentKey"], "preferred", "{options}");
        assert_eq!(selection["requireResidentKey"], false, "{options}");
        assert_eq!(selection["userVerification"], "required", "{options}");
        assert_eq!(options["attestation"], "none", "{options}");
        Flow {
            id: flow_id,
            options,
        }
    }

    pub async fn post_passkey(
        &self,
        access: &str,
        flow_id: &str,
        name: &str,
        credential: &Value,
    ) -> Response {
        self.post_json_with_token(
            "/v1/me/passkeys",
            access,
            &json!({ "flow_id": flow_id, "name": name, "credential": credential }),
        )
        .await
    }

    /// Asserts 201 and the Passkey shape, with `last_used_at: null`; returns the body.
    async fn created(&self, response: Response, name: &str) -> Value {
        let passkey = expect_json(response, StatusCode::CREATED).await;
        assert_passkey_shape(&passkey);
        assert_eq!(passkey["name"], name, "{passkey}");
        assert_eq!(passkey["last_used_at"], Value::Null, "{passkey}");
        passkey
    }

    /// Registers `key` for `user` under `name`; asserts 201, returns the Passkey.
    pub async fn register_soft(&self, user: &User, key: &mut SoftKey, name: &str) -> Value {
        let flow = self.registration_options(user).await;
        let credential = key.register(&flow.options, ORIGIN);
        let response = self
            .post_passkey(user.access(), &flow.id, name, &credential)
            .await;
        self.created(response, name).await
    }

    /// Registers the passkey crates' `device` for `user`; asserts 201, returns the Passkey.
    pub async fn register_device(
        &self,
        user: &User,
        device: &mut PasskeyDevice,
        name: &str,
    ) -> Value {
        let flow = self.registration_options(user).await;
        let credential = device.register(&flow.options, ORIGIN).await;
        let response = self
            .post_passkey(user.access(), &flow.id, name, &credential)
            .await;
        self.created(response, name).await
    }

    /// `GET /v1/me/passkeys`; asserts 200 and each Passkey's shape.
    pub async fn my_passkeys(&self, access: &str) -> Vec<Value> {
        let body = expect_json(
            self.get_with_token("/v1/me/passkeys", access).await,
            StatusCode::OK,
        )
        .await;
        passkeys_in(&body)
    }

    pub async fn post_login_options(&self) -> Response {
        self.post_json("/v1/passkeys/login/options", &json!({}))
            .await
    }

    /// `POST /v1/passkeys/login/options`, asserting 200 and the design's request options.
    pub async fn login_options(&self) -> Flow {
        let body = expect_json(self.post_login_options().await, StatusCode::OK).await;
        let flow_id = body["flow_id"].as_str().expect("flow_id").to_owned();
        assert_flow_id(&flow_id);
        let options = body["options"].clone();
        assert!(options.get("publicKey").is_none(), "no wrapper: {options}");
        assert_challenge(&options);
        assert_eq!(options["rpId"], RP_ID, "{options}");
        assert_eq!(options["userVerification"], "required", "{options}");
        assert!(options["timeout"].is_u64(), "{options}");
        assert!(
            options.get("allowCredentials").is_none(),
            "a discoverable login names no credential: {options}"
        );
        Flow {
            id: flow_id,
            options,
        }
    }

    pub async fn post_passkey_login(&self, flow_id: &str, credential: &Value) -> Response {
        self.post_json(
            "/v1/passkeys/login",
            &json!({ "flow_id": flow_id, "credential": credential }),
        )
        .await
    }

    /// A passwordless login with `key` (tweaked); the raw response.
    pub async fn soft_login_with(&self, key: &mut SoftKey, tweaks: &Tweaks) -> Response {
        let flow = self.login_options().await;
        let credential = key.authenticate_with(&flow.options, ORIGIN, tweaks);
        self.post_passkey_login(&flow.id, &credential).await
    }

    /// A passwordless login with `key`; asserts 200 and returns the token response.
    pub async fn soft_login_ok(&self, key: &mut SoftKey) -> Value {
        let response = self.soft_login_with(key, &Tweaks::default()).await;
        expect_json(response, StatusCode::OK).await
    }

    /// A passwordless login with `key` (tweaked), asserting 401 `invalid_passkey`.
    pub async fn soft_login_refused(&self, key: &mut SoftKey, tweaks: &Tweaks) {
        let response = self.soft_login_with(key, tweaks).await;
        assert_error(response, StatusCode::UNAUTHORIZED, "invalid_passkey").await;
    }

    /// A passwordless login with the passkey crates' `device`; asserts 200.
    pub async fn device_login_ok(&self, device: &mut PasskeyDevice) -> Value {
        let flow = self.login_options().await;
        let credential = device.authenticate(&flow.options, ORIGIN).await;
        expect_json(
            self.post_passkey_login(&flow.id, &credential).await,
            StatusCode::OK,
        )
        .await
    }

    /// `POST /v1/login/mfa/webauthn/options` for `mfa_token`.
    pub async fn post_mfa_webauthn_options(&self, mfa_token: &str) -> Response {
        self.post_json(
            "/v1/login/mfa/webauthn/options",
            &json!({ "mfa_token": mfa_token }),
        )
        .await
    }

    /// [`TestApp::post_mfa_webauthn_options`], asserting 200 and request options whose
    /// `allowCredentials` are exactly `credential_ids`.
    /// The second step answered with `key`, its only passkey: options listing it, then
    /// the login, asserting 200.
    pub async fn mfa_passkey_ok(&self, mfa_token: &str, key: &mut SoftKey) -> Value {
        let flow = self.mfa_webauthn_options(mfa_token, &[key.id()]).await;
        let credential = key.authenticate(&flow.options, ORIGIN);
        let answer = self
            .post_login_mfa_passkey(mfa_token, &flow.id, &credential)
            .await;
        expect_json(answer, StatusCode::OK).await
    }

    pub async fn mfa_webauthn_options(&self, mfa_token: &str, credential_ids: &[String]) -> Flow {
        let body = expect_json(
            self.post_mfa_webauthn_options(mfa_token).await,
            StatusCode::OK,
        )
        .await;
        let flow_id = body["flow_id"].as_str().expect("flow_id").to_owned();
        assert_flow_id(&flow_id);
        let options = body["options"].clone();
        assert!(options.get("publicKey").is_none(), "no wrapper: {options}");
        assert_challenge(&options);
        assert_eq!(options["rpId"], RP_ID, "{options}");
        assert_eq!(options["userVerification"], "required", "{options}");
        assert_eq!(
            descriptor_ids(&options, "allowCredentials"),
            credential_ids.iter().cloned().collect(),
            "allowCredentials are the user's passkeys: {options}"
        );
        Flow {
            id: flow_id,
            options,
        }
    }

    /// `POST /v1/login/mfa` with a passkey.
    pub async fn post_login_mfa_passkey(
        &self,
        mfa_token: &str,
        flow_id: &str,
        credential: &Value,
    ) -> Response {
        self.post_json(
            "/v1/login/mfa",
            &json!({ "mfa_token": mfa_token, "flow_id": flow_id, "credential": credential }),
        )
        .await
    }

    /// `mfa_required` for `email` with `PASSWORD`, asserting its `methods`; the token.
    pub async fn mfa_token_with_methods(&self, email: &str, methods: &[&str]) -> String {
        let body = assert_error(
            self.post_login(email, PASSWORD).await,
            StatusCode::UNAUTHORIZED,
            "mfa_required",
        )
        .await;
        assert_eq!(body["methods"], json!(methods), "{body}");
        body["mfa_token"].as_str().expect("mfa_token").to_owned()
    }

    /// An admin's access token.
    pub async fn passkey_admin(&self) -> String {
        let tokens = self
            .create_admin(&unique_email("passkey-admin"), PASSWORD)
            .await;
        access_of(&tokens).to_owned()
    }
}

/// The `passkeys` array of a listing, each checked for shape.
pub fn passkeys_in(body: &Value) -> Vec<Value> {
    let list = body["passkeys"]
        .as_array()
        .unwrap_or_else(|| panic!("no passkeys array: {body}"))
        .clone();
    for passkey in &list {
        assert_passkey_shape(passkey);
    }
    list
}

/// The ids of a listing.
pub fn ids(passkeys: &[Value]) -> Vec<String> {
    passkeys
        .iter()
        .map(|p| p["id"].as_str().expect("id").to_owned())
        .collect()
}
