//! The pages usher serves itself while visitors wait: the holding page, the
//! status JSON its script polls, and usher's own error pages.
//!
//! Pure rendering, no I/O: the pipeline hands in a [`StatusView`] and gets
//! bytes back. Templates are compiled once per (template, language) into
//! static segments and slots ([`HoldingPages::new`]); a render only
//! concatenates those segments with a few escaped values into one buffer
//! sized up front, because every waiting visitor loads this page and polls
//! the status endpoint.
//!
//! # Layout
//! - `i18n`: Korean and English texts, `Accept-Language` negotiation
//!   (`i18n_talk`: the announcement, feedback and event page texts).
//! - `page`: template compile and render.
//! - `asset`: the page's stylesheet and script, served as files named by
//!   their content (cached by browsers for a year).
//! - `fmt`: escaping and number/time writers shared by page and JSON.
//! - `json`: the status JSON.
//! - `memo`: the escaped announcement and message, remembered per thread.
//! - `error`: usher's own error pages.
//! - `event`: the public event notice and the feedback receipt page.
//! - `voucher`: the page a browser gets from the claim endpoint.
//! - `feedback_form`: the report-a-problem form (holding and error pages).
//! - `assets/`: the default template, its CSS and the polling script.

mod asset;
mod error;
mod event;
mod feedback_form;
pub(crate) mod fmt;
mod i18n;
mod i18n_talk;
mod json;
mod memo;
mod page;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_talk;
mod voucher;

pub use asset::{find_asset, Asset, ASSETS_PREFIX};
pub use error::{error_page, error_page_for};
pub use event::{event_json, event_page, feedback_page, EventView};
pub use i18n::{negotiate, Lang};
pub use json::status_json;
pub use page::{HoldingPages, TemplateError, MAX_TEMPLATE_BYTES, PLACEHOLDERS};
pub use voucher::{voucher_page, VoucherState, VOUCHER_PATH};

/// What the waiting room is doing for one visitor.
///
/// The declaration order indexes the per-state texts in `i18n`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RoomState {
    /// In line with a place; the line is moving.
    Queued,
    /// Arrived before the scheduled start; places are drawn at `opens_at`.
    Prequeue,
    /// The operator paused admissions; the visitor keeps their place.
    Paused,
    /// The event is not admitting anyone.
    Closed,
    /// Inventory is gone: nobody should keep waiting.
    SoldOut,
    /// The visitor's turn came: go to `return_to`.
    Admitted,
}

impl RoomState {
    /// Every state, in declaration order.
    pub const ALL: [RoomState; 6] = [
        RoomState::Queued,
        RoomState::Prequeue,
        RoomState::Paused,
        RoomState::Closed,
        RoomState::SoldOut,
        RoomState::Admitted,
    ];

    /// The name used in the status JSON and the page's `data-state`.
    pub fn as_str(self) -> &'static str {
        match self {
            RoomState::Queued => "queued",
            RoomState::Prequeue => "prequeue",
            RoomState::Paused => "paused",
            RoomState::Closed => "closed",
            RoomState::SoldOut => "sold_out",
            RoomState::Admitted => "admitted",
        }
    }

    /// Whether a place in line (position, wait, progress) means anything.
    fn shows_place(self) -> bool {
        matches!(self, RoomState::Queued | RoomState::Paused)
    }
}

/// Everything one render of the holding page or the status JSON shows.
#[derive(Debug, Clone, Copy)]
pub struct StatusView<'a> {
    /// The room's state for this visitor.
    pub state: RoomState,
    /// The visitor's place in line (1 = next), if known.
    pub position: Option<u64>,
    /// The position when this visitor was first seen; the progress bar shows
    /// how much of that distance is covered.
    pub first_position: Option<u64>,
    /// An honest estimate of the wait, or `None` ("unknown yet").
    pub eta_seconds: Option<u64>,
    /// How often the script should poll, before its ±20% jitter.
    pub refresh_seconds: u32,
    /// The operator's message in the page's language, plain text
    /// (escaped here).
    pub message: &'a str,
    /// The message in both languages (`ko`, `en`) for the status JSON,
    /// so a page can switch language without asking again.
    pub messages: Option<(&'a str, &'a str)>,
    /// When the message last changed (unix seconds), shown with it.
    pub message_updated_at: Option<u64>,
    /// The scheduled start (RFC 3339), shown in the pre-queue.
    pub opens_at: Option<&'a str>,
    /// Seconds until `opens_at` by the server's clock, for the countdown
    /// (the visitor's clock may be wrong).
    pub opens_in_seconds: Option<u64>,
    /// Remaining inventory, when the operator chooses to show it.
    pub vouchers_left: Option<u64>,
    /// Show the note that stock may run out before this visitor's turn.
    pub low_chance: bool,
    /// A proof-of-work challenge and its bits (a newcomer over the
    /// per-address ticket limit): the script solves it before polling.
    pub challenge: Option<(&'a str, u32)>,
    /// Where the visitor was going; anything but a same-origin path is
    /// replaced by `/` (see [`sanitize_return_to`]).
    pub return_to: &'a str,
    /// Render time, for the "last updated" line.
    pub now_unix: u64,
}

/// Longest `return_to` kept; longer ones become `/` (bounded page size).
pub const MAX_RETURN_TO: usize = 2048;

/// Returns `path` when it is a same-origin path (a single leading `/`, no
/// backslash, whitespace or control character, at most [`MAX_RETURN_TO`]
/// bytes), otherwise `/`.
///
/// Browsers drop tabs and newlines inside URLs and read `\` as `/`, so
/// `/\evil.com` and `/\t/evil.com` would leave the site just like
/// `//evil.com`; absolute URLs (`https:`, `javascript:`) never start with `/`.
pub fn sanitize_return_to(path: &str) -> &str {
    let b = path.as_bytes();
    let ok = b.first() == Some(&b'/')
        && b.len() <= MAX_RETURN_TO
        && b.get(1) != Some(&b'/')
        && !b.iter().any(|&c| c == b'\\' || c <= b' ' || c == 0x7f);
    if ok {
        path
    } else {
        "/"
    }
}
