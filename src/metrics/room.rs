//! The waiting room's figures: the line, admissions, the gates, the
//! per-address limits and the state store.

use prometheus::{
    Gauge, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// The waiting room's metrics.
pub struct RoomMetrics {
    /// Live visitors waiting in line.
    pub queue_length: IntGauge,
    /// Tickets issued.
    pub tickets_issued: IntCounter,
    /// Admitted through the line.
    pub admitted_line: IntCounter,
    /// Admitted directly (nobody waiting, capacity free) or in passthrough.
    pub admitted_direct: IntCounter,
    /// Admitted from this node's share while Redis was unreachable
    /// (`on_failure = "local_share"`).
    pub admitted_local_share: IntCounter,
    /// Admitted visitors active now.
    pub active_users: IntGauge,
    /// Granted places not yet taken.
    pub pending_admissions: IntGauge,
    /// Effective max_active_users.
    pub max_active_users: IntGauge,
    /// Effective new_users_per_minute.
    pub new_users_per_minute: IntGauge,
    /// Admissions per second over the last minute.
    pub admission_rate: Gauge,
    /// Estimated wait at the back of the line.
    pub wait_estimate: Gauge,
    /// Time from ticket to pass.
    pub wait_seconds: Histogram,
    /// Rejected tokens by kind and reason.
    pub token_rejects: IntCounterVec,
    /// Requests over the per-client limits, by scope.
    pub rate_limited: IntCounterVec,
    /// Ticket proof-of-work challenges, by result (issued, solved, rejected).
    pub proof_of_work: IntCounterVec,
    /// 1 for the room's current state.
    pub state: IntGaugeVec,
    /// The adaptive gate's current rate.
    pub adaptive_rate: IntGauge,
    /// 1 while the state store answers (the in-process store always does).
    pub store_up: IntGauge,
    /// Nodes sharing the line, as counted by the last heartbeat (1 without Redis).
    pub store_nodes: IntGauge,
    /// This node's clock minus Redis's `TIME` at the last check (0 without Redis).
    pub clock_skew: Gauge,
    /// 1 while that skew is beyond a quarter of `ticket_grace` (`/readyz` fails).
    pub clock_skew_exceeded: IntGauge,
    /// Ticket numbers and frontier places the shared line had gone back by
    /// and this node repaired (a failover that lost the last writes).
    pub store_line_repairs: IntCounter,
    /// Adaptive gate changes by reason.
    pub adaptive_changes: IntCounterVec,
    /// The closed-loop gate's limit on visitors inside (0 when it is off).
    pub gate_limit: IntGauge,
    /// The smoothed share of the origin's slots in use (this node's).
    pub gate_origin_busy: Gauge,
    /// Back-offs of the closed-loop gate, by reason.
    pub gate_backoffs: IntCounterVec,
    /// The busy share the closed-loop gate aims at (0 when it is off).
    pub gate_origin_target: Gauge,
}

/// Room states for `usher_room_state{state}`.
pub const ROOM_STATES: [&str; 7] = [
    "off",
    "open",
    "prequeue",
    "paused",
    "closed",
    "passthrough",
    "sold_out",
];

impl RoomMetrics {
    pub(super) fn new(registry: &Registry) -> RoomMetrics {
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric names are unique");
        };
        let gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            reg(Box::new(g.clone()));
            g
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("valid metric");
            reg(Box::new(c.clone()));
            c
        };
        let admitted = IntCounterVec::new(
            Opts::new(
                "usher_admitted_total",
                "Visitors admitted (given a pass), by way in",
            ),
            &["via"],
        )
        .expect("valid metric");
        reg(Box::new(admitted.clone()));
        let token_rejects = IntCounterVec::new(
            Opts::new(
                "usher_token_rejects_total",
                "Ticket and pass cookies refused (treated as absent), by kind and reason",
            ),
            &["kind", "reason"],
        )
        .expect("valid metric");
        for kind in ["ticket", "pass"] {
            for r in crate::tokens::Reject::ALL {
                token_rejects.with_label_values(&[kind, r.label()]);
            }
        }
        reg(Box::new(token_rejects.clone()));
        let rate_limited = IntCounterVec::new(
            Opts::new(
                "usher_rate_limited_total",
                "Requests over the per-client limits, by scope (request and ticket: \
                 a holding answer or a challenge; pass: 429)",
            ),
            &["scope"],
        )
        .expect("valid metric");
        for s in ["ticket", "request", "pass"] {
            rate_limited.with_label_values(&[s]);
        }
        reg(Box::new(rate_limited.clone()));
        let proof_of_work = IntCounterVec::new(
            Opts::new(
                "usher_proof_of_work_total",
                "Ticket proof-of-work challenges issued, solutions accepted (solved) and refused (rejected)",
            ),
            &["result"],
        )
        .expect("valid metric");
        for r in ["issued", "solved", "rejected"] {
            proof_of_work.with_label_values(&[r]);
        }
        reg(Box::new(proof_of_work.clone()));
        let state = IntGaugeVec::new(
            Opts::new(
                "usher_room_state",
                concat!("1 for the waiting room's current state", line_wide!()),
            ),
            &["state"],
        )
        .expect("valid metric");
        for s in ROOM_STATES {
            state.with_label_values(&[s]);
        }
        reg(Box::new(state.clone()));
        let admission_rate = Gauge::new(
            "usher_admission_rate",
            concat!(
                "Visitors admitted per second, over the last minute",
                line_wide!()
            ),
        )
        .expect("valid metric");
        reg(Box::new(admission_rate.clone()));
        let wait_estimate = Gauge::new(
            "usher_wait_estimate_seconds",
            concat!(
                "Estimated wait for a visitor joining the back of the line now (0 when unknown)",
                line_wide!()
            ),
        )
        .expect("valid metric");
        reg(Box::new(wait_estimate.clone()));
        let wait_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "usher_wait_seconds",
                "Time visitors waited in line, from ticket to pass",
            )
            .buckets(vec![
                5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
                7200.0,
            ]),
        )
        .expect("valid metric");
        reg(Box::new(wait_seconds.clone()));
        let adaptive_changes = IntCounterVec::new(
            Opts::new(
                "usher_adaptive_changes_total",
                "Admission rate changes made by the adaptive gate, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        reg(Box::new(adaptive_changes.clone()));
        let gate_backoffs = IntCounterVec::new(
            Opts::new(
                "usher_gate_backoffs_total",
                "Times the closed-loop gate cut its limit, by the origin's sign of distress",
            ),
            &["reason"],
        )
        .expect("valid metric");
        reg(Box::new(gate_backoffs.clone()));
        let gate_origin_busy = Gauge::new(
            "usher_gate_origin_busy_ratio",
            "Share of origin.max_in_flight in use, smoothed over about a second (what the closed-loop gate steers)",
        )
        .expect("valid metric");
        reg(Box::new(gate_origin_busy.clone()));
        let gate_origin_target = Gauge::new(
            "usher_gate_origin_target_ratio",
            concat!(
                "The share of origin.max_in_flight the closed-loop gate aims to keep busy (room.origin_target; 0 when the gate is fixed)",
                line_wide!()
            ),
        )
        .expect("valid metric");
        reg(Box::new(gate_origin_target.clone()));
        let store_up = gauge(
            "usher_store_up",
            "1 while the line's state store answers, 0 while it does not",
        );
        store_up.set(1);
        let store_nodes = gauge(
            "usher_store_nodes",
            concat!(
                "Nodes sharing the line, by the last heartbeat in the store (1 without Redis)",
                line_wide!()
            ),
        );
        store_nodes.set(1);
        let clock_skew = Gauge::new(
            "usher_clock_skew_seconds",
            "This node's clock minus Redis's TIME at the last check, once a second (0 without Redis)",
        )
        .expect("valid metric");
        reg(Box::new(clock_skew.clone()));
        let clock_skew_exceeded = gauge(
            "usher_clock_skew_exceeded",
            "1 while this node's clock is off from Redis's TIME by more than a quarter of room.ticket_grace (/readyz fails), else 0",
        );
        RoomMetrics {
            store_line_repairs: counter(
                "usher_store_line_repairs_total",
                "Ticket numbers and frontier places the shared line in Redis had gone back by (a failover to a replica that missed the last writes) and this node repaired",
            ),
            clock_skew,
            clock_skew_exceeded,
            store_up,
            store_nodes,
            adaptive_changes,
            gate_backoffs,
            gate_origin_busy,
            gate_origin_target,
            gate_limit: gauge(
                "usher_gate_limit",
                "Visitors this node's closed-loop gate lets inside now, active plus pending across the line (0 when the gate is fixed)",
            ),
            adaptive_rate: gauge(
                "usher_adaptive_new_users_per_minute",
                "The adaptive gate's admission rate (0 when it is off)",
            ),
            queue_length: gauge(
                "usher_queue_length",
                concat!("Visitors waiting in line and still polling", line_wide!()),
            ),
            tickets_issued: counter(
                "usher_tickets_issued_total",
                "Tickets (places in line) issued",
            ),
            admitted_line: admitted.with_label_values(&["line"]),
            admitted_direct: admitted.with_label_values(&["direct"]),
            admitted_local_share: admitted.with_label_values(&["local_share"]),
            active_users: gauge(
                "usher_active_users",
                concat!(
                    "Admitted visitors active within their session",
                    line_wide!()
                ),
            ),
            pending_admissions: gauge(
                "usher_pending_admissions",
                concat!(
                    "Visitors whose turn came but who have not yet taken their pass",
                    line_wide!()
                ),
            ),
            max_active_users: gauge(
                "usher_room_max_active_users",
                concat!("Active visitors allowed (effective)", line_wide!()),
            ),
            new_users_per_minute: gauge(
                "usher_room_new_users_per_minute",
                concat!(
                    "New visitors admitted per minute (effective target)",
                    line_wide!()
                ),
            ),
            admission_rate,
            wait_estimate,
            wait_seconds,
            token_rejects,
            rate_limited,
            proof_of_work,
            state,
        }
    }

    /// Sets `usher_room_state` to `current` alone.
    pub fn set_state(&self, current: &str) {
        for s in ROOM_STATES {
            self.state
                .with_label_values(&[s])
                .set(i64::from(s == current));
        }
    }
}
