//! Holding page templates: compiled once into static segments and slots,
//! rendered per request by concatenation.
//!
//! Placeholders are `{{name}}`. Language texts are folded into the static
//! segments at compile time; the script (`{{script}}`) and the stylesheet
//! (`{{stylesheet}}`) are links to files served by usher and cached by the
//! browser (`{{style}}` still inlines the CSS); only the per-visitor
//! values (position, wait, progress, state, message, times) are slots. An
//! unknown placeholder is a compile error naming it, so a broken operator
//! template is refused at config load and the last good one stays in use.
//!
//! The script updates elements by id when they exist, so an operator's
//! template keeps live updates by reusing them: `u-pos` (position), `u-eta`
//! (wait), `u-bar` (a `<progress>`), `u-v`/`u-vn` (stock block/number),
//! `u-msg` (message), `u-say` (an always-present, visually hidden
//! `aria-live` element the script fills once per new message, so a screen
//! reader reads it once, not on every poll), `u-msgw`/`u-msgt` (when the message
//! changed), `u-upd` and `u-at` (`<time datetime>` elements made local),
//! `u-cdv` (countdown), `u-fbf`/`u-fbr` (the feedback form and its
//! result line). `{{script}}` brings its own data element.

use std::sync::atomic::{AtomicU64, Ordering};

use thiserror::Error;

use super::asset;
use super::fmt::{self, MAX_NUMBER_LEN};
use super::i18n::{Lang, Strings};
use super::{sanitize_return_to, RoomState, StatusView};

mod moment;

/// The built-in template.
const DEFAULT_TEMPLATE: &str = include_str!("assets/holding.html");
/// Shared by the holding and error pages (`{{style}}`).
pub(crate) const STYLE: &str = include_str!("assets/holding.css");
/// The polling script; `__USHER_L10N__` becomes the language's texts.
pub(crate) const SCRIPT: &str = include_str!("assets/holding.js");
/// What `{{script}}` expands to before the script itself: the values the
/// script needs, as attributes (read through `dataset`, so HTML escaping is
/// the only escaping they need and no visitor value enters script source).
const SCRIPT_DATA: &str = "<div id=\"u-data\" hidden data-state=\"{{state}}\" \
    data-refresh=\"{{refresh_seconds}}\" data-first=\"{{first_position}}\" \
    data-opens=\"{{opens_in}}\" data-ret=\"{{return_to}}\" \
    data-pow=\"{{challenge}}\" data-bits=\"{{difficulty}}\"></div>";

/// Largest operator template accepted; the default is about 2 KB.
pub const MAX_TEMPLATE_BYTES: usize = 64 * 1024;

/// Why an operator's template was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum TemplateError {
    /// The file is larger than [`MAX_TEMPLATE_BYTES`].
    #[error("holding page template is {size} bytes; at most {max} are allowed")]
    TooLarge {
        /// Size of the template.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// A `{{name}}` that is not one of [`PLACEHOLDERS`].
    #[error("holding page template line {line}: unknown placeholder {{{{{name}}}}}")]
    UnknownPlaceholder {
        /// The name as written (cut to 64 bytes).
        name: String,
        /// 1-based line number.
        line: usize,
    },
    /// A `{{` with no `}}` after it.
    #[error("holding page template line {line}: `{{{{` is never closed")]
    Unclosed {
        /// 1-based line number.
        line: usize,
    },
    /// Without `{{script}}` the page never polls, so nobody is let in.
    #[error("holding page template has no {{{{script}}}} placeholder; without it visitors are never admitted")]
    MissingScript,
}

/// A value computed per render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Position,
    Eta,
    ProgressPercent,
    Message,
    State,
    StateTitle,
    StateText,
    Updated,
    UpdatedIso,
    OpensAt,
    OpensAtIso,
    Countdown,
    VouchersLeft,
    ReturnTo,
    FirstPosition,
    RefreshSeconds,
    OpensIn,
    QueueHidden,
    CountdownHidden,
    VouchersHidden,
    LowChanceHidden,
    MessageHidden,
    Challenge,
    Difficulty,
    MessageUpdated,
    MessageUpdatedIso,
    MessageTimeHidden,
}

/// What a placeholder name stands for.
#[derive(Clone, Copy)]
enum Placeholder {
    Slot(Slot),
    /// Fixed per language: folded into the static text.
    Text(fn(&Strings) -> &'static str),
    LangSwitch,
    Style,
    Stylesheet,
    Script,
}

/// Every placeholder name, with what it stands for.
const TABLE: &[(&str, Placeholder)] = &[
    ("position", Placeholder::Slot(Slot::Position)),
    ("eta", Placeholder::Slot(Slot::Eta)),
    ("progress_percent", Placeholder::Slot(Slot::ProgressPercent)),
    ("message", Placeholder::Slot(Slot::Message)),
    ("state", Placeholder::Slot(Slot::State)),
    ("state_title", Placeholder::Slot(Slot::StateTitle)),
    ("state_text", Placeholder::Slot(Slot::StateText)),
    ("updated", Placeholder::Slot(Slot::Updated)),
    ("updated_iso", Placeholder::Slot(Slot::UpdatedIso)),
    ("opens_at", Placeholder::Slot(Slot::OpensAt)),
    ("opens_at_iso", Placeholder::Slot(Slot::OpensAtIso)),
    ("countdown", Placeholder::Slot(Slot::Countdown)),
    ("vouchers_left", Placeholder::Slot(Slot::VouchersLeft)),
    ("return_to", Placeholder::Slot(Slot::ReturnTo)),
    ("first_position", Placeholder::Slot(Slot::FirstPosition)),
    ("refresh_seconds", Placeholder::Slot(Slot::RefreshSeconds)),
    ("opens_in", Placeholder::Slot(Slot::OpensIn)),
    ("queue_hidden", Placeholder::Slot(Slot::QueueHidden)),
    ("countdown_hidden", Placeholder::Slot(Slot::CountdownHidden)),
    ("vouchers_hidden", Placeholder::Slot(Slot::VouchersHidden)),
    (
        "low_chance_hidden",
        Placeholder::Slot(Slot::LowChanceHidden),
    ),
    ("message_hidden", Placeholder::Slot(Slot::MessageHidden)),
    ("challenge", Placeholder::Slot(Slot::Challenge)),
    ("difficulty", Placeholder::Slot(Slot::Difficulty)),
    ("message_updated", Placeholder::Slot(Slot::MessageUpdated)),
    (
        "message_updated_iso",
        Placeholder::Slot(Slot::MessageUpdatedIso),
    ),
    (
        "message_time_hidden",
        Placeholder::Slot(Slot::MessageTimeHidden),
    ),
    ("lang", Placeholder::Text(|s| s.lang)),
    ("t_position", Placeholder::Text(|s| s.t_position)),
    ("t_eta", Placeholder::Text(|s| s.t_eta)),
    ("t_progress", Placeholder::Text(|s| s.t_progress)),
    ("t_vouchers", Placeholder::Text(|s| s.t_vouchers)),
    ("t_low_chance", Placeholder::Text(|s| s.t_low_chance)),
    ("t_updated", Placeholder::Text(|s| s.t_updated)),
    ("t_opens_at", Placeholder::Text(|s| s.t_opens_at)),
    ("t_refresh", Placeholder::Text(|s| s.t_refresh)),
    ("t_announced", Placeholder::Text(|s| s.talk.t_announced)),
    ("t_feedback", Placeholder::Text(|s| s.talk.t_feedback)),
    ("t_fb_category", Placeholder::Text(|s| s.talk.t_fb_category)),
    (
        "t_fb_cant_get_in",
        Placeholder::Text(|s| s.talk.t_fb_cant_get_in),
    ),
    (
        "t_fb_page_error",
        Placeholder::Text(|s| s.talk.t_fb_page_error),
    ),
    ("t_fb_voucher", Placeholder::Text(|s| s.talk.t_fb_voucher)),
    ("t_fb_other", Placeholder::Text(|s| s.talk.t_fb_other)),
    ("t_fb_text", Placeholder::Text(|s| s.talk.t_fb_text)),
    ("t_fb_send", Placeholder::Text(|s| s.talk.t_fb_send)),
    ("t_event", Placeholder::Text(|s| s.talk.t_event)),
    (
        "feedback_form",
        Placeholder::Text(super::feedback_form::feedback_form),
    ),
    ("lang_switch", Placeholder::LangSwitch),
    ("style", Placeholder::Style),
    ("stylesheet", Placeholder::Stylesheet),
    ("script", Placeholder::Script),
];

/// The placeholder names a template may use, for documentation and errors.
pub const PLACEHOLDERS: [&str; TABLE.len()] = {
    let mut names = [""; TABLE.len()];
    let mut i = 0;
    while i < TABLE.len() {
        names[i] = TABLE[i].0;
        i += 1;
    }
    names
};

fn lookup(name: &str) -> Option<Placeholder> {
    TABLE.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

#[derive(Debug)]
enum Part {
    Lit(Box<[u8]>),
    Slot(Slot),
}

/// One template compiled for one language.
#[derive(Debug)]
struct Compiled {
    parts: Vec<Part>,
    static_len: usize,
}

/// Collects parts, merging adjacent static text.
#[derive(Default)]
struct Builder {
    parts: Vec<Part>,
    pending: Vec<u8>,
    static_len: usize,
}

impl Builder {
    fn text(&mut self, s: &str) {
        self.pending.extend_from_slice(s.as_bytes());
    }

    fn slot(&mut self, slot: Slot) {
        self.flush();
        self.parts.push(Part::Slot(slot));
    }

    fn flush(&mut self) {
        if !self.pending.is_empty() {
            self.static_len += self.pending.len();
            let lit = std::mem::take(&mut self.pending).into_boxed_slice();
            self.parts.push(Part::Lit(lit));
        }
    }

    /// Adds `template`, expanding placeholders; returns whether `{{script}}`
    /// was seen.
    fn template(&mut self, template: &str, lang: Lang) -> Result<bool, TemplateError> {
        let strings = lang.strings();
        let mut saw_script = false;
        let mut rest = template;
        while let Some(open) = rest.find("{{") {
            self.text(&rest[..open]);
            let after = &rest[open + 2..];
            let line = || {
                1 + template[..template.len() - after.len()]
                    .matches('\n')
                    .count()
            };
            let Some(close) = after.find("}}") else {
                return Err(TemplateError::Unclosed { line: line() });
            };
            let name = after[..close].trim();
            match lookup(name) {
                Some(Placeholder::Slot(slot)) => self.slot(slot),
                Some(Placeholder::Text(text)) => self.text(text(strings)),
                Some(Placeholder::LangSwitch) => self.lang_switch(lang),
                Some(Placeholder::Style) => self.text(STYLE),
                Some(Placeholder::Stylesheet) => {
                    self.text("<link rel=\"stylesheet\" href=\"");
                    self.text(&asset::stylesheet().path);
                    self.text("\">");
                }
                Some(Placeholder::Script) => {
                    saw_script = true;
                    self.script(lang)?;
                }
                None => {
                    return Err(TemplateError::UnknownPlaceholder {
                        name: cut(name, 64).to_owned(),
                        line: line(),
                    })
                }
            }
            rest = &after[close + 2..];
        }
        self.text(rest);
        Ok(saw_script)
    }

    fn lang_switch(&mut self, lang: Lang) {
        let other = match lang {
            Lang::Ko => Lang::En,
            Lang::En => Lang::Ko,
        };
        let tag = other.as_str();
        self.text("<a href=\"?usher_lang=");
        self.text(tag);
        self.text("\" hreflang=\"");
        self.text(tag);
        self.text("\" lang=\"");
        self.text(tag);
        self.text("\">");
        self.text(other.strings().native_name);
        self.text("</a>");
    }

    fn script(&mut self, lang: Lang) -> Result<(), TemplateError> {
        self.template(SCRIPT_DATA, lang)?;
        // A file of its own (see [`asset`]): fetched once per browser,
        // not with every page.
        self.text("<script src=\"");
        self.text(&asset::script(lang).path);
        self.text("\" defer></script>");
        Ok(())
    }

    fn finish(mut self) -> Compiled {
        self.flush();
        Compiled {
            parts: self.parts,
            static_len: self.static_len,
        }
    }
}

fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn compile(template: &str, lang: Lang) -> Result<Compiled, TemplateError> {
    if template.len() > MAX_TEMPLATE_BYTES {
        return Err(TemplateError::TooLarge {
            size: template.len(),
            max: MAX_TEMPLATE_BYTES,
        });
    }
    let mut builder = Builder::default();
    if !builder.template(template, lang)? {
        return Err(TemplateError::MissingScript);
    }
    Ok(builder.finish())
}

/// The holding page compiled for both languages; build once per config
/// (re)load and share it (it is immutable).
#[derive(Debug)]
pub struct HoldingPages {
    compiled: [Compiled; 2],
    /// This set's own number: the pages a thread keeps prerendered for a
    /// moment ([`moment`]) belong to one set, never to a reloaded one.
    id: u64,
}

/// The number of the next [`HoldingPages`].
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl HoldingPages {
    /// Compiles `template_override` (the operator's template file's text) or
    /// the built-in template for both languages.
    pub fn new(template_override: Option<&str>) -> Result<Self, TemplateError> {
        let template = template_override.unwrap_or(DEFAULT_TEMPLATE);
        Ok(HoldingPages {
            compiled: [compile(template, Lang::Ko)?, compile(template, Lang::En)?],
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The full HTML page for one visitor.
    pub fn render(&self, lang: Lang, view: &StatusView) -> Vec<u8> {
        let values = Values::new(lang.strings(), view);
        moment::render(&self.compiled[lang as usize], self.id, lang, &values)
    }

    /// The page rendered part by part, nothing kept: what [`render`]
    /// must always equal.
    ///
    /// [`render`]: HoldingPages::render
    #[cfg(test)]
    pub(crate) fn render_fresh(&self, lang: Lang, view: &StatusView) -> Vec<u8> {
        let compiled = &self.compiled[lang as usize];
        let values = Values::new(lang.strings(), view);
        let mut out = Vec::with_capacity(compiled.capacity(&values));
        for part in &compiled.parts {
            match part {
                Part::Lit(lit) => out.extend_from_slice(lit),
                Part::Slot(slot) => values.write(*slot, &mut out),
            }
        }
        out
    }

    /// The buffer size a render starts with; the tests check that no
    /// render outgrows it (one allocation per page).
    #[cfg(test)]
    pub(crate) fn capacity(&self, lang: Lang, view: &StatusView) -> usize {
        let values = Values::new(lang.strings(), view);
        moment::capacity(&self.compiled[lang as usize], self.id, lang, &values)
    }
}

impl Compiled {
    fn capacity(&self, values: &Values) -> usize {
        self.static_len
            + self
                .parts
                .iter()
                .map(|p| match p {
                    Part::Lit(_) => 0,
                    Part::Slot(slot) => values.bound(*slot),
                })
                .sum::<usize>()
    }
}

impl Default for HoldingPages {
    /// The built-in template (checked by the tests, so this cannot fail).
    fn default() -> Self {
        HoldingPages::new(None).expect("the built-in holding template compiles")
    }
}

/// A view's values, prepared once per render.
struct Values<'a> {
    strings: &'static Strings,
    view: &'a StatusView<'a>,
    return_to: &'a str,
}

/// Upper bound for any slot other than the operator's text.
const SMALL: usize = 64 + MAX_NUMBER_LEN;

impl<'a> Values<'a> {
    fn new(strings: &'static Strings, view: &'a StatusView<'a>) -> Self {
        Values {
            strings,
            view,
            return_to: sanitize_return_to(view.return_to),
        }
    }

    fn bound(&self, slot: Slot) -> usize {
        let opens_at = self.view.opens_at.unwrap_or("");
        match slot {
            Slot::Message => fmt::html_escaped_len(self.view.message),
            Slot::ReturnTo => fmt::html_escaped_len(self.return_to),
            Slot::OpensAt => fmt::opens_at_len(opens_at),
            Slot::OpensAtIso => fmt::html_escaped_len(opens_at),
            Slot::StateTitle => self.strings.state(self.view.state).title.len(),
            Slot::StateText => self.strings.state(self.view.state).text.len(),
            Slot::Challenge => self
                .view
                .challenge
                .map_or(0, |(c, _)| fmt::html_escaped_len(c)),
            _ => SMALL,
        }
    }

    fn write(&self, slot: Slot, out: &mut Vec<u8>) {
        let v = self.view;
        let shows_place = v.state.shows_place();
        let hidden = |out: &mut Vec<u8>, hide: bool| {
            if hide {
                out.extend_from_slice(b"hidden");
            }
        };
        match slot {
            Slot::Position => match v.position {
                Some(p) if shows_place => fmt::write_grouped(out, p),
                _ => out.extend_from_slice("—".as_bytes()),
            },
            Slot::Eta => fmt::write_eta(out, self.strings, v.eta_seconds),
            Slot::ProgressPercent => fmt::write_u64(out, progress_percent(v)),
            Slot::Message => fmt::html_escape(out, v.message),
            Slot::State => out.extend_from_slice(v.state.as_str().as_bytes()),
            Slot::StateTitle => out.extend_from_slice(self.strings.state(v.state).title.as_bytes()),
            Slot::StateText => out.extend_from_slice(self.strings.state(v.state).text.as_bytes()),
            Slot::Updated => fmt::write_time_utc(out, v.now_unix),
            Slot::UpdatedIso => fmt::write_rfc3339(out, v.now_unix),
            Slot::OpensAt => {
                if let Some(at) = v.opens_at {
                    fmt::write_opens_at(out, at);
                }
            }
            Slot::OpensAtIso => fmt::html_escape(out, v.opens_at.unwrap_or("")),
            Slot::Countdown => {
                if let Some(secs) = v.opens_in_seconds {
                    fmt::write_countdown(out, self.strings, secs);
                }
            }
            Slot::VouchersLeft => {
                if let Some(n) = v.vouchers_left {
                    fmt::write_grouped(out, n);
                }
            }
            Slot::ReturnTo => fmt::html_escape(out, self.return_to),
            Slot::FirstPosition => {
                if let Some(n) = v.first_position.or(v.position) {
                    fmt::write_u64(out, n);
                }
            }
            Slot::RefreshSeconds => fmt::write_u64(out, u64::from(v.refresh_seconds.max(1))),
            Slot::OpensIn => {
                if let Some(n) = v.opens_in_seconds {
                    fmt::write_u64(out, n);
                }
            }
            Slot::QueueHidden => hidden(out, !shows_place),
            Slot::CountdownHidden => hidden(
                out,
                v.state != RoomState::Prequeue
                    || (v.opens_at.is_none() && v.opens_in_seconds.is_none()),
            ),
            Slot::VouchersHidden => hidden(out, v.vouchers_left.is_none()),
            Slot::LowChanceHidden => hidden(
                out,
                !v.low_chance || !(shows_place || v.state == RoomState::Prequeue),
            ),
            Slot::MessageHidden => hidden(out, v.message.trim().is_empty()),
            Slot::Challenge => {
                if let Some((c, _)) = v.challenge {
                    fmt::html_escape(out, c);
                }
            }
            Slot::Difficulty => {
                if let Some((_, bits)) = v.challenge {
                    fmt::write_u64(out, u64::from(bits));
                }
            }
            Slot::MessageUpdated => {
                if let Some(at) = v.message_updated_at {
                    fmt::write_time_utc(out, at);
                }
            }
            Slot::MessageUpdatedIso => {
                if let Some(at) = v.message_updated_at {
                    fmt::write_rfc3339(out, at);
                }
            }
            Slot::MessageTimeHidden => hidden(
                out,
                v.message_updated_at.is_none() || v.message.trim().is_empty(),
            ),
        }
    }
}

/// Share of the distance from the first-seen position already covered,
/// 0..=100; 0 when either position is unknown.
pub(crate) fn progress_percent(v: &StatusView) -> u64 {
    match (v.position, v.first_position) {
        (Some(pos), Some(first)) if first > 0 => {
            let covered = u128::from(first.saturating_sub(pos));
            (covered * 100 / u128::from(first)).min(100) as u64
        }
        _ => 0,
    }
}
