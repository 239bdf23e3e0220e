//! The closed-loop gate: admissions follow what the origin actually does.
//!
//! The operator's static knobs (`max_active_users`, `new_users_per_minute`)
//! ask for a guess of the origin's capacity, and guesses are cautious: the
//! origin idles while people wait. This controller measures instead. It
//! steers one number, the **limit** on visitors inside (active passes plus
//! grants not yet taken), so that the origin stays busy near a target
//! share of `origin.max_in_flight` while anyone waits, and never past it.
//!
//! # What is measured, every admission tick
//! - **busy**: the mean number of origin requests in flight since the last
//!   tick, exactly (the integral kept by the proxy's slots, `proxy::slots::Load`),
//!   over the slots: 0 to 1. Smoothed with a time constant of half a second.
//! - **queue and refusals**: requests waiting for an origin slot in usher,
//!   and those refused for want of one (usher's own 503).
//! - **errors and latency**: origin answers that failed (5xx, timeouts,
//!   refused connections) and their mean time to headers, against the
//!   *baseline*: the lowest latency seen while the origin was lightly loaded,
//!   which drifts up slowly (a minute's time constant) so that an origin
//!   that is permanently slower becomes the new normal.
//!
//! # The law
//! - **Back off** at once, multiplicatively, when the origin shows distress:
//!   a refusal in usher's origin queue, failures above 2% of answers, or
//!   latency over three times the baseline: the limit drops to 70% of what
//!   is in use (limit never evicts anyone: it only stops admitting until
//!   enough visitors leave). A queue for slots while the origin has been
//!   nearly full (over 95% busy, smoothed) is a softer sign: 90%. A queue
//!   alone is not: a burst of page loads fills the slots for an instant at
//!   any load. After a back-off the limit does not grow for two seconds
//!   (the time for the cut to show), and cuts are at most one a second, so
//!   one bad moment is not cut three times over.
//! - **Aim** while people wait, by Little's law: requests in flight are
//!   visitors inside x their pace x latency, so the number inside that
//!   fills the target is `used * target / busy`. The limit goes there at
//!   once when that is lower (admissions stop until enough leave), and at
//!   most 25% a tick (about 2.4x a second) when it is higher. No integrator
//!   means nothing to wind up or oscillate: each step re-measures the
//!   visitors' pace instead of adding to the last guess. When a visitor's
//!   load is front-loaded (the page and the claim right after admission,
//!   browsing later), the pace measured during growth is high, so the
//!   aim errs low and is corrected upwards as the visits settle.
//! - **No wind-up**: the limit never runs further ahead of the visitors
//!   actually inside than half of them again plus the origin's slots, so an
//!   hour of quiet cannot bank an unlimited burst for the next spike.
//! - **Floors and ceilings**: never below one visitor, and never above
//!   `max_active_users` when the operator set it; `new_users_per_minute`,
//!   when set, still caps the rate through the GCRA gate.
//!
//! The limit starts at the origin's slot count: that many visitors cannot
//! overload it, since each has at most one page loading at a time.
//!
//! Pure and synchronous: the room passes readings and counts in, and
//! applies the limit.

use crate::proxy::slots::Load;

/// Fastest growth, per second (see the module docs): 25% a tick of
/// 250 ms, about 2.4 times a second.
const GAIN: f64 = 1.0;
/// Time constant of the busy share's smoothing, in seconds.
const BUSY_TAU: f64 = 0.5;
/// Time constant of the latency's smoothing, in seconds.
const LATENCY_TAU: f64 = 2.0;
/// Time constant of the baseline's upward drift, in seconds.
const BASELINE_TAU: f64 = 60.0;
/// Latency over this many baselines is distress.
const SLOW: f64 = 3.0;
/// Share of failed answers that is distress.
const MAX_ERRORS: f64 = 0.02;
/// No growth for this long after a cut (ms).
const CALM_MS: u64 = 2_000;
/// Busy share (smoothed) past which a queue for slots is distress.
const SATURATED: f64 = 0.95;
/// At most one cut per this long (ms).
const CUT_EVERY_MS: u64 = 1_000;

/// Origin answers since the last step (from the proxy's `health::OriginHealth`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Answers {
    /// Answers (or failures) seen.
    pub requests: u64,
    /// Failures among them.
    pub errors: u64,
    /// Mean time to response headers, microseconds.
    pub mean_latency_us: u64,
}

/// Why the limit moved, for `usher_gate_changes_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Move {
    /// Healthy with people waiting: grew.
    Grow,
    /// Over the target: shrank gently.
    Settle,
    /// usher's origin queue refused a request.
    Refused,
    /// The origin failed too often.
    Errors,
    /// The origin answered far slower than its baseline.
    Slow,
    /// Requests waited for a slot with the origin full.
    Queue,
}

impl Move {
    /// Every reason.
    pub const ALL: [Move; 6] = [
        Move::Grow,
        Move::Settle,
        Move::Refused,
        Move::Errors,
        Move::Slow,
        Move::Queue,
    ];

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Move::Grow => "grow",
            Move::Settle => "settle",
            Move::Refused => "refused",
            Move::Errors => "errors",
            Move::Slow => "slow",
            Move::Queue => "queue",
        }
    }

    /// Whether this is a back-off.
    pub fn is_cut(self) -> bool {
        !matches!(self, Move::Grow | Move::Settle)
    }
}

/// The controller's state. See the module docs.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Visitors allowed inside (active plus pending).
    limit: f64,
    /// Smoothed busy share, 0 to 1 (None before the first interval).
    busy: Option<f64>,
    /// Smoothed latency (µs).
    latency_us: Option<f64>,
    /// The last interval's mean latency (µs).
    last_latency_us: Option<f64>,
    /// The origin's unloaded latency (µs).
    baseline_us: Option<f64>,
    last: Option<Load>,
    /// Refusals counted at the last step.
    refused: u64,
    /// No growth before this (room ms).
    calm_until: u64,
    /// No cut before this (room ms).
    next_cut: u64,
    /// The last move, if any.
    last_move: Option<Move>,
}

/// What the gate shows in `/admin/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FlowStatus {
    /// `closed-loop`.
    pub mode: &'static str,
    /// Visitors allowed inside now (active plus pending).
    pub limit: u64,
    /// The smoothed share of the origin's slots in use.
    pub origin_busy: Option<f64>,
    /// The share aimed at.
    pub target: f64,
    /// The origin's smoothed latency, ms.
    pub origin_latency_ms: Option<f64>,
    /// The origin's unloaded latency, ms.
    pub origin_baseline_ms: Option<f64>,
    /// The last move and why.
    pub last_move: Option<&'static str>,
}

impl Flow {
    /// A gate for an origin with `capacity` slots.
    pub fn new(capacity: u64) -> Flow {
        Flow {
            limit: capacity.max(1) as f64,
            busy: None,
            latency_us: None,
            last_latency_us: None,
            baseline_us: None,
            last: None,
            refused: 0,
            calm_until: 0,
            next_cut: 0,
            last_move: None,
        }
    }

    /// Visitors allowed inside now.
    pub fn limit(&self) -> u64 {
        self.limit.floor().max(1.0) as u64
    }

    /// The smoothed busy share.
    pub fn busy(&self) -> Option<f64> {
        self.busy
    }

    /// For `/admin/status`.
    pub fn status(&self, target: f64) -> FlowStatus {
        FlowStatus {
            mode: "closed-loop",
            limit: self.limit(),
            origin_busy: self.busy.map(|b| (b * 1000.0).round() / 1000.0),
            target,
            origin_latency_ms: self.latency_us.map(|l| (l / 100.0).round() / 10.0),
            origin_baseline_ms: self.baseline_us.map(|l| (l / 100.0).round() / 10.0),
            last_move: self.last_move.map(Move::label),
        }
    }

    /// One step at room time `now` (ms): `load` from the proxy's slots,
    /// `answers` since the last step, `used` visitors inside (active plus
    /// pending), `waiting` whether anyone waits. Returns the move made.
    pub fn step(
        &mut self,
        now: u64,
        target: f64,
        load: Load,
        answers: Answers,
        used: u64,
        waiting: bool,
    ) -> Option<Move> {
        let Some(prev) = self.last.replace(load) else {
            self.refused = load.refused;
            return None;
        };
        let dt_us = load.at_us.saturating_sub(prev.at_us);
        if dt_us == 0 {
            return None;
        }
        let dt = dt_us as f64 / 1e6;
        let capacity = load.capacity.max(1) as f64;
        let busy_now =
            (load.busy_us.saturating_sub(prev.busy_us) as f64 / dt_us as f64 / capacity).min(1.5);
        let busy = smooth(self.busy, busy_now, dt, BUSY_TAU);
        self.busy = Some(busy);
        self.observe_latency(answers, busy_now, dt);

        let refused = load.refused.saturating_sub(self.refused);
        self.refused = load.refused;
        let distress = if refused > 0 {
            Some((Move::Refused, 0.7))
        } else if answers.requests > 0
            && answers.errors as f64 > MAX_ERRORS * answers.requests as f64
            && answers.errors > 1
        {
            Some((Move::Errors, 0.7))
        } else if self.slow(busy) {
            Some((Move::Slow, 0.7))
        } else if load.queued > 0 && load.in_flight >= load.capacity && busy > SATURATED {
            // Requests queue for a slot and have for a while (a burst of
            // page loads fills the slots for an instant at any load).
            Some((Move::Queue, 0.9))
        } else {
            None
        };
        let used = used as f64;
        let mv = if let Some((why, factor)) = distress {
            if now < self.next_cut {
                return None;
            }
            self.limit = (self.limit.min(used) * factor).max(1.0);
            self.next_cut = now + CUT_EVERY_MS;
            self.calm_until = now + CALM_MS;
            why
        } else {
            let gap = target - busy;
            if gap > 0.0 && (!waiting || now < self.calm_until) {
                return None;
            }
            // Little's law: in flight = visitors inside x their pace x
            // latency, so the number inside that fills the target is what
            // is inside now scaled by target / busy. Aim there, at once
            // when that is lower, at most GAIN a second faster when higher.
            // The larger of the smoothed and the last interval's share: the
            // smoothing lags a rising load, and aiming on it would overshoot.
            let busy = busy.max(busy_now);
            let aim = if busy > 0.01 {
                used.max(1.0) * target / busy
            } else {
                f64::INFINITY
            };
            let before = self.limit;
            self.limit = if gap > 0.0 {
                // Below the target the limit only grows: with short visits
                // (a release after one page) few are inside at any moment
                // and the aim says little; the growth cap still holds.
                let fastest = before * (1.0 + GAIN * dt).min(2.0);
                // No wind-up: growth stays within reach of who is inside.
                let reach = before.max(used * 1.5 + capacity);
                aim.max(before).min(fastest).min(reach)
            } else {
                aim.min(before)
            }
            .max(1.0);
            if gap > 0.0 {
                Move::Grow
            } else {
                Move::Settle
            }
        };
        self.last_move = Some(mv);
        Some(mv)
    }

    fn observe_latency(&mut self, a: Answers, busy_now: f64, dt: f64) {
        if a.requests == 0 {
            return;
        }
        let l = a.mean_latency_us as f64;
        self.last_latency_us = Some(l);
        self.latency_us = Some(smooth(self.latency_us, l, dt, LATENCY_TAU));
        self.baseline_us = Some(match self.baseline_us {
            // The unloaded latency: the lowest seen at a light load.
            Some(b) if l < b && busy_now < 0.5 => l,
            Some(b) if l > b => b + (l - b) * (dt / BASELINE_TAU).min(1.0),
            Some(b) => b,
            None => l,
        });
    }

    /// Latency far over the baseline while the origin is loaded, in the
    /// smoothed figure and in the last interval alike, once both are known.
    /// An origin slow at a light load is not slowed by the visitors usher
    /// lets in, and the first answers of a cold start (connections being
    /// opened) linger in the smoothed figure after the origin is fast again:
    /// cutting admissions would help neither.
    fn slow(&self, busy: f64) -> bool {
        match (self.latency_us, self.last_latency_us, self.baseline_us) {
            // Below 5 ms differences are noise, not distress.
            (Some(l), Some(last), Some(b)) => {
                let l = l.min(last);
                busy > 0.5 && l > SLOW * b && l > 5_000.0
            }
            _ => false,
        }
    }
}

/// Exponential smoothing with time constant `tau` over a step of `dt`.
fn smooth(prev: Option<f64>, x: f64, dt: f64, tau: f64) -> f64 {
    match prev {
        None => x,
        Some(p) => p + (x - p) * (1.0 - (-dt / tau).exp()),
    }
}

#[cfg(test)]
#[path = "flow_tests.rs"]
mod tests;
