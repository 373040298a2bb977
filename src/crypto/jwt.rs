//! RS256 access tokens: minted by hand with a key parsed once, verified by jsonwebtoken.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::b64url;
use super::keys::KeyRing;
use crate::domain::{FamilyId, Role, UserId};

/// Clock skew tolerated between gatehouse and itself across replicas, for `exp` and `nbf`.
pub const LEEWAY_SECS: i64 = 30;
/// Longer bearer strings are rejected before any parsing; ours are about 800 bytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The claims of an access token, per the contract. Nothing secret, no email.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    pub sub: UserId,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
    pub sid: FamilyId,
    pub role: Role,
    /// How the session was authenticated (RFC 8176): `["pwd"]`, or `["pwd","otp","mfa"]`
    /// after a second factor. Absent from tokens minted before it existed.
    #[serde(default)]
    pub amr: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("malformed token")]
    Malformed,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("invalid signature or claims")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
}

#[derive(Debug, thiserror::Error)]
#[error("signing failed")]
pub struct SignError;

/// Signs `claims` with the key ring's current key.
///
/// Why not `jsonwebtoken::encode`: it re-parses the PEM private key on every call,
/// which costs more than the signature itself; here the key was parsed at start and the
/// header was encoded once.
pub fn mint<C: Serialize>(keys: &KeyRing, claims: &C) -> Result<String, SignError> {
    let key = keys.signer();
    let payload = serde_json::to_vec(claims).map_err(|_| SignError)?;
    let mut token = String::with_capacity(key.header_b64.len() + payload.len() * 4 / 3 + 350);
    token.push_str(&key.header_b64);
    token.push('.');
    token.push_str(&b64url(&payload));
    let mut signature = vec![0u8; key.pair.public_modulus_len()];
    key.pair
        .sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            token.as_bytes(),
            &mut signature,
        )
        .map_err(|_| SignError)?;
    token.push('.');
    token.push_str(&b64url(&signature));
    Ok(token)
}

/// Verifies an access token the way every verifier should: RS256 only (the header's
/// `alg` is never trusted to pick the algorithm), a `kid` we published, our issuer and
/// audience, `exp`/`nbf` against our clock. `jku`, `x5u`, `jwk` and `x5c` headers are
/// never consulted: keys come only from the key ring.
pub fn verify(
    keys: &KeyRing,
    token: &str,
    issuer: &str,
    audience: &str,
    now: DateTime<Utc>,
) -> Result<AccessClaims, TokenError> {
    let key = key_for(keys, token)?;

    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
    // Time is checked below against the service's clock, not jsonwebtoken's.
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let data = jsonwebtoken::decode::<AccessClaims>(token, key, &validation)
        .map_err(|_| TokenError::Invalid)?;
    let claims = data.claims;
    check_times(claims.exp, claims.nbf, now)?;
    Ok(claims)
}

/// The key a token names, after the checks every token of ours gets before its
/// signature: a bounded size, RS256 whatever the header asks for, and a `kid` of the
/// ring. User and client tokens share it so that the two can never drift apart.
pub(crate) fn key_for<'k>(keys: &'k KeyRing, token: &str) -> Result<&'k DecodingKey, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
    if header.alg != Algorithm::RS256 {
        return Err(TokenError::Invalid);
    }
    let kid = header.kid.ok_or(TokenError::UnknownKey)?;
    keys.verifier(&kid).ok_or(TokenError::UnknownKey)
}

/// `exp` and `nbf` against the service's clock (not jsonwebtoken's), with
/// `LEEWAY_SECS` either way for clocks that drift between us and a verifier.
pub(crate) fn check_times(exp: i64, nbf: i64, now: DateTime<Utc>) -> Result<(), TokenError> {
    let now = now.timestamp();
    if exp <= now - LEEWAY_SECS {
        return Err(TokenError::Expired);
    }
    if nbf > now + LEEWAY_SECS {
        return Err(TokenError::NotYetValid);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::{KeyRing, generate_into, load_dir};

    fn ring() -> (tempfile::TempDir, KeyRing) {
        let dir = tempfile::tempdir().expect("tmp");
        generate_into(dir.path(), Utc::now()).expect("key");
        let ring = KeyRing::new(load_dir(dir.path()).expect("load")).expect("ring");
        (dir, ring)
    }

    fn claims(now: i64) -> AccessClaims {
        AccessClaims {
            iss: "https://auth.example".into(),
            aud: "api".into(),
            sub: UserId::random(),
            iat: now,
            nbf: now,
            exp: now + 900,
            jti: Uuid::new_v4(),
            sid: FamilyId::random(),
            role: Role::User,
            amr: vec!["pwd".into()],
        }
    }

    #[test]
    fn minted_tokens_verify_and_name_their_key() {
        let (_d, ring) = ring();
        let now = Utc::now();
        let c = claims(now.timestamp());
        let token = mint(&ring, &c).expect("mint");
        let header = jsonwebtoken::decode_header(&token).expect("header");
        assert_eq!(header.kid.as_deref(), Some(ring.signer().kid.as_str()));
        assert_eq!(header.typ.as_deref(), Some("JWT"));
        let back = verify(&ring, &token, "https://auth.example", "api", now).expect("verify");
        assert_eq!(back, c);
    }

    #[test]
    fn rejects_wrong_audience_issuer_and_time() {
        let (_d, ring) = ring();
        let now = Utc::now();
        let token = mint(&ring, &claims(now.timestamp())).expect("mint");
        let v = |iss: &str, aud: &str, at: DateTime<Utc>| verify(&ring, &token, iss, aud, at);
        assert_eq!(
            v("https://auth.example", "other", now),
            Err(TokenError::Invalid)
        );
        assert_eq!(
            v("https://evil.example", "api", now),
            Err(TokenError::Invalid)
        );
        let later = now + chrono::Duration::seconds(900 + LEEWAY_SECS);
        assert_eq!(
            v("https://auth.example", "api", later),
            Err(TokenError::Expired)
        );
        let earlier = now - chrono::Duration::seconds(LEEWAY_SECS + 1);
        assert_eq!(
            v("https://auth.example", "api", earlier),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn rejects_tampered_payload() {
        let (_d, ring) = ring();
        let now = Utc::now();
        let token = mint(&ring, &claims(now.timestamp())).expect("mint");
        let mut parts: Vec<String> = token.split('.').map(String::from).collect();
        let mut c = claims(now.timestamp());
        c.role = Role::Admin;
        parts[1] = b64url(&serde_json::to_vec(&c).expect("json"));
        let forged = parts.join(".");
        assert_eq!(
            verify(&ring, &forged, "https://auth.example", "api", now),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn rejects_other_keys_and_junk() {
        let (_d, ring) = ring();
        let (_d2, other) = self::ring();
        let now = Utc::now();
        let token = mint(&other, &claims(now.timestamp())).expect("mint");
        assert_eq!(
            verify(&ring, &token, "https://auth.example", "api", now),
            Err(TokenError::UnknownKey)
        );
        for junk in ["", "a.b.c", "....", &"x".repeat(MAX_TOKEN_LEN + 1)] {
            assert_eq!(
                verify(&ring, junk, "https://auth.example", "api", now),
                Err(TokenError::Malformed)
            );
        }
    }
}
