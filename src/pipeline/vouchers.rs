//! Where people claim vouchers: usher's own `POST /__usher/voucher` (JSON
//! for apps, a small page for browsers), or the origin's claim route
//! intercepted: usher issues the code and forwards the request with
//! `X-Usher-Voucher: CODE`. Only admitted visitors (a valid pass) claim.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::accept::{self, Format};
use super::room::Admitted;
use super::{Ctx, HttpError, Phase, Step};
use crate::config::vouchers::{Identity, VouchersConfig};
use crate::holding::{self, VoucherState};
use crate::metrics::Outcome;
use crate::tokens::cookie::get_cookie;
use crate::vouchers::{ClaimContext, ClaimResult, Vouchers};
use crate::{full_body, Body};

/// The header carrying an issued code to the origin. A client's own copy
/// is always removed first, so the origin can trust it.
pub static X_USHER_VOUCHER: HeaderName = HeaderName::from_static("x-usher-voucher");

/// usher's claim endpoint.
pub use crate::holding::VOUCHER_PATH as CLAIM_PATH;

/// Whether `req` is the origin's claim route that `[vouchers]` intercepts
/// (its path compared normalised, and only once the method matches).
pub fn intercepts(cfg: Option<&VouchersConfig>, req: &Request<Incoming>) -> bool {
    intercepts_at(cfg, req.method(), req.uri().path())
}

/// [`intercepts`] by the request's method and path.
pub fn intercepts_at(cfg: Option<&VouchersConfig>, method: &http::Method, path: &str) -> bool {
    cfg.and_then(|c| c.intercept.as_ref())
        .is_some_and(|(m, p)| m == method && *p == crate::paths::normalize(path))
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

/// How long a pending claim is asked to wait before asking again.
const RETRY_AFTER_SECS: u64 = 5;

/// The endpoint's answer in `state`: JSON for apps, the voucher page for
/// browsers. `remaining` is shown with the claim button and the code.
fn answer(format: Format, state: VoucherState, remaining: u64) -> Response<Body> {
    let status = match state {
        VoucherState::Claim | VoucherState::Issued(_) => StatusCode::OK,
        VoucherState::SoldOut => StatusCode::GONE,
        VoucherState::NotAdmitted | VoucherState::NotEligible(_) => StatusCode::FORBIDDEN,
        VoucherState::Pending => StatusCode::ACCEPTED,
    };
    let (body, content_type) = match format {
        Format::Json => (Bytes::from(json(state, remaining)), "application/json"),
        Format::Html => (holding::voucher_page(state), "text/html; charset=utf-8"),
    };
    let mut resp = Response::new(full_body(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if state == VoucherState::Pending {
        h.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    }
    if state == VoucherState::SoldOut {
        h.insert(
            super::room::X_USHER_STATE.clone(),
            HeaderValue::from_static("sold_out"),
        );
    }
    resp
}

/// The JSON answer: the state's name and what goes with it.
fn json(state: VoucherState, remaining: u64) -> Vec<u8> {
    let name = state.as_str();
    let body = match state {
        VoucherState::Claim => serde_json::json!({ "state": name, "remaining": remaining }),
        VoucherState::Issued(code) => {
            serde_json::json!({ "state": name, "code": code, "remaining": remaining })
        }
        VoucherState::NotEligible(reason) => serde_json::json!({ "state": name, "reason": reason }),
        VoucherState::Pending => {
            serde_json::json!({ "state": name, "retry_after": RETRY_AFTER_SECS })
        }
        VoucherState::SoldOut | VoucherState::NotAdmitted => serde_json::json!({ "state": name }),
    };
    let mut b = serde_json::to_vec(&body).unwrap_or_default();
    b.push(b'\n');
    b
}

/// What a claim's result shows.
fn shown(result: &ClaimResult) -> VoucherState<'_> {
    match result {
        ClaimResult::Issued { code, .. } => VoucherState::Issued(code),
        ClaimResult::SoldOut => VoucherState::SoldOut,
        ClaimResult::NotEligible(reason) => VoucherState::NotEligible(reason),
        // The claim is recorded and keeps its unit; the same person asking
        // again gets the same code once the issuer answers.
        ClaimResult::RetryLater(_) | ClaimResult::Unavailable(_) => VoucherState::Pending,
    }
}

/// Why a claim without an identity is refused.
const NO_IDENTITY: VoucherState<'static> = VoucherState::NotEligible("no identity (sign in first)");

/// `GET|POST /__usher/voucher`.
pub async fn endpoint(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
) -> Result<(Response<Body>, Outcome), HttpError> {
    let format = accept::format(req.headers(), Format::Json);
    let (Some(vouchers), Some(cfg)) = (ctx.app.vouchers.as_deref(), ctx.cfg.vouchers.as_ref())
    else {
        return Err(HttpError::NotFound);
    };
    let remaining = vouchers.remaining();
    let Some(pass) = ctx.app.room.check_pass(req.headers()) else {
        ctx.app
            .metrics
            .vouchers
            .claims
            .with_label_values(&["not_admitted"])
            .inc();
        let resp = answer(format, VoucherState::NotAdmitted, remaining);
        return Ok((resp, Outcome::Usher));
    };
    if req.method() != Method::POST {
        return Ok((
            answer(format, VoucherState::Claim, remaining),
            Outcome::Usher,
        ));
    }
    let Some(result) = claim(ctx, vouchers, cfg, &req, pass.pass_id).await else {
        return Ok((answer(format, NO_IDENTITY, remaining), Outcome::Usher));
    };
    let resp = answer(format, shown(&result), vouchers.remaining());
    Ok((resp, Outcome::Usher))
}

/// The `vouchers` phase, on the origin's claim route that `[vouchers]`
/// intercepts (`route` decided it), for an admitted visitor: the claim runs
/// here, and the request goes on with its code or is answered (with the
/// pass's cookies).
pub(super) async fn at_claim_route(
    ctx: &Ctx<'_>,
    req: Request<Incoming>,
    admitted: &mut Admitted,
) -> Phase<Request<Incoming>> {
    Ok(match intercept(ctx, req, admitted.pass_id).await? {
        Ok(req) => Step::Next(req),
        Err(mut answer) => {
            // answered here: the cookies go with this answer, not the origin's
            let cookies = std::mem::take(&mut admitted.cookies);
            super::room::append_cookies(&mut answer, cookies);
            Step::Answer(answer, Outcome::Usher)
        }
    })
}

/// The intercepted origin claim route, for an admitted visitor: issue, then
/// forward with the code; any other outcome is answered here and the origin
/// is spared.
async fn intercept(
    ctx: &Ctx<'_>,
    mut req: Request<Incoming>,
    pass_id: u64,
) -> Result<Result<Request<Incoming>, Response<Body>>, HttpError> {
    let (Some(vouchers), Some(cfg)) = (ctx.app.vouchers.as_deref(), ctx.cfg.vouchers.as_ref())
    else {
        return Ok(Ok(req));
    };
    let format = accept::format(req.headers(), Format::Json);
    let Some(result) = claim(ctx, vouchers, cfg, &req, pass_id).await else {
        return Ok(Err(answer(format, NO_IDENTITY, vouchers.remaining())));
    };
    if let ClaimResult::Issued { code, .. } = &result {
        if let Ok(v) = HeaderValue::from_str(code) {
            req.headers_mut().insert(X_USHER_VOUCHER.clone(), v);
            return Ok(Ok(req));
        }
    }
    Ok(Err(answer(format, shown(&result), vouchers.remaining())))
}
