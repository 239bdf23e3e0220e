//! usher's own endpoints for talking with the line: `POST
//! /__usher/feedback` (a waiting or admitted visitor reports a problem)
//! and `GET /__usher/event` (the public event notice). Neither ever
//! reaches the origin.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::accept::{format, Format};
use super::room::language;
use super::{Ctx, HttpError};
use crate::admission::room::LANG_COOKIE;
use crate::config::room::RoomConfig;
use crate::holding::{self, EventView};
use crate::metrics::Outcome;
use crate::talk::feedback::MAX_BODY_BYTES;
use crate::talk::{Post, Refused};
use crate::tokens::cookie::get_cookie;
use crate::{full_body, Body};

/// The feedback endpoint.
pub const FEEDBACK_PATH: &str = "/__usher/feedback";
/// The event notice.
pub const EVENT_PATH: &str = "/__usher/event";
/// How long anyone may cache the notice: the countdown and stock move,
/// and an announcement should reach readers within a few seconds.
const EVENT_MAX_AGE: &str = "public, max-age=5";

fn answer(status: StatusCode, body: Bytes, content_type: &'static str) -> Response<Body> {
    let mut resp = Response::new(full_body(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

/// `POST /__usher/feedback`: `category` and `text` (form or JSON) from a
/// visitor with a valid ticket or pass.
pub async fn feedback(
    ctx: &Ctx<'_>,
    room: &RoomConfig,
    req: Request<Incoming>,
) -> Result<(Response<Body>, Outcome), HttpError> {
    if req.method() != Method::POST {
        return Err(HttpError::MethodNotAllowed);
    }
    let refused = &ctx.app.metrics.talk.feedback_refused;
    // Who, before reading a byte of the body: a post without a valid
    // ticket or pass costs one HMAC.
    let Some(visitor) = ctx.app.room.visitor(room, req.headers()).await else {
        refused.with_label_values(&["no_visitor"]).inc();
        return Err(HttpError::Forbidden("feedback needs a ticket or pass"));
    };
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        refused.with_label_values(&["body"]).inc();
        return Err(HttpError::PayloadTooLarge(MAX_BODY_BYTES as u64));
    }
    let (lang, _) = language(
        room,
        &super::room::Asked::of(&req),
        get_cookie(req.headers(), LANG_COOKIE),
    );
    let json_in = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let json_out = format(req.headers(), Format::Html) == Format::Json;
    let body = match http_body_util::Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            refused.with_label_values(&["body"]).inc();
            return Err(HttpError::PayloadTooLarge(MAX_BODY_BYTES as u64));
        }
    };
    let (category, text) = if json_in {
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_owned();
        (field("category"), field("text"))
    } else {
        (form_field(&body, "category"), form_field(&body, "text"))
    };
    let post = Post {
        category: &category,
        text: &text,
        visitor: visitor.id,
        state: visitor.state,
        position: visitor.position,
        lang: lang.as_str(),
    };
    let talk = &ctx.app.talk;
    match talk
        .feedback
        .post(post, ctx.client_ip, crate::talk::unix_secs())
    {
        Ok(record) => {
            ctx.app
                .metrics
                .talk
                .feedback
                .with_label_values(&[&record.category])
                .inc();
            tracing::info!(id = record.id, category = %record.category, visitor = %record.visitor, "visitor feedback received");
            if talk.webhook.offer(&record) == crate::talk::webhook::Offer::Dropped {
                let m = &ctx.app.metrics.talk.webhook;
                m.with_label_values(&["dropped"]).inc();
            }
            if let Some(sh) = &talk.shared {
                let line = serde_json::to_string(&record).unwrap_or_default();
                let keep = crate::talk::feedback::MAX_KEPT;
                if let Err(e) = sh.redis.push_feedback(&line, keep).await {
                    // Kept on this node (memory) all the same.
                    tracing::warn!(error = %e, id = record.id, "feedback not shared through Redis");
                }
            }
            let mut resp = if json_out {
                let body = serde_json::json!({ "received": true, "id": record.id });
                answer(
                    StatusCode::OK,
                    Bytes::from(body.to_string()),
                    "application/json",
                )
            } else {
                answer(
                    StatusCode::OK,
                    holding::feedback_page(lang),
                    "text/html; charset=utf-8",
                )
            };
            resp.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            Ok((resp, Outcome::Usher))
        }
        Err(e) => {
            refused.with_label_values(&[e.label()]).inc();
            Err(match e {
                Refused::Limited { retry_after, .. } => HttpError::TooManyRequests(retry_after),
                other => HttpError::Unprocessable(other.to_string()),
            })
        }
    }
}

/// One field of an `application/x-www-form-urlencoded` body (empty when
/// absent or not UTF-8).
fn form_field(body: &[u8], name: &str) -> String {
    body.split(|b| *b == b'&')
        .filter_map(|kv| {
            let mut it = kv.splitn(2, |b| *b == b'=');
            Some((it.next()?, it.next().unwrap_or(b"")))
        })
        .find(|(k, _)| *k == name.as_bytes())
        .map(|(_, v)| {
            let plus: Vec<u8> = v
                .iter()
                .map(|b| if *b == b'+' { b' ' } else { *b })
                .collect();
            percent_encoding::percent_decode(&plus)
                .decode_utf8()
                .map(|s| s.into_owned())
                .unwrap_or_default()
        })
        .unwrap_or_default()
}

/// `GET /__usher/event`: the notice as HTML, or JSON with
/// `Accept: application/json` or `?format=json`.
pub fn event(
    ctx: &Ctx<'_>,
    room: &RoomConfig,
    req: &Request<Incoming>,
) -> Result<(Response<Body>, Outcome), HttpError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(HttpError::MethodNotAllowed);
    }
    let talk = &ctx.app.talk;
    let current = talk.board.current();
    let history = talk.board.history();
    let settings = ctx.app.room.settings(room);
    // the line's clock: the same answer from every node
    let now_ms = ctx.app.room.line_unix_ms();
    let opens_in = room.opens_at.as_ref().and_then(|(_, at)| {
        let at = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        (at > now_ms).then(|| (at - now_ms).div_ceil(1000))
    });
    let view = EventView {
        event: &room.event,
        opens_at: room.opens_at.as_ref().map(|(t, _)| t.as_str()),
        opens_in_seconds: opens_in,
        mode: settings.mode.as_str(),
        prequeue_draw: room.opens_at.is_some(),
        stock: ctx.cfg.vouchers.as_ref().map(|v| v.stock),
        vouchers_left: ctx.app.room.vouchers_left(),
        one_per_person: ctx.cfg.vouchers.is_some(),
        message: &current,
        history: &history,
    };
    let as_json = format(req.headers(), Format::Html) == Format::Json
        || req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|kv| kv == "format=json"));
    let mut resp = if as_json {
        answer(
            StatusCode::OK,
            holding::event_json(&view),
            "application/json",
        )
    } else {
        // `?usher_lang=` or Accept-Language, never the cookie: the page
        // is cached alike for everyone asking in one language.
        let asked = req
            .uri()
            .query()
            .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("usher_lang=")));
        let accept = req
            .headers()
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok());
        let default = if room.default_english {
            holding::Lang::En
        } else {
            holding::Lang::Ko
        };
        let lang = holding::negotiate(accept, asked, default);
        answer(
            StatusCode::OK,
            holding::event_page(&view, lang),
            "text/html; charset=utf-8",
        )
    };
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(EVENT_MAX_AGE),
    );
    // Alike for everyone: no cookie is read or set here.
    h.insert(
        header::VARY,
        HeaderValue::from_static("Accept, Accept-Language"),
    );
    Ok((resp, Outcome::Usher))
}
