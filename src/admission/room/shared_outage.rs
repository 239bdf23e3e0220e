//! The room while Redis is unreachable (`admission/room/shared.rs`'s outage
//! path): the holding page, or with `on_failure = "local_share"` this
//! node's share of the rate and the capacity, waiting visitors first.

use std::sync::atomic::Ordering;

use rand::Rng;

use super::seal::pass_life_secs;
use super::shared::Shared;
use super::{before_opening, Gate, Room, Settings, TokioClock, Verdict};
use crate::config::room::RoomConfig;
use crate::tokens::Ticket;

impl Shared {
    /// This node's gate while Redis is unreachable: `1/N` of the rate and
    /// of the burst (at least one each).
    fn fallback_take(&self, settings: &Settings, burst: u32, clock: TokioClock) -> bool {
        let n = u32::try_from(self.nodes().max(1)).unwrap_or(u32::MAX);
        if settings.new_users_per_minute == 0 {
            // No fixed rate: the closed-loop gate's limit (counted by the
            // caller against this node's share) is the only bound.
            return true;
        }
        let per_minute = (settings.new_users_per_minute / n).max(1);
        let burst = (burst / n).max(1);
        let mut g = self.fallback.lock().unwrap_or_else(|e| e.into_inner());
        if !g.as_ref().is_some_and(|g| g.same(per_minute, burst)) {
            *g = Some(Gate::new(per_minute, burst, clock));
        }
        g.as_mut().is_some_and(|g| g.take(1) == 1)
    }
}

impl Room {
    /// A request without a pass while Redis is unreachable: the holding
    /// page, or with `local_share` this node's share of admissions,
    /// waiting visitors first (see the module docs).
    pub(super) fn decide_outage(
        &self,
        cfg: &RoomConfig,
        settings: &Settings,
        ticket: Option<Ticket>,
        pow: Option<&str>,
        ip: std::net::IpAddr,
        secure: bool,
    ) -> Verdict {
        // The outage's own clock reading (a rare path, and one argument fewer).
        let at = self.now();
        let hold = || Verdict::Hold(self.hold(cfg, settings, None, at));
        let Some(sh) = self.redis() else {
            return hold();
        };
        // until the pre-queue's draw is done nobody is admitted, shared or not
        let drawing = before_opening(cfg, at.unix_ms) || sh.in_draw.load(Ordering::Relaxed);
        if !sh.sharing() || !settings.admits() || drawing {
            return hold();
        }
        let now = at.room_ms;
        if ticket.is_some() {
            sh.waiting_seen.store(now.max(1), Ordering::Relaxed);
        } else {
            let seen = sh.waiting_seen.load(Ordering::Relaxed);
            let window = 2 * cfg.refresh.as_millis() as u64;
            if seen > 0 && now.saturating_sub(seen) < window {
                return hold();
            }
            if let Some(limited) = self.ticket_gate(cfg, pow, ip, at) {
                return limited;
            }
        }
        let share = settings.max_active_users / sh.nodes().max(1);
        let until = now + pass_life_secs(cfg) * 1000;
        let mut s = self.lock();
        if s.active.len() >= share
            || !sh.fallback_take(settings, cfg.burst, TokioClock::new(self.epoch))
        {
            drop(s); // the holding page reads the rate under the same lock
            return hold();
        }
        let pass_id: u64 = s.rng.random();
        // Counted before the lock is let go: concurrent requests see it.
        s.active.touch(pass_id, until);
        drop(s);
        self.metrics.room.admitted_local_share.inc();
        match ticket {
            Some(t) => self.ticket_to_pass(cfg, &t, pass_id, secure, at),
            None => self.new_pass(cfg, pass_id, at.unix_secs(), at, secure, Vec::new()),
        }
    }
}
