//! The voucher figures: claims, issues, the stock and the issuer plugin.

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// Voucher metrics.
pub struct VoucherMetrics {
    /// Vouchers issued (fresh codes).
    pub issued: IntCounter,
    /// Units left (line-wide with the Redis ledger).
    pub remaining: IntGauge,
    /// The stock the ledger enforces (0 without `[vouchers]`).
    pub stock: IntGauge,
    /// Claims by outcome.
    pub claims: IntCounterVec,
    /// Time the issuer plugin took.
    pub plugin_duration: Histogram,
    /// Plugin or store failures by kind.
    pub plugin_errors: IntCounterVec,
}

impl VoucherMetrics {
    pub(super) fn new(registry: &Registry) -> VoucherMetrics {
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            registry.register(c).expect("metric names are unique");
        };
        let issued = IntCounter::new("usher_vouchers_issued_total", "Voucher codes issued")
            .expect("valid metric");
        reg(Box::new(issued.clone()));
        let remaining = IntGauge::new(
            "usher_vouchers_remaining",
            concat!("Vouchers left in stock", line_wide!()),
        )
        .expect("valid metric");
        reg(Box::new(remaining.clone()));
        let stock = IntGauge::new(
            "usher_vouchers_stock",
            concat!(
                "Vouchers the ledger gives out in all (vouchers.stock, capped by the pool; 0 without vouchers)",
                line_wide!()
            ),
        )
        .expect("valid metric");
        reg(Box::new(stock.clone()));
        let claims = IntCounterVec::new(
            Opts::new("usher_voucher_claims_total", "Voucher claims, by outcome"),
            &["outcome"],
        )
        .expect("valid metric");
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
        for k in [
            "retry_later",
            "store",
            "store_unreachable",
            "store_not_durable",
        ] {
            plugin_errors.with_label_values(&[k]);
        }
        reg(Box::new(plugin_errors.clone()));
        VoucherMetrics {
            issued,
            remaining,
            stock,
            claims,
            plugin_duration,
            plugin_errors,
        }
    }
}
