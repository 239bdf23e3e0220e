//! Builds the claim service from `[vouchers]`: the issuer plugin, the
//! durable ledger (under `state_dir`, or in Redis shared by the nodes with
//! `[store] backend = "redis"`), and the metrics observer.

use std::sync::Arc;
use std::time::Duration;

use crate::config::vouchers::{Plugin, VouchersConfig};
use crate::metrics::Metrics;
use crate::store::ledger::redis_durable::ClaimsConnection;
use crate::store::{ClaimLedger, Ledger, RedisLedger, StoreError};

use super::{
    ClaimObserver, ClaimResult, PoolIssuer, SignedIssuer, VoucherIssuer, VoucherKey, Vouchers,
};
use super::{WebhookConfig, WebhookIssuer};

/// Why the vouchers could not be set up (usher does not start without them:
/// an event that promised vouchers must not run without its ledger).
#[derive(Debug, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct SetupError {
    /// The config key at fault (`vouchers.pool_file`, `vouchers.state_dir`).
    pub key: &'static str,
    /// What is wrong, one cause.
    pub reason: String,
    /// Whether trying again later may work (another process holds the
    /// ledger); otherwise the config or the files must change first.
    pub transient: bool,
}

impl SetupError {
    fn new(key: &'static str, reason: impl std::fmt::Display) -> SetupError {
        SetupError {
            key,
            reason: reason.to_string(),
            transient: false,
        }
    }
}

/// The issuer plugin with its files read, and the stock the ledger enforces.
pub struct Issuer {
    /// The plugin.
    pub plugin: Arc<dyn VoucherIssuer>,
    /// `vouchers.stock`, capped by the pool's size for the `pool` plugin.
    pub stock: u64,
}

impl std::fmt::Debug for Issuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issuer")
            .field("plugin", &self.plugin.name())
            .field("stock", &self.stock)
            .finish()
    }
}

/// Reads the plugin's files (the code pool, the key) and builds the plugin:
/// part of the start-up stage that `usher check` runs too.
pub fn issuer(cfg: &VouchersConfig) -> Result<Issuer, SetupError> {
    Ok(match &cfg.plugin {
        Plugin::Pool(path) => {
            let pool =
                PoolIssuer::load(path).map_err(|e| SetupError::new("vouchers.pool_file", e))?;
            let n = pool.len() as u64;
            Issuer {
                plugin: Arc::new(pool),
                stock: cfg.stock.min(n),
            }
        }
        Plugin::Signed { prefix, key_file } => {
            let key =
                VoucherKey::load(key_file).map_err(|e| SetupError::new("vouchers.key_file", e))?;
            let signed = SignedIssuer::new(prefix, key)
                .map_err(|e| SetupError::new("vouchers.signed_prefix", e))?;
            Issuer {
                plugin: Arc::new(signed),
                stock: cfg.stock,
            }
        }
        Plugin::Webhook {
            url,
            key_file,
            timeout,
            attempts,
        } => {
            let key =
                VoucherKey::load(key_file).map_err(|e| SetupError::new("vouchers.key_file", e))?;
            let mut w = WebhookConfig::new(url.clone());
            w.attempt_timeout = *timeout;
            w.max_attempts = *attempts;
            let hook = WebhookIssuer::new(w, key)
                .map_err(|e| SetupError::new("vouchers.webhook_url", e))?;
            Issuer {
                plugin: Arc::new(hook),
                stock: cfg.stock,
            }
        }
    })
}

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
/// size for the `pool` plugin (as [`issuer`] does).
pub fn effective_stock(cfg: &VouchersConfig) -> Result<u64, SetupError> {
    match &cfg.plugin {
        Plugin::Pool(path) => {
            let pool =
                PoolIssuer::load(path).map_err(|e| SetupError::new("vouchers.pool_file", e))?;
            Ok(cfg.stock.min(pool.len() as u64))
        }
        _ => Ok(cfg.stock),
    }
}

/// Opens the ledger for `event` behind `issuer`: the local journal
/// (replayed now), or with `redis` (the ledger's Redis connection: the
/// line's, or its own when claims wait for replicas) the
/// ledger shared by the nodes, whose counters the caller refreshes once the
/// runtime runs (no I/O here).
pub fn build(
    cfg: &VouchersConfig,
    issuer: Issuer,
    event: &str,
    metrics: Arc<Metrics>,
    redis: Option<ClaimsConnection>,
) -> Result<Vouchers, SetupError> {
    let Issuer {
        plugin: issuer,
        stock,
    } = issuer;
    if stock < cfg.stock {
        tracing::warn!(
            stock = cfg.stock,
            codes = stock,
            "the code pool is smaller than the stock: the stock is the pool"
        );
    }
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
            let dir = &cfg.state_dir;
            std::fs::create_dir_all(dir).map_err(|e| {
                SetupError::new("vouchers.state_dir", format!("{}: {e}", dir.display()))
            })?;
            let ledger = Ledger::open(dir, event, stock).map_err(|e| SetupError {
                transient: matches!(e, StoreError::Locked { .. }),
                ..SetupError::new("vouchers.state_dir", e)
            })?;
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
