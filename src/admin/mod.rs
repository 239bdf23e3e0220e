//! The admin listener (loopback by default) and its optional Unix socket:
//! Prometheus metrics, health and readiness, status JSON, live room changes
//! and reload. It is kept apart from the public listeners so that a flood
//! of visitors never hides usher's own numbers.
//!
//! Every request passes [`guard::check`] first (no browser pages, the
//! bearer token, JSON only); the token is `server.admin_token_file`, or the
//! one usher makes for itself ([`token`]).

pub mod guard;
mod talk;
pub mod token;

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use http_body_util::BodyExt;

use crate::admission::room::{Overrides, Settings};
use crate::app::App;
use crate::config::room::RoomConfig;
use crate::{full_body, Body};

use guard::{Peer, Refusal};

/// The admin API's Unix socket, removed when dropped.
pub struct SocketListener {
    listener: UnixListener,
    path: PathBuf,
}

impl SocketListener {
    /// Binds `path` with mode 0600. A stale socket left by a crash is
    /// replaced; a live one (another usher answers on it) or a file that is
    /// not a socket is an error.
    pub fn bind(path: &Path) -> std::io::Result<SocketListener> {
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                ));
            }
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another process answers on this socket",
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        // Before this the mode comes from the umask; with any usual umask
        // others cannot write (connect) to it, and the peer check below
        // stands anyway.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        Ok(SocketListener {
            listener,
            path: path.to_path_buf(),
        })
    }
}

impl Drop for SocketListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What every admin connection shares.
struct Admin {
    app: Arc<App>,
    /// The token usher made for itself (or why it could not), made the
    /// first time a config without `server.admin_token_file` needs it.
    generated: OnceLock<Result<String, String>>,
}

impl Admin {
    fn generated(&self) -> &Result<String, String> {
        self.generated.get_or_init(|| {
            let path = token::generated_path(&self.app.config.load());
            match token::prepare_dir(&path).and_then(|()| token::load_or_create(&path)) {
                Ok(t) => {
                    tracing::info!(file = %path.display(), "admin API: no server.admin_token_file, so the token is the one in this file (usher ctl reads it)");
                    Ok(t)
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "admin API: no server.admin_token_file and no token could be made; /admin/ refuses everything until one is set");
                    Err(format!(
                        "set server.admin_token_file ({} could not be made: {e})",
                        path.display()
                    ))
                }
            }
        })
    }
}

/// Serves the admin API on its TCP listener and Unix socket until told to stop.
pub async fn serve(
    tcp: Option<TcpListener>,
    socket: Option<SocketListener>,
    app: Arc<App>,
    mut stop: watch::Receiver<bool>,
) {
    let admin = Arc::new(Admin {
        app,
        generated: OnceLock::new(),
    });
    if admin.app.config.load().server.admin_api.token.is_none() {
        // At start, so the file is there before anyone runs `usher ctl`.
        let _ = admin.generated();
    }
    if let Some(a) = tcp.as_ref().and_then(|l| l.local_addr().ok()) {
        tracing::info!(listener = %a, "admin API listening");
    }
    if let Some(s) = &socket {
        tracing::info!(socket = %s.path.display(), "admin API socket listening");
    }
    loop {
        tokio::select! {
            a = accept_tcp(tcp.as_ref()) => match a {
                Ok(stream) => spawn_conn(stream, admin.clone(), Peer::Tcp),
                Err(e) => accept_failed(e).await,
            },
            a = accept_unix(socket.as_ref()) => match a {
                Ok((stream, peer)) => spawn_conn(stream, admin.clone(), peer),
                Err(e) => accept_failed(e).await,
            },
            _ = stop.changed() => return,
        }
    }
}

async fn accept_tcp(l: Option<&TcpListener>) -> std::io::Result<tokio::net::TcpStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

async fn accept_unix(
    l: Option<&SocketListener>,
) -> std::io::Result<(tokio::net::UnixStream, Peer)> {
    let Some(l) = l else {
        return std::future::pending().await;
    };
    let (s, _) = l.listener.accept().await?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    let peer = match s.peer_cred() {
        Ok(c) if c.uid() == 0 || c.uid() == me => Peer::TrustedSocket,
        _ => Peer::OtherSocket,
    };
    Ok((s, peer))
}

async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "admin accept failed");
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

fn spawn_conn<S>(stream: S, admin: Arc<Admin>, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let svc = service_fn(move |req| handle(admin.clone(), peer, req));
        let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(std::time::Duration::from_secs(10));
        let _ = b.serve_connection(TokioIo::new(stream), svc).await;
    });
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut r = Response::new(full_body(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut text = serde_json::to_vec_pretty(value).unwrap_or_default();
    text.push(b'\n');
    respond(status, "application/json", text)
}

/// The guard, then the route.
async fn handle(
    admin: Arc<Admin>,
    peer: Peer,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let checked = {
        let cfg = admin.app.config.load();
        let api = &cfg.server.admin_api;
        let expected = match &api.token {
            Some(t) => Ok(t.secret.as_str()),
            None => admin.generated().as_deref().map_err(String::as_str),
        };
        guard::check(
            req.method(),
            req.uri().path(),
            req.headers(),
            api,
            expected,
            peer,
        )
    };
    match checked {
        Ok(()) => Ok(route(&admin.app, req).await),
        Err(r) => {
            tracing::warn!(method = %req.method(), path = req.uri().path(), reason = %r, "admin request refused");
            Ok(refused(&r))
        }
    }
}

/// The answer to a refused request: its status and reason as JSON, and the
/// challenge a 401 must carry. Never any CORS header.
fn refused(r: &Refusal) -> Response<Body> {
    let mut resp = json(r.status(), &serde_json::json!({ "error": r.to_string() }));
    if r.status() == StatusCode::UNAUTHORIZED {
        let challenge = match r {
            Refusal::WrongToken => "Bearer realm=\"usher admin\", error=\"invalid_token\"",
            _ => "Bearer realm=\"usher admin\"",
        };
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(challenge),
        );
    }
    resp
}

async fn route(app: &App, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            app.metrics.encode(),
        ),
        (&Method::GET, "/healthz") => respond(StatusCode::OK, "text/plain", "ok\n"),
        (&Method::GET, "/readyz") if app.room.draining() => {
            respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "draining\n")
        }
        (&Method::GET, "/readyz") if app.room.clock_problem().is_some() => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            format!("{}\n", app.room.clock_problem().unwrap_or_default()),
        ),
        (&Method::GET, "/readyz") if app.room.local_share_of().is_some() => respond(
            StatusCode::OK,
            "text/plain",
            format!(
                "ready: store unreachable, admitting this node's share (1/{})\n",
                app.room.local_share_of().unwrap_or(1)
            ),
        ),
        (&Method::GET, "/readyz") if app.room.store_up() == Some(false) => respond(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "store unreachable\n",
        ),
        (&Method::GET, "/readyz") => respond(StatusCode::OK, "text/plain", "ready\n"),
        (&Method::POST, "/admin/pause") => room_change(app, |room, cfg| {
            room.set_overrides(
                cfg,
                Overrides {
                    mode: Some("paused".into()),
                    ..Overrides::default()
                },
            )
        }),
        (&Method::POST, "/admin/resume") => {
            room_change(app, |room, cfg| Ok(room.clear_overrides(cfg, false)))
        }
        (&Method::POST, "/admin/room") => {
            let body = read_json(req).await;
            match body {
                Err(e) => json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": e })),
                Ok(value) if value.get("reset").and_then(|v| v.as_bool()) == Some(true) => {
                    talk::from_room_change(app, None, true).await;
                    room_change(app, |room, cfg| Ok(room.clear_overrides(cfg, true)))
                }
                Ok(value) => match serde_json::from_value::<Overrides>(value) {
                    Ok(o) => {
                        let message = o.message.clone();
                        let resp = room_change(app, |room, cfg| room.set_overrides(cfg, o));
                        if resp.status() == StatusCode::OK {
                            talk::from_room_change(app, message.as_deref(), false).await;
                        }
                        resp
                    }
                    Err(e) => json(
                        StatusCode::BAD_REQUEST,
                        &serde_json::json!({ "error": e.to_string() }),
                    ),
                },
            }
        }
        (&Method::POST, "/admin/drain") => {
            app.room.set_draining(true);
            tracing::warn!(
                "draining: /readyz now fails so the load balancer sends no new visitors"
            );
            json(StatusCode::OK, &serde_json::json!({ "draining": true }))
        }
        (&Method::POST, "/admin/undrain") => {
            app.room.set_draining(false);
            tracing::info!("drain ended: /readyz succeeds again");
            json(StatusCode::OK, &serde_json::json!({ "draining": false }))
        }
        (&Method::GET, "/admin/status") => json(StatusCode::OK, &status(app).await),
        (&Method::POST, "/admin/message") => talk::announce(app, req).await,
        (&Method::GET, "/admin/message") => json(StatusCode::OK, &talk::message_status(app, false)),
        (&Method::GET, "/admin/feedback") => talk::feedback(app, &req).await,
        (&Method::POST, "/admin/reload") => match app.reload().await {
            Ok(report) => json(
                StatusCode::OK,
                &serde_json::json!({ "result": "success", "restart_required": report.restart_required }),
            ),
            Err(e) => json(
                StatusCode::UNPROCESSABLE_ENTITY,
                &serde_json::json!({ "result": "failure", "error": e.to_string(), "kept": "the running config" }),
            ),
        },
        (
            _,
            "/metrics" | "/healthz" | "/readyz" | "/admin/status" | "/admin/reload"
            | "/admin/pause" | "/admin/resume" | "/admin/room" | "/admin/drain" | "/admin/undrain"
            | "/admin/message" | "/admin/feedback",
        ) => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    }
}

/// Applies a live room change and answers with the effective settings.
fn room_change(
    app: &App,
    change: impl FnOnce(&crate::admission::room::Room, &RoomConfig) -> Result<Settings, String>,
) -> Response<Body> {
    let cfg = app.config.load();
    let Some(room_cfg) = &cfg.room else {
        return json(
            StatusCode::CONFLICT,
            &serde_json::json!({ "error": "no [room] in the config: nothing to change" }),
        );
    };
    match change(&app.room, room_cfg) {
        Ok(settings) => {
            tracing::warn!(?settings, "room settings changed through the admin API");
            json(
                StatusCode::OK,
                &serde_json::json!({ "settings": settings, "overrides": app.room.overrides() }),
            )
        }
        Err(e) => json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": e })),
    }
}

/// Reads a small JSON body (16 KiB at most).
async fn read_json(req: Request<Incoming>) -> Result<serde_json::Value, String> {
    let body = http_body_util::Limited::new(req.into_body(), 16 * 1024)
        .collect()
        .await
        .map_err(|e| format!("reading the body: {e}"))?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| format!("not JSON: {e}"))
}

async fn status(app: &App) -> serde_json::Value {
    let cfg = app.config.load();
    let bound = app
        .listening
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let certs: Vec<serde_json::Value> = app
        .certs
        .as_ref()
        .map(|r| {
            r.current()
                .iter()
                .map(|c| serde_json::json!({ "file": c.path.display().to_string(), "not_after": c.not_after }))
                .collect()
        })
        .unwrap_or_default();
    serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config": cfg.source.as_ref().map_or("<embedded default>".to_string(), |p| p.display().to_string()),
        "restart_required": app.last_reload().await.restart_required,
        "listeners": {
            "plain": bound.plain.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "tls": bound.tls.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "admin": bound.admin.map(|a| a.to_string()),
        },
        "origin": {
            "url": cfg.origin.url.to_string(),
            "max_in_flight": cfg.origin.max_in_flight,
            "in_flight": app.slots.in_flight(),
        },
        "certificates": certs,
        "room": cfg.room.as_ref().map(|r| app.room.status(r)),
        "announcement": cfg.room.as_ref().map(|_| (*app.talk.board.current()).clone()),
    })
}
