//! How a session was authenticated (RFC 8176 `amr`), as a closed set so that a family
//! can only carry a combination the service issues.

/// The authentication methods a login proved, kept on its family so that every access
/// token the family issues (refresh included) carries them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Amr {
    /// Password only (a signup, a login of a user without a second factor).
    #[default]
    Pwd,
    /// Password, then a TOTP or recovery code.
    PwdOtp,
}

impl Amr {
    /// The `amr` claim's values (RFC 8176 §2).
    pub fn methods(self) -> &'static [&'static str] {
        match self {
            Amr::Pwd => &["pwd"],
            Amr::PwdOtp => &["pwd", "otp", "mfa"],
        }
    }

    /// Whether a second factor was proved.
    pub fn is_mfa(self) -> bool {
        self.methods().contains(&"mfa")
    }

    /// The stored form: the methods joined by spaces.
    pub fn as_str(self) -> &'static str {
        match self {
            Amr::Pwd => "pwd",
            Amr::PwdOtp => "pwd otp mfa",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pwd" => Some(Amr::Pwd),
            "pwd otp mfa" => Some(Amr::PwdOtp),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_amr_parses_back_from_its_stored_form() {
        for amr in [Amr::Pwd, Amr::PwdOtp] {
            assert_eq!(Amr::parse(amr.as_str()), Some(amr));
            assert_eq!(amr.as_str(), amr.methods().join(" "));
        }
        assert!(Amr::PwdOtp.is_mfa());
        assert!(!Amr::Pwd.is_mfa());
        assert_eq!(Amr::parse("otp"), None);
    }
}
