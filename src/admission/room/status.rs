//! The room's figures for `/admin/status`, as typed structs the admin API
//! serializes.

use serde::Serialize;

use super::settings::{Overrides, Settings};
use super::verdict::line_wait;
use super::Room;
use crate::admission::flow::FlowStatus;
use crate::config::room::RoomConfig;

/// The room's part of `/admin/status`.
#[derive(Debug, Clone, Serialize)]
pub struct RoomStatus {
    /// The event's name.
    pub event: String,
    /// The settings in force.
    pub settings: Settings,
    /// The operator's overrides.
    pub overrides: Overrides,
    /// The line is open (its pre-queue drawn).
    pub open: bool,
    /// The scheduled opening, as written in the config.
    pub opens_at: Option<String>,
    /// The hash of the pre-queue's shuffle seed, once drawn.
    pub prequeue_seed_sha256: Option<String>,
    /// Tickets issued (this node's line; `None` with Redis).
    pub issued: Option<u64>,
    /// Visitors waiting.
    pub waiting: u64,
    /// Visitors inside.
    pub active: u64,
    /// Places granted, not yet taken.
    pub pending: u64,
    /// Admitted from the line (`None` with Redis).
    pub admitted_from_line: Option<u64>,
    /// Skipped as abandoned (`None` with Redis).
    pub skipped_abandoned: Option<u64>,
    /// Grants that expired untaken (`None` with Redis).
    pub expired_grants: Option<u64>,
    /// Admissions per second, measured.
    pub admission_rate_per_second: Option<f64>,
    /// The wait at the back of the line.
    pub wait_estimate_seconds: Option<f64>,
    /// The line's memory (`None` with Redis).
    pub line_memory_bytes: Option<u64>,
    /// The node is draining.
    pub draining: bool,
    /// Vouchers left, when the event has any.
    pub vouchers_left: Option<u64>,
    /// Redis reachable at the last command (`None` without Redis).
    pub store_up: Option<bool>,
    /// The shared line's figures (`None` without Redis).
    pub shared: Option<SharedStatus>,
    /// The admission gate.
    pub gate: GateStatus,
}

/// The shared line's figures of the last tick.
#[derive(Debug, Clone, Serialize)]
pub struct SharedStatus {
    /// Live nodes.
    pub nodes: u64,
    /// Whether this node holds the lease (moves the frontier).
    pub ticking: bool,
    /// Visitors waiting.
    pub waiting: u64,
    /// Visitors inside.
    pub active: u64,
    /// Places granted, not yet taken.
    pub pending: u64,
    /// Places granted so far.
    pub admitted: u64,
    /// This node admits its own share (Redis unreachable).
    pub local_share: bool,
}

/// The admission gate's figures.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum GateStatus {
    /// The closed-loop gate, stepped.
    ClosedLoop {
        /// Its state.
        #[serde(flatten)]
        flow: FlowStatus,
        /// The ceiling on visitors inside.
        max_active_users_ceiling: Option<u64>,
        /// The ceiling on the rate.
        new_users_per_minute_ceiling: Option<u32>,
    },
    /// The closed-loop gate before its first step.
    Starting {
        /// `closed-loop`.
        mode: &'static str,
        /// The share of the origin's slots aimed at.
        target: f64,
        /// The ceiling on visitors inside.
        max_active_users_ceiling: Option<u64>,
        /// The ceiling on the rate.
        new_users_per_minute_ceiling: Option<u32>,
    },
    /// `fixed` or `adaptive`.
    Plain {
        /// The gate's mode.
        mode: &'static str,
    },
}

impl Room {
    /// The line's figures for `/admin/status`.
    pub fn status(&self, cfg: &RoomConfig) -> RoomStatus {
        let settings = self.settings(cfg);
        let now = self.now_ms();
        let (st, active, rate) = {
            let s = self.lock();
            (s.line.stats(), s.active.len(), s.rate.per_second(now))
        };
        let shared = self.shared_status();
        let mut v = RoomStatus {
            event: cfg.event.clone(),
            settings,
            overrides: self.knobs.overrides(),
            open: st.open,
            opens_at: cfg.opens_at.as_ref().map(|(t, _)| t.clone()),
            prequeue_seed_sha256: self
                .opened_hash
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
            issued: Some(st.issued),
            waiting: st.waiting,
            active,
            pending: st.pending,
            admitted_from_line: Some(st.taken_total),
            skipped_abandoned: Some(st.skipped_total),
            expired_grants: Some(st.expired_total),
            admission_rate_per_second: rate,
            wait_estimate_seconds: line_wait(st.waiting, rate),
            line_memory_bytes: Some(st.memory_bytes as u64),
            draining: self.draining(),
            vouchers_left: self.vouchers_left(),
            store_up: self.store_up(),
            shared: shared.clone(),
            gate: self.gate_status(cfg),
        };
        if let Some(sh) = shared {
            // The line is in Redis: its figures, not this node's empty one.
            (v.waiting, v.active, v.pending) = (sh.waiting, sh.active, sh.pending);
            v.wait_estimate_seconds = line_wait(sh.waiting, rate);
            v.issued = None;
            v.admitted_from_line = None;
            v.skipped_abandoned = None;
            v.expired_grants = None;
            v.line_memory_bytes = None;
        }
        v
    }

    /// The gate's figures for `/admin/status`.
    fn gate_status(&self, cfg: &RoomConfig) -> GateStatus {
        match cfg.closed_loop {
            Some(cl) => match self.flow_status(cl.target) {
                Some(flow) => GateStatus::ClosedLoop {
                    flow,
                    max_active_users_ceiling: cl.max_active,
                    new_users_per_minute_ceiling: cl.per_minute,
                },
                None => GateStatus::Starting {
                    mode: "closed-loop",
                    target: cl.target,
                    max_active_users_ceiling: cl.max_active,
                    new_users_per_minute_ceiling: cl.per_minute,
                },
            },
            None if cfg.adaptive.is_some() => GateStatus::Plain { mode: "adaptive" },
            None => GateStatus::Plain { mode: "fixed" },
        }
    }
}
