//! Cookie parsing and stripping: arbitrary `Cookie` headers never panic, and
//! after stripping usher's cookies none of them can be read any more (the
//! origin never sees a ticket or a pass).
#![no_main]

use http::header::{HeaderMap, HeaderValue, COOKIE};
use libfuzzer_sys::fuzz_target;
use usher::tokens::cookie::{cookies, get_cookie, strip_cookies};

const OURS: [&str; 3] = ["usher_ticket", "usher_pass", "usher_lang"];

/// Every `;`-separated piece of every Cookie header, trimmed, as bytes:
/// what the origin would see.
fn pieces(headers: &HeaderMap) -> Vec<Vec<u8>> {
    let trim = |mut p: &[u8]| {
        while let [b' ' | b'\t', rest @ ..] = p {
            p = rest;
        }
        while let [rest @ .., b' ' | b'\t'] = p {
            p = rest;
        }
        p.to_vec()
    };
    headers
        .get_all(COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';').map(trim))
        .filter(|p| !p.is_empty())
        .collect()
}

fn is_ours(piece: &[u8]) -> bool {
    let Some(eq) = piece.iter().position(|&b| b == b'=') else {
        return false;
    };
    let name = String::from_utf8_lossy(&piece[..eq]);
    OURS.contains(&name.trim_matches([' ', '\t']))
}

fuzz_target!(|data: &[u8]| {
    let mut headers = HeaderMap::new();
    // one Cookie header per line, as HTTP/2 clients may split them
    for line in data.split(|&b| b == b'\n') {
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(COOKIE, v);
        }
    }
    let _ = cookies(&headers).count();
    let before = pieces(&headers);
    strip_cookies(&mut headers, &OURS);
    for name in OURS {
        assert_eq!(
            get_cookie(&headers, name),
            None,
            "{name} survived: {headers:?}"
        );
    }
    // Every other piece reaches the origin, byte for byte and in order.
    let kept: Vec<Vec<u8>> = before.into_iter().filter(|p| !is_ours(p)).collect();
    assert_eq!(pieces(&headers), kept, "{headers:?}");
});
