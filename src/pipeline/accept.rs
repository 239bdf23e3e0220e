//! Which format an answer takes, read once from the request's `Accept`.

use http::header::{self, HeaderMap};

/// What an answer of usher's own is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// A page for a browser.
    Html,
    /// JSON for a script or an app.
    Json,
}

/// The format `headers` ask for: `Json` when `Accept` names
/// `application/json` and not `text/html`, `Html` when it names `text/html`
/// and not `application/json`; when it names both or neither (no `Accept`,
/// `*/*`, an unreadable value), the caller's `default`.
///
/// The defaults differ by what stands behind the path: the holding page, the
/// event notice and the feedback receipt are what a browser following a link
/// gets, so they default to `Html`; the claim endpoint is an API that apps
/// call (a plain `fetch` or `curl` sends `*/*`), so it defaults to `Json`.
/// Parameters and q-values are not weighed: naming a type is what counts.
pub(super) fn format(headers: &HeaderMap, default: Format) -> Format {
    format_of(
        headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()),
        default,
    )
}

/// [`format`] by the `Accept` field's value, if it was sent as text.
pub(super) fn format_of(accept: Option<&str>, default: Format) -> Format {
    let accept = accept.unwrap_or("");
    match (
        accept.contains("application/json"),
        accept.contains("text/html"),
    ) {
        (true, false) => Format::Json,
        (false, true) => Format::Html,
        _ => default,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The two rules this one replaced, kept here to check it against:
    /// the room's (JSON only when asked for alone) and the claim
    /// endpoint's (JSON unless HTML is asked for alone).
    fn old_room(accept: Option<&str>) -> bool {
        accept.is_some_and(|a| a.contains("application/json") && !a.contains("text/html"))
    }
    fn old_voucher(accept: Option<&str>) -> bool {
        let a = accept.unwrap_or("");
        a.contains("application/json") || !a.contains("text/html")
    }

    fn headers(accept: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = accept {
            h.insert(header::ACCEPT, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn accept_picks_the_format_and_the_default_settles_both_or_neither() {
        use Format::{Html, Json};
        // Accept, then the answer with an Html default and a Json default.
        let table: [(Option<&str>, Format, Format); 8] = [
            (None, Html, Json),
            (Some("*/*"), Html, Json),
            (Some("application/json"), Json, Json),
            (Some("text/html"), Html, Html),
            (Some("text/html, application/json"), Html, Json),
            (Some("application/json;q=0.9, text/html"), Html, Json),
            (
                Some("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
                Html,
                Html,
            ),
            (Some("application/json; charset=utf-8"), Json, Json),
        ];
        for (accept, html_default, json_default) in table {
            let h = headers(accept);
            assert_eq!(format(&h, Html), html_default, "{accept:?}");
            assert_eq!(format(&h, Json), json_default, "{accept:?}");
            // Exactly what the room and the claim endpoint did before.
            assert_eq!(format(&h, Html) == Json, old_room(accept), "{accept:?}");
            assert_eq!(format(&h, Json) == Json, old_voucher(accept), "{accept:?}");
        }
    }

    #[test]
    fn an_unreadable_accept_is_no_accept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::ACCEPT,
            HeaderValue::from_bytes(b"application/json, \xffx").unwrap(),
        );
        assert_eq!(format(&h, Format::Html), Format::Html);
        assert_eq!(format(&h, Format::Json), Format::Json);
    }
}
