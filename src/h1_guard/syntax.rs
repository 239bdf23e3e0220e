//! Strict grammar checks for single lines of an HTTP/1 request: the request line, a header
//! (or trailer) field line, a chunk-size line, and the Content-Length / Transfer-Encoding values.
//! Each takes one line without its CRLF and never allocates.

use super::Rejection;

/// What the framing logic needs from a request line.
pub(super) struct RequestLine {
    /// `CONNECT`: what follows the head is a tunnel, not HTTP/1.
    pub connect: bool,
    /// Exactly `HTTP/1.1`; anything else that passes is `HTTP/1.0`.
    pub http11: bool,
}

/// A syntactically valid field line.
pub(super) struct FieldLine<'a> {
    pub name: &'a [u8],
    /// With leading and trailing OWS removed.
    pub value: &'a [u8],
}

/// `tchar` of RFC 9110 §5.6.2, as a lookup table: header names and methods are made of these.
static TCHAR: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        i += 1;
    }
    table
};

fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Whether every byte of `s` is field-vchar / SP / HTAB / obs-text: every byte except the
/// controls (CR, LF, NUL...) and DEL. Written without an early exit so the compiler checks 16
/// bytes at a time: a cookie value costs ~2 instructions a byte instead of ~14 (the values are
/// most of a head, and almost always good).
fn all_field_bytes(s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &b| {
        ok & ((b >= 0x20) | (b == b'\t')) & (b != 0x7f)
    })
}

/// Whether every byte of a request target is visible (obs-text allowed): no space, no control,
/// no DEL. Without an early exit, as `all_field_bytes`.
fn all_target_bytes(s: &[u8]) -> bool {
    s.iter().fold(true, |ok, &b| ok & (b > b' ') & (b != 0x7f))
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = rest;
    }
    s
}

/// `method SP request-target SP HTTP-version`, single spaces, no control bytes.
pub(super) fn request_line(line: &[u8]) -> Result<RequestLine, Rejection> {
    let bad = Rejection::InvalidRequestLine;
    let first = memchr::memchr(b' ', line).ok_or(bad)?;
    let last = memchr::memrchr(b' ', line).ok_or(bad)?;
    if first == last {
        return Err(bad);
    }
    let (method, target, version) = (&line[..first], &line[first + 1..last], &line[last + 1..]);
    if method.is_empty() || !method.iter().all(|&b| TCHAR[usize::from(b)]) {
        return Err(bad);
    }
    // The target may hold obs-text (hyper lets it through) but never a space or a control.
    if target.is_empty() || !all_target_bytes(target) {
        return Err(bad);
    }
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        _ => return Err(bad),
    };
    Ok(RequestLine {
        connect: method == b"CONNECT",
        http11,
    })
}

/// `field-name ":" OWS field-value OWS` with no obs-fold (checked by the caller: the line must
/// not start with whitespace).
pub(super) fn field_line(line: &[u8]) -> Result<FieldLine<'_>, Rejection> {
    if line.first().copied().is_some_and(is_ows) {
        return Err(Rejection::ObsFold);
    }
    let colon = memchr::memchr(b':', line).ok_or(Rejection::InvalidHeaderName)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.last().copied().is_some_and(is_ows) {
        return Err(Rejection::SpaceBeforeColon);
    }
    if name.is_empty() || !name.iter().all(|&b| TCHAR[usize::from(b)]) {
        return Err(Rejection::InvalidHeaderName);
    }
    if !all_field_bytes(value) {
        return Err(Rejection::InvalidHeaderValue);
    }
    Ok(FieldLine {
        name,
        value: trim_ows(value),
    })
}

/// A Content-Length value: one or more ASCII digits that fit in a u64, nothing else (no sign,
/// no list, no inner space).
pub(super) fn content_length(value: &[u8]) -> Result<u64, Rejection> {
    if value.is_empty() {
        return Err(Rejection::InvalidContentLength);
    }
    value.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return Err(Rejection::InvalidContentLength);
        }
        acc.checked_mul(10)
            .and_then(|acc| acc.checked_add(u64::from(b - b'0')))
            .ok_or(Rejection::InvalidContentLength)
    })
}

/// The only transfer coding usher accepts is a lone `chunked`.
pub(super) fn is_chunked(value: &[u8]) -> bool {
    value.eq_ignore_ascii_case(b"chunked")
}

/// Longest chunk size accepted: 16 hex digits always fit in a u64.
const MAX_CHUNK_SIZE_DIGITS: usize = 16;

/// `1*HEXDIG [ BWS ";" chunk-ext ]`; trailing BWS without an extension is tolerated because
/// hyper accepts it and both then agree on where the chunk ends. Returns the chunk size.
pub(super) fn chunk_size(line: &[u8]) -> Result<u64, Rejection> {
    let bad = Rejection::BadChunkSize;
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > MAX_CHUNK_SIZE_DIGITS {
        return Err(bad);
    }
    let size = line[..digits].iter().fold(0u64, |acc, &b| {
        // Cannot overflow: at most 16 digits. `to_digit` cannot fail: checked above.
        (acc << 4) | u64::from(char::from(b).to_digit(16).unwrap_or(0))
    });
    let rest = &line[digits..];
    let ext_start = rest.iter().position(|&b| !is_ows(b));
    match ext_start {
        None => Ok(size),
        Some(i) if rest[i] == b';' && all_field_bytes(&rest[i..]) => Ok(size),
        Some(_) => Err(bad),
    }
}
