//! The admission tick on this node's line (the shared line's is in
//! `shared`), and what every tick shares: the adaptive step, the pre-queue
//! seed, pruning, and the room's metrics set in one place.

use std::time::SystemTime;

use sha2::{Digest, Sha256};

use super::verdict::line_wait;
use super::{Room, Settings};
use crate::config::room::RoomConfig;
use crate::tokens::{event_id, Ticket};

/// The line's figures after a tick, whichever backend holds it.
pub(super) struct Figures {
    /// Visitors waiting, inside, and granted a place not yet taken (`None`:
    /// the shared line could not be read, its gauges keep their values).
    pub line: Option<(u64, u64, u64)>,
    /// Admissions per second, measured.
    pub rate: Option<f64>,
    /// The line is in its pre-queue (before the opening, or drawing).
    pub prequeue: bool,
}

impl Room {
    /// One admission tick, for every backend: the adaptive and
    /// closed-loop gates step, this node's sessions lapse, the line steps
    /// (`backend`: liveness, the opening, the grants), and the room's
    /// metrics are set.
    pub async fn tick(&self, cfg: &RoomConfig) {
        let now = self.now_ms();
        self.adapt(cfg, now);
        if let Some((used, waiting)) = self.flow_input(cfg, now) {
            self.step_flow(cfg, now, used, waiting);
        }
        let settings = self.settings(cfg);
        let prune = {
            let now = self.now_ms();
            let mut s = self.lock();
            s.ticks += 1;
            // This node's own sessions (with Redis: what the local share counts).
            s.active.prune(now);
            s.ticks % 40 == 0
        };
        let figures = self.tick_line(cfg, &settings).await;
        self.publish(&settings, &figures);
        if prune {
            self.prune_limiters();
        }
    }

    /// Sets the room's gauges, for every backend: the line's figures, the
    /// settings and the state.
    pub(super) fn publish(&self, settings: &Settings, f: &Figures) {
        let m = &self.metrics.room;
        if let Some((waiting, active, pending)) = f.line {
            m.queue_length.set(waiting as i64);
            m.active_users.set(active as i64);
            m.pending_admissions.set(pending as i64);
            m.admission_rate.set(f.rate.unwrap_or(0.0));
            m.wait_estimate
                .set(line_wait(waiting, f.rate).unwrap_or(0.0));
        }
        m.max_active_users.set(settings.max_active_users as i64);
        m.new_users_per_minute
            .set(match settings.new_users_per_minute {
                // No fixed rate: what the closed-loop gate admits, per minute.
                0 => (f.rate.unwrap_or(0.0) * 60.0).round() as i64,
                n => i64::from(n),
            });
        let sold_out = self.vouchers_left() == Some(0);
        m.set_state(settings.state_label(sold_out, f.prequeue));
    }

    /// Forgets per-address limiter state that refilled, and spent
    /// challenges that expired.
    pub(super) fn prune_limiters(&self) {
        self.limits.prune(self.unix_ms() / 1000);
    }

    /// The adaptive gate's step (see `settings`); a changed rate rebuilds
    /// the gate.
    pub(super) fn adapt(&self, cfg: &RoomConfig, now: u64) {
        let waiting = self.lock().line.waiting() > 0;
        if self
            .knobs
            .adapt(cfg, now, waiting, &self.health, &self.metrics.room)
        {
            let settings = self.settings(cfg);
            self.follow(&mut self.lock(), cfg, &settings);
        }
    }

    /// The pre-queue shuffle seed: derived from the signing key, so it is
    /// secret until the opening yet fixed for the event (its hash is logged
    /// for audit, and the same key and event give the same order).
    pub(super) fn prequeue_seed(&self, cfg: &RoomConfig) -> [u8; 32] {
        let opens = cfg
            .opens_at
            .as_ref()
            .and_then(|(_, at)| at.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let material = self.seal.keys().seal_ticket(&Ticket {
            event: event_id(&cfg.event),
            number: 0,
            issued_at: opens,
        });
        let mut h = Sha256::new();
        h.update(b"usher prequeue seed\0");
        h.update(material.as_bytes());
        h.finalize().into()
    }
}
