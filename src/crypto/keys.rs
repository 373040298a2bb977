//! RSA signing keys on disk, their RFC 7638 key ids, and the published JWK Set.
//!
//! Every `*.pem` file in the keys directory is a PKCS#8 RSA private key. The key whose
//! file name sorts last signs (generated keys are named `key-<UTC timestamp>.pem`, so
//! that is the newest); every key in the directory is published, so tokens signed by a
//! retired key keep verifying until the operator removes its file.
//!
//! Whoever can add a file to the directory can add a signing key, so the directory must
//! be the service user's alone: gatehouse creates it 0700 and refuses one that group or
//! others may write.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::Write as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use aws_lc_rs::encoding::AsDer as _;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{KeyPair as _, RsaKeyPair};
use jsonwebtoken::DecodingKey;
use serde_json::json;

use super::refresh::check_private;
use super::{b64url, sha256};

/// Keys under 2048 bits are refused: NIST SP 800-57 retired them in 2013.
const MIN_MODULUS_BYTES: usize = 256;

/// One RSA key pair, parsed once at start.
pub struct SigningKey {
    pub kid: String,
    pub path: PathBuf,
    pub(crate) pair: RsaKeyPair,
    /// `base64url({"alg":"RS256","typ":"JWT","kid":…})`, the JWT header of this key,
    /// encoded once.
    pub(crate) header_b64: String,
    n: Vec<u8>,
    e: Vec<u8>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    pub fn from_pkcs8_pem(pem_text: &[u8], path: PathBuf) -> anyhow::Result<Self> {
        let block = pem::parse(pem_text)
            .with_context(|| format!("{} is not a PEM file", path.display()))?;
        anyhow::ensure!(
            block.tag() == "PRIVATE KEY",
            "{} holds a {:?} block; expected a PKCS#8 \"PRIVATE KEY\"",
            path.display(),
            block.tag()
        );
        Self::from_pkcs8_der(block.contents(), path)
    }

    /// A PKCS#8 DER RSA key; `path` names where it came from (a file, or the key's name
    /// in the database).
    pub fn from_pkcs8_der(der: &[u8], path: PathBuf) -> anyhow::Result<Self> {
        let pair = RsaKeyPair::from_pkcs8(der)
            .map_err(|e| anyhow::anyhow!("{} is not a usable RSA key: {e}", path.display()))?;
        anyhow::ensure!(
            pair.public_modulus_len() >= MIN_MODULUS_BYTES,
            "{} is a {}-bit RSA key; at least 2048 bits are required",
            path.display(),
            pair.public_modulus_len() * 8
        );
        let public = pair.public_key();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        let kid = thumbprint(&n, &e);
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": kid});
        let header_b64 = b64url(header.to_string().as_bytes());
        Ok(Self {
            kid,
            path,
            pair,
            header_b64,
            n,
            e,
        })
    }

    /// The public half as a JWK (RFC 7517), as the JWKS lists it.
    pub fn jwk(&self) -> serde_json::Value {
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": b64url(&self.n),
            "e": b64url(&self.e),
        })
    }

    pub fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_rsa_raw_components(&self.n, &self.e)
    }

    pub fn bits(&self) -> usize {
        self.pair.public_modulus_len() * 8
    }

    /// The private key as PKCS#8 DER, to be sealed for storage. Never logged.
    pub fn pkcs8_der(&self) -> anyhow::Result<Vec<u8>> {
        let der = self
            .pair
            .as_der()
            .map_err(|_| anyhow::anyhow!("cannot encode the key {}", self.kid))?;
        Ok(der.as_ref().to_vec())
    }
}

/// A new RSA-2048 key named `key-<UTC timestamp>.pem`, in memory only.
///
/// aws-lc-rs generates the key itself, so no `rsa` crate (RUSTSEC-2023-0071) is linked.
pub fn generate(now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<SigningKey> {
    let pair = RsaKeyPair::generate(KeySize::Rsa2048)
        .map_err(|_| anyhow::anyhow!("RSA key generation failed"))?;
    let der = pair
        .as_der()
        .map_err(|_| anyhow::anyhow!("cannot encode the new key"))?;
    SigningKey::from_pkcs8_der(der.as_ref(), PathBuf::from(generated_name(now)))
}

fn generated_name(now: chrono::DateTime<chrono::Utc>) -> String {
    format!("key-{}.pem", now.format("%Y%m%dT%H%M%S%.6fZ"))
}

/// RFC 7638 §3: SHA-256 over the required members in lexicographic order, no spaces.
pub fn thumbprint(n: &[u8], e: &[u8]) -> String {
    let canonical = format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, b64url(e), b64url(n));
    b64url(&sha256(canonical.as_bytes()))
}

/// The keys the service signs and verifies with, and the JWK Set it publishes.
pub struct KeyRing {
    signer: Arc<SigningKey>,
    keys: Vec<Arc<SigningKey>>,
    verifiers: HashMap<String, DecodingKey>,
    jwks: Jwks,
}

/// The JWK Set, serialized once per key change, with its entity tag.
#[derive(Clone)]
pub struct Jwks {
    pub body: bytes::Bytes,
    pub etag: String,
}

impl KeyRing {
    /// Every key published; the one whose file name sorts last signs.
    pub fn new(mut keys: Vec<SigningKey>) -> anyhow::Result<Self> {
        keys.sort_by(|a, b| a.path.file_name().cmp(&b.path.file_name()));
        let signer = keys.pop().context("no signing key")?;
        Self::from_parts(signer, keys)
    }

    /// A ring that signs with `signer` and also publishes (and accepts) `others`.
    pub fn from_parts(signer: SigningKey, others: Vec<SigningKey>) -> anyhow::Result<Self> {
        let signer = Arc::new(signer);
        let mut keys = vec![Arc::clone(&signer)];
        for key in others {
            if keys.iter().all(|k| k.kid != key.kid) {
                keys.push(Arc::new(key));
            }
        }
        let verifiers = keys
            .iter()
            .map(|k| (k.kid.clone(), k.decoding_key()))
            .collect();
        // The signer first: verifiers that take the first key by habit get the right one.
        let jwk_list: Vec<serde_json::Value> = keys.iter().map(|k| k.jwk()).collect();
        let body = serde_json::to_vec(&json!({ "keys": jwk_list }))?;
        let etag = format!("\"{}\"", &b64url(&sha256(&body))[..27]);
        Ok(Self {
            signer,
            keys,
            verifiers,
            jwks: Jwks {
                body: body.into(),
                etag,
            },
        })
    }

    pub fn signer(&self) -> &SigningKey {
        &self.signer
    }

    pub fn keys(&self) -> &[Arc<SigningKey>] {
        &self.keys
    }

    pub fn verifier(&self, kid: &str) -> Option<&DecodingKey> {
        self.verifiers.get(kid)
    }

    pub fn jwks(&self) -> &Jwks {
        &self.jwks
    }
}

/// Creates the keys directory (and any missing parent) with mode 0700; an existing one
/// is left as it is, for `check_dir` to judge.
pub fn create_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create keys dir {}", dir.display()))
}

/// Refuses a keys directory that group or others may write: every key file being 0600
/// does not stop another user from adding a key of their own, which would then sign.
pub fn check_dir(dir: &Path) -> anyhow::Result<()> {
    let mode = fs::metadata(dir)
        .with_context(|| format!("cannot read keys dir {}", dir.display()))?
        .permissions()
        .mode();
    anyhow::ensure!(
        !open_to_writers(mode, read_only_mount(dir)),
        "keys dir {} is writable by group or others (mode {:o}); run `chmod 700 {}`",
        dir.display(),
        mode & 0o777,
        dir.display()
    );
    Ok(())
}

/// Write bits for group or others count only where a write can happen. Through a
/// read-only mount nobody writes, whatever the mode says; that is how Kubernetes
/// presents an `emptyDir` (always 0777) mounted `readOnly`, as deploy/k8s does.
fn open_to_writers(mode: u32, read_only_mount: bool) -> bool {
    mode & 0o022 != 0 && !read_only_mount
}

/// Whether `dir` sits on a file system mounted read-only (here, in this mount namespace).
fn read_only_mount(dir: &Path) -> bool {
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated path and `stat` is a writable statvfs; the
    // struct is read only when the call reports success.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return false;
    }
    // SAFETY: statvfs returned 0, so it filled `stat`.
    let stat = unsafe { stat.assume_init() };
    stat.f_flag & libc::ST_RDONLY != 0
}

/// Reads every `*.pem` key in `dir`. Refuses a directory others may write and key files
/// other users can read.
pub fn load_dir(dir: &Path) -> anyhow::Result<Vec<SigningKey>> {
    check_dir(dir)?;
    let entries =
        fs::read_dir(dir).with_context(|| format!("cannot read keys dir {}", dir.display()))?;
    let mut pems = Vec::new();
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) == Some("pem") {
            pems.push(path);
        }
    }
    pems.sort();
    // Every loose file in one message: one per run would take as many runs as files.
    let secret = dir.join("refresh.secret");
    let secret = secret.exists().then_some(secret);
    refuse_loose(pems.iter().chain(&secret))?;
    let mut keys = Vec::new();
    for path in pems {
        let text = fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        keys.push(SigningKey::from_pkcs8_pem(&text, path)?);
    }
    Ok(keys)
}

/// Refuses, naming each of them, the files of `paths` that other users can read.
fn refuse_loose<'a>(paths: impl Iterator<Item = &'a PathBuf>) -> anyhow::Result<()> {
    let mut loose = Vec::new();
    for path in paths {
        if let Err(e) = check_private(path) {
            loose.push((path, e));
        }
    }
    match loose.as_slice() {
        [] => Ok(()),
        [(_, e)] => Err(anyhow::anyhow!("{e}")),
        all => {
            let mut modes = Vec::new();
            for (path, _) in all {
                let mode = fs::metadata(path).map(|m| m.permissions().mode() & 0o777);
                modes.push(match mode {
                    Ok(mode) => format!("{} (mode {mode:o})", path.display()),
                    Err(_) => path.display().to_string(),
                });
            }
            let names: Vec<String> = all.iter().map(|(p, _)| p.display().to_string()).collect();
            Err(anyhow::anyhow!(
                "{} key files are readable by other users: {}; run `chmod 600 {}`",
                all.len(),
                modes.join(", "),
                names.join(" ")
            ))
        }
    }
}

/// Generates an RSA-2048 key into `dir` as `key-<UTC timestamp>.pem`, mode 0600.
pub fn generate_into(dir: &Path, now: chrono::DateTime<chrono::Utc>) -> anyhow::Result<PathBuf> {
    create_dir(dir)?;
    check_dir(dir)?;
    let key = generate(now)?;
    let pem_text = pem::encode(&pem::Pem::new("PRIVATE KEY", key.pkcs8_der()?));
    let path = dir.join(generated_name(now));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(pem_text.as_bytes())?;
    file.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1's example key and its thumbprint.
        let n = crate::crypto::b64url_decode(
            "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        )
        .expect("b64");
        let e = crate::crypto::b64url_decode("AQAB").expect("b64");
        assert_eq!(
            thumbprint(&n, &e),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn generated_key_loads_with_stable_kid_and_private_mode() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = generate_into(dir.path(), chrono::Utc::now()).expect("generate");
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let a = load_dir(dir.path()).expect("load");
        let b = load_dir(dir.path()).expect("load");
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].kid, b[0].kid);
        assert_eq!(a[0].bits(), 2048);
    }

    #[test]
    fn newest_file_signs_and_all_are_published() {
        let dir = tempfile::tempdir().expect("tmp");
        let t0 = chrono::Utc::now();
        generate_into(dir.path(), t0).expect("generate");
        let newer = generate_into(dir.path(), t0 + chrono::Duration::seconds(5)).expect("gen");
        let ring = KeyRing::new(load_dir(dir.path()).expect("load")).expect("ring");
        assert_eq!(ring.signer().path, newer);
        let jwks: serde_json::Value = serde_json::from_slice(&ring.jwks().body).expect("json");
        let keys = jwks["keys"].as_array().expect("keys");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[0]["kid"], ring.signer().kid.as_str());
        for k in ring.keys() {
            assert!(ring.verifier(&k.kid).is_some());
        }
    }

    #[test]
    fn creates_the_dir_private_and_refuses_one_others_may_write() {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path().join("made").join("keys");
        generate_into(&dir, chrono::Utc::now()).expect("generate");
        for d in [&dir, &tmp.path().join("made")] {
            let mode = fs::metadata(d).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "{}", d.display());
        }
        for loose in [0o770, 0o702, 0o777] {
            fs::set_permissions(&dir, fs::Permissions::from_mode(loose)).expect("chmod");
            let err = load_dir(&dir).expect_err("must refuse");
            let text = err.to_string();
            assert!(text.contains("writable by group or others"), "{text}");
            assert!(
                text.contains(&format!("chmod 700 {}", dir.display())),
                "{text}"
            );
            assert!(generate_into(&dir, chrono::Utc::now()).is_err());
        }
        // Read and search bits alone let nobody add a key.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(load_dir(&dir).expect("load").len(), 1);
    }

    #[test]
    fn a_read_only_mount_is_not_open_to_writers() {
        assert!(open_to_writers(0o777, false));
        assert!(open_to_writers(0o720, false));
        assert!(!open_to_writers(0o755, false));
        assert!(!open_to_writers(0o777, true));
    }

    #[test]
    fn refuses_world_readable_keys() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = generate_into(dir.path(), chrono::Utc::now()).expect("generate");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = load_dir(dir.path()).expect_err("must refuse");
        assert!(err.to_string().contains("readable by other users"), "{err}");
    }

    #[test]
    fn every_loose_key_file_is_named_at_once() {
        let dir = tempfile::tempdir().expect("tmp");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o700)).expect("chmod");
        // Refused before any is parsed: the content does not matter.
        for (name, mode) in [("a.pem", 0o644), ("b.pem", 0o600), ("c.pem", 0o640)] {
            let path = dir.path().join(name);
            fs::write(&path, "not a key").expect("write");
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        let secret = dir.path().join("refresh.secret");
        fs::write(&secret, [7u8; 32]).expect("write");
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o604)).expect("chmod");
        let text = load_dir(dir.path()).expect_err("must refuse").to_string();
        for loose in [
            "a.pem (mode 644)",
            "c.pem (mode 640)",
            "refresh.secret (mode 604)",
        ] {
            assert!(text.contains(loose), "{loose} not named: {text}");
        }
        assert!(text.contains("3 key files"), "{text}");
        assert!(!text.contains("b.pem"), "{text}");
    }
}
