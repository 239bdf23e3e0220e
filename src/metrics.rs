//! Every metric usher exports, in one struct registered once. Names are
//! `usher_*` in base units; labels take values from small fixed sets only.
//!
//! Hot-path counters are resolved to their label values once, at start, so
//! counting a request is an atomic add, not a hash lookup.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// What happened to a request, for `usher_requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Outcome {
    /// Forwarded to the origin (whatever it answered).
    Forwarded = 0,
    /// Answered with the holding page or status JSON.
    Held = 1,
    /// usher's own endpoints (`/__usher/*`).
    Usher = 2,
    /// Refused by usher (bad request, limits, rate limits).
    Rejected = 3,
    /// Failed because of the origin (unreachable, timeout, overloaded).
    OriginError = 4,
}

impl Outcome {
    const ALL: [Outcome; 5] = [
        Outcome::Forwarded,
        Outcome::Held,
        Outcome::Usher,
        Outcome::Rejected,
        Outcome::OriginError,
    ];

    fn label(self) -> &'static str {
        match self {
            Outcome::Forwarded => "forwarded",
            Outcome::Held => "held",
            Outcome::Usher => "usher",
            Outcome::Rejected => "rejected",
            Outcome::OriginError => "origin_error",
        }
    }
}

const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why an origin request failed, for `usher_origin_errors_total{kind}`.
pub const ORIGIN_ERROR_KINDS: &[&str] = &[
    "connect",
    "timeout",
    "reset",
    "protocol",
    "overloaded",
    "body",
];

/// Every metric, registered in `registry`.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    requests: Vec<[IntCounter; 5]>,
    /// Origin response-header latency.
    pub origin_duration: Histogram,
    /// Origin failures by kind.
    pub origin_errors: IntCounterVec,
    /// Origin requests in flight.
    pub origin_in_flight: IntGauge,
    /// Requests waiting for an origin slot.
    pub origin_queued: IntGauge,
    /// Open client connections by listener and protocol.
    pub connections_open: IntGaugeVec,
    /// Accepted client connections by listener.
    pub connections_total: IntCounterVec,
    /// Connections refused or dropped by usher, by reason.
    pub connections_refused: IntCounterVec,
    /// Requests refused before routing (smuggling guard, limits), by reason.
    pub bad_requests: IntCounterVec,
    /// Config reloads by result.
    pub config_reloads: IntCounterVec,
    /// 1 if the last reload succeeded.
    pub config_last_reload_successful: IntGauge,
    /// When the config last loaded successfully.
    pub config_last_reload_success_timestamp: Gauge,
    /// 1 when a reload changed something that needs a restart (listeners).
    pub config_restart_required: IntGauge,
    /// Certificate expiry (unix seconds) by certificate file.
    pub tls_cert_expiry: GaugeVec,
    /// Build information.
    pub build_info: IntGaugeVec,
    /// The waiting room's figures.
    pub room: RoomMetrics,
    /// Voucher figures.
    pub vouchers: VoucherMetrics,
}

/// Voucher metrics.
pub struct VoucherMetrics {
    /// Vouchers issued (fresh codes).
    pub issued: IntCounter,
    /// Units left.
    pub remaining: IntGauge,
    /// Claims by outcome.
    pub claims: IntCounterVec,
    /// Time the issuer plugin took.
    pub plugin_duration: Histogram,
    /// Plugin or store failures by kind.
    pub plugin_errors: IntCounterVec,
}

impl VoucherMetrics {
    fn new(registry: &Registry) -> VoucherMetrics {
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric names are unique");
        };
        let issued = IntCounter::new("usher_vouchers_issued_total", "Voucher codes issued")
            .expect("valid metric");
        reg(Box::new(issued.clone()));
        let remaining = IntGauge::new("usher_vouchers_remaining", "Vouchers left in stock")
            .expect("valid metric");
        reg(Box::new(remaining.clone()));
        let claims = IntCounterVec::new(
            Opts::new("usher_voucher_claims_total", "Voucher claims, by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
        for l in crate::vouchers::ClaimResult::LABELS {
            claims.with_label_values(&[l]);
        }
        claims.with_label_values(&["not_admitted"]);
        reg(Box::new(claims.clone()));
        let plugin_duration = Histogram::with_opts(
            HistogramOpts::new(
                "usher_voucher_plugin_duration_seconds",
                "Time the voucher issuer plugin took for one claim",
            )
            .buckets(vec![
                0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 3.0, 10.0, 30.0,
            ]),
        )
        .expect("valid metric");
        reg(Box::new(plugin_duration.clone()));
        let plugin_errors = IntCounterVec::new(
            Opts::new(
                "usher_voucher_plugin_errors_total",
                "Claims the issuer or the ledger could not finish, by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        for k in ["retry_later", "store", "store_unreachable"] {
            plugin_errors.with_label_values(&[k]);
        }
        reg(Box::new(plugin_errors.clone()));
        VoucherMetrics {
            issued,
            remaining,
            claims,
            plugin_duration,
            plugin_errors,
        }
    }
}

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
    /// Adaptive gate changes by reason.
    pub adaptive_changes: IntCounterVec,
    /// The closed-loop gate's limit on visitors inside (0 when it is off).
    pub gate_limit: IntGauge,
    /// The smoothed share of the origin's slots in use (this node's).
    pub gate_origin_busy: Gauge,
    /// Back-offs of the closed-loop gate, by reason.
    pub gate_backoffs: IntCounterVec,
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

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric names are unique");
        };
        let requests_vec = IntCounterVec::new(
            Opts::new(
                "usher_requests_total",
                "Requests answered, by outcome and status class",
            ),
            &["outcome", "class"],
        )
        .expect("valid metric");
        reg(Box::new(requests_vec.clone()));
        let requests = Outcome::ALL
            .iter()
            .map(|o| CLASSES.map(|c| requests_vec.with_label_values(&[o.label(), c])))
            .collect();

        let origin_duration = Histogram::with_opts(
            HistogramOpts::new(
                "usher_origin_request_duration_seconds",
                "Time from sending a request to the origin until its response headers",
            )
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
        )
        .expect("valid metric");
        reg(Box::new(origin_duration.clone()));
        let origin_errors = IntCounterVec::new(
            Opts::new(
                "usher_origin_errors_total",
                "Origin request failures, by kind",
            ),
            &["kind"],
        )
        .expect("valid metric");
        for k in ORIGIN_ERROR_KINDS {
            origin_errors.with_label_values(&[k]);
        }
        reg(Box::new(origin_errors.clone()));
        let origin_in_flight =
            IntGauge::new("usher_origin_in_flight", "Requests in flight to the origin")
                .expect("valid metric");
        reg(Box::new(origin_in_flight.clone()));
        let origin_queued = IntGauge::new(
            "usher_origin_queued",
            "Requests waiting for an origin slot (origin.max_in_flight reached)",
        )
        .expect("valid metric");
        reg(Box::new(origin_queued.clone()));
        let connections_open = IntGaugeVec::new(
            Opts::new(
                "usher_connections_open",
                "Open client connections, by listener and protocol",
            ),
            &["listener", "protocol"],
        )
        .expect("valid metric");
        reg(Box::new(connections_open.clone()));
        let connections_total = IntCounterVec::new(
            Opts::new(
                "usher_connections_total",
                "Accepted client connections, by listener",
            ),
            &["listener"],
        )
        .expect("valid metric");
        reg(Box::new(connections_total.clone()));
        let connections_refused = IntCounterVec::new(
            Opts::new(
                "usher_connections_refused_total",
                "Client connections closed by usher before serving, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        reg(Box::new(connections_refused.clone()));
        let bad_requests = IntCounterVec::new(
            Opts::new(
                "usher_bad_requests_total",
                "Requests refused as malformed or ambiguous, by reason",
            ),
            &["reason"],
        )
        .expect("valid metric");
        reg(Box::new(bad_requests.clone()));
        let config_reloads = IntCounterVec::new(
            Opts::new("usher_config_reloads_total", "Config reloads, by result"),
            &["result"],
        )
        .expect("valid metric");
        for r in ["success", "failure"] {
            config_reloads.with_label_values(&[r]);
        }
        reg(Box::new(config_reloads.clone()));
        let config_last_reload_successful = IntGauge::new(
            "usher_config_last_reload_successful",
            "1 if the last config reload succeeded, 0 if it failed (the previous config is still in use)",
        )
        .expect("valid metric");
        reg(Box::new(config_last_reload_successful.clone()));
        let config_last_reload_success_timestamp = Gauge::new(
            "usher_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load",
        )
        .expect("valid metric");
        reg(Box::new(config_last_reload_success_timestamp.clone()));
        let config_restart_required = IntGauge::new(
            "usher_config_restart_required",
            "1 when the config file changed a setting that only a restart applies (listen addresses)",
        )
        .expect("valid metric");
        reg(Box::new(config_restart_required.clone()));
        let tls_cert_expiry = GaugeVec::new(
            Opts::new(
                "usher_tls_certificate_expiry_timestamp_seconds",
                "Unix time when each configured TLS certificate expires",
            ),
            &["certificate"],
        )
        .expect("valid metric");
        reg(Box::new(tls_cert_expiry.clone()));
        let build_info = IntGaugeVec::new(
            Opts::new(
                "usher_build_info",
                "Always 1; the labels say which build runs",
            ),
            &["version"],
        )
        .expect("valid metric");
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        reg(Box::new(build_info.clone()));
        #[cfg(target_os = "linux")]
        reg(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ));

        let room = RoomMetrics::new(&registry);
        let vouchers = VoucherMetrics::new(&registry);

        Metrics {
            vouchers,
            room,
            registry,
            requests,
            origin_duration,
            origin_errors,
            origin_in_flight,
            origin_queued,
            connections_open,
            connections_total,
            connections_refused,
            bad_requests,
            config_reloads,
            config_last_reload_successful,
            config_last_reload_success_timestamp,
            config_restart_required,
            tls_cert_expiry,
            build_info,
        }
    }

    /// Counts one answered request.
    pub fn request(&self, outcome: Outcome, status: u16) {
        let class = ((status / 100) as usize).clamp(1, 5) - 1;
        self.requests[outcome as usize][class].inc();
    }

    /// Counts one origin failure of `kind` (one of [`ORIGIN_ERROR_KINDS`]).
    pub fn origin_error(&self, kind: &str) {
        self.origin_errors.with_label_values(&[kind]).inc();
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(16 * 1024);
        // Encoding into a Vec cannot fail for well-formed metrics.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

impl RoomMetrics {
    fn new(registry: &Registry) -> RoomMetrics {
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
            Opts::new("usher_room_state", "1 for the waiting room's current state"),
            &["state"],
        )
        .expect("valid metric");
        for s in ROOM_STATES {
            state.with_label_values(&[s]);
        }
        reg(Box::new(state.clone()));
        let admission_rate = Gauge::new(
            "usher_admission_rate",
            "Visitors admitted per second, over the last minute",
        )
        .expect("valid metric");
        reg(Box::new(admission_rate.clone()));
        let wait_estimate = Gauge::new(
            "usher_wait_estimate_seconds",
            "Estimated wait for a visitor joining the back of the line now (0 when unknown)",
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
        for r in crate::admission::adaptive::Reason::ALL {
            adaptive_changes.with_label_values(&[r.label()]);
        }
        reg(Box::new(adaptive_changes.clone()));
        let gate_backoffs = IntCounterVec::new(
            Opts::new(
                "usher_gate_backoffs_total",
                "Times the closed-loop gate cut its limit, by the origin's sign of distress",
            ),
            &["reason"],
        )
        .expect("valid metric");
        for r in crate::admission::flow::Move::ALL
            .iter()
            .filter(|m| m.is_cut())
        {
            gate_backoffs.with_label_values(&[r.label()]);
        }
        reg(Box::new(gate_backoffs.clone()));
        let gate_origin_busy = Gauge::new(
            "usher_gate_origin_busy_ratio",
            "Share of origin.max_in_flight in use, smoothed over about a second (what the closed-loop gate steers)",
        )
        .expect("valid metric");
        reg(Box::new(gate_origin_busy.clone()));
        let store_up = gauge(
            "usher_store_up",
            "1 while the line's state store answers, 0 while it does not",
        );
        store_up.set(1);
        let store_nodes = gauge(
            "usher_store_nodes",
            "Nodes sharing the line, by the last heartbeat in the store (1 without Redis)",
        );
        store_nodes.set(1);
        RoomMetrics {
            store_up,
            store_nodes,
            adaptive_changes,
            gate_backoffs,
            gate_origin_busy,
            gate_limit: gauge(
                "usher_gate_limit",
                "Visitors the closed-loop gate lets inside now, active plus pending (0 when the gate is fixed)",
            ),
            adaptive_rate: gauge(
                "usher_adaptive_new_users_per_minute",
                "The adaptive gate's admission rate (0 when it is off)",
            ),
            queue_length: gauge(
                "usher_queue_length",
                "Visitors waiting in line and still polling",
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
                "Admitted visitors active within their session",
            ),
            pending_admissions: gauge(
                "usher_pending_admissions",
                "Visitors whose turn came but who have not yet taken their pass",
            ),
            max_active_users: gauge(
                "usher_room_max_active_users",
                "Active visitors allowed (effective)",
            ),
            new_users_per_minute: gauge(
                "usher_room_new_users_per_minute",
                "New visitors admitted per minute (effective target)",
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

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
