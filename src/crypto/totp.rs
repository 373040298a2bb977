//! Second-factor secrets and codes: TOTP (RFC 6238) and recovery codes.
//!
//! `totp-rs` computes a code for a given time; which time step a presented code matched
//! is decided here, comparing every candidate in constant time, because the service must
//! claim that step in the store (a code is accepted once: see `storage::MfaStore`).

use std::fmt;

use totp_rs::{Algorithm, Builder, Secret};

use super::{constant_time_eq, random_bytes, sha256};

/// 160 bits, the HMAC-SHA-1 block-friendly size RFC 4226 §4 recommends.
pub const SECRET_BYTES: usize = 20;
/// RFC 6238 §5.2's default step, which every authenticator app assumes.
pub const STEP_SECS: i64 = 30;
/// The digits of the codes gatehouse accepts (the contract's; apps show 6).
pub const DIGITS: u8 = 6;
/// Steps of clock drift accepted either way (RFC 6238 §6 recommends at most one).
const DRIFT: i64 = 1;
/// 80 bits per recovery code: 16 base32 characters, shown as four groups of four.
const RECOVERY_BYTES: usize = 10;
/// Codes per set.
pub const RECOVERY_CODES: usize = 10;

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Unpadded RFC 4648 §6 base32, as authenticator apps read secrets.
pub fn base32(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(5) * 8);
    let (mut buffer, mut bits) = (0u32, 0u32);
    for &byte in data {
        buffer = (buffer << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(BASE32[((buffer >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(BASE32[((buffer << (5 - bits)) & 31) as usize]));
    }
    out
}

/// A TOTP shared secret in plaintext. It exists in this process only while a code is
/// checked or an enrolment answered; storage sees it sealed.
#[derive(Clone)]
pub struct TotpSecret(Vec<u8>);

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(<redacted>)")
    }
}

impl TotpSecret {
    pub fn generate() -> Self {
        Self(random_bytes::<SECRET_BYTES>().to_vec())
    }

    /// A secret opened from storage; `None` unless it has the size gatehouse issues.
    pub fn from_bytes(bytes: Vec<u8>) -> Option<Self> {
        (bytes.len() == SECRET_BYTES).then_some(Self(bytes))
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The secret as the user types it into an app.
    pub fn base32(&self) -> String {
        base32(&self.0)
    }

    /// `otpauth://totp/<issuer>:<account>?secret=…&issuer=…` (the Key Uri Format that
    /// authenticator apps read), with SHA-1, 6 digits and 30 s spelled out.
    pub fn otpauth_uri(&self, issuer: &str, account: &str) -> String {
        use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
        // RFC 3986's unreserved characters stay as they are; the rest (`@`, `:`, …) is
        // escaped, so neither part can end the label or the query early.
        const PART: &AsciiSet = &NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~');
        let (issuer, account) = (
            utf8_percent_encode(issuer, PART).to_string(),
            utf8_percent_encode(account, PART).to_string(),
        );
        format!(
            "otpauth://totp/{issuer}:{account}?secret={}&issuer={issuer}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
            self.base32()
        )
    }

    /// The time step a presented `code` matches at `unix_secs` (the current step or one
    /// either side), if any. Every candidate is computed and compared, whatever matched
    /// first, so the time taken says nothing about which one did.
    pub fn matching_step(&self, code: &str, unix_secs: i64) -> Option<i64> {
        matching_step(&self.0, code, unix_secs, DIGITS)
    }

    /// The code of step `step` (tests and tools compute what an app would show).
    pub fn code_at_step(&self, step: i64) -> Option<String> {
        code_at(&self.0, step, DIGITS)
    }
}

/// The `digits`-digit code of time step `step` under `secret` (SHA-1).
fn code_at(secret: &[u8], step: i64, digits: u8) -> Option<String> {
    let time = u64::try_from(step.checked_mul(STEP_SECS)?).ok()?;
    let totp = Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(digits)
        .with_step_duration(STEP_SECS as u64)
        .with_secret(Secret::from(secret))
        .build()
        .ok()?;
    Some(totp.generate(time).to_string())
}

/// See `TotpSecret::matching_step`; `digits` is a parameter for RFC 6238's vectors.
fn matching_step(secret: &[u8], code: &str, unix_secs: i64, digits: u8) -> Option<i64> {
    if code.len() != usize::from(digits) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let now = unix_secs.div_euclid(STEP_SECS);
    let mut matched = None;
    for step in (now - DRIFT)..=(now + DRIFT) {
        let Some(expected) = code_at(secret, step, digits) else {
            continue;
        };
        if constant_time_eq(expected.as_bytes(), code.as_bytes()) {
            // The latest matching step: claiming it spends every earlier one too.
            matched = Some(step);
        }
    }
    matched
}

/// A recovery code in plaintext: shown once, stored as `hash`.
pub struct RecoveryCode(String);

impl fmt::Debug for RecoveryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecoveryCode(<redacted>)")
    }
}

impl RecoveryCode {
    /// `xxxx-xxxx-xxxx-xxxx` in lower-case base32: 80 random bits.
    pub fn generate() -> Self {
        let raw = base32(&random_bytes::<RECOVERY_BYTES>()).to_ascii_lowercase();
        let groups: Vec<&str> = (0..4).map(|i| &raw[i * 4..i * 4 + 4]).collect();
        Self(groups.join("-"))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> [u8; 32] {
        recovery_code_hash(&self.0).unwrap_or_default()
    }
}

/// The stored hash of a presented recovery code, read leniently (any case, with or
/// without dashes and spaces); `None` when it cannot be one. 80 random bits need no slow
/// hash: SHA-256 of the canonical form cannot be inverted.
pub fn recovery_code_hash(presented: &str) -> Option<[u8; 32]> {
    let canonical: String = presented
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let ok =
        canonical.len() == RECOVERY_BYTES * 8 / 5 && canonical.bytes().all(|b| BASE32.contains(&b));
    ok.then(|| {
        let mut input = b"gatehouse recovery code v1\0".to_vec();
        input.extend_from_slice(canonical.as_bytes());
        sha256(&input)
    })
}

/// Whether `code` has the shape of a TOTP code (then it is never tried as a recovery
/// code, and the reverse).
pub fn looks_like_totp(code: &str) -> bool {
    code.len() == usize::from(DIGITS) && code.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SECRET: &[u8] = b"12345678901234567890";

    /// RFC 6238 Appendix B, SHA-1 column (8 digits), through the verification path:
    /// each code matches the step of its time, and only that one.
    #[test]
    fn rfc_6238_appendix_b_vectors_match_their_own_step() {
        for (time, code) in [
            (59_i64, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ] {
            assert_eq!(
                matching_step(RFC_SECRET, code, time, 8),
                Some(time / STEP_SECS),
                "T = {time}"
            );
            // Three steps later the code is outside the drift window.
            assert_eq!(
                matching_step(RFC_SECRET, code, time + 3 * STEP_SECS, 8),
                None
            );
        }
    }

    #[test]
    fn a_code_matches_one_step_of_drift_either_way_and_no_more() {
        let secret = TotpSecret::generate();
        let now = 1_800_000_000;
        let step = now / STEP_SECS;
        for (offset, expected) in [(-2, None), (-1, Some(-1)), (0, Some(0)), (1, Some(1))] {
            let code = secret.code_at_step(step + offset).expect("code");
            assert_eq!(
                secret.matching_step(&code, now),
                expected.map(|e| step + e),
                "offset {offset}"
            );
        }
        assert_eq!(secret.matching_step("12345", now), None);
        assert_eq!(secret.matching_step("12345a", now), None);
    }

    #[test]
    fn base32_follows_rfc_4648() {
        // RFC 4648 §10, without padding.
        for (input, out) in [
            ("", ""),
            ("f", "MY"),
            ("fo", "MZXQ"),
            ("foo", "MZXW6"),
            ("foob", "MZXW6YQ"),
            ("fooba", "MZXW6YTB"),
            ("foobar", "MZXW6YTBOI"),
        ] {
            assert_eq!(base32(input.as_bytes()), out);
        }
        assert_eq!(TotpSecret::generate().base32().len(), 32);
    }

    #[test]
    fn recovery_codes_read_leniently_and_carry_80_bits() {
        let code = RecoveryCode::generate();
        let shown = code.expose().to_owned();
        assert_eq!(shown.len(), 19);
        assert_eq!(shown.matches('-').count(), 3);
        let hash = code.hash();
        assert_eq!(recovery_code_hash(&shown), Some(hash));
        assert_eq!(recovery_code_hash(&shown.to_ascii_uppercase()), Some(hash));
        assert_eq!(recovery_code_hash(&shown.replace('-', "")), Some(hash));
        assert_eq!(recovery_code_hash("abcd-efgh"), None);
        assert_eq!(recovery_code_hash("0000-0000-0000-0000"), None);
        assert_ne!(RecoveryCode::generate().hash(), hash);
    }

    #[test]
    fn the_otpauth_uri_names_issuer_account_and_secret() {
        let secret = TotpSecret::generate();
        let uri = secret.otpauth_uri("gatehouse", "a@example.com");
        assert!(
            uri.starts_with("otpauth://totp/gatehouse:a%40example.com?secret="),
            "{uri}"
        );
        assert!(uri.contains(&format!("secret={}&issuer=gatehouse", secret.base32())));
        assert!(!format!("{secret:?}").contains(&secret.base32()));
    }
}
