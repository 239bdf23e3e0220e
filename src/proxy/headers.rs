//! Header rules for forwarding: what is hop-by-hop (RFC 9110 §7.6.1) and
//! never crosses usher, and the forwarding headers usher adds.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

use crate::net::{canonical, is_trusted};

/// How many fields [`HOP_BY_HOP`] names.
const HOP_BY_HOP_LEN: usize = 6;
/// Hop-by-hop fields of RFC 9110 §7.6.1 (plus `Proxy-Connection`, which
/// old clients still send). `Trailer` is end-to-end and stays.
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_LEN] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `X-Forwarded-For`
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`
pub static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`
pub static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The items of a comma-separated list field (`Connection`, `TE`,
/// `If-None-Match`, ...) over all its lines, trimmed; lines that are not
/// text are skipped.
pub fn list_items<'h>(
    headers: &'h HeaderMap,
    name: HeaderName,
) -> impl Iterator<Item = &'h str> + 'h {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// Removes hop-by-hop fields and every field named in `Connection`.
/// With `keep_upgrade`, `Connection: upgrade` and `Upgrade` survive (for a
/// tunnelled upgrade, which must reach the origin to be agreed).
/// Returns whether the client asked for trailers (`TE: trailers`).
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) -> bool {
    // Which of them are here, in one pass over the fields without hashing:
    // most requests carry none, and most responses only `Connection`.
    let mut present = [false; HOP_BY_HOP_LEN];
    for k in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == k) {
            present[i] = true;
        }
    }
    if !present.contains(&true) {
        return false;
    }
    // Fields named in `Connection` go too, removed in the order named
    // (the order of removals decides the order of what stays). By name as
    // text: no name is made, so nothing is allocated for them.
    let connection: Vec<HeaderValue> = headers
        .get_all(header::CONNECTION)
        .iter()
        .cloned()
        .collect();
    let trailers = list_items(headers, header::TE).any(|t| {
        t.split(';')
            .next()
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
    });
    let upgrade = keep_upgrade
        .then(|| headers.get(header::UPGRADE).cloned())
        .flatten();
    // Only fields that are here are removed (removing an absent one is a
    // lookup for nothing, and changes no order); `keep-alive`, the usual
    // token, is one of them.
    for t in connection
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let t = t.trim();
        let absent_hop = HOP_BY_HOP
            .iter()
            .zip(present)
            .any(|(h, here)| !here && t.eq_ignore_ascii_case(h.as_str()));
        if !absent_hop {
            headers.remove(t);
        }
    }
    for (name, here) in HOP_BY_HOP.iter().zip(present) {
        if here {
            headers.remove(name);
        }
    }
    if let Some(u) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
    trailers
}

/// Joins the `Cookie` fields of an HTTP/2 request into one, as RFC 9113
/// §8.2.3 requires before it goes out over HTTP/1.1: browsers send each
/// cookie as its own field in HTTP/2, and many HTTP/1 servers read only one.
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut values = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (values.next(), values.next()) else {
        return;
    };
    let mut joined = first.as_bytes().to_vec();
    for v in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// The visitor's address: the socket peer, or, when the peer is a trusted
/// proxy, the first address in `X-Forwarded-For` (from the right) that is
/// not itself a trusted proxy. A malformed entry stops the walk: what lies
/// beyond it cannot be believed.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical(peer);
    if trusted.is_empty() || !is_trusted(peer, trusted) {
        return peer;
    }
    let mut client = peer;
    let hops = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .rev()
        .flat_map(|v| v.to_str().unwrap_or("").rsplit(','));
    for hop in hops {
        match hop.trim().parse::<IpAddr>() {
            Ok(ip) => {
                client = canonical(ip);
                if !is_trusted(client, trusted) {
                    return client;
                }
            }
            Err(_) => return client,
        }
    }
    client
}

/// What usher knows about the hop it received the request on.
pub struct Hop<'a> {
    /// The socket peer.
    pub peer: IpAddr,
    /// Whether the peer is a trusted proxy.
    pub trusted: bool,
    /// `"http"` or `"https"`, as the client reached usher.
    pub proto: &'static str,
    /// The host the client asked for (`Host` or `:authority`).
    pub host: Option<&'a HeaderValue>,
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` (RFC 7239).
/// From an untrusted peer, any such headers it sent are replaced, so a
/// client cannot choose the address the origin sees. From a trusted proxy
/// the chain is kept and extended.
///
/// Every request passes here: each value is written once into a buffer of
/// its exact size (one allocation per value, no intermediate strings).
pub fn set_forwarding(headers: &mut HeaderMap, hop: &Hop<'_>) {
    let peer = canonical(hop.peer);
    // Room for the four fields at once: one growth of the map, not two.
    headers.reserve(4);
    let ip = IpText::of(peer);
    let peer_text = ip.as_bytes();
    if hop.trusted {
        append_list(headers, &X_FORWARDED_FOR, peer_text);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(
                X_FORWARDED_PROTO.clone(),
                HeaderValue::from_static(hop.proto),
            );
        }
        if !headers.contains_key(&X_FORWARDED_HOST) {
            if let Some(h) = hop.host {
                headers.insert(X_FORWARDED_HOST.clone(), h.clone());
            }
        }
    } else {
        headers.remove(header::FORWARDED);
        if let Some(v) = joined(&[peer_text]) {
            headers.insert(X_FORWARDED_FOR.clone(), v);
        }
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(hop.proto),
        );
        match hop.host {
            Some(h) => headers.insert(X_FORWARDED_HOST.clone(), h.clone()),
            None => headers.remove(&X_FORWARDED_HOST),
        };
    }
    let element = forwarded_element(peer, peer_text, hop.proto, hop.host.map(|h| h.as_bytes()));
    if hop.trusted {
        let mut e = Vec::with_capacity(64);
        for p in element {
            e.extend_from_slice(p);
        }
        append_list(headers, &header::FORWARDED, &e);
    } else if let Some(v) = joined(&element) {
        headers.insert(header::FORWARDED, v);
    }
}

/// This hop's `Forwarded` element (RFC 7239 §4) in parts:
/// `for=...;proto=...[;host="..."]`, the host only when it is plain
/// (letters, digits, `-.:[]`), so it needs no escaping.
fn forwarded_element<'a>(
    peer: IpAddr,
    peer_text: &'a [u8],
    proto: &'a str,
    host: Option<&'a [u8]>,
) -> [&'a [u8]; 9] {
    let (open, close): (&[u8], &[u8]) = match peer {
        IpAddr::V4(_) => (b"", b""),
        IpAddr::V6(_) => (b"\"[", b"]\""),
    };
    let host = host.filter(|h| {
        h.iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
    });
    let (host_open, host, host_close): (&[u8], &[u8], &[u8]) = match host {
        Some(h) => (b";host=\"", h, b"\""),
        None => (b"", b"", b""),
    };
    [
        b"for=",
        open,
        peer_text,
        close,
        b";proto=",
        proto.as_bytes(),
        host_open,
        host,
        host_close,
    ]
}

/// The forwarding fields of a hop from an untrusted peer as head lines,
/// for the relay (`server::relay`), which writes heads as bytes: the values
/// [`set_forwarding`] sets, the client's own such fields having been
/// dropped. `host` is the client's `Host`.
pub fn write_untrusted_forwarding(
    out: &mut Vec<u8>,
    peer: IpAddr,
    proto: &'static str,
    host: Option<&[u8]>,
) {
    let peer = canonical(peer);
    let ip = IpText::of(peer);
    let peer_text = ip.as_bytes();
    let mut line = |name: &[u8], parts: &[&[u8]]| {
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        for p in parts {
            out.extend_from_slice(p);
        }
        out.extend_from_slice(b"\r\n");
    };
    line(b"x-forwarded-for", &[peer_text]);
    line(b"x-forwarded-proto", &[proto.as_bytes()]);
    if let Some(h) = host {
        line(b"x-forwarded-host", &[h]);
    }
    line(
        b"forwarded",
        &forwarded_element(peer, peer_text, proto, host),
    );
}

/// The text of an IP address, written without allocating.
struct IpText {
    buf: [u8; 48],
    len: usize,
}

impl Default for IpText {
    fn default() -> Self {
        IpText {
            buf: [0; 48],
            len: 0,
        }
    }
}

impl IpText {
    /// `ip` as `Display` writes it. IPv4, nearly every visitor, is written
    /// digit by digit: `core::fmt` cost about a thousand instructions a
    /// request here.
    fn of(ip: IpAddr) -> Self {
        let mut text = IpText::default();
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(_) => {
                // At most 45 characters: always fits.
                let _ = write!(text, "{ip}");
            }
        }
        text
    }

    fn push(&mut self, b: u8) {
        self.buf[self.len] = b;
        self.len += 1;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        self.buf
            .get_mut(self.len..end)
            .ok_or(std::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// One header value from `parts`, in a buffer of exactly their length.
fn joined(parts: &[&[u8]]) -> Option<HeaderValue> {
    let len = parts.iter().map(|p| p.len()).sum();
    let mut v = Vec::with_capacity(len);
    for p in parts {
        v.extend_from_slice(p);
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(v)).ok()
}

/// Appends `item` to a comma-separated list header, folding repeated
/// fields into one (as RFC 9110 §5.3 allows for list-based fields).
fn append_list(headers: &mut HeaderMap, name: &HeaderName, item: &[u8]) {
    let mut joined = Vec::new();
    for v in headers.get_all(name) {
        if let Ok(s) = v.to_str() {
            if !joined.is_empty() {
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(s.as_bytes());
        }
    }
    if !joined.is_empty() {
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(item);
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(name.clone(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn hop_by_hop_and_connection_named_fields_go() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret"),
            ("connection", "foo"),
            ("keep-alive", "timeout=5"),
            ("x-secret", "1"),
            ("foo", "2"),
            ("te", "trailers, deflate"),
            ("trailer", "x-checksum"),
            ("proxy-connection", "keep-alive"),
            ("upgrade", "websocket"),
            ("x-kept", "3"),
        ]);
        assert!(remove_hop_by_hop(&mut h, false));
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["trailer", "x-kept"]);
    }

    /// What `remove_hop_by_hop` did before it skipped absent fields: every
    /// name removed whether there or not.
    fn remove_all_named(headers: &mut HeaderMap) {
        let connection: Vec<HeaderValue> = headers
            .get_all(header::CONNECTION)
            .iter()
            .cloned()
            .collect();
        for t in connection
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            headers.remove(t.trim());
        }
        for name in &HOP_BY_HOP {
            headers.remove(name);
        }
    }

    #[test]
    fn skipping_absent_fields_leaves_what_removing_all_left_in_its_order() {
        let cases: [&[(&str, &str)]; 6] = [
            &[
                ("server", "nginx"),
                ("date", "x"),
                ("content-type", "text/html"),
                ("content-length", "2"),
                ("connection", "keep-alive"),
                ("etag", "\"1\""),
                ("accept-ranges", "bytes"),
            ],
            &[
                ("a", "1"),
                ("connection", "Keep-Alive, TE, b"),
                ("b", "2"),
                ("te", "trailers"),
                ("c", "3"),
                ("keep-alive", "timeout=5"),
                ("d", "4"),
            ],
            &[
                ("connection", "close, , upgrade"),
                ("x", "1"),
                ("upgrade", "h2c"),
                ("y", "2"),
                ("transfer-encoding", "chunked"),
                ("z", "3"),
            ],
            &[
                ("proxy-connection", "keep-alive"),
                ("a", "1"),
                ("b", "2"),
                ("connection", "a"),
                ("c", "3"),
            ],
            &[("keep-alive", "1"), ("a", "1"), ("b", "2"), ("c", "3")],
            &[("a", "1"), ("connection", "A, B"), ("b", "2"), ("c", "3")],
        ];
        for pairs in cases {
            let mut ours = map(pairs);
            let mut reference = map(pairs);
            remove_hop_by_hop(&mut ours, false);
            remove_all_named(&mut reference);
            let ours: Vec<_> = ours.iter().collect();
            let reference: Vec<_> = reference.iter().collect();
            assert_eq!(ours, reference, "{pairs:?}");
        }
    }

    #[test]
    fn an_address_is_written_as_display_writes_it() {
        let mut v4 = vec![[0, 0, 0, 0], [255, 255, 255, 255], [127, 0, 0, 1]];
        for n in 0..=255u8 {
            v4.push([n, 9, 10, n]);
            v4.push([99, n, 100, 200]);
        }
        let v6 = [
            "::1",
            "2001:db8::7",
            "fe80::1:2:3:4",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ];
        let ips = v4
            .into_iter()
            .map(IpAddr::from)
            .chain(v6.iter().map(|s| s.parse().unwrap()));
        for ip in ips {
            assert_eq!(IpText::of(ip).as_bytes(), ip.to_string().as_bytes());
        }
    }

    #[test]
    fn cookie_fields_are_joined() {
        let mut h = map(&[("cookie", "a=1"), ("x", "1"), ("cookie", "b=2; c=3")]);
        join_cookies(&mut h);
        assert_eq!(
            h.get_all("cookie").iter().collect::<Vec<_>>(),
            ["a=1; b=2; c=3"]
        );
        let mut one = map(&[("cookie", "a=1")]);
        join_cookies(&mut one);
        assert_eq!(one["cookie"], "a=1");
    }

    #[test]
    fn upgrade_survives_when_asked() {
        let mut h = map(&[
            ("connection", "Upgrade"),
            ("upgrade", "websocket"),
            ("keep-alive", "1"),
        ]);
        assert!(!remove_hop_by_hop(&mut h, true));
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
        assert!(!h.contains_key("keep-alive"));
    }

    #[test]
    fn untrusted_peer_cannot_spoof() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = map(&[
            ("x-forwarded-for", "1.2.3.4"),
            ("forwarded", "for=1.2.3.4"),
            ("x-forwarded-proto", "https"),
        ]);
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(client_ip(peer, &h, &trusted), peer);
        let host = HeaderValue::from_static("cinema.example");
        set_forwarding(
            &mut h,
            &Hop {
                peer,
                trusted: false,
                proto: "http",
                host: Some(&host),
            },
        );
        assert_eq!(h["x-forwarded-for"], "192.0.2.7");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "cinema.example");
        assert_eq!(
            h["forwarded"],
            "for=192.0.2.7;proto=http;host=\"cinema.example\""
        );
    }

    #[test]
    fn trusted_proxy_chain_is_kept_and_walked() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = map(&[
            ("x-forwarded-for", "203.0.113.9, 10.1.1.1"),
            ("x-forwarded-proto", "https"),
        ]);
        let peer: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        set_forwarding(
            &mut h,
            &Hop {
                peer,
                trusted: true,
                proto: "http",
                host: None,
            },
        );
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 10.1.1.1, 10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
        // garbage in the chain stops the walk at the last good hop
        let h = map(&[("x-forwarded-for", "203.0.113.9, nonsense, 10.1.1.1")]);
        assert_eq!(
            client_ip(peer, &h, &trusted),
            "10.1.1.1".parse::<IpAddr>().unwrap()
        );
        // mapped IPv6 peers match IPv4 ranges
        let mapped: IpAddr = "::ffff:10.0.0.2".parse().unwrap();
        assert!(is_trusted(mapped, &trusted));
    }
}
