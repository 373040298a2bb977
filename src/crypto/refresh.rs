//! Opaque refresh tokens: generated, hashed for storage, and derived parent → child.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

use ring::hmac;

use super::{b64url, random_bytes, sha256};

/// 256 bits, as the contract requires; 43 base64url characters.
const TOKEN_BYTES: usize = 32;
const TOKEN_CHARS: usize = 43;
const SECRET_BYTES: usize = 32;
const CHILD_LABEL: &[u8] = b"gatehouse refresh child v1\0";

/// A refresh token in plaintext. It exists only between the client and this process:
/// storage sees its `TokenHash`.
#[derive(Clone, PartialEq, Eq)]
pub struct RefreshToken(String);

/// SHA-256 of a refresh token. A refresh token carries 256 bits of entropy, so a plain
/// hash (no salt, no slow KDF) cannot be inverted, and lookups by hash stay one index probe.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash(pub [u8; 32]);

impl RefreshToken {
    /// The first token of a family: fresh randomness.
    pub fn generate() -> Self {
        Self(b64url(&random_bytes::<TOKEN_BYTES>()))
    }

    /// Accepts only strings of the exact shape we issue, so junk never reaches storage.
    pub fn from_presented(raw: &str) -> Option<Self> {
        let ok = raw.len() == TOKEN_CHARS
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        ok.then(|| Self(raw.to_owned()))
    }

    pub fn hash(&self) -> TokenHash {
        TokenHash(sha256(self.0.as_bytes()))
    }

    /// The token that replaces this one when it is spent.
    ///
    /// Why derived, not random: inside the reuse grace the contract returns the *same*
    /// child again, yet we store no plaintext. An HMAC of the parent under a server secret
    /// lets any replica holding the secret re-derive the child from the parent the client
    /// presents, while a database dump (hashes only) or a stolen token without the secret
    /// yields nothing. The family's first token is random, so chains never repeat.
    pub fn child(&self, secret: &RefreshSecret) -> Self {
        let mut ctx = hmac::Context::with_key(&secret.0);
        ctx.update(CHILD_LABEL);
        ctx.update(self.0.as_bytes());
        let tag = ctx.sign();
        Self(b64url(&tag.as_ref()[..TOKEN_BYTES]))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken(<redacted>)")
    }
}

impl fmt::Debug for TokenHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenHash({}…)", &b64url(&self.0)[..6])
    }
}

/// The HMAC key that derives child refresh tokens. Replicas must share it.
pub struct RefreshSecret(hmac::Key);

impl RefreshSecret {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        Self(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    /// A 256-bit key for `purpose`, derived from this secret (HMAC-SHA-256 of a label):
    /// every replica holding the secret derives the same key, and no derived key tells
    /// anything of the secret or of another purpose's key.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        let mut ctx = hmac::Context::with_key(&self.0);
        ctx.update(b"gatehouse derived key v1\0");
        ctx.update(purpose.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.sign().as_ref());
        out
    }

    /// Reads the secret at `path`, creating it (mode 0600) when it does not exist.
    pub fn load_or_create(path: &Path) -> anyhow::Result<(Self, bool)> {
        match Self::read_file(path)? {
            Some(bytes) => Ok((Self::from_bytes(&bytes), false)),
            None => {
                let bytes = Self::new_bytes();
                let mut file = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
                file.write_all(&bytes)?;
                file.sync_all()?;
                Ok((Self::from_bytes(&bytes), true))
            }
        }
    }

    /// The bytes of a new secret.
    pub fn new_bytes() -> [u8; SECRET_BYTES] {
        random_bytes::<SECRET_BYTES>()
    }

    /// The bytes of the secret file at `path` (`None` when there is none), refused when
    /// other users may read it or it is too short.
    pub fn read_file(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
        match fs::read(path) {
            Ok(bytes) => {
                check_private(path)?;
                anyhow::ensure!(
                    bytes.len() >= SECRET_BYTES,
                    "{} holds {} bytes; a refresh secret needs at least {SECRET_BYTES}",
                    path.display(),
                    bytes.len()
                );
                Ok(Some(bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
        }
    }
}

/// Refuses secret files that other users could read.
pub fn check_private(path: &Path) -> anyhow::Result<()> {
    let mode = fs::metadata(path)?.permissions().mode();
    anyhow::ensure!(
        mode & 0o077 == 0,
        "{} is readable by other users (mode {:o}); run `chmod 600 {}`",
        path.display(),
        mode & 0o777,
        path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_have_the_presented_shape() {
        let t = RefreshToken::generate();
        assert_eq!(t.expose().len(), TOKEN_CHARS);
        assert_eq!(RefreshToken::from_presented(t.expose()), Some(t));
    }

    #[test]
    fn junk_is_not_a_token() {
        for raw in [
            "",
            "short",
            &"a".repeat(44),
            &format!("{}=", "a".repeat(42)),
        ] {
            assert!(RefreshToken::from_presented(raw).is_none(), "{raw}");
        }
    }

    #[test]
    fn children_are_deterministic_per_secret() {
        let s1 = RefreshSecret::from_bytes(&[1u8; 32]);
        let s2 = RefreshSecret::from_bytes(&[2u8; 32]);
        let parent = RefreshToken::generate();
        assert_eq!(parent.child(&s1), parent.child(&s1));
        assert_ne!(parent.child(&s1), parent.child(&s2));
        assert_ne!(parent.child(&s1), parent);
        let child = parent.child(&s1);
        assert!(RefreshToken::from_presented(child.expose()).is_some());
    }

    #[test]
    fn debug_is_redacted() {
        let t = RefreshToken::generate();
        assert!(!format!("{t:?}").contains(t.expose()));
    }
}
