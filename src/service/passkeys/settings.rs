//! The relying party's settings, declared here (see [`crate::declare`]).

use public_suffix::EffectiveTLDProvider as _;
use webauthn_rs::prelude::Url;

use crate::declare::{Fallback, group};

group! {
    /// Who the passkeys belong to: the RP ID they are bound to, and the pages allowed to
    /// run a ceremony. Both unset: passkeys are off.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct WebauthnSettings {
        pub rp_id: Option<String> {
            env: "GATEHOUSE_WEBAUTHN_RP_ID",
            default: Fallback::Value(""),
            meaning: "passkeys (WebAuthn): the relying party ID, the registrable domain users see \
                      (`example.com`), never an internal host name or address; refused if it is \
                      an IP address or a public suffix, or not every origin's host or a parent \
                      domain of it. Unset (with GATEHOUSE_WEBAUTHN_ORIGINS): no passkeys, and \
                      the passkey endpoints answer 404. Changing it orphans every registered \
                      passkey (see deploy/README.md *Passkeys*)",
            parse: |v| Ok(Some(v.trim().to_ascii_lowercase()).filter(|v| !v.is_empty())),
            check: |s| check_rp_id(s.rp_id.as_deref()),
            show: |v| v.clone().unwrap_or_default(),
        },
        pub origins: Vec<Url> {
            env: "GATEHOUSE_WEBAUTHN_ORIGINS",
            default: Fallback::Value(""),
            meaning: "comma-separated exact origins of the pages that call WebAuthn \
                      (`https://app.example.com`): `https://`, or `http://` on `localhost`, \
                      `127.0.0.1` or `[::1]` only; no path or query; set both or neither",
            parse: parse_origins,
            check: |s| check_origins(s.rp_id.as_deref(), &s.origins),
            show: |v| v.iter().map(|u| u.origin().ascii_serialization()).collect::<Vec<_>>().join(","),
        },
    }
}

impl WebauthnSettings {
    /// Passkeys are on: an RP ID and its origins are set (the checks refuse one without
    /// the other).
    pub fn enabled(&self) -> bool {
        self.rp_id.is_some() && !self.origins.is_empty()
    }
}

fn parse_origins(v: &str) -> Result<Vec<Url>, String> {
    v.split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
        .map(|o| {
            let url = Url::parse(o).map_err(|e| format!("{o:?} is not an origin: {e}"))?;
            let bare = url.username().is_empty()
                && url.password().is_none()
                && url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && !o.trim_end_matches('/').ends_with(['?', '#']);
            if !bare || url.host_str().is_none() {
                return Err(format!(
                    "{o:?} is not an origin: scheme, host and port only (no path, query or user)"
                ));
            }
            Ok(url)
        })
        .collect()
}

fn is_loopback_host(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The RP ID is a registrable domain or a name under one: not an IP address (browsers
/// refuse those), not a public suffix (`com`, `co.uk`: a passkey bound there would be
/// usable by every site under it, and browsers refuse it too). `localhost` is allowed
/// for development, with loopback origins only.
fn check_rp_id(rp_id: Option<&str>) -> Result<(), String> {
    let Some(rp_id) = rp_id else { return Ok(()) };
    if rp_id == "localhost" {
        return Ok(());
    }
    if rp_id.parse::<std::net::IpAddr>().is_ok() || rp_id.starts_with('[') {
        return Err(format!(
            "{rp_id:?} is an IP address; an RP ID is a domain name users see"
        ));
    }
    let shaped = rp_id.contains('.')
        && !rp_id.starts_with('.')
        && !rp_id.ends_with('.')
        && rp_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !shaped {
        return Err(format!(
            "{rp_id:?} is not a domain name (no scheme, port or path: `example.com`)"
        ));
    }
    if public_suffix::DEFAULT_PROVIDER
        .effective_tld_plus_one(rp_id)
        .is_err()
    {
        return Err(format!(
            "{rp_id:?} is a public suffix, not a registrable domain: use your own domain \
             (`example.com`, or a name under it)"
        ));
    }
    Ok(())
}

fn check_origins(rp_id: Option<&str>, origins: &[Url]) -> Result<(), String> {
    let Some(rp_id) = rp_id else {
        return match origins.is_empty() {
            true => Ok(()),
            false => Err("is set but GATEHOUSE_WEBAUTHN_RP_ID is not: set both, or neither".into()),
        };
    };
    if origins.is_empty() {
        return Err(format!(
            "is empty but GATEHOUSE_WEBAUTHN_RP_ID is {rp_id:?}: list the origins of the \
             pages that run passkey ceremonies (`https://{rp_id}`)"
        ));
    }
    for origin in origins {
        let shown = origin.origin().ascii_serialization();
        let host = origin.host_str().unwrap_or_default();
        match origin.scheme() {
            "https" => {}
            "http" if is_loopback_host(host) => {}
            "http" => {
                return Err(format!(
                    "{shown} is plain http on a host that is not loopback; use https://"
                ));
            }
            _ => {
                return Err(format!(
                    "{shown} must be https:// (http:// on loopback only)"
                ));
            }
        }
        let under = host == rp_id || host.ends_with(&format!(".{rp_id}"));
        if !under {
            return Err(format!(
                "{shown}: its host {host:?} is not {rp_id:?} nor a name under it, so no \
                 browser there would use passkeys bound to GATEHOUSE_WEBAUTHN_RP_ID"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(rp: &str, origins: &str) -> Result<(), String> {
        let rp = Some(rp.to_owned()).filter(|r| !r.is_empty());
        let origins = parse_origins(origins)?;
        check_rp_id(rp.as_deref())?;
        check_origins(rp.as_deref(), &origins)
    }

    #[test]
    fn registrable_domains_and_their_origins_pass() {
        check("example.com", "https://example.com").expect("apex");
        check(
            "example.com",
            "https://app.example.com, https://example.com:8443",
        )
        .expect("under");
        check("auth.example.co.uk", "https://auth.example.co.uk").expect("co.uk");
        check("localhost", "http://localhost:8080").expect("development");
        check("", "").expect("off");
    }

    #[test]
    fn unsafe_relying_parties_are_refused() {
        for (rp, origins) in [
            ("com", "https://example.com"),
            ("co.uk", "https://example.co.uk"),
            ("10.0.0.7", "https://10.0.0.7"),
            ("example.com", "https://example.org"),
            ("example.com", "https://notexample.com"),
            ("example.com", "http://app.example.com"),
            ("app.example.com", "https://example.com"),
            ("localhost", "http://127.0.0.1:8080"),
            ("example.com", "https://app.example.com/login"),
            ("example.com", ""),
            ("", "https://example.com"),
            ("https://example.com", "https://example.com"),
            ("auth-pod-7", "http://localhost"),
        ] {
            assert!(check(rp, origins).is_err(), "{rp} with {origins} passed");
        }
    }
}
