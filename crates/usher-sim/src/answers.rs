//! Reading what a visitor was told: usher's status answers (JSON or the
//! holding page, with `X-Usher-State`) and voucher claim answers (usher's
//! JSON or the theater's HTML page). Pure functions over the status, the
//! header and the body, so the visitor's decisions are tested without a
//! network.

use http::HeaderValue;
use serde::Deserialize;

/// Longest voucher code kept (real codes are far shorter).
const MAX_CODE: usize = 128;
/// The longest poll interval taken from usher's JSON, in seconds.
const MAX_REFRESH: u64 = 3600;
/// usher's state name for "nothing left to wait for".
const SOLD_OUT: &str = "sold_out";

/// A proof-of-work challenge (the token and its bits) from usher's answer
/// to a newcomer over the per-address ticket limit: the status JSON's
/// `challenge` and `difficulty`, or the holding page's `data-pow` and
/// `data-bits`.
pub fn read_challenge(body: &[u8]) -> Option<(String, u32)> {
    #[derive(Deserialize)]
    struct Pow {
        challenge: String,
        difficulty: u32,
    }
    if let Ok(p) = serde_json::from_slice::<Pow>(body) {
        return Some((p.challenge, p.difficulty));
    }
    let text = std::str::from_utf8(body).ok()?;
    let attr = |name: &str| {
        let rest = text.split_once(name)?.1;
        let value = rest.split('"').next()?;
        (!value.is_empty()).then_some(value)
    };
    let token = attr("data-pow=\"")?;
    let bits = attr("data-bits=\"")?.parse().ok()?;
    (token.len() <= usher::tokens::MAX_TOKEN_LEN).then(|| (token.to_string(), bits))
}

/// What usher's answer to a waiting visitor said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The visitor's turn came (the status JSON said `admitted`).
    Admitted,
    /// The inventory is gone: nobody should keep waiting.
    SoldOut,
    /// Keep waiting.
    Held {
        /// The poll interval usher asked for (1 to 3600 s), if any.
        refresh_seconds: Option<u64>,
        /// usher's wait estimate in seconds, if any.
        eta_seconds: Option<u64>,
    },
}

#[derive(Deserialize)]
struct StatusJson {
    state: String,
    #[serde(default)]
    eta_seconds: Option<u64>,
    #[serde(default)]
    refresh_seconds: Option<u64>,
}

/// Whether usher's `X-Usher-State` header says sold out.
pub fn says_sold_out(state: Option<&HeaderValue>) -> bool {
    state.is_some_and(|s| s == SOLD_OUT)
}

/// Reads one of usher's own answers to a waiting visitor: `state` is its
/// `X-Usher-State`, `body` the status JSON or the holding page. Sold out
/// wins when either says so; admitted needs the JSON (a page is read by
/// the page's script, which polls next).
pub fn read_status(state: Option<&HeaderValue>, body: &[u8]) -> Status {
    let json = serde_json::from_slice::<StatusJson>(body).ok();
    if says_sold_out(state) || json.as_ref().is_some_and(|j| j.state == SOLD_OUT) {
        return Status::SoldOut;
    }
    match json {
        Some(j) if j.state == "admitted" => Status::Admitted,
        Some(j) => Status::Held {
            refresh_seconds: j.refresh_seconds.filter(|r| (1..=MAX_REFRESH).contains(r)),
            eta_seconds: j.eta_seconds,
        },
        None => Status::Held {
            refresh_seconds: None,
            eta_seconds: None,
        },
    }
}

/// What a voucher answer said.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// A code.
    Code(String),
    /// None left.
    SoldOut,
    /// Neither could be read.
    Unknown,
}

/// Reads a voucher answer body: usher's JSON (`{"code"}` or
/// `{"state":"sold_out"}`) or the theater's HTML page.
pub fn parse_claim(body: &[u8]) -> Claim {
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        return match (v.get("code").and_then(|c| c.as_str()), v.get("state")) {
            (Some(c), _) if !c.is_empty() && c.len() <= MAX_CODE => Claim::Code(c.to_string()),
            (_, Some(s)) if s == SOLD_OUT => Claim::SoldOut,
            _ => Claim::Unknown,
        };
    }
    let text = String::from_utf8_lossy(body);
    if let Some(rest) = text.split_once("class=\"code\">").map(|(_, r)| r) {
        let code = rest.split('<').next().unwrap_or("");
        if !code.is_empty() && code.len() <= MAX_CODE {
            return Claim::Code(code.to_string());
        }
    }
    if text.contains("Sold out") || text.contains(SOLD_OUT) {
        return Claim::SoldOut;
    }
    Claim::Unknown
}

/// Reads a whole voucher answer; `None` means "try again" (an error
/// answer that says nothing). usher answers sold out with 410 and
/// `X-Usher-State: sold_out`, so sold out is taken at any status; a code
/// only from a success.
pub fn read_claim(status: u16, state: Option<&HeaderValue>, body: &[u8]) -> Option<Claim> {
    if says_sold_out(state) {
        return Some(Claim::SoldOut);
    }
    match parse_claim(body) {
        Claim::SoldOut => Some(Claim::SoldOut),
        c if status < 400 => Some(c),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hv(s: &'static str) -> HeaderValue {
        HeaderValue::from_static(s)
    }

    #[test]
    fn claims_are_read_from_html_and_json() {
        let page = br#"<p>your voucher: <span class="code">HANBIT-000042</span></p>"#;
        assert_eq!(parse_claim(page), Claim::Code("HANBIT-000042".into()));
        assert_eq!(
            parse_claim("<h1>매진 Sold out</h1>".as_bytes()),
            Claim::SoldOut
        );
        assert_eq!(parse_claim(br#"{"code":"U-1"}"#), Claim::Code("U-1".into()));
        assert_eq!(parse_claim(br#"{"state":"sold_out"}"#), Claim::SoldOut);
        assert_eq!(parse_claim(br#"{"state":"queued"}"#), Claim::Unknown);
        assert_eq!(parse_claim(b"<h1>Now showing</h1>"), Claim::Unknown);
        let long = format!("<span class=\"code\">{}</span>", "x".repeat(500));
        assert_eq!(parse_claim(long.as_bytes()), Claim::Unknown);
    }

    #[test]
    fn usher_sold_out_claim_is_read_at_any_status() {
        // usher: 410 Gone, X-Usher-State: sold_out, JSON or a page.
        let json = br#"{"state":"sold_out"}"#;
        assert_eq!(read_claim(410, None, json), Some(Claim::SoldOut));
        let page = b"<h1>All vouchers are gone</h1>";
        let sold = hv("sold_out");
        assert_eq!(read_claim(410, Some(&sold), page), Some(Claim::SoldOut));
        // An error that says nothing is tried again; a success is taken.
        assert_eq!(read_claim(503, None, b"<h1>busy</h1>"), None);
        assert_eq!(read_claim(200, None, b"<h1>hi</h1>"), Some(Claim::Unknown));
        let code = br#"{"state":"issued","code":"C-9"}"#;
        assert_eq!(read_claim(200, None, code), Some(Claim::Code("C-9".into())));
        assert_eq!(read_claim(500, None, code), None, "no code from an error");
    }

    #[test]
    fn sold_out_status_is_read_from_json_or_header() {
        let json = br#"{"state":"sold_out","position":null,"eta_seconds":null,"eta_known":false,"refresh_seconds":5,"message":"","opens_at":null,"vouchers_left":0}"#;
        assert_eq!(read_status(Some(&hv("sold_out")), json), Status::SoldOut);
        assert_eq!(read_status(Some(&hv("queued")), json), Status::SoldOut);
        // The holding page (HTML) with the header.
        let page = b"<!doctype html><p>sold out</p>";
        assert_eq!(read_status(Some(&hv("sold_out")), page), Status::SoldOut);
    }

    #[test]
    fn challenges_are_read_from_json_and_page() {
        let json = br#"{"state":"queued","position":null,"challenge":"AbC.dEf","difficulty":10}"#;
        assert_eq!(read_challenge(json), Some(("AbC.dEf".into(), 10)));
        let page = br#"<div id="u-data" hidden data-state="queued" data-pow="AbC.dEf" data-bits="10"></div>"#;
        assert_eq!(read_challenge(page), Some(("AbC.dEf".into(), 10)));
        let none =
            br#"<div id="u-data" hidden data-state="queued" data-pow="" data-bits=""></div>"#;
        assert_eq!(read_challenge(none), None);
        assert_eq!(read_challenge(br#"{"state":"queued"}"#), None);
    }

    #[test]
    fn held_and_admitted_status_are_read() {
        let queued = br#"{"state":"queued","position":7,"eta_seconds":40,"refresh_seconds":5}"#;
        assert_eq!(
            read_status(Some(&hv("queued")), queued),
            Status::Held {
                refresh_seconds: Some(5),
                eta_seconds: Some(40)
            }
        );
        let admitted = br#"{"state":"admitted","return_to":"/"}"#;
        assert_eq!(
            read_status(Some(&hv("admitted")), admitted),
            Status::Admitted
        );
        // Out-of-range refresh is ignored; a page is "held, no figures".
        let odd = br#"{"state":"queued","refresh_seconds":0}"#;
        let held = Status::Held {
            refresh_seconds: None,
            eta_seconds: None,
        };
        assert_eq!(read_status(Some(&hv("queued")), odd), held);
        assert_eq!(read_status(Some(&hv("queued")), b"<html>"), held);
        assert_eq!(read_status(Some(&hv("admitted")), b"<html>"), held);
    }
}
