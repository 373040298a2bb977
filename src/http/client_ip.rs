//! Who the client is: the address a request came from, read through trusted proxies,
//! and the bucket rate limits and lockout count it under.

use std::net::{IpAddr, Ipv6Addr};

use actix_web::{HttpMessage as _, HttpRequest, web};

use super::settings::HttpSettings;
use crate::service::AppState;

/// Where trusted proxies put the client's address. Only this header is read: a proxy
/// that writes `Forwarded` may pass a client's own `X-Forwarded-For` through untouched,
/// and reading that one would let the client choose its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientIpHeader {
    XForwardedFor,
    /// RFC 7239 `Forwarded: for=…`.
    Forwarded,
}

impl ClientIpHeader {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Some(Self::XForwardedFor),
            "forwarded" => Some(Self::Forwarded),
            _ => None,
        }
    }

    /// The header's name, as configured and as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::XForwardedFor => "x-forwarded-for",
            Self::Forwarded => "forwarded",
        }
    }
}

/// An IP network in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a.parse::<IpAddr>().ok()?, p.parse::<u8>().ok()?),
            None => {
                let a = s.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) count as the IPv4 address they carry.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The address rate limits and lockout count a client under. An IPv6 subscriber is
/// handed at least a /64 (RFC 6177; SLAAC picks addresses inside it at will), so one
/// client holds 2^64 full addresses: counting each alone would give it as many budgets.
pub fn client_bucket(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        v4 => v4,
    }
}

/// The client's address as this request's limits and records see it, worked out once
/// per request (the rate limiter and the handler both ask) so that a malformed header
/// is counted once.
pub fn client_ip(req: &HttpRequest, state: &AppState) -> Option<IpAddr> {
    #[derive(Clone, Copy)]
    struct Resolved(Option<IpAddr>);
    let cached = req.extensions().get::<Resolved>().copied();
    if let Some(Resolved(ip)) = cached {
        return ip;
    }
    // Without the HTTP settings no proxy is trusted: the TCP peer is the client.
    let found = match req.app_data::<web::Data<HttpSettings>>() {
        Some(http) => resolve_client_ip(req, &http.trusted_proxies, http.client_ip_header),
        None => resolve_client_ip(req, &[], ClientIpHeader::XForwardedFor),
    };
    if found.is_some_and(|f| f.malformed) {
        state.metrics.client_ip_header_malformed();
    }
    let ip = found.map(|f| f.ip);
    req.extensions_mut().insert(Resolved(ip));
    ip
}

/// What [`resolve_client_ip`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct ClientAddr {
    pub ip: IpAddr,
    /// The trusted proxy's header had a hop that is not an address where the client's
    /// should be: `ip` is then the proxy's own address.
    pub malformed: bool,
}

/// The client's address: the TCP peer, unless the peer is a trusted proxy; then the
/// right-most hop of the configured header that is not itself a trusted proxy. Hops to
/// its left were written by the client and prove nothing, so they are never parsed.
/// Only the configured header is read: the other one may be the client's own.
fn resolve_client_ip(
    req: &HttpRequest,
    trusted: &[Cidr],
    source: ClientIpHeader,
) -> Option<ClientAddr> {
    let peer = canonical(req.peer_addr()?.ip());
    let is_trusted = |ip: IpAddr| trusted.iter().any(|c| c.contains(ip));
    if !is_trusted(peer) {
        return Some(ClientAddr {
            ip: peer,
            malformed: false,
        });
    }
    // Repeated header lines form one list, in order (RFC 9110 §5.3). Splitting on every
    // comma, even inside a quoted `Forwarded` value, is deliberate: a quote-aware parser
    // would let a client's unclosed quote swallow the element the proxy appended.
    // Bytes, not text: a client's non-ASCII hop must not spoil the proxy's.
    let elements: Vec<&[u8]> = req
        .headers()
        .get_all(source.as_str())
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .filter(|e| !e.trim_ascii().is_empty())
        .collect();
    let mut client = peer;
    for element in elements.into_iter().rev() {
        let hop = std::str::from_utf8(element)
            .ok()
            .and_then(|e| match source {
                ClientIpHeader::XForwardedFor => parse_hop(e),
                ClientIpHeader::Forwarded => forwarded_for(e),
            });
        let Some(hop) = hop else {
            return Some(ClientAddr {
                ip: peer,
                malformed: true,
            });
        };
        client = hop;
        if !is_trusted(hop) {
            break;
        }
    }
    Some(ClientAddr {
        ip: client,
        malformed: false,
    })
}

/// The address in the `for` parameter of one `Forwarded` element (RFC 7239 §4). `unknown`
/// and obfuscated identifiers (§6) name no address, so they count as unreadable.
fn forwarded_for(element: &str) -> Option<IpAddr> {
    let value = element.split(';').find_map(|pair| {
        let (k, v) = pair.trim().split_once('=')?;
        k.trim().eq_ignore_ascii_case("for").then_some(v)
    })?;
    parse_hop(value)
}

/// An address as proxies write it: bare, `"…"`-quoted, `[v6]`, `[v6]:port` or `v4:port`.
fn parse_hop(raw: &str) -> Option<IpAddr> {
    let s = raw.trim();
    let s = s
        .strip_prefix('"')
        .and_then(|q| q.strip_suffix('"'))
        .unwrap_or(s);
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    let (host, port) = match s.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']')?;
            (
                host,
                after.strip_prefix(':').or(after.is_empty().then_some(""))?,
            )
        }
        None => {
            let (host, port) = s.split_once(':')?;
            host.parse::<std::net::Ipv4Addr>().ok()?;
            (host, port)
        }
    };
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    host.parse::<IpAddr>().ok().map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header;
    use actix_web::test::TestRequest;

    const XFF: ClientIpHeader = ClientIpHeader::XForwardedFor;
    const FWD: ClientIpHeader = ClientIpHeader::Forwarded;

    fn req(peer: &str, headers: &[(&str, &[u8])]) -> HttpRequest {
        let mut r = TestRequest::default().peer_addr(peer.parse().expect("addr"));
        for (name, value) in headers {
            let value = header::HeaderValue::from_bytes(value).expect("header value");
            r = r.append_header((*name, value));
        }
        r.to_http_request()
    }

    fn proxies() -> [Cidr; 1] {
        [Cidr::parse("10.0.0.0/8").expect("cidr")]
    }

    /// The address found and whether it was a fallback on a malformed header.
    fn found(r: &HttpRequest, source: ClientIpHeader) -> (String, bool) {
        let f = resolve_client_ip(r, &proxies(), source).expect("a peer");
        (f.ip.to_string(), f.malformed)
    }

    fn ok(ip: &str) -> (String, bool) {
        (ip.to_owned(), false)
    }

    fn malformed() -> (String, bool) {
        ("10.0.0.5".to_owned(), true)
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let r = req(
            "203.0.113.9:5000",
            &[
                ("x-forwarded-for", b"198.51.100.1"),
                ("forwarded", b"for=198.51.100.1"),
            ],
        );
        assert_eq!(found(&r, XFF), ok("203.0.113.9"));
        assert_eq!(found(&r, FWD), ok("203.0.113.9"));
    }

    #[test]
    fn x_forwarded_for_gives_the_right_most_untrusted_hop() {
        let r = req(
            "10.0.0.5:5000",
            &[("x-forwarded-for", b"1.2.3.4, 198.51.100.7")],
        );
        assert_eq!(found(&r, XFF), ok("198.51.100.7"));
        let r = req(
            "10.0.0.5:5000",
            &[("x-forwarded-for", b"198.51.100.7, 10.0.0.9")],
        );
        assert_eq!(found(&r, XFF), ok("198.51.100.7"));
        // Repeated lines are one list; empty elements are allowed (RFC 9110 §5.6.1).
        let r = req(
            "10.0.0.5:5000",
            &[
                ("x-forwarded-for", b"1.2.3.4"),
                ("x-forwarded-for", b"198.51.100.7:443, ,"),
            ],
        );
        assert_eq!(found(&r, XFF), ok("198.51.100.7"));
        let r = req(
            "10.0.0.5:5000",
            &[("x-forwarded-for", b"::ffff:198.51.100.7")],
        );
        assert_eq!(found(&r, XFF), ok("198.51.100.7"));
        // No header: the proxy itself (a health check, say).
        let r = req("10.0.0.5:5000", &[]);
        assert_eq!(found(&r, XFF), ok("10.0.0.5"));
    }

    #[test]
    fn forwarded_gives_the_right_most_untrusted_for() {
        let r = req(
            "10.0.0.5:5000",
            &[(
                "forwarded",
                br#"for=1.1.1.1, for="[2001:db8::7]:443";proto=https"#,
            )],
        );
        assert_eq!(found(&r, FWD), ok("2001:db8::7"));
        let r = req(
            "10.0.0.5:5000",
            &[("forwarded", b"for=198.51.100.7;proto=https, For=10.0.0.9")],
        );
        assert_eq!(found(&r, FWD), ok("198.51.100.7"));
    }

    #[test]
    fn only_the_configured_header_is_read() {
        // The proxy writes Forwarded and passes the client's X-Forwarded-For through.
        let r = req(
            "10.0.0.5:5000",
            &[
                ("x-forwarded-for", b"192.0.2.66"),
                ("forwarded", b"for=198.51.100.7"),
            ],
        );
        assert_eq!(found(&r, FWD), ok("198.51.100.7"));
        assert_eq!(found(&r, XFF), ok("192.0.2.66"));
        let r = req("10.0.0.5:5000", &[("x-forwarded-for", b"192.0.2.66")]);
        assert_eq!(found(&r, FWD), ok("10.0.0.5"));
        let r = req("10.0.0.5:5000", &[("forwarded", b"for=192.0.2.66")]);
        assert_eq!(found(&r, XFF), ok("10.0.0.5"));
    }

    #[test]
    fn an_unreadable_hop_where_the_client_should_be_falls_back_to_the_peer() {
        for value in [
            &b"198.51.100.7, garbage"[..],
            b"198.51.100.7, 1.2.3.4:http",
            b"198.51.100.7, [2001:db8::1",
            b"198.51.100.7, unknown",
            b"198.51.100.7, 1.2.3.4.5",
            b"198.51.100.7, caf\xc3\xa9",
            // Behind a trusted hop, too.
            b"garbage, 10.0.0.9",
        ] {
            let r = req("10.0.0.5:5000", &[("x-forwarded-for", value)]);
            assert_eq!(found(&r, XFF), malformed(), "{value:?}");
        }
        for value in [
            &b"for=198.51.100.7, for=unknown"[..],
            b"for=198.51.100.7, for=_hidden",
            b"for=198.51.100.7, proto=https",
            b"for=198.51.100.7, for=",
            b"198.51.100.7",
        ] {
            let r = req("10.0.0.5:5000", &[("forwarded", value)]);
            assert_eq!(found(&r, FWD), malformed(), "{value:?}");
        }
    }

    #[test]
    fn what_the_client_wrote_left_of_its_hop_is_never_read() {
        let r = req(
            "10.0.0.5:5000",
            &[("x-forwarded-for", b"\xff\xfe garbage, [nope, 198.51.100.7")],
        );
        assert_eq!(found(&r, XFF), ok("198.51.100.7"));
        // An unclosed quote cannot swallow the proxy's element.
        let r = req(
            "10.0.0.5:5000",
            &[("forwarded", br#"for="1.1.1.1, for=198.51.100.7"#)],
        );
        assert_eq!(found(&r, FWD), ok("198.51.100.7"));
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(
            client_bucket(ip("2001:db8:1:2:aaaa:bbbb:cccc:dddd")),
            ip("2001:db8:1:2::")
        );
        assert_ne!(
            client_bucket(ip("2001:db8:1:2::1")),
            client_bucket(ip("2001:db8:1:3::1"))
        );
        assert_eq!(client_bucket(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_bucket(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
    }

    #[test]
    fn cidr_matching() {
        let net = Cidr::parse("10.1.0.0/16").expect("cidr");
        assert!(net.contains("10.1.2.3".parse().expect("ip")));
        assert!(!net.contains("10.2.0.1".parse().expect("ip")));
        assert!(net.contains("::ffff:10.1.9.9".parse().expect("ip")));
        let all = Cidr::parse("0.0.0.0/0").expect("cidr");
        assert!(all.contains("192.0.2.1".parse().expect("ip")));
        let v6 = Cidr::parse("2001:db8::/32").expect("cidr");
        assert!(v6.contains("2001:db8::1".parse().expect("ip")));
    }
}
