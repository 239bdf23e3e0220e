//! The status JSON that every waiting visitor's page polls.
//!
//! Written by hand into one buffer sized up front: this is the
//! most frequent response usher makes while a line exists, and the shape is
//! fixed, so serde's generality buys nothing here (the tests parse the
//! output with serde_json to keep the two honest).

use std::cell::RefCell;

use super::fmt::{json_string, json_string_len, write_rfc3339, write_u64, MAX_NUMBER_LEN};
use super::memo::find_or_keep;
use super::{sanitize_return_to, RoomState, StatusView};

/// The body for `GET /__usher/status`.
///
/// While waiting: `{"state","position","eta_seconds","eta_known",
/// "refresh_seconds","message","messages","message_updated_at","opens_at",
/// "vouchers_left"}` with `null` for
/// what is unknown, plus `"challenge","difficulty"` when the visitor must
/// solve a proof of work before getting a ticket (see `tokens::proof`). Once admitted: `{"state":"admitted","return_to":…}`,
/// `return_to` limited to a same-origin path.
pub fn status_json(view: &StatusView) -> Vec<u8> {
    if view.state == RoomState::Admitted {
        let mut out = Vec::with_capacity(capacity(view));
        let return_to = sanitize_return_to(view.return_to);
        out.extend_from_slice(b"{\"state\":\"admitted\",\"return_to\":");
        json_string(&mut out, return_to);
        out.push(b'}');
        return out;
    }
    with_tail(view, |tail| {
        let mut out = Vec::with_capacity(waiting_capacity(view, tail.len()));
        out.extend_from_slice(b"{\"state\":\"");
        out.extend_from_slice(view.state.as_str().as_bytes());
        out.extend_from_slice(b"\",\"position\":");
        opt_u64(&mut out, view.position);
        out.extend_from_slice(b",\"eta_seconds\":");
        opt_u64(&mut out, view.eta_seconds);
        out.extend_from_slice(if view.eta_seconds.is_some() {
            b",\"eta_known\":true,\"refresh_seconds\":"
        } else {
            b",\"eta_known\":false,\"refresh_seconds\":"
        });
        write_u64(&mut out, u64::from(view.refresh_seconds.max(1)));
        out.extend_from_slice(tail);
        if let Some((challenge, bits)) = view.challenge {
            out.extend_from_slice(b",\"challenge\":");
            json_string(&mut out, challenge);
            out.extend_from_slice(b",\"difficulty\":");
            write_u64(&mut out, u64::from(bits));
        }
        out.push(b'}');
        out
    })
}

/// The part of a waiting visitor's answer after `refresh_seconds`: the
/// message, both languages, when it changed, the opening and the stock.
/// The same for everyone polling in that moment (it changes when the
/// operator speaks or a voucher goes), so each thread keeps the last few,
/// keyed by everything they hold: a poll copies it instead of escaping
/// three texts and formatting a time (some 1,000 instructions).
struct Tail {
    message: Box<str>,
    messages: Option<(Box<str>, Box<str>)>,
    message_updated_at: Option<u64>,
    opens_at: Option<Box<str>>,
    vouchers_left: Option<u64>,
    bytes: Box<[u8]>,
}

impl Tail {
    fn of(view: &StatusView) -> Tail {
        let mut bytes = Vec::new();
        write_tail(&mut bytes, view);
        Tail {
            message: view.message.into(),
            messages: view.messages.map(|(ko, en)| (ko.into(), en.into())),
            message_updated_at: view.message_updated_at,
            opens_at: view.opens_at.map(Into::into),
            vouchers_left: view.vouchers_left,
            bytes: bytes.into(),
        }
    }

    fn is(&self, view: &StatusView) -> bool {
        self.message_updated_at == view.message_updated_at
            && self.vouchers_left == view.vouchers_left
            && *self.message == *view.message
            && self.opens_at.as_deref() == view.opens_at
            && match (&self.messages, view.messages) {
                (Some((ko, en)), Some((k, e))) => **ko == *k && **en == *e,
                (None, None) => true,
                _ => false,
            }
    }
}

/// Tails kept per thread: the message in each language, and the moment
/// a text or the stock changes.
const TAILS: usize = 4;

thread_local! {
    static TAILS_KEPT: RefCell<Vec<Tail>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the tail of `view`, kept or written now (the oldest kept goes).
fn with_tail<R>(view: &StatusView, f: impl FnOnce(&[u8]) -> R) -> R {
    TAILS_KEPT.with_borrow_mut(|kept| {
        let at = find_or_keep(kept, TAILS, |t| t.is(view), || Tail::of(view));
        f(&kept[at].bytes)
    })
}

/// Writes the tail of `view` (see [`Tail`]).
fn write_tail(out: &mut Vec<u8>, view: &StatusView) {
    out.extend_from_slice(b",\"message\":");
    json_string(out, view.message);
    if let Some((ko, en)) = view.messages {
        out.extend_from_slice(b",\"messages\":{\"ko\":");
        json_string(out, ko);
        out.extend_from_slice(b",\"en\":");
        json_string(out, en);
        out.push(b'}');
    }
    out.extend_from_slice(b",\"message_updated_at\":");
    match view.message_updated_at {
        Some(at) => {
            out.push(b'"');
            write_rfc3339(out, at);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"opens_at\":");
    match view.opens_at {
        Some(at) => json_string(out, at),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"vouchers_left\":");
    opt_u64(out, view.vouchers_left);
}

/// Upper bound of the body's length, so it is written with one allocation.
pub(crate) fn capacity(view: &StatusView) -> usize {
    if view.state == RoomState::Admitted {
        return 34 + json_string_len(sanitize_return_to(view.return_to));
    }
    with_tail(view, |tail| waiting_capacity(view, tail.len()))
}

/// [`capacity`] of a waiting visitor's answer with a tail of `tail` bytes.
fn waiting_capacity(view: &StatusView, tail: usize) -> usize {
    // Field names, punctuation and the state name before the tail come to
    // under 160 bytes; the challenge's two field names to 27.
    160 + 5 * MAX_NUMBER_LEN + tail + view.challenge.map_or(0, |(c, _)| 27 + json_string_len(c))
}

fn opt_u64(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => write_u64(out, n),
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::holding::tests::view;

    /// Views that each differ from the first in one of the tail's fields,
    /// each after the first, more than a thread keeps, twice over: the
    /// kept tail always equals one written fresh, and the answer parses.
    #[test]
    fn a_kept_tail_equals_a_fresh_one_whatever_changed() {
        let en = "Notice: the line <b>&</b> \"moves\" again, long enough to be memoised";
        let base = StatusView {
            message: "안내: 줄이 다시 움직입니다. 잠시만 기다려 주세요.",
            messages: Some(("안내: 줄이 다시 움직입니다. 잠시만 기다려 주세요.", en)),
            message_updated_at: Some(1_700_000_000),
            opens_at: Some("2026-12-06T10:00:00+09:00"),
            vouchers_left: Some(5),
            ..view(RoomState::Queued)
        };
        let steps = [
            base,
            StatusView {
                message: en,
                ..base
            },
            StatusView {
                message: "",
                ..base
            },
            StatusView {
                messages: None,
                ..base
            },
            StatusView {
                messages: Some(("다른 안내", en)),
                ..base
            },
            StatusView {
                messages: Some((base.message, "Another notice")),
                ..base
            },
            StatusView {
                message_updated_at: None,
                ..base
            },
            StatusView {
                message_updated_at: Some(1_700_000_001),
                ..base
            },
            StatusView {
                opens_at: None,
                ..base
            },
            StatusView {
                opens_at: Some("2026-12-06T11:00:00+09:00"),
                ..base
            },
            StatusView {
                vouchers_left: None,
                ..base
            },
            StatusView {
                vouchers_left: Some(4),
                ..base
            },
            StatusView {
                position: Some(9),
                challenge: Some(("c", 12)),
                ..base
            },
        ];
        // Each step right after the base, which is then kept: a field the
        // key leaves out would answer the step with the base's tail.
        let interleaved: Vec<&StatusView> = steps.iter().flat_map(|v| [&base, v]).collect();
        for _ in 0..2 {
            for v in interleaved.iter().copied() {
                let mut fresh = Vec::new();
                write_tail(&mut fresh, v);
                with_tail(v, |kept| assert_eq!(kept, &fresh[..], "{v:?}"));
                let body = status_json(v);
                assert!(body.len() <= capacity(v), "{v:?}");
                let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
                assert_eq!(json["message"], v.message, "{v:?}");
                assert_eq!(json["vouchers_left"], serde_json::json!(v.vouchers_left));
            }
        }
    }
}
