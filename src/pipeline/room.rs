//! The HTTP side of the waiting room: which requests it governs, the
//! holding page and status JSON it answers, and the cookies it sets.

use http::header::{self, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::accept::{format_of, Format};
use super::{Ctx, HttpError, Phase, Step};
use crate::admission::room::{
    pow_header, Asking, Hold, Verdict, LANG_COOKIE, PASS_COOKIE, POW_COOKIE, POW_HEADER,
    TICKET_COOKIE,
};
use crate::config::room::RoomConfig;
use crate::holding::{self, Lang, RoomState, StatusView};
use crate::metrics::Outcome;
use crate::paths;
use crate::proxy::headers;
use crate::tokens::cookie::{get_cookies_in, strip_cookies, SetCookie};
use crate::{full_body, Body};

/// Header the origin sends to end a visitor's session (e.g. after checkout).
pub static X_USHER_RELEASE: HeaderName = HeaderName::from_static("x-usher-release");
/// Header the origin sends when its own stock is gone (a site that gives out
/// its own vouchers): the room is sold out from then on.
pub static X_USHER_SOLD_OUT: HeaderName = HeaderName::from_static("x-usher-sold-out");
/// Header on every answer usher makes itself in the room.
pub static X_USHER_STATE: HeaderName = HeaderName::from_static("x-usher-state");

/// Where a request goes.
pub enum Route {
    /// usher's own endpoint (`/__usher/status`).
    Status,
    /// Not governed by the room: straight to the origin.
    Open,
    /// Governed by the room.
    Protected,
}

/// Classifies a request by its normalised path and the bypass rules.
pub fn classify(ctx: &Ctx<'_>, room: &RoomConfig, req: &Request<Incoming>) -> Route {
    let given = room
        .bypass_header
        .as_ref()
        .and_then(|(name, _)| req.headers().get(name))
        .map(|v| v.as_bytes());
    classify_path(ctx, room, req.uri().path(), given)
}

/// [`classify`] by the request's path and the value of the room's bypass
/// header (`given`), if it was sent.
pub(super) fn classify_path(
    ctx: &Ctx<'_>,
    room: &RoomConfig,
    path: &str,
    given: Option<&[u8]>,
) -> Route {
    let path = paths::normalize(path);
    if path.starts_with("/__usher/") {
        return Route::Status;
    }
    if room.bypass_paths.iter().any(|p| paths::under(&path, p)) || room.bypass_ip(ctx.client_ip) {
        return Route::Open;
    }
    if let Some((_, secret)) = &room.bypass_header {
        if given.is_some_and(|g| constant_time_eq(g, secret.as_bytes())) {
            return Route::Open;
        }
    }
    if room.protect.iter().any(|p| paths::under(&path, p)) {
        Route::Protected
    } else {
        Route::Open
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// What usher's own answers in the room read of a request besides its
/// cookies: the target and the `Accept` and `Accept-Language` fields, from
/// hyper's request or from the relay's raw head.
pub struct Asked<'a> {
    /// The path and query, as sent.
    pub target: &'a str,
    pub accept: Option<&'a str>,
    pub accept_language: Option<&'a str>,
}

impl<'a> Asked<'a> {
    pub(super) fn of(req: &'a Request<Incoming>) -> Self {
        let text = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
        Asked {
            target: req.uri().path_and_query().map_or("/", |p| p.as_str()),
            accept: text(header::ACCEPT),
            accept_language: text(header::ACCEPT_LANGUAGE),
        }
    }

    fn query(&self) -> Option<&'a str> {
        self.target.split_once('?').map(|(_, q)| q)
    }
}

/// The page language: `?usher_lang=`, then the `usher_lang` cookie, then
/// `Accept-Language`, then the room's default.
/// `cookie`: the `usher_lang` cookie's value (found with the room's).
pub(super) fn language(
    room: &RoomConfig,
    req: &Asked<'_>,
    cookie: Option<&str>,
) -> (Lang, Option<Lang>) {
    let asked = req
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("usher_lang=")))
        .and_then(Lang::from_tag);
    let chosen = asked.or_else(|| cookie.and_then(Lang::from_tag));
    let accept = req.accept_language;
    let default = if room.default_english {
        Lang::En
    } else {
        Lang::Ko
    };
    (
        holding::negotiate(accept, chosen.map(Lang::as_str), default),
        asked,
    )
}

/// What admission hands on for an admitted visitor: its pass, and the
/// cookies its answer must carry (a new or renewed pass).
pub struct Admitted {
    pub pass_id: u64,
    pub cookies: Vec<HeaderValue>,
}

/// The room's decision on a request it governs (the `admit` phase): a
/// waiting visitor gets the holding page or JSON here; an admitted one goes
/// on, with usher's own cookies and headers taken off for the origin.
pub(super) async fn admit(
    ctx: &Ctx<'_>,
    room: &RoomConfig,
    mut req: Request<Incoming>,
) -> Phase<(Request<Incoming>, Admitted)> {
    let own = Own::of(&req);
    let (verdict, near) = decide(ctx, room, &own).await;
    let admitted = match settle(ctx, verdict)? {
        Settled::Hold(hold) => {
            let resp = hold_answer(ctx, room, &Asked::of(&req), own.lang, hold, false, near);
            let resp = resp.into_response();
            return Ok(Step::Answer(resp, Outcome::Held));
        }
        Settled::Admit(admitted) => admitted,
    };
    strip_cookies(
        req.headers_mut(),
        &[TICKET_COOKIE, PASS_COOKIE, LANG_COOKIE, POW_COOKIE],
    );
    req.headers_mut().remove(POW_HEADER);
    if let Some((name, _)) = &room.bypass_header {
        req.headers_mut().remove(name);
    }
    Ok(Step::Next((req, admitted)))
}

/// `/__usher/assets/...`: the holding page's stylesheet and script. Alike
/// for everyone, so nothing of the visitor is read; a name with another
/// version's hash gets this version's file, uncached.
pub(super) fn asset(req: &Request<Incoming>) -> Result<(Response<Body>, Outcome), HttpError> {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return Err(HttpError::MethodNotAllowed);
    }
    let (file, current) = holding::find_asset(req.uri().path()).ok_or(HttpError::NotFound)?;
    let unchanged = current
        && headers::list_items(req.headers(), header::IF_NONE_MATCH)
            .any(|t| t == file.etag || t == "*");
    let mut resp = if unchanged {
        let mut r = Response::new(crate::empty_body());
        *r.status_mut() = StatusCode::NOT_MODIFIED;
        r
    } else {
        let mut r = Response::new(full_body(file.body.clone()));
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(file.content_type),
        );
        r
    };
    let h = resp.headers_mut();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if current {
            "public, max-age=31536000, immutable"
        } else {
            "no-store"
        }),
    );
    if current {
        // Made once per process: hex digits in quotes.
        h.insert(header::ETAG, HeaderValue::from_static(file.etag.as_str()));
    }
    Ok((resp, Outcome::Usher))
}

/// `/__usher/status`: the same decision, answered as JSON (a long poll
/// with `?wait=1`).
pub(super) async fn status(
    ctx: &Ctx<'_>,
    room: &RoomConfig,
    req: Request<Incoming>,
) -> Result<(Response<Body>, Outcome), HttpError> {
    let own = Own::of(&req);
    let (verdict, near) = if long_poll(&req) {
        decide_long(ctx, room, &own).await
    } else {
        decide(ctx, room, &own).await
    };
    let (reply, outcome) = status_answer(ctx, room, &Asked::of(&req), &own, verdict, near)?;
    Ok((reply.into_response(), outcome))
}

/// The status JSON for `verdict` (see [`status`]).
pub(super) fn status_answer(
    ctx: &Ctx<'_>,
    room: &RoomConfig,
    req: &Asked<'_>,
    own: &Own<'_>,
    verdict: Verdict,
    near: bool,
) -> Result<(Reply, Outcome), HttpError> {
    match settle(ctx, verdict)? {
        Settled::Hold(hold) => Ok((
            hold_answer(ctx, room, req, own.lang, hold, true, near),
            Outcome::Held,
        )),
        Settled::Admit(admitted) => {
            let view = view(room, "", RoomState::Admitted, None, "/");
            let reply = Reply {
                body: holding::status_json(&view),
                content_type: "application/json",
                state: RoomState::Admitted,
                vary: false,
                retry_after: None,
                cookies: admitted.cookies,
            };
            Ok((reply, Outcome::Usher))
        }
    }
}

/// The room's verdict on the request `own` was read from, and whether the
/// visitor waits near the head of the line.
pub(super) async fn decide(ctx: &Ctx<'_>, room: &RoomConfig, own: &Own<'_>) -> (Verdict, bool) {
    let v = ctx
        .app
        .room
        .decide_asking(room, own.asking, ctx.client_ip, ctx.conn.tls)
        .await;
    let near = matches!(&v, Verdict::Hold(h) if h.near);
    (v, near)
}

/// usher's cookies in a request, found in one walk over its `Cookie`
/// headers: the room's pass and ticket, the proof of work, and the
/// language.
pub(super) struct Own<'a> {
    asking: Asking<'a>,
    lang: Option<&'a str>,
}

impl<'a> Own<'a> {
    /// The `usher_lang` cookie's value.
    pub(super) fn lang(&self) -> Option<&'a str> {
        self.lang
    }

    fn of(req: &'a Request<Incoming>) -> Self {
        let headers = req.headers();
        let cookies = headers.get_all(header::COOKIE).iter();
        Own::in_cookies(cookies.map(|v| v.as_bytes()), pow_header(headers))
    }

    /// From the values of the request's `Cookie` fields, and its
    /// `X-Usher-Pow` field's.
    pub(super) fn in_cookies(
        cookies: impl Iterator<Item = &'a [u8]>,
        pow: Option<&'a str>,
    ) -> Self {
        let [pass, ticket, lang, pow_cookie] = get_cookies_in(
            cookies,
            [PASS_COOKIE, TICKET_COOKIE, LANG_COOKIE, POW_COOKIE],
        );
        Own {
            asking: Asking {
                pass,
                ticket,
                pow: pow.or(pow_cookie),
            },
            lang,
        }
    }
}

/// A verdict that stands: waiting, or admitted within its pass's pace.
pub(super) enum Settled {
    Hold(Hold),
    Admit(Admitted),
}

/// The refusals of a verdict as errors: the durable store's (the
/// per-address limits answer with a holding page instead:
/// `Hold::retry_after`, `Hold::challenge`), and a pass over its own pace.
pub(super) fn settle(ctx: &Ctx<'_>, verdict: Verdict) -> Result<Settled, HttpError> {
    match verdict {
        Verdict::Limited { retry_after, .. } => Err(HttpError::TooManyRequests(retry_after)),
        Verdict::Hold(hold) => Ok(Settled::Hold(hold)),
        Verdict::Admit { pass_id, .. } if ctx.app.pass_limit.load().check(pass_id).is_err() => {
            // One pass, one visitor's pace: a copied pass shares the rate.
            ctx.app
                .metrics
                .room
                .rate_limited
                .with_label_values(&["pass"])
                .inc();
            Err(HttpError::TooManyRequests(1))
        }
        Verdict::Admit { pass_id, cookies } => Ok(Settled::Admit(Admitted { pass_id, cookies })),
    }
}

/// The origin's answer to an admitted visitor (the `finish` phase): its
/// signals to usher acted on and removed (`X-Usher-Sold-Out`,
/// `X-Usher-Release`, which also ends the pass), the pass's cookies added.
pub(super) fn finish(
    ctx: &Ctx<'_>,
    room: &RoomConfig,
    mut resp: Response<Body>,
    admitted: Admitted,
) -> Response<Body> {
    let sold_out = resp.headers_mut().remove(&X_USHER_SOLD_OUT).is_some();
    let released = resp.headers_mut().remove(&X_USHER_RELEASE).is_some();
    let cookies = signals(ctx, room, admitted, released, sold_out);
    append_cookies(&mut resp, cookies);
    resp
}

/// The origin's signals in its answer to an admitted visitor acted on
/// (`sold_out`: it sent `X-Usher-Sold-Out`; `released`: `X-Usher-Release`,
/// which ends the pass), and the `Set-Cookie` values the answer gets.
pub(super) fn signals(
    ctx: &Ctx<'_>,
    room: &RoomConfig,
    admitted: Admitted,
    released: bool,
    sold_out: bool,
) -> Vec<HeaderValue> {
    if sold_out {
        ctx.app.room.origin_sold_out();
    }
    if released {
        ctx.app.room.release(admitted.pass_id);
        vec![SetCookie::clear(
            PASS_COOKIE,
            ctx.conn.tls,
            room.cookie_domain.as_deref(),
        )]
    } else {
        admitted.cookies
    }
}

/// The origin's answer on a path the room leaves open (or without a room):
/// `X-Usher-Release` is usher's business and never reaches the client.
pub(super) fn finish_open(mut resp: Response<Body>) -> Response<Body> {
    resp.headers_mut().remove(&X_USHER_RELEASE);
    resp
}

/// `?wait=1` on the status URL: the page can take a long poll.
fn long_poll(req: &Request<Incoming>) -> bool {
    is_long_poll(req.uri().query())
}

/// Whether a status request's query asks for a long poll.
pub(super) fn is_long_poll(query: Option<&str>) -> bool {
    query.is_some_and(|q| q.split('&').any(|kv| kv == "wait=1"))
}

/// The status decision as a long poll: a waiting visitor near the head of
/// the line is answered the moment its turn may have come (places were
/// granted up to it), or after one poll interval (at most
/// [`LONG_POLL_MAX`](crate::admission::room::LONG_POLL_MAX)) with a fresh
/// position. Everyone else is answered at once, as without `wait=1`.
/// Returns the verdict and whether the visitor is near the head.
async fn decide_long(ctx: &Ctx<'_>, room: &RoomConfig, own: &Own<'_>) -> (Verdict, bool) {
    let r = &ctx.app.room;
    let hold_for = room.refresh.min(crate::admission::room::LONG_POLL_MAX);
    let deadline = tokio::time::Instant::now() + hold_for;
    let mut rx = r.grants_seen();
    let mut last = false;
    loop {
        let seen = *rx.borrow_and_update();
        let (v, near) = decide(ctx, room, own).await;
        let position = match &v {
            Verdict::Hold(h) if h.near && h.cookies.is_empty() => h.position,
            _ => None,
        };
        let Some(position) = position else {
            return (v, near);
        };
        if last {
            return (v, true);
        }
        // Woken by grants or not, decide once more: the answer is fresh.
        last = !r.wait_for_turn(&mut rx, seen, position, deadline).await;
    }
}

pub(super) fn append_cookies(resp: &mut Response<Body>, cookies: Vec<HeaderValue>) {
    for c in cookies {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
}

fn view<'a>(
    room: &'a RoomConfig,
    message: &'a str,
    state: RoomState,
    hold: Option<&'a Hold>,
    return_to: &'a str,
) -> StatusView<'a> {
    StatusView {
        state,
        position: hold.and_then(|h| h.position),
        first_position: None,
        eta_seconds: hold.and_then(|h| h.eta_seconds),
        refresh_seconds: room.refresh.as_secs().max(1) as u32,
        message,
        messages: None,
        message_updated_at: None,
        opens_at: room.opens_at.as_ref().map(|(t, _)| t.as_str()),
        opens_in_seconds: hold.and_then(|h| h.opens_in_seconds),
        vouchers_left: None,
        low_chance: false,
        challenge: hold.and_then(|h| h.challenge.as_ref().map(|(t, b)| (t.as_str(), *b))),
        return_to,
        now_unix: crate::civil::coarse_unix_secs(),
    }
}

/// The room's own answer to a visitor (the holding page, the status
/// JSON), before it is written: as hyper's response (`Reply::into_response`)
/// or, on the relay, straight as HTTP/1.1 bytes ([`Reply::write_h1_fields`]
/// and the body), the same fields in the same order either way.
pub struct Reply {
    /// A `Vec`, not `Bytes`: made into `Bytes` (one allocation more) only
    /// for hyper.
    pub body: Vec<u8>,
    content_type: &'static str,
    state: RoomState,
    /// `Vary: Accept, Accept-Language, Cookie` (a waiting visitor's answer).
    vary: bool,
    retry_after: Option<u64>,
    /// `Set-Cookie` values, in order.
    cookies: Vec<HeaderValue>,
}

/// The `Vary` of a waiting visitor's answer.
const HOLD_VARY: &str = "Accept, Accept-Language, Cookie";

impl Reply {
    pub(super) fn into_response(self) -> Response<Body> {
        let mut resp = Response::new(full_body(bytes::Bytes::from(self.body)));
        *resp.status_mut() = StatusCode::OK;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(
            X_USHER_STATE.clone(),
            HeaderValue::from_static(self.state.as_str()),
        );
        if self.vary {
            h.insert(header::VARY, HeaderValue::from_static(HOLD_VARY));
        }
        if let Some(n) = self.retry_after {
            h.insert(header::RETRY_AFTER, HeaderValue::from(n));
        }
        append_cookies(&mut resp, self.cookies);
        resp
    }

    /// The answer's head up to its framing fields (`200 OK` and the fields
    /// `Reply::into_response` sets, as hyper writes them); the writer adds
    /// `content-length`, `date` and the body.
    pub fn write_h1_fields(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: ");
        out.extend_from_slice(self.content_type.as_bytes());
        out.extend_from_slice(b"\r\ncache-control: no-store\r\nx-usher-state: ");
        out.extend_from_slice(self.state.as_str().as_bytes());
        out.extend_from_slice(b"\r\n");
        if self.vary {
            out.extend_from_slice(b"vary: ");
            out.extend_from_slice(HOLD_VARY.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if let Some(n) = self.retry_after {
            out.extend_from_slice(b"retry-after: ");
            crate::holding::fmt::write_u64(out, n);
            out.extend_from_slice(b"\r\n");
        }
        for c in &self.cookies {
            out.extend_from_slice(b"set-cookie: ");
            out.extend_from_slice(c.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// The holding page (HTML) or status JSON for a waiting visitor.
pub(super) fn hold_answer(
    ctx: &Ctx<'_>,
    room: &RoomConfig,
    req: &Asked<'_>,
    lang_cookie: Option<&str>,
    hold: Hold,
    status_only: bool,
    near: bool,
) -> Reply {
    let return_to = if status_only { "/" } else { req.target };
    let (lang, asked) = language(room, req, lang_cookie);
    // The announcement in the visitor's language, both texts for the
    // script, and when it changed (one atomic load, no lock).
    let board = ctx.app.talk.board.current();
    let mut v = view(
        room,
        board.messages.text(lang == Lang::En),
        hold.state,
        Some(&hold),
        holding::sanitize_return_to(return_to),
    );
    v.messages = Some((&board.messages.ko, &board.messages.en));
    v.message_updated_at = board.updated_at;
    v.vouchers_left = hold.vouchers_left;
    if near {
        // Near the head: poll again soon (a long poll is answered at once
        // on a grant; old pages without one still learn within a second).
        v.refresh_seconds = 1;
    }
    if let Some(n) = hold.retry_after {
        // Over a per-address limit: the page's own poll is the retry.
        v.refresh_seconds = n.min(u64::from(u32::MAX)) as u32;
    }
    if let (Some(left), Some(ratio), Some(ahead)) = (
        v.vouchers_left,
        ctx.cfg
            .vouchers
            .as_ref()
            .map(|c| c.low_chance_ratio)
            .filter(|r| *r > 0.0),
        hold.position,
    ) {
        // Honest: when far more people wait ahead than vouchers remain, say so.
        v.low_chance = ahead as f64 > ratio * left as f64;
    }
    let (body, content_type) = if status_only || format_of(req.accept, Format::Html) == Format::Json
    {
        (holding::status_json(&v), "application/json")
    } else {
        let pages = hold
            .pages
            .clone()
            .unwrap_or_else(|| ctx.app.room.pages().clone());
        (pages.render(lang, &v), "text/html; charset=utf-8")
    };
    let mut reply = Reply {
        body,
        content_type,
        state: hold.state,
        vary: true,
        retry_after: hold.retry_after,
        cookies: hold.cookies,
    };
    if let Some(l) = asked {
        reply.cookies.push(
            SetCookie {
                name: LANG_COOKIE,
                value: l.as_str(),
                max_age: Some(365 * 86_400),
                secure: ctx.conn.tls,
                domain: room.cookie_domain.as_deref(),
            }
            .to_header_value(),
        );
    }
    reply
}
