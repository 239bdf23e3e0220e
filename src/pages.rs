//! usher's own small error pages (bilingual, no internals leaked), rendered
//! once and served from memory.

use std::sync::OnceLock;

use bytes::Bytes;

const STATUSES: [(u16, &str, &str, &str); 7] = [
    (
        400,
        "Bad request",
        "요청을 처리할 수 없습니다",
        "The request could not be understood.",
    ),
    (
        413,
        "Request too large",
        "요청이 너무 큽니다",
        "The request body is larger than this site accepts.",
    ),
    (
        429,
        "Too many requests",
        "요청이 너무 많습니다",
        "Please wait a moment and try again.",
    ),
    (
        431,
        "Request headers too large",
        "요청 헤더가 너무 큽니다",
        "Try clearing this site's cookies.",
    ),
    (
        502,
        "The site is not answering",
        "사이트가 응답하지 않습니다",
        "Please try again in a moment.",
    ),
    (
        503,
        "The site is busy",
        "사이트가 혼잡합니다",
        "Please try again in a few seconds.",
    ),
    (
        504,
        "The site is slow to answer",
        "사이트 응답이 늦어지고 있습니다",
        "Please try again in a moment.",
    ),
];

/// The page for `status` (a generic one for statuses not listed).
pub fn error_page(status: u16) -> Bytes {
    static PAGES: OnceLock<Vec<(u16, Bytes)>> = OnceLock::new();
    let pages = PAGES.get_or_init(|| {
        STATUSES
            .iter()
            .map(|(code, en, ko, hint)| {
                let html = format!(
                    "<!doctype html><html lang=\"ko\"><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{code} {en}</title>\
<body style=\"font-family:system-ui,sans-serif;max-width:32em;margin:4em auto;padding:0 1em;color:#222\">\
<h1>{ko}</h1><p lang=\"en\"><strong>{en}.</strong> {hint}</p><p style=\"color:#666\">{code}</p></body></html>\n"
                );
                (*code, Bytes::from(html))
            })
            .collect()
    });
    pages
        .iter()
        .find(|(c, _)| *c == status)
        .map(|(_, b)| b.clone())
        .unwrap_or_else(|| {
            Bytes::from(format!(
                "<!doctype html><title>{status}</title><h1>{status}</h1>\n"
            ))
        })
}
