//! A real WebAuthn client and authenticator: 1Password's `passkey-client` over
//! `passkey-authenticator` (CTAP2 in software), holding one discoverable credential. It takes
//! the server's `options` JSON (the WebAuthn object itself, without a `publicKey` wrapper)
//! and an origin, runs the ceremony as a browser with a platform authenticator would (origin
//! against RP ID, clientDataJSON, make-credential / get-assertion, user verification), and
//! returns the credential as WebAuthn Level 3 JSON, binary fields in base64url.
//!
//! [`super::authenticator`] is our own authenticator, for what this one cannot be made to do.

use passkey_authenticator::{Authenticator, UiHint, UserCheck, UserValidationMethod};
use passkey_client::{Client, DefaultClientData};
use passkey_crypto::AvailableBackend;
use passkey_types::ctap2::{Aaguid, Ctap2Error};
use passkey_types::webauthn::{
    AuthenticatedPublicKeyCredential, CreatedPublicKeyCredential, CredentialCreationOptions,
    CredentialRequestOptions,
};
use passkey_types::{Bytes, Passkey};
use serde_json::{Value, json};

use super::authenticator::b64url;

/// The person at the device: present, and verified whenever asked (a fingerprint that
/// always matches). Written here instead of the crate's mock, which counts calls.
pub struct VerifyingUser;

#[async_trait::async_trait]
impl UserValidationMethod for VerifyingUser {
    type PasskeyItem = Passkey;

    async fn check_user<'a>(
        &self,
        _hint: UiHint<'a, Passkey>,
        _presence: bool,
        verification: bool,
    ) -> Result<UserCheck, Ctap2Error> {
        Ok(UserCheck {
            presence: true,
            verification,
        })
    }

    fn is_presence_enabled(&self) -> bool {
        true
    }

    fn is_verification_enabled(&self) -> Option<bool> {
        Some(true)
    }
}

type PasskeyClient =
    Client<Option<Passkey>, VerifyingUser, AvailableBackend, public_suffix::PublicSuffixList, ()>;

/// A device holding (at most) one passkey: registering again replaces it.
pub struct PasskeyDevice {
    client: PasskeyClient,
}

impl Default for PasskeyDevice {
    fn default() -> Self {
        Self::new()
    }
}

impl PasskeyDevice {
    /// A device whose credentials keep no signature counter (they report 0, as synced
    /// passkeys do).
    pub fn new() -> Self {
        let authenticator =
            Authenticator::new(Aaguid::new_empty(), None, VerifyingUser, AvailableBackend);
        Self {
            client: Client::new(authenticator),
        }
    }

    /// A device whose credentials count their uses (1, 2, ...), as security keys do.
    pub fn counting() -> Self {
        let mut device = Self::new();
        device
            .client
            .authenticator_mut()
            .set_make_credentials_with_signature_counter(true);
        device
    }

    fn passkey(&self) -> &Passkey {
        self.client
            .authenticator()
            .store()
            .as_ref()
            .expect("the device holds no passkey yet")
    }

    /// The stored credential's id, base64url.
    pub fn id(&self) -> String {
        b64url(&self.passkey().credential_id)
    }

    /// The stored counter (`None`: it keeps none and reports 0).
    pub fn counter(&self) -> Option<u32> {
        self.passkey().counter
    }

    /// Sets the stored counter, e.g. back to a value the server has seen (a clone).
    pub fn set_counter(&mut self, value: u32) {
        let passkey = self
            .client
            .authenticator_mut()
            .store_mut()
            .as_mut()
            .expect("the device holds no passkey yet");
        passkey.counter = Some(value);
    }

    /// Runs a registration for creation `options` (no `publicKey` wrapper) from `origin`;
    /// returns the `RegistrationResponseJSON`. Panics if the client or authenticator refuses.
    pub async fn register(&mut self, options: &Value, origin: &str) -> Value {
        let request: CredentialCreationOptions =
            serde_json::from_value(json!({ "publicKey": options }))
                .unwrap_or_else(|e| panic!("passkey-client cannot read {options}: {e}"));
        let origin = url::Url::parse(origin).expect("an origin URL");
        let created = self
            .client
            .register(&origin, request, DefaultClientData)
            .await
            .unwrap_or_else(|e| panic!("passkey-client refused to register: {e:?}"));
        registration_json(&created)
    }

    /// Runs an authentication for request `options` from `origin`; returns the
    /// `AuthenticationResponseJSON`. Panics if the client or authenticator refuses.
    pub async fn authenticate(&mut self, options: &Value, origin: &str) -> Value {
        let request: CredentialRequestOptions =
            serde_json::from_value(json!({ "publicKey": options }))
                .unwrap_or_else(|e| panic!("passkey-client cannot read {options}: {e}"));
        let origin = url::Url::parse(origin).expect("an origin URL");
        let asserted = self
            .client
            .authenticate(&origin, request, DefaultClientData)
            .await
            .unwrap_or_else(|e| panic!("passkey-client refused to authenticate: {e:?}"));
        authentication_json(&asserted)
    }
}

// The crate's types serialize `Bytes` as JSON arrays of numbers (unless a feature that would
// also change their CBOR), so the Level 3 JSON is written out here, field by field.

fn b64(bytes: &Bytes) -> String {
    b64url(bytes)
}

fn registration_json(created: &CreatedPublicKeyCredential) -> Value {
    let response = &created.response;
    json!({
        "id": created.id,
        "rawId": b64(&created.raw_id),
        "type": "public-key",
        "response": {
            "clientDataJSON": b64(&response.client_data_json),
            "attestationObject": b64(&response.attestation_object),
            "authenticatorData": b64(&response.authenticator_data),
            "publicKey": response.public_key.as_ref().map(b64),
            "publicKeyAlgorithm": response.public_key_algorithm,
            "transports": serde_json::to_value(&response.transports).expect("transports"),
        },
        "clientExtensionResults":
            serde_json::to_value(&created.client_extension_results).expect("extensions"),
        "authenticatorAttachment":
            serde_json::to_value(created.authenticator_attachment).expect("attachment"),
    })
}

fn authentication_json(asserted: &AuthenticatedPublicKeyCredential) -> Value {
    let response = &asserted.response;
    json!({
        "id": asserted.id,
        "rawId": b64(&asserted.raw_id),
        "type": "public-key",
        "response": {
            "clientDataJSON": b64(&response.client_data_json),
            "authenticatorData": b64(&response.authenticator_data),
            "signature": b64(&response.signature),
            "userHandle": response.user_handle.as_ref().map(b64),
        },
        "clientExtensionResults":
            serde_json::to_value(&asserted.client_extension_results).expect("extensions"),
        "authenticatorAttachment":
            serde_json::to_value(asserted.authenticator_attachment).expect("attachment"),
    })
}
