use std::fmt;

use validator::ValidateEmail;

/// The longest address RFC 5321 lets through a mail path.
const MAX_LEN: usize = 254;

/// A normalized email address: trimmed, lower-cased, syntactically valid.
///
/// Holding an `Email` means it passed `parse`; uniqueness checks and lockout keys
/// compare these normalized forms, so `A@x.io ` and `a@x.io` are one account.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, &'static str> {
        let normalized = normalize(raw);
        if normalized.is_empty() {
            return Err("is required");
        }
        if normalized.chars().count() > MAX_LEN {
            return Err("must be at most 254 characters");
        }
        if !normalized.validate_email() {
            return Err("is not a valid email address");
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

/// The normalization applied before any comparison: also used for search queries,
/// which need not be whole addresses.
pub fn normalize(raw: &str) -> String {
    raw.trim().to_lowercase()
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
    fn debug_hides_the_local_part() {
        let e = Email::parse("secret.person@example.com").expect("valid");
        assert!(!format!("{e:?}").contains("secret.person"));
    }
}
