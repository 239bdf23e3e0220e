//! The relay's request heads: the visitor's request planned for the origin
//! (what passes, what is dropped, what is added), and what both sides share:
//! the fields looked at, and lines kept as they were written.

use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::time::Instant;

use crate::app::App;
use crate::metrics::Outcome;
use crate::proxy::headers;

/// Most header fields in a head the relay parses itself; a head with more
/// goes to hyper, which applies `server.max_headers`.
pub(super) const MAX_FIELDS: usize = 128;

/// Most `Cookie` fields in a head the relay reads for a room (browsers send
/// one; HTTP/2 splits them, but that is not the relay's); more go to hyper.
pub(super) const MAX_COOKIE_FIELDS: usize = 8;

/// What the relay makes of a head, and what of it the room reads.
#[derive(Clone, Copy)]
pub(super) struct Reading<'c> {
    /// What is written for the origin.
    pub(super) build: Build,
    /// With a `[room]`: `/__usher/` targets are read too (the room answers
    /// some of them), and so are the cookies and the room's fields.
    pub(super) room: bool,
    /// The room's bypass header's name (`room.bypass_header`), if any.
    pub(super) bypass: Option<&'c str>,
}

/// The head for the origin that [`plan_request`] writes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Build {
    /// None yet: the room decides first.
    Nothing,
    /// The visitor's lines, minus hop-by-hop fields, plus forwarding ones.
    Plain,
    /// As `Plain`, without usher's cookies, `X-Usher-Pow` and the room's
    /// bypass header (an admitted visitor's request, as `room::admit`
    /// strips it).
    Stripped,
}

/// usher's cookies, taken off an admitted visitor's request.
const OWN_COOKIES: [&str; 4] = [
    crate::admission::room::TICKET_COOKIE,
    crate::admission::room::PASS_COOKIE,
    crate::admission::room::LANG_COOKIE,
    crate::admission::room::POW_COOKIE,
];

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
    pub(super) target: Span,
    /// Where `Accept-Language`, `Referer` and `User-Agent` lie, if sent.
    pub(super) accept_language: Option<Span>,
    pub(super) referer: Option<Span>,
    pub(super) user_agent: Option<Span>,
    /// With a room: where `Accept`, `X-Usher-Pow`, the room's bypass
    /// header and the `Cookie` fields' values lie.
    pub(super) accept: Option<Span>,
    pub(super) pow: Option<Span>,
    pub(super) bypass: Option<Span>,
    pub(super) cookies: [Span; MAX_COOKIE_FIELDS],
    pub(super) cookie_count: usize,
}

impl Plan {
    pub(super) fn text(buf: &[u8], at: Option<Span>) -> Option<&str> {
        at.and_then(|span| std::str::from_utf8(span.of(buf)).ok())
    }

    /// The `Cookie` fields' values.
    pub(super) fn cookies<'b>(&self, buf: &'b [u8]) -> [&'b [u8]; MAX_COOKIE_FIELDS] {
        let mut values: [&[u8]; MAX_COOKIE_FIELDS] = [&[]; MAX_COOKIE_FIELDS];
        for (v, span) in values.iter_mut().zip(&self.cookies[..self.cookie_count]) {
            *v = span.of(buf);
        }
        values
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

/// Where a part lies in a head: `from..to`. In 32 bits (a head is at
/// most `server.max_header_bytes`, 1 MiB at most): a plan is moved a
/// few times per request, and its twelve places took half its size in
/// `usize` pairs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Span {
    from: u32,
    to: u32,
}

impl Span {
    /// The part of `buf` it marks.
    pub(super) fn of(self, buf: &[u8]) -> &[u8] {
        &buf[self.from as usize..self.to as usize]
    }
}

/// Where `part` (a slice of `buf`) starts within `buf`.
fn offset_in(buf: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - buf.as_ptr() as usize
}

/// The span of `part` (a slice of `buf`, a head) within `buf`.
pub(super) fn range_in(buf: &[u8], part: &[u8]) -> Span {
    let from = offset_in(buf, part);
    let to = from + part.len();
    debug_assert!(u32::try_from(to).is_ok(), "a head over 4 GiB");
    Span {
        from: from as u32,
        to: to as u32,
    }
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
    Accept,
    Cookie,
    /// `X-Usher-Pow`: a proof-of-work solution, for the room.
    Pow,
    /// `X-Usher-Sold-Out`: the origin's word to a room (dropped from an
    /// admitted visitor's answer, as `room::finish` drops it).
    SoldOut,
}

impl Field {
    /// One look per name: by length, then the few names of that length.
    pub(super) fn of(name: &str) -> Field {
        let is = |known: &str| name.eq_ignore_ascii_case(known);
        match name.len() {
            2 if is("te") => Field::Te,
            4 if is("host") => Field::Host,
            4 if is("date") => Field::Date,
            6 if is("expect") => Field::Expect,
            6 if is("accept") => Field::Accept,
            6 if is("cookie") => Field::Cookie,
            7 if is("upgrade") => Field::Upgrade,
            7 if is("referer") => Field::Referer,
            9 if is("forwarded") => Field::Forwarding,
            10 if is("connection") => Field::Connection,
            10 if is("keep-alive") => Field::Hop,
            10 if is("user-agent") => Field::UserAgent,
            11 if is("x-usher-pow") => Field::Pow,
            14 if is("content-length") => Field::ContentLength,
            15 if is("x-forwarded-for") => Field::Forwarding,
            15 if is("accept-language") => Field::AcceptLanguage,
            15 if is("x-usher-voucher") => Field::Voucher,
            15 if is("x-usher-release") => Field::Release,
            16 if is("proxy-connection") => Field::Hop,
            16 if is("x-forwarded-host") => Field::Forwarding,
            16 if is("x-usher-sold-out") => Field::SoldOut,
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

/// The origin's head for `head` (a whole request head), as `reading`
/// says, or `None` when the request is not the relay's.
pub(super) fn plan_request(
    head: &[u8],
    peer: IpAddr,
    proto: &'static str,
    host: &Host<'_>,
    reading: Reading<'_>,
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
        || (!reading.room && target.starts_with("/__usher/"))
    {
        return None;
    }
    let mut plan = Plan {
        out: if reading.build == Build::Nothing {
            Vec::new()
        } else {
            Vec::with_capacity(head.len() + 160)
        },
        head: method == "HEAD",
        close: false,
        target: range_in(head, target.as_bytes()),
        accept_language: None,
        referer: None,
        user_agent: None,
        accept: None,
        pow: None,
        bypass: None,
        cookies: [Span::default(); MAX_COOKIE_FIELDS],
        cookie_count: 0,
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
            Field::Accept if reading.room => plan.accept = Some(range_in(head, f.value)),
            Field::Pow if reading.room => plan.pow = Some(range_in(head, f.value)),
            Field::Cookie if reading.room => {
                if plan.cookie_count == MAX_COOKIE_FIELDS {
                    return None;
                }
                plan.cookies[plan.cookie_count] = range_in(head, f.value);
                plan.cookie_count += 1;
            }
            Field::Other
                if reading
                    .bypass
                    .is_some_and(|b| f.name.eq_ignore_ascii_case(b)) =>
            {
                // The room's own bypass header: read, and dropped when stripped.
                *kind = Field::Pow;
                plan.bypass.get_or_insert(range_in(head, f.value));
            }
            _ => {}
        }
    }
    if reading.build == Build::Nothing {
        return Some(plan);
    }
    let stripped = reading.build == Build::Stripped;
    // usher's cookies off: the remaining pairs, in one field where the
    // first stood (as `strip_cookies` does), or all fields as they were.
    let cookies = plan.cookies(head);
    let cookies = &cookies[..plan.cookie_count];
    let kept_cookies = if stripped {
        crate::tokens::cookie::stripped(|| cookies.iter().copied(), &OWN_COOKIES)
    } else {
        None
    };
    let mut cookie_written = false;
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
            // usher's own for an admitted visitor: the proof of work, the
            // bypass secret (marked `Pow` above), its cookies.
            Field::Pow if stripped => {}
            Field::Cookie if kept_cookies.is_some() => {
                if let Some(value) = kept_cookies.as_deref().filter(|v| !v.is_empty()) {
                    if !cookie_written {
                        lines.write(out, i, value);
                    }
                }
                cookie_written = true;
            }
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
    head: &'b [u8],
    fields: &'h [httparse::Header<'b>],
    /// Where the last field line ends (before the head's empty line).
    end: usize,
    /// The run of kept lines not copied yet.
    run: Option<(usize, usize)>,
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
        let start = offset_in(self.head, self.fields[i].name.as_bytes());
        let end = match self.fields.get(i + 1) {
            Some(next) => offset_in(self.head, next.name.as_bytes()),
            None => self.end,
        };
        (start, end)
    }

    /// Field `i` as it was written.
    pub(super) fn keep(&mut self, out: &mut Vec<u8>, i: usize) {
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

    pub(super) fn flush(&mut self, out: &mut Vec<u8>) {
        if let Some((start, end)) = self.run.take() {
            out.extend_from_slice(&self.head[start..end]);
        }
    }
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
        let reading = Reading {
            build: Build::Plain,
            room: false,
            bypass: None,
        };
        plan_request(head.as_bytes(), peer, "http", &host, reading)
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
}
