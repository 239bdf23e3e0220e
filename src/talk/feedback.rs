//! What waiting visitors tell the operator: a category and a short text,
//! bound to the visitor's ticket or pass, kept append-only and bounded.
//!
//! Records go to `feedback.jsonl` under the local store's `state_dir` (one
//! JSON object per line, appended as it arrives); when that file would pass
//! [`MAX_FILE_BYTES`] it becomes `feedback.1.jsonl` (replacing the older
//! one) and a new file starts, so at most twice that is on disk. The newest
//! [`MAX_KEPT`] records are also kept in memory for the admin API, read back
//! from the files at start. Without a local `state_dir` (no `[store]`, or
//! Redis) they are kept in memory only.
//!
//! A flood costs bounded memory and disk: each visitor and each address may
//! post a few times per window ([`Limits`]), the limiter's tables are capped,
//! and the text is capped at [`MAX_TEXT_CHARS`].

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The categories a visitor picks from (the `category` label's values).
pub const CATEGORIES: [&str; 4] = ["cant_get_in", "page_error", "voucher", "other"];
/// Longest text, in characters.
pub const MAX_TEXT_CHARS: usize = 500;
/// Largest request body read: 500 characters of Korean, URL-encoded, is
/// about 4.5 KB; anything much larger is not from our form.
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// Records kept in memory (about 2 KB each at most).
pub const MAX_KEPT: usize = 2_000;
/// Size at which the file is rotated.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// The file's name under the state directory.
pub const FILE_NAME: &str = "feedback.jsonl";

/// Posts allowed per window: a visitor who wrote three times in ten
/// minutes has said it; a shared address (a carrier's NAT, an office)
/// holds many visitors, so it gets more.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Per ticket or pass.
    pub per_visitor: u32,
    /// Per client address.
    pub per_address: u32,
    /// The window, in seconds.
    pub window_secs: u64,
    /// Most keys tracked per table; when full (after forgetting ended
    /// windows), new keys are refused rather than remembered.
    pub max_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_visitor: 3,
            per_address: 20,
            window_secs: 600,
            max_keys: 100_000,
        }
    }
}

/// One visitor's feedback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Sequence number (per process, and across restarts with a file).
    pub id: u64,
    /// When it arrived (unix seconds).
    pub at: u64,
    /// One of [`CATEGORIES`].
    pub category: String,
    /// The text, control characters removed (escape it when showing it).
    pub text: String,
    /// `ticket:N` or `pass:ID`: whom it came from.
    pub visitor: String,
    /// The visitor's state then (`waiting`, `in_draw`, `admitted`, ...).
    pub state: String,
    /// The visitor's place in line then, when known.
    pub position: Option<u64>,
    /// The page language (`ko`, `en`).
    pub lang: String,
}

/// Why a post was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// Not one of [`CATEGORIES`].
    #[error("unknown category")]
    Category,
    /// Empty, or over [`MAX_TEXT_CHARS`].
    #[error("text must be 1 to {MAX_TEXT_CHARS} characters (it was {0})")]
    Text(usize),
    /// Too many posts from this visitor or address; retry after this many seconds.
    #[error("too many posts from this {scope}")]
    Limited {
        /// `visitor` or `address`.
        scope: &'static str,
        /// Seconds until the window ends.
        retry_after: u64,
    },
}

impl Refused {
    /// The label for `usher_feedback_refused_total{reason}`.
    pub fn label(&self) -> &'static str {
        match self {
            Refused::Category => "category",
            Refused::Text(_) => "text",
            Refused::Limited { scope, .. } => scope,
        }
    }
}

/// The reasons [`Refused::label`] gives, plus `no_visitor` and `body`.
pub const REFUSALS: [&str; 6] = [
    "category",
    "text",
    "visitor",
    "address",
    "no_visitor",
    "body",
];

/// A fixed-window counter per key, with a cap on the keys.
#[derive(Debug)]
struct Windows<K> {
    map: HashMap<K, (u64, u32)>,
}

impl<K> Default for Windows<K> {
    fn default() -> Self {
        Windows {
            map: HashMap::new(),
        }
    }
}

impl<K: std::hash::Hash + Eq + Clone> Windows<K> {
    /// Whether `key` may post once more at `now`; `Err(retry_after)` if not.
    fn check(&mut self, key: &K, now: u64, max: u32, limits: &Limits) -> Result<(), u64> {
        let w = limits.window_secs;
        if !self.map.contains_key(key) && self.map.len() >= limits.max_keys {
            self.map.retain(|_, (start, _)| now < *start + w);
            if self.map.len() >= limits.max_keys {
                return Err(w);
            }
        }
        let e = self.map.entry(key.clone()).or_insert((now, 0));
        if now >= e.0 + w {
            *e = (now, 0);
        }
        if e.1 >= max {
            return Err((e.0 + w).saturating_sub(now).max(1));
        }
        e.1 += 1;
        Ok(())
    }

    fn undo(&mut self, key: &K) {
        if let Some(e) = self.map.get_mut(key) {
            e.1 = e.1.saturating_sub(1);
        }
    }
}

/// The feedback store.
#[derive(Debug)]
pub struct Feedback {
    limits: Limits,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    kept: VecDeque<Record>,
    next_id: u64,
    file: Option<Log>,
    visitors: Windows<String>,
    addresses: Windows<IpAddr>,
}

#[derive(Debug)]
struct Log {
    path: PathBuf,
    file: File,
    bytes: u64,
}

/// What a visitor sends, before checks.
#[derive(Debug, Clone)]
pub struct Post<'a> {
    /// The category as sent.
    pub category: &'a str,
    /// The text as sent.
    pub text: &'a str,
    /// `ticket:N` or `pass:ID`.
    pub visitor: String,
    /// The visitor's state now.
    pub state: &'a str,
    /// The visitor's place in line now.
    pub position: Option<u64>,
    /// The page language.
    pub lang: &'a str,
}

impl Feedback {
    /// A store kept in memory only.
    pub fn in_memory(limits: Limits) -> Feedback {
        Feedback {
            limits,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// A store appending to `dir/feedback.jsonl`, with the newest records
    /// of that file and its rotated predecessor read back.
    pub fn open(dir: &Path, limits: Limits) -> std::io::Result<Feedback> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE_NAME);
        let mut inner = Inner::default();
        for p in [rotated(&path), path.clone()] {
            if let Ok(f) = File::open(&p) {
                // A torn last line (a crash mid-write) is skipped.
                for line in BufReader::new(f).lines().map_while(Result::ok) {
                    if let Ok(r) = serde_json::from_str::<Record>(&line) {
                        inner.next_id = inner.next_id.max(r.id + 1);
                        keep(&mut inner.kept, r);
                    }
                }
            }
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let bytes = file.metadata()?.len();
        inner.file = Some(Log { path, file, bytes });
        Ok(Feedback {
            limits,
            inner: Mutex::new(inner),
        })
    }

    /// Checks and stores one post from `ip` at `now`; the stored record.
    pub fn post(&self, post: Post<'_>, ip: IpAddr, now: u64) -> Result<Record, Refused> {
        let category = CATEGORIES
            .iter()
            .find(|c| **c == post.category)
            .ok_or(Refused::Category)?;
        let text = clean(post.text);
        let chars = text.chars().count();
        if chars == 0 || chars > MAX_TEXT_CHARS {
            return Err(Refused::Text(chars));
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let l = self.limits;
        inner
            .addresses
            .check(&ip, now, l.per_address, &l)
            .map_err(|retry_after| Refused::Limited {
                scope: "address",
                retry_after,
            })?;
        if let Err(retry_after) = inner.visitors.check(&post.visitor, now, l.per_visitor, &l) {
            inner.addresses.undo(&ip);
            return Err(Refused::Limited {
                scope: "visitor",
                retry_after,
            });
        }
        let record = Record {
            id: inner.next_id,
            at: now,
            category: (*category).to_owned(),
            text,
            visitor: post.visitor,
            state: post.state.to_owned(),
            position: post.position,
            lang: post.lang.to_owned(),
        };
        inner.next_id += 1;
        if let Some(log) = &mut inner.file {
            if let Err(e) = log.append(&record) {
                tracing::error!(file = %log.path.display(), error = %e, "feedback not written to disk; kept in memory");
            }
        }
        keep(&mut inner.kept, record.clone());
        Ok(record)
    }

    /// The newest `limit` records, newest first.
    pub fn newest(&self, limit: usize) -> Vec<Record> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.kept.iter().rev().take(limit).cloned().collect()
    }

    /// Where the records are written, if anywhere.
    pub fn file(&self) -> Option<PathBuf> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.file.as_ref().map(|l| l.path.clone())
    }
}

impl Log {
    fn append(&mut self, r: &Record) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(r).map_err(std::io::Error::other)?;
        line.push(b'\n');
        if self.bytes + line.len() as u64 > MAX_FILE_BYTES {
            std::fs::rename(&self.path, rotated(&self.path))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
            self.bytes = 0;
        }
        // One write per record: with O_APPEND a line is never interleaved.
        self.file.write_all(&line)?;
        self.bytes += line.len() as u64;
        Ok(())
    }
}

fn rotated(path: &Path) -> PathBuf {
    path.with_file_name("feedback.1.jsonl")
}

fn keep(kept: &mut VecDeque<Record>, r: Record) {
    if kept.len() == MAX_KEPT {
        kept.pop_front();
    }
    kept.push_back(r);
}

/// The text as stored: control characters removed (line breaks kept as
/// `\n`, tabs become spaces), trimmed. HTML is left as written and escaped
/// wherever it is shown.
pub fn clean(text: &str) -> String {
    let normalised = text.replace("\r\n", "\n");
    let kept: String = normalised
        .chars()
        .filter_map(|c| match c {
            '\n' => Some('\n'),
            '\t' | '\r' => Some(' '),
            c if c.is_control() => None,
            // Bidirectional overrides and zero-width joiners could make the
            // text read differently from what it is.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{200b}'..='\u{200f}' => None,
            c => Some(c),
        })
        .collect();
    kept.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn post(visitor: &str, text: &'static str) -> Post<'static> {
        Post {
            category: "other",
            text,
            visitor: visitor.into(),
            state: "waiting",
            position: Some(7),
            lang: "en",
        }
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn a_visitor_is_limited_per_window_and_then_again_allowed() {
        let f = Feedback::in_memory(Limits::default());
        for _ in 0..3 {
            f.post(post("ticket:1", "hi"), IP, 100).unwrap();
        }
        let e = f.post(post("ticket:1", "hi"), IP, 100).unwrap_err();
        assert_eq!(e.label(), "visitor");
        f.post(post("ticket:2", "hi"), IP, 100).unwrap();
        f.post(post("ticket:1", "hi"), IP, 700).unwrap();
    }

    #[test]
    fn an_address_is_limited_across_visitors() {
        let f = Feedback::in_memory(Limits::default());
        let mut ok = 0;
        for i in 0..10_000 {
            if f.post(post(&format!("ticket:{i}"), "x"), IP, 5).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, Limits::default().per_address);
        assert_eq!(f.newest(usize::MAX).len(), ok as usize);
    }

    #[test]
    fn the_key_tables_are_capped() {
        let limits = Limits {
            max_keys: 100,
            ..Limits::default()
        };
        let f = Feedback::in_memory(limits);
        let mut ok = 0;
        for i in 0..1_000u32 {
            let ip = IpAddr::V4(i.into());
            if f.post(post(&format!("t{i}"), "x"), ip, 5).is_ok() {
                ok += 1;
            }
        }
        assert_eq!(ok, 100);
        let inner = f.inner.lock().unwrap();
        assert!(inner.addresses.map.len() <= 100 && inner.visitors.map.len() <= 100);
    }

    #[test]
    fn controls_go_html_stays_as_text() {
        assert_eq!(
            clean(" <script>a\u{0}\u{1b}[2J\u{202e}b</script>\r\nc\t"),
            "<script>a[2Jb</script>\nc"
        );
        let f = Feedback::in_memory(Limits::default());
        assert_eq!(
            f.post(post("t", "   "), IP, 1).unwrap_err(),
            Refused::Text(0)
        );
        let long: &'static str = Box::leak("가".repeat(MAX_TEXT_CHARS + 1).into_boxed_str());
        assert!(f.post(post("t", long), IP, 1).is_err());
        let mut bad = post("t", "x");
        bad.category = "<b>";
        assert_eq!(f.post(bad, IP, 1).unwrap_err(), Refused::Category);
    }

    #[test]
    fn records_survive_a_reopen_and_the_file_rotates() {
        let dir = std::env::temp_dir().join(format!("usher-fb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let limits = Limits {
            per_visitor: u32::MAX,
            per_address: u32::MAX,
            ..Limits::default()
        };
        let f = Feedback::open(&dir, limits).unwrap();
        let text: &'static str = Box::leak("x".repeat(MAX_TEXT_CHARS).into_boxed_str());
        // Enough records to rotate more than once.
        let n = 3 * MAX_FILE_BYTES as usize / 600;
        for i in 0..n {
            f.post(post(&format!("t{i}"), text), IP, 1).unwrap();
        }
        drop(f);
        let total: u64 = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert!(total <= 2 * MAX_FILE_BYTES, "{total} bytes on disk");
        let f = Feedback::open(&dir, limits).unwrap();
        let newest = f.newest(1);
        assert_eq!(newest[0].id, n as u64 - 1);
        assert_eq!(f.newest(usize::MAX).len(), MAX_KEPT);
        f.post(post("t", "after"), IP, 2).unwrap();
        assert_eq!(f.newest(1)[0].id, n as u64);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
