//! What every node does beside the claims when the voucher ledger is shared
//! through Redis:
//! - at start, checks Redis persistence: without `appendonly yes` and
//!   `appendfsync always` a Redis restart can forget reservations, reuse a
//!   sequence number and let the pool plugin hand a code twice (logged as
//!   an error; usher still runs, like the line, whose only loss is order);
//! - about once a second, re-reads the shared counters, so this node's
//!   holding page and `usher_vouchers_remaining` show every node's claims
//!   and the sold-out state;
//! - every few seconds, finishes the pending claims older than
//!   `vouchers.recover_after` (a node died between reserve and code, or the
//!   issuer said "retry later") with their idempotency key. Two nodes doing
//!   so at once is safe: same key, same code, the second record a no-op.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Vouchers;

/// How often the shared counters are re-read.
pub const REFRESH_EVERY: Duration = Duration::from_secs(1);

/// How often pending claims are looked for: a third of their age limit,
/// between 1 and 15 seconds.
pub fn sweep_every(recover_after: Duration) -> Duration {
    (recover_after / 3).clamp(Duration::from_secs(1), Duration::from_secs(15))
}

/// What the upkeep reads from and tells the rest of usher.
pub trait Upkept: Send + Sync {
    /// `vouchers.recover_after` as configured now (it reloads live).
    fn recover_after(&self) -> Duration;
    /// The codes left in stock line-wide, just read.
    fn left(&self, left: u64);
}

/// Runs until `stop`: the persistence check, the refreshes and the sweeps.
pub async fn shared(app: Arc<impl Upkept>, v: Arc<Vouchers>, mut stop: watch::Receiver<bool>) {
    let refresh = refresh_loop(&*app, &v);
    let sweep = sweep_loop(&*app, &v);
    tokio::select! {
        _ = refresh => {}
        _ = sweep => {}
        _ = stop.changed() => {}
    }
}

async fn refresh_loop(app: &impl Upkept, v: &Vouchers) {
    let mut checked = false;
    let mut up = true;
    loop {
        let known = checked || check_persistence(v).await;
        match v.refresh().await {
            Ok(()) => {
                if !known {
                    // Redis answers, but not to INFO: an ACL without it.
                    tracing::warn!(
                        "could not read Redis persistence (INFO refused?): vouchers need \
                         appendonly yes and appendfsync always (docs/STATE.md)"
                    );
                }
                checked = true;
                if !up {
                    tracing::info!("voucher ledger in Redis reachable again");
                }
                up = true;
                app.left(v.remaining());
            }
            Err(e) => {
                if up {
                    tracing::error!(error = %e, "voucher ledger in Redis unreachable: claims fail until it is back");
                }
                up = false;
            }
        }
        tokio::time::sleep(REFRESH_EVERY).await;
    }
}

/// Logs what Redis persistence means for the vouchers; true once known.
async fn check_persistence(v: &Vouchers) -> bool {
    let Some(r) = v.ledger().redis() else {
        return true;
    };
    match r.check_persistence().await {
        Ok(p) if p.is_safe() && p.fsync.is_none() => {
            tracing::warn!(
                "Redis has appendonly yes but refused CONFIG GET appendfsync: \
                 make sure it is appendfsync always (docs/STATE.md)"
            );
            true
        }
        Ok(p) if p.is_safe() => true,
        Ok(p) => {
            tracing::error!(
                aof = p.aof,
                appendfsync = p.fsync.as_deref().unwrap_or("unknown"),
                "Redis persistence is not safe for vouchers: set appendonly yes and appendfsync always, \
                 or a Redis restart can forget claims and hand a code twice (docs/STATE.md)"
            );
            true
        }
        Err(_) => false,
    }
}

async fn sweep_loop(app: &impl Upkept, v: &Vouchers) {
    loop {
        let age = app.recover_after();
        match v.recover_older_than(age).await {
            Ok(report) if report.pending > 0 => {
                tracing::info!(?report, "pending voucher claims finished");
                app.left(v.remaining());
            }
            Ok(_) => {}
            // The refresh loop logs the outage once.
            Err(e) => tracing::debug!(error = %e, "pending voucher claims not listed"),
        }
        tokio::time::sleep(sweep_every(age)).await;
    }
}

#[cfg(test)]
#[test]
fn sweeps_run_a_few_times_per_age_limit() {
    let s = Duration::from_secs;
    assert_eq!(sweep_every(s(30)), s(10));
    assert_eq!(sweep_every(s(1)), s(1));
    assert_eq!(sweep_every(s(600)), s(15));
}
