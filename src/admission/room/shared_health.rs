//! This node's health against the shared store (`admission/room/shared.rs`):
//! its clock against Redis's `TIME` (`/readyz` fails beyond a quarter of
//! `ticket_grace`, see `store::line::clock`) and the repairs of a line that went
//! back after a failover (logged and counted).

use std::sync::atomic::Ordering;

use super::shared::Shared;
use super::Room;
use crate::config::room::RoomConfig;
use crate::store::line::clock::{self, Skew};

impl Room {
    /// Why this node should not take visitors because of its clock (its
    /// skew against Redis's `TIME` beyond a quarter of `ticket_grace`), if so.
    pub fn clock_problem(&self) -> Option<String> {
        self.redis().and_then(|sh| sh.clock.problem())
    }

    /// Unix time (ms) on the line's clock: with Redis, this node's clock
    /// corrected by its last measured skew against Redis's `TIME`, so every
    /// node tells a visitor the same time to the opening even when their
    /// clocks drift apart; otherwise this node's own.
    pub fn line_unix_ms(&self) -> u64 {
        let own = self.unix_ms();
        match self.redis() {
            Some(sh) => own.saturating_add_signed(-sh.clock.skew_ms()),
            None => own,
        }
    }

    /// Compares this node's clock (the room's Unix time, the one it writes
    /// into the line) with Redis's, at most once a second.
    pub(super) async fn check_clock(&self, sh: &Shared, cfg: &RoomConfig) {
        let now = self.now_ms();
        let last = sh.clock_sampled.load(Ordering::Relaxed);
        if last > 0 && now.saturating_sub(last) < 1_000 {
            return;
        }
        sh.clock_sampled.store(now.max(1), Ordering::Relaxed);
        let sent = self.unix_ms();
        let redis = match clock::redis_time(sh.line.connection()).await {
            Ok(t) => t,
            Err(e) if e.code() == Some("NOPERM") => {
                if !sh.clock_denied.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "clock skew not checked: the Redis user may not run TIME (grant +time)"
                    );
                }
                return;
            }
            Err(e) => return sh.note_health(false, "TIME", Some(&e)),
        };
        let s = Skew::sample(sent, self.unix_ms(), redis);
        let limit = clock::limit_ms(cfg.ticket_grace.as_millis() as u64);
        let m = &self.metrics.room;
        m.clock_skew.set(s.skew_ms as f64 / 1000.0);
        sh.line.set_clock_offset(s.skew_ms);
        match sh.clock.record(s, limit) {
            Some(true) => {
                m.clock_skew_exceeded.set(1);
                tracing::error!(
                    skew_seconds = s.skew_ms as f64 / 1000.0,
                    limit_seconds = limit as f64 / 1000.0,
                    "clock skew: this node's clock is off from Redis's TIME by more than a quarter of ticket_grace; /readyz fails until NTP fixes it (positions and liveness windows would disagree between nodes)"
                );
            }
            Some(false) => {
                m.clock_skew_exceeded.set(0);
                tracing::info!(
                    skew_seconds = s.skew_ms as f64 / 1000.0,
                    "clock skew back within a quarter of ticket_grace: /readyz succeeds again"
                );
            }
            None => {}
        }
    }

    /// Logs and counts the line repairs this node's steps made since the
    /// last tick.
    pub(super) fn note_repairs(&self, sh: &Shared) {
        let repairs = sh.line.repairs();
        let new = repairs.saturating_sub(sh.repairs.swap(repairs, Ordering::Relaxed));
        if new > 0 {
            self.metrics.room.store_line_repairs.inc_by(new);
            tracing::error!(
                repaired = new,
                "the line in Redis had gone back below what this node saw (a failover to a replica that missed the last writes?): numbering resumed above every ticket handed out, positions count from the frontier seen"
            );
        }
    }
}
