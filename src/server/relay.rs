//! The relay: plain HTTP/1.1 forwarding without hyper, for the requests
//! that need nothing else from usher.
//!
//! Why: two hyper connections (the visitor's and the origin's), with header
//! case kept, already cost what nginx spends on a whole forwarded request
//! (docs/BENCHMARKS.md, "The floor"): each head is parsed into a header map
//! and written out again from it, twice. The relay parses each head once
//! (`httparse`, hyper's own parser), writes the request out as the lines the
//! visitor sent (minus the hop-by-hop ones, plus the forwarding headers) and
//! the origin's answer back as the lines the origin sent (minus its
//! hop-by-hop ones), and moves bodies as bytes, following their framing.
//!
//! What it takes: on a plain-HTTP/1.1 origin (`origin.pool`), from a peer
//! that is not a trusted proxy, with no `[room]`, an HTTP/1.1 `GET` or
//! `HEAD` with no body, no upgrade, no `Expect`, no `TE`, no `Connection`
//! other than `keep-alive`/`close`, one `Host` at most, a target in origin
//! form outside `/__usher/`, and a clean verdict from the smuggling guard.
//! Everything else (usher's own answers, bodies, upgrades, trusted chains,
//! rooms, HTTP/2, TLS origins, anything odd) goes to hyper: the bytes read
//! are given back to the guard ([`H1Guard::unread`]) and hyper reads them
//! as if the relay had never looked. The relay changes no rule: what it
//! writes is what the hyper path writes (tests/proxy checks both ways).

use std::io;
use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::park::Guarded;
use crate::app::App;
use crate::config::Config;
use crate::h1_guard::GuardHandle;
use crate::metrics::Outcome;
use crate::pipeline::{ConnInfo, HttpError};
use crate::proxy::pool::{Pool, SendError};
use crate::proxy::{headers, ForwardError};

/// What became of the connection's next request.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Relayed; the connection may carry another request.
    KeepAlive,
    /// The connection ends (relayed with `close`, the visitor left or
    /// stalled, or the exchange broke midway).
    Close,
    /// Not the relay's: its bytes wait in the guard for hyper.
    Hyper,
}

/// Most header fields in a head the relay parses itself; a head with more
/// goes to hyper, which applies `server.max_headers`.
const MAX_FIELDS: usize = 128;

/// Most header fields in an origin answer head (hyper's client default).
const MAX_RESPONSE_FIELDS: usize = 100;

/// Largest origin response head the relay reads (as hyper's client, about).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Most bytes read ahead of the next request while one is answered.
const MAX_PIPELINED: usize = 64 * 1024;

/// Read size for heads and bodies.
const CHUNK: usize = 8 * 1024;

/// Whether this connection's requests may take the relay under `cfg`.
pub fn applies(cfg: &Config, app: &App, info: &ConnInfo) -> bool {
    let origin = app.origin.load();
    cfg.room.is_none()
        && origin.pool.is_some()
        && !origin.built_from.https
        && !origin.built_from.http2
        && (cfg.server.trusted_proxies.is_empty()
            || !crate::net::is_trusted(info.peer.ip(), &cfg.server.trusted_proxies))
}

/// Serves the connection's next request if it is the relay's (see the
/// module documentation); `head_timeout` bounds the wait for its head.
pub async fn serve_next<S>(
    io: &mut Guarded<S>,
    guard: &GuardHandle,
    app: &App,
    info: &ConnInfo,
    head_timeout: Duration,
    draining: bool,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let cfg = app.config.load_full();
    let mut buf = Spare::take();
    let read = tokio::time::timeout(
        head_timeout,
        read_head(io, guard, &mut buf, cfg.server.max_header_bytes),
    )
    .await;
    let head_len = match read {
        Ok(Ok(Some(n))) => n,
        Ok(Ok(None)) => {
            // Not a head the relay can parse (malformed, too large): hyper
            // and the guard answer it.
            io.unread(&buf);
            return Next::Hyper;
        }
        // Timed out, closed or broken before a whole head: as hyper does.
        Ok(Err(_)) | Err(_) => return Next::Close,
    };
    let peer = crate::net::canonical(info.peer.ip());
    let origin = app.origin.load();
    let Some(pool) = origin.pool.as_ref() else {
        io.unread(&buf);
        return Next::Hyper;
    };
    let host = Host {
        origin: origin.host.as_bytes(),
        replaces: !cfg.origin.preserve_host,
    };
    let proto = if info.tls { "https" } else { "http" };
    let plan = match plan_request(&buf[..head_len], peer, proto, &host) {
        Some(plan) if guard.peek_next().is_ok() => plan,
        _ => {
            io.unread(&buf);
            return Next::Hyper;
        }
    };
    let _ = guard.next_request();
    if buf.len() > head_len {
        // Pipelined: the next request waits in the guard.
        io.unread(&buf[head_len..]);
    }
    let started = app.access_log.enabled().then(Instant::now);
    // Counted and logged once the answer's head is known, before it is
    // written (as the hyper path does: a visitor who has its answer finds
    // its line in the log).
    let counted = |status: u16, length: Option<u64>, outcome: Outcome| {
        app.metrics.request(outcome, status);
        if let Some(started) = started {
            plan.log(&buf, app, peer, status, length, outcome, started);
        }
    };
    match exchange(io, pool, &cfg, app, &plan, draining, |status, length| {
        counted(status, length, Outcome::Forwarded)
    })
    .await
    {
        Ok(Some(next)) => next,
        // Nothing to answer, nothing to count (as hyper drops the request).
        Ok(None) => Next::Close,
        Err(e) => {
            let lang = crate::holding::negotiate(
                plan.accept_language(&buf),
                None,
                crate::holding::Lang::Ko,
            );
            let e = HttpError::from(e);
            tracing::warn!(client = %peer, error = %e, "origin request failed");
            let outcome = e.outcome();
            let resp = e.into_response_for(lang, cfg.room.is_some());
            let length = resp
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            counted(resp.status().as_u16(), length, outcome);
            let written = Box::pin(write_answer(io, resp, plan.head, plan.close || draining)).await;
            if written.is_ok() && !plan.close && !draining {
                Next::KeepAlive
            } else {
                Next::Close
            }
        }
    }
}

/// Reads until `buf` holds a whole request head and returns its length;
/// `None` when the guard refused it or it grew over `max` (hyper answers).
async fn read_head<S>(
    io: &mut Guarded<S>,
    guard: &GuardHandle,
    buf: &mut Vec<u8>,
    max: usize,
) -> io::Result<Option<usize>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut searched = 0;
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(CHUNK);
        }
        if io.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        // The guard has seen these bytes: a head it refuses (a bare LF, say)
        // may never end with an empty line.
        if guard.peek_next().is_err() {
            return Ok(None);
        }
        if let Some(end) = head_end(&buf[searched..]) {
            return Ok(Some(searched + end));
        }
        if buf.len() > max {
            return Ok(None);
        }
        searched = buf.len().saturating_sub(3);
    }
}

/// Where the head ends (after its empty line), if it has.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// A request the relay takes, ready to go: the head for the origin, and
/// where in the visitor's head what it may need later lies.
struct Plan {
    /// The head as it goes to the origin.
    out: Vec<u8>,
    /// `HEAD`: the answer has no body, whatever its fields say.
    head: bool,
    /// The visitor asked to close the connection after the answer.
    close: bool,
    /// Where the target lies in the visitor's head.
    target: (usize, usize),
    /// Where `Accept-Language`, `Referer` and `User-Agent` lie, if sent.
    accept_language: Option<(usize, usize)>,
    referer: Option<(usize, usize)>,
    user_agent: Option<(usize, usize)>,
}

impl Plan {
    fn text(buf: &[u8], at: Option<(usize, usize)>) -> Option<&str> {
        at.and_then(|(from, to)| std::str::from_utf8(&buf[from..to]).ok())
    }

    fn accept_language<'b>(&self, buf: &'b [u8]) -> Option<&'b str> {
        Self::text(buf, self.accept_language)
    }

    /// The access log's line for this request, as the hyper path writes it.
    #[allow(clippy::too_many_arguments)]
    fn log(
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
fn range_in(buf: &[u8], part: &[u8]) -> (usize, usize) {
    let from = part.as_ptr() as usize - buf.as_ptr() as usize;
    (from, from + part.len())
}

/// The fields the relay looks at, on either side; the rest pass as they
/// are.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Field {
    Other,
    Connection,
    /// Hop-by-hop besides `Connection`: `Keep-Alive`, `Proxy-Connection`.
    Hop,
    /// Only usher says these: `X-Usher-Voucher` to the origin, and
    /// `X-Usher-Release` from it (a room's, never passed on).
    Usher,
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
            15 if is("x-usher-voucher") || is("x-usher-release") => Field::Usher,
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
struct Host<'a> {
    origin: &'a [u8],
    replaces: bool,
}

/// The origin's head for `head` (a whole request head), or `None` when the
/// request is not the relay's.
fn plan_request(head: &[u8], peer: IpAddr, proto: &'static str, host: &Host<'_>) -> Option<Plan> {
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
            Field::Connection | Field::Hop | Field::Usher | Field::Forwarding => {}
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
struct Lines<'h, 'b> {
    head: &'b [u8],
    fields: &'h [httparse::Header<'b>],
    /// Where the last field line ends (before the head's empty line).
    end: usize,
    /// The run of kept lines not copied yet.
    run: Option<(usize, usize)>,
}

impl<'h, 'b> Lines<'h, 'b> {
    fn new(head: &'b [u8], fields: &'h [httparse::Header<'b>], end: usize) -> Self {
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
enum Framing {
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
struct Answer {
    /// The head for the visitor.
    out: Vec<u8>,
    status: u16,
    framing: Framing,
    /// The origin connection may carry another exchange afterwards.
    origin_keeps: bool,
    /// The `Content-Length` passed on, if any (the access log's bytes).
    content_length: Option<u64>,
}

/// Reads what the visitor sends while its answer is awaited (a pipelined
/// request, kept in `pipelined`, up to a bound); returns when the visitor
/// has closed its side or the connection broke.
async fn watch_visitor<S>(io: &mut Guarded<S>, pipelined: &mut Vec<u8>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Read into a small buffer here, not into `pipelined`: most visitors
    // send nothing, and nothing is allocated for them.
    let mut chunk = [0u8; 512];
    loop {
        if pipelined.len() >= MAX_PIPELINED {
            // Enough waits already: read no more until this answer is out.
            return std::future::pending().await;
        }
        match io.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => pipelined.extend_from_slice(&chunk[..n]),
        }
    }
}

/// Read buffers kept per thread between requests: a buffer freed and
/// taken again at once stays in memory the allocator has at hand, where
/// fresh ones (two a request) made the allocator purge and fault pages in
/// again: one page fault every six requests with fresh 16 KiB buffers, one
/// every thirteen with these (`perf stat -e page-faults`, c=256).
struct Spare(Vec<u8>);

/// How many buffers a thread keeps (8 KiB each: 2 MiB at most).
const SPARES: usize = 256;

thread_local! {
    static SPARE: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Spare {
    /// An empty buffer of at least [`CHUNK`] bytes.
    fn take() -> Spare {
        let kept = SPARE.with_borrow_mut(|s| s.pop());
        Spare(kept.unwrap_or_else(|| Vec::with_capacity(CHUNK)))
    }
}

impl Drop for Spare {
    fn drop(&mut self) {
        let mut v = std::mem::take(&mut self.0);
        // A buffer grown for a large head goes back to the allocator.
        if v.capacity() == CHUNK {
            v.clear();
            SPARE.with_borrow_mut(|s| {
                if s.len() < SPARES {
                    s.push(v);
                }
            });
        }
    }
}

impl std::ops::Deref for Spare {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl std::ops::DerefMut for Spare {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// Sends the planned request and relays the answer; `on_head` learns its
/// status and length (when known) before the visitor does. `Ok(Some)`:
/// what becomes of the connection; `Ok(None)`: the visitor left before
/// the answer came.
async fn exchange<S>(
    io: &mut Guarded<S>,
    pool: &Pool,
    cfg: &Config,
    app: &App,
    plan: &Plan,
    draining: bool,
    on_head: impl FnOnce(u16, Option<u64>),
) -> Result<Option<Next>, ForwardError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let slot = app
        .slots
        .acquire(cfg.origin.max_queue, cfg.origin.queue_timeout)
        .await
        .map_err(|e| {
            app.metrics.origin_error("overloaded");
            ForwardError::OriginBusy(e)
        })?;
    let close = plan.close || draining;
    let started = Instant::now();
    let mut rbuf = Spare::take();
    let mut pipelined = Vec::new();
    let sent = tokio::select! {
        sent = tokio::time::timeout(
            cfg.origin.response_timeout,
            send(pool, &plan.out, &mut rbuf, plan.head, close),
        ) => sent,
        // A visitor who leaves gives the origin slot back at once (its
        // origin connection is closed: the answer would go nowhere).
        () = watch_visitor(io, &mut pipelined) => return Ok(None),
    };
    if !pipelined.is_empty() {
        io.unread(&pipelined);
    }
    let took = started.elapsed();
    app.metrics.origin_duration.observe(took.as_secs_f64());
    let failed = !matches!(&sent, Ok(Ok((_, a, _))) if a.status < 500);
    app.room.health.record(took, failed);
    let (mut origin_io, answer, head_len) = match sent {
        Err(_) => {
            app.metrics.origin_error("timeout");
            return Err(ForwardError::OriginTimeout(cfg.origin.response_timeout));
        }
        Ok(Err(e)) => {
            app.metrics.origin_error(e.kind);
            return Err(ForwardError::OriginFailed {
                kind: e.kind,
                detail: e.detail,
            });
        }
        Ok(Ok(sent)) => sent,
    };
    // The head and what came with it of the body, in one write.
    let mut out = answer.out;
    let extra = &rbuf[head_len..];
    let mut body = Body::new(answer.framing);
    let (take, done) = body.feed(extra);
    out.extend_from_slice(&extra[..take]);
    let mut origin_keeps = answer.origin_keeps && take == extra.len();
    on_head(answer.status, answer.content_length);
    let mut visitor_ok = io.write_all(&out).await.is_ok();
    drop(out);
    let mut ended = done;
    while visitor_ok && !ended {
        rbuf.clear();
        match origin_io.read_buf(&mut *rbuf).await {
            Ok(0) if answer.framing == Framing::Close => ended = true,
            Ok(n) if n > 0 => {
                let (take, done) = body.feed(&rbuf);
                if take < rbuf.len() {
                    origin_keeps = false;
                }
                visitor_ok = io.write_all(&rbuf[..take]).await.is_ok();
                ended = done;
            }
            Ok(_) | Err(_) => {
                // The origin broke off the body: the visitor's answer is
                // cut short, so its connection ends too.
                app.metrics.origin_error("reset");
                origin_keeps = false;
                visitor_ok = false;
            }
        }
    }
    visitor_ok = visitor_ok && io.flush().await.is_ok();
    drop(slot);
    if ended && origin_keeps {
        pool.put_raw(origin_io);
    } else {
        let _ = origin_io.shutdown().await;
    }
    let next = if visitor_ok && ended && !close && answer.framing != Framing::Close {
        Next::KeepAlive
    } else {
        Next::Close
    };
    Ok(Some(next))
}

/// Why the origin gave no answer head.
struct Failure {
    kind: &'static str,
    detail: String,
}

impl From<SendError> for Failure {
    fn from(e: SendError) -> Self {
        Failure {
            kind: if e.is_connect() { "connect" } else { "reset" },
            detail: e.to_string(),
        }
    }
}

/// Writes `head` to an origin connection and reads its answer head into
/// `rbuf` (interim 1xx answers skipped, as hyper's client does). A reused
/// connection that the origin had closed gets the request once more on a
/// new one (a bodiless GET or HEAD can be repeated).
async fn send(
    pool: &Pool,
    head: &[u8],
    rbuf: &mut Vec<u8>,
    is_head: bool,
    close: bool,
) -> Result<(TcpStream, Answer, usize), Failure> {
    let (mut conn, mut reused) = pool.checkout_raw().await?;
    loop {
        rbuf.clear();
        let tried = async {
            conn.write_all(head).await?;
            read_answer(&mut conn, rbuf, is_head, close).await
        };
        match tried.await {
            Ok(Ok((answer, n))) => return Ok((conn, answer, n)),
            Ok(Err(bad)) => {
                return Err(Failure {
                    kind: "protocol",
                    detail: bad.into(),
                })
            }
            Err(_) if reused && rbuf.is_empty() => {
                tracing::debug!("origin closed the connection under the request; sending it again");
                conn = Box::pin(pool.connect_raw()).await?;
                reused = false;
            }
            Err(e) => {
                return Err(Failure {
                    kind: "reset",
                    detail: e.to_string(),
                })
            }
        }
    }
}

/// Reads the origin's final answer head. `Err` for the socket's failures,
/// `Ok(Err)` for an answer the relay will not pass on.
async fn read_answer(
    conn: &mut TcpStream,
    rbuf: &mut Vec<u8>,
    is_head: bool,
    close: bool,
) -> io::Result<Result<(Answer, usize), &'static str>> {
    loop {
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(CHUNK);
        }
        if conn.read_buf(rbuf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        loop {
            match plan_answer(rbuf, is_head, close) {
                Parsed::Partial if rbuf.len() > MAX_RESPONSE_HEAD => {
                    return Ok(Err("answer head too large"))
                }
                Parsed::Partial => break,
                Parsed::Bad(why) => return Ok(Err(why)),
                Parsed::Interim(n) => {
                    rbuf.drain(..n);
                }
                Parsed::Final(answer, n) => return Ok(Ok((answer, n))),
            }
        }
    }
}

enum Parsed {
    Partial,
    Bad(&'static str),
    /// A 1xx answer of this many bytes, to skip.
    Interim(usize),
    Final(Answer, usize),
}

/// Reads the answer head at the start of `buf` and writes the visitor's.
fn plan_answer(buf: &[u8], is_head: bool, close: bool) -> Parsed {
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
            Field::Connection | Field::Hop | Field::Te | Field::Upgrade | Field::Usher => true,
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
fn now_http_date(out: &mut Vec<u8>) {
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
fn itoa_3(code: u16) -> [u8; 3] {
    let c = code.min(999);
    [
        b'0' + (c / 100) as u8,
        b'0' + (c / 10 % 10) as u8,
        b'0' + (c % 10) as u8,
    ]
}

/// Follows an answer body as its bytes pass, to tell where it ends.
struct Body {
    framing: Framing,
    /// Bytes left of a `Content-Length` body, or of the current chunk's data.
    left: u64,
    chunk: Chunk,
    /// Length of the current size or trailer line (bounded).
    line: usize,
}

/// Where a chunked body stands.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Chunk {
    /// In a chunk-size line (digits, then maybe an extension).
    Size {
        digits: bool,
        ext: bool,
    },
    /// The size line's LF.
    SizeLf,
    /// Chunk data (`left` bytes to go).
    Data,
    /// The CR, then the LF, after the data.
    DataCr,
    DataLf,
    /// In the trailer section, at the start of a line (`true`) or in one.
    Trailer {
        at_start: bool,
    },
    /// The LF of a trailer line, or of the last (empty) line.
    TrailerLf {
        last: bool,
    },
    /// The body has ended.
    Done,
    /// Malformed: relayed no further.
    Broken,
}

/// Longest chunk-size or trailer line followed.
const MAX_LINE: usize = 8 * 1024;

impl Body {
    fn new(framing: Framing) -> Body {
        Body {
            framing,
            left: match framing {
                Framing::Length(n) => n,
                _ => 0,
            },
            chunk: Chunk::Size {
                digits: false,
                ext: false,
            },
            line: 0,
        }
    }

    /// Follows `bytes`: how many of them belong to the body, and whether
    /// it has ended with them. A malformed chunked body counts as ended
    /// where it broke and the caller stops relaying (the visitor's
    /// connection ends, as with hyper).
    fn feed(&mut self, bytes: &[u8]) -> (usize, bool) {
        match self.framing {
            Framing::Empty => (0, true),
            Framing::Close => (bytes.len(), false),
            Framing::Length(_) => {
                let take = (bytes.len() as u64).min(self.left);
                self.left -= take;
                (take as usize, self.left == 0)
            }
            Framing::Chunked => self.feed_chunked(bytes),
        }
    }

    fn feed_chunked(&mut self, bytes: &[u8]) -> (usize, bool) {
        let mut i = 0;
        while i < bytes.len() {
            if matches!(self.chunk, Chunk::Data) {
                let take = (self.left).min((bytes.len() - i) as u64) as usize;
                i += take;
                self.left -= take as u64;
                if self.left == 0 {
                    self.chunk = Chunk::DataCr;
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            self.chunk = self.step(b);
            match self.chunk {
                Chunk::Done => return (i, true),
                Chunk::Broken => return (i, true),
                _ => {}
            }
        }
        (i, false)
    }

    /// One byte outside chunk data.
    fn step(&mut self, b: u8) -> Chunk {
        let long = |line: &mut usize| {
            *line += 1;
            *line > MAX_LINE
        };
        match self.chunk {
            Chunk::Size { digits, ext } => {
                if long(&mut self.line) {
                    return Chunk::Broken;
                }
                match b {
                    b'\r' if digits => Chunk::SizeLf,
                    _ if ext => Chunk::Size { digits, ext },
                    b';' | b' ' | b'\t' if digits => Chunk::Size { digits, ext: true },
                    _ => match (b as char).to_digit(16) {
                        Some(d) if self.left >> 60 == 0 => {
                            self.left = self.left * 16 + u64::from(d);
                            Chunk::Size { digits: true, ext }
                        }
                        _ => Chunk::Broken,
                    },
                }
            }
            Chunk::SizeLf if b == b'\n' => {
                self.line = 0;
                if self.left == 0 {
                    Chunk::Trailer { at_start: true }
                } else {
                    Chunk::Data
                }
            }
            Chunk::DataCr if b == b'\r' => Chunk::DataLf,
            Chunk::DataLf if b == b'\n' => Chunk::Size {
                digits: false,
                ext: false,
            },
            Chunk::Trailer { at_start } => {
                if long(&mut self.line) {
                    return Chunk::Broken;
                }
                match b {
                    b'\r' => Chunk::TrailerLf { last: at_start },
                    _ => Chunk::Trailer { at_start: false },
                }
            }
            Chunk::TrailerLf { last } if b == b'\n' => {
                self.line = 0;
                if last {
                    Chunk::Done
                } else {
                    Chunk::Trailer { at_start: true }
                }
            }
            _ => Chunk::Broken,
        }
    }
}

/// Writes one of usher's own answers (an error page) as HTTP/1.1.
async fn write_answer<S>(
    io: &mut Guarded<S>,
    resp: http::Response<crate::Body>,
    is_head: bool,
    close: bool,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(&itoa_3(parts.status.as_u16()));
    out.push(b' ');
    out.extend_from_slice(parts.status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in parts.headers.iter() {
        if name == http::header::CONTENT_LENGTH || name == http::header::CONNECTION {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !is_head {
        out.extend_from_slice(&body);
    }
    io.write_all(&out).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(parts: &[&[u8]]) -> (usize, bool) {
        let mut b = Body::new(Framing::Chunked);
        let mut total = 0;
        for p in parts {
            let (take, done) = b.feed(p);
            total += take;
            if done {
                return (total, b.chunk == Chunk::Done);
            }
        }
        (total, false)
    }

    #[test]
    fn a_chunked_body_ends_after_its_last_chunk_and_trailers() {
        let body = b"5\r\nhello\r\n1;ext=1\r\n \r\n6\r\nworld!\r\n0\r\nX-Sum: 1\r\n\r\nNEXT";
        assert_eq!(chunked(&[body]), (body.len() - 4, true));
        // Split at every byte: the same end.
        for at in 1..body.len() - 4 {
            let (a, b) = body.split_at(at);
            assert_eq!(chunked(&[a, b]), (body.len() - 4, true), "split at {at}");
        }
        let plain = b"A\r\n0123456789\r\n0\r\n\r\n";
        assert_eq!(chunked(&[plain]), (plain.len(), true));
    }

    #[test]
    fn a_malformed_chunked_body_is_relayed_no_further() {
        for bad in [&b"zz\r\n"[..], b"5\r\nhelloXX", b"\r\n", b"5\nhello\r\n"] {
            let (_, clean) = chunked(&[bad]);
            assert!(!clean, "{:?}", String::from_utf8_lossy(bad));
            let mut b = Body::new(Framing::Chunked);
            let (_, done) = b.feed(bad);
            assert!(
                done && b.chunk == Chunk::Broken,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_sized_body_ends_at_its_length() {
        let mut b = Body::new(Framing::Length(5));
        assert_eq!(b.feed(b"hel"), (3, false));
        assert_eq!(b.feed(b"loGET"), (2, true));
        assert_eq!(Body::new(Framing::Empty).feed(b"x"), (0, true));
        assert_eq!(Body::new(Framing::Close).feed(b"xyz"), (3, false));
    }

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
                     Content-Length: 2\r\nX-Usher-Release: 1\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\
                     Date: Sun, 06 Dec 2026 18:00:00 GMT\r\n\r\nok";
        let Parsed::Final(a, n) = plan_answer(head, false, false) else {
            panic!("parsed")
        };
        assert_eq!(n, head.len() - 2);
        assert_eq!(a.framing, Framing::Length(2));
        assert!(!a.origin_keeps);
        assert_eq!(
            String::from_utf8(a.out).unwrap(),
            "HTTP/1.1 200 Fine\r\nContent-Length: 2\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\
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
