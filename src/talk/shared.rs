//! Several nodes, one voice: with the Redis store a live announcement made
//! on any node is written to Redis, and every node follows it there
//! (checked every [`FOLLOW_EVERY`]); feedback is pushed to one capped list
//! that every node's admin API reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

use super::Talk;
use crate::config::messages::Messages;
use crate::store::redis_talk::{RedisTalk, SharedAnnouncement};

/// How often a node looks for another node's announcement: within one
/// default poll interval of the visitors' pages.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(1);

/// The Redis side of the talk, and the last shared announcement seen.
#[derive(Debug)]
pub struct Shared {
    /// The keys.
    pub redis: RedisTalk,
    seen: AtomicU64,
}

impl Shared {
    /// Over `redis`.
    pub fn new(redis: RedisTalk) -> Shared {
        Shared {
            redis,
            seen: AtomicU64::new(0),
        }
    }
}

impl Talk {
    /// Publishes the announcement in force to the other nodes (no-op
    /// without Redis). A failure is logged and returned: the operator must
    /// know the other nodes did not get it.
    pub async fn publish(&self) -> Result<(), String> {
        let Some(sh) = &self.shared else {
            return Ok(());
        };
        let now = self.board.current();
        let a = SharedAnnouncement {
            ko: now.messages.ko.clone(),
            en: now.messages.en.clone(),
            at: now.updated_at.unwrap_or_else(super::unix_secs),
            id: rand::random::<u64>() | 1,
        };
        sh.seen.store(a.id, Ordering::Relaxed);
        sh.redis.publish(&a).await.map_err(|e| {
            tracing::error!(error = %e, "announcement not shared through Redis: the other nodes still show the old one");
            format!("shown on this node only: Redis: {e}")
        })
    }

    /// One look at Redis: takes an announcement another node made since
    /// the last look. Returns whether the text shown changed.
    pub async fn follow_once(&self) -> bool {
        let Some(sh) = &self.shared else {
            return false;
        };
        match sh.redis.latest().await {
            Ok(Some(a)) if a.id != sh.seen.load(Ordering::Relaxed) => {
                sh.seen.store(a.id, Ordering::Relaxed);
                let texts = Messages { ko: a.ko, en: a.en };
                if texts.check().is_err() {
                    return false;
                }
                self.board.adopt(&texts, a.at)
            }
            Ok(_) => false,
            Err(e) => {
                tracing::debug!(error = %e, "announcement not read from Redis this time");
                false
            }
        }
    }
}

/// Follows the shared announcement until told to stop.
pub async fn follow(talk: &Talk, mut stop: watch::Receiver<bool>) {
    loop {
        if talk.follow_once().await {
            tracing::info!("announcement taken from another node");
        }
        tokio::select! {
            _ = tokio::time::sleep(FOLLOW_EVERY) => {}
            _ = stop.changed() => return,
        }
    }
}
