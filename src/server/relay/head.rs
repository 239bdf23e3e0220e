//! The relay's heads: the visitor's request planned for the origin, the
//! origin's answer head planned for the visitor (what passes, what is
//! dropped, how the body is framed).

use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::time::Instant;

use crate::app::App;
use crate::metrics::Outcome;
use crate::proxy::headers;

/// Most header fields in a head the relay parses itself; a head with more
/// goes to hyper, which applies `server.max_headers`.
pub(super) const MAX_FIELDS: usize = 128;

/// Most header fields in an origin answer head (hyper's client default).
pub(super) const MAX_RESPONSE_FIELDS: usize = 100;

/// A request the relay takes, ready to go: the head for the origin, and
/// where in the visitor's head what it may need later lies.
pub(super) struct Plan {
    /// The head as it goes to the origin.
    pub(super) out: Vec<u8>,
    /// `HEAD`: the answer has no body, whatever its fields say.
    pub(super) head: bool,
    /// The visitor asked to close the connection after the answer.
    pub(super) close: bool,
    /// Where the target lies in the visitor's head.
    pub(super) target: (usize, usize),
    /// Where `Accept-Language`, `Referer` and `User-Agent` lie, if sent.
    pub(super) accept_language: Option<(usize, usize)>,
    pub(super) referer: Option<(usize, usize)>,
    pub(super) user_agent: Option<(usize, usize)>,
}

impl Plan {
    fn text(buf: &[u8], at: Option<(usize, usize)>) -> Option<&str> {
        at.and_then(|(from, to)| std::str::from_utf8(&buf[from..to]).ok())
    }

    pub(super) fn accept_language<'b>(&self, buf: &'b [u8]) -> Option<&'b str> {
        Self::text(buf, self.accept_language)
    }

    /// The access log's line for this request, as the hyper path writes it.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn log(
        &self,
        buf: &[u8],
        app: &App,
        client: IpAddr,
        status: u16,
        bytes: Option<u64>,
        outcome: Outcome,
        started: Instant,
    ) {
        let line = crate::logging::RequestLine::from_head(
            if self.head { "HEAD" } else { "GET" },
            Self::text(buf, Some(self.target)).unwrap_or("/"),
            Self::text(buf, self.referer),
            Self::text(buf, self.user_agent),
        );
        let mut resp = http::Response::new(());
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
        if let Some(n) = bytes {
            resp.headers_mut()
                .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(n));
        }
        app.access_log
            .write(&line, client, &resp, outcome, started.elapsed());
    }
}

/// The range of `part` (a slice of `buf`) within `buf`.
pub(super) fn range_in(buf: &[u8], part: &[u8]) -> (usize, usize) {
    let from = part.as_ptr() as usize - buf.as_ptr() as usize;
    (from, from + part.len())
}

/// The fields the relay looks at, on either side; the rest pass as they
/// are.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Field {
    Other,
    Connection,
    /// Hop-by-hop besides `Connection`: `Keep-Alive`, `Proxy-Connection`.
    Hop,
    /// `X-Usher-Voucher`: only usher says which code was issued (dropped
    /// from requests, as the hyper path's guard phase drops it).
    Voucher,
    /// `X-Usher-Release`: the origin's word to a room, never passed on
    /// (dropped from answers, as `finish_open` drops it).
    Release,
    /// `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded`: replaced.
    Forwarding,
    ContentLength,
    TransferEncoding,
    Te,
    Upgrade,
    Expect,
    Host,
    Date,
    AcceptLanguage,
    Referer,
    UserAgent,
}

impl Field {
    /// One look per name: by length, then the few names of that length.
    fn of(name: &str) -> Field {
        let is = |known: &str| name.eq_ignore_ascii_case(known);
        match name.len() {
            2 if is("te") => Field::Te,
            4 if is("host") => Field::Host,
            4 if is("date") => Field::Date,
            6 if is("expect") => Field::Expect,
            7 if is("upgrade") => Field::Upgrade,
            7 if is("referer") => Field::Referer,
            9 if is("forwarded") => Field::Forwarding,
            10 if is("connection") => Field::Connection,
            10 if is("keep-alive") => Field::Hop,
            10 if is("user-agent") => Field::UserAgent,
            14 if is("content-length") => Field::ContentLength,
            15 if is("x-forwarded-for") => Field::Forwarding,
            15 if is("accept-language") => Field::AcceptLanguage,
            15 if is("x-usher-voucher") => Field::Voucher,
            15 if is("x-usher-release") => Field::Release,
            16 if is("proxy-connection") => Field::Hop,
            16 if is("x-forwarded-host") => Field::Forwarding,
            17 if is("x-forwarded-proto") => Field::Forwarding,
            17 if is("transfer-encoding") => Field::TransferEncoding,
            _ => Field::Other,
        }
    }
}

/// The origin's `Host`, and whether it replaces the visitor's
/// (`origin.preserve_host = false`); a request without one gets it anyway.
pub(super) struct Host<'a> {
    pub(super) origin: &'a [u8],
    pub(super) replaces: bool,
}

/// The origin's head for `head` (a whole request head), or `None` when the
/// request is not the relay's.
pub(super) fn plan_request(
    head: &[u8],
    peer: IpAddr,
    proto: &'static str,
    host: &Host<'_>,
) -> Option<Plan> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut fields) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return None,
    }
    let method = req.method?;
    let target = req.path?;
    if req.version != Some(1)
        || !matches!(method, "GET" | "HEAD")
        || !target.starts_with('/')
        || target.starts_with("/__usher/")
    {
        return None;
    }
    let mut plan = Plan {
        out: Vec::with_capacity(head.len() + 160),
        head: method == "HEAD",
        close: false,
        target: range_in(head, target.as_bytes()),
        accept_language: None,
        referer: None,
        user_agent: None,
    };
    let mut visitor_host = None;
    let mut kinds = [Field::Other; MAX_FIELDS];
    for (f, kind) in req.headers.iter().zip(kinds.iter_mut()) {
        *kind = Field::of(f.name);
        match kind {
            // A body, an upgrade, an expectation, trailers asked for: hyper's.
            Field::ContentLength
            | Field::TransferEncoding
            | Field::Upgrade
            | Field::Expect
            | Field::Te => return None,
            Field::Connection => {
                for token in f.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        plan.close = true;
                    } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                        // It names fields to drop: hyper's rules apply.
                        return None;
                    }
                }
            }
            // Kept as it is looked at; a second one sends the request to hyper.
            Field::Host if visitor_host.replace(f.value).is_some() => return None,
            Field::AcceptLanguage => plan.accept_language = Some(range_in(head, f.value)),
            Field::Referer => plan.referer = Some(range_in(head, f.value)),
            Field::UserAgent => plan.user_agent = Some(range_in(head, f.value)),
            _ => {}
        }
    }
    let out = &mut plan.out;
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut lines = Lines::new(head, req.headers, head.len() - 2);
    for (i, kind) in kinds.into_iter().enumerate().take(req.headers.len()) {
        match kind {
            // Hop-by-hop, usher's own, and (the peer being untrusted) the
            // forwarding fields, replaced below.
            Field::Connection | Field::Hop | Field::Voucher | Field::Forwarding => {}
            Field::Host if host.replaces => lines.write(out, i, host.origin),
            _ => lines.keep(out, i),
        }
    }
    lines.flush(out);
    if visitor_host.is_none() {
        // HTTP/1.1 needs one: the origin's (as the hyper path does).
        out.extend_from_slice(b"host: ");
        out.extend_from_slice(host.origin);
        out.extend_from_slice(b"\r\n");
    }
    headers::write_untrusted_forwarding(out, peer, proto, visitor_host);
    out.extend_from_slice(b"\r\n");
    Some(plan)
}

/// Writes a head's kept field lines as they were written (runs of adjacent
/// lines in one copy), or, where a value changes or a line does not end in
/// CRLF, as `name: value`.
pub(super) struct Lines<'h, 'b> {
    pub(super) head: &'b [u8],
    pub(super) fields: &'h [httparse::Header<'b>],
    /// Where the last field line ends (before the head's empty line).
    pub(super) end: usize,
    /// The run of kept lines not copied yet.
    pub(super) run: Option<(usize, usize)>,
}

impl<'h, 'b> Lines<'h, 'b> {
    pub(super) fn new(head: &'b [u8], fields: &'h [httparse::Header<'b>], end: usize) -> Self {
        Lines {
            head,
            fields,
            end,
            run: None,
        }
    }

    /// Field `i`'s line, CRLF included.
    fn line(&self, i: usize) -> (usize, usize) {
        let start = range_in(self.head, self.fields[i].name.as_bytes()).0;
        let end = match self.fields.get(i + 1) {
            Some(next) => range_in(self.head, next.name.as_bytes()).0,
            None => self.end,
        };
        (start, end)
    }

    /// Field `i` as it was written.
    fn keep(&mut self, out: &mut Vec<u8>, i: usize) {
        let (start, end) = self.line(i);
        if !self.head[start..end].ends_with(b"\r\n") {
            return self.write(out, i, self.fields[i].value);
        }
        match &mut self.run {
            Some((_, run_end)) if *run_end == start => *run_end = end,
            _ => {
                self.flush(out);
                self.run = Some((start, end));
            }
        }
    }

    /// Field `i` with `value`.
    fn write(&mut self, out: &mut Vec<u8>, i: usize, value: &[u8]) {
        self.flush(out);
        out.extend_from_slice(self.fields[i].name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        if let Some((start, end)) = self.run.take() {
            out.extend_from_slice(&self.head[start..end]);
        }
    }
}

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
}

pub(super) enum Parsed {
    Partial,
    Bad(&'static str),
    /// A 1xx answer of this many bytes, to skip.
    Interim(usize),
    Final(Answer, usize),
}

/// Reads the answer head at the start of `buf` and writes the visitor's.
pub(super) fn plan_answer(buf: &[u8], is_head: bool, close: bool) -> Parsed {
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
    let mut kinds = [Field::Other; MAX_RESPONSE_FIELDS];
    for (f, kind) in resp.headers.iter().zip(kinds.iter_mut()) {
        *kind = Field::of(f.name);
        match kind {
            Field::Date => dated = true,
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
    let mut out = Vec::with_capacity(n + 64);
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
        },
        n,
    )
}

/// Appends the current time as an HTTP date, formatted once a second per
/// thread.
pub(super) fn now_http_date(out: &mut Vec<u8>) {
    use std::cell::RefCell;
    use std::time::{SystemTime, UNIX_EPOCH};
    thread_local! {
        static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, text)| {
        if *at != second || text.is_empty() {
            *at = second;
            *text = httpdate::fmt_http_date(now);
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

    fn planned(head: &str) -> Option<String> {
        let peer: IpAddr = "192.0.2.7".parse().unwrap();
        let host = Host {
            origin: b"origin.example",
            replaces: false,
        };
        plan_request(head.as_bytes(), peer, "http", &host)
            .map(|p| String::from_utf8(p.out).unwrap())
    }

    #[test]
    fn the_relay_takes_plain_bodiless_requests_only() {
        let out = planned(
            "GET /a?b HTTP/1.1\r\nHost: x.example\r\nX-A: 1\r\nConnection: keep-alive\r\n\
             Keep-Alive: timeout=5\r\nX-Forwarded-For: 6.6.6.6\r\nX-Usher-Voucher: v\r\nX-a: 2\r\nX-Raw:as  sent \r\n\r\n",
        )
        .expect("relayed");
        assert_eq!(
            out,
            "GET /a?b HTTP/1.1\r\nHost: x.example\r\nX-A: 1\r\nX-a: 2\r\nX-Raw:as  sent \r\n\
             x-forwarded-for: 192.0.2.7\r\nx-forwarded-proto: http\r\nx-forwarded-host: x.example\r\n\
             forwarded: for=192.0.2.7;proto=http;host=\"x.example\"\r\n\r\n"
        );
        for hyper in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: X-Secret\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nTE: trailers\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.0\r\nHost: a\r\n\r\n",
            "GET /__usher/status HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(planned(hyper).is_none(), "{hyper:?}");
        }
    }

    #[test]
    fn the_origin_answer_loses_its_hop_by_hop_fields() {
        let head = b"HTTP/1.1 200 Fine\r\nConnection: close, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: t=1\r\n\
                     Content-Length: 2\r\nX-Usher-Release: 1\r\nX-Usher-Voucher: k\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\
                     Date: Sun, 06 Dec 2026 18:00:00 GMT\r\n\r\nok";
        let Parsed::Final(a, n) = plan_answer(head, false, false) else {
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
        let Parsed::Final(a, _) = plan_answer(chunked, false, true) else {
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
                false
            ),
            Parsed::Interim(40)
        ));
        assert!(matches!(
            plan_answer(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                false,
                false
            ),
            Parsed::Bad(_)
        ));
        assert!(matches!(
            plan_answer(
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
                false,
                false
            ),
            Parsed::Bad(_)
        ));
        let Parsed::Final(a, _) = plan_answer(b"HTTP/1.0 200 OK\r\n\r\n", false, false) else {
            panic!("parsed")
        };
        assert_eq!(a.framing, Framing::Close);
        let Parsed::Final(a, _) =
            plan_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", true, false)
        else {
            panic!("parsed")
        };
        assert_eq!(a.framing, Framing::Empty);
        assert!(a.origin_keeps);
    }
}

#[cfg(test)]
mod hostile {
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
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let mut input = Vec::new();
            for _ in 0..(next() % 10) {
                input.extend_from_slice(pieces[(next() % 14) as usize]);
            }
            let (is_head, close) = (next() % 2 == 0, next() % 2 == 0);
            match plan_answer(&input, is_head, close) {
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
