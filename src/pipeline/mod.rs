//! The request path: one context per request, phases in order, errors
//! turned into answers in one place, then metrics and the access log.
//!
//! ```text
//! guard -> route -> admit -> vouchers -> forward -> finish -> log
//! ```
//!
//! Each phase returns a [`Step`]: the request (with what the phase learnt)
//! for the next phase, or an answer that ends the path; or an
//! [`HttpError`], which [`handle`] turns into an answer. `route` answers
//! usher's own endpoints and sends open paths (and rooms without a
//! `[room]`) straight to `forward`; `admit`, `vouchers` and `finish` are the
//! room's (`room.rs`, `vouchers.rs`).

mod accept;
mod error;
pub mod relayed;
mod room;
mod talk;
mod vouchers;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::{Request, Response};
use hyper::body::Incoming;

pub use error::HttpError;

use crate::app::App;
use crate::config::room::RoomConfig;
use crate::config::Config;
use crate::h1_guard::GuardHandle;
use crate::holding;
use crate::metrics::Outcome;
use crate::proxy::headers;
use crate::Body;

/// What usher knows about a client connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The socket peer, or on a PROXY protocol listener the visitor's
    /// address from the header (`server::proxy_protocol`).
    pub peer: SocketAddr,
    /// Whether the client reached usher over TLS.
    pub tls: bool,
    /// The listener's address, as a label.
    pub listener: Arc<str>,
    /// Verdicts of the HTTP/1 smuggling guard (HTTP/1 connections only).
    pub guard: Option<GuardHandle>,
}

/// Everything a phase needs, built once per request.
pub struct Ctx<'a> {
    /// Shared state.
    pub app: &'a App,
    /// The config snapshot this request uses from start to end.
    pub cfg: Arc<Config>,
    /// The connection.
    pub conn: &'a ConnInfo,
    /// Whether the peer is a trusted proxy.
    pub peer_trusted: bool,
    /// The visitor's address (see [`headers::client_ip`]).
    pub client_ip: IpAddr,
}

impl Ctx<'_> {
    /// What forwarding this request needs, from this context.
    pub fn forward(&self) -> crate::proxy::Forward<'_> {
        crate::proxy::Forward {
            cfg: &self.cfg,
            origin: &self.app.origin,
            slots: &self.app.slots,
            metrics: &self.app.metrics,
            health: &self.app.room.health,
            peer: self.conn.peer.ip(),
            peer_trusted: self.peer_trusted,
            tls: self.conn.tls,
        }
    }
}

/// Serves one request; never fails (errors become answers here).
pub async fn handle(
    app: Arc<App>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let cfg = app.config.load_full();
    let trusted = &cfg.server.trusted_proxies;
    let peer_trusted = !trusted.is_empty() && crate::net::is_trusted(conn.peer.ip(), trusted);
    let client_ip = headers::client_ip(conn.peer.ip(), req.headers(), trusted);
    // The clock is read for the access log only.
    let access = app
        .access_log
        .enabled()
        .then(|| (crate::logging::RequestLine::of(&req), Instant::now()));
    // HTTP/1 only: the smuggling guard stops reading the byte stream after a
    // head that asks for an upgrade (what follows may not be HTTP/1), so
    // unless the upgrade happens, the connection must not carry another request.
    let unguarded_after = conn.guard.is_some()
        && (req.headers().contains_key(http::header::UPGRADE)
            || req.method() == http::Method::CONNECT);
    // Kept for an error page in the visitor's language (a refcount, no copy).
    let accept_language = req.headers().get(http::header::ACCEPT_LANGUAGE).cloned();
    let ctx = Ctx {
        app: &app,
        cfg,
        conn: &conn,
        peer_trusted,
        client_ip,
    };
    let (resp, outcome) = match serve(&ctx, req).await {
        Ok(answer) => answer,
        Err(e) => {
            if e.outcome() == Outcome::OriginError {
                tracing::warn!(client = %ctx.client_ip, error = %e, "origin request failed");
            } else {
                tracing::debug!(client = %ctx.client_ip, error = %e, "request refused");
            }
            let outcome = e.outcome();
            let lang = holding::negotiate(
                accept_language.as_ref().and_then(|v| v.to_str().ok()),
                None,
                holding::Lang::Ko,
            );
            (e.into_response_for(lang, ctx.cfg.room.is_some()), outcome)
        }
    };
    let mut resp = resp;
    if unguarded_after && resp.status() != http::StatusCode::SWITCHING_PROTOCOLS {
        resp.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
    }
    app.metrics.request(outcome, resp.status().as_u16());
    if let Some((line, started)) = access {
        app.access_log
            .write(&line, ctx.client_ip, &resp, outcome, started.elapsed());
    }
    Ok(resp)
}

/// What a phase makes of the request: hands it on to the next phase (with
/// what the phase learnt), or answers it, which ends the path.
pub(super) enum Step<T> {
    /// On to the next phase.
    Next(T),
    /// Answered here; the later phases do not run.
    Answer(Response<Body>, Outcome),
}

/// A phase's result.
pub(super) type Phase<T> = Result<Step<T>, HttpError>;

/// The request's value from `$phase`, or its answer returned.
macro_rules! next {
    ($phase:expr) => {
        match $phase? {
            Step::Next(v) => v,
            Step::Answer(resp, outcome) => return Ok((resp, outcome)),
        }
    };
}

/// Where `route` sends a request on.
enum Routed<'r> {
    /// Straight to the origin (no room, or a path the room leaves open).
    Open,
    /// Through the room's admission; `claim_route` when it is the origin's
    /// claim route that `[vouchers]` intercepts (decided here, once).
    Room {
        room: &'r RoomConfig,
        claim_route: bool,
    },
}

/// The phases in order, up to the answer.
async fn serve(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
) -> Result<(Response<Body>, Outcome), HttpError> {
    let req = next!(guard(ctx, req));
    let (req, routed) = next!(route(ctx, req).await);
    let (room, claim_route) = match routed {
        Routed::Open => {
            let resp = Box::pin(crate::proxy::forward(&ctx.forward(), req)).await?;
            return Ok((room::finish_open(resp), Outcome::Forwarded));
        }
        Routed::Room { room, claim_route } => (room, claim_route),
    };
    let (req, mut admitted) = next!(Box::pin(room::admit(ctx, room, req)).await);
    let req = if claim_route {
        next!(Box::pin(vouchers::at_claim_route(ctx, req, &mut admitted)).await)
    } else {
        req
    };
    let resp = Box::pin(crate::proxy::forward(&ctx.forward(), req)).await?;
    Ok((room::finish(ctx, room, resp, admitted), Outcome::Forwarded))
}

/// The smuggling guard's verdict on this request's head (HTTP/1), and the
/// headers only usher may set removed.
fn guard(ctx: &Ctx<'_>, mut req: Request<Incoming>) -> Phase<Request<Incoming>> {
    if let Some(guard) = &ctx.conn.guard {
        if let Err(r) = guard.next_request() {
            ctx.app
                .metrics
                .bad_requests
                .with_label_values(&[r.label()])
                .inc();
            return Err(if r.status() == 431 {
                HttpError::HeadTooLarge(r.label())
            } else {
                HttpError::BadRequest(r.label())
            });
        }
    }
    // Only usher says which code was issued.
    req.headers_mut().remove(&vouchers::X_USHER_VOUCHER);
    Ok(Step::Next(req))
}

/// usher's own endpoints answered; everything else sent on, to the room or
/// straight to the origin.
async fn route<'c>(
    ctx: &'c Ctx<'_>,
    req: Request<Incoming>,
) -> Phase<(Request<Incoming>, Routed<'c>)> {
    if req.uri().path() == vouchers::CLAIM_PATH {
        return answered(Box::pin(vouchers::endpoint(ctx, req)).await);
    }
    let Some(room) = &ctx.cfg.room else {
        if matches!(req.uri().path(), talk::FEEDBACK_PATH | talk::EVENT_PATH) {
            // No room, no feedback or notice; and never the origin's.
            return Err(HttpError::NotFound);
        }
        return Ok(Step::Next((req, Routed::Open)));
    };
    match room::classify(ctx, room, &req) {
        // The intercepted claim route needs a pass wherever it stands.
        room::Route::Open if vouchers::intercepts(ctx.cfg.vouchers.as_ref(), &req) => {
            let routed = Routed::Room {
                room,
                claim_route: true,
            };
            Ok(Step::Next((req, routed)))
        }
        room::Route::Open => Ok(Step::Next((req, Routed::Open))),
        room::Route::Status if req.uri().path() == "/__usher/status" => {
            answered(Box::pin(room::status(ctx, room, req)).await)
        }
        room::Route::Status if req.uri().path() == talk::FEEDBACK_PATH => {
            answered(Box::pin(talk::feedback(ctx, room, req)).await)
        }
        room::Route::Status if req.uri().path() == talk::EVENT_PATH => {
            answered(talk::event(ctx, room, &req))
        }
        room::Route::Status if req.uri().path().starts_with(holding::ASSETS_PREFIX) => {
            answered(room::asset(&req))
        }
        room::Route::Status => Err(HttpError::NotFound),
        room::Route::Protected => {
            let claim_route = vouchers::intercepts(ctx.cfg.vouchers.as_ref(), &req);
            Ok(Step::Next((req, Routed::Room { room, claim_route })))
        }
    }
}

/// An endpoint's answer as the step that ends the path.
fn answered<T>(answer: Result<(Response<Body>, Outcome), HttpError>) -> Phase<T> {
    answer.map(|(resp, outcome)| Step::Answer(resp, outcome))
}

#[cfg(test)]
mod tests {
    /// The size of the future `f` returns, without calling it.
    fn future_size<F, A, B, C, Fut>(_: F) -> usize
    where
        F: Fn(A, B, C) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// hyper moves the service's future by value (into the dispatcher's
    /// slot, through the connection's wrapper), and a move copies the
    /// whole future, used or not: with the forwarding path inline it was
    /// 4.4 KB, copied on every request, the holding page's included. The
    /// paths are boxed where they branch, so each request allocates only
    /// the one it takes.
    #[test]
    fn the_per_request_future_stays_small() {
        let size = future_size(super::handle);
        assert!(size <= 2048, "pipeline::handle's future is {size} bytes");
    }
}
