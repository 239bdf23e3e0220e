//! Reading usher's cookies from `Cookie` headers, removing them before the
//! request goes to the origin, and building `Set-Cookie` values.
//!
//! Parsing follows RFC 6265 §4.2 (`name=value` pairs separated by `;`) but is
//! tolerant: spaces and tabs around names and values are ignored, pairs without
//! `=` are skipped, and a value in double quotes is returned without them.
//! HTTP/2 clients may split cookies over several `Cookie` headers (RFC 9113
//! §8.2.3); all of them are read, in order.

use http::header::{HeaderMap, HeaderValue, COOKIE};

/// Most `Cookie` headers, and most pairs in total, looked at per request.
/// Browsers keep at most ~180 cookies per site; this only bounds the work a
/// hostile request can cause (hyper already bounds the header bytes).
pub const MAX_COOKIE_PAIRS: usize = 512;

/// Every `(name, value)` pair in the request's `Cookie` headers, in order,
/// at most [`MAX_COOKIE_PAIRS`]. Headers that are not UTF-8 are skipped.
pub fn cookies(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .take(MAX_COOKIE_PAIRS)
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .flat_map(|s| s.split(';'))
        .take(MAX_COOKIE_PAIRS)
        .filter_map(parse_pair)
}

/// The value of the first cookie called `name` (case-sensitive), if any.
/// `name=` gives `Some("")`. For several names, [`get_cookies`] walks once.
pub fn get_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let [value] = get_cookies(headers, [name]);
    value
}

/// The value of the first cookie called each of `names`, in one walk over
/// the `Cookie` headers (a poll asks for three: pass, ticket and language,
/// and each walk cost some 700 instructions, most of them finding and
/// checking the headers).
///
/// What [`cookies`] reads, searched without trimming and unquoting every
/// pair on the way: only a piece whose name matches is read whole (the
/// pair-by-pair search took some 870 instructions a name). The walk is
/// written out rather than shared with [`cookies`] as an iterator: that
/// cost a new visitor 250 instructions more (callgrind), and a test holds
/// the two to the same answers.
pub fn get_cookies<'a, const N: usize>(
    headers: &'a HeaderMap,
    names: [&str; N],
) -> [Option<&'a str>; N] {
    get_cookies_in(headers.get_all(COOKIE).iter().map(|v| v.as_bytes()), names)
}

/// [`get_cookies`] over the values of `Cookie` fields as they were read
/// (the relay's, from a head's raw lines).
pub fn get_cookies_in<'a, const N: usize>(
    values: impl Iterator<Item = &'a [u8]>,
    names: [&str; N],
) -> [Option<&'a str>; N] {
    let mut found = [None; N];
    let mut left = N;
    let mut pieces = 0;
    for value in values.take(MAX_COOKIE_PAIRS) {
        let Ok(text) = std::str::from_utf8(value) else {
            continue;
        };
        for piece in text.split(';') {
            if pieces == MAX_COOKIE_PAIRS || left == 0 {
                return found;
            }
            pieces += 1;
            let Some(eq) = memchr::memchr(b'=', piece.as_bytes()) else {
                continue;
            };
            let name = trim_ows_bytes(&piece.as_bytes()[..eq]);
            for (at, wanted) in names.iter().enumerate() {
                if found[at].is_none() && name == wanted.as_bytes() {
                    if let Some((_, v)) = parse_pair(piece) {
                        found[at] = Some(v);
                        left -= 1;
                    }
                }
            }
        }
    }
    found
}

fn parse_pair(piece: &str) -> Option<(&str, &str)> {
    let (name, value) = piece.split_once('=')?;
    let name = name.trim_matches(is_ows);
    if name.is_empty() {
        return None;
    }
    let value = value.trim_matches(is_ows);
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    Some((name, value))
}

fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

fn trim_ows_bytes(mut b: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = b {
        b = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = b {
        b = rest;
    }
    b
}

fn is_named(piece: &[u8], names: &[&str]) -> bool {
    let Some(eq) = piece.iter().position(|&b| b == b'=') else {
        return false;
    };
    let name = trim_ows_bytes(&piece[..eq]);
    names.iter().any(|n| n.as_bytes() == name)
}

/// Removes the cookies called any of `names` (usher's own) from the request
/// before it is forwarded, so the origin never sees tickets or passes.
///
/// Other pairs are kept byte-for-byte and in order, joined with `"; "`. When
/// there are several `Cookie` headers they are joined into one (RFC 9113
/// §8.2.3 requires that before a request leaves HTTP/2, and an HTTP/1.1
/// origin must not receive several). The header is removed if nothing is
/// left. Works on bytes, so usher cookies are stripped even from headers
/// [`get_cookie`] ignores as non-UTF-8. A lone header without any of `names`
/// is left untouched (no allocation).
pub fn strip_cookies(headers: &mut HeaderMap, names: &[&str]) {
    let values = || headers.get_all(COOKIE).into_iter().map(|v| v.as_bytes());
    let Some(joined) = stripped(values, names) else {
        return;
    };
    headers.remove(COOKIE);
    // The pieces come from valid header values and "; " is valid, so this
    // cannot fail; if it ever did, dropping the header fails closed.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        if !joined.is_empty() {
            headers.insert(COOKIE, value);
        }
    }
}

/// What [`strip_cookies`] makes of the values of a request's `Cookie`
/// fields (`values` walks them, and is called twice): `None` to leave them
/// as they are (no field, or one without any of `names`), else the one
/// value that replaces them all (empty: none).
pub fn stripped<'v, I: Iterator<Item = &'v [u8]>>(
    values: impl Fn() -> I,
    names: &[&str],
) -> Option<Vec<u8>> {
    let mut count = 0usize;
    let mut hit = false;
    for value in values() {
        count += 1;
        hit = hit || value.split(|&b| b == b';').any(|p| is_named(p, names));
    }
    if count == 0 || (count == 1 && !hit) {
        return None;
    }
    let mut joined: Vec<u8> = Vec::new();
    for value in values() {
        for piece in value.split(|&b| b == b';') {
            let piece = trim_ows_bytes(piece);
            if piece.is_empty() || is_named(piece, names) {
                continue;
            }
            if !joined.is_empty() {
                joined.extend_from_slice(b"; ");
            }
            joined.extend_from_slice(piece);
        }
    }
    Some(joined)
}

/// A `Set-Cookie` for one of usher's cookies. Always `Path=/`, `HttpOnly`
/// (scripts have no business with tickets) and `SameSite=Lax` (sent on
/// top-level navigation from other sites, so links into the event work).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetCookie<'a> {
    /// Cookie name; must satisfy [`is_valid_name`].
    pub name: &'a str,
    /// Cookie value; must satisfy [`is_valid_value`] (tokens always do).
    pub value: &'a str,
    /// `Max-Age` in seconds; `None` makes a session cookie.
    pub max_age: Option<u64>,
    /// Adds `Secure` (set whenever the visitor came over HTTPS).
    pub secure: bool,
    /// Adds `Domain=`, to share the cookie with subdomains; must satisfy
    /// [`is_valid_domain`].
    pub domain: Option<&'a str>,
}

/// Returned instead of a header that would be invalid or would let a value
/// inject attributes: a harmless, immediately expiring cookie.
fn invalid() -> HeaderValue {
    HeaderValue::from_static("usher_invalid=; Path=/; Max-Age=0")
}

impl SetCookie<'_> {
    /// `name=value; Path=/; HttpOnly; SameSite=Lax[; Secure][; Domain=..][; Max-Age=..]`.
    ///
    /// Name, value and domain come from config and from sealed tokens, so they
    /// should be validated once at load time with the `is_valid_*` functions.
    /// If one is invalid anyway this never panics and never emits it: an
    /// invalid domain is left out (a host-only cookie is narrower, so safe), and
    /// an invalid name or value yields a harmless expired `usher_invalid`
    /// cookie.
    pub fn to_header_value(&self) -> HeaderValue {
        if !is_valid_name(self.name) || !is_valid_value(self.value) {
            return invalid();
        }
        // Every new visitor gets one: written once into a buffer of its
        // exact size, handed to the header without a copy.
        const ATTRS: &[u8] = b"; Path=/; HttpOnly; SameSite=Lax";
        let domain = self.domain.filter(|d| is_valid_domain(d));
        let mut digits = [0u8; 20];
        let age = self.max_age.map(|n| {
            let mut i = digits.len();
            let mut n = n;
            loop {
                i -= 1;
                digits[i] = b'0' + (n % 10) as u8;
                n /= 10;
                if n == 0 {
                    break;
                }
            }
            &digits[i..]
        });
        let len = self.name.len()
            + 1
            + self.value.len()
            + ATTRS.len()
            + if self.secure { 8 } else { 0 }
            + domain.map_or(0, |d| 9 + d.len())
            + age.map_or(0, |a| 10 + a.len());
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(self.name.as_bytes());
        out.push(b'=');
        out.extend_from_slice(self.value.as_bytes());
        out.extend_from_slice(ATTRS);
        if self.secure {
            out.extend_from_slice(b"; Secure");
        }
        if let Some(domain) = domain {
            out.extend_from_slice(b"; Domain=");
            out.extend_from_slice(domain.as_bytes());
        }
        if let Some(age) = age {
            out.extend_from_slice(b"; Max-Age=");
            out.extend_from_slice(age);
        }
        debug_assert_eq!(out.len(), len);
        // SAFETY: a header value may hold any visible ASCII, space and tab;
        // every byte here is one of those: the name's and the value's were
        // checked above (`is_valid_name`, `is_valid_value`: stricter
        // sets), the domain's by `is_valid_domain`, the rest are the
        // literals and digits written here. Checking them again cost as
        // much as writing them (a ticket cookie is some 130 bytes, one per
        // new visitor).
        unsafe { HeaderValue::from_maybe_shared_unchecked(bytes::Bytes::from(out)) }
    }

    /// A `Set-Cookie` that deletes cookie `name` (`Max-Age=0`).
    ///
    /// Takes `secure` and `domain` as well as the name (the reference design
    /// had only the name): a browser deletes a cookie only when name, domain
    /// and path match the ones it was set with, so a cookie set with
    /// `Domain=` survives a clear without it.
    pub fn clear(name: &str, secure: bool, domain: Option<&str>) -> HeaderValue {
        SetCookie {
            name,
            value: "",
            max_age: Some(0),
            secure,
            domain,
        }
        .to_header_value()
    }
}

/// A cookie name is an HTTP token (RFC 9110 §5.6.2).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A cookie value is `cookie-octet`s (RFC 6265 §4.1.1): visible ASCII except
/// `"` `,` `;` `\`. Empty is allowed.
///
/// Every new visitor's ticket cookie (some 100 bytes) is checked: written
/// as comparisons without an early exit, the compiler checks 16 bytes at a
/// time (the early-exit range tests took 12 instructions a byte, a lookup
/// table 5).
pub fn is_valid_value(value: &str) -> bool {
    value.bytes().fold(true, |ok, b| {
        ok & (0x21..=0x7E).contains(&b) & (b != b'"') & (b != b',') & (b != b';') & (b != b'\\')
    })
}

/// A domain attribute: letters, digits, `-` and `.`, optionally one leading
/// `.`, at most 253 bytes.
pub fn is_valid_domain(domain: &str) -> bool {
    let host = domain.strip_prefix('.').unwrap_or(domain);
    !host.is_empty()
        && domain.len() <= 253
        && !host.starts_with('.')
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    fn cookie_values(h: &HeaderMap) -> Vec<&[u8]> {
        h.get_all(COOKIE).iter().map(|v| v.as_bytes()).collect()
    }

    #[test]
    fn finds_cookie_in_one_header_tolerating_spaces() {
        let h = map(&[b"a=1;b=2 ;  usher = tok.en ;\tc=3"]);
        assert_eq!(get_cookie(&h, "usher"), Some("tok.en"));
        assert_eq!(get_cookie(&h, "a"), Some("1"));
        assert_eq!(get_cookie(&h, "b"), Some("2"));
        assert_eq!(get_cookie(&h, "c"), Some("3"));
        assert_eq!(get_cookie(&h, "d"), None);
        assert_eq!(get_cookie(&h, "USHER"), None);
        assert_eq!(get_cookie(&HeaderMap::new(), "a"), None);
    }

    #[test]
    fn finds_cookie_across_several_headers_first_match_wins() {
        let h = map(&[b"a=1", b"usher=first; b=2", b"usher=second"]);
        assert_eq!(get_cookie(&h, "usher"), Some("first"));
        assert_eq!(get_cookie(&h, "b"), Some("2"));
        let h = map(&[b"usher=one; usher=two"]);
        assert_eq!(get_cookie(&h, "usher"), Some("one"));
        let h = map(&[b"x=1; y", b"z=\"q\""]);
        let all: Vec<_> = cookies(&h).collect();
        assert_eq!(all, vec![("x", "1"), ("z", "q")]);
    }

    #[test]
    fn quoted_missing_and_odd_values() {
        let h = map(&[b"q=\"abc\"; e=; lone; =nameless; half=\"; eq=a=b"]);
        assert_eq!(get_cookie(&h, "q"), Some("abc"));
        assert_eq!(get_cookie(&h, "e"), Some(""));
        assert_eq!(get_cookie(&h, "lone"), None);
        assert_eq!(get_cookie(&h, ""), None);
        assert_eq!(get_cookie(&h, "half"), Some("\""));
        assert_eq!(get_cookie(&h, "eq"), Some("a=b"));
    }

    #[test]
    fn skips_non_utf8_headers() {
        let h = map(&[b"usher=bad\xff", b"usher=good"]);
        assert_eq!(get_cookie(&h, "usher"), Some("good"));
        let h = map(&[b"a=\xc3\xa9; usher=x"]);
        assert_eq!(get_cookie(&h, "usher"), Some("x"), "valid UTF-8 is fine");
    }

    /// The search finds what the first matching pair of [`cookies`] holds,
    /// over headers built from awkward pieces (spaces and tabs around
    /// names, quotes, `=` in values, empty names, no `=`, a header that is
    /// not UTF-8, more pairs than are read).
    #[test]
    fn the_search_finds_what_the_pairs_say() {
        fn by_pairs<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
            cookies(h).find(|(n, _)| *n == name).map(|(_, v)| v)
        }
        let pieces = [
            "a=1",
            " a=2",
            "a =3",
            "\ta\t=\t4\t",
            "usher=\"q\"",
            "usher= x ",
            "b",
            "=v",
            "c=a=b",
            "usher=",
            " =",
            "usher=\"",
            "ab=5",
            "a b=6",
        ];
        let names = ["a", "usher", "b", "c", "", "ab", "a b", " a"];
        let mut headers: Vec<Vec<Vec<u8>>> = Vec::new();
        for (i, x) in pieces.iter().enumerate() {
            for y in &pieces[i..] {
                headers.push(vec![format!("{x};{y}").into_bytes()]);
                headers.push(vec![
                    format!("{y}; {x}").into_bytes(),
                    x.as_bytes().to_vec(),
                ]);
                headers.push(vec![
                    b"usher=\xff; a=9".to_vec(),
                    format!("{x};;{y}").into_bytes(),
                ]);
            }
        }
        let mut many = "x=1;".repeat(MAX_COOKIE_PAIRS - 1).into_bytes();
        many.extend_from_slice(b"a=last; usher=late");
        headers.push(vec![many.clone()]);
        headers.push(vec![b"\xff".to_vec(), many]);
        for values in &headers {
            let values: Vec<&[u8]> = values.iter().map(Vec::as_slice).collect();
            let h = map(&values);
            let all = get_cookies(&h, names);
            for (at, name) in names.iter().enumerate() {
                assert_eq!(
                    get_cookie(&h, name),
                    by_pairs(&h, name),
                    "{name:?} in {values:?}"
                );
                assert_eq!(all[at], by_pairs(&h, name), "{name:?} of all in {values:?}");
            }
        }
    }

    #[test]
    fn bounded_number_of_pairs() {
        let mut many = "x=1;".repeat(MAX_COOKIE_PAIRS);
        many.push_str("usher=late");
        let h = map(&[many.as_bytes()]);
        assert_eq!(get_cookie(&h, "usher"), None);
        assert_eq!(cookies(&h).count(), MAX_COOKIE_PAIRS);
    }

    #[test]
    fn strip_keeps_others_in_order() {
        let mut h = map(&[b"a=1; usher=t;b=\"2\" ;  pass = p; c=3"]);
        strip_cookies(&mut h, &["usher", "pass"]);
        assert_eq!(cookie_values(&h), vec![&b"a=1; b=\"2\"; c=3"[..]]);
    }

    #[test]
    fn strip_joins_several_headers_and_handles_non_utf8() {
        let mut h = map(&[b"usher=t", b"a=\xff1; usher=u", b"b=2"]);
        strip_cookies(&mut h, &["usher"]);
        assert_eq!(cookie_values(&h), vec![&b"a=\xff1; b=2"[..]]);

        let mut h = map(&[b"a=1", b"b=2"]);
        strip_cookies(&mut h, &["usher"]);
        assert_eq!(cookie_values(&h), vec![&b"a=1; b=2"[..]]);
    }

    #[test]
    fn strip_removes_empty_header_and_leaves_untouched_alone() {
        let mut h = map(&[b"usher=t; pass=p", b" usher=again "]);
        strip_cookies(&mut h, &["usher", "pass"]);
        assert!(h.get(COOKIE).is_none());

        let mut h = map(&[b"a=1;b=2;  lone"]);
        strip_cookies(&mut h, &["usher"]);
        assert_eq!(cookie_values(&h), vec![&b"a=1;b=2;  lone"[..]]);

        let mut h = map(&[b"usherx=1; xusher=2; lone; usher"]);
        strip_cookies(&mut h, &["usher"]);
        assert_eq!(
            cookie_values(&h),
            vec![&b"usherx=1; xusher=2; lone; usher"[..]]
        );
    }

    #[test]
    fn set_cookie_attributes() {
        let c = SetCookie {
            name: "usher",
            value: "abc.def",
            max_age: None,
            secure: false,
            domain: None,
        };
        assert_eq!(
            c.to_header_value(),
            "usher=abc.def; Path=/; HttpOnly; SameSite=Lax"
        );
        let c = SetCookie {
            max_age: Some(3600),
            secure: true,
            domain: Some("example.com"),
            ..c
        };
        assert_eq!(
            c.to_header_value(),
            "usher=abc.def; Path=/; HttpOnly; SameSite=Lax; Secure; Domain=example.com; Max-Age=3600"
        );
        assert_eq!(
            SetCookie::clear("usher", true, Some(".example.com")),
            "usher=; Path=/; HttpOnly; SameSite=Lax; Secure; Domain=.example.com; Max-Age=0"
        );
        assert_eq!(
            SetCookie::clear("usher", false, None),
            "usher=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0"
        );
    }

    #[test]
    fn cookie_octets_are_rfc_6265s() {
        for b in 0..=0x7Fu8 {
            let rfc = (0x21..=0x7E).contains(&b) && !b"\",;\\".contains(&b);
            let one = char::from(b).to_string();
            assert_eq!(is_valid_value(&one), rfc, "byte {b:#04x}");
            // at each place of a 40-byte value: the 16-byte steps and the tail
            for at in 0..40 {
                let value = format!("{}{one}{}", "a".repeat(at), "b".repeat(39 - at));
                assert_eq!(is_valid_value(&value), rfc, "byte {b:#04x} at {at}");
            }
        }
        assert!(!is_valid_value("é"));
        assert!(is_valid_value(""));
    }

    #[test]
    fn set_cookie_never_injects() {
        let base = SetCookie {
            name: "usher",
            value: "v",
            max_age: None,
            secure: false,
            domain: None,
        };
        for value in ["a;Domain=evil", "a b", "\"q\"", "a\r\nX: y", "é"] {
            let c = SetCookie { value, ..base };
            assert_eq!(c.to_header_value(), invalid(), "value {value:?}");
        }
        for name in ["", "a b", "a=b", "a;b"] {
            let c = SetCookie { name, ..base };
            assert_eq!(c.to_header_value(), invalid(), "name {name:?}");
        }
        for domain in ["evil.com; Secure", "", ".", "..a", "a b"] {
            let c = SetCookie {
                domain: Some(domain),
                ..base
            };
            assert_eq!(
                c.to_header_value(),
                "usher=v; Path=/; HttpOnly; SameSite=Lax",
                "domain {domain:?}"
            );
        }
    }
}
