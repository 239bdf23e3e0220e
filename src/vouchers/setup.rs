//! Builds the claim service from `[vouchers]`: the issuer plugin, the
//! durable ledger (under `state_dir`, or in Redis shared by the nodes with
//! `[store] backend = "redis"`), and the metrics observer.

use std::sync::Arc;
use std::time::Duration;

use crate::config::vouchers::{Plugin, VouchersConfig};
use crate::metrics::Metrics;
use crate::store::redis_durable::ClaimsConnection;
use crate::store::{ClaimLedger, Ledger, RedisLedger, StoreError};

use super::{
    ClaimObserver, ClaimResult, PoolIssuer, SignedIssuer, VoucherIssuer, VoucherKey, Vouchers,
};
use super::{WebhookConfig, WebhookIssuer};

/// Why the vouchers could not be set up (usher does not start without them:
/// an event that promised vouchers must not run without its ledger).
#[derive(Debug, thiserror::Error)]
#[error("vouchers: {0}")]
pub struct SetupError(String);

/// Counts claims in the metrics.
struct Observer(Arc<Metrics>);

impl ClaimObserver for Observer {
    fn on_claim(&self, result: &ClaimResult, issuer_time: Option<Duration>, remaining: u64) {
        let m = &self.0.vouchers;
        m.claims.with_label_values(&[result.label()]).inc();
        if let Some(t) = issuer_time {
            m.plugin_duration.observe(t.as_secs_f64());
        }
        match result {
            ClaimResult::Issued { fresh: true, .. } => m.issued.inc(),
            ClaimResult::RetryLater(_) => m.plugin_errors.with_label_values(&["retry_later"]).inc(),
            // Redis unreachable (shared ledger) apart from the local ledger's failures.
            ClaimResult::Unavailable(StoreError::Unreachable(_)) => m
                .plugin_errors
                .with_label_values(&["store_unreachable"])
                .inc(),
            // Recorded, but not on enough replicas in time: not shown.
            ClaimResult::Unavailable(StoreError::NotDurable { .. }) => m
                .plugin_errors
                .with_label_values(&["store_not_durable"])
                .inc(),
            ClaimResult::Unavailable(_) => m.plugin_errors.with_label_values(&["store"]).inc(),
            _ => {}
        }
        m.remaining.set(remaining as i64);
    }
}

/// The stock the ledger enforces: `vouchers.stock`, capped by the pool's
/// size for the `pool` plugin (as [`build`] does).
pub fn effective_stock(cfg: &VouchersConfig) -> Result<u64, SetupError> {
    match &cfg.plugin {
        Plugin::Pool(path) => {
            let pool = PoolIssuer::load(path)
                .map_err(|e| SetupError(format!("vouchers.pool_file: {e}")))?;
            Ok(cfg.stock.min(pool.len() as u64))
        }
        _ => Ok(cfg.stock),
    }
}

/// Opens the ledger and the plugin for `event`: the local journal
/// (replayed now), or with `redis` (the ledger's Redis connection: the
/// line's, or its own when claims wait for replicas) the
/// ledger shared by the nodes, whose counters the caller refreshes once the
/// runtime runs (no I/O here).
pub fn build(
    cfg: &VouchersConfig,
    event: &str,
    metrics: Arc<Metrics>,
    redis: Option<ClaimsConnection>,
) -> Result<Vouchers, SetupError> {
    let err = |what: &str, e: &dyn std::fmt::Display| SetupError(format!("{what}: {e}"));
    let (issuer, stock): (Arc<dyn VoucherIssuer>, u64) = match &cfg.plugin {
        Plugin::Pool(path) => {
            let pool = PoolIssuer::load(path).map_err(|e| err("vouchers.pool_file", &e))?;
            let n = pool.len() as u64;
            if n < cfg.stock {
                tracing::warn!(
                    stock = cfg.stock,
                    codes = n,
                    "the code pool is smaller than the stock: the stock is the pool"
                );
            }
            (Arc::new(pool), cfg.stock.min(n))
        }
        Plugin::Signed { prefix, key_file } => {
            let key = VoucherKey::load(key_file).map_err(|e| err("vouchers.key_file", &e))?;
            let signed =
                SignedIssuer::new(prefix, key).map_err(|e| err("vouchers.signed_prefix", &e))?;
            (Arc::new(signed), cfg.stock)
        }
        Plugin::Webhook {
            url,
            key_file,
            timeout,
            attempts,
        } => {
            let key = VoucherKey::load(key_file).map_err(|e| err("vouchers.key_file", &e))?;
            let mut w = WebhookConfig::new(url.clone());
            w.attempt_timeout = *timeout;
            w.max_attempts = *attempts;
            let hook = WebhookIssuer::new(w, key).map_err(|e| err("vouchers.webhook_url", &e))?;
            (Arc::new(hook), cfg.stock)
        }
    };
    metrics.vouchers.stock.set(stock as i64);
    let ledger: ClaimLedger = match redis {
        Some(c) => {
            tracing::info!(
                event,
                plugin = issuer.name(),
                stock,
                min_replicas_acked = c.durability.map_or(0, |d| d.replicas),
                "voucher ledger shared through Redis"
            );
            RedisLedger::new(c.con, event, stock)
                .with_durability(c.durability)
                .into()
        }
        None => {
            std::fs::create_dir_all(&cfg.state_dir)
                .map_err(|e| err(&format!("state_dir {}", cfg.state_dir.display()), &e))?;
            let ledger =
                Ledger::open(&cfg.state_dir, event, stock).map_err(|e| err("ledger", &e))?;
            metrics.vouchers.remaining.set(ledger.remaining() as i64);
            tracing::info!(
                event,
                plugin = issuer.name(),
                stock,
                issued = ledger.issued_count(),
                remaining = ledger.remaining(),
                pending = ledger.pending().len(),
                "voucher ledger open"
            );
            ledger.into()
        }
    };
    Ok(Vouchers::new(ledger, issuer).with_observer(Arc::new(Observer(metrics))))
}
