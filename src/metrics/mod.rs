//! Every metric usher exports, in one struct registered once. Names are
//! `usher_*` in base units; labels take values from small fixed sets only.
//!
//! Hot-path counters are resolved to their label values once, at start, so
//! counting a request is an atomic add, not a hash lookup.
//!
//! # One node or N nodes
//! With `[store] backend = "redis"` several nodes share one line, and two
//! kinds of figure come out of them:
//! - **Line-wide** gauges: the shared line's figure, read from Redis by
//!   every node's tick (people waiting, active, pending, the admission
//!   rate, the wait estimate, the nodes, the voucher stock) or a setting
//!   every node holds. N nodes report the same number, so a sum reads N
//!   times too high: aggregate them with `max`. Their HELP text ends with
//!   [`LINE_WIDE`] and `tests/monitoring.rs` holds the shipped dashboard
//!   and alerts to it.
//! - **Node-local** figures: everything else. Counters count what this
//!   node did (the passes it gave, the tickets it issued, its requests,
//!   its gate's back-offs), so the sum over nodes is the line's total;
//!   gauges describe this process (its origin slots, its gate's limit).
//!
//! Without Redis each node is its own line and every figure is its own.

/// The tail of a line-wide gauge's HELP text (a macro so that `concat!`
/// can append it to a literal).
macro_rules! line_wide {
    () => {
        " (line-wide: with Redis every node reports the shared line's figure; aggregate nodes with max, not sum)"
    };
}

/// The tail of the HELP text of every line-wide gauge.
pub const LINE_WIDE: &str = line_wide!();

#[cfg(target_os = "linux")]
mod process;
mod room;
mod talk;
mod vouchers;

pub use room::{RoomMetrics, ROOM_STATES};
pub use talk::TalkMetrics;
pub use vouchers::VoucherMetrics;

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
    /// Announcements and visitors' feedback.
    pub talk: TalkMetrics,
}

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
        reg(Box::<process::ProcessCollector>::default());

        let room = RoomMetrics::new(&registry);
        let vouchers = VoucherMetrics::new(&registry);
        let talk = TalkMetrics::new(&registry);

        Metrics {
            vouchers,
            talk,
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

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
