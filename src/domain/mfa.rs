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
    /// Password, then a device-bound passkey.
    PwdHwk,
    /// Password, then a synced (backup-eligible) passkey: a key software can copy.
    PwdSwk,
    /// A device-bound passkey alone, with user verification.
    Hwk,
    /// A synced passkey alone, with user verification.
    Swk,
}

impl Amr {
    /// The `amr` claim's values (RFC 8176 §2).
    pub fn methods(self) -> &'static [&'static str] {
        match self {
            Amr::Pwd => &["pwd"],
            Amr::PwdOtp => &["pwd", "otp", "mfa"],
            Amr::PwdHwk => &["pwd", "hwk", "mfa"],
            Amr::PwdSwk => &["pwd", "swk", "mfa"],
            Amr::Hwk => &["hwk", "user", "mfa"],
            Amr::Swk => &["swk", "user", "mfa"],
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
            Amr::PwdHwk => "pwd hwk mfa",
            Amr::PwdSwk => "pwd swk mfa",
            Amr::Hwk => "hwk user mfa",
            Amr::Swk => "swk user mfa",
        }
    }

    /// A passkey login: `backup_eligible` (a synced passkey) makes it `swk`, else `hwk`;
    /// `after_password` for the second step of a password login.
    pub fn passkey(backup_eligible: bool, after_password: bool) -> Self {
        match (backup_eligible, after_password) {
            (false, true) => Amr::PwdHwk,
            (true, true) => Amr::PwdSwk,
            (false, false) => Amr::Hwk,
            (true, false) => Amr::Swk,
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pwd" => Some(Amr::Pwd),
            "pwd otp mfa" => Some(Amr::PwdOtp),
            "pwd hwk mfa" => Some(Amr::PwdHwk),
            "pwd swk mfa" => Some(Amr::PwdSwk),
            "hwk user mfa" => Some(Amr::Hwk),
            "swk user mfa" => Some(Amr::Swk),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_amr_parses_back_from_its_stored_form() {
        for amr in [
            Amr::Pwd,
            Amr::PwdOtp,
            Amr::PwdHwk,
            Amr::PwdSwk,
            Amr::Hwk,
            Amr::Swk,
        ] {
            assert_eq!(Amr::parse(amr.as_str()), Some(amr));
            assert_eq!(amr.as_str(), amr.methods().join(" "));
        }
        assert!(Amr::PwdOtp.is_mfa());
        assert!(!Amr::Pwd.is_mfa());
        assert!(Amr::passkey(true, false).is_mfa());
        assert_eq!(Amr::passkey(false, true).methods(), ["pwd", "hwk", "mfa"]);
        assert_eq!(Amr::parse("otp"), None);
    }
}
