//! What a decision answers: go on (with the pass's cookies), or wait (with
//! everything the holding page or status JSON shows), or no answer now.

use std::sync::Arc;

use http::HeaderValue;

use crate::holding::{HoldingPages, RoomState};

/// The answer for one visitor.
#[derive(Debug)]
pub enum Verdict {
    /// Go on to the origin.
    Admit {
        /// The pass id (to free the slot if the origin says so).
        pass_id: u64,
        /// Cookies to set on the answer (a new or refreshed pass, a cleared ticket).
        cookies: Vec<HeaderValue>,
    },
    /// Wait: show the holding page or status JSON.
    Hold(Hold),
    /// No answer possible now (the durable store cannot reserve ticket
    /// numbers): a 503-like refusal with a wait. The per-address limits are
    /// holding answers ([`Hold::retry_after`], [`Hold::challenge`]), never this.
    Limited {
        /// Seconds to wait.
        retry_after: u64,
        /// What is limited (`store`).
        scope: &'static str,
    },
}

/// What the holding page or JSON shows: everything the answer needs, so
/// the HTTP side does not ask the room again.
#[derive(Debug)]
pub struct Hold {
    /// The state shown.
    pub state: RoomState,
    /// Live visitors ahead (FIFO), when known.
    pub position: Option<u64>,
    /// Estimated wait, when the rate is known.
    pub eta_seconds: Option<u64>,
    /// Seconds until the scheduled opening.
    pub opens_in_seconds: Option<u64>,
    /// Cookies to set (a new ticket).
    pub cookies: Vec<HeaderValue>,
    /// Come back after this many seconds (`Retry-After`, and the page's
    /// next poll): set when the address is over a limit, so this answer
    /// says nothing about the visitor's place.
    pub retry_after: Option<u64>,
    /// A proof-of-work challenge and its bits, for a newcomer over the
    /// per-address ticket limit (see `limits`).
    pub challenge: Option<(String, u32)>,
    /// Queued near enough to the head to poll fast (and long-poll): see
    /// [`super::Room::near_front`].
    pub near: bool,
    /// Vouchers left, when the event has any.
    pub vouchers_left: Option<u64>,
    /// The holding page renderer in force (set by the room's decision).
    pub pages: Option<Arc<HoldingPages>>,
}

impl Hold {
    /// A holding answer in `state` with nothing else known.
    pub fn bare(state: RoomState) -> Hold {
        Hold {
            state,
            position: None,
            eta_seconds: None,
            opens_in_seconds: None,
            cookies: Vec::new(),
            retry_after: None,
            challenge: None,
            near: false,
            vouchers_left: None,
            pages: None,
        }
    }

    /// "Still waiting, come back in `seconds`": over a per-address limit.
    pub fn retry(seconds: u64) -> Hold {
        Hold {
            retry_after: Some(seconds),
            ..Hold::bare(RoomState::Queued)
        }
    }
}

/// The state a waiting visitor is shown: the pre-queue before the opening
/// (and during its draw), paused, or queued.
pub(super) fn hold_state(prequeue: bool, paused: bool) -> RoomState {
    if prequeue {
        RoomState::Prequeue
    } else if paused {
        RoomState::Paused
    } else {
        RoomState::Queued
    }
}

/// The wait shown to a visitor `ahead` places from the head at `rate`
/// admissions per second: only while queued and the rate is known.
pub(super) fn eta_seconds(state: RoomState, ahead: u64, rate: Option<f64>) -> Option<u64> {
    match rate {
        Some(r) if r > 0.0 && state == RoomState::Queued => {
            Some(((ahead + 1) as f64 / r).ceil() as u64)
        }
        _ => None,
    }
}

/// The line's wait (s) at `rate`: `usher_wait_estimate_seconds` and
/// `/admin/status`.
pub(super) fn line_wait(waiting: u64, rate: Option<f64>) -> Option<f64> {
    rate.filter(|r| *r > 0.0)
        .map(|r| (waiting as f64 / r).ceil())
}
