//! The public event notice (`/__usher/event`): what the event is, when it
//! opens, how the line works, the stock, and the announcements so far.
//! The same for every visitor (no ticket, no position), so it may be
//! cached; and the small page a feedback post without script gets back.

use std::fmt::Write as _;

use bytes::Bytes;
use serde::Serialize;

use super::fmt;
use super::i18n::Lang;
use super::page::STYLE;
use crate::talk::{Current, Entry};

/// Everything the notice shows.
#[derive(Debug, Serialize)]
pub struct EventView<'a> {
    /// The event's name (`room.event`).
    pub event: &'a str,
    /// The scheduled opening as configured (RFC 3339).
    pub opens_at: Option<&'a str>,
    /// Seconds until the opening (by the server's clock), if still ahead.
    pub opens_in_seconds: Option<u64>,
    /// `fifo` (first come, first served) or `random` (a lottery), or
    /// `passthrough`, `closed`, `paused`.
    pub mode: &'a str,
    /// Those who arrive before `opens_at` are put in a random order at the
    /// opening (the pre-queue draw); later arrivals queue behind them.
    pub prequeue_draw: bool,
    /// Vouchers in all, when the event gives them out.
    pub stock: Option<u64>,
    /// Vouchers left, when known.
    pub vouchers_left: Option<u64>,
    /// One voucher per admitted visitor.
    pub one_per_person: bool,
    /// The announcement in force.
    pub message: &'a Current,
    /// The last announcements, newest first.
    pub history: &'a [Entry],
}

/// The notice as JSON.
pub fn event_json(v: &EventView) -> Bytes {
    let mut out = serde_json::to_vec(v).unwrap_or_default();
    out.push(b'\n');
    Bytes::from(out)
}

struct Words {
    title: &'static str,
    opens: &'static str,
    opens_in: &'static str,
    how: &'static str,
    fifo: &'static str,
    random: &'static str,
    draw: &'static str,
    one: &'static str,
    stock: &'static str,
    left: &'static str,
    notice: &'static str,
    history: &'static str,
    none: &'static str,
    back: &'static str,
}

const KO: Words = Words {
    title: "이벤트 안내",
    opens: "시작 시각",
    opens_in: "남은 시간(초)",
    how: "대기 방식",
    fifo: "먼저 오신 순서대로 입장합니다.",
    random: "대기 중인 분들 가운데 무작위로 입장합니다.",
    draw: "시작 전에 오신 분들은 시작 시각에 무작위로 순서가 정해지고, 이후에 오신 분들은 그 뒤에 줄을 섭니다. 일찍 오셔도 유리하지 않습니다.",
    one: "1인당 1매만 받을 수 있습니다.",
    stock: "준비 수량",
    left: "남은 수량",
    notice: "안내",
    history: "지난 안내",
    none: "아직 안내가 없습니다.",
    back: "대기실로",
};

const EN: Words = Words {
    title: "About this event",
    opens: "Opens at",
    opens_in: "Seconds until opening",
    how: "How the line works",
    fifo: "First come, first served.",
    random: "People waiting are let in in random order.",
    draw: "Everyone who arrives before the opening is put in a random order at the opening; later arrivals queue behind them. Coming early gives no advantage.",
    one: "One voucher per person.",
    stock: "Vouchers in all",
    left: "Still available",
    notice: "Notice",
    history: "Earlier announcements",
    none: "No announcements yet.",
    back: "Back to the waiting room",
};

fn words(lang: Lang) -> &'static Words {
    match lang {
        Lang::Ko => &KO,
        Lang::En => &EN,
    }
}

fn time(out: &mut String, unix: u64) {
    let mut b = Vec::new();
    fmt::write_rfc3339(&mut b, unix);
    let iso = String::from_utf8_lossy(&b).into_owned();
    let _ = write!(out, "<time datetime=\"{iso}\">{iso}</time>");
}

/// The notice as an HTML page in `lang`; every operator text escaped.
pub fn event_page(v: &EventView, lang: Lang) -> Bytes {
    let w = words(lang);
    let en = lang == Lang::En;
    let mut o = String::with_capacity(4096);
    let _ = write!(
        o,
        "<!doctype html>\n<html lang=\"{l}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n\
         <title>{t}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n<div class=\"card\">\n<h1>",
        l = lang.as_str(),
        t = w.title,
    );
    fmt::push_html_escaped(&mut o, v.event);
    let _ = write!(o, "</h1>\n<dl>\n");
    if let Some(at) = v.opens_at {
        let _ = write!(o, "<dt>{}</dt><dd><time datetime=\"", w.opens);
        fmt::push_html_escaped(&mut o, at);
        o.push_str("\">");
        fmt::push_html_escaped(&mut o, at);
        o.push_str("</time></dd>\n");
    }
    if let Some(s) = v.opens_in_seconds {
        let _ = writeln!(o, "<dt>{}</dt><dd>{s}</dd>", w.opens_in);
    }
    if let Some(n) = v.stock {
        let _ = writeln!(o, "<dt>{}</dt><dd>{n}</dd>", w.stock);
    }
    if let Some(n) = v.vouchers_left {
        let _ = writeln!(o, "<dt>{}</dt><dd>{n}</dd>", w.left);
    }
    let _ = write!(o, "</dl>\n<h2>{}</h2>\n<p>", w.how);
    o.push_str(if v.mode == "random" { w.random } else { w.fifo });
    if v.prequeue_draw {
        o.push(' ');
        o.push_str(w.draw);
    }
    if v.one_per_person {
        o.push(' ');
        o.push_str(w.one);
    }
    let _ = write!(o, "</p>\n<h2>{}</h2>\n", w.notice);
    let text = v.message.messages.text(en);
    if text.is_empty() {
        let _ = writeln!(o, "<p>{}</p>", w.none);
    } else {
        o.push_str("<p class=\"msg\">");
        fmt::push_html_escaped(&mut o, text);
        o.push_str("</p>\n");
        if let Some(at) = v.message.updated_at {
            o.push_str("<p class=\"upd\">");
            time(&mut o, at);
            o.push_str("</p>\n");
        }
    }
    if v.history.len() > 1 {
        let _ = write!(o, "<h2>{}</h2>\n<ul>\n", w.history);
        for e in &v.history[1..] {
            o.push_str("<li>");
            time(&mut o, e.at);
            o.push_str(" — ");
            fmt::push_html_escaped(&mut o, e.messages.text(en));
            o.push_str("</li>\n");
        }
        o.push_str("</ul>\n");
    }
    let _ = write!(
        o,
        "<p><a class=\"btn\" href=\"/\">{}</a></p>\n</div>\n</main>\n</body>\n</html>\n",
        w.back
    );
    Bytes::from(o)
}

/// What a feedback post without script gets back: received, with a link
/// back to the waiting room.
pub fn feedback_page(lang: Lang) -> Bytes {
    let s = lang.strings();
    Bytes::from(format!(
        "<!doctype html>\n<html lang=\"{l}\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">\n\
         <meta name=\"robots\" content=\"noindex\">\n<title>{t}</title>\n<style>{STYLE}</style>\n\
         </head>\n<body>\n<main>\n<div class=\"card\">\n<h1>{t}</h1>\n<p role=\"status\">{ok}</p>\n\
         <p><a class=\"btn\" href=\"/\">{back}</a></p>\n</div>\n</main>\n</body>\n</html>\n",
        l = lang.as_str(),
        t = s.talk.t_feedback,
        ok = s.talk.fb_ok,
        back = words(lang).back,
    ))
}
