//! Writers for the dynamic values of the holding page and the status JSON:
//! HTML and JSON escaping, numbers, times, waits and countdowns.
//!
//! Each writer appends to a byte buffer and allocates nothing itself, so a
//! render costs one output allocation; each has a matching upper bound on
//! the bytes it writes, used to pre-size that buffer.

use super::i18n::Strings;
use super::memo;

/// Appends `s` with `& < > " '` replaced by character references: safe both
/// as element text and inside a quoted attribute.
pub(crate) fn html_escape(out: &mut Vec<u8>, s: &str) {
    memo::escape_into(&memo::HTML, out, s, html_escape_each);
}

fn html_escape_each(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let rep: &[u8] = match b {
            b'&' => b"&amp;",
            b'<' => b"&lt;",
            b'>' => b"&gt;",
            b'"' => b"&quot;",
            b'\'' => b"&#39;",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(rep);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
}

/// [`html_escape`] onto a `String`, for the pages built with `format!`.
pub(crate) fn push_html_escaped(out: &mut String, s: &str) {
    let mut b = Vec::with_capacity(html_escaped_len(s));
    html_escape(&mut b, s);
    // Only ASCII bytes are replaced, so valid UTF-8 stays valid.
    out.push_str(&String::from_utf8_lossy(&b));
}

/// Exact length of [`html_escape`]'s output.
pub(crate) fn html_escaped_len(s: &str) -> usize {
    if let Some(n) = memo::escaped_len(&memo::HTML, s) {
        return n;
    }
    s.len()
        + s.bytes()
            .map(|b| match b {
                b'&' => 4,
                b'<' | b'>' => 3,
                b'"' | b'\'' => 5,
                _ => 0,
            })
            .sum::<usize>()
}

/// Appends `s` as a JSON string literal, quotes included. Besides what JSON
/// requires, `<`, `>` and `&` are escaped so the text stays inert if some
/// client ever sniffs the body as HTML.
pub(crate) fn json_string(out: &mut Vec<u8>, s: &str) {
    memo::escape_into(&memo::JSON, out, s, json_string_each);
}

fn json_string_each(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | b'<' | b'>' | b'&' => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if short.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(short);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

/// Exact length of [`json_string`]'s output.
pub(crate) fn json_string_len(s: &str) -> usize {
    if let Some(n) = memo::escaped_len(&memo::JSON, s) {
        return n;
    }
    2 + s.len()
        + s.bytes()
            .map(|b| match b {
                b'"' | b'\\' | b'\n' | b'\r' | b'\t' => 1,
                0..=0x1f | b'<' | b'>' | b'&' => 5,
                _ => 0,
            })
            .sum::<usize>()
}

/// Formats `n` in decimal into `buf`, returning the digits.
fn decimal(buf: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// Appends `n` in decimal.
pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(decimal(&mut [0; 20], n));
}

/// Appends `n` with a comma every three digits (`12,345`), the grouping both
/// Korean and English readers expect.
pub(crate) fn write_grouped(out: &mut Vec<u8>, n: u64) {
    let mut buf = [0; 20];
    let digits = decimal(&mut buf, n);
    for (k, &d) in digits.iter().enumerate() {
        if k > 0 && (digits.len() - k) % 3 == 0 {
            out.push(b',');
        }
        out.push(d);
    }
}

/// Upper bound for any one number written by this module (20 digits and six
/// separators).
pub(crate) const MAX_NUMBER_LEN: usize = 26;

/// Appends a wait of `secs` seconds in words, or the "unknown" text; the
/// polling script formats with the same rules (`eta()` in holding.js).
pub(crate) fn write_eta(out: &mut Vec<u8>, strings: &Strings, secs: Option<u64>) {
    let Some(secs) = secs else {
        out.extend_from_slice(strings.unk.as_bytes());
        return;
    };
    if secs < 60 {
        out.extend_from_slice(strings.soon.as_bytes());
        return;
    }
    let minutes = secs.div_ceil(60);
    if minutes < 90 {
        fill(out, strings.min, minutes, 0);
    } else {
        fill(out, strings.hr, minutes / 60, minutes % 60);
    }
}

/// Writes `pattern` with `#` replaced by `a` and `%` by `b`.
fn fill(out: &mut Vec<u8>, pattern: &str, a: u64, b: u64) {
    for &c in pattern.as_bytes() {
        match c {
            b'#' => write_u64(out, a),
            b'%' => write_u64(out, b),
            _ => out.push(c),
        }
    }
}

/// Appends a countdown `[N<day> ]HH:MM:SS`, as `cd()` in holding.js does.
pub(crate) fn write_countdown(out: &mut Vec<u8>, strings: &Strings, secs: u64) {
    let days = secs / 86_400;
    if days > 0 {
        write_u64(out, days);
        out.extend_from_slice(strings.day.as_bytes());
        out.push(b' ');
    }
    write_two(out, secs / 3600 % 24);
    out.push(b':');
    write_two(out, secs / 60 % 60);
    out.push(b':');
    write_two(out, secs % 60);
}

fn write_two(out: &mut Vec<u8>, n: u64) {
    out.push(b'0' + (n / 10 % 10) as u8);
    out.push(b'0' + (n % 10) as u8);
}

/// Appends `HH:MM:SS UTC`: the server cannot know the visitor's zone, and
/// the script replaces it with local time at once.
pub(crate) fn write_time_utc(out: &mut Vec<u8>, unix: u64) {
    let s = unix % 86_400;
    write_two(out, s / 3600);
    out.push(b':');
    write_two(out, s / 60 % 60);
    out.push(b':');
    write_two(out, s % 60);
    out.extend_from_slice(b" UTC");
}

/// Appends `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339), for `<time datetime>`.
pub(crate) fn write_rfc3339(out: &mut Vec<u8>, unix: u64) {
    let c = crate::civil::Civil::of(unix);
    // Years past 9999 only come from a broken clock; clamp to keep the shape.
    let year = c.year.clamp(0, 9999) as u64;
    write_two(out, year / 100);
    write_two(out, year % 100);
    out.push(b'-');
    write_two(out, c.month);
    out.push(b'-');
    write_two(out, c.day);
    out.push(b'T');
    write_two(out, c.secs_of_day / 3600);
    out.push(b':');
    write_two(out, c.secs_of_day / 60 % 60);
    out.push(b':');
    write_two(out, c.secs_of_day % 60);
    out.push(b'Z');
}

/// Appends an RFC 3339 time given by the operator as `YYYY-MM-DD HH:MM` plus
/// its offset (`UTC+09:00`), the way it reads without JavaScript; anything
/// that does not look like RFC 3339 is written escaped, as given.
pub(crate) fn write_opens_at(out: &mut Vec<u8>, rfc3339: &str) {
    match split_rfc3339(rfc3339) {
        Some((date, hm, offset)) => {
            out.extend_from_slice(date.as_bytes());
            out.push(b' ');
            out.extend_from_slice(hm.as_bytes());
            out.extend_from_slice(b" (UTC");
            if offset != "Z" && offset != "z" {
                out.extend_from_slice(offset.as_bytes());
            }
            out.push(b')');
        }
        None => html_escape(out, rfc3339),
    }
}

/// Upper bound of [`write_opens_at`]'s output.
pub(crate) fn opens_at_len(rfc3339: &str) -> usize {
    html_escaped_len(rfc3339).max(32)
}

/// Splits `2025-05-01T20:00:00+09:00` into date, `HH:MM` and offset, checking
/// every character so the parts can be written without escaping.
fn split_rfc3339(s: &str) -> Option<(&str, &str, &str)> {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let ok = digits(0..4)
        && b.get(4) == Some(&b'-')
        && digits(5..7)
        && b.get(7) == Some(&b'-')
        && digits(8..10)
        && matches!(b.get(10), Some(b'T' | b't' | b' '))
        && digits(11..13)
        && b.get(13) == Some(&b':')
        && digits(14..16);
    if !ok {
        return None;
    }
    // Skip optional seconds and fraction.
    let mut i = 16;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b':' || b[i] == b'.') {
        i += 1;
    }
    let offset = &s[i..];
    let ob = offset.as_bytes();
    let offset_ok = offset == "Z"
        || offset == "z"
        || (ob.len() == 6
            && matches!(ob[0], b'+' | b'-')
            && ob[1..3].iter().all(u8::is_ascii_digit)
            && ob[3] == b':'
            && ob[4..6].iter().all(u8::is_ascii_digit));
    offset_ok.then(|| (&s[..10], &s[11..16], offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_and_time_formats() {
        let s = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut out = Vec::new();
            f(&mut out);
            String::from_utf8(out).expect("utf8")
        };
        assert_eq!(s(&|o| write_grouped(o, 0)), "0");
        assert_eq!(s(&|o| write_grouped(o, 999)), "999");
        assert_eq!(s(&|o| write_grouped(o, 1_000)), "1,000");
        assert_eq!(s(&|o| write_grouped(o, 1_234_567)), "1,234,567");
        assert_eq!(
            s(&|o| write_grouped(o, u64::MAX)),
            "18,446,744,073,709,551,615"
        );
        let en = super::super::Lang::En.strings();
        let ko = super::super::Lang::Ko.strings();
        assert_eq!(s(&|o| write_eta(o, en, Some(0))), "under a minute");
        assert_eq!(s(&|o| write_eta(o, en, Some(60))), "about 1 min");
        assert_eq!(s(&|o| write_eta(o, en, Some(61))), "about 2 min");
        assert_eq!(s(&|o| write_eta(o, en, Some(89 * 60))), "about 89 min");
        assert_eq!(s(&|o| write_eta(o, en, Some(90 * 60))), "about 1 h 30 min");
        assert_eq!(s(&|o| write_eta(o, ko, Some(3 * 3600 + 1))), "약 3시간 1분");
        assert_eq!(s(&|o| write_countdown(o, en, 59)), "00:00:59");
        assert_eq!(s(&|o| write_countdown(o, en, 86_399)), "23:59:59");
        assert_eq!(s(&|o| write_countdown(o, en, 86_400)), "1d 00:00:00");
        assert_eq!(s(&|o| write_rfc3339(o, 0)), "1970-01-01T00:00:00Z");
        assert_eq!(
            s(&|o| write_rfc3339(o, 951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            s(&|o| write_rfc3339(o, 1_746_097_200)),
            "2025-05-01T11:00:00Z"
        );
        assert_eq!(
            s(&|o| write_rfc3339(o, 4_102_444_799)),
            "2099-12-31T23:59:59Z"
        );
        assert_eq!(
            s(&|o| write_opens_at(o, "2025-05-01T20:00:00Z")),
            "2025-05-01 20:00 (UTC)"
        );
        assert_eq!(
            s(&|o| write_opens_at(o, "2025-05-01T20:00:00.5-04:30")),
            "2025-05-01 20:00 (UTC-04:30)"
        );
        assert_eq!(
            s(&|o| write_opens_at(o, "tomorrow <b>")),
            "tomorrow &lt;b&gt;"
        );
        assert_eq!(
            s(&|o| write_opens_at(o, "2025-05-01T20:00:00+09:00<x>")),
            "2025-05-01T20:00:00+09:00&lt;x&gt;"
        );
    }
}
