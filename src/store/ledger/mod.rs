//! The voucher claim ledger: which identity
//! holds which voucher, kept "exactly once" across crashes. [`Ledger`] keeps
//! it in an fsync'd journal under `state_dir` (one node), plus the audit log
//! beside it; [`RedisLedger`] keeps it in Redis, shared by several nodes
//! (see docs/STATE.md); [`ClaimLedger`] is either.
//!
//! Files in the ledger directory (one directory per event):
//! - `vouchers.journal`: the truth. Append-only, one record per line,
//!   `CRC32HEX JSON\n`; replayed at open. See [`local`] for the format.
//! - `vouchers-audit.jsonl`: one JSON line per voucher issued (time, event,
//!   sequence, SHA-256 of the identity, code, plugin). Derived from the
//!   journal; repaired from it at open if a crash cut it short.
//! - `vouchers.lock`: held with `flock` while a process has the ledger open.

pub mod audit;
pub mod claims;
mod journal;
pub mod local;
pub mod redis_claims;
pub mod redis_durable;
mod state;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_crash;
mod writer;

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest as _, Sha256};

pub use audit::{audit_check, AuditReport};
pub use claims::ClaimLedger;
pub use local::Ledger;
pub use redis_claims::RedisLedger;

/// Longest identity accepted, in bytes. Identities come from a pass id or a
/// cookie/header the origin sets; the bound keeps memory and journal lines
/// small whatever a client sends.
pub const MAX_IDENTITY_LEN: usize = 256;

/// Longest voucher code accepted, in bytes (codes from a pool file or a
/// webhook answer).
pub const MAX_CODE_LEN: usize = 256;

/// Longest refusal reason kept, in bytes; longer ones are cut.
pub const MAX_REASON_LEN: usize = 200;

/// Why the ledger could not do what was asked. Cheap to clone: one failed
/// group commit answers every claim that was in it.
#[derive(thiserror::Error, Debug, Clone)]
pub enum StoreError {
    /// A file of the ledger could not be opened, read or written at open.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: Arc<io::Error>,
    },
    /// Another process (or another `Ledger` in this one) has the directory open.
    #[error("{path} is locked by another usher process")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The journal has a damaged record that is not the last one (a torn
    /// last record is repaired at open; damage in the middle is not guessed at).
    #[error("{path} line {line}: {reason}")]
    Corrupt {
        /// The journal.
        path: PathBuf,
        /// 1-based line number.
        line: u64,
        /// What is wrong.
        reason: String,
    },
    /// The directory holds the ledger of another event.
    #[error("the ledger belongs to event {found:?}, not {expected:?}")]
    WrongEvent {
        /// The event asked for.
        expected: String,
        /// The event in the journal.
        found: String,
    },
    /// Empty, or longer than [`MAX_IDENTITY_LEN`].
    #[error("identity must be 1 to {MAX_IDENTITY_LEN} bytes")]
    BadIdentity,
    /// Empty, longer than [`MAX_CODE_LEN`], or with control characters.
    #[error("voucher code must be 1 to {MAX_CODE_LEN} bytes without control characters")]
    BadCode,
    /// `complete`/`refuse`/`release_sold_out` for an identity with no pending claim.
    #[error("no pending claim for this identity")]
    NotPending,
    /// The identity already holds another code.
    #[error("the identity already holds a different code")]
    Conflict,
    /// The code was already issued to another identity (an edited pool file,
    /// or an external issuer answering the same code twice).
    #[error("the code was already issued to another identity")]
    DuplicateCode,
    /// Two updates of the same claim raced into one group commit.
    #[error("another update of this claim is in progress")]
    Busy,
    /// Writing or syncing the journal failed; nothing of the batch counts.
    #[error("ledger write failed: {0}")]
    Write(Arc<io::Error>),
    /// A write failed and could not be undone: the ledger refuses every
    /// change until the process restarts and replays the journal.
    #[error("the ledger stopped after a write error it could not undo; restart to replay it")]
    Poisoned,
    /// The writer thread is gone (the ledger is shutting down).
    #[error("the ledger is closed")]
    Closed,
    /// The shared ledger in Redis did not answer (down, paused, timed out)
    /// or answered something unexpected. Nothing is guessed: the claim
    /// fails, and the same identity asking again finds whatever Redis
    /// recorded.
    #[error("the voucher ledger in Redis is unreachable: {0}")]
    Unreachable(String),
    /// The claim was recorded on the Redis primary but fewer replicas than
    /// `store.min_replicas_acked` acknowledged it in time: it may or may not
    /// survive a failover, so its code is not shown; the same identity
    /// asking again gets the same code once it is on enough replicas.
    #[error("the claim is on {acked} of {wanted} replicas: not shown, try again")]
    NotDurable {
        /// Replicas that acknowledged it.
        acked: u32,
        /// Replicas asked for.
        wanted: u32,
    },
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: io::Error) -> StoreError {
        StoreError::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// A short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            StoreError::Io { .. } => "io",
            StoreError::Locked { .. } => "locked",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::WrongEvent { .. } => "wrong_event",
            StoreError::BadIdentity => "bad_identity",
            StoreError::BadCode => "bad_code",
            StoreError::NotPending => "not_pending",
            StoreError::Conflict => "conflict",
            StoreError::DuplicateCode => "duplicate_code",
            StoreError::Busy => "busy",
            StoreError::Write(_) => "write",
            StoreError::Poisoned => "poisoned",
            StoreError::Closed => "closed",
            StoreError::Unreachable(_) => "unreachable",
            StoreError::NotDurable { .. } => "not_durable",
        }
    }
}

/// What [`Ledger::reserve`] found or took for an identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The identity already holds this voucher: hand out the same code again.
    Issued(IssuedClaim),
    /// A unit of stock is reserved for the identity and durable; the plugin
    /// must now mint or fetch its code with the claim's idempotency key.
    Pending(PendingClaim),
    /// The issuer refused this identity earlier; the reason is kept.
    Refused(String),
    /// No stock left (or the external issuer said it ran out).
    SoldOut,
}

/// A reserved claim whose code is not known yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingClaim {
    /// Order of reservation, from 0, never reused; the pool plugin's index.
    pub seq: u64,
    /// Who claimed.
    pub identity: String,
    /// [`idempotency_key`] of (event, identity).
    pub idempotency_key: String,
}

/// A claim with its code, durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedClaim {
    /// Order of reservation.
    pub seq: u64,
    /// The voucher code.
    pub code: String,
    /// [`idempotency_key`] of (event, identity).
    pub idempotency_key: String,
}

/// The idempotency key of a claim: hex SHA-256 of a domain tag, the event and
/// the identity. The same pair always gives the same key, so an issuer asked
/// again after a crash or a timeout answers with the same code.
pub fn idempotency_key(event: &str, identity: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"usher-voucher-claim-v1\0");
    h.update(event.as_bytes());
    h.update([0u8]);
    h.update(identity.as_bytes());
    hex(&h.finalize())
}

/// Hex SHA-256 of an identity, as written in the audit log and sent to webhooks.
pub fn identity_hash(identity: &str) -> String {
    hex(&Sha256::digest(identity.as_bytes()))
}

/// Lower-case hex.
/// Opens (creating if needed) an append-only file and reads what it holds,
/// for replay at start: the journal and the audit log open the same way.
pub(crate) fn open_append(path: &std::path::Path) -> Result<(std::fs::File, Vec<u8>), StoreError> {
    use std::io::Read as _;
    let io = |e| StoreError::io(path, e);
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    Ok((file, bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Whether `code` may be stored: see [`StoreError::BadCode`].
pub fn valid_code(code: &str) -> bool {
    !code.is_empty() && code.len() <= MAX_CODE_LEN && !code.chars().any(char::is_control)
}

/// Whether `identity` may be stored: see [`StoreError::BadIdentity`].
pub fn valid_identity(identity: &str) -> bool {
    !identity.is_empty() && identity.len() <= MAX_IDENTITY_LEN
}

/// `reason` cut to [`MAX_REASON_LEN`] bytes on a character boundary, without
/// control characters.
pub(crate) fn clip_reason(reason: &str) -> String {
    let mut out = String::new();
    for c in reason.chars().filter(|c| !c.is_control()) {
        if out.len() + c.len_utf8() > MAX_REASON_LEN {
            break;
        }
        out.push(c);
    }
    out
}
