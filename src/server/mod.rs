//! Listeners: plain (HTTP/1.1 and h2c) and TLS (ALPN h2 / http/1.1), the
//! connection guards, and the graceful drain on shutdown. Listening sockets
//! are bound here or inherited from systemd ([`activation`]).

pub mod activation;
mod alarm;
mod conn;
pub mod park;
pub mod per_ip;
pub mod proxy_protocol;
mod relay;
pub mod stall;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::app::{App, Bound};

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address (or the admin socket's path).
    pub addr: String,
    /// Why.
    pub source: std::io::Error,
}

/// Listening sockets, bound before anything is served (so a port clash
/// stops the start with a clear message).
pub struct Listeners {
    plain: Vec<Listener>,
    tls: Vec<Listener>,
    admin: Option<TcpListener>,
    admin_socket: Option<crate::admin::SocketListener>,
}

/// A bound client listener and whether its connections start with a
/// PROXY protocol header (fixed for the life of the process).
struct Listener {
    socket: TcpListener,
    proxy_protocol: bool,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let sock = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()
    } else {
        tokio::net::TcpSocket::new_v6()
    }
    .map_err(|source| BindError {
        addr: addr.to_string(),
        source,
    })?;
    // A restart must not wait for TIME_WAIT sockets of the old process.
    let _ = sock.set_reuseaddr(true);
    sock.bind(addr).map_err(|source| BindError {
        addr: addr.to_string(),
        source,
    })?;
    // The kernel caps this at somaxconn; ask for plenty for a flash crowd.
    sock.listen(4096).map_err(|source| BindError {
        addr: addr.to_string(),
        source,
    })
}

async fn adopt_or_bind(
    addr: SocketAddr,
    inherited: Option<std::net::TcpListener>,
) -> Result<TcpListener, BindError> {
    match inherited {
        Some(l) => TcpListener::from_std(l).map_err(|source| BindError {
            addr: addr.to_string(),
            source,
        }),
        None => bind(addr).await,
    }
}

impl Listeners {
    /// Binds every listener in the app's config.
    pub async fn bind(app: &App) -> Result<Listeners, BindError> {
        Listeners::bind_with(app, activation::Matched::default()).await
    }

    /// Binds every listener in the app's config, except those for which
    /// `inherited` holds a socket passed by the service manager.
    pub async fn bind_with(
        app: &App,
        mut inherited: activation::Matched,
    ) -> Result<Listeners, BindError> {
        let cfg = app.config.load();
        let mut out = Listeners {
            plain: Vec::new(),
            tls: Vec::new(),
            admin: None,
            admin_socket: None,
        };
        let proxy = |a: SocketAddr| cfg.server.proxy_protocol.as_ref().is_some_and(|p| p.on(a));
        for a in &cfg.server.listen {
            out.plain.push(Listener {
                socket: adopt_or_bind(*a, inherited.take_plain(*a)).await?,
                proxy_protocol: proxy(*a),
            });
        }
        if let Some(t) = &cfg.server.tls {
            for a in &t.listen {
                out.tls.push(Listener {
                    socket: adopt_or_bind(*a, inherited.take_tls(*a)).await?,
                    proxy_protocol: proxy(*a),
                });
            }
        }
        if let Some(a) = cfg.server.admin {
            out.admin = Some(adopt_or_bind(a, inherited.admin.take()).await?);
        }
        if let Some(path) = &cfg.server.admin_api.socket {
            let bound = crate::admin::SocketListener::bind(path);
            out.admin_socket = Some(bound.map_err(|source| BindError {
                addr: path.display().to_string(),
                source,
            })?);
        }
        Ok(out)
    }

    /// The bound addresses (with real ports when `:0` was asked).
    pub fn addresses(&self) -> Bound {
        let addr = |l: &TcpListener| l.local_addr().ok();
        Bound {
            plain: self.plain.iter().filter_map(|l| addr(&l.socket)).collect(),
            tls: self.tls.iter().filter_map(|l| addr(&l.socket)).collect(),
            admin: self.admin.as_ref().and_then(addr),
        }
    }
}

/// A running server: its addresses and the means to stop it.
pub struct Running {
    /// Bound addresses.
    pub bound: Bound,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    drain: Arc<watch::Sender<()>>,
}

/// Starts serving on `listeners`.
pub fn serve(app: Arc<App>, listeners: Listeners) -> Running {
    let bound = listeners.addresses();
    // The config names what was asked; the app remembers what was bound,
    // so a reload can tell a moved listener from one that was `:0`.
    {
        let cfg = app.config.load();
        *app.listening.lock().unwrap_or_else(|e| e.into_inner()) = bound.clone();
        let mut b = app.bound.lock().unwrap_or_else(|e| e.into_inner());
        *b = Bound {
            plain: cfg.server.listen.clone(),
            tls: cfg
                .server
                .tls
                .as_ref()
                .map(|t| t.listen.clone())
                .unwrap_or_default(),
            admin: cfg.server.admin,
        };
    }
    let (stop, stopped) = watch::channel(false);
    // Each connection watches it; told on shutdown to finish and close.
    let drain = Arc::new(watch::channel(()).0);
    let limit = Arc::new(Semaphore::new(app.config.load().server.max_connections));
    let per_ip = per_ip::PerIp::new();
    let mut tasks = Vec::new();
    let acceptor = app
        .certs
        .as_ref()
        .map(|r| TlsAcceptor::from(Arc::new(crate::tls::server_config(r.clone()))));
    let plain = listeners.plain.into_iter().map(|l| (l, None));
    let tls = listeners.tls.into_iter().map(|l| (l, acceptor.clone()));
    for (l, tls) in plain.chain(tls) {
        let edge = conn::Edge {
            tls,
            proxy_protocol: l.proxy_protocol,
        };
        tasks.push(tokio::spawn(conn::accept_loop(
            l.socket,
            edge,
            app.clone(),
            limit.clone(),
            per_ip.clone(),
            stopped.clone(),
            drain.clone(),
        )));
    }
    tasks.push(tokio::spawn(admission_ticks(app.clone(), stopped.clone())));
    {
        let (app, stop) = (app.clone(), stopped.clone());
        tasks.push(tokio::spawn(async move {
            crate::talk::webhook::run(&app.talk.webhook, &app.metrics.talk.webhook, stop).await
        }));
    }
    if app.talk.shared.is_some() {
        let (app, stop) = (app.clone(), stopped.clone());
        tasks.push(tokio::spawn(async move {
            crate::talk::shared::follow(&app.talk, stop).await
        }));
    }
    if let Some(v) = app.vouchers.clone() {
        if v.ledger().is_shared() {
            tasks.push(tokio::spawn(crate::vouchers::upkeep::shared(
                app.clone(),
                v,
                stopped.clone(),
            )));
        } else {
            // Claims reserved before a crash finish with their own idempotency key.
            let room_app = app.clone();
            tokio::spawn(async move {
                let report = v.recover().await;
                if report.pending > 0 {
                    tracing::info!(?report, "pending voucher claims finished after restart");
                }
                room_app.room.set_vouchers_left(Some(v.remaining()));
            });
        }
    }
    if listeners.admin.is_some() || listeners.admin_socket.is_some() {
        tasks.push(tokio::spawn(crate::admin::serve(
            listeners.admin,
            listeners.admin_socket,
            app.clone(),
            stopped.clone(),
        )));
    }
    Running {
        bound,
        stop,
        tasks,
        drain,
    }
}

/// Runs the room's admission tick at the configured interval until stopped.
async fn admission_ticks(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut ticks: u64 = 0;
    let mut persisted = tokio::time::Instant::now();
    loop {
        let cfg = app.config.load_full();
        let every = cfg.room.as_ref().map_or(Duration::from_secs(1), |r| r.tick);
        if let Some(room) = &cfg.room {
            app.room.set_origin_load(app.slots.load());
            app.room.tick(room).await;
            ticks += 1;
            if ticks % 40 == 0 {
                // Forget passes whose rate has refilled (bounded memory).
                app.pass_limit.load().prune();
            }
        } else {
            app.metrics.room.set_state("off");
        }
        if app.room.is_durable() && persisted.elapsed() >= Duration::from_secs(1) {
            persisted = tokio::time::Instant::now();
            persist(&app).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => {
                if app.room.is_durable() {
                    persist(&app).await;
                    tracing::info!("line snapshot written at shutdown");
                }
                return;
            }
        }
    }
}

/// Writes the line's snapshot off the runtime threads (it fsyncs).
async fn persist(app: &Arc<App>) {
    let a = app.clone();
    match tokio::task::spawn_blocking(move || a.room.persist()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!("line snapshot not written: {e}"),
        Err(e) => tracing::error!("line snapshot task failed: {e}"),
    }
}

impl Running {
    /// Stops accepting, asks open connections to finish (HTTP/1 closes after
    /// the response in progress, HTTP/2 sends GOAWAY), and waits at most
    /// `grace` for them. Returns how many were still open when time ran out.
    pub async fn shutdown(self, grace: Duration) -> usize {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let open = self.drain.receiver_count();
        tracing::info!(open, grace = ?grace, "draining connections");
        // Every connection holds a receiver until it has closed.
        let _ = self.drain.send(());
        match tokio::time::timeout(grace, self.drain.closed()).await {
            Ok(()) => 0,
            Err(_) => {
                tracing::warn!("shutdown grace ran out; closing the remaining connections");
                open.max(1)
            }
        }
    }
}
