//! Forwarding to the origin: the request goes out as the client sent it
//! (method, path and query byte-for-byte, headers in order) minus the
//! hop-by-hop fields, plus the forwarding headers; the answer comes back
//! streamed, holding an origin slot until its body ends.

pub mod body;
pub mod client;
pub mod headers;
pub mod health;
pub mod outbound;
pub mod pool;
pub mod slots;
mod upgrade;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Either};
use hyper::body::Incoming;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::Body;
use client::OriginClient;
use health::OriginHealth;
use slots::{NoSlot, Slots};

/// What one forward needs besides the request: the config snapshot the
/// request was decided under, the live origin, its in-flight slots, where
/// to count, and who sent the request.
pub struct Forward<'a> {
    pub cfg: &'a Config,
    pub origin: &'a ArcSwap<OriginClient>,
    pub slots: &'a Arc<Slots>,
    pub metrics: &'a Metrics,
    pub health: &'a OriginHealth,
    /// The connection's peer (a proxy's address when it is trusted).
    pub peer: IpAddr,
    /// Whether the peer is a trusted proxy (its forwarding headers kept).
    pub peer_trusted: bool,
    /// Whether the client came over TLS (`X-Forwarded-Proto: https`).
    pub tls: bool,
}

/// Why a forward brought no origin answer. The pipeline turns it into the
/// visitor's answer, in the one place every error becomes one.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The request cannot go out as sent; the connection is closed.
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    /// The body is over `server.max_request_body` (announced or counted).
    #[error("request body over the {0}-byte limit")]
    PayloadTooLarge(u64),
    /// The body stalled for `server.body_read_timeout`.
    #[error("request body stalled for {0:?}")]
    RequestTimeout(Duration),
    /// No origin slot free (in-flight cap reached, queue full or slow).
    #[error("{0}")]
    OriginBusy(NoSlot),
    /// No response headers within `origin.response_timeout`.
    #[error("origin sent no response within {0:?}")]
    OriginTimeout(Duration),
    /// The origin could not be reached or broke the exchange.
    #[error("origin {kind} error: {detail}")]
    OriginFailed {
        /// Bounded label (`connect`, `reset`, `protocol`, ...).
        kind: &'static str,
        /// The underlying error, for the log.
        detail: String,
    },
}

/// The largest body the client announced, if it announced one.
fn content_length(req: &Request<Incoming>) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// Whether this is an HTTP/1.1 upgrade request (WebSocket and friends).
fn wants_upgrade(req: &Request<Incoming>) -> bool {
    req.version() == Version::HTTP_11
        && req.headers().contains_key(header::UPGRADE)
        && headers::list_items(req.headers(), header::CONNECTION)
            .any(|t| t.eq_ignore_ascii_case("upgrade"))
}

/// Sends `req` to the origin and returns its response.
pub async fn forward(
    ctx: &Forward<'_>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ForwardError> {
    let cfg = ctx.cfg;
    let max_body = cfg.server.max_request_body;
    if content_length(&req).is_some_and(|n| n > max_body) {
        return Err(ForwardError::PayloadTooLarge(max_body));
    }
    let upgrade = wants_upgrade(&req);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let (mut parts, body) = req.into_parts();
    // h2 requests carry the host in :authority only; the origin gets it as Host.
    if !parts.headers.contains_key(header::HOST) {
        if let Some(a) = parts.uri.authority() {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                parts.headers.insert(header::HOST, v);
            }
        }
    }
    if parts.version == Version::HTTP_2 && !cfg.origin.http2 {
        headers::join_cookies(&mut parts.headers);
    }
    let trailers = headers::remove_hop_by_hop(&mut parts.headers, upgrade);
    if trailers {
        // usher relays trailers, so it can ask the origin for them in turn.
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    let host = parts.headers.get(header::HOST).cloned();
    headers::set_forwarding(
        &mut parts.headers,
        &headers::Hop {
            peer: ctx.peer,
            trusted: ctx.peer_trusted,
            proto: if ctx.tls { "https" } else { "http" },
            host: host.as_ref(),
        },
    );
    let origin = ctx.origin.load();
    if !cfg.origin.preserve_host || !parts.headers.contains_key(header::HOST) {
        // (A request with no host at all gets the origin's, as HTTP/1.1 needs one.)
        parts.headers.insert(header::HOST, origin.host.clone());
    }
    // The request target is moved, not re-parsed: its bytes go out as sent.
    parts.uri = target(std::mem::take(&mut parts.uri), &parts.method, &origin)?;
    parts.version = if cfg.origin.http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    // Kept to send once more if the origin closes a reused keep-alive
    // connection just as usher sends on it (a race every proxy meets; nginx
    // retries idempotent requests the same way). Only requests that can be
    // repeated safely: idempotent, no body to replay, no upgrade.
    let replayable = !upgrade && idempotent(&parts.method) && http_body::Body::is_end_stream(&body);
    let idle = cfg.server.body_read_timeout;
    // No body (most requests): nothing to watch, no timer to arm, no fate
    // to share.
    let fate = (!http_body::Body::is_end_stream(&body)).then(Arc::<body::BodyFate>::default);
    let body: Body = match &fate {
        None => body.map_err(Into::into).boxed(),
        Some(fate) if max_body == u64::MAX => {
            body::RequestBody::new(body, idle, fate.clone()).boxed()
        }
        Some(fate) => {
            let limited = http_body_util::Limited::new(body, max_body as usize);
            body::RequestBody::new(limited, idle, fate.clone()).boxed()
        }
    };

    let slot = origin_slot(ctx.slots, cfg, ctx.metrics).await?;
    let started = Instant::now();
    let send = async {
        match &origin.pool {
            Some(pool) => send_pooled(pool, (parts, body), replayable)
                .await
                .map(|r| r.map(Either::Left))
                .map_err(Failure::Pool),
            None => {
                let replay = replayable.then(|| parts.clone());
                send_legacy(&origin.client, Request::from_parts(parts, body), replay)
                    .await
                    .map(|r| r.map(Either::Right))
                    .map_err(Failure::Legacy)
            }
        }
    };
    let sent = tokio::time::timeout(cfg.origin.response_timeout, send).await;
    let took = started.elapsed();
    ctx.metrics.origin_duration.observe(took.as_secs_f64());
    let failed = !matches!(&sent, Ok(Ok(r)) if !r.status().is_server_error());
    ctx.health.record(took, failed);
    let mut resp = match sent {
        Err(_) => {
            ctx.metrics.origin_error("timeout");
            return Err(ForwardError::OriginTimeout(cfg.origin.response_timeout));
        }
        Ok(Err(e)) => {
            // The client's upload broke, not the origin: answer it as such
            // (and keep it out of the origin error figures).
            if let Some(fault) = fate.as_ref().and_then(|f| f.get()) {
                return Err(match fault {
                    body::BodyFault::Malformed => ForwardError::BadRequest("request body"),
                    body::BodyFault::TooLarge => ForwardError::PayloadTooLarge(max_body),
                    body::BodyFault::Stalled => ForwardError::RequestTimeout(idle),
                });
            }
            let kind = e.classify();
            ctx.metrics.origin_error(kind);
            return Err(ForwardError::OriginFailed {
                kind,
                detail: e.to_string(),
            });
        }
        Ok(Ok(r)) => r,
    };

    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_side) = client_upgrade {
            let origin_side = hyper::upgrade::on(&mut resp);
            upgrade::tunnel(client_side, origin_side, slot);
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, crate::empty_body()));
        }
    }
    let (mut parts, body) = resp.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers, false);
    if upgrade {
        // The upgrade was refused; what the client pipelined after its
        // request was not meant as HTTP, so the connection ends here.
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    Ok(Response::from_parts(
        parts,
        body::SlotBody::new(body, slot).boxed(),
    ))
}

/// An origin slot for one request (`origin.max_in_flight`), waiting in the
/// bounded queue; none free in time is counted and refused.
pub async fn origin_slot(
    slots: &Arc<Slots>,
    cfg: &Config,
    metrics: &Metrics,
) -> Result<slots::Slot, ForwardError> {
    slots
        .acquire(cfg.origin.max_queue, cfg.origin.queue_timeout)
        .await
        .map_err(|e| {
            metrics.origin_error("overloaded");
            ForwardError::OriginBusy(e)
        })
}

/// Methods whose requests may be sent twice (RFC 9110 §9.2.2).
fn idempotent(m: &http::Method) -> bool {
    use http::Method;
    [
        Method::GET,
        Method::HEAD,
        Method::OPTIONS,
        Method::TRACE,
        Method::PUT,
        Method::DELETE,
    ]
    .contains(m)
}

/// The request target as it goes to the origin: origin-form for usher's
/// own HTTP/1.1 pool (moved, not re-parsed, when the client sent it so),
/// absolute for hyper-util's client, which makes it origin-form itself.
fn target(
    uri: Uri,
    method: &http::Method,
    origin: &client::OriginClient,
) -> Result<Uri, ForwardError> {
    if origin.pool.is_some() {
        if *method == http::Method::CONNECT {
            // Authority-form, naming the origin (as hyper-util's client did).
            return Ok(Uri::from(origin.authority.clone()));
        }
        if uri.scheme().is_none() && uri.authority().is_none() && uri.path_and_query().is_some() {
            return Ok(uri);
        }
    }
    let mut target = uri.into_parts();
    if origin.pool.is_some() {
        target.scheme = None;
        target.authority = None;
    } else {
        target.scheme = Some(origin.scheme.clone());
        target.authority = Some(origin.authority.clone());
    }
    if target.path_and_query.is_none() {
        target.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Uri::from_parts(target).map_err(|_| ForwardError::BadRequest("request target"))
}

/// Sends on usher's own pool. A request the connection never took (it had
/// closed) goes out on the next one. A bodiless idempotent request on a
/// reused connection is kept (its head only, and only there: a new
/// connection cannot have been closed by an idle timeout) and, if the
/// origin closed that connection under it, sent once more.
async fn send_pooled(
    pool: &std::sync::Arc<pool::Pool>,
    request: (http::request::Parts, crate::Body),
    replayable: bool,
) -> Result<Response<pool::PooledBody>, pool::SendError> {
    let mut pending = request;
    let mut unsent_tries = 0;
    let mut replayed = false;
    loop {
        let mut conn = pool.checkout().await?;
        let (parts, body) = pending;
        let replay = (replayable && conn.reused && !replayed).then(|| parts.clone());
        match conn.send(Request::from_parts(parts, body)).await {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                // After a 101 the connection belongs to the tunnel.
                let reusable = parts.status != StatusCode::SWITCHING_PROTOCOLS;
                return Ok(Response::from_parts(
                    parts,
                    conn.carry(pool, body, reusable),
                ));
            }
            Err((_, Some(unsent))) if unsent_tries < 3 => {
                unsent_tries += 1;
                pending = unsent.into_parts();
            }
            Err((e, _)) => match replay {
                Some(parts) if classify_hyper(&e_source(&e)) == "reset" => {
                    tracing::debug!(error = %e, "origin closed the connection under the request; sending it again");
                    replayed = true;
                    pending = (parts, crate::empty_body());
                }
                _ => return Err(e),
            },
        }
    }
}

fn e_source(e: &pool::SendError) -> Option<&(dyn std::error::Error + 'static)> {
    match e {
        pool::SendError::Connect(_) => None,
        pool::SendError::Http(h) => Some(h),
    }
}

/// Sends on hyper-util's client (an HTTP/2 origin), once more on a reset
/// for a request kept to replay.
async fn send_legacy(
    client: &hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        crate::Body,
    >,
    req: Request<crate::Body>,
    replay: Option<http::request::Parts>,
) -> Result<Response<Incoming>, hyper_util::client::legacy::Error> {
    match (client.request(req).await, replay) {
        (Err(e), Some(parts))
            if !e.is_connect() && classify_hyper(&std::error::Error::source(&e)) == "reset" =>
        {
            tracing::debug!(error = %e, "origin closed the connection under the request; sending it again");
            client
                .request(Request::from_parts(parts, crate::empty_body()))
                .await
        }
        (sent, _) => sent,
    }
}

/// Why the origin gave no response.
#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Pool(pool::SendError),
    #[error(transparent)]
    Legacy(hyper_util::client::legacy::Error),
}

impl Failure {
    /// A bounded label for the metrics.
    fn classify(&self) -> &'static str {
        match self {
            Failure::Pool(e) if e.is_connect() => "connect",
            Failure::Pool(e) => classify_hyper(&e_source(e)),
            Failure::Legacy(e) if e.is_connect() => "connect",
            Failure::Legacy(e) => classify_hyper(&std::error::Error::source(e)),
        }
    }
}

/// A bounded label for an origin error, from the chain starting at `source`.
fn classify_hyper(source: &Option<&(dyn std::error::Error + 'static)>) -> &'static str {
    let mut source = *source;
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>() {
            if h.is_parse() || h.is_parse_status() {
                return "protocol";
            }
            if h.is_incomplete_message() || h.is_canceled() || h.is_closed() {
                return "reset";
            }
            if h.is_timeout() {
                return "timeout";
            }
            if h.is_body_write_aborted() || h.is_user() {
                return "body";
            }
        }
        if s.downcast_ref::<std::io::Error>().is_some() {
            return "reset";
        }
        source = s.source();
    }
    "protocol"
}
