//! The mail settings (#19): where mail goes out, who it is from, where its links lead and
//! how long its tokens live. Declared here, by the part that reads them.

use std::time::Duration;

use crate::declare::{self, Fallback, group};

/// How the SMTP connection is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTls {
    /// `smtps://`: TLS from the first byte (port 465).
    Implicit,
    /// `smtp://…?tls=required`: STARTTLS, refused without it (port 587).
    StartTls,
    /// `smtp://` without `tls=`: plain text; `config check` warns unless loopback.
    None,
}

/// `GATEHOUSE_SMTP_URL`, parsed. Its `Display` and `Debug` never show the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    pub tls: SmtpTls,
    pub host: String,
    pub port: u16,
    pub user: Option<String>,
    pub password: Option<String>,
}

impl SmtpUrl {
    pub fn parse(v: &str) -> Result<Self, String> {
        let v = v.trim();
        let (tls, rest) = if let Some(rest) = v.strip_prefix("smtps://") {
            (SmtpTls::Implicit, rest)
        } else if let Some(rest) = v.strip_prefix("smtp://") {
            (SmtpTls::None, rest)
        } else {
            return Err("must start with smtps:// or smtp://".into());
        };
        let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
        let rest = rest.trim_end_matches('/');
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((auth, hostport)) => (Some(auth), hostport),
            None => (None, rest),
        };
        let (user, password) = match auth {
            Some(auth) => {
                let (u, p) = auth.split_once(':').unwrap_or((auth, ""));
                let decode = |s: &str| {
                    percent_encoding::percent_decode_str(s)
                        .decode_utf8()
                        .map(|c| c.into_owned())
                        .map_err(|_| "the user or password is not UTF-8 once decoded".to_owned())
                };
                (
                    Some(decode(u)?),
                    (!p.is_empty()).then(|| decode(p)).transpose()?,
                )
            }
            None => (None, None),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || hostport.starts_with('[') => (
                h,
                Some(
                    p.parse::<u16>()
                        .map_err(|_| format!("{p:?} is not a port"))?,
                ),
            ),
            _ => (hostport, None),
        };
        let host = host.trim_matches(['[', ']']).to_owned();
        if host.is_empty() {
            return Err("has no host".into());
        }
        let mut tls = tls;
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("tls", "required")) if tls == SmtpTls::None => tls = SmtpTls::StartTls,
                Some(("tls", "required" | "implicit")) if tls == SmtpTls::Implicit => {}
                Some(("tls", "none")) if tls == SmtpTls::None => {}
                _ => {
                    return Err(format!(
                        "{pair:?}: the only option is tls=required (STARTTLS) on smtp://"
                    ));
                }
            }
        }
        let port = port.unwrap_or(match tls {
            SmtpTls::Implicit => 465,
            SmtpTls::StartTls => 587,
            SmtpTls::None => 25,
        });
        Ok(Self {
            tls,
            host,
            port,
            user,
            password,
        })
    }

    pub fn is_loopback(&self) -> bool {
        self.host == "localhost"
            || self
                .host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl std::fmt::Display for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.tls == SmtpTls::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        write!(f, "{scheme}://")?;
        if let Some(user) = &self.user {
            write!(f, "{user}")?;
            if self.password.is_some() {
                write!(f, ":****")?;
            }
            write!(f, "@")?;
        }
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{host}:{}", self.port)?;
        if self.tls == SmtpTls::StartTls {
            write!(f, "?tls=required")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for SmtpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SmtpUrl({self})")
    }
}

/// A link template: an absolute https URL (http on loopback only) holding `{token}`.
fn check_template(url: &str, smtp: bool) -> Result<(), String> {
    if !smtp {
        return Ok(());
    }
    if url.is_empty() {
        return Err("is required when GATEHOUSE_SMTP_URL is set".into());
    }
    declare::validate_url(url)?;
    if !url.contains("{token}") {
        return Err(format!("{url:?} must contain {{token}}"));
    }
    Ok(())
}

group! {
    /// Mail: off unless `GATEHOUSE_SMTP_URL` is set.
    #[derive(Clone, Debug)]
    pub struct MailSettings {
        pub smtp_url: Option<SmtpUrl> {
            env: "GATEHOUSE_SMTP_URL",
            default: Fallback::Value(""),
            meaning: "SMTP server for verification and reset mail: `smtps://USER:PASS@HOST:465` \
                      (implicit TLS), `smtp://USER:PASS@HOST:587?tls=required` (STARTTLS) or \
                      `smtp://HOST:25` (no TLS; `config check` warns unless loopback). Unset: \
                      no mail, and the mail endpoints answer 404. `config check` hides the password",
            parse: |v| {
                let v = v.trim();
                if v.is_empty() { Ok(None) } else { SmtpUrl::parse(v).map(Some) }
            },
            // Unset is not a mistake, but `config check` says what it turns off.
            show: |v| v.as_ref().map_or_else(
                || "(unset: no mail; the mail endpoints answer 404)".to_owned(),
                |u| u.to_string(),
            ),
        },
        pub from: String {
            env: "GATEHOUSE_MAIL_FROM",
            default: Fallback::Value(""),
            meaning: "the From of every mail (`Name <noreply@example.com>` or a bare address); \
                      required with GATEHOUSE_SMTP_URL",
            parse: declare::text,
            check: |s| match (&s.smtp_url, s.from.as_str()) {
                (None, _) => Ok(()),
                (Some(_), "") => Err("is required when GATEHOUSE_SMTP_URL is set".into()),
                (Some(_), from) => from
                    .parse::<lettre::message::Mailbox>()
                    .map(drop)
                    .map_err(|_| format!("{from:?} is not a mail address")),
            },
            show: Clone::clone,
        },
        pub verify_url: String {
            env: "GATEHOUSE_MAIL_VERIFY_URL",
            default: Fallback::Value(""),
            meaning: "the app's page that verifies an address, with `{token}` where the mail \
                      token goes (`https://app.example.com/verify?token={token}`)",
            parse: declare::text,
            check: |s| check_template(&s.verify_url, s.smtp_url.is_some()),
            show: Clone::clone,
        },
        pub reset_url: String {
            env: "GATEHOUSE_MAIL_RESET_URL",
            default: Fallback::Value(""),
            meaning: "the app's page that sets a new password, with `{token}` \
                      (`https://app.example.com/reset?token={token}`)",
            parse: declare::text,
            check: |s| check_template(&s.reset_url, s.smtp_url.is_some()),
            show: Clone::clone,
        },
        pub verify_ttl: Duration {
            env: "GATEHOUSE_MAIL_VERIFY_TTL",
            default: Fallback::Value("24h"),
            meaning: "how long a verification or email-change link works",
            parse: declare::duration,
            check: |s| declare::at_least_a_minute(s.verify_ttl),
            show: declare::secs,
        },
        pub reset_ttl: Duration {
            env: "GATEHOUSE_MAIL_RESET_TTL",
            default: Fallback::Value("30m"),
            meaning: "how long a password-reset link works",
            parse: declare::duration,
            check: |s| declare::at_least_a_minute(s.reset_ttl),
            show: declare::secs,
        },
        pub service_name: String {
            env: "GATEHOUSE_MAIL_SERVICE_NAME",
            default: Fallback::Value(""),
            meaning: "how mail names the service; unset: the host of GATEHOUSE_ISSUER",
            parse: declare::text,
            show: Clone::clone,
        },
        /// The first retry's delay; each further one doubles it (with jitter).
        pub retry_base: Duration {
            env: "GATEHOUSE_MAIL_RETRY_BASE",
            default: Fallback::Value("30s"),
            meaning: "delay before the first retry of a mail the SMTP server refused for now; \
                      each further retry doubles it (at most 1 h apart), with jitter, until \
                      the mail expires with its token",
            parse: declare::duration,
            show: declare::secs,
        },
        /// How often the sender looks for due mail when it was not woken.
        pub poll_interval: Duration {
            env: "GATEHOUSE_MAIL_POLL_INTERVAL",
            default: Fallback::Value("5s"),
            meaning: "how often the mail sender looks for due mail (a request on this process \
                      wakes it at once)",
            parse: declare::duration,
            show: declare::secs,
        },
        pub smtp_timeout: Duration {
            env: "GATEHOUSE_SMTP_TIMEOUT",
            default: Fallback::Value("15s"),
            meaning: "how long one SMTP conversation may take before it counts as a \
                      temporary failure",
            parse: declare::duration,
            check: |s| declare::at_least_a_second(s.smtp_timeout),
            show: declare::secs,
        },
    }
}

impl MailSettings {
    /// Sentences for `config check` about settings allowed but probably a mistake.
    pub fn warnings(&self) -> Vec<String> {
        match &self.smtp_url {
            None => Vec::new(),
            Some(url) if url.tls == SmtpTls::None && !url.is_loopback() => vec![format!(
                "GATEHOUSE_SMTP_URL: {url} sends mail (and its reset links) without TLS to a \
                 host that is not loopback; use smtps:// or ?tls=required"
            )],
            Some(_) => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_smtp_url_parses_and_prints_without_its_password() {
        let url = SmtpUrl::parse("smtps://mailer:s%40cret@smtp.example.com").expect("parses");
        assert_eq!(url.tls, SmtpTls::Implicit);
        assert_eq!(url.port, 465);
        assert_eq!(url.password.as_deref(), Some("s@cret"));
        assert_eq!(url.to_string(), "smtps://mailer:****@smtp.example.com:465");
        assert!(!format!("{url:?}").contains("cret"));
        let starttls = SmtpUrl::parse("smtp://u:p@mx.example.com:2587?tls=required").expect("ok");
        assert_eq!((starttls.tls, starttls.port), (SmtpTls::StartTls, 2587));
        let plain = SmtpUrl::parse("smtp://127.0.0.1:2525").expect("ok");
        assert!(plain.is_loopback() && plain.user.is_none());
        for bad in ["http://x", "smtp://", "smtp://h:port", "smtp://h?tls=maybe"] {
            assert!(SmtpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_link_template_needs_its_token_and_https_off_loopback() {
        assert!(check_template("https://app.example.com/r?token={token}", true).is_ok());
        assert!(check_template("http://127.0.0.1:3000/r?token={token}", true).is_ok());
        assert!(check_template("http://app.example.com/r?token={token}", true).is_err());
        assert!(check_template("https://app.example.com/r", true).is_err());
        assert!(check_template("", true).is_err());
        assert!(check_template("", false).is_ok());
    }
}
