//! Durable and shared state, by what is stored:
//! - [`ledger`]: the voucher ledger, which identity holds which voucher,
//!   "exactly once" across crashes: [`Ledger`] in an fsync'd journal under
//!   `state_dir` (one node, `ledger/local.rs`), [`RedisLedger`] in Redis
//!   (several nodes), [`ClaimLedger`] either;
//! - [`line`]: the waiting line: its files under `state_dir`
//!   ([`line::files`]), the line shared in Redis ([`line::redis`]) and this
//!   node's clock against Redis's ([`line::clock`]);
//! - [`redis_conn`]: the one Redis connection per process (standalone,
//!   Sentinel, Cluster), shared by the ledger, the line and [`redis_talk`]
//!   (announcements and feedback shared by the nodes).

mod crc;
pub mod ledger;
pub mod line;
pub mod redis_conn;
pub mod redis_talk;

pub(crate) use crc::crc32;
#[cfg(test)]
pub(crate) use ledger::tests;
pub use ledger::{
    audit_check, idempotency_key, identity_hash, valid_code, valid_identity, AuditReport,
    ClaimLedger, IssuedClaim, Ledger, PendingClaim, RedisLedger, Reservation, StoreError,
    MAX_CODE_LEN, MAX_IDENTITY_LEN, MAX_REASON_LEN,
};
pub(crate) use ledger::{clip_reason, hex};

// The module paths the integration tests and the simulator name.
pub use ledger::{audit, redis_durable};
pub use line::redis as redis_line;
pub use redis_conn::cluster as redis_cluster;
