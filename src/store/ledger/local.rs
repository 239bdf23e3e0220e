//! The local claim ledger: "exactly once" voucher claims in one process,
//! durable in an append-only journal under `state_dir`.
//!
//! Invariants:
//! - a reservation or a code is acknowledged only after its journal record is
//!   synced (`sync_data`); memory changes only after that, so a failed write
//!   leaves nothing behind that was not on disk;
//! - one claim per identity; reserved + issued never exceed the stock;
//! - no code is recorded for two identities;
//! - sequence numbers are dense and never reused (the pool plugin's index).
//!
//! Replay at open rebuilds memory; a torn last record (a crash during a
//! write) is cut, damage before valid records stops the open. Memory holds
//! one entry per identity that reserved or was refused: bounded by the stock
//! plus the refusals; a claim for a sold-out event costs nothing.

use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;

use tokio::sync::oneshot;

use super::journal::{self, encode, Record, VERSION};
use super::state::Entry;
use super::writer::{Appender, Job, Shared, Writer};
use super::{
    audit, clip_reason, idempotency_key, valid_code, valid_identity, PendingClaim, Reservation,
    StoreError,
};

/// The journal, in the ledger directory.
pub const JOURNAL_FILE: &str = "vouchers.journal";
/// The audit log, in the ledger directory.
pub const AUDIT_FILE: &str = "vouchers-audit.jsonl";
/// The lock file, in the ledger directory.
pub const LOCK_FILE: &str = "vouchers.lock";

/// The claim ledger of one event. Cheap to share behind an `Arc`; every
/// method takes `&self`.
pub struct Ledger {
    shared: Arc<Shared>,
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<thread::JoinHandle<()>>,
    /// Holds the `flock` for as long as the ledger is open.
    _lock: File,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("event", &self.shared.event)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (or creates) the ledger of `event` in `dir` with `stock` units.
    /// Replays the journal, cuts a torn last record, records a changed stock,
    /// repairs the audit log, and starts the writer thread. Blocking I/O:
    /// call it at start-up (or from `spawn_blocking`).
    pub fn open(dir: &Path, event: &str, stock: u64) -> Result<Ledger, StoreError> {
        fs::create_dir_all(dir).map_err(|e| StoreError::io(dir, e))?;
        let lock = lock_dir(dir)?;
        let path = dir.join(JOURNAL_FILE);
        let io = |e| StoreError::io(&path, e);
        let (mut file, bytes) = super::open_append(&path)?;
        let mut rep = journal::replay(&path, &bytes)?;
        drop(bytes);
        if let Some(found) = &rep.event {
            if found != event {
                return Err(StoreError::WrongEvent {
                    expected: event.to_owned(),
                    found: found.clone(),
                });
            }
        }
        if let Some(line) = rep.torn_line {
            tracing::warn!(path = %path.display(), line, "voucher journal ended in a torn record; cut");
            file.set_len(rep.good_len).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let mut head = Vec::new();
        let new = rep.event.is_none();
        if new {
            let v = VERSION;
            let event = event.to_owned();
            encode(&Record::Open { event, v }, &mut head);
        }
        if !rep.stock_recorded || rep.state.stock != stock {
            encode(&Record::Stock { n: stock }, &mut head);
            rep.state.stock = stock;
        }
        if !head.is_empty() {
            file.write_all(&head).map_err(io)?;
            file.sync_data().map_err(io)?;
        }
        let audit = audit::open_and_repair(dir, event, &rep.issues)?;
        if new {
            // The new files' names must be durable too, not just their bytes.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::io(dir, e))?;
        }
        let journal = Appender {
            file,
            path: path.clone(),
            len: rep.good_len + head.len() as u64,
        };

        let shared = Arc::new(Shared {
            state: Mutex::new(rep.state),
            event: event.to_owned(),
            syncs: AtomicU64::new(0),
            #[cfg(test)]
            fail_writes: std::sync::atomic::AtomicU32::new(0),
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer {
            shared: shared.clone(),
            rx,
            journal,
            audit: Some(audit),
        };
        let thread = thread::Builder::new()
            .name("usher-ledger".into())
            .spawn(move || writer.run())
            .map_err(|e| StoreError::io(&path, e))?;
        Ok(Ledger {
            shared,
            tx: Some(tx),
            thread: Some(thread),
            _lock: lock,
        })
    }

    /// The claim of `identity`: the one it already has (issued, pending or
    /// refused), else a new pending one taken from the stock and durable
    /// before this returns, else [`Reservation::SoldOut`]. Concurrent calls
    /// for one identity share one reservation.
    pub async fn reserve(&self, identity: &str) -> Result<Reservation, StoreError> {
        if !valid_identity(identity) {
            return Err(StoreError::BadIdentity);
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.shared.lock();
            if let Some(Entry::InFlight { waiters }) = st.claims.get_mut(identity) {
                waiters.push(tx);
            } else if let Some(found) = st.durable(identity) {
                return Ok(found);
            } else if st.poisoned {
                return Err(StoreError::Poisoned);
            } else if st.remaining() == 0 {
                return Ok(Reservation::SoldOut);
            } else {
                let job = Job::Reserve {
                    identity: identity.to_owned(),
                    key: idempotency_key(&self.shared.event, identity),
                };
                if !self.send(job) {
                    return Err(StoreError::Closed);
                }
                st.taken += 1;
                let waiters = vec![tx];
                st.claims
                    .insert(identity.to_owned(), Entry::InFlight { waiters });
            }
        }
        rx.await.unwrap_or(Err(StoreError::Closed))
    }

    /// Records `code` as issued to `identity`'s pending claim, by `plugin`,
    /// durably, and appends it to the audit log. Completing again with the
    /// same code is a no-op.
    pub async fn complete(
        &self,
        identity: &str,
        code: &str,
        plugin: &str,
    ) -> Result<(), StoreError> {
        if !valid_code(code) {
            return Err(StoreError::BadCode);
        }
        let same_code = |ledger: &Ledger| match ledger.shared.lock().durable(identity) {
            Some(Reservation::Issued(c)) if c.code == code => Some(Ok(())),
            Some(Reservation::Issued(_)) => Some(Err(StoreError::Conflict)),
            _ => None,
        };
        if let Some(done) = same_code(self) {
            return done;
        }
        let res = self
            .call(|reply| Job::Issue {
                identity: identity.to_owned(),
                code: code.to_owned(),
                plugin: plugin.to_owned(),
                reply,
            })
            .await;
        match res {
            // Completed by a concurrent call in an earlier batch.
            Err(StoreError::NotPending) => same_code(self).unwrap_or(res),
            res => res,
        }
    }

    /// Records that the issuer refused `identity` (kept: later claims are
    /// answered from the ledger), and gives its unit back to the stock.
    pub async fn refuse(&self, identity: &str, reason: &str) -> Result<(), StoreError> {
        let why = clip_reason(reason);
        self.call(|reply| Job::Refuse {
            identity: identity.to_owned(),
            why,
            reply,
        })
        .await
    }

    /// Records that the issuer ran out while `identity` was pending: its
    /// unit is released (the identity may claim again, and will hear "sold
    /// out") and the event is sold out from now on.
    pub async fn release_sold_out(&self, identity: &str) -> Result<(), StoreError> {
        self.call(|reply| Job::SoldOut {
            identity: identity.to_owned(),
            reply,
        })
        .await
    }

    /// Durable pending claims, oldest first: after a restart, the caller
    /// runs the plugin again for each, with the same idempotency key.
    pub fn pending(&self) -> Vec<PendingClaim> {
        let st = self.shared.lock();
        let mut out: Vec<PendingClaim> = st
            .claims
            .iter()
            .filter_map(|(id, e)| match e {
                Entry::Pending { seq, key } => Some(PendingClaim {
                    seq: *seq,
                    identity: id.clone(),
                    idempotency_key: key.clone(),
                }),
                _ => None,
            })
            .collect();
        out.sort_unstable_by_key(|c| c.seq);
        out
    }

    /// The durable claim of `identity`, without reserving anything.
    pub fn lookup(&self, identity: &str) -> Option<Reservation> {
        self.shared.lock().durable(identity)
    }

    /// Units left to reserve (0 once the issuer said it ran out). Pending
    /// claims count as taken: a claim that fails with "retry later" keeps
    /// its unit.
    pub fn remaining(&self) -> u64 {
        self.shared.lock().remaining()
    }

    /// Codes issued so far.
    pub fn issued_count(&self) -> u64 {
        self.shared.lock().issued
    }

    /// The stock this ledger was opened with.
    pub fn stock(&self) -> u64 {
        self.shared.lock().stock
    }

    /// The event this ledger belongs to.
    pub fn event(&self) -> &str {
        &self.shared.event
    }

    /// Group commits (journal syncs) since open; for metrics and tests.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Test hook: the next `n` batch writes fail half-way with ENOSPC.
    #[cfg(test)]
    pub(crate) fn fail_next_writes(&self, n: u32) {
        self.shared.fail_writes.store(n, Ordering::SeqCst);
    }

    fn send(&self, job: Job) -> bool {
        self.tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }

    async fn call(&self, job: impl FnOnce(super::writer::Reply) -> Job) -> Result<(), StoreError> {
        let (tx, rx) = oneshot::channel();
        if !self.send(job(tx)) {
            return Err(StoreError::Closed);
        }
        rx.await.unwrap_or(Err(StoreError::Closed))
    }
}

impl Drop for Ledger {
    /// Lets the writer finish what is queued, then waits for it, so the
    /// directory lock is released only once the files are closed.
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Takes the directory's lock file with `flock`, without waiting.
fn lock_dir(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| StoreError::io(&path, e))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(StoreError::Locked { path });
        }
        return Err(StoreError::io(&path, e));
    }
    Ok(file)
}
