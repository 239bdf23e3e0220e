//! The moment's part of a holding page, kept between renders.
//!
//! Of a page's 2.7 KB, a few values are one visitor's (place, wait,
//! progress, return path, challenge); all the rest (texts, state, the time
//! to the second, the announcement) is the same for every visitor answered
//! in the same second, state and language. Each thread keeps that rest
//! prerendered for its last few moments, and a render copies its runs and
//! writes the visitor's values between them: about ten copies and nine
//! small writes instead of some forty formatted parts.

use std::cell::RefCell;

use super::{Compiled, Part, Slot, Values};
use crate::holding::memo::find_or_keep;
use crate::holding::{Lang, RoomState, StatusView};

/// Moments kept per thread: the two languages, each for visitors near the
/// head (refresh in 1 s) and the rest.
const KEEP: usize = 4;

/// Whether `slot` holds one visitor's value (written on every render) or
/// the moment's (kept). Every slot is named, so a new one must be placed.
pub(super) fn per_visitor(slot: Slot) -> bool {
    match slot {
        Slot::Position
        | Slot::Eta
        | Slot::ProgressPercent
        | Slot::ReturnTo
        | Slot::FirstPosition
        | Slot::LowChanceHidden
        | Slot::Challenge
        | Slot::Difficulty => true,
        Slot::Message
        | Slot::State
        | Slot::StateTitle
        | Slot::StateText
        | Slot::Updated
        | Slot::UpdatedIso
        | Slot::OpensAt
        | Slot::OpensAtIso
        | Slot::Countdown
        | Slot::VouchersLeft
        | Slot::RefreshSeconds
        | Slot::OpensIn
        | Slot::QueueHidden
        | Slot::CountdownHidden
        | Slot::VouchersHidden
        | Slot::MessageHidden
        | Slot::MessageUpdated
        | Slot::MessageUpdatedIso
        | Slot::MessageTimeHidden => false,
    }
}

/// Everything the moment's slots read (see [`Values::write`]), and which
/// compiled page.
#[derive(Debug)]
struct Moment {
    pages: u64,
    lang: Lang,
    state: RoomState,
    refresh_seconds: u32,
    now_unix: u64,
    opens_in_seconds: Option<u64>,
    vouchers_left: Option<u64>,
    message_updated_at: Option<u64>,
    opens_at: Option<Box<str>>,
    message: Box<str>,
}

impl Moment {
    fn of(pages: u64, lang: Lang, v: &StatusView) -> Moment {
        Moment {
            pages,
            lang,
            state: v.state,
            refresh_seconds: v.refresh_seconds,
            now_unix: v.now_unix,
            opens_in_seconds: v.opens_in_seconds,
            vouchers_left: v.vouchers_left,
            message_updated_at: v.message_updated_at,
            opens_at: v.opens_at.map(Box::from),
            message: Box::from(v.message),
        }
    }

    fn is(&self, pages: u64, lang: Lang, v: &StatusView) -> bool {
        self.pages == pages
            && self.lang == lang
            && self.state == v.state
            && self.refresh_seconds == v.refresh_seconds
            && self.now_unix == v.now_unix
            && self.opens_in_seconds == v.opens_in_seconds
            && self.vouchers_left == v.vouchers_left
            && self.message_updated_at == v.message_updated_at
            && self.opens_at.as_deref() == v.opens_at
            && *self.message == *v.message
    }
}

/// A piece of a kept page.
#[derive(Debug)]
enum Piece {
    /// Bytes `start..end` of the kept text.
    Run(usize, usize),
    /// A visitor's value.
    Visitor(Slot),
}

/// One moment's page, everything but the visitor's values rendered.
#[derive(Debug)]
struct Kept {
    moment: Moment,
    text: Vec<u8>,
    pieces: Vec<Piece>,
}

impl Kept {
    fn new(compiled: &Compiled, moment: Moment, values: &Values) -> Kept {
        let mut text = Vec::with_capacity(compiled.capacity(values));
        let mut pieces = Vec::new();
        let mut start = 0;
        for part in &compiled.parts {
            match part {
                Part::Lit(lit) => text.extend_from_slice(lit),
                Part::Slot(slot) if !per_visitor(*slot) => values.write(*slot, &mut text),
                Part::Slot(slot) => {
                    pieces.push(Piece::Run(start, text.len()));
                    pieces.push(Piece::Visitor(*slot));
                    start = text.len();
                }
            }
        }
        pieces.push(Piece::Run(start, text.len()));
        pieces.retain(|p| !matches!(p, Piece::Run(a, b) if a == b));
        Kept {
            moment,
            text,
            pieces,
        }
    }

    fn render(&self, values: &Values) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.capacity(values));
        for p in &self.pieces {
            match p {
                Piece::Run(a, b) => out.extend_from_slice(&self.text[*a..*b]),
                Piece::Visitor(slot) => values.write(*slot, &mut out),
            }
        }
        out
    }

    /// The buffer size a render starts with: the kept text and the
    /// visitor's values at their largest.
    fn capacity(&self, values: &Values) -> usize {
        self.text.len()
            + self
                .pieces
                .iter()
                .map(|p| match p {
                    Piece::Run(..) => 0,
                    Piece::Visitor(slot) => values.bound(*slot),
                })
                .sum::<usize>()
    }
}

thread_local! {
    static KEPT: RefCell<Vec<Kept>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's kept page for the moment of `values`,
/// prerendering it first when it is not kept (the oldest kept goes).
fn with_kept<R>(
    compiled: &Compiled,
    pages: u64,
    lang: Lang,
    values: &Values,
    f: impl FnOnce(&Kept) -> R,
) -> R {
    KEPT.with_borrow_mut(|kept| {
        let at = find_or_keep(
            kept,
            KEEP,
            |k| k.moment.is(pages, lang, values.view),
            || Kept::new(compiled, Moment::of(pages, lang, values.view), values),
        );
        f(&kept[at])
    })
}

/// The page for `values`: the moment's part kept, the visitor's written.
pub(super) fn render(compiled: &Compiled, pages: u64, lang: Lang, values: &Values) -> Vec<u8> {
    with_kept(compiled, pages, lang, values, |k| k.render(values))
}

/// The buffer size [`render`] starts with.
#[cfg(test)]
pub(super) fn capacity(compiled: &Compiled, pages: u64, lang: Lang, values: &Values) -> usize {
    with_kept(compiled, pages, lang, values, |k| k.capacity(values))
}

#[cfg(test)]
mod tests {
    use super::super::HoldingPages;
    use crate::holding::tests::{every_placeholder, view};
    use crate::holding::{Lang, RoomState, StatusView};

    /// Views that each differ from the first in one field, every field in
    /// turn, rendered one after the other (more moments than a thread
    /// keeps) in both languages, with the built-in template and one that
    /// uses every placeholder: a kept moment never answers for a view it
    /// does not match.
    #[test]
    fn a_kept_page_equals_a_fresh_render_whatever_changed() {
        let base = view(RoomState::Queued);
        let steps = [
            base,
            StatusView {
                state: RoomState::Paused,
                ..base
            },
            StatusView {
                position: Some(1),
                ..base
            },
            StatusView {
                first_position: None,
                ..base
            },
            StatusView {
                eta_seconds: None,
                ..base
            },
            StatusView {
                refresh_seconds: 1,
                ..base
            },
            StatusView {
                message: "A new announcement <b>&</b>",
                ..base
            },
            StatusView {
                message: "",
                ..base
            },
            StatusView {
                message_updated_at: None,
                ..base
            },
            StatusView {
                opens_at: None,
                ..base
            },
            StatusView {
                state: RoomState::Prequeue,
                opens_in_seconds: Some(59),
                ..base
            },
            StatusView {
                state: RoomState::Prequeue,
                opens_in_seconds: None,
                ..base
            },
            StatusView {
                vouchers_left: None,
                ..base
            },
            StatusView {
                low_chance: false,
                ..base
            },
            StatusView {
                challenge: Some(("c-h-a-l", 18)),
                ..base
            },
            StatusView {
                return_to: "/other?x=<1>",
                ..base
            },
            StatusView {
                now_unix: base.now_unix + 1,
                ..base
            },
        ];
        let pages = [
            HoldingPages::default(),
            HoldingPages::new(Some(&every_placeholder())).expect("every placeholder is known"),
        ];
        for pages in &pages {
            for round in 0..2 {
                for lang in Lang::ALL {
                    for (i, v) in steps.iter().enumerate() {
                        let kept = pages.render(lang, v);
                        assert_eq!(
                            String::from_utf8_lossy(&kept),
                            String::from_utf8_lossy(&pages.render_fresh(lang, v)),
                            "step {i}, {lang:?}, round {round}"
                        );
                        assert!(kept.len() <= pages.capacity(lang, v), "step {i}");
                    }
                }
            }
        }
    }

    /// A reloaded template is never answered from the pages a thread kept
    /// for the one before it.
    #[test]
    fn a_new_page_set_is_not_answered_from_the_old_ones_moment() {
        let v = view(RoomState::Queued);
        let old = HoldingPages::new(Some("old {{position}} {{script}}")).expect("compiles");
        let new = HoldingPages::new(Some("new {{position}} {{script}}")).expect("compiles");
        assert!(old.render(Lang::En, &v).starts_with(b"old 12,345"));
        assert!(new.render(Lang::En, &v).starts_with(b"new 12,345"));
    }
}
