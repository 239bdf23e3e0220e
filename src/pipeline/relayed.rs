//! The room's part in requests the relay reads itself (HTTP/1.1 `GET` or
//! `HEAD` without a body, from a peer that is not a trusted proxy): the
//! same phases as [`super::handle`] runs for hyper's requests, on what the
//! relay read of the head. A waiting visitor's holding page or status JSON
//! is answered here; an open path or an admitted visitor goes on to the
//! origin through the relay, which then hands the origin's signals back
//! ([`finish`]); anything else (usher's other endpoints, long polls, the
//! intercepted claim route) is hyper's.

use std::sync::Arc;

use http::{HeaderValue, Response};

use super::room::{self, Asked, Own, Route};
pub use super::room::{Admitted, Reply};
use super::{vouchers, ConnInfo, Ctx, HttpError};
use crate::app::App;
use crate::config::Config;
use crate::holding;
use crate::metrics::Outcome;
use crate::Body;

/// What the relay read of a request's head for the room.
pub struct RawRequest<'a> {
    /// `HEAD` (else `GET`).
    pub head: bool,
    /// The path and query, as sent.
    pub target: &'a str,
    pub accept: Option<&'a str>,
    pub accept_language: Option<&'a str>,
    /// The values of its `Cookie` fields, in order.
    pub cookies: &'a [&'a [u8]],
    /// The `X-Usher-Pow` field's value.
    pub pow: Option<&'a str>,
    /// The value of the room's bypass header (`room.bypass_header`).
    pub bypass: Option<&'a [u8]>,
}

/// Where the room sends a request the relay read.
pub enum Relayed {
    /// Not the relay's: hyper serves it (the relay gives its bytes back).
    Hyper,
    /// The room's answer (a holding page, status JSON).
    Reply(Reply, Outcome),
    /// usher's own answer (an error page).
    Answer(Response<Body>, Outcome),
    /// To the origin as sent: a path the room leaves open.
    Open,
    /// To the origin without usher's cookies and fields, for an admitted
    /// visitor; the origin's answer then goes through [`finish`].
    Admitted(Admitted),
}

/// The room's word on `raw` (the config has a `[room]`).
pub async fn decide(app: &App, cfg: Arc<Config>, conn: &ConnInfo, raw: &RawRequest<'_>) -> Relayed {
    let client_ip = crate::net::canonical(conn.peer.ip());
    let ctx = Ctx {
        app,
        cfg,
        conn,
        peer_trusted: false,
        client_ip,
    };
    match route(&ctx, raw).await {
        Ok(step) => step,
        Err(e) => {
            tracing::debug!(client = %client_ip, error = %e, "request refused");
            let lang = holding::negotiate(raw.accept_language, None, holding::Lang::Ko);
            let outcome = e.outcome();
            Relayed::Answer(e.into_response_for(lang, true), outcome)
        }
    }
}

async fn route(ctx: &Ctx<'_>, raw: &RawRequest<'_>) -> Result<Relayed, HttpError> {
    let Some(room) = ctx.cfg.room.as_ref() else {
        return Ok(Relayed::Hyper);
    };
    // Read as hyper reads it (a fragment dropped, odd bytes refused), so
    // both paths classify the same target the same way.
    let Ok(target) = http::uri::PathAndQuery::try_from(raw.target) else {
        return Ok(Relayed::Hyper);
    };
    let (path, query) = (target.path(), target.query());
    let method = if raw.head {
        http::Method::HEAD
    } else {
        http::Method::GET
    };
    if path == vouchers::CLAIM_PATH
        || vouchers::intercepts_at(ctx.cfg.vouchers.as_ref(), &method, path)
    {
        return Ok(Relayed::Hyper);
    }
    let asked = Asked {
        target: target.as_str(),
        accept: raw.accept,
        accept_language: raw.accept_language,
    };
    let own = || Own::in_cookies(raw.cookies.iter().copied(), raw.pow);
    match room::classify_path(ctx, room, path, raw.bypass) {
        Route::Open => Ok(Relayed::Open),
        // A long poll waits (hyper's timers); the other endpoints are hyper's.
        Route::Status if path != "/__usher/status" || room::is_long_poll(query) => {
            Ok(Relayed::Hyper)
        }
        Route::Status => {
            let own = own();
            let (verdict, near) = Box::pin(room::decide(ctx, room, &own)).await;
            let (reply, outcome) = room::status_answer(ctx, room, &asked, &own, verdict, near)?;
            Ok(Relayed::Reply(reply, outcome))
        }
        Route::Protected => {
            let own = own();
            let (verdict, near) = Box::pin(room::decide(ctx, room, &own)).await;
            Ok(match room::settle(ctx, verdict)? {
                room::Settled::Hold(hold) => {
                    let reply = room::hold_answer(ctx, room, &asked, own.lang(), hold, false, near);
                    Relayed::Reply(reply, Outcome::Held)
                }
                room::Settled::Admit(admitted) => Relayed::Admitted(admitted),
            })
        }
    }
}

/// The origin's answer to an admitted visitor: its signals acted on
/// (`released`: it sent `X-Usher-Release`; `sold_out`:
/// `X-Usher-Sold-Out`; the relay drops both fields), and the `Set-Cookie`
/// values the visitor's answer gets.
pub fn finish(
    app: &App,
    cfg: Arc<Config>,
    conn: &ConnInfo,
    admitted: Admitted,
    released: bool,
    sold_out: bool,
) -> Vec<HeaderValue> {
    let ctx = Ctx {
        app,
        cfg,
        conn,
        peer_trusted: false,
        client_ip: crate::net::canonical(conn.peer.ip()),
    };
    match ctx.cfg.room.as_ref() {
        Some(room) => room::signals(&ctx, room, admitted, released, sold_out),
        None => admitted.cookies,
    }
}
