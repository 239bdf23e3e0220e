//! The relay's answer heads: the origin's answer planned for the visitor
//! (what passes, what is dropped, how its body is framed).

use std::mem::MaybeUninit;

use super::head::{Field, Lines};

/// Most header fields in an origin answer head (hyper's client default).
pub(super) const MAX_RESPONSE_FIELDS: usize = 100;

/// How the origin's answer body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (HEAD, 204, 304).
    Empty,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`, relayed as it comes.
    Chunked,
    /// Until the origin closes.
    Close,
}

/// The origin's answer head, as it goes to the visitor.
pub(super) struct Answer {
    /// The head for the visitor.
    pub(super) out: Vec<u8>,
    pub(super) status: u16,
    pub(super) framing: Framing,
    /// The origin connection may carry another exchange afterwards.
    pub(super) origin_keeps: bool,
    /// The `Content-Length` passed on, if any (the access log's bytes).
    pub(super) content_length: Option<u64>,
    /// The origin sent `X-Usher-Release` (never passed on).
    pub(super) released: bool,
    /// The origin sent `X-Usher-Sold-Out` (dropped from an admitted
    /// visitor's answer).
    pub(super) sold_out: bool,
}

impl Answer {
    /// Adds a `name: value` line for each of `values` to the head.
    pub(super) fn add_fields(&mut self, name: &str, values: &[http::HeaderValue]) {
        if values.is_empty() {
            return;
        }
        // The head ends with its empty line: the fields go before it.
        self.out.truncate(self.out.len() - 2);
        for v in values {
            self.out.extend_from_slice(name.as_bytes());
            self.out.extend_from_slice(b": ");
            self.out.extend_from_slice(v.as_bytes());
            self.out.extend_from_slice(b"\r\n");
        }
        self.out.extend_from_slice(b"\r\n");
    }
}

pub(super) enum Parsed {
    Partial,
    Bad(&'static str),
    /// A 1xx answer of this many bytes, to skip.
    Interim(usize),
    Final(Answer, usize),
}

/// Reads the answer head at the start of `buf` and writes the visitor's
/// (`admitted`: an admitted visitor's, which loses `X-Usher-Sold-Out`).
pub(super) fn plan_answer(buf: &[u8], is_head: bool, close: bool, admitted: bool) -> Parsed {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_FIELDS];
    let mut resp = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        buf,
        &mut fields,
    );
    let n = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Bad("malformed answer head"),
    };
    let (Some(status), Some(version)) = (resp.code, resp.version) else {
        return Parsed::Bad("malformed answer head");
    };
    if status == 101 {
        return Parsed::Bad("switching protocols unasked");
    }
    if (100..200).contains(&status) {
        return Parsed::Interim(n);
    }
    // Framing, and whether `Connection` names fields (dropped with it).
    let mut chunked = false;
    let mut length: Option<u64> = None;
    let mut origin_keeps = version == 1;
    let mut dated = false;
    let mut names_fields = false;
    let mut released = false;
    let mut sold_out = false;
    let mut kinds = [Field::Other; MAX_RESPONSE_FIELDS];
    for (f, kind) in resp.headers.iter().zip(kinds.iter_mut()) {
        *kind = Field::of(f.name);
        match kind {
            Field::Date => dated = true,
            Field::Release => released = true,
            Field::SoldOut => sold_out = true,
            Field::TransferEncoding => {
                if chunked || !f.value.trim_ascii().eq_ignore_ascii_case(b"chunked") {
                    return Parsed::Bad("transfer coding other than chunked");
                }
                chunked = true;
            }
            Field::ContentLength => {
                let n = std::str::from_utf8(f.value.trim_ascii())
                    .ok()
                    .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                    .and_then(|t| t.parse::<u64>().ok());
                match (n, length) {
                    (None, _) => return Parsed::Bad("invalid content-length"),
                    (Some(n), Some(m)) if n != m => {
                        return Parsed::Bad("conflicting content-length")
                    }
                    (n, _) => length = n,
                }
            }
            Field::Connection => {
                for t in f.value.split(|&b| b == b',') {
                    let t = t.trim_ascii();
                    if t.eq_ignore_ascii_case(b"close") {
                        origin_keeps = false;
                    } else if !t.is_empty() && !t.eq_ignore_ascii_case(b"keep-alive") {
                        names_fields = true;
                    }
                }
            }
            _ => {}
        }
    }
    let framing = if is_head || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        origin_keeps = false;
        Framing::Close
    };
    // Room for the body that came with the head too (the exchange writes
    // both at once), and for an admitted visitor's cookies: growing it
    // later was a reallocation and a copy per request (600 instructions
    // of a forwarded one, callgrind).
    let mut out = Vec::with_capacity(buf.len() + if admitted { 512 } else { 64 });
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&itoa_3(status));
    out.push(b' ');
    out.extend_from_slice(resp.reason.unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    let named = |name: &str| {
        resp.headers
            .iter()
            .filter(|f| Field::of(f.name) == Field::Connection)
            .flat_map(|f| f.value.split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    };
    let mut lines = Lines::new(buf, resp.headers, n - 2);
    for (i, (f, kind)) in resp.headers.iter().zip(kinds).enumerate() {
        let hop = match kind {
            Field::Connection | Field::Hop | Field::Te | Field::Upgrade | Field::Release => true,
            Field::SoldOut => admitted,
            // Chunked framing wins over a length (RFC 9112 §6.3).
            Field::ContentLength => chunked,
            _ => names_fields && named(f.name),
        };
        if !hop {
            lines.keep(&mut out, i);
        }
    }
    lines.flush(&mut out);
    if !dated {
        // A proxy forwarding an answer without a date adds one (RFC 9110
        // §6.6.1), as hyper does.
        out.extend_from_slice(b"date: ");
        now_http_date(&mut out);
        out.extend_from_slice(b"\r\n");
    }
    if close || framing == Framing::Close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Parsed::Final(
        Answer {
            out,
            status,
            framing,
            origin_keeps,
            content_length: length.filter(|_| !chunked),
            released,
            sold_out,
        },
        n,
    )
}

/// Appends the current time as an HTTP date, formatted once a second per
/// thread (the coarse clock: seconds are all a date shows).
pub(super) fn now_http_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{Duration, UNIX_EPOCH};
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let second = crate::civil::coarse_unix_secs();
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second || text.is_empty() {
            *at = second;
            *text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(second));
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// A status code's three digits.
pub(super) fn itoa_3(code: u16) -> [u8; 3] {
    let c = code.min(999);
    [
        b'0' + (c / 100) as u8,
        b'0' + (c / 10 % 10) as u8,
        b'0' + (c % 10) as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origin_answer_loses_its_hop_by_hop_fields() {
        let head = b"HTTP/1.1 200 Fine\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: t=1\r\n\
                     Content-Length: 2\r\nX-Usher-Release: 1\r\nX-Usher-Voucher: k\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\
                     Date: Sun, 06 Dec 2026 18:00:00 GMT\r\n\r\nok";
        let Parsed::Final(a, n) = plan_answer(head, false, false, false) else {
            panic!("parsed")
        };
        assert_eq!(n, head.len() - 2);
        assert_eq!(a.framing, Framing::Length(2));
        assert!(!a.origin_keeps);
        assert_eq!(
            String::from_utf8(a.out).unwrap(),
            "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nX-Usher-Voucher: k\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\
             Date: Sun, 06 Dec 2026 18:00:00 GMT\r\n\r\n"
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n";
        let Parsed::Final(a, _) = plan_answer(chunked, false, true, false) else {
            panic!("parsed")
        };
        assert_eq!(a.framing, Framing::Chunked);
        let out = String::from_utf8(a.out).unwrap();
        let (head, date) = out.split_once("date: ").expect("a date added");
        assert_eq!(head, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n");
        assert!(
            date.ends_with(" GMT\r\nconnection: close\r\n\r\n") && date.len() == 29 + 2 + 19 + 2,
            "{date:?}"
        );
        assert!(matches!(
            plan_answer(
                b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1",
                false,
                false,
                false
            ),
            Parsed::Interim(40)
        ));
        assert!(matches!(
            plan_answer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                false,
                false
            ),
            Parsed::Bad(_)
        ));
        assert!(matches!(
            plan_answer(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                false,
                false
            ),
            Parsed::Bad(_)
        ));
        let Parsed::Final(a, _) = plan_answer(b"HTTP/1.0 200 OK\r\n\r\n", false, false, false)
        else {
            panic!("parsed")
        };
        assert_eq!(a.framing, Framing::Close);
        let Parsed::Final(a, _) = plan_answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            true,
            false,
            false,
        ) else {
            panic!("parsed")
        };
        assert_eq!(a.framing, Framing::Empty);
        assert!(a.origin_keeps);
    }
}

#[cfg(test)]
mod hostile {
    use super::super::MadeUp;
    use super::*;

    /// Answer heads an origin may send, made up from pieces of real ones
    /// and noise: planning never panics, and a head it passes on ends with
    /// its empty line and says where the body starts within what came.
    #[test]
    fn any_answer_head_is_planned_or_refused() {
        let pieces: [&[u8]; 14] = [
            b"HTTP/1.1 200 OK\r\n",
            b"HTTP/1.0 304 \r\n",
            b"HTTP/1.1 103 Early\r\n",
            b"Content-Length: 5\r\n",
            b"Content-Length: x\r\n",
            b"Transfer-Encoding: chunked\r\n",
            b"Transfer-Encoding: gzip\r\n",
            b"Connection: close, X-A\r\n",
            b"X-A: 1\r\n",
            b"Date: d\r\n",
            b"\r\n",
            b"\n",
            b" folded\r\n",
            &[0, 255, 58, 13],
        ];
        let mut made = MadeUp(0x2545_f491_4f6c_dd1d);
        for _ in 0..20_000 {
            let input = made.pieced(&pieces, 10);
            let (is_head, close) = (made.next() % 2 == 0, made.next() % 2 == 0);
            match plan_answer(&input, is_head, close, made.next() % 2 == 0) {
                Parsed::Final(answer, n) => {
                    assert!(n <= input.len());
                    assert!(answer.out.ends_with(b"\r\n\r\n"), "{input:?}");
                    assert!(answer.out.starts_with(b"HTTP/1.1 "));
                }
                Parsed::Interim(n) => assert!(n <= input.len()),
                Parsed::Partial | Parsed::Bad(_) => {}
            }
        }
    }
}
