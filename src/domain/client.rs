//! Service clients: who they are and what they may ask for.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::ClientId;

/// The scopes gatehouse itself gives meaning to; a client may hold others, for the
/// services it calls, which gatehouse only carries in the token's `scope`.
pub const SCOPE_INTROSPECT: &str = "introspect";
pub const SCOPE_REVOCATIONS: &str = "revocations";

/// At most this many scopes per client, each at most `MAX_SCOPE_LEN` bytes: a token
/// carries all of them.
pub const MAX_SCOPES: usize = 32;
pub const MAX_SCOPE_LEN: usize = 64;

/// A set of scopes, each an RFC 6749 §3.3 `scope-token` (printable ASCII except space,
/// `"` and `\`), kept sorted so that a client's scopes compare and print one way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scopes(BTreeSet<String>);

impl Scopes {
    /// Parses a list of scope tokens; the first invalid one is the error.
    pub fn parse<'a>(items: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut set = BTreeSet::new();
        for item in items {
            if item.is_empty() || item.len() > MAX_SCOPE_LEN {
                return Err(format!("each scope is 1 to {MAX_SCOPE_LEN} characters"));
            }
            if !item
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
            {
                return Err(
                    "a scope is printable ASCII without spaces, quotes or backslashes".into(),
                );
            }
            set.insert(item.to_owned());
        }
        if set.len() > MAX_SCOPES {
            return Err(format!("at most {MAX_SCOPES} scopes"));
        }
        Ok(Self(set))
    }

    /// A space-separated list, as a token's `scope` claim and a form's `scope` carry it.
    pub fn parse_spaced(text: &str) -> Result<Self, String> {
        Self::parse(text.split(' ').filter(|s| !s.is_empty()))
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    pub fn is_subset(&self, of: &Scopes) -> bool {
        self.0.is_subset(&of.0)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Space-separated, sorted.
    pub fn spaced(&self) -> String {
        self.iter().collect::<Vec<_>>().join(" ")
    }
}

/// A client as the admin API shows it (never a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Client {
    pub id: ClientId,
    pub name: String,
    pub scopes: Scopes,
    /// `None`: its tokens carry the audience user tokens carry.
    pub audience: Option<String>,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub disabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_are_sorted_deduplicated_and_checked() {
        let s = Scopes::parse_spaced("b a  b introspect").expect("valid");
        assert_eq!(s.spaced(), "a b introspect");
        assert!(Scopes::parse_spaced("a").expect("a").is_subset(&s));
        assert!(!Scopes::parse_spaced("c").expect("c").is_subset(&s));
        for bad in ["a\"b", "a\\b", "é", &"x".repeat(MAX_SCOPE_LEN + 1)] {
            assert!(Scopes::parse([bad]).is_err(), "{bad}");
        }
        assert!(Scopes::parse([""]).is_err());
    }
}
