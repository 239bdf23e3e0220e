//! One client connection: accept under the connection cap, TLS handshake
//! or protocol sniffing, then HTTP/1.1 or HTTP/2 with the guards from config.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::per_ip::{PerIp, PerIpSlot};
use super::proxy_protocol::{self, Refusal};
use super::stall::SendTimeout;
use crate::app::App;
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
    graceful: Arc<GracefulShutdown>,
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
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            let (stream, peer, ip_slot) = if proxy_protocol {
                match proxied(stream, peer, &app, &per_ip).await {
                    Some(c) => c,
                    None => return,
                }
            } else {
                (stream, peer, ip_slot)
            };
            connection(stream, peer, label, tls, app, permit, watcher).await;
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
    watcher: Watcher,
) {
    let cfg = app.config.load_full();
    let info = ConnInfo {
        peer,
        tls: tls.is_some(),
        listener,
        guard: None,
    };
    match tls {
        Some(acceptor) => {
            let timeout = cfg
                .server
                .tls
                .as_ref()
                .map_or(Duration::from_secs(10), |t| t.handshake_timeout);
            let tls_stream = match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    app.metrics
                        .connections_refused
                        .with_label_values(&["tls_handshake"])
                        .inc();
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    app.metrics
                        .connections_refused
                        .with_label_values(&["tls_handshake_timeout"])
                        .inc();
                    return;
                }
            };
            let proto = match tls_stream.get_ref().1.alpn_protocol() {
                Some(b"h2") => Proto::H2,
                _ => Proto::H1,
            };
            serve(tls_stream, proto, &cfg, app, info, watcher).await;
        }
        None => {
            let proto = match sniff(&stream, cfg.server.header_read_timeout).await {
                Some(p) => p,
                None => {
                    app.metrics
                        .connections_refused
                        .with_label_values(&["idle_before_request"])
                        .inc();
                    return;
                }
            };
            serve(stream, proto, &cfg, app, info, watcher).await;
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

/// The HTTP server settings for a connection, from the config of the moment.
fn builder(cfg: &Config, proto: Proto) -> auto::Builder<TokioExecutor> {
    let s = &cfg.server;
    let b = auto::Builder::new(TokioExecutor::new());
    let mut b = match proto {
        Proto::H1 => b.http1_only(),
        Proto::H2 => b.http2_only(),
    };
    b.http1()
        .timer(TokioTimer::new())
        // Header names reach the origin as the client wrote them (and the
        // origin's reach the client): legacy sites may match them by case.
        .preserve_header_case(true)
        .header_read_timeout(s.header_read_timeout)
        .max_headers(s.max_headers)
        // hyper answers 431 when a head does not fit its read buffer.
        .max_buf_size(s.max_header_bytes.max(8192));
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(s.h2_max_concurrent_streams)
        .max_local_error_reset_streams(s.h2_max_resets)
        .max_pending_accept_reset_streams(s.h2_max_resets)
        .max_header_list_size(s.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    b
}

async fn serve<IO>(
    io: IO,
    proto: Proto,
    cfg: &Config,
    app: Arc<App>,
    mut info: ConnInfo,
    watcher: Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = SendTimeout::new(io, cfg.server.send_timeout);
    match proto {
        Proto::H1 => {
            let limits = GuardLimits {
                max_head_bytes: cfg.server.max_header_bytes,
                max_headers: cfg.server.max_headers,
            };
            let (io, handle) = H1Guard::new(io, limits);
            info.guard = Some(handle);
            run(io, proto, cfg, app, Arc::new(info), watcher).await
        }
        Proto::H2 => run(io, proto, cfg, app, Arc::new(info), watcher).await,
    }
}

async fn run<IO>(
    io: IO,
    proto: Proto,
    cfg: &Config,
    app: Arc<App>,
    info: Arc<ConnInfo>,
    watcher: Watcher,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let gauge = app
        .metrics
        .connections_open
        .with_label_values(&[&info.listener, proto.label()]);
    gauge.inc();
    let builder = builder(cfg, proto);
    let svc = {
        let app = app.clone();
        let info = info.clone();
        service_fn(move |req| pipeline::handle(app.clone(), info.clone(), req))
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), svc);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(peer = %info.peer, error = %e, "connection ended with an error");
    }
    gauge.dec();
}
