//! The status JSON that every waiting visitor's page polls.
//!
//! Written by hand into one buffer sized up front: this is the
//! most frequent response usher makes while a line exists, and the shape is
//! fixed, so serde's generality buys nothing here (the tests parse the
//! output with serde_json to keep the two honest).

use bytes::Bytes;

use super::fmt::{json_string, json_string_len, write_rfc3339, write_u64, MAX_NUMBER_LEN};
use super::{sanitize_return_to, RoomState, StatusView};

/// The body for `GET /__usher/status`.
///
/// While waiting: `{"state","position","eta_seconds","eta_known",
/// "refresh_seconds","message","messages","message_updated_at","opens_at",
/// "vouchers_left"}` with `null` for
/// what is unknown, plus `"challenge","difficulty"` when the visitor must
/// solve a proof of work before getting a ticket (see `tokens::proof`). Once admitted: `{"state":"admitted","return_to":…}`,
/// `return_to` limited to a same-origin path.
pub fn status_json(view: &StatusView) -> Bytes {
    let mut out = Vec::with_capacity(capacity(view));
    if view.state == RoomState::Admitted {
        let return_to = sanitize_return_to(view.return_to);
        out.extend_from_slice(b"{\"state\":\"admitted\",\"return_to\":");
        json_string(&mut out, return_to);
        out.push(b'}');
        return Bytes::from(out);
    }

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
    out.extend_from_slice(b",\"message\":");
    json_string(&mut out, view.message);
    if let Some((ko, en)) = view.messages {
        out.extend_from_slice(b",\"messages\":{\"ko\":");
        json_string(&mut out, ko);
        out.extend_from_slice(b",\"en\":");
        json_string(&mut out, en);
        out.push(b'}');
    }
    out.extend_from_slice(b",\"message_updated_at\":");
    match view.message_updated_at {
        Some(at) => {
            out.push(b'"');
            write_rfc3339(&mut out, at);
            out.push(b'"');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"opens_at\":");
    match view.opens_at {
        Some(at) => json_string(&mut out, at),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"vouchers_left\":");
    opt_u64(&mut out, view.vouchers_left);
    if let Some((challenge, bits)) = view.challenge {
        out.extend_from_slice(b",\"challenge\":");
        json_string(&mut out, challenge);
        out.extend_from_slice(b",\"difficulty\":");
        write_u64(&mut out, u64::from(bits));
    }
    out.push(b'}');
    Bytes::from(out)
}

/// Upper bound of the body's length, so it is written with one allocation.
pub(crate) fn capacity(view: &StatusView) -> usize {
    if view.state == RoomState::Admitted {
        return 34 + json_string_len(sanitize_return_to(view.return_to));
    }
    // Field names, punctuation and the state name come to under 160 bytes.
    // The challenge's two field names come to 27 bytes; the messages'
    // names and the update time (RFC 3339, quoted) 80.
    160 + 80
        + 5 * MAX_NUMBER_LEN
        + json_string_len(view.message)
        + view
            .messages
            .map_or(0, |(ko, en)| json_string_len(ko) + json_string_len(en))
        + view.opens_at.map_or(0, json_string_len)
        + view.challenge.map_or(0, |(c, _)| 27 + json_string_len(c))
}

fn opt_u64(out: &mut Vec<u8>, n: Option<u64>) {
    match n {
        Some(n) => write_u64(out, n),
        None => out.extend_from_slice(b"null"),
    }
}
