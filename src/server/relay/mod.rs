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
//! What it takes (unless `origin.relay = false`, which sends every request
//! to hyper): on a plain-HTTP/1.1 origin (`origin.pool`), from a peer
//! that is not a trusted proxy, an HTTP/1.1 `GET` or `HEAD` with no body,
//! no upgrade, no `Expect`, no `TE`, no `Connection` other than
//! `keep-alive`/`close`, one `Host` at most, a target in origin form, and
//! a clean verdict from the smuggling guard. Without a `[room]`, targets
//! under `/__usher/` are hyper's. With one, the room decides first on what
//! the relay read ([`crate::pipeline::relayed`]): a waiting visitor's
//! holding page or status JSON is written here ([`Relayed::Reply`]), an
//! open path goes to the origin as sent, an admitted visitor's request
//! without usher's cookies and fields (`head::Build::Stripped`), its
//! answer with the origin's signals acted on; usher's other endpoints,
//! long polls and the intercepted claim route are hyper's.
//! Everything else (bodies, upgrades, trusted chains, HTTP/2, TLS
//! origins, anything odd) goes to hyper: the bytes read
//! are given back to the guard ([`crate::h1_guard::H1Guard::unread`]) and
//! hyper reads them as if the relay had never looked. The relay changes no
//! rule: the same fields dropped and set, guard verdicts, metrics, access
//! log lines and origin slots (tests/proxy runs through both paths). Where
//! it differs (field lines kept exactly as written; an answer without a
//! length closes the connection after it) docs/ARCHITECTURE.md says.
//!
//! `head.rs` plans the request heads, `answer.rs` the answer heads,
//! `body.rs` follows the bodies' framing.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::park::Guarded;
use crate::app::App;
use crate::config::Config;
use crate::h1_guard::GuardHandle;
use crate::metrics::Outcome;
use crate::pipeline::relayed::{self, RawRequest, Relayed};
use crate::pipeline::{ConnInfo, HttpError};
use crate::proxy::pool::{Pool, SendError};
use crate::proxy::ForwardError;

mod answer;
mod body;
mod head;

use answer::{itoa_3, now_http_date, plan_answer, Answer, Framing, Parsed};
use body::Body;
use head::{plan_request, Build, Host, Plan, Reading};

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

/// Largest origin response head the relay reads (as hyper's client, about).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Most bytes read ahead of the next request while one is answered.
const MAX_PIPELINED: usize = 64 * 1024;

/// Read size for heads and bodies.
const CHUNK: usize = 8 * 1024;

/// Whether this connection's requests may take the relay under `cfg`.
pub fn applies(cfg: &Config, app: &App, info: &ConnInfo) -> bool {
    let origin = app.origin.load();
    cfg.origin.relay
        && origin.pool.is_some()
        && !origin.built_from.https
        && !origin.built_from.http2
        && (cfg.server.trusted_proxies.is_empty()
            || !crate::net::is_trusted(info.peer.ip(), &cfg.server.trusted_proxies))
}

/// Serves the connection's next request if it is the relay's (see the
/// module documentation), under `cfg`, the config [`applies`] looked at;
/// `head_timeout` bounds the wait for its head.
pub async fn serve_next<S>(
    io: &mut Guarded<S>,
    guard: &GuardHandle,
    app: &App,
    cfg: Arc<Config>,
    info: &ConnInfo,
    head_timeout: Duration,
    draining: bool,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let origin = app.origin.load();
    let Some(pool) = origin.pool.as_ref() else {
        return Next::Hyper;
    };
    let host = Host {
        origin: origin.host.as_bytes(),
        replaces: !cfg.origin.preserve_host,
    };
    let reading = Reading {
        build: Build::Plain,
        room: false,
        bypass: None,
    };
    let read = match read_plan(io, guard, app, &cfg, info, head_timeout, &host, reading).await {
        Ok(read) => read,
        Err(next) => return next,
    };
    let _ = guard.next_request();
    // Inline: without a room, forwarding is all this future does.
    forward(io, app, &cfg, info, pool, read, draining, None).await
}

/// [`serve_next`] when the config has a `[room]`: the room decides first
/// ([`crate::pipeline::relayed`]) on what the relay read. A separate
/// future (the caller boxes one or the other): a waiting visitor's answer
/// carries none of forwarding's state, and a forwarded request without a
/// room none of the room's.
pub async fn serve_next_in_room<S>(
    io: &mut Guarded<S>,
    guard: &GuardHandle,
    app: &App,
    cfg: Arc<Config>,
    info: &ConnInfo,
    head_timeout: Duration,
    draining: bool,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let origin = app.origin.load();
    let (Some(pool), Some(room)) = (origin.pool.as_ref(), cfg.room.as_ref()) else {
        return Next::Hyper;
    };
    let host = Host {
        origin: origin.host.as_bytes(),
        replaces: !cfg.origin.preserve_host,
    };
    let mut reading = Reading {
        build: Build::Nothing,
        room: true,
        bypass: room.bypass_header.as_ref().map(|(name, _)| name.as_str()),
    };
    let mut read = match read_plan(io, guard, app, &cfg, info, head_timeout, &host, reading).await {
        Ok(read) => read,
        Err(next) => return next,
    };
    let (buf, plan) = (&read.buf, &read.plan);
    let head = &buf[..read.head_len];
    let text = |at| Plan::text(head, at);
    let cookies = plan.cookies(head);
    let raw = RawRequest {
        head: plan.head,
        target: text(Some(plan.target)).unwrap_or("/"),
        accept: text(plan.accept),
        accept_language: text(plan.accept_language),
        cookies: &cookies[..plan.cookie_count],
        pow: text(plan.pow),
        bypass: plan.bypass.map(|(from, to)| &head[from..to]),
    };
    let said = relayed::decide(app, cfg.clone(), info, &raw).await;
    let answered = |io: &mut Guarded<S>| {
        let _ = guard.next_request();
        if buf.len() > read.head_len {
            io.unread(&buf[read.head_len..]);
        }
        plan.close || draining
    };
    let admitted = match said {
        Relayed::Hyper => {
            io.unread(buf);
            return Next::Hyper;
        }
        Relayed::Reply(reply, outcome) => {
            let close = answered(io);
            let mut out = Spare::take();
            reply.write_h1_fields(&mut out);
            end_head(&mut out, reply.body.len(), close);
            let body: &[u8] = if plan.head { &[] } else { &reply.body };
            read.counted(app, info, 200, Some(reply.body.len() as u64), outcome);
            // The head and the body in one write, the body not copied.
            let written = write_both(io, &out, body).await.is_ok() && io.flush().await.is_ok();
            return if written && !close {
                Next::KeepAlive
            } else {
                Next::Close
            };
        }
        Relayed::Answer(resp, outcome) => {
            let close = answered(io);
            let status = resp.status().as_u16();
            let written = Box::pin(write_answer(io, resp, plan.head, close, |length| {
                read.counted(app, info, status, Some(length), outcome)
            }))
            .await;
            return if written.is_ok() && !close {
                Next::KeepAlive
            } else {
                Next::Close
            };
        }
        Relayed::Open => None,
        Relayed::Admitted(a) => Some(a),
    };
    reading.build = if admitted.is_some() {
        Build::Stripped
    } else {
        Build::Plain
    };
    let peer = crate::net::canonical(info.peer.ip());
    let proto = if info.tls { "https" } else { "http" };
    match plan_request(&read.buf[..read.head_len], peer, proto, &host, reading) {
        Some(built) => read.plan = built,
        // Read once already: it reads the same again.
        None => return Next::Close,
    }
    let _ = guard.next_request();
    // Boxed: a waiting visitor's answer (most of a room's requests) need
    // not carry forwarding's state, copied into this future's box.
    Box::pin(forward(io, app, &cfg, info, pool, read, draining, admitted)).await
}

/// A request head read and planned.
struct Read {
    buf: Spare,
    head_len: usize,
    plan: Plan,
    /// When it was read, for the access log (when it is on).
    started: Option<Instant>,
}

impl Read {
    /// Counted and logged once the answer's head is known, before it is
    /// written (as the hyper path does: a visitor who has its answer finds
    /// its line in the log).
    fn counted(
        &self,
        app: &App,
        info: &ConnInfo,
        status: u16,
        length: Option<u64>,
        outcome: Outcome,
    ) {
        app.metrics.request(outcome, status);
        if let Some(started) = self.started {
            let peer = crate::net::canonical(info.peer.ip());
            self.plan
                .log(&self.buf, app, peer, status, length, outcome, started);
        }
    }
}

/// Reads the connection's next head and plans it as `reading` says;
/// `Err`: what became of the connection instead (the bytes given back to
/// hyper, or the connection's end).
#[allow(clippy::too_many_arguments)]
async fn read_plan<S>(
    io: &mut Guarded<S>,
    guard: &GuardHandle,
    app: &App,
    cfg: &Config,
    info: &ConnInfo,
    head_timeout: Duration,
    host: &Host<'_>,
    reading: Reading<'_>,
) -> Result<Read, Next>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Spare::take();
    // A keep-alive request is most often here whole already: read at once,
    // with no deadline to work out; the timeout only for a head that waits.
    let read = {
        let reading = read_head(io, guard, &mut buf, cfg.server.max_header_bytes);
        tokio::pin!(reading);
        match std::future::poll_fn(|cx| Poll::Ready(reading.as_mut().poll(cx))).await {
            Poll::Ready(read) => Ok(read),
            Poll::Pending => tokio::time::timeout(head_timeout, reading).await,
        }
    };
    let head_len = match read {
        Ok(Ok(Some(n))) => n,
        Ok(Ok(None)) => {
            // Not a head the relay can parse (malformed, too large): hyper
            // and the guard answer it.
            io.unread(&buf);
            return Err(Next::Hyper);
        }
        // Timed out, closed or broken before a whole head: as hyper does.
        Ok(Err(_)) | Err(_) => return Err(Next::Close),
    };
    let peer = crate::net::canonical(info.peer.ip());
    let proto = if info.tls { "https" } else { "http" };
    match plan_request(&buf[..head_len], peer, proto, host, reading) {
        Some(plan) if guard.peek_next().is_ok() => Ok(Read {
            buf,
            head_len,
            plan,
            started: app.access_log.enabled().then(Instant::now),
        }),
        _ => {
            io.unread(&buf);
            Err(Next::Hyper)
        }
    }
}

/// Forwards a read request (its guard verdict taken) and relays the
/// answer; `admitted`: an admitted visitor's, whose answer gets the
/// room's cookies and loses the origin's signals to usher.
#[allow(clippy::too_many_arguments)]
async fn forward<S>(
    io: &mut Guarded<S>,
    app: &App,
    cfg: &Arc<Config>,
    info: &ConnInfo,
    pool: &Pool,
    read: Read,
    draining: bool,
    admitted: Option<crate::pipeline::relayed::Admitted>,
) -> Next
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if read.buf.len() > read.head_len {
        // Pipelined: the next request waits in the guard.
        io.unread(&read.buf[read.head_len..]);
    }
    let stripped = admitted.is_some();
    let read = &read;
    let on_head = |answer: &mut Answer| {
        if let Some(admitted) = admitted {
            let cookies = relayed::finish(
                app,
                cfg.clone(),
                info,
                admitted,
                answer.released,
                answer.sold_out,
            );
            answer.add_fields(http::header::SET_COOKIE.as_str(), &cookies);
        }
        read.counted(
            app,
            info,
            answer.status,
            answer.content_length,
            Outcome::Forwarded,
        )
    };
    let plan = &read.plan;
    match exchange(io, pool, cfg, app, plan, draining, stripped, on_head).await {
        Ok(Some(next)) => next,
        // Nothing to answer, nothing to count (as hyper drops the request).
        Ok(None) => Next::Close,
        Err(e) => {
            let lang = crate::holding::negotiate(
                plan.accept_language(&read.buf),
                None,
                crate::holding::Lang::Ko,
            );
            let e = HttpError::from(e);
            let peer = crate::net::canonical(info.peer.ip());
            tracing::warn!(client = %peer, error = %e, "origin request failed");
            let outcome = e.outcome();
            let resp = e.into_response_for(lang, cfg.room.is_some());
            let status = resp.status().as_u16();
            let close = plan.close || draining;
            let written = Box::pin(write_answer(io, resp, plan.head, close, |length| {
                read.counted(app, info, status, Some(length), outcome)
            }))
            .await;
            if written.is_ok() && !close {
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

/// Sends the planned request and relays the answer; `on_head` sees the
/// answer's head (and may add to it) before the visitor does; `admitted`:
/// the request is an admitted visitor's, whose answer loses
/// `X-Usher-Sold-Out`. `Ok(Some)`: what becomes of the connection;
/// `Ok(None)`: the visitor left before the answer came.
#[allow(clippy::too_many_arguments)]
async fn exchange<S>(
    io: &mut Guarded<S>,
    pool: &Pool,
    cfg: &Config,
    app: &App,
    plan: &Plan,
    draining: bool,
    admitted: bool,
    on_head: impl FnOnce(&mut Answer),
) -> Result<Option<Next>, ForwardError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let slot = crate::proxy::origin_slot(&app.slots, cfg, &app.metrics).await?;
    let close = plan.close || draining;
    let started = Instant::now();
    let mut rbuf = Spare::take();
    let mut pipelined = Vec::new();
    let sent = tokio::select! {
        sent = tokio::time::timeout(
            cfg.origin.response_timeout,
            send(pool, &plan.out, &mut rbuf, plan.head, close, admitted),
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
    let (mut origin_io, mut answer, head_len) = match sent {
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
    on_head(&mut answer);
    // The head and what came with it of the body, in one write.
    let mut out = std::mem::take(&mut answer.out);
    let extra = &rbuf[head_len..];
    let mut body = Body::new(answer.framing);
    let (take, done) = body.feed(extra);
    out.extend_from_slice(&extra[..take]);
    let mut origin_keeps = answer.origin_keeps && take == extra.len();
    let mut visitor_ok = io.write_all(&out).await.is_ok();
    drop(out);
    let mut ended = done;
    let mut broken = body.broken();
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
                broken = body.broken();
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
    if broken {
        // A malformed chunked body: relayed up to where it broke; the
        // visitor's reader fails there too, and neither connection goes on.
        app.metrics.origin_error("protocol");
        origin_keeps = false;
        visitor_ok = false;
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
    admitted: bool,
) -> Result<(TcpStream, Answer, usize), Failure> {
    let (mut conn, mut reused) = pool.checkout_raw().await?;
    loop {
        rbuf.clear();
        let tried = async {
            conn.write_all(head).await?;
            read_answer(&mut conn, rbuf, is_head, close, admitted).await
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
    admitted: bool,
) -> io::Result<Result<(Answer, usize), &'static str>> {
    loop {
        if rbuf.capacity() - rbuf.len() < 1024 {
            rbuf.reserve(CHUNK);
        }
        if conn.read_buf(rbuf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        loop {
            match plan_answer(rbuf, is_head, close, admitted) {
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

/// Writes one of usher's own answers (a holding page, status JSON, an
/// error page) as HTTP/1.1, as hyper writes it; `on_length` learns the
/// body's length before the visitor does.
async fn write_answer<S>(
    io: &mut Guarded<S>,
    resp: http::Response<crate::Body>,
    is_head: bool,
    close: bool,
    on_length: impl FnOnce(u64),
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
    end_head(&mut out, body.len(), close);
    on_length(body.len() as u64);
    if !is_head {
        out.extend_from_slice(&body);
    }
    io.write_all(&out).await?;
    io.flush().await
}

/// Writes `head` and then `body`, in one vectored write when the socket
/// takes it all.
async fn write_both<S>(io: &mut Guarded<S>, mut head: &[u8], mut body: &[u8]) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while !head.is_empty() {
        let parts = [io::IoSlice::new(head), io::IoSlice::new(body)];
        let n = io.write_vectored(&parts).await?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let in_head = n.min(head.len());
        head = &head[in_head..];
        body = &body[n - in_head..];
    }
    io.write_all(body).await
}

/// Ends one of usher's own answer heads as hyper does: the body's length,
/// `connection: close` when the connection ends after it, the date, and
/// the empty line.
fn end_head(out: &mut Vec<u8>, length: usize, close: bool) {
    out.extend_from_slice(b"content-length: ");
    crate::holding::fmt::write_u64(out, length as u64);
    out.extend_from_slice(b"\r\n");
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"date: ");
    now_http_date(out);
    out.extend_from_slice(b"\r\n\r\n");
}

/// Made-up input for the hostile-bytes tests (`answer.rs`, `body.rs`):
/// pieces of real messages and noise, chosen by a fixed xorshift sequence,
/// the same on every run.
#[cfg(test)]
struct MadeUp(u64);

#[cfg(test)]
impl MadeUp {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Fewer than `most` pieces, each one of `pieces`, one after another.
    fn pieced(&mut self, pieces: &[&[u8]], most: u64) -> Vec<u8> {
        let mut input = Vec::new();
        for _ in 0..(self.next() % most) {
            input.extend_from_slice(pieces[(self.next() % pieces.len() as u64) as usize]);
        }
        input
    }
}
