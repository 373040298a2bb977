//! Request extractors: who the client is (IP, user agent) and who the caller is (bearer).

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{FromRequest, HttpMessage as _, HttpRequest, web};

use super::error::ApiError;
use crate::config::{Cidr, ClientIpHeader, canonical};
use crate::service::caller::{self, Caller};
use crate::service::{AppState, ClientMeta, ServiceError};

/// User agents are stored per session; longer ones are cut, not refused.
const MAX_USER_AGENT: usize = 256;

pub fn state(req: &HttpRequest) -> Result<web::Data<AppState>, ApiError> {
    req.app_data::<web::Data<AppState>>()
        .cloned()
        .ok_or_else(ApiError::internal)
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
    let settings = &state.settings;
    let found = resolve_client_ip(req, &settings.trusted_proxies, settings.client_ip_header);
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

pub fn client_meta(req: &HttpRequest, state: &AppState) -> ClientMeta {
    let user_agent = req
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|ua| ua.chars().take(MAX_USER_AGENT).collect());
    ClientMeta {
        ip: client_ip(req, state).map(|ip| ip.to_string()),
        user_agent,
    }
}

impl FromRequest for ClientMeta {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(state(req).map(|s| client_meta(req, &s)))
    }
}

/// The bearer token of the `Authorization` header, if it has one of sane length.
fn bearer_token(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    Some(token.trim().to_owned())
}

/// A verified caller (`/v1/me`): 401 `invalid_token` otherwise.
pub struct Bearer(pub Caller);

impl FromRequest for Bearer {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let req = req.clone();
        Box::pin(async move {
            let state = state(&req)?;
            let presented = req.headers().contains_key(header::AUTHORIZATION);
            let Some(token) = bearer_token(&req) else {
                return Err(ApiError::invalid_token(presented));
            };
            match caller::authenticate(&state, &token).await {
                Ok(caller) => Ok(Bearer(caller)),
                Err(ServiceError::InvalidToken) => Err(ApiError::invalid_token(true)),
                Err(e) => Err(e.into()),
            }
        })
    }
}

/// A verified caller whose role, read from the database, is admin: 403 otherwise.
pub struct Admin(pub Caller);

impl FromRequest for Admin {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let bearer = Bearer::from_request(req, payload);
        Box::pin(async move {
            let Bearer(caller) = bearer.await?;
            caller.require_admin()?;
            Ok(Admin(caller))
        })
    }
}

/// A JSON request body: `Content-Type: application/json` (or `+json`), at most
/// `MAX_BODY_BYTES` (413 beyond), valid UTF-8 as RFC 8259 §8.1 requires (serde_json
/// would skip invalid bytes inside ignored fields), then deserialized.
pub struct Json<T>(pub T);

impl<T: serde::de::DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let is_json = req.mime_type().ok().flatten().is_some_and(|m| {
            m.type_() == mime::APPLICATION
                && (m.subtype() == mime::JSON || m.suffix() == Some(mime::JSON))
        });
        let body = web::Bytes::from_request(req, payload);
        let timeout = state(req).map_or(std::time::Duration::from_secs(10), |s| {
            s.settings.body_timeout
        });
        Box::pin(async move {
            if !is_json {
                return Err(ApiError::new(
                    actix_web::http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "Send the body as JSON with Content-Type: application/json.",
                ));
            }
            let Ok(read) = tokio::time::timeout(timeout, body).await else {
                return Err(ApiError::new(
                    actix_web::http::StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "The request body did not arrive in time.",
                ));
            };
            let bytes = read.map_err(|e| match e.as_error::<actix_web::error::PayloadError>() {
                Some(actix_web::error::PayloadError::Overflow) => ApiError::new(
                    actix_web::http::StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    "The body is larger than 16 KiB.",
                ),
                _ => ApiError::invalid_json("The body could not be read."),
            })?;
            if std::str::from_utf8(&bytes).is_err() {
                return Err(ApiError::invalid_json("The body is not valid UTF-8."));
            }
            // serde would also take an array for a struct, its fields in order; the
            // contract's bodies are objects, and only objects.
            let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
            if first.is_some_and(|b| *b != b'{') {
                return Err(ApiError::invalid_json("The body must be a JSON object."));
            }
            match serde_json::from_slice::<T>(&bytes) {
                Ok(value) => Ok(Json(value)),
                Err(e) if e.is_data() => Err(ApiError::invalid_json(format!(
                    "A field has the wrong type: {}",
                    without_type_names(&e.to_string())
                ))),
                Err(_) => Err(ApiError::invalid_json("The body is not valid JSON.")),
            }
        })
    }
}

/// A path segment that must be a UUID; anything else names nothing, so 404.
pub fn path_id<T: std::str::FromStr>(raw: &str) -> Result<T, ApiError> {
    raw.parse().map_err(|_| ApiError::not_found())
}

/// serde names our Rust types in its messages ("expected struct SignupRequest"); a
/// client needs to know only that an object was expected.
fn without_type_names(message: &str) -> String {
    const MARK: &str = "expected struct ";
    match message.find(MARK) {
        Some(at) => {
            let rest = &message[at + MARK.len()..];
            let name_end = rest.find(|c: char| !c.is_alphanumeric() && c != '_');
            let after = name_end.map_or("", |end| &rest[end..]);
            format!("{}expected a JSON object{after}", &message[..at])
        }
        None => message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
}
