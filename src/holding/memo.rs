//! Escaped forms of the long texts that every answer repeats (the
//! announcement in both languages, the room's message): escaped once per
//! thread and text, then copied. They change only when the operator says
//! something new, while the holding page and the status JSON are the
//! answers usher gives most.
//!
//! Keyed by the text itself, not by where it lives: a comparison costs a
//! fraction of an escape, and a changed text can never be answered with
//! the old one's escape.

use std::cell::RefCell;

/// Texts shorter than this are escaped each time (cheaper than a lookup).
pub(crate) const MIN_LEN: usize = 24;
/// Texts remembered per thread and kind: a few, so that the message and
/// both languages of the announcement all stay.
const SLOTS: usize = 4;

/// A text and its escaped form.
type Entry = (Box<str>, Box<[u8]>);

/// The last few texts of one kind of escape and their escaped forms.
#[derive(Default)]
pub(crate) struct Memo {
    slots: [Option<Entry>; SLOTS],
    next: usize,
}

impl Memo {
    fn get(&self, s: &str) -> Option<&[u8]> {
        self.slots
            .iter()
            .flatten()
            .find(|(k, _)| **k == *s)
            .map(|(_, v)| &**v)
    }

    fn put(&mut self, s: &str, escaped: &[u8]) {
        self.slots[self.next] = Some((s.into(), escaped.into()));
        self.next = (self.next + 1) % SLOTS;
    }
}

thread_local! {
    pub(crate) static HTML: RefCell<Memo> = RefCell::new(Memo::default());
    pub(crate) static JSON: RefCell<Memo> = RefCell::new(Memo::default());
}

/// Appends the escape of `s` to `out`: remembered in `memo`, or made by
/// `escape` (and remembered) the first time.
pub(crate) fn escape_into(
    memo: &'static std::thread::LocalKey<RefCell<Memo>>,
    out: &mut Vec<u8>,
    s: &str,
    escape: fn(&mut Vec<u8>, &str),
) {
    if s.len() < MIN_LEN {
        return escape(out, s);
    }
    memo.with_borrow_mut(|m| {
        if let Some(e) = m.get(s) {
            out.extend_from_slice(e);
            return;
        }
        let start = out.len();
        escape(out, s);
        m.put(s, &out[start..]);
    })
}

/// Where in `kept` the entry `is` finds is, or the one `make` adds now
/// (the oldest goes when `keep` are kept): the per-thread keeping of the
/// page's moment (`page::moment`) and the status JSON's tail (`json`).
pub(crate) fn find_or_keep<T>(
    kept: &mut Vec<T>,
    keep: usize,
    is: impl Fn(&T) -> bool,
    make: impl FnOnce() -> T,
) -> usize {
    if let Some(at) = kept.iter().position(is) {
        return at;
    }
    if kept.len() == keep {
        kept.remove(0);
    }
    kept.push(make());
    kept.len() - 1
}

/// The length of the escape of `s`, when remembered.
pub(crate) fn escaped_len(
    memo: &'static std::thread::LocalKey<RefCell<Memo>>,
    s: &str,
) -> Option<usize> {
    if s.len() < MIN_LEN {
        return None;
    }
    memo.with_borrow(|m| m.get(s).map(<[u8]>::len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upper(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.to_ascii_uppercase().as_bytes());
    }

    thread_local! {
        static TEST: RefCell<Memo> = RefCell::new(Memo::default());
    }

    #[test]
    fn remembered_escapes_follow_the_text() {
        let a = "an announcement long enough to be remembered";
        let mut out = Vec::new();
        escape_into(&TEST, &mut out, a, upper);
        assert_eq!(out, a.to_ascii_uppercase().as_bytes());
        assert_eq!(escaped_len(&TEST, a), Some(a.len()));
        // Remembered: the same bytes again, after what is already there.
        escape_into(&TEST, &mut out, a, upper);
        assert_eq!(out.len(), 2 * a.len());
        // A different text of the same length is never answered with the
        // first one's escape.
        let b = "AN ANNOUNCEMENT LONG ENOUGH TO BE REMEMBERED".to_lowercase() + "!";
        let b = &b[1..];
        assert_eq!(b.len(), a.len());
        assert_eq!(escaped_len(&TEST, b), None);
        let mut out = Vec::new();
        escape_into(&TEST, &mut out, b, upper);
        assert_eq!(out, b.to_ascii_uppercase().as_bytes());
        // Short texts are not remembered.
        assert_eq!(escaped_len(&TEST, "short"), None);
        // More texts than slots: the oldest is forgotten, the newest kept.
        for i in 0..SLOTS {
            let t = format!("{a} {i}");
            escape_into(&TEST, &mut Vec::new(), &t, upper);
        }
        assert_eq!(escaped_len(&TEST, a), None);
        assert!(escaped_len(&TEST, &format!("{a} {}", SLOTS - 1)).is_some());
    }
}
