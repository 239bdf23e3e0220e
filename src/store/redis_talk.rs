//! Talking with the line across nodes (`[store] backend = "redis"`): the
//! live announcement in one key every node follows, and visitors'
//! feedback in one capped list every node's admin API reads.
//!
//! Keys (all in the event's hash slot, like the line's):
//! - `{usher:EVENT}:announce`: the last live announcement, JSON
//!   `{"ko","en","at","id"}`; `id` is random per announcement, so a node
//!   sees a new one even when the text comes back to an old one.
//! - `{usher:EVENT}:feedback`: feedback records as JSON, newest first,
//!   trimmed to a fixed length with every push (LPUSH + LTRIM in one
//!   MULTI), so Redis holds a bounded amount.

use crate::store::redis_conn::StoreCon;
use redis::RedisError;
use serde::{Deserialize, Serialize};

/// A live announcement as shared between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedAnnouncement {
    /// Korean text.
    pub ko: String,
    /// English text.
    pub en: String,
    /// When it was made (unix seconds).
    pub at: u64,
    /// Random per announcement.
    pub id: u64,
}

/// The event's talk keys over the process's one connection.
#[derive(Clone)]
pub struct RedisTalk {
    con: StoreCon,
    prefix: String,
}

impl std::fmt::Debug for RedisTalk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTalk")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl RedisTalk {
    /// The keys of `event`. No I/O here.
    pub fn new(con: impl Into<StoreCon>, event: &str) -> RedisTalk {
        RedisTalk {
            con: con.into(),
            prefix: format!("{{usher:{event}}}"),
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    /// Makes `a` the announcement every node follows.
    pub async fn publish(&self, a: &SharedAnnouncement) -> Result<(), RedisError> {
        let json = serde_json::to_string(a).unwrap_or_default();
        redis::cmd("SET")
            .arg(self.key("announce"))
            .arg(json)
            .query_async::<()>(&mut self.con.clone())
            .await
    }

    /// The announcement to follow, if any node made one (an unreadable
    /// value counts as none).
    pub async fn latest(&self) -> Result<Option<SharedAnnouncement>, RedisError> {
        let v: Option<String> = redis::cmd("GET")
            .arg(self.key("announce"))
            .query_async(&mut self.con.clone())
            .await?;
        Ok(v.and_then(|s| serde_json::from_str(&s).ok()))
    }

    /// Adds one feedback record (JSON) and keeps the newest `keep`.
    pub async fn push_feedback(&self, json: &str, keep: usize) -> Result<(), RedisError> {
        let key = self.key("feedback");
        redis::pipe()
            .atomic()
            .lpush(&key, json)
            .ignore()
            .ltrim(&key, 0, keep.saturating_sub(1) as isize)
            .ignore()
            .query_async::<()>(&mut self.con.clone())
            .await
    }

    /// The newest `limit` feedback records (JSON), newest first.
    pub async fn feedback(&self, limit: usize) -> Result<Vec<String>, RedisError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        redis::cmd("LRANGE")
            .arg(self.key("feedback"))
            .arg(0)
            .arg(limit.saturating_sub(1))
            .query_async(&mut self.con.clone())
            .await
    }
}
