//! A minimal software authenticator, written here, for what the `passkey` crates
//! ([`super::passkey`]) cannot be made to do: RS256 keys, the flags (UP, UV, BE, BS) and the
//! signature counter chosen per call, and a wrong RP ID, origin, challenge or user handle on
//! purpose. No CTAP: it turns the server's `options` JSON straight into the WebAuthn Level 3
//! JSON of a credential (`RegistrationResponseJSON`, `AuthenticationResponseJSON`).
//!
//! What it signs is built here byte by byte from the WebAuthn spec (§6.1 authenticator data,
//! §6.5.4 the "none" attestation, COSE keys from RFC 9053), with aws-lc-rs for the keys and
//! ciborium for CBOR, so a relying party that accepts it agrees with the spec, not with code
//! it shares with us.

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _, RSA_PKCS1_SHA256,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::Value as Cbor;
use serde_json::{Value, json};

/// base64url without padding, as every binary field of the WebAuthn JSON.
pub fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The bytes of a base64url field (padding tolerated); panics, naming it, otherwise.
pub fn from_b64url(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .unwrap_or_else(|e| panic!("{text:?} is not base64url: {e}"))
}

fn sha256(data: &[u8]) -> [u8; 32] {
    aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data)
        .as_ref()
        .try_into()
        .expect("SHA-256 is 32 bytes")
}

/// The COSE algorithm of a credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alg {
    /// ECDSA on P-256 with SHA-256, COSE -7.
    Es256,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (2048-bit key), COSE -257.
    Rs256,
}

impl Alg {
    pub fn cose(self) -> i64 {
        match self {
            Alg::Es256 => -7,
            Alg::Rs256 => -257,
        }
    }
}

enum Key {
    Es256(EcdsaKeyPair),
    Rs256(RsaKeyPair),
}

/// The authenticator-data flags (WebAuthn §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flags {
    /// User present (bit 0).
    pub up: bool,
    /// User verified (bit 2).
    pub uv: bool,
    /// Backup eligible (bit 3): a synced, multi-device credential.
    pub be: bool,
    /// Backed up (bit 4).
    pub bs: bool,
}

impl Flags {
    /// A device-bound key that verified its user: UP and UV.
    pub const DEVICE: Flags = Flags {
        up: true,
        uv: true,
        be: false,
        bs: false,
    };
    /// A synced passkey that verified its user: UP, UV, BE and BS.
    pub const SYNCED: Flags = Flags {
        up: true,
        uv: true,
        be: true,
        bs: true,
    };

    fn byte(self, attested: bool) -> u8 {
        let mut byte = 0;
        if self.up {
            byte |= 0x01;
        }
        if self.uv {
            byte |= 0x04;
        }
        if self.be {
            byte |= 0x08;
        }
        if self.bs {
            byte |= 0x10;
        }
        if attested {
            byte |= 0x40;
        }
        byte
    }
}

/// What one ceremony sends, where a test wants it other than what an honest authenticator
/// would. Every field left `None` takes the key's own value (flags, counter) or the
/// options' (RP ID, challenge), and the user handle stored at registration.
#[derive(Clone, Debug, Default)]
pub struct Tweaks {
    pub flags: Option<Flags>,
    /// The signature counter to report (else: the key's counter, see [`SoftKey::counter`]).
    pub counter: Option<u32>,
    /// The RP ID whose SHA-256 goes into the authenticator data (else the options').
    pub rp_id: Option<String>,
    /// The challenge to put in clientDataJSON, base64url (else the options').
    pub challenge: Option<String>,
    /// `clientDataJSON.type` (else `webauthn.create` / `webauthn.get`).
    pub ceremony_type: Option<String>,
    /// The user handle to answer at login (else the one given at registration).
    pub user_handle: Option<Vec<u8>>,
    /// Sign something else than what is sent: the signature no longer verifies.
    pub corrupt_signature: bool,
}

/// How the key counts its uses when a ceremony does not name a counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// One more at every ceremony, from 1 (hardware keys).
    Increasing,
    /// Always 0 (synced passkeys).
    Zero,
}

/// One credential of a software authenticator: its key pair, its credential id, and what
/// it remembers from its registration (RP ID, user handle).
pub struct SoftKey {
    pub alg: Alg,
    key: Key,
    credential_id: Vec<u8>,
    flags: Flags,
    counting: Counter,
    counter: u32,
    rp_id: Option<String>,
    user_handle: Option<Vec<u8>>,
    rng: SystemRandom,
}

impl SoftKey {
    /// A device-bound key (UP, UV; counter from 1) of the given algorithm.
    pub fn new(alg: Alg) -> Self {
        let key = match alg {
            Alg::Es256 => Key::Es256(
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
                    .expect("cannot generate a P-256 key"),
            ),
            Alg::Rs256 => Key::Rs256(
                RsaKeyPair::generate(KeySize::Rsa2048).expect("cannot generate an RSA key"),
            ),
        };
        let credential_id = random_bytes::<32>().to_vec();
        Self {
            alg,
            key,
            credential_id,
            flags: Flags::DEVICE,
            counting: Counter::Increasing,
            counter: 0,
            rp_id: None,
            user_handle: None,
            rng: SystemRandom::new(),
        }
    }

    pub fn es256() -> Self {
        Self::new(Alg::Es256)
    }

    pub fn rs256() -> Self {
        Self::new(Alg::Rs256)
    }

    /// A synced passkey: backup eligible and backed up, counter always 0.
    pub fn synced(alg: Alg) -> Self {
        Self {
            flags: Flags::SYNCED,
            counting: Counter::Zero,
            ..Self::new(alg)
        }
    }

    /// The raw credential id.
    pub fn credential_id(&self) -> &[u8] {
        &self.credential_id
    }

    /// The credential id as the JSON carries it (base64url).
    pub fn id(&self) -> String {
        b64url(&self.credential_id)
    }

    /// The counter last reported (0 before any ceremony, and always for [`Counter::Zero`]).
    pub fn counter(&self) -> u32 {
        self.counter
    }

    /// The user handle the key stored at its registration.
    pub fn user_handle(&self) -> Option<&[u8]> {
        self.user_handle.as_deref()
    }

    fn next_counter(&mut self, tweaks: &Tweaks) -> u32 {
        let value = match (tweaks.counter, self.counting) {
            (Some(value), _) => value,
            (None, Counter::Zero) => 0,
            (None, Counter::Increasing) => self.counter + 1,
        };
        self.counter = value;
        value
    }

    /// The COSE_Key of the public key (RFC 9052 §7, RFC 9053 §7.1 and RFC 8230 §4), keys
    /// in CTAP2 canonical order.
    pub fn cose_public_key(&self) -> Vec<u8> {
        let int = |i: i64| Cbor::Integer(i.into());
        let entries = match &self.key {
            Key::Es256(pair) => {
                // Uncompressed SEC1 point: 0x04 | x (32) | y (32).
                let point = pair.public_key().as_ref();
                assert_eq!(point.len(), 65, "an uncompressed P-256 point");
                vec![
                    (int(1), int(2)),
                    (int(3), int(-7)),
                    (int(-1), int(1)),
                    (int(-2), Cbor::Bytes(point[1..33].to_vec())),
                    (int(-3), Cbor::Bytes(point[33..].to_vec())),
                ]
            }
            Key::Rs256(pair) => {
                let public = pair.public_key();
                vec![
                    (int(1), int(3)),
                    (int(3), int(-257)),
                    (
                        int(-1),
                        Cbor::Bytes(public.modulus().big_endian_without_leading_zero().to_vec()),
                    ),
                    (
                        int(-2),
                        Cbor::Bytes(public.exponent().big_endian_without_leading_zero().to_vec()),
                    ),
                ]
            }
        };
        cbor_bytes(&Cbor::Map(entries))
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        match &self.key {
            Key::Es256(pair) => pair
                .sign(&self.rng, message)
                .expect("ECDSA signing failed")
                .as_ref()
                .to_vec(),
            Key::Rs256(pair) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(&RSA_PKCS1_SHA256, &self.rng, message, &mut signature)
                    .expect("RSA signing failed");
                signature
            }
        }
    }

    /// The authenticator data: rpIdHash | flags | signCount | [attested credential data].
    fn authenticator_data(&self, rp_id: &str, flags: Flags, counter: u32, attest: bool) -> Vec<u8> {
        let mut data = sha256(rp_id.as_bytes()).to_vec();
        data.push(flags.byte(attest));
        data.extend_from_slice(&counter.to_be_bytes());
        if attest {
            // AAGUID: all zeros, as a "none" attestation may send.
            data.extend_from_slice(&[0; 16]);
            let length = u16::try_from(self.credential_id.len()).expect("a short credential id");
            data.extend_from_slice(&length.to_be_bytes());
            data.extend_from_slice(&self.credential_id);
            data.extend_from_slice(&self.cose_public_key());
        }
        data
    }

    /// Answers creation options (`PublicKeyCredentialCreationOptionsJSON`) from `origin`, as
    /// an honest authenticator and client would: a `RegistrationResponseJSON`.
    pub fn register(&mut self, options: &Value, origin: &str) -> Value {
        self.register_with(options, origin, &Tweaks::default())
    }

    /// [`SoftKey::register`] with `tweaks`. The key remembers the RP ID and `user.id` of the
    /// options (not the tweaked RP ID), to log in with later.
    pub fn register_with(&mut self, options: &Value, origin: &str, tweaks: &Tweaks) -> Value {
        let rp_id = str_field(options, &["rp", "id"]).to_owned();
        let user_handle = from_b64url(str_field(options, &["user", "id"]));
        let algorithms: Vec<i64> = options["pubKeyCredParams"]
            .as_array()
            .unwrap_or_else(|| panic!("no pubKeyCredParams in {options}"))
            .iter()
            .filter_map(|p| p["alg"].as_i64())
            .collect();
        assert!(
            algorithms.contains(&self.alg.cose()),
            "the options do not offer {:?} ({}): {options}",
            self.alg,
            self.alg.cose()
        );
        let client_data = tweaked_client_data("webauthn.create", options, origin, tweaks);
        let flags = tweaks.flags.unwrap_or(self.flags);
        let counter = self.next_counter(tweaks);
        let auth_data = self.authenticator_data(
            tweaks.rp_id.as_deref().unwrap_or(&rp_id),
            flags,
            counter,
            true,
        );
        // Canonical CBOR key order: "fmt", "attStmt", "authData" (shorter first).
        let attestation_object = cbor_bytes(&Cbor::Map(vec![
            (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
            (Cbor::Text("attStmt".into()), Cbor::Map(vec![])),
            (Cbor::Text("authData".into()), Cbor::Bytes(auth_data)),
        ]));
        self.rp_id = Some(rp_id);
        self.user_handle = Some(user_handle);
        json!({
            "id": self.id(),
            "rawId": self.id(),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data.as_bytes()),
                "attestationObject": b64url(&attestation_object),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        })
    }

    /// Answers request options (`PublicKeyCredentialRequestOptionsJSON`) from `origin`: an
    /// `AuthenticationResponseJSON` signed over authData | SHA-256(clientDataJSON).
    pub fn authenticate(&mut self, options: &Value, origin: &str) -> Value {
        self.authenticate_with(options, origin, &Tweaks::default())
    }

    /// [`SoftKey::authenticate`] with `tweaks`. It answers even when `allowCredentials`
    /// does not name it (a test sends what a browser would have refused to).
    pub fn authenticate_with(&mut self, options: &Value, origin: &str, tweaks: &Tweaks) -> Value {
        let rp_id = tweaks
            .rp_id
            .clone()
            .or_else(|| options["rpId"].as_str().map(str::to_owned))
            .or_else(|| self.rp_id.clone())
            .unwrap_or_else(|| panic!("no rpId in {options} and the key was never registered"));
        let client_data = tweaked_client_data("webauthn.get", options, origin, tweaks);
        let flags = tweaks.flags.unwrap_or(self.flags);
        let counter = self.next_counter(tweaks);
        let auth_data = self.authenticator_data(&rp_id, flags, counter, false);
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&sha256(client_data.as_bytes()));
        if tweaks.corrupt_signature {
            signed.push(0);
        }
        let signature = self.sign(&signed);
        let user_handle = tweaks
            .user_handle
            .clone()
            .or_else(|| self.user_handle.clone());
        json!({
            "id": self.id(),
            "rawId": self.id(),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64url(client_data.as_bytes()),
                "authenticatorData": b64url(&auth_data),
                "signature": b64url(&signature),
                "userHandle": user_handle.as_deref().map(b64url),
            },
            "clientExtensionResults": {},
            "authenticatorAttachment": "platform",
        })
    }
}

/// The clientDataJSON of a `ceremony` for `options`, with the type and challenge the
/// tweaks override.
fn tweaked_client_data(ceremony: &str, options: &Value, origin: &str, tweaks: &Tweaks) -> String {
    client_data_json(
        tweaks.ceremony_type.as_deref().unwrap_or(ceremony),
        tweaks
            .challenge
            .as_deref()
            .unwrap_or_else(|| str_field(options, &["challenge"])),
        origin,
    )
}

/// `CollectedClientData` (WebAuthn §5.8.1) as a browser serializes it.
fn client_data_json(ceremony_type: &str, challenge: &str, origin: &str) -> String {
    // Written out rather than through a map type, to keep the browser's member order.
    let text = |s: &str| serde_json::to_string(s).expect("a JSON string");
    format!(
        "{{\"type\":{},\"challenge\":{},\"origin\":{},\"crossOrigin\":false}}",
        text(ceremony_type),
        text(challenge),
        text(origin)
    )
}

fn str_field<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    path.iter()
        .fold(value, |v, key| &v[*key])
        .as_str()
        .unwrap_or_else(|| panic!("no string at {} in {value}", path.join(".")))
}

fn cbor_bytes(value: &Cbor) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("CBOR encoding into a Vec cannot fail");
    out
}

/// `N` random bytes from the system RNG.
fn random_bytes<const N: usize>() -> [u8; N] {
    use aws_lc_rs::rand::SecureRandom as _;
    let mut bytes = [0; N];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system RNG failed");
    bytes
}
