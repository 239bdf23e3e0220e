//! One client connection: accept under the connection cap, TLS handshake
//! or protocol sniffing, then HTTP/1.1 or HTTP/2 with the guards from config.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use std::convert::Infallible;
use std::future::Future;

use arc_swap::cache::Cache;
use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::alarm::Alarm;
use super::park::{self, Drain, Flight, Home, Parkable, Readable, Tracked};
use super::per_ip::{PerIp, PerIpSlot};
use super::proxy_protocol::{self, Refusal};
use super::relay;
use super::stall::SendTimeout;
use crate::app::App;
use crate::civil::Tick;
use crate::config::Config;
use crate::h1_guard::{GuardLimits, H1Guard};
use crate::net::is_trusted;
use crate::pipeline::{self, ConnInfo};

/// What a listener puts in front of HTTP.
pub struct Edge {
    /// The TLS acceptor of a TLS listener.
    pub tls: Option<TlsAcceptor>,
    /// Whether each connection starts with a PROXY protocol header.
    pub proxy_protocol: bool,
}

/// Accepts connections until told to stop.
pub async fn accept_loop(
    listener: TcpListener,
    edge: Edge,
    app: Arc<App>,
    limit: Arc<Semaphore>,
    per_ip: Arc<PerIp>,
    mut stop: watch::Receiver<bool>,
    drain: Arc<watch::Sender<()>>,
) {
    let local = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let label: Arc<str> = Arc::from(local.as_str());
    tracing::info!(
        listener = %label,
        tls = edge.tls.is_some(),
        proxy_protocol = edge.proxy_protocol,
        "listening"
    );
    loop {
        // Hold a slot before accepting: at the cap, new clients wait in the
        // kernel's backlog instead of being accepted and starved.
        let permit = tokio::select! {
            p = limit.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.changed() => return,
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                app.metrics
                    .connections_refused
                    .with_label_values(&["accept_error"])
                    .inc();
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        app.metrics
            .connections_total
            .with_label_values(&[&label])
            .inc();
        let ip_slot = if edge.proxy_protocol {
            // Counted under the visitor's address once the header names it.
            None
        } else {
            match ip_slot(&app, &per_ip, peer.ip()) {
                Ok(slot) => slot,
                Err(()) => continue,
            }
        };
        let app = app.clone();
        let label = label.clone();
        let tls = edge.tls.clone();
        let proxy_protocol = edge.proxy_protocol;
        let per_ip = per_ip.clone();
        let drain = Drain::new(drain.subscribe());
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (stream, peer, ip_slot) = if proxy_protocol {
                match Box::pin(proxied(stream, peer, &app, &per_ip)).await {
                    Some(c) => c,
                    None => return,
                }
            } else {
                (stream, peer, ip_slot)
            };
            connection(stream, peer, label, tls, app, permit, drain).await;
            drop(ip_slot);
        });
    }
}

/// Counts a connection from `ip` under `server.max_connections_per_ip`;
/// `Err` when the address is at its cap (counted and to be closed).
fn ip_slot(app: &App, per_ip: &Arc<PerIp>, ip: IpAddr) -> Result<Option<PerIpSlot>, ()> {
    let cfg = app.config.load();
    let s = &cfg.server;
    // Behind a trusted balancer every connection shares its address.
    if s.max_connections_per_ip == 0 || is_trusted(ip, &s.trusted_proxies) {
        return Ok(None);
    }
    match per_ip.try_take(ip, s.max_connections_per_ip) {
        Some(slot) => Ok(Some(slot)),
        None => {
            app.metrics
                .connections_refused
                .with_label_values(&["per_ip_limit"])
                .inc();
            Err(())
        }
    }
}

/// On a PROXY protocol listener: refuses peers not allowed to send the
/// header, reads it, and returns the connection with the visitor's address
/// (the socket peer for a balancer's own `LOCAL` or `UNKNOWN` connection)
/// and its per-address slot. `None`: refused, counted and logged.
async fn proxied(
    mut stream: TcpStream,
    peer: SocketAddr,
    app: &App,
    per_ip: &Arc<PerIp>,
) -> Option<(TcpStream, SocketAddr, Option<PerIpSlot>)> {
    let (trusted, timeout) = {
        let cfg = app.config.load();
        let pp = cfg.server.proxy_protocol.as_ref();
        let trusted = pp.is_some_and(|p| is_trusted(peer.ip(), &p.from));
        (trusted, cfg.server.header_read_timeout)
    };
    let read = if trusted {
        proxy_protocol::read_header(&mut stream, timeout).await
    } else {
        Err(Refusal::Untrusted)
    };
    let client = match read {
        Ok(Some(client)) => client,
        // The balancer speaking for itself is exempt from the per-address
        // cap, as a trusted proxy is.
        Ok(None) => return Some((stream, peer, None)),
        Err(reason) => {
            app.metrics
                .connections_refused
                .with_label_values(&[reason.label()])
                .inc();
            proxy_protocol::log_refusal(reason, peer);
            return None;
        }
    };
    let slot = ip_slot(app, per_ip, client.ip()).ok()?;
    Some((stream, client, slot))
}

/// Which HTTP a connection speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Proto {
    H1,
    H2,
}

impl Proto {
    fn label(self) -> &'static str {
        match self {
            Proto::H1 => "http1",
            Proto::H2 => "h2",
        }
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    listener: Arc<str>,
    tls: Option<TlsAcceptor>,
    app: Arc<App>,
    _permit: OwnedSemaphorePermit,
    mut drain: Drain,
) {
    let cfg = app.config.load_full();
    let info = ConnInfo {
        peer,
        tls: tls.is_some(),
        listener,
        guard: None,
    };
    match tls {
        // Each path boxed: the task keeps a pointer, and its box only what
        // that path needs (TLS and HTTP/1.1 2 KB, TLS and h2 0.2 KB, plain
        // HTTP/1.1 0.8 KB). The handshake's own box is gone once it ends.
        Some(acceptor) => {
            let Some((tls, proto)) =
                Box::pin(handshake(stream, acceptor, &cfg, &app, info.peer)).await
            else {
                return;
            };
            match proto {
                Proto::H2 => Box::pin(serve_h2(tls, &cfg, app, info, &mut drain)).await,
                Proto::H1 => Box::pin(serve_h1(tls, &cfg, app, info, &mut drain)).await,
            }
        }
        None => {
            let sniffed = Box::pin(sniff(&stream, cfg.server.header_read_timeout)).await;
            let Some(proto) = sniffed else {
                app.metrics
                    .connections_refused
                    .with_label_values(&["idle_before_request"])
                    .inc();
                return;
            };
            match proto {
                Proto::H1 => Box::pin(serve_h1(stream, &cfg, app, info, &mut drain)).await,
                Proto::H2 => Box::pin(serve_h2(stream, &cfg, app, info, &mut drain)).await,
            }
        }
    }
}

/// The TLS handshake within the config's time, and the protocol ALPN
/// chose; `None` (counted, logged) if it fails or takes too long.
async fn handshake(
    stream: TcpStream,
    acceptor: TlsAcceptor,
    cfg: &Config,
    app: &App,
    peer: SocketAddr,
) -> Option<(tokio_rustls::server::TlsStream<TcpStream>, Proto)> {
    let timeout = cfg
        .server
        .tls
        .as_ref()
        .map_or(Duration::from_secs(10), |t| t.handshake_timeout);
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(s)) => {
            let proto = match s.get_ref().1.alpn_protocol() {
                Some(b"h2") => Proto::H2,
                _ => Proto::H1,
            };
            Some((s, proto))
        }
        Ok(Err(e)) => {
            app.metrics
                .connections_refused
                .with_label_values(&["tls_handshake"])
                .inc();
            tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            app.metrics
                .connections_refused
                .with_label_values(&["tls_handshake_timeout"])
                .inc();
            None
        }
    }
}

/// Tells h2c (prior knowledge, starts with `PRI `) from HTTP/1 by peeking
/// at the first bytes; `None` if the client sends nothing in time or leaves.
async fn sniff(stream: &TcpStream, timeout: Duration) -> Option<Proto> {
    let peek = async {
        let mut buf = [0u8; 4];
        loop {
            let n = stream.peek(&mut buf).await.ok()?;
            if n == 0 {
                return None;
            }
            if n >= 4 || !b"PRI ".starts_with(&buf[..n]) {
                return Some(if &buf[..n] == b"PRI " {
                    Proto::H2
                } else {
                    Proto::H1
                });
            }
            // Fewer than 4 bytes, all a prefix of the preface: wait for more.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(timeout, peek).await.ok().flatten()
}

/// The HTTP/1 settings of a connection, from the config of the moment;
/// `head_timeout` bounds the wait for the next request head.
fn h1_builder(cfg: &Config, head_timeout: Duration) -> http1::Builder {
    let s = &cfg.server;
    let mut b = http1::Builder::new();
    b.timer(TokioTimer::new())
        // Header names reach the origin as the client wrote them (and the
        // origin's reach the client): legacy sites may match them by case.
        .preserve_header_case(true)
        .header_read_timeout(head_timeout)
        .max_headers(s.max_headers)
        // hyper answers 431 when a head does not fit its read buffer.
        .max_buf_size(s.max_header_bytes.max(8192));
    b
}

/// The HTTP/2 settings of a connection, from the config of the moment.
fn h2_builder(cfg: &Config) -> http2::Builder<TokioExecutor> {
    let s = &cfg.server;
    let mut b = http2::Builder::new(TokioExecutor::new());
    b.timer(TokioTimer::new())
        .max_concurrent_streams(s.h2_max_concurrent_streams)
        .max_local_error_reset_streams(s.h2_max_resets)
        .max_pending_accept_reset_streams(s.h2_max_resets)
        .max_header_list_size(s.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

/// Counts the connection open (by listener and protocol) while it lives.
struct OpenGauge(prometheus::IntGauge);

impl OpenGauge {
    fn new(app: &App, info: &ConnInfo, proto: Proto) -> Self {
        let g = app
            .metrics
            .connections_open
            .with_label_values(&[&info.listener, proto.label()]);
        g.inc();
        OpenGauge(g)
    }
}

impl Drop for OpenGauge {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// HTTP/1: served by the relay or hyper while requests come, waiting as a
/// bare socket while idle (see [`park`]), under the smuggling guard
/// throughout.
///
/// An async block, not an async fn: an async fn's future keeps a place
/// for each argument beside the local it becomes, for its whole life, so
/// the IO would be held twice (twice 1,400 bytes over TLS).
fn serve_h1<'a, S>(
    io: S,
    cfg: &'a Config,
    app: Arc<App>,
    mut info: ConnInfo,
    drain: &'a mut Drain,
) -> impl Future<Output = ()> + 'a
where
    S: AsyncRead + AsyncWrite + Readable + Unpin + Send + 'static,
{
    let limits = GuardLimits {
        max_head_bytes: cfg.server.max_header_bytes,
        max_headers: cfg.server.max_headers,
    };
    let (mut io, handle) = H1Guard::new(SendTimeout::new(io, cfg.server.send_timeout), limits);
    info.guard = Some(handle.clone());
    async move {
        let info = Arc::new(info);
        let _open = OpenGauge::new(&app, &info, Proto::H1);
        let flight = Flight::default();
        let svc = {
            let (app, info, flight) = (app.clone(), info.clone(), flight.clone());
            service_fn(move |req| {
                let busy = flight.enter();
                let answer = pipeline::handle(app.clone(), info.clone(), req);
                async move {
                    match answer.await {
                        Ok(resp) => Ok::<_, Infallible>(resp.map(|b| Tracked::new(b, busy))),
                        Err(never) => match never {},
                    }
                }
            })
        };
        // Where hyper hands the IO back: made at the first request hyper
        // serves (over TLS it has room for the IO, 1.4 KB, and most
        // connections never need it).
        let mut home: Option<Arc<Home<S>>> = None;
        let idle = cfg.server.header_read_timeout;
        let mut head_timeout = idle;
        let mut rest = park::REST;
        // One wait for the drain and one timer (the alarm) for the connection's
        // life, the timer moved on only when it rings (`alarm`). A fresh wait
        // and timer at each rest cost a holding-page request about 4% of its
        // time (perf): registered, then dropped, every request; moving the
        // timer at each rest still cost 0.5%.
        let mut drain_rx = drain.watch();
        let drained = drain_rx.changed();
        tokio::pin!(drained);
        let mut drain_seen = false;
        let mut alarm = Alarm::new(idle.min(cfg.origin.response_timeout));
        // The config and origin client of the moment, checked at each request
        // with one atomic read: three loads from their `ArcSwap`s were 2% of
        // a forwarded request's instructions. An idle connection holds the
        // ones of its last request until its next (a reload's old origin
        // client, its idle connections reaped, as long as that).
        let mut config = Cache::new(&app.config);
        let mut client = Cache::new(&app.origin);
        loop {
            // The relay first (plain forwarding without hyper), when the
            // config of the moment lets it; hyper for the rest.
            let now = config.load();
            let origin = client.load();
            let next = if relay::applies(now, origin, &info) {
                // Boxed: an idle connection's task keeps none of its state.
                let in_room = now.room.is_some();
                let turn = relay::Turn {
                    io: &mut io,
                    guard: &handle,
                    app: &app,
                    cfg: now,
                    origin,
                    info: &info,
                    head_timeout,
                    draining: drain.fired(),
                    alarm: &mut alarm,
                };
                if in_room {
                    Box::pin(relay::serve_next_in_room(turn)).await
                } else {
                    Box::pin(relay::serve_next(turn)).await
                }
            } else {
                relay::Next::Hyper
            };
            match next {
                relay::Next::KeepAlive => {}
                relay::Next::Close => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                    return;
                }
                relay::Next::Hyper => {
                    let home = home.get_or_insert_with(Home::new);
                    // Boxed: while parked, the task keeps none of hyper's state.
                    // In one statement: a local for the wrapped IO would keep
                    // a second place for it in this future.
                    let mut conn = Box::pin(
                        h1_builder(cfg, head_timeout)
                            .serve_connection(
                                TokioIo::new(Parkable::new(io, home.clone(), flight.clone(), rest)),
                                svc.clone(),
                            )
                            .with_upgrades(),
                    );
                    let mut told = drain_seen;
                    if told {
                        conn.as_mut().graceful_shutdown();
                    }
                    let ended = loop {
                        tokio::select! {
                            r = conn.as_mut() => break r,
                            _ = &mut drained, if !told => {
                                told = true;
                                drain_seen = true;
                                conn.as_mut().graceful_shutdown();
                            }
                        }
                    };
                    drop(conn);
                    let Some(back) = home.take() else {
                        if let Err(e) = ended {
                            tracing::debug!(peer = %info.peer, error = %e, "connection ended with an error");
                        }
                        return;
                    };
                    io = back;
                }
            }
            if drain.fired() {
                // As hyper closes an idle connection on the drain.
                let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                return;
            }
            if io.has_unread() {
                // A pipelined request is here already.
                head_timeout = idle;
                continue;
            }
            let parked = Tick::now();
            let idle_until = parked + idle;
            tokio::select! {
                // In this order: woken by the visitor's bytes (most wake-ups),
                // the timer and the drain wait are not polled again.
                biased;
                r = park::readable(&io) => if r.is_err() { return },
                // Idle too long: closed, as hyper's head timeout would have.
                () = alarm.until(idle_until) => return,
                _ = &mut drained, if !drain_seen => {
                    let _ = tokio::time::timeout(Duration::from_secs(1), io.shutdown()).await;
                    return;
                }
            }
            // The idle wait and the next head share one timeout, as in hyper.
            let parked_for = Tick::now().since(parked);
            head_timeout = idle
                .saturating_sub(parked_for)
                .max(Duration::from_millis(1));
            rest = park::rest_after(parked_for);
        }
    }
}

/// HTTP/2 (h2c or ALPN h2).
///
/// An async block, for the reason [`serve_h1`] gives: the IO goes into
/// hyper's connection, and this future keeps no place for it.
fn serve_h2<'a, IO>(
    io: IO,
    cfg: &'a Config,
    app: Arc<App>,
    info: ConnInfo,
    drain: &'a mut Drain,
) -> impl Future<Output = ()> + 'a
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let info = Arc::new(info);
    let open = OpenGauge::new(&app, &info, Proto::H2);
    let svc = {
        let info = info.clone();
        service_fn(move |req| pipeline::handle(app.clone(), info.clone(), req))
    };
    let io = TokioIo::new(SendTimeout::new(io, cfg.server.send_timeout));
    let mut conn = Box::pin(h2_builder(cfg).serve_connection(io, svc));
    async move {
        let _open = open;
        let mut told = false;
        let ended = loop {
            tokio::select! {
                r = conn.as_mut() => break r,
                _ = drain.signal(), if !told => {
                    told = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        };
        if let Err(e) = ended {
            tracing::debug!(peer = %info.peer, error = %e, "connection ended with an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use super::park::Guarded;

    type Tls = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;

    /// The size of the future `f` returns, without calling it.
    fn future_size<A, B, C, D, E, R>(_: fn(A, B, C, D, E) -> R) -> usize {
        size_of::<R>()
    }

    fn future_size7<A, B, C, D, E, G, H, R>(_: fn(A, B, C, D, E, G, H) -> R) -> usize {
        size_of::<R>()
    }

    #[test]
    fn an_idle_tls_connection_holds_its_stream_once() {
        // What an idle TLS connection keeps is these futures, boxed: as
        // async fns they held the IO two or three times (4,744 bytes for
        // 1,400 of guarded IO, one build), and the task's future held
        // serve_h1's room over h2 too.
        let io = size_of::<Guarded<Tls>>();
        let h1 = future_size(super::serve_h1::<Tls>);
        assert!(h1 < 2 * io, "serve_h1 {h1} bytes for {io} of IO");
        // The task's own future keeps neither the TLS stream nor room for
        // the path it did not take.
        let conn = future_size7(super::connection);
        assert!(conn < size_of::<Tls>() / 2, "connection {conn} bytes");
        let h2 = future_size(super::serve_h2::<Tls>);
        assert!(h2 < size_of::<Tls>() / 2, "serve_h2 {h2} bytes");
    }
}
