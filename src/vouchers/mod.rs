//! Vouchers, exactly once: the issuer plugin trait, the built-in issuers
//! ([`pool`], [`signed`], [`webhook`]) and the claim service ([`Vouchers`])
//! that ties an issuer to the durable ledger in [`crate::store`] (local, or
//! shared by the nodes through Redis, kept up by [`upkeep`]).
//!
//! A claim goes: reserve a unit for the identity in the ledger (durable) ->
//! the issuer mints or fetches the code with the claim's idempotency key ->
//! the code is recorded (durable) -> the code is answered. A crash or a
//! timeout anywhere in between is finished later with the same key, so the
//! same code comes back.

mod base32;
pub mod key;
pub mod pool;
pub mod service;
pub mod setup;
pub mod signed;
pub mod upkeep;
pub mod webhook;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_webhook;

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

pub use crate::store::{audit_check, idempotency_key, identity_hash, AuditReport};
pub use key::{KeyError, VoucherKey};
pub use pool::{PoolError, PoolIssuer};
pub use service::{ClaimContext, ClaimObserver, ClaimResult, RecoveryReport, Vouchers};
pub use signed::{verify_signed, SignedError, SignedInfo, SignedIssuer, VerifyError};
pub use webhook::{WebhookConfig, WebhookError, WebhookIssuer};

/// A boxed, sendable future: what [`VoucherIssuer::issue`] returns, so the
/// trait stays object-safe without a macro crate.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One claim, as an issuer sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// The event's name.
    pub event: String,
    /// Who claims: the pass id, or the site's own user id from a cookie or header.
    pub identity: String,
    /// [`idempotency_key`] of (event, identity): the same on every retry.
    pub idempotency_key: String,
    /// The claim's sequence number in the ledger, from 0, dense and never
    /// reused: a durable choice an issuer can derive its code from.
    pub seq: u64,
    /// The client's address, when the claim came over HTTP.
    pub client_ip: Option<IpAddr>,
    /// The client's User-Agent, when the claim came over HTTP.
    pub user_agent: Option<String>,
}

/// What an issuer answered.
#[derive(Debug, Clone, PartialEq)]
pub enum IssueOutcome {
    /// The code for this claim. Must be the same code every time the issuer
    /// is asked with the same idempotency key.
    Issued {
        /// The voucher code.
        code: String,
        /// Anything else the issuer said (logged, not stored).
        meta: serde_json::Value,
    },
    /// The issuer has nothing left: the event is sold out.
    SoldOut,
    /// The issuer refuses this identity, with a reason (kept in the ledger).
    NotEligible(String),
    /// The issuer could not answer now; the claim stays pending and is
    /// retried with the same idempotency key.
    RetryLater(String),
}

/// An issuer of voucher codes. Implementations must be idempotent per
/// [`Claim::idempotency_key`]: asked twice for one key (after a crash, a
/// timeout, a retry), they answer the same code.
pub trait VoucherIssuer: Send + Sync {
    /// Short name, written in the audit log (`pool`, `signed`, `webhook`).
    fn name(&self) -> &'static str;

    /// Mints or fetches the code for `claim`.
    fn issue<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, IssueOutcome>;

    /// The most codes this issuer can ever hand out, if it knows (a pool's
    /// size), so the stock can be capped to it.
    fn capacity(&self) -> Option<u64> {
        None
    }
}
