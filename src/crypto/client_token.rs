//! Client secrets and the access tokens of service clients (RFC 6749 §4.4): RS256 from
//! the same key ring as user tokens, minted by `jwt::mint`.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::jwt::{self, TokenError};
use super::keys::KeyRing;
use super::{b64url, random_bytes, sha256};

/// The claims of a client's token. No `sid` and no `role`: `/v1/me` and `/v1/admin`,
/// which read both, refuse it, and a verifier can tell it from a user's token.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClientClaims {
    pub iss: String,
    /// The client id, as `client_id` (RFC 9068 §2.2).
    pub sub: String,
    pub client_id: String,
    pub aud: String,
    /// Space-separated scopes granted.
    pub scope: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
}

/// A new client secret: 256 bits from the CSPRNG, base64url (43 characters). Shown once;
/// only its SHA-256 is stored (`hash_secret`).
pub struct ClientSecret(String);

impl ClientSecret {
    pub fn generate() -> Self {
        Self(b64url(&random_bytes::<32>()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> [u8; 32] {
        hash_secret(&self.0)
    }
}

/// Never printed.
impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClientSecret(<redacted>)")
    }
}

/// SHA-256 of a presented secret. A random 256-bit secret needs neither salt nor a slow
/// hash: there is nothing to guess from the hash.
pub fn hash_secret(presented: &str) -> [u8; 32] {
    sha256(presented.as_bytes())
}

/// Verifies a client token: RS256 only, a `kid` of the ring, our issuer, `exp`/`nbf`
/// against `now`, and the client claims present (a user token, without `client_id`
/// and `scope`, is `Invalid`). The audience is the client's own choice and is not
/// checked here; the caller checks the client still exists.
pub fn verify(
    keys: &KeyRing,
    token: &str,
    issuer: &str,
    now: DateTime<Utc>,
) -> Result<ClientClaims, TokenError> {
    let key = jwt::key_for(keys, token)?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_issuer(&[issuer]);
    validation.validate_aud = false;
    validation.set_required_spec_claims(&["exp", "nbf", "iss", "sub"]);
    validation.validate_exp = false;
    validation.validate_nbf = false;
    let claims = jsonwebtoken::decode::<ClientClaims>(token, key, &validation)
        .map_err(|_| TokenError::Invalid)?
        .claims;
    if claims.sub != claims.client_id {
        return Err(TokenError::Invalid);
    }
    jwt::check_times(claims.exp, claims.nbf, now)?;
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::keys::{KeyRing, generate_into, load_dir};

    #[test]
    fn client_tokens_verify_and_user_tokens_do_not_pass_for_them() {
        let dir = tempfile::tempdir().expect("tmp");
        generate_into(dir.path(), Utc::now()).expect("key");
        let ring = KeyRing::new(load_dir(dir.path()).expect("load")).expect("ring");
        let now = Utc::now();
        let id = Uuid::new_v4().to_string();
        let claims = ClientClaims {
            iss: "https://auth.example".into(),
            sub: id.clone(),
            client_id: id,
            aud: "billing".into(),
            scope: "introspect".into(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: now.timestamp() + 900,
            jti: Uuid::new_v4(),
        };
        let token = jwt::mint(&ring, &claims).expect("mint");
        assert_eq!(
            verify(&ring, &token, "https://auth.example", now),
            Ok(claims.clone())
        );
        assert!(jwt::verify(&ring, &token, "https://auth.example", "billing", now).is_err());
        let user = jwt::AccessClaims {
            iss: "https://auth.example".into(),
            aud: "billing".into(),
            sub: crate::domain::UserId::random(),
            iat: now.timestamp(),
            nbf: now.timestamp(),
            exp: now.timestamp() + 900,
            jti: Uuid::new_v4(),
            sid: crate::domain::FamilyId::random(),
            role: crate::domain::Role::Admin,
            amr: vec!["pwd".into()],
        };
        let user_token = jwt::mint(&ring, &user).expect("mint");
        assert_eq!(
            verify(&ring, &user_token, "https://auth.example", now),
            Err(TokenError::Invalid)
        );
        let later = now + chrono::Duration::seconds(900 + jwt::LEEWAY_SECS);
        assert_eq!(
            verify(&ring, &token, "https://auth.example", later),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn secrets_are_256_bits_and_never_printed() {
        let s = ClientSecret::generate();
        assert_eq!(s.expose().len(), 43);
        assert!(!format!("{s:?}").contains(s.expose()));
        assert_eq!(s.hash(), hash_secret(s.expose()));
    }
}
