//! The claim ledger the claim service uses: the local journal ([`Ledger`],
//! one node) or the shared one in Redis ([`RedisLedger`], several nodes).
//!
//! An enum, not a trait object: there are exactly two ledgers, both in this
//! crate; their steps are async and some readers are sync, which an enum
//! serves with plain `async fn`s (no boxed future per call, no object-safety
//! contortions); and a third backend would be a compile error at every
//! `match`, not a silent default. A trait would pay for itself only with
//! ledgers outside the crate or test doubles, and the tests use the real
//! ledgers.

use std::time::Duration;

use super::{Ledger, PendingClaim, RedisLedger, Reservation, StoreError};

/// Either claim ledger; same operations, same rules.
#[derive(Debug)]
pub enum ClaimLedger {
    /// The fsync'd journal under `state_dir` (one node).
    Local(Ledger),
    /// The ledger in Redis, shared by the nodes.
    Redis(RedisLedger),
}

impl From<Ledger> for ClaimLedger {
    fn from(l: Ledger) -> ClaimLedger {
        ClaimLedger::Local(l)
    }
}

impl From<RedisLedger> for ClaimLedger {
    fn from(l: RedisLedger) -> ClaimLedger {
        ClaimLedger::Redis(l)
    }
}

impl ClaimLedger {
    /// See [`Ledger::reserve`].
    pub async fn reserve(&self, identity: &str) -> Result<Reservation, StoreError> {
        match self {
            ClaimLedger::Local(l) => l.reserve(identity).await,
            ClaimLedger::Redis(r) => r.reserve(identity).await,
        }
    }

    /// See [`Ledger::complete`].
    pub async fn complete(
        &self,
        identity: &str,
        code: &str,
        plugin: &str,
    ) -> Result<(), StoreError> {
        match self {
            ClaimLedger::Local(l) => l.complete(identity, code, plugin).await,
            ClaimLedger::Redis(r) => r.complete(identity, code, plugin).await,
        }
    }

    /// See [`Ledger::refuse`].
    pub async fn refuse(&self, identity: &str, reason: &str) -> Result<(), StoreError> {
        match self {
            ClaimLedger::Local(l) => l.refuse(identity, reason).await,
            ClaimLedger::Redis(r) => r.refuse(identity, reason).await,
        }
    }

    /// See [`Ledger::release_sold_out`].
    pub async fn release_sold_out(&self, identity: &str) -> Result<(), StoreError> {
        match self {
            ClaimLedger::Local(l) => l.release_sold_out(identity).await,
            ClaimLedger::Redis(r) => r.release_sold_out(identity).await,
        }
    }

    /// Pending claims, oldest first. The local ledger has all of them (no
    /// other process can be working on one); the shared one only those
    /// reserved at least `older_than` ago (younger ones may be in progress
    /// on a live node).
    pub async fn pending(&self, older_than: Duration) -> Result<Vec<PendingClaim>, StoreError> {
        match self {
            ClaimLedger::Local(l) => Ok(l.pending()),
            ClaimLedger::Redis(r) => r.pending(older_than).await,
        }
    }

    /// The recorded claim of `identity`, without reserving anything.
    pub async fn lookup(&self, identity: &str) -> Result<Option<Reservation>, StoreError> {
        match self {
            ClaimLedger::Local(l) => Ok(l.lookup(identity)),
            ClaimLedger::Redis(r) => r.lookup(identity).await,
        }
    }

    /// Re-reads the shared counters (nothing to do locally: the local
    /// ledger's memory is the truth).
    pub async fn refresh(&self) -> Result<(), StoreError> {
        match self {
            ClaimLedger::Local(_) => Ok(()),
            ClaimLedger::Redis(r) => r.refresh().await,
        }
    }

    /// Units left (for the shared ledger, as of its latest answer or refresh).
    pub fn remaining(&self) -> u64 {
        match self {
            ClaimLedger::Local(l) => l.remaining(),
            ClaimLedger::Redis(r) => r.remaining(),
        }
    }

    /// Codes issued so far.
    pub fn issued_count(&self) -> u64 {
        match self {
            ClaimLedger::Local(l) => l.issued_count(),
            ClaimLedger::Redis(r) => r.issued_count(),
        }
    }

    /// The stock.
    pub fn stock(&self) -> u64 {
        match self {
            ClaimLedger::Local(l) => l.stock(),
            ClaimLedger::Redis(r) => r.stock(),
        }
    }

    /// The event.
    pub fn event(&self) -> &str {
        match self {
            ClaimLedger::Local(l) => l.event(),
            ClaimLedger::Redis(r) => r.event(),
        }
    }

    /// Whether other nodes share this ledger.
    pub fn is_shared(&self) -> bool {
        matches!(self, ClaimLedger::Redis(_))
    }

    /// The local ledger, if that is what this is.
    pub fn local(&self) -> Option<&Ledger> {
        match self {
            ClaimLedger::Local(l) => Some(l),
            ClaimLedger::Redis(_) => None,
        }
    }

    /// The shared ledger, if that is what this is.
    pub fn redis(&self) -> Option<&RedisLedger> {
        match self {
            ClaimLedger::Local(_) => None,
            ClaimLedger::Redis(r) => Some(r),
        }
    }
}
