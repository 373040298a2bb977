//! JWT parsing and verification against a key ring built once: arbitrary strings as
//! tokens, and forgeries made of fuzzed header and claims under a genuine signature.
//! Nothing may panic, and nothing but the exact token we minted may verify.
#![no_main]

use std::sync::LazyLock;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use gatehouse::crypto::jwt::{AccessClaims, mint, verify};
use gatehouse::crypto::keys::{KeyRing, generate_into, load_dir};
use gatehouse::domain::Role;
use libfuzzer_sys::fuzz_target;

const ISS: &str = "https://auth.example";
const AUD: &str = "fuzz";

struct Fixture {
    ring: KeyRing,
    now: DateTime<Utc>,
    /// A token the ring minted: `header.claims.signature`.
    token: String,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let dir = std::env::temp_dir().join(format!("gatehouse-fuzz-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("key dir");
    let now = Utc::now();
    generate_into(&dir, now).expect("generate a key");
    let ring = KeyRing::new(load_dir(&dir).expect("load keys")).expect("key ring");
    let _ = std::fs::remove_dir_all(&dir);
    let claims = AccessClaims {
        iss: ISS.into(),
        aud: AUD.into(),
        sub: uuid::Uuid::new_v4().into(),
        iat: now.timestamp(),
        nbf: now.timestamp(),
        exp: now.timestamp() + 900,
        jti: uuid::Uuid::new_v4(),
        sid: uuid::Uuid::new_v4().into(),
        role: Role::User,
        amr: vec!["pwd".into()],
    };
    let token = mint(&ring, &claims).expect("mint");
    assert!(verify(&ring, &token, ISS, AUD, now).is_ok());
    Fixture { ring, now, token }
});

fuzz_target!(|data: &[u8]| {
    let f = &*FIXTURE;
    let raw = String::from_utf8_lossy(data);
    if verify(&f.ring, &raw, ISS, AUD, f.now).is_ok() {
        assert_eq!(raw, f.token, "a token we did not mint verified");
    }

    // Forgery: fuzzed header and claims (split at the first 0xFF byte), base64url-encoded,
    // carrying the genuine signature of another input.
    let (header, claims) = match data.iter().position(|b| *b == 0xff) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let signature = f.token.rsplit('.').next().expect("signature");
    let forged = format!(
        "{}.{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims),
        signature
    );
    if verify(&f.ring, &forged, ISS, AUD, f.now).is_ok() {
        assert_eq!(forged, f.token, "a forged header/claims pair verified");
    }
    // The genuine header and signature with fuzzed claims.
    let genuine_header = f.token.split('.').next().expect("header");
    let forged = format!(
        "{genuine_header}.{}.{signature}",
        URL_SAFE_NO_PAD.encode(data)
    );
    if verify(&f.ring, &forged, ISS, AUD, f.now).is_ok() {
        assert_eq!(
            forged, f.token,
            "fuzzed claims verified under a genuine signature"
        );
    }
});
