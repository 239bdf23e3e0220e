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
//! This file reads and plans a head and forwards it; `room.rs` serves a
//! room's turn, `exchange.rs` one exchange with the origin, `own.rs`
//! writes usher's own answers, `head.rs` plans the request heads,
//! `answer.rs` the answer heads, `body.rs` follows the bodies' framing.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::alarm::Alarm;
use super::park::{self, Guarded, Readable};
use crate::app::App;
use crate::civil::Tick;
use crate::config::Config;
use crate::h1_guard::GuardHandle;
use crate::metrics::Outcome;
use crate::pipeline::relayed::{self, RawRequest, Relayed};
use crate::pipeline::{ConnInfo, HttpError};
use crate::proxy::client::OriginClient;
use crate::proxy::pool::{Pool, SendError};
use crate::proxy::ForwardError;

mod answer;
mod body;
mod exchange;
mod head;
mod own;
mod room;

use answer::{itoa_3, now_http_date, plan_answer, Answer, Framing, Parsed};
use body::Body;
use exchange::exchange;
use head::{plan_request, Build, Host, Plan, Reading};
use own::write_answer;
pub use room::serve_next_in_room;

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

/// Whether this connection's requests may take the relay under `cfg`
/// and `origin` (the client built from it).
pub fn applies(cfg: &Config, origin: &OriginClient, info: &ConnInfo) -> bool {
    cfg.origin.relay
        && origin.pool.is_some()
        && !origin.built_from.https
        && !origin.built_from.http2
        && (cfg.server.trusted_proxies.is_empty()
            || !crate::net::is_trusted(info.peer.ip(), &cfg.server.trusted_proxies))
}

/// One request's turn on a connection, as the relay serves it.
pub struct Turn<'a, S> {
    pub io: &'a mut Guarded<S>,
    pub guard: &'a GuardHandle,
    pub app: &'a App,
    /// The config and origin client [`applies`] looked at.
    pub cfg: &'a Arc<Config>,
    pub origin: &'a OriginClient,
    pub info: &'a ConnInfo,
    /// Bounds the wait for the head.
    pub head_timeout: Duration,
    /// The drain has begun: the answer closes the connection.
    pub draining: bool,
    /// The connection's timer, for the origin's answer.
    pub alarm: &'a mut Alarm,
}

impl<'a, S> Turn<'a, S> {
    /// The origin's host as the heads sent to it carry it.
    fn host(&self) -> Host<'a> {
        let origin: &'a OriginClient = self.origin;
        Host {
            origin: origin.host.as_bytes(),
            replaces: !self.cfg.origin.preserve_host,
        }
    }
}

/// Serves the connection's next request if it is the relay's (see the
/// module documentation) and the config has no `[room]`
/// ([`serve_next_in_room`] when it has).
pub async fn serve_next<S>(turn: Turn<'_, S>) -> Next
where
    S: AsyncRead + AsyncWrite + Readable + Unpin,
{
    let host = turn.host();
    let Turn {
        io,
        guard,
        app,
        cfg,
        info,
        origin,
        head_timeout,
        draining,
        alarm,
    } = turn;
    let Some(pool) = origin.pool.as_ref() else {
        return Next::Hyper;
    };
    let reading = Reading {
        build: Build::Plain,
        room: false,
        bypass: None,
    };
    let read = match read_plan(io, guard, app, cfg, info, head_timeout, &host, reading).await {
        Ok(read) => read,
        Err(next) => return next,
    };
    let _ = guard.next_request();
    // Inline: without a room, forwarding is all this future does.
    forward(io, alarm, app, cfg, info, pool, read, draining, None).await
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
    S: AsyncRead + AsyncWrite + Readable + Unpin,
{
    let mut buf = Spare::take();
    let max = cfg.server.max_header_bytes;
    // A keep-alive request is most often here whole already: read at once,
    // with no deadline to work out; the timeout only for a head that waits.
    let first = {
        let reading = read_head(io, guard, &mut buf, max);
        tokio::pin!(reading);
        std::future::poll_fn(|cx| Poll::Ready(reading.as_mut().poll(cx))).await
    };
    let read = match first {
        Poll::Ready(read) => Ok(read),
        // Nothing came yet (a TLS connection's first request, most
        // often: a plain one waited in the sniff): the wait holds no read
        // buffer (8 KiB), only the socket's readiness. The read found
        // nothing buffered, rustls's plaintext included, so the next
        // bytes come through the socket.
        Poll::Pending if buf.is_empty() => {
            // Back to the thread's spares, an empty one in its place.
            drop(std::mem::replace(&mut buf, Spare(Vec::new())));
            tokio::time::timeout(head_timeout, async {
                park::readable(io).await?;
                buf = Spare::take();
                read_head(io, guard, &mut buf, max).await
            })
            .await
        }
        // Part of a head came: the rest within the timeout (`read_head`
        // goes on from the bytes `buf` holds).
        Poll::Pending => {
            tokio::time::timeout(head_timeout, read_head(io, guard, &mut buf, max)).await
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
    alarm: &mut Alarm,
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
    match exchange(io, alarm, pool, cfg, app, plan, draining, stripped, on_head).await {
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
