//! Forwarding to the origin: the request goes out as the client sent it
//! (method, path and query byte-for-byte, headers in order) minus the
//! hop-by-hop fields, plus the forwarding headers; the answer comes back
//! streamed, holding an origin slot until its body ends.

pub mod body;
pub mod client;
pub mod headers;
pub mod outbound;
pub mod slots;
mod upgrade;

use std::sync::Arc;
use std::time::Instant;

use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::pipeline::{Ctx, HttpError};
use crate::Body;

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
        && req
            .headers()
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// Sends `req` to the origin and returns its response.
pub async fn forward(
    ctx: &Ctx<'_>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, HttpError> {
    let cfg = &ctx.cfg;
    let max_body = cfg.server.max_request_body;
    if content_length(&req).is_some_and(|n| n > max_body) {
        return Err(HttpError::PayloadTooLarge(max_body));
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
            peer: ctx.conn.peer.ip(),
            trusted: ctx.peer_trusted,
            proto: if ctx.conn.tls { "https" } else { "http" },
            host: host.as_ref(),
        },
    );
    let origin = ctx.app.origin.load();
    if !cfg.origin.preserve_host {
        if let Ok(v) = HeaderValue::from_str(origin.authority.as_str()) {
            parts.headers.insert(header::HOST, v);
        }
    }
    // The request target is moved, not re-parsed: its bytes go out as sent.
    let mut target = std::mem::take(&mut parts.uri).into_parts();
    target.scheme = Some(origin.scheme.clone());
    target.authority = Some(origin.authority.clone());
    if target.path_and_query.is_none() {
        target.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    parts.uri = Uri::from_parts(target).map_err(|_| HttpError::BadRequest("request target"))?;
    parts.version = if cfg.origin.http2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    // Kept to send once more if the origin closes a reused keep-alive
    // connection just as usher sends on it (a race every proxy meets; nginx
    // retries idempotent requests the same way). Only requests that can be
    // repeated safely: idempotent, no body to replay, no upgrade.
    let replay = (!upgrade && idempotent(&parts.method) && http_body::Body::is_end_stream(&body))
        .then(|| parts.clone());
    let fate = Arc::new(body::BodyFate::default());
    let idle = cfg.server.body_read_timeout;
    let body: Body = if http_body::Body::is_end_stream(&body) {
        // No body (most requests): nothing to watch, no timer to arm.
        body.map_err(Into::into).boxed()
    } else if max_body == u64::MAX {
        body::RequestBody::new(body, idle, fate.clone()).boxed()
    } else {
        let limited = http_body_util::Limited::new(body, max_body as usize);
        body::RequestBody::new(limited, idle, fate.clone()).boxed()
    };
    let out = Request::from_parts(parts, body);

    let slot = ctx
        .app
        .slots
        .acquire(cfg.origin.max_queue, cfg.origin.queue_timeout)
        .await
        .map_err(|e| {
            ctx.app.metrics.origin_error("overloaded");
            HttpError::OriginBusy(e)
        })?;
    let started = Instant::now();
    let send = async {
        match (origin.client.request(out).await, replay) {
            (Err(e), Some(parts)) if !e.is_connect() && classify(&e) == "reset" => {
                tracing::debug!(error = %e, "origin closed the connection under the request; sending it again");
                origin
                    .client
                    .request(Request::from_parts(parts, crate::empty_body()))
                    .await
            }
            (sent, _) => sent,
        }
    };
    let sent = tokio::time::timeout(cfg.origin.response_timeout, send).await;
    let took = started.elapsed();
    ctx.app.metrics.origin_duration.observe(took.as_secs_f64());
    let failed = !matches!(&sent, Ok(Ok(r)) if !r.status().is_server_error());
    ctx.app.room.health.record(took, failed);
    let mut resp = match sent {
        Err(_) => {
            ctx.app.metrics.origin_error("timeout");
            return Err(HttpError::OriginTimeout(cfg.origin.response_timeout));
        }
        Ok(Err(e)) => {
            // The client's upload broke, not the origin: answer it as such
            // (and keep it out of the origin error figures).
            if let Some(fault) = fate.get() {
                return Err(match fault {
                    body::BodyFault::Malformed => HttpError::BadRequest("request body"),
                    body::BodyFault::TooLarge => HttpError::PayloadTooLarge(max_body),
                    body::BodyFault::Stalled => HttpError::RequestTimeout(idle),
                });
            }
            let kind = classify(&e);
            ctx.app.metrics.origin_error(kind);
            return Err(HttpError::OriginFailed {
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

/// A bounded label for an origin client error.
fn classify(e: &hyper_util::client::legacy::Error) -> &'static str {
    if e.is_connect() {
        return "connect";
    }
    let mut source = std::error::Error::source(e);
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
