//! What each mail says: subject and wording in one place, a plain-text part with the
//! link and a simple HTML part.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Everything but RFC 3986's unreserved characters is encoded in a link's token.
const TOKEN_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// A mail to write: its kind picks the wording.
pub enum Letter<'a> {
    /// After signup, or asked for again: prove the address.
    Verify {
        link: &'a str,
    },
    /// To the new address of an email change.
    Change {
        link: &'a str,
        new_email: &'a str,
    },
    /// To the old address of an email change: no token, only the news.
    ChangeNotice {
        new_email: &'a str,
    },
    Reset {
        link: &'a str,
        minutes: u64,
    },
}

impl Letter<'_> {
    /// The outbox's `kind`, as the admin view shows it.
    pub fn kind(&self) -> &'static str {
        match self {
            Letter::Verify { .. } => "verify",
            Letter::Change { .. } => "change",
            Letter::ChangeNotice { .. } => "notice",
            Letter::Reset { .. } => "reset",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// `template` with `{token}` replaced by the URL-encoded token.
pub fn link(template: &str, token: &str) -> String {
    template.replace(
        "{token}",
        &utf8_percent_encode(token, TOKEN_ESCAPES).to_string(),
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The mail for `letter`, naming the service `service`.
pub fn render(service: &str, letter: &Letter<'_>) -> Rendered {
    let (subject, lead, link, tail) = match letter {
        Letter::Verify { link } => (
            format!("Confirm your email address for {service}"),
            format!("Please confirm that this is your email address for {service}:"),
            Some(*link),
            "If you did not sign up, you can ignore this mail.".to_owned(),
        ),
        Letter::Change { link, new_email } => (
            format!("Confirm your new email address for {service}"),
            format!(
                "Please confirm {new_email} as the new email address of your {service} account:"
            ),
            Some(*link),
            "If you did not ask for this change, ignore this mail: nothing changes.".to_owned(),
        ),
        Letter::ChangeNotice { new_email } => (
            format!("Your {service} email address is being changed"),
            format!(
                "Someone signed in to your {service} account asked to change its email address \
                 to {new_email}. The change takes effect once that address is confirmed."
            ),
            None,
            "If this was not you, change your password now.".to_owned(),
        ),
        Letter::Reset { link, minutes } => (
            format!("Reset your {service} password"),
            format!("To choose a new password for your {service} account, open this link:"),
            Some(*link),
            format!(
                "The link works once, for {minutes} minutes. If you did not ask for it, ignore \
                 this mail: your password stays as it is."
            ),
        ),
    };
    let text = match link {
        Some(link) => format!("{lead}\n\n{link}\n\n{tail}\n\n-- \n{service}\n"),
        None => format!("{lead}\n\n{tail}\n\n-- \n{service}\n"),
    };
    let html_link = link.map_or_else(String::new, |l| {
        let l = escape(l);
        format!("<p><a href=\"{l}\">{l}</a></p>\n")
    });
    let html = format!(
        "<!DOCTYPE html>\n<html><body>\n<p>{}</p>\n{html_link}<p>{}</p>\n<p>&mdash; {}</p>\n</body></html>\n",
        escape(&lead),
        escape(&tail),
        escape(service)
    );
    Rendered {
        subject,
        text,
        html,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_carries_the_token_url_encoded() {
        assert_eq!(
            link("https://app.example.com/r?token={token}", "a b+c_-.~"),
            "https://app.example.com/r?token=a%20b%2Bc_-.~"
        );
    }

    #[test]
    fn the_html_part_escapes_what_it_quotes() {
        let m = render(
            "<svc>",
            &Letter::Reset {
                link: "https://x/?a=1&token=t",
                minutes: 30,
            },
        );
        assert!(m.html.contains("&lt;svc&gt;") && m.html.contains("a=1&amp;token=t"));
        assert!(m.text.contains("https://x/?a=1&token=t"));
        assert_eq!(m.subject, "Reset your <svc> password");
    }
}
