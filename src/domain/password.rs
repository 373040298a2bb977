use std::fmt;

const MIN_CHARS: usize = 12;
const MAX_CHARS: usize = 128;

/// A password that meets the contract's policy; only new passwords are parsed.
/// A password presented at login is checked against its hash, never against the policy,
/// so a policy change never locks anyone out.
pub struct NewPassword(String);

impl NewPassword {
    /// Checks every rule and reports all that fail in one sentence.
    pub fn parse(raw: &str) -> Result<Self, String> {
        let len = raw.chars().count();
        let mut missing = Vec::new();
        if len < MIN_CHARS {
            missing.push("at least 12 characters");
        }
        if len > MAX_CHARS {
            return Err("must be at most 128 characters".into());
        }
        if !raw.chars().any(|c| c.is_uppercase()) {
            missing.push("an upper-case letter");
        }
        if !raw.chars().any(|c| c.is_lowercase()) {
            missing.push("a lower-case letter");
        }
        if !raw.chars().any(|c| c.is_ascii_digit()) {
            missing.push("a digit");
        }
        if !raw.chars().any(is_symbol) {
            missing.push("a symbol such as !@#$%^&*");
        }
        if missing.is_empty() {
            Ok(Self(raw.to_owned()))
        } else {
            Err(format!("must contain {}", missing.join(", ")))
        }
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

fn is_symbol(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace() && !c.is_control()
}

impl fmt::Debug for NewPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NewPassword(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_a_strong_password() {
        assert!(NewPassword::parse("Correct-Horse-9").is_ok());
        assert!(NewPassword::parse("ÄpfelBirnen12€").is_ok());
    }

    #[test]
    fn lists_every_missing_rule() {
        let err = NewPassword::parse("short").expect_err("weak");
        for rule in ["12 characters", "upper-case", "digit", "symbol"] {
            assert!(err.contains(rule), "{err} should mention {rule}");
        }
        assert!(!err.contains("lower-case"));
    }

    #[test]
    fn bounds_length_in_characters() {
        let long = format!("Aa1!{}", "x".repeat(125));
        assert_eq!(long.chars().count(), 129);
        assert!(NewPassword::parse(&long).is_err());
        let max = format!("Aa1!{}", "x".repeat(124));
        assert!(NewPassword::parse(&max).is_ok());
    }

    #[test]
    fn the_lower_bound_is_12_characters() {
        assert!(NewPassword::parse("Abcdefgh1!xy").is_ok());
        let err = NewPassword::parse("Abcdefgh1!x").expect_err("11 characters");
        assert_eq!(err, "must contain at least 12 characters");
    }

    #[test]
    fn length_counts_characters_not_bytes() {
        // 12 characters in 22 bytes, 11 in 20, 128 in 254.
        assert!(NewPassword::parse("Ääääääääää1!").is_ok());
        assert!(NewPassword::parse("Äääääääää1!").is_err());
        let max = format!("Ä1!{}", "ä".repeat(125));
        assert_eq!((max.chars().count(), max.len()), (128, 254));
        assert!(NewPassword::parse(&max).is_ok());
    }

    #[test]
    fn an_overlong_password_is_refused_for_its_length_alone() {
        let err = NewPassword::parse(&"x".repeat(129)).expect_err("too long");
        assert_eq!(err, "must be at most 128 characters");
    }

    #[test]
    fn any_script_has_case_but_a_digit_is_0_to_9() {
        assert!(NewPassword::parse("ΑΒΓδεζ-horse1").is_ok());
        let err = NewPassword::parse("Abcdefghij!٣٤").expect_err("Arabic-Indic digits");
        assert_eq!(err, "must contain a digit");
    }

    #[test]
    fn any_visible_non_alphanumeric_is_a_symbol_but_a_control_is_not() {
        assert!(NewPassword::parse("Abcdefghij12€").is_ok());
        assert!(NewPassword::parse("Abcdefghij12…").is_ok());
        let err = NewPassword::parse("Abcdefghij12\u{7}").expect_err("BEL is no symbol");
        assert_eq!(err, "must contain a symbol such as !@#$%^&*");
    }

    #[test]
    fn spaces_are_not_symbols() {
        assert!(NewPassword::parse("Abcdefghij 12").is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let p = NewPassword::parse("Correct-Horse-9").expect("valid");
        assert!(!format!("{p:?}").contains("Horse"));
    }
}
