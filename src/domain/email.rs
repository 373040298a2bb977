use std::fmt;

use icu_normalizer::ComposingNormalizerBorrowed;
use validator::ValidateEmail;

/// The longest address RFC 5321 lets through a mail path.
const MAX_LEN: usize = 254;

const INVALID: &str = "is not a valid email address";

/// A normalized email address: trimmed, lower-cased, its domain in IDNA ASCII form,
/// syntactically valid.
///
/// Holding an `Email` means it passed `parse`; uniqueness checks and lockout keys
/// compare these normalized forms, so `A@x.io `, `a@x.io` and `a@ｘ.ｉｏ` are one account.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Normalizes, then validates. The domain goes through UTS #46 (`idna`): a domain
    /// typed in full-width letters, or as a U-label instead of its `xn--` A-label, names
    /// the same mailbox, so it must not become a second account beside the original.
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err("is required");
        }
        let Some((local, domain)) = trimmed.rsplit_once('@') else {
            return Err(INVALID);
        };
        if domain.is_empty() {
            return Err(INVALID);
        }
        let domain =
            idna::domain_to_ascii(domain).map_err(|_| "has a domain name that is not valid")?;
        let normalized = format!("{}@{domain}", normalize_local(local));
        // After normalization: an A-label can be much longer than the U-label typed.
        if normalized.chars().count() > MAX_LEN {
            return Err("must be at most 254 characters");
        }
        if !normalized.validate_email() {
            return Err(INVALID);
        }
        Ok(Self(normalized))
    }

    /// Trusts a value read back from storage, which only ever holds parsed emails.
    pub fn from_trusted(stored: String) -> Self {
        Self(stored)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Lower-cased, then NFC: composed and decomposed spellings of one character compare
/// equal. Today the local-part rule admits ASCII only, so this matters once UTF-8 local
/// parts (RFC 6531) are admitted; it keeps such a change from splitting accounts.
fn normalize_local(local: &str) -> String {
    ComposingNormalizerBorrowed::new_nfc()
        .normalize(&local.to_lowercase())
        .into_owned()
}

/// The form a search query is compared in. A whole address normalizes exactly as
/// `Email::parse` does, so either spelling of a domain finds the account; anything
/// else (a prefix) is only trimmed and lower-cased.
pub fn normalize(raw: &str) -> String {
    match Email::parse(raw) {
        Ok(email) => email.0,
        Err(_) => normalize_local(raw.trim()),
    }
}

impl fmt::Debug for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Emails are personal data: keep them out of debug output that may reach logs.
        let domain = self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("");
        write!(f, "Email(***@{domain})")
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_lowercases() {
        let e = Email::parse("  Alice@Example.COM ").expect("valid");
        assert_eq!(e.as_str(), "alice@example.com");
    }

    #[test]
    fn normalization_is_idempotent() {
        for raw in ["  Bob@X.io", "carol@y.org", " D@E.F.G "] {
            let once = Email::parse(raw).expect("valid");
            let twice = Email::parse(once.as_str()).expect("valid");
            assert_eq!(once, twice);
        }
    }

    #[test]
    fn rejects_garbage() {
        for raw in ["", "   ", "no-at-sign", "@nodomain", "a@", "a b@c.d"] {
            assert!(Email::parse(raw).is_err(), "{raw:?} should be rejected");
        }
    }

    #[test]
    fn rejects_overlong() {
        let raw = format!("{}@example.com", "a".repeat(250));
        assert_eq!(Email::parse(&raw), Err("must be at most 254 characters"));
    }

    #[test]
    fn full_width_and_unicode_domains_become_their_ascii_form() {
        let plain = Email::parse("victim@example.com").expect("valid");
        for twin in [
            "victim@ｅｘａｍｐｌｅ.com",
            "victim@ＥＸＡＭＰＬＥ．ＣＯＭ",
            "victim@example。com",
            " Victim@Example.Com ",
        ] {
            assert_eq!(Email::parse(twin), Ok(plain.clone()), "{twin:?}");
        }
        let a_label = Email::parse("a@xn--bcher-kva.example").expect("valid");
        assert_eq!(a_label.as_str(), "a@xn--bcher-kva.example");
        for twin in [
            "a@bücher.example",
            "A@BÜCHER.example",
            "a@bu\u{308}cher.example",
        ] {
            assert_eq!(Email::parse(twin), Ok(a_label.clone()), "{twin:?}");
        }
    }

    #[test]
    fn rejects_domains_that_do_not_normalize() {
        for raw in [
            "a@xn--55555577.example",
            "a@ex\u{FFFD}ample.com",
            "a@exa\u{200D}mple.com",
        ] {
            assert_eq!(
                Email::parse(raw),
                Err("has a domain name that is not valid"),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn the_length_bound_is_254_characters_exactly() {
        let local = "a".repeat(64);
        let domain = |last: usize| {
            format!(
                "{}.{}.{}.com",
                "b".repeat(63),
                "c".repeat(63),
                "d".repeat(last)
            )
        };
        let fits = format!("{local}@{}", domain(57));
        assert_eq!(fits.chars().count(), 254);
        assert_eq!(Email::parse(&fits).map(|e| e.0), Ok(fits));
        let over = format!("{local}@{}", domain(58));
        assert_eq!(Email::parse(&over), Err("must be at most 254 characters"));
    }

    #[test]
    fn a_blank_email_is_missing_not_malformed() {
        for raw in ["", " ", "\t\n"] {
            assert_eq!(Email::parse(raw), Err("is required"), "{raw:?}");
        }
    }

    #[test]
    fn keeps_ip_literal_domains() {
        let e = Email::parse("a@[127.0.0.1]").expect("valid");
        assert_eq!(e.as_str(), "a@[127.0.0.1]");
    }

    #[test]
    fn length_is_checked_after_normalization() {
        // 11 characters typed, 33 as an A-label.
        let label = "日本語の文字列ですよね";
        let raw = format!("a@{}.example", [label; 8].join("."));
        assert!(raw.chars().count() <= MAX_LEN, "the typed form fits");
        assert_eq!(Email::parse(&raw), Err("must be at most 254 characters"));
    }

    #[test]
    fn search_queries_normalize_like_addresses_and_prefixes_stay_prefixes() {
        assert_eq!(normalize(" a@BÜCHER.example"), "a@xn--bcher-kva.example");
        assert_eq!(normalize("victim@ｅｘａｍｐｌｅ.com"), "victim@example.com");
        assert_eq!(normalize(" Vic "), "vic");
    }

    #[test]
    fn local_part_is_nfc() {
        assert_eq!(normalize_local("Jose\u{301}"), "jos\u{e9}");
    }

    proptest::proptest! {
        #[test]
        fn parse_never_panics(raw in "\\PC{0,80}(@\\PC{0,40})?") {
            let _ = Email::parse(&raw);
            let _ = normalize(&raw);
        }

        #[test]
        fn parse_is_idempotent(
            raw in " ?[a-zA-Z0-9.+_-]{1,20}@(\\p{L}{1,10}|[ａ-ｚＡ-Ｚ]{1,10}|[a-zA-Z]{1,10})([.．。](\\p{L}{1,10}|[a-z]{2,8})){0,3} ?"
        ) {
            // Stored emails are compared as stored: parsing one again must not move it.
            if let Ok(once) = Email::parse(&raw) {
                proptest::prop_assert!(once.as_str().is_ascii());
                proptest::prop_assert_eq!(Email::parse(once.as_str()), Ok(once.clone()));
            }
        }
    }

    #[test]
    fn debug_hides_the_local_part() {
        let e = Email::parse("secret.person@example.com").expect("valid");
        assert!(!format!("{e:?}").contains("secret.person"));
    }
}
