//! The claim service: one ledger, one issuer, and the rules between them.
//!
//! `claim(identity)`: reserve in the ledger (durable) -> an identity that
//! already holds a code gets the same code -> a pending claim runs the issuer
//! with its idempotency key -> the code is recorded (durable) and answered.
//!
//! Decisions:
//! - Issuer says **sold out**: the external issuer is the truth. The claim's
//!   unit is released and the ledger marks the event sold out (remaining 0
//!   from then on). For `pool` this happens only past the pool's last line;
//!   for `signed` never (the ledger's stock bounds it first).
//! - Issuer says **not eligible**: kept in the ledger with its reason, the
//!   unit goes back to the stock; the identity's later claims get the same
//!   answer without asking the issuer again.
//! - Issuer says **retry later** (or the ledger cannot record the code): the
//!   claim stays pending and keeps its unit; the next claim by the same
//!   identity, or `recover`, asks again with the same key.
//! - A code is answered only once it is durable in the ledger.
//! - One identity's claims run one at a time (a per-identity async lock), so
//!   a double click never asks the issuer twice at once.
//! - A claim whose future is dropped (client gone) stays pending; it is
//!   finished by the identity's next claim or by `recover`.
//! - With the shared ledger ([`ClaimLedger::Redis`]) the per-identity lock
//!   is per node: two nodes may run one identity's pending claim at once
//!   (a double click spread by the load balancer, or two nodes recovering a
//!   dead node's claim). Both ask the issuer with the same idempotency key
//!   and get the same code; the second `complete` with that code is a
//!   no-op. Nothing is issued twice.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use tokio::sync::OwnedMutexGuard;

use super::{Claim, IssueOutcome, VoucherIssuer};
use crate::store::{
    clip_reason, valid_code, valid_identity, ClaimLedger, PendingClaim, Reservation, StoreError,
};

/// Pending claims finished at once by [`Vouchers::recover`].
const RECOVER_CONCURRENCY: usize = 8;

/// What the HTTP layer knows about the claimant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClaimContext {
    /// The client's address.
    pub client_ip: Option<IpAddr>,
    /// The client's User-Agent.
    pub user_agent: Option<String>,
}

/// The answer to a claim.
#[derive(Debug, Clone)]
pub enum ClaimResult {
    /// The identity's code, durable. `fresh` is false when it was issued by
    /// an earlier claim.
    Issued {
        /// The voucher code.
        code: String,
        /// Whether this claim issued it.
        fresh: bool,
    },
    /// Nothing left.
    SoldOut,
    /// The issuer refuses this identity.
    NotEligible(String),
    /// The issuer could not answer now; the claim is pending and keeps its unit.
    RetryLater(String),
    /// The ledger failed (disk error, invalid identity, closing). Nothing was
    /// handed out; a pending claim stays pending.
    Unavailable(StoreError),
}

impl ClaimResult {
    /// Every label, for creating metric series up front.
    pub const LABELS: [&'static str; 6] = [
        "issued",
        "repeat",
        "sold_out",
        "not_eligible",
        "retry_later",
        "error",
    ];

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            ClaimResult::Issued { fresh: true, .. } => "issued",
            ClaimResult::Issued { fresh: false, .. } => "repeat",
            ClaimResult::SoldOut => "sold_out",
            ClaimResult::NotEligible(_) => "not_eligible",
            ClaimResult::RetryLater(_) => "retry_later",
            ClaimResult::Unavailable(_) => "error",
        }
    }
}

/// Metric hooks, called after every claim. The default does nothing.
pub trait ClaimObserver: Send + Sync {
    /// `result` of a claim; `issuer_time` when the issuer was asked;
    /// `remaining` units left afterwards (0: tell the room it is sold out).
    fn on_claim(&self, result: &ClaimResult, issuer_time: Option<Duration>, remaining: u64) {
        let _ = (result, issuer_time, remaining);
    }
}

struct NoObserver;
impl ClaimObserver for NoObserver {}

/// What [`Vouchers::recover`] did with the pending claims.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Pending claims found.
    pub pending: u64,
    /// Finished with a code.
    pub issued: u64,
    /// The issuer said sold out or not eligible; the unit was released.
    pub released: u64,
    /// Still pending (issuer or ledger unavailable); try again later.
    pub still_pending: u64,
}

/// Claims for one event.
pub struct Vouchers {
    ledger: ClaimLedger,
    issuer: Arc<dyn VoucherIssuer>,
    observer: Arc<dyn ClaimObserver>,
    /// One async lock per identity with a claim in progress; an entry lives
    /// only while someone holds or waits for it.
    busy: Busy,
}

impl std::fmt::Debug for Vouchers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vouchers")
            .field("ledger", &self.ledger)
            .field("issuer", &self.issuer.name())
            .finish_non_exhaustive()
    }
}

impl Vouchers {
    /// Claims recorded in `ledger` (a [`crate::store::Ledger`] or a
    /// [`crate::store::RedisLedger`]), codes from `issuer`.
    pub fn new(ledger: impl Into<ClaimLedger>, issuer: Arc<dyn VoucherIssuer>) -> Vouchers {
        Vouchers {
            ledger: ledger.into(),
            issuer,
            observer: Arc::new(NoObserver),
            busy: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the metric hooks.
    pub fn with_observer(mut self, observer: Arc<dyn ClaimObserver>) -> Vouchers {
        self.observer = observer;
        self
    }

    /// The ledger.
    pub fn ledger(&self) -> &ClaimLedger {
        &self.ledger
    }

    /// The local ledger (tests of the local path).
    #[cfg(test)]
    pub(crate) fn local(&self) -> &crate::store::Ledger {
        self.ledger.local().expect("a local ledger")
    }

    /// Units left; 0 means sold out for anyone without a claim.
    pub fn remaining(&self) -> u64 {
        self.ledger.remaining()
    }

    /// Claims a voucher for `identity`. See the module docs for the rules.
    pub async fn claim(&self, identity: &str, ctx: &ClaimContext) -> ClaimResult {
        let (result, issuer_time) = self.claim_inner(identity, ctx).await;
        self.observer
            .on_claim(&result, issuer_time, self.ledger.remaining());
        result
    }

    async fn claim_inner(
        &self,
        identity: &str,
        ctx: &ClaimContext,
    ) -> (ClaimResult, Option<Duration>) {
        if !valid_identity(identity) {
            // Refused before it reaches the lock map: hostile input stays small.
            return (ClaimResult::Unavailable(StoreError::BadIdentity), None);
        }
        let _turn = Turn::take(&self.busy, identity).await;
        match self.ledger.reserve(identity).await {
            Ok(Reservation::Issued(c)) => (
                ClaimResult::Issued {
                    code: c.code,
                    fresh: false,
                },
                None,
            ),
            Ok(Reservation::Refused(why)) => (ClaimResult::NotEligible(why), None),
            Ok(Reservation::SoldOut) => (ClaimResult::SoldOut, None),
            Ok(Reservation::Pending(p)) => {
                let started = Instant::now();
                let outcome = self.ask_issuer(&p, ctx).await;
                let took = started.elapsed();
                (self.record(&p.identity, outcome).await, Some(took))
            }
            Err(e) => (ClaimResult::Unavailable(e), None),
        }
    }

    async fn ask_issuer(&self, p: &PendingClaim, ctx: &ClaimContext) -> IssueOutcome {
        let claim = Claim {
            event: self.ledger.event().to_owned(),
            identity: p.identity.clone(),
            idempotency_key: p.idempotency_key.clone(),
            seq: p.seq,
            client_ip: ctx.client_ip,
            user_agent: ctx.user_agent.clone(),
        };
        self.issuer.issue(&claim).await
    }

    /// Writes the issuer's answer to the ledger and says what to answer.
    async fn record(&self, identity: &str, outcome: IssueOutcome) -> ClaimResult {
        let written = match outcome {
            IssueOutcome::Issued { code, meta } => {
                if !valid_code(&code) {
                    tracing::error!(
                        issuer = self.issuer.name(),
                        "voucher issuer answered an invalid code"
                    );
                    return ClaimResult::RetryLater("the issuer answered an invalid code".into());
                }
                tracing::debug!(issuer = self.issuer.name(), %meta, "voucher issued");
                self.ledger
                    .complete(identity, &code, self.issuer.name())
                    .await
                    .map(|()| ClaimResult::Issued { code, fresh: true })
            }
            IssueOutcome::SoldOut => {
                tracing::info!(issuer = self.issuer.name(), "voucher issuer is sold out");
                self.ledger
                    .release_sold_out(identity)
                    .await
                    .map(|()| ClaimResult::SoldOut)
            }
            IssueOutcome::NotEligible(reason) => {
                let reason = clip_reason(&reason);
                self.ledger
                    .refuse(identity, &reason)
                    .await
                    .map(|()| ClaimResult::NotEligible(reason))
            }
            IssueOutcome::RetryLater(reason) => Ok(ClaimResult::RetryLater(reason)),
        };
        written.unwrap_or_else(|e| {
            match &e {
                StoreError::NotDurable { .. } => tracing::warn!(error = %e, "voucher recorded on the Redis primary but not on enough replicas in time; the code is not shown, the visitor is told to try again"),
                _ => tracing::error!(error = %e, "voucher ledger could not record the issuer's answer; claim stays pending"),
            }
            ClaimResult::Unavailable(e)
        })
    }

    /// Identities with a claim in progress (for tests: the map must not leak).
    #[cfg(test)]
    pub(crate) fn busy_len(&self) -> usize {
        self.busy.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Finishes the claims left pending (after a restart, or after "retry
    /// later"), with their idempotency keys, a few at a time. A ledger that
    /// cannot list them (Redis unreachable) is logged and nothing is done.
    pub async fn recover(&self) -> RecoveryReport {
        self.recover_older_than(Duration::ZERO)
            .await
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "pending voucher claims not listed; recovery skipped");
                RecoveryReport::default()
            })
    }

    /// [`Self::recover`] for the claims reserved at least `age` ago: with
    /// the shared ledger, those a dead node left behind (younger ones are
    /// probably in progress on a live node; finishing them too would be
    /// safe, only wasteful). The local ledger has no one else and finishes
    /// every pending claim.
    pub async fn recover_older_than(&self, age: Duration) -> Result<RecoveryReport, StoreError> {
        let pending = self.ledger.pending(age).await?;
        let mut report = RecoveryReport {
            pending: pending.len() as u64,
            ..RecoveryReport::default()
        };
        let ctx = ClaimContext::default();
        let mut results = futures_util::stream::iter(pending)
            .map(|p| {
                let ctx = &ctx;
                async move { self.claim(&p.identity, ctx).await }
            })
            .buffer_unordered(RECOVER_CONCURRENCY);
        while let Some(r) = results.next().await {
            match r {
                ClaimResult::Issued { .. } => report.issued += 1,
                ClaimResult::SoldOut | ClaimResult::NotEligible(_) => report.released += 1,
                ClaimResult::RetryLater(_) | ClaimResult::Unavailable(_) => {
                    report.still_pending += 1
                }
            }
        }
        Ok(report)
    }

    /// Re-reads the shared ledger's counters so [`Self::remaining`] shows
    /// every node's claims (a no-op for the local ledger).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        self.ledger.refresh().await
    }
}

/// One identity's lock, and how many turns hold or wait for it.
#[derive(Default)]
struct Slot {
    lock: Arc<tokio::sync::Mutex<()>>,
    users: usize,
}

type Busy = Mutex<HashMap<String, Slot>>;

/// One identity's turn. Counted in the map from before it waits until it is
/// dropped (also when the claim's future is dropped while waiting), so the
/// map holds only identities with a claim in progress.
struct Turn<'a> {
    busy: &'a Busy,
    identity: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Turn<'_> {
    /// Waits for `identity`'s turn.
    async fn take<'a>(busy: &'a Busy, identity: &str) -> Turn<'a> {
        let lock = {
            let mut map = busy.lock().unwrap_or_else(|e| e.into_inner());
            let slot = map.entry(identity.to_owned()).or_default();
            slot.users += 1;
            slot.lock.clone()
        };
        let mut turn = Turn {
            busy,
            identity: identity.to_owned(),
            guard: None,
        };
        turn.guard = Some(lock.lock_owned().await);
        turn
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.guard = None;
        let mut map = self.busy.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = map.get_mut(&self.identity) {
            slot.users -= 1;
            if slot.users == 0 {
                map.remove(&self.identity);
            }
        }
    }
}
