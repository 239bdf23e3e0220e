//! Where people claim vouchers: usher's own `POST /__usher/voucher` (JSON
//! for apps, a small page for browsers), or the origin's claim route
//! intercepted: usher issues the code and forwards the request with
//! `X-Usher-Voucher: CODE`. Only admitted visitors (a valid pass) claim.

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::accept::{self, Format};
use super::{Ctx, HttpError};
use crate::config::vouchers::{Identity, VouchersConfig};
use crate::metrics::Outcome;
use crate::tokens::cookie::get_cookie;
use crate::vouchers::{ClaimContext, ClaimResult, Vouchers};
use crate::{full_body, Body};

/// The header carrying an issued code to the origin. A client's own copy
/// is always removed first, so the origin can trust it.
pub static X_USHER_VOUCHER: HeaderName = HeaderName::from_static("x-usher-voucher");

/// usher's claim endpoint.
pub const CLAIM_PATH: &str = "/__usher/voucher";

/// Whether `req` is the intercepted origin claim route.
pub fn intercepts(cfg: &VouchersConfig, req: &Request<Incoming>, path: &str) -> bool {
    cfg.intercept
        .as_ref()
        .is_some_and(|(m, p)| m == req.method() && p == path)
}

/// The claimant's identity: the pass id, or the origin's user id.
fn identity(cfg: &VouchersConfig, req: &Request<Incoming>, pass_id: u64) -> Option<String> {
    match &cfg.identity {
        Identity::Pass => Some(format!("pass:{pass_id:016x}")),
        Identity::Cookie(name) => get_cookie(req.headers(), name).map(|v| format!("cookie:{v}")),
        Identity::Header(name) => req
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(|v| format!("header:{v}")),
    }
    .filter(|id| crate::store::valid_identity(id))
}

/// Runs a claim for an admitted visitor.
async fn claim(
    ctx: &Ctx<'_>,
    vouchers: &Vouchers,
    cfg: &VouchersConfig,
    req: &Request<Incoming>,
    pass_id: u64,
) -> Option<ClaimResult> {
    let id = identity(cfg, req, pass_id)?;
    let claim_ctx = ClaimContext {
        client_ip: Some(ctx.client_ip),
        user_agent: req
            .headers()
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.chars().take(256).collect()),
    };
    let result = vouchers.claim(&id, &claim_ctx).await;
    ctx.app.room.set_vouchers_left(Some(vouchers.remaining()));
    Some(result)
}

fn answer(
    status: StatusCode,
    json: bool,
    body: serde_json::Value,
    retry_after: Option<u64>,
) -> Response<Body> {
    let (bytes, content_type) = if json {
        let mut b = serde_json::to_vec(&body).unwrap_or_default();
        b.push(b'\n');
        (b, "application/json")
    } else {
        (page(&body).into_bytes(), "text/html; charset=utf-8")
    };
    let mut resp = Response::new(full_body(bytes));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(s) = retry_after {
        h.insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    if body["state"] == "sold_out" {
        h.insert(
            super::room::X_USHER_STATE.clone(),
            HeaderValue::from_static("sold_out"),
        );
    }
    resp
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A small bilingual page for browsers.
fn page(body: &serde_json::Value) -> String {
    let (ko, en, extra) = match body["state"].as_str().unwrap_or_default() {
        "issued" => (
            "할인권이 발급되었습니다",
            "Your voucher",
            format!("<p style=\"font-size:1.6rem;font-weight:700\">{}</p>", escape(body["code"].as_str().unwrap_or_default())),
        ),
        "sold_out" => ("할인권이 모두 소진되었습니다", "All vouchers are gone", String::new()),
        "not_admitted" => (
            "아직 입장 전입니다",
            "Please wait for your turn first",
            "<p><a href=\"/\">대기열로 / To the line</a></p>".to_string(),
        ),
        "not_eligible" => (
            "발급 대상이 아닙니다",
            "Not eligible",
            format!("<p>{}</p>", escape(body["reason"].as_str().unwrap_or_default())),
        ),
        "claim" => (
            "할인권 받기",
            "Claim your voucher",
            format!("<form method=\"post\" action=\"{CLAIM_PATH}\"><button style=\"font-size:1.2rem;padding:.6rem 1.2rem\">받기 / Claim</button></form>"),
        ),
        _ => (
            "잠시 후 다시 시도해 주세요",
            "Please try again in a few seconds",
            format!("<form method=\"post\" action=\"{CLAIM_PATH}\"><button>다시 시도 / Try again</button></form>"),
        ),
    };
    format!(
        "<!doctype html><html lang=\"ko\"><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{en}</title><body style=\"font-family:system-ui,sans-serif;max-width:32em;margin:3em auto;padding:0 1em\">\
         <h1>{ko}</h1><p lang=\"en\">{en}</p>{extra}</body></html>\n"
    )
}

fn result_body(
    result: &ClaimResult,
    remaining: u64,
) -> (StatusCode, serde_json::Value, Option<u64>) {
    match result {
        ClaimResult::Issued { code, .. } => (
            StatusCode::OK,
            serde_json::json!({ "state": "issued", "code": code, "remaining": remaining }),
            None,
        ),
        ClaimResult::SoldOut => (
            StatusCode::GONE,
            serde_json::json!({ "state": "sold_out" }),
            None,
        ),
        ClaimResult::NotEligible(reason) => (
            StatusCode::FORBIDDEN,
            serde_json::json!({ "state": "not_eligible", "reason": reason }),
            None,
        ),
        // The claim is recorded and keeps its unit; the same person asking
        // again gets the same code once the issuer answers.
        ClaimResult::RetryLater(_) | ClaimResult::Unavailable(_) => (
            StatusCode::ACCEPTED,
            serde_json::json!({ "state": "pending", "retry_after": 5 }),
            Some(5),
        ),
    }
}

/// `GET|POST /__usher/voucher`.
pub async fn endpoint(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
) -> Result<(Response<Body>, Outcome), HttpError> {
    let json = accept::format(req.headers(), Format::Json) == Format::Json;
    let (Some(vouchers), Some(cfg)) = (ctx.app.vouchers.as_deref(), ctx.cfg.vouchers.as_ref())
    else {
        return Err(HttpError::NotFound);
    };
    let Some(pass) = ctx.app.room.check_pass(req.headers()) else {
        ctx.app
            .metrics
            .vouchers
            .claims
            .with_label_values(&["not_admitted"])
            .inc();
        let body = serde_json::json!({ "state": "not_admitted" });
        return Ok((
            answer(StatusCode::FORBIDDEN, json, body, None),
            Outcome::Usher,
        ));
    };
    if req.method() != Method::POST {
        let body = serde_json::json!({ "state": "claim", "remaining": vouchers.remaining() });
        return Ok((answer(StatusCode::OK, json, body, None), Outcome::Usher));
    }
    let Some(result) = claim(ctx, vouchers, cfg, &req, pass.pass_id).await else {
        let body =
            serde_json::json!({ "state": "not_eligible", "reason": "no identity (sign in first)" });
        return Ok((
            answer(StatusCode::FORBIDDEN, json, body, None),
            Outcome::Usher,
        ));
    };
    let (status, body, retry) = result_body(&result, vouchers.remaining());
    Ok((answer(status, json, body, retry), Outcome::Usher))
}

/// The intercepted origin claim route, for an admitted visitor: issue, then
/// forward with the code; any other outcome is answered here and the origin
/// is spared.
pub async fn intercept(
    ctx: &Ctx<'_>,
    mut req: Request<Incoming>,
    pass_id: u64,
) -> Result<Result<Request<Incoming>, Response<Body>>, HttpError> {
    let (Some(vouchers), Some(cfg)) = (ctx.app.vouchers.as_deref(), ctx.cfg.vouchers.as_ref())
    else {
        return Ok(Ok(req));
    };
    let json = accept::format(req.headers(), Format::Json) == Format::Json;
    let Some(result) = claim(ctx, vouchers, cfg, &req, pass_id).await else {
        let body =
            serde_json::json!({ "state": "not_eligible", "reason": "no identity (sign in first)" });
        return Ok(Err(answer(StatusCode::FORBIDDEN, json, body, None)));
    };
    if let ClaimResult::Issued { code, .. } = &result {
        if let Ok(v) = HeaderValue::from_str(code) {
            req.headers_mut().insert(X_USHER_VOUCHER.clone(), v);
            return Ok(Ok(req));
        }
    }
    let (status, body, retry) = result_body(&result, vouchers.remaining());
    Ok(Err(answer(status, json, body, retry)))
}
