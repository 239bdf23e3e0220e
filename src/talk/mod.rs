//! Talking with the line: the operator's announcements to waiting
//! visitors, and what visitors tell the operator back.
//!
//! A leaf module: the pipeline, the admin API and the app use it; it uses
//! only the config's [`Messages`](crate::config::messages::Messages).
//!
//! # Layout
//! - `board`: the announcement per language, its time, a short history.
//! - `feedback`: visitors' reports, limited, stored append-only, bounded.

pub mod board;
pub mod feedback;

use std::path::Path;

pub use board::{Board, Current, Entry, Source};
pub use feedback::{Feedback, Limits, Post, Record, Refused, CATEGORIES};

/// Both halves, shared by the app.
#[derive(Debug)]
pub struct Talk {
    /// Announcements.
    pub board: Board,
    /// Visitors' feedback.
    pub feedback: Feedback,
}

impl Talk {
    /// Feedback under `state_dir` when there is one (in memory otherwise,
    /// or when the directory cannot be used, which is logged).
    pub fn new(state_dir: Option<&Path>) -> Talk {
        let limits = Limits::default();
        let feedback = match state_dir {
            Some(dir) => Feedback::open(dir, limits).unwrap_or_else(|e| {
                tracing::error!(dir = %dir.display(), error = %e, "visitors' feedback cannot be written under the state directory; it is kept in memory only");
                Feedback::in_memory(limits)
            }),
            None => Feedback::in_memory(limits),
        };
        Talk {
            board: Board::new(),
            feedback,
        }
    }
}

/// Seconds since the Unix epoch, for time stamps.
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
