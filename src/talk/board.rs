//! The announcement board: the operator's message per language, when it
//! last changed, and the last few announcements.
//!
//! Every poll of every waiting visitor reads the current announcement, so
//! it sits behind an [`ArcSwap`] (a load, no lock); the short history is
//! behind a mutex touched only by changes and the event page.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::config::messages::Messages;

/// Announcements kept in the history: enough for an event's evening
/// (opening, a delay, a restock, sold out), small enough to send to everyone.
pub const HISTORY: usize = 10;

/// The announcement in force.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Current {
    /// The texts (empty: no announcement).
    #[serde(flatten)]
    pub messages: Messages,
    /// When the text last changed (unix seconds); `None` before any.
    pub updated_at: Option<u64>,
}

/// Who made an announcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The config file (at start or a reload).
    Config,
    /// The admin API (`POST /admin/message`, `/admin/room`, `usher ctl`).
    Admin,
    /// Another node, through the shared store.
    Shared,
}

/// One announcement in the history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The texts.
    #[serde(flatten)]
    pub messages: Messages,
    /// When it was made (unix seconds).
    pub at: u64,
    /// Who made it.
    pub source: Source,
}

/// The board.
#[derive(Debug, Default)]
pub struct Board {
    current: ArcSwap<Current>,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// The config's texts as last applied: a reload changes the board only
    /// when these change, so a reload does not undo a live announcement.
    from_config: Option<Messages>,
    history: VecDeque<Entry>,
}

impl Board {
    /// An empty board.
    pub fn new() -> Board {
        Board::default()
    }

    /// The announcement in force (one atomic load).
    pub fn current(&self) -> Arc<Current> {
        self.current.load_full()
    }

    /// The last announcements, newest first.
    pub fn history(&self) -> Vec<Entry> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.history.iter().rev().cloned().collect()
    }

    /// The config's texts at start or after a reload: shown when they
    /// differ from the config's previous texts.
    pub fn from_config(&self, messages: &Messages, now: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.from_config.as_ref() == Some(messages) {
            return;
        }
        let first = inner.from_config.is_none();
        inner.from_config = Some(messages.clone());
        if first && messages == &Messages::default() {
            // Nothing announced at start: no time stamp to show.
            return;
        }
        self.change(&mut inner, messages.clone(), now, Source::Config);
    }

    /// A live announcement. Control characters are removed; a text over
    /// [`MAX_MESSAGE_CHARS`](crate::config::messages::MAX_MESSAGE_CHARS)
    /// is refused. Returns whether the text changed.
    pub fn announce(&self, messages: &Messages, now: u64, source: Source) -> Result<bool, String> {
        let messages = messages.cleaned();
        messages.check()?;
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(self.change(&mut inner, messages, now, source))
    }

    /// Back to the config's texts (`usher ctl reset`).
    pub fn reset(&self, now: u64) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let texts = inner.from_config.clone().unwrap_or_default();
        self.change(&mut inner, texts, now, Source::Admin)
    }

    /// Takes another node's announcement made at `at`, unless this board
    /// already shows the same texts.
    pub fn adopt(&self, messages: &Messages, at: u64) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.change(&mut inner, messages.cleaned(), at, Source::Shared)
    }

    fn change(&self, inner: &mut Inner, messages: Messages, now: u64, source: Source) -> bool {
        if self.current.load().messages == messages {
            return false;
        }
        if inner.history.len() == HISTORY {
            inner.history.pop_front();
        }
        inner.history.push_back(Entry {
            messages: messages.clone(),
            at: now,
            source,
        });
        self.current.store(Arc::new(Current {
            messages,
            updated_at: Some(now),
        }));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(ko: &str, en: &str) -> Messages {
        Messages {
            ko: ko.into(),
            en: en.into(),
        }
    }

    #[test]
    fn a_change_is_stamped_and_kept_a_repeat_is_not() {
        let b = Board::new();
        b.from_config(&Messages::default(), 100);
        assert_eq!(b.current().updated_at, None);
        assert!(b.announce(&m("가", "a"), 200, Source::Admin).unwrap());
        assert!(!b.announce(&m("가", "a"), 300, Source::Admin).unwrap());
        let c = b.current();
        assert_eq!((c.messages.en.as_str(), c.updated_at), ("a", Some(200)));
        assert_eq!(b.history().len(), 1);
    }

    #[test]
    fn a_reload_with_the_same_config_keeps_the_live_text() {
        let b = Board::new();
        b.from_config(&Messages::both("file"), 1);
        b.announce(&m("live", "live"), 2, Source::Admin).unwrap();
        b.from_config(&Messages::both("file"), 3);
        assert_eq!(b.current().messages.ko, "live");
        b.from_config(&Messages::both("new file"), 4);
        assert_eq!(b.current().messages.ko, "new file");
        b.announce(&m("x", "x"), 5, Source::Admin).unwrap();
        assert!(b.reset(6));
        assert_eq!(b.current().messages.ko, "new file");
    }

    #[test]
    fn the_history_is_bounded_newest_first() {
        let b = Board::new();
        for i in 0..(HISTORY as u64 + 5) {
            b.announce(&Messages::both(&i.to_string()), i, Source::Admin)
                .unwrap();
        }
        let h = b.history();
        assert_eq!(h.len(), HISTORY);
        assert_eq!(h[0].at, HISTORY as u64 + 4);
    }

    #[test]
    fn controls_are_removed_and_long_texts_refused() {
        let b = Board::new();
        b.announce(&m("<b>\u{7}", "x"), 1, Source::Admin).unwrap();
        assert_eq!(b.current().messages.ko, "<b>");
        assert!(b
            .announce(&Messages::both(&"y".repeat(5000)), 2, Source::Admin)
            .is_err());
        assert_eq!(b.current().messages.en, "x");
    }
}
