//! This node's clock against Redis's `TIME`. The shared line's windows,
//! claim windows and heartbeats are Unix milliseconds written by each node
//! from its own clock, so nodes must agree to well under `ticket_grace`.
//! Every node compares itself with the one clock they all reach (Redis):
//! each within a quarter of the grace of Redis means any two nodes within
//! half a grace of each other, so the peers are compared through Redis
//! without trusting one another's heartbeat stamps.
//!
//! A sample is `skew = local midpoint - Redis time`, the local midpoint
//! being halfway between sending `TIME` and reading its answer: the
//! error is at most half the round trip, so a clock is called off only when
//! `|skew| - rtt / 2` is beyond the limit (certainly off, not a slow
//! answer), and the skew check is pure ([`Skew::judge`]) so it is tested
//! with any offset.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::store::redis_conn::StoreCon;
use redis::RedisError;

/// One comparison of this node's clock with Redis's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew {
    /// This node's clock minus Redis's, in ms (positive: this node is ahead).
    pub skew_ms: i64,
    /// Half the round trip of `TIME`: how wrong `skew_ms` may be.
    pub error_ms: u64,
}

impl Skew {
    /// The sample from local times (ms) before sending `TIME` and after its
    /// answer, and the Redis time it answered (ms).
    pub fn sample(sent_ms: u64, received_ms: u64, redis_ms: u64) -> Skew {
        let received_ms = received_ms.max(sent_ms);
        let mid = sent_ms + (received_ms - sent_ms) / 2;
        Skew {
            skew_ms: mid as i64 - redis_ms as i64,
            error_ms: (received_ms - sent_ms).div_ceil(2),
        }
    }

    /// Whether the clock is off by more than `limit_ms` beyond any doubt
    /// (the round trip's error taken off in its favour).
    pub fn judge(&self, limit_ms: u64) -> bool {
        self.skew_ms.unsigned_abs().saturating_sub(self.error_ms) > limit_ms
    }
}

/// The largest skew a node may have against Redis: a quarter of the
/// liveness window (`ticket_grace`), so two nodes differ by half of it at
/// most and a visitor polling on the slow node is never read as gone.
pub fn limit_ms(grace_ms: u64) -> u64 {
    grace_ms / 4
}

/// Redis's clock (`TIME`), in Unix ms.
pub async fn redis_time(con: &StoreCon) -> Result<u64, RedisError> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(&mut con.clone()).await?;
    Ok(secs * 1000 + micros / 1000)
}

/// The last verdict on this node's clock, read by `/readyz` and the
/// metrics; written by the tick.
#[derive(Debug, Default)]
pub struct ClockWatch {
    skew_ms: AtomicI64,
    off: AtomicBool,
    /// Limit of the last verdict (ms), for the reason text.
    limit_ms: AtomicI64,
}

impl ClockWatch {
    /// Records a sample against `limit_ms`; returns `Some(off)` when the
    /// verdict changed (the caller logs it once).
    pub fn record(&self, s: Skew, limit_ms: u64) -> Option<bool> {
        let off = s.judge(limit_ms);
        self.skew_ms.store(s.skew_ms, Ordering::Relaxed);
        self.limit_ms.store(
            i64::try_from(limit_ms).unwrap_or(i64::MAX),
            Ordering::Relaxed,
        );
        let was = self.off.swap(off, Ordering::Relaxed);
        (was != off).then_some(off)
    }

    /// This node's clock minus Redis's at the last sample (ms).
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::Relaxed)
    }

    /// Why this node should not take visitors, while its clock is off.
    pub fn problem(&self) -> Option<String> {
        if !self.off.load(Ordering::Relaxed) {
            return None;
        }
        Some(format!(
            "clock skew: this node's clock is {:+.3} s from Redis's TIME (limit {:.3} s, a quarter of ticket_grace)",
            self.skew_ms() as f64 / 1000.0,
            self.limit_ms.load(Ordering::Relaxed) as f64 / 1000.0
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_midpoint_is_compared_and_the_round_trip_is_the_error() {
        // sent at 1000, answered at 1010, Redis said 1005: no skew
        let s = Skew::sample(1_000, 1_010, 1_005);
        assert_eq!(
            s,
            Skew {
                skew_ms: 0,
                error_ms: 5
            }
        );
        // this node 30 s ahead of Redis
        let s = Skew::sample(1_030_000, 1_030_002, 1_000_001);
        assert_eq!(s.skew_ms, 30_000);
        // this node 30 s behind
        assert_eq!(Skew::sample(1_000, 1_000, 31_000).skew_ms, -30_000);
    }

    #[test]
    fn a_clock_30_s_off_is_beyond_a_quarter_of_the_default_grace() {
        let limit = limit_ms(30_000);
        assert_eq!(limit, 7_500);
        for offset in [30_000i64, -30_000] {
            let redis = 5_000_000u64;
            let local = (redis as i64 + offset) as u64;
            assert!(Skew::sample(local, local + 4, redis + 2).judge(limit));
        }
        // within the limit, or only beyond it by the round trip's doubt
        assert!(!Skew::sample(1_007_000, 1_007_000, 1_000_000).judge(limit));
        assert!(!Skew::sample(1_000_000, 1_002_000, 993_000).judge(limit));
        assert!(Skew::sample(1_000_000, 1_000_010, 990_000).judge(limit));
    }

    #[test]
    fn the_watch_reports_changes_once_and_names_the_skew() {
        let w = ClockWatch::default();
        assert_eq!(w.problem(), None);
        let off = Skew::sample(1_030_000, 1_030_000, 1_000_000);
        assert_eq!(w.record(off, 7_500), Some(true));
        assert_eq!(w.record(off, 7_500), None);
        let why = w.problem().unwrap();
        assert!(why.contains("+30.000 s"), "{why}");
        assert!(why.contains("limit 7.500 s"), "{why}");
        assert_eq!(
            w.record(Skew::sample(1_000, 1_000, 1_000), 7_500),
            Some(false)
        );
        assert_eq!(w.problem(), None);
        assert_eq!(w.skew_ms(), 0);
    }
}
