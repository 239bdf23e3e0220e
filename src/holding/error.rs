//! usher's own error answers (bad requests, overload, origin failures): the
//! holding page's look, a short friendly text in both languages, nothing
//! about internals. Rendered once on first use, then shared.

use std::sync::OnceLock;

use bytes::Bytes;

use super::i18n::{error_text, Lang};
use super::page::STYLE;

/// Statuses with their own text; anything else gets a generic one.
const STATUSES: [u16; 7] = [400, 413, 429, 431, 502, 503, 504];

/// Pages per language: one per entry of [`STATUSES`], then the generic one.
type Pages = [[Bytes; STATUSES.len() + 1]; 2];

static PAGES: OnceLock<Pages> = OnceLock::new();

/// Origin failures: the visitor was let in and the site broke, which is
/// what the report-a-problem form is for.
const WITH_FORM: [u16; 3] = [502, 503, 504];

static FORM_PAGES: OnceLock<[[Bytes; WITH_FORM.len()]; 2]> = OnceLock::new();

/// [`error_page`], with the report-a-problem form on the pages for origin
/// failures (502, 503, 504) when `feedback` (a room takes feedback).
pub fn error_page_for(status: u16, lang: Lang, feedback: bool) -> Bytes {
    let Some(i) = WITH_FORM
        .iter()
        .position(|s| *s == status)
        .filter(|_| feedback)
    else {
        return error_page(status, lang);
    };
    let pages = FORM_PAGES.get_or_init(|| {
        Lang::ALL.map(|l| std::array::from_fn(|i| render_with(Some(WITH_FORM[i]), l, true)))
    });
    pages[lang as usize][i].clone()
}

/// The HTML body for an error answer with this status (400, 413, 429, 431,
/// 502, 503 and 504 have their own words; other codes a generic text).
/// Cheap to call: the pages are built once and shared.
pub fn error_page(status: u16, lang: Lang) -> Bytes {
    let pages = PAGES.get_or_init(|| Lang::ALL.map(render_all));
    let index = STATUSES
        .iter()
        .position(|s| *s == status)
        .unwrap_or(STATUSES.len());
    pages[lang as usize][index].clone()
}

fn render_all(lang: Lang) -> [Bytes; STATUSES.len() + 1] {
    std::array::from_fn(|i| render(STATUSES.get(i).copied(), lang))
}

fn render(status: Option<u16>, lang: Lang) -> Bytes {
    render_with(status, lang, false)
}

fn render_with(status: Option<u16>, lang: Lang, form: bool) -> Bytes {
    let strings = lang.strings();
    let (title, text) = error_text(status.unwrap_or(500), lang);
    // A request that was itself at fault would fail the same way again:
    // offer the home page instead of a retry.
    let (href, action) = match status {
        Some(400 | 413 | 431) => ("/", strings.t_home),
        _ => ("", strings.t_retry),
    };
    let code = status.map(|s| format!("{s} · ")).unwrap_or_default();
    Bytes::from(format!(
        "<!doctype html>\n<html lang=\"{lang}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{code}{title}</title>\n\
         <style>{STYLE}</style>\n</head>\n<body>\n<main>\n<div class=\"card\">\n\
         <h1>{title}</h1>\n<p>{text}</p>\n<p><a class=\"btn\" href=\"{href}\">{action}</a></p>\n\
         </div>\n{form}\n</main>\n</body>\n</html>\n",
        lang = lang.as_str(),
        form = if form {
            super::feedback_form::feedback_form(strings)
        } else {
            ""
        },
    ))
}
