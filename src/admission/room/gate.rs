//! The room's side of the closed-loop gate (`admission::flow`) and of the
//! fast hand-off: the origin's load in, the limit out, and visitors near
//! the head of the line woken the moment their turn may have come.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{Room, Settings};
use crate::admission::flow::{Answers, Flow, FlowStatus};
use crate::admission::line::Line;
use crate::config::room::RoomConfig;
use crate::proxy::slots::Load;

/// The longest a long poll of `/__usher/status?wait=1` is held.
pub const LONG_POLL_MAX: Duration = Duration::from_secs(25);

/// The closed-loop gate's state and the long poll's hand-off.
pub(super) struct ClosedLoop {
    /// The closed-loop gate, once the origin's load has been read.
    flow: Mutex<Option<Flow>>,
    /// Its limit as of the last tick (0: not stepped yet), read on the
    /// request path without the lock.
    limit_now: AtomicU64,
    /// The origin's load as last read by the tick loop.
    origin_load: Mutex<Option<Load>>,
    /// Places granted so far, for long polls.
    handoff: tokio::sync::watch::Sender<u64>,
    /// Visitors inside (active plus fresh grants) right after the last
    /// tick's grants: with short visits they are gone by the next tick, yet
    /// the limit held the line back at that moment.
    pub(super) used_after_tick: AtomicU64,
}

impl Default for ClosedLoop {
    fn default() -> ClosedLoop {
        ClosedLoop {
            flow: Mutex::new(None),
            limit_now: AtomicU64::new(0),
            origin_load: Mutex::new(None),
            handoff: tokio::sync::watch::Sender::new(0),
            used_after_tick: AtomicU64::new(0),
        }
    }
}

impl Room {
    /// The origin's load, read by the tick loop just before each tick.
    pub fn set_origin_load(&self, load: Load) {
        *self
            .closed_loop
            .origin_load
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(load);
    }

    /// The closed-loop gate's limit, when it is on (before its first step:
    /// the origin's slot count, where it starts).
    pub(super) fn flow_limit(&self, cfg: &RoomConfig) -> Option<u64> {
        cfg.closed_loop?;
        Some(match self.closed_loop.limit_now.load(Ordering::Relaxed) {
            0 => self
                .closed_loop
                .origin_load
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .map_or(1, |l| l.capacity.max(1)),
            limit => limit,
        })
    }

    /// Places free for new visitors, with `active` inside and the line's
    /// grants. Under the closed-loop gate's limit only fresh grants count
    /// (older ones gave their slot back, see `Line::pending_recent`); under
    /// a hard cap every pending grant counts, so the cap holds even when
    /// the owner of an old grant comes back late and takes it.
    pub(super) fn free_places(
        &self,
        cfg: &RoomConfig,
        settings: &Settings,
        active: u64,
        line: &Line,
        now: u64,
    ) -> u64 {
        let all = active + line.pending();
        let capped = self
            .knobs
            .hard_cap(cfg, settings)
            .map_or(u64::MAX, |cap| cap.saturating_sub(all));
        match self.flow_limit(cfg) {
            Some(limit) => {
                let fresh = active + line.pending_recent(now, Self::handoff_ms(cfg));
                capped.min(limit.saturating_sub(fresh))
            }
            None => capped,
        }
    }

    /// Places granted within the hand-off window still hold a slot; older
    /// grants not yet taken give theirs back (see `Line::pending_recent`).
    /// The window: one poll interval and a quarter (an old client that does
    /// not long-poll learns within one) plus two ticks, at most the claim
    /// window.
    pub(super) fn handoff_ms(cfg: &RoomConfig) -> u64 {
        let w = cfg.refresh.as_millis() as u64 * 5 / 4 + 2 * cfg.tick.as_millis() as u64;
        w.min(cfg.claim_window.as_millis() as u64)
    }

    /// One step of the closed-loop gate with `used` visitors inside (active
    /// plus pending) and `waiting` whether anyone waits. Sets the gate's
    /// metrics; logs and counts a back-off.
    pub(super) fn step_flow(&self, cfg: &RoomConfig, now: u64, used: u64, waiting: bool) {
        let m = &self.metrics.room;
        let Some(cl) = cfg.closed_loop else {
            *self
                .closed_loop
                .flow
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = None;
            self.closed_loop.limit_now.store(0, Ordering::Relaxed);
            m.gate_limit.set(0);
            m.gate_origin_target.set(0.0);
            return;
        };
        let Some(load) = *self
            .closed_loop
            .origin_load
            .lock()
            .unwrap_or_else(|e| e.into_inner())
        else {
            return;
        };
        let mut slot = self
            .closed_loop
            .flow
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let flow = slot.get_or_insert_with(|| Flow::new(load.capacity));
        let s = self.health.take();
        let answers = Answers {
            requests: s.requests,
            errors: s.errors,
            mean_latency_us: s.mean_latency.as_micros() as u64,
        };
        let mv = flow.step(now, cl.target, load, answers, used, waiting);
        let (limit, busy) = (flow.limit(), flow.busy());
        drop(slot);
        self.closed_loop.limit_now.store(limit, Ordering::Relaxed);
        m.gate_limit.set(limit as i64);
        m.gate_origin_busy.set(busy.unwrap_or(0.0));
        m.gate_origin_target.set(cl.target);
        if let Some(mv) = mv.filter(|m| m.is_cut()) {
            m.gate_backoffs.with_label_values(&[mv.label()]).inc();
            tracing::info!(
                reason = mv.label(),
                limit,
                used,
                origin_busy = busy.unwrap_or(0.0),
                origin_in_flight = load.in_flight,
                origin_queued = load.queued,
                origin_errors = s.errors,
                origin_mean_latency_ms = s.mean_latency.as_millis() as u64,
                "closed-loop gate backed off"
            );
        }
    }

    /// The closed-loop gate's figures, once it has stepped.
    pub(super) fn flow_status(&self, target: f64) -> Option<FlowStatus> {
        let f = self
            .closed_loop
            .flow
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        f.as_ref().map(|f| f.status(target))
    }

    /// Tells long-polling visitors that places were granted: the total
    /// granted so far (this node's line, or the shared line's admitted count).
    pub(super) fn announce_grants(&self, granted_total: u64) {
        self.closed_loop.handoff.send_if_modified(|g| {
            let changed = *g != granted_total;
            *g = granted_total;
            changed
        });
    }

    /// The announced grants: read `*rx.borrow_and_update()` before a
    /// decision, so that a wait after it misses nothing granted in between.
    pub fn grants_seen(&self) -> tokio::sync::watch::Receiver<u64> {
        self.closed_loop.handoff.subscribe()
    }

    /// Whether a visitor `position` places from the head is near enough to
    /// long-poll: within the places the line moves in two poll intervals
    /// at the measured rate, or within the closed-loop gate's limit (what
    /// a few ticks may grant while the measured rate still lags a growing
    /// gate), and at least the burst or 20. So only a small, rate-bound
    /// number of visitors hold a request open at any time.
    pub fn near_front(&self, cfg: &RoomConfig, position: u64) -> bool {
        let rate = self.lock().rate.per_second(self.now_ms()).unwrap_or(0.0);
        let moves = rate * cfg.refresh.as_secs_f64() * 2.0;
        let gate = self.flow_limit(cfg).unwrap_or(0) as f64;
        (position as f64) <= moves.max(gate).max(f64::from(cfg.burst)).max(20.0)
    }

    /// Waits until about `position` more places have been granted since
    /// `start` (the announced total read before the visitor's decision):
    /// the visitor's turn may have come. Or until `deadline`. True if woken
    /// by grants.
    pub async fn wait_for_turn(
        &self,
        rx: &mut tokio::sync::watch::Receiver<u64>,
        start: u64,
        position: u64,
        deadline: tokio::time::Instant,
    ) -> bool {
        let goal = start.saturating_add(position.max(1));
        let woke = tokio::time::timeout_at(deadline, rx.wait_for(|g| *g >= goal || *g < start));
        matches!(woke.await, Ok(Ok(_)))
    }
}
