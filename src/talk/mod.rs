//! Talking with the line: the operator's announcements to waiting
//! visitors, and what visitors tell the operator back.
//!
//! A leaf module: the pipeline, the admin API and the app use it; it uses
//! only the config's [`Messages`](crate::config::messages::Messages).
//!
//! # Layout
//! - `board`: the announcement per language, its time, a short history.
//! - `feedback`: visitors' reports, limited, stored append-only, bounded.
//! - `shared`: with Redis, one announcement and one feedback list for all nodes.
//! - `webhook`: feedback forwarded to the operator's URL, in the background.

pub mod board;
pub mod feedback;
pub mod shared;
pub mod webhook;

use std::path::Path;

use crate::store::redis_talk::RedisTalk;

pub use board::{Board, Current, Entry, Source};
pub use feedback::{Feedback, Limits, Post, Record, Refused, CATEGORIES};

/// Both halves, shared by the app.
#[derive(Debug)]
pub struct Talk {
    /// Announcements.
    pub board: Board,
    /// Visitors' feedback (this node's).
    pub feedback: Feedback,
    /// With `[store] backend = "redis"`: the announcement and feedback
    /// shared by every node.
    pub shared: Option<shared::Shared>,
    /// `room.feedback_webhook`, when set.
    pub webhook: webhook::Webhook,
}

impl Talk {
    /// Feedback under `state_dir` when there is one (in memory otherwise,
    /// or when the directory cannot be used, which is logged); with
    /// `redis`, also shared with the other nodes.
    pub fn new(state_dir: Option<&Path>, redis: Option<RedisTalk>) -> Talk {
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
            shared: redis.map(shared::Shared::new),
            webhook: webhook::Webhook::default(),
        }
    }
}

/// Seconds since the Unix epoch, for time stamps.
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
