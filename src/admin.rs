//! The admin listener (loopback by default): Prometheus metrics, health and
//! readiness, status JSON and live reload. It is kept apart from the public
//! listeners so that a flood of visitors never hides usher's own numbers.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use http_body_util::BodyExt;

use crate::admission::room::{Overrides, Settings};
use crate::app::App;
use crate::config::room::RoomConfig;
use crate::{full_body, Body};

/// Serves the admin API until told to stop.
pub async fn serve(listener: TcpListener, app: Arc<App>, mut stop: watch::Receiver<bool>) {
    if let Ok(a) = listener.local_addr() {
        tracing::info!(listener = %a, "admin API listening");
    }
    loop {
        let (stream, _) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let app = app.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| handle(app.clone(), req));
            let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            b.http1()
                .timer(TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10));
            let _ = b.serve_connection(TokioIo::new(stream), svc).await;
        });
    }
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

async fn handle(app: Arc<App>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let resp = match (req.method(), req.uri().path()) {
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
        (&Method::POST, "/admin/pause") => room_change(&app, |room, cfg| {
            room.set_overrides(
                cfg,
                Overrides {
                    mode: Some("paused".into()),
                    ..Overrides::default()
                },
            )
        }),
        (&Method::POST, "/admin/resume") => {
            room_change(&app, |room, cfg| Ok(room.clear_overrides(cfg, false)))
        }
        (&Method::POST, "/admin/room") => {
            let body = read_json(req).await;
            match body {
                Err(e) => json(StatusCode::BAD_REQUEST, &serde_json::json!({ "error": e })),
                Ok(value) if value.get("reset").and_then(|v| v.as_bool()) == Some(true) => {
                    room_change(&app, |room, cfg| Ok(room.clear_overrides(cfg, true)))
                }
                Ok(value) => match serde_json::from_value::<Overrides>(value) {
                    Ok(o) => room_change(&app, |room, cfg| room.set_overrides(cfg, o)),
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
        (&Method::GET, "/admin/status") => json(StatusCode::OK, &status(&app).await),
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
            | "/admin/pause" | "/admin/resume" | "/admin/room" | "/admin/drain" | "/admin/undrain",
        ) => respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "method not allowed\n",
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n"),
    };
    Ok(resp)
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
    })
}
