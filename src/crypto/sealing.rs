//! Private material at rest under a key-encryption key (KEK): AES-256-GCM with a random
//! 96-bit nonce per seal, and associated data naming the record, so a sealed value opens
//! only as the record it was sealed for.
//!
//! The KEK comes from a file the operator provides (32 raw bytes, readable by the
//! service user alone) and never leaves this process: it is not stored, printed or logged.

use std::fmt;
use std::fs;
use std::path::Path;

use anyhow::Context as _;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use super::random_bytes;
use super::refresh::check_private;

pub const KEK_BYTES: usize = 32;
/// The first byte of every sealed value: the format, so a later one (another cipher, a
/// KEK id for KEK rotation) can be told apart.
const FORMAT_V1: u8 = 1;
/// Domain separation: associated data is this, then the record's label.
const AAD_PREFIX: &[u8] = b"gatehouse sealed v1\0";
/// What the check value seals: a wrong KEK is known before any key is opened, or exists.
const CHECK_LABEL: &str = "kek-check";
const CHECK_PLAINTEXT: &[u8] = b"gatehouse key-encryption key check v1";

/// The AES-256-GCM key that seals signing keys and secrets stored in the database.
pub struct KeyEncryptionKey(LessSafeKey);

impl fmt::Debug for KeyEncryptionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KeyEncryptionKey(<redacted>)")
    }
}

/// A sealed value did not open: wrong KEK, altered bytes, or sealed for another record.
/// GCM cannot tell these apart, by design; the check value can tell the first.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the value does not seal or open under this key-encryption key")]
pub struct SealError;

impl KeyEncryptionKey {
    pub fn from_bytes(bytes: &[u8; KEK_BYTES]) -> Self {
        // 32 bytes is exactly AES-256's key length, the one input `new` refuses otherwise:
        // the array type makes this infallible.
        #[allow(clippy::expect_used)]
        let key = UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key");
        Self(LessSafeKey::new(key))
    }

    /// Reads the KEK file: exactly 32 raw bytes, and no permission for group or others,
    /// since whoever reads it can open every stored key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let bytes = fs::read(path).with_context(|| {
            format!("cannot read the key-encryption key file {}", path.display())
        })?;
        check_private(path)?;
        let bytes: [u8; KEK_BYTES] = bytes.as_slice().try_into().map_err(|_| {
            anyhow::anyhow!(
                "the key-encryption key file {} holds {} bytes; it must hold exactly \
                 {KEK_BYTES} random bytes (`head -c 32 /dev/urandom > FILE`, no newline)",
                path.display(),
                bytes.len()
            )
        })?;
        Ok(Self::from_bytes(&bytes))
    }

    /// `format || nonce || ciphertext || tag`, bound to `label`. Refused only for a
    /// plaintext past AES-GCM's 64 GiB per message (what is sealed is a key or a secret
    /// of a few KiB).
    pub fn seal(&self, label: &str, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        // A random nonce: with 2^-32 collision odds after 2^32 seals (NIST SP 800-38D
        // §8.3), far beyond the few keys and secrets ever sealed under one KEK.
        let nonce = random_bytes::<NONCE_LEN>();
        let mut in_out = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(label)),
                &mut in_out,
            )
            .map_err(|_| SealError)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&in_out);
        Ok(out)
    }

    /// The plaintext sealed for `label`, if this KEK sealed it and nothing changed since.
    pub fn open(&self, label: &str, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let (&format, rest) = sealed.split_first().ok_or(SealError)?;
        if format != FORMAT_V1 || rest.len() < NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(SealError);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealError)?;
        let mut in_out = ciphertext.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(aad(label)), &mut in_out)
            .map_err(|_| SealError)?;
        Ok(plain.to_vec())
    }

    /// A value to store beside the sealed records, so that a replica with another KEK
    /// is told so at start, before (and whether or not) any key is stored.
    pub fn check_value(&self) -> Result<Vec<u8>, SealError> {
        self.seal(CHECK_LABEL, CHECK_PLAINTEXT)
    }

    /// Whether `stored` is a check value sealed by this KEK.
    pub fn opens_check_value(&self, stored: &[u8]) -> bool {
        self.open(CHECK_LABEL, stored)
            .is_ok_and(|plain| super::constant_time_eq(&plain, CHECK_PLAINTEXT))
    }
}

fn aad(label: &str) -> Vec<u8> {
    [AAD_PREFIX, label.as_bytes()].concat()
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn kek(byte: u8) -> KeyEncryptionKey {
        KeyEncryptionKey::from_bytes(&[byte; KEK_BYTES])
    }

    #[test]
    fn opens_what_it_sealed_and_never_repeats_a_ciphertext() {
        let k = kek(7);
        let a = k.seal("key:abc", b"private material").expect("seal");
        let b = k.seal("key:abc", b"private material").expect("seal");
        assert_ne!(a, b, "a fresh nonce per seal");
        assert_eq!(k.open("key:abc", &a).expect("open"), b"private material");
        assert_eq!(k.open("key:abc", &b).expect("open"), b"private material");
        assert!(
            !a.windows(7).any(|w| w == b"private"),
            "plaintext visible in the sealed bytes"
        );
    }

    #[test]
    fn a_wrong_kek_opens_nothing() {
        let sealed = kek(1).seal("secret:refresh", b"s3cret").expect("seal");
        assert_eq!(kek(2).open("secret:refresh", &sealed), Err(SealError));
        assert!(kek(1).opens_check_value(&kek(1).check_value().expect("seal")));
        assert!(!kek(2).opens_check_value(&kek(1).check_value().expect("seal")));
    }

    #[test]
    fn any_altered_byte_is_refused() {
        let k = kek(3);
        let sealed = k.seal("key:k1", b"0123456789abcdef").expect("seal");
        for i in 0..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert_eq!(k.open("key:k1", &tampered), Err(SealError), "byte {i}");
        }
        assert_eq!(
            k.open("key:k1", &sealed[..sealed.len() - 1]),
            Err(SealError)
        );
        assert_eq!(k.open("key:k1", &[]), Err(SealError));
        assert_eq!(k.open("key:k1", &[FORMAT_V1]), Err(SealError));
    }

    #[test]
    fn a_value_sealed_for_one_record_does_not_open_as_another() {
        let k = kek(4);
        let first = k.seal("key:first", b"first key").expect("seal");
        let second = k.seal("key:second", b"second key").expect("seal");
        assert_eq!(k.open("key:second", &first), Err(SealError));
        assert_eq!(k.open("key:first", &second), Err(SealError));
        assert_eq!(k.open("secret:refresh", &first), Err(SealError));
        // The check value cannot stand in for a record either, nor a record for it.
        assert_eq!(
            k.open("key:first", &k.check_value().expect("seal")),
            Err(SealError)
        );
        assert!(!k.opens_check_value(&first));
    }

    #[test]
    fn the_kek_file_must_be_private_and_exactly_32_bytes() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("kek");
        fs::write(&path, [9u8; KEK_BYTES]).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        let sealed = KeyEncryptionKey::load(&path)
            .expect("load")
            .seal("x", b"y")
            .expect("seal");
        assert_eq!(kek(9).open("x", &sealed).expect("same key"), b"y");

        for mode in [0o644, 0o640, 0o604] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            let err = KeyEncryptionKey::load(&path).expect_err("loose mode");
            assert!(err.to_string().contains("readable by other users"), "{err}");
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).expect("chmod");
        KeyEncryptionKey::load(&path).expect("0400 is private");

        for len in [0, 31, 33, 44] {
            let path = dir.path().join(format!("kek{len}"));
            fs::write(&path, vec![1u8; len]).expect("write");
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
            let err = KeyEncryptionKey::load(&path).expect_err("wrong length");
            assert!(err.to_string().contains("exactly 32"), "{err}");
        }
        let err = KeyEncryptionKey::load(&dir.path().join("missing")).expect_err("missing");
        assert!(err.to_string().contains("cannot read"), "{err}");
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert_eq!(format!("{:?}", kek(5)), "KeyEncryptionKey(<redacted>)");
    }
}
