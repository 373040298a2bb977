//! What the HTTP layer reads, declared here (see [`crate::declare`]): `config` only
//! assembles these groups, so nothing in `http` depends on it.

use std::time::Duration;

use super::client_ip::{Cidr, ClientIpHeader};
use crate::declare::{self, Fallback, group};

group! {
    /// The HTTP surface: browsers, caches, proxies in front, and the console.
    #[derive(Clone, Debug)]
    pub struct HttpSettings {
        pub cors_origins: Vec<String> {
            env: "GATEHOUSE_CORS_ORIGINS",
            default: Fallback::Value(""),
            meaning: "comma-separated origins allowed to call from browsers; wildcards are \
                      refused",
            parse: |v| {
                Ok(v.split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_owned())
                    .filter(|o| !o.is_empty())
                    .collect())
            },
            check: |s| {
                for origin in &s.cors_origins {
                    if origin.contains('*') {
                        return Err("wildcards are refused: list every allowed origin \
                                    (https://app.example.com)"
                            .into());
                    }
                    declare::validate_url(origin)?;
                    if origin.matches('/').count() > 2 {
                        return Err(format!("{origin:?} is not an origin: no path allowed"));
                    }
                }
                Ok(())
            },
            show: |v| v.join(","),
        },
        pub jwks_max_age: Duration {
            env: "GATEHOUSE_JWKS_MAX_AGE",
            default: Fallback::Value("300"),
            meaning: "`Cache-Control: max-age` of the JWKS",
            parse: declare::duration,
            check: |s| {
                if s.jwks_max_age > Duration::from_secs(86400) {
                    return Err("must be at most 1 day".into());
                }
                Ok(())
            },
            show: declare::secs,
        },
        /// Proxies whose hop in `client_ip_header` is believed.
        pub trusted_proxies: Vec<Cidr> {
            env: "GATEHOUSE_TRUSTED_PROXIES",
            default: Fallback::Value(""),
            meaning: "CIDRs of proxies whose hop in `GATEHOUSE_CLIENT_IP_HEADER` is believed; \
                      `config check` warns when a whole private range or `0.0.0.0/0`/`::/0` \
                      is listed",
            parse: |v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(|c| Cidr::parse(c).ok_or_else(|| format!("{c:?} is not an IP or CIDR")))
                    .collect()
            },
            show: |v| {
                v.iter()
                    .map(|c| format!("{}/{}", c.addr, c.prefix))
                    .collect::<Vec<_>>()
                    .join(",")
            },
        },
        /// The one header the trusted proxies write the client's address in.
        pub client_ip_header: ClientIpHeader {
            env: "GATEHOUSE_CLIENT_IP_HEADER",
            default: Fallback::Value("x-forwarded-for"),
            meaning: "`x-forwarded-for` or `forwarded` (RFC 7239): the one header the trusted \
                      proxies write the client's address in; the other is never read",
            parse: |v| {
                ClientIpHeader::parse(v)
                    .ok_or_else(|| format!("{v:?} is not `x-forwarded-for` or `forwarded`"))
            },
            show: |v| v.as_str().into(),
        },
        /// Send `Strict-Transport-Security` (only when clients reach us over TLS).
        pub hsts: bool {
            env: "GATEHOUSE_HSTS",
            default: Fallback::Value("off"),
            meaning: "send `Strict-Transport-Security` (set when clients reach gatehouse over \
                      TLS)",
            parse: declare::switch,
            show: declare::on_off,
        },
        /// A request body must arrive within this time (slow-body clients get 408).
        pub body_timeout: Duration {
            env: "GATEHOUSE_BODY_TIMEOUT",
            default: Fallback::Value("10"),
            meaning: "a request body must arrive within this time, else 408",
            parse: declare::duration,
            check: |s| {
                if s.body_timeout < Duration::from_secs(1)
                    || s.body_timeout > Duration::from_secs(120)
                {
                    return Err("must be between 1 second and 2 minutes".into());
                }
                Ok(())
            },
            show: declare::secs,
        },
        /// Serve the admin console at `/admin/`.
        pub admin_console: bool {
            env: "GATEHOUSE_ADMIN_CONSOLE",
            default: Fallback::Value("on"),
            meaning: "serve the admin console at `/admin/` (`off`: 404, the API alone)",
            parse: declare::switch,
            show: declare::on_off,
        },
    }
}
