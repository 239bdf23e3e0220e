//! The journal writer: one thread that owns the files and makes changes
//! durable in groups.
//!
//! Group commit: the thread takes every job queued while it was busy, checks
//! them against the state, writes their records in one `write`, syncs once
//! (`sync_data`), and only then applies them to memory and answers. Under a
//! burst, 5,000 claims cost a few dozen syncs, not 5,000.
//!
//! On a write or sync error nothing of the batch counts: the journal is cut
//! back to its last good length and synced, every job in the batch gets the
//! error, and memory is left as it was (in-flight reservations are undone).
//! If even the cut fails, the ledger is poisoned and refuses every change
//! until a restart replays the journal: a code is never handed out unless its
//! record is on disk.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write as _};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use super::audit;
use super::journal::{encode, Record};
use super::state::{Entry, State};
use super::{PendingClaim, Reservation, StoreError};

/// Most jobs in one group commit, so one batch's buffer stays bounded.
const MAX_BATCH: usize = 4096;

/// The answer to a change other than a reservation.
pub(crate) type Reply = oneshot::Sender<Result<(), StoreError>>;

/// A change for the writer. Reservations are answered through the waiters of
/// their in-flight entry, so a caller that gives up does not lose the answer
/// for others waiting on the same identity.
pub(crate) enum Job {
    Reserve {
        identity: String,
        key: String,
    },
    Issue {
        identity: String,
        code: String,
        plugin: String,
        reply: Reply,
    },
    Refuse {
        identity: String,
        why: String,
        reply: Reply,
    },
    SoldOut {
        identity: String,
        reply: Reply,
    },
}

/// What the ledger handle and the writer thread share.
pub(crate) struct Shared {
    pub state: Mutex<State>,
    pub event: String,
    /// Group commits that reached the disk.
    pub syncs: AtomicU64,
    /// Test hook: the next this many batch writes fail half-way, as on a full disk.
    #[cfg(test)]
    pub fail_writes: std::sync::atomic::AtomicU32,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere must not take the ledger down with it: the state
        // is only changed in small steps that keep it consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An open, append-only file and how much of it is good.
pub(crate) struct Appender {
    pub file: File,
    pub path: PathBuf,
    pub len: u64,
}

impl Appender {
    /// Appends and syncs `buf`; on failure cuts the file back. `Err(true)` if
    /// even that failed (the file's end is unknown).
    fn append(&mut self, buf: &[u8], fault: bool) -> Result<(), (io::Error, bool)> {
        let res = if fault {
            let _ = self.file.write_all(&buf[..buf.len() / 2]);
            Err(io::Error::from_raw_os_error(libc::ENOSPC))
        } else {
            self.file
                .write_all(buf)
                .and_then(|()| self.file.sync_data())
        };
        match res {
            Ok(()) => {
                self.len += buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                let undone = self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data());
                Err((e, undone.is_err()))
            }
        }
    }
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub rx: mpsc::Receiver<Job>,
    pub journal: Appender,
    /// `None` after an audit write failed: the journal stays the truth and
    /// the audit log is repaired from it at the next open.
    pub audit: Option<Appender>,
}

/// A checked record and whom to answer.
struct Accepted {
    rec: Record,
    reply: Option<Reply>,
}

impl Writer {
    /// Runs until the ledger handle is dropped.
    pub fn run(mut self) {
        while let Ok(first) = self.rx.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match self.rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            self.commit(jobs);
        }
    }

    fn commit(&mut self, jobs: Vec<Job>) {
        let mut batch = Vec::with_capacity(jobs.len());
        let mut buf = Vec::new();
        let poisoned = {
            let st = self.shared.lock();
            let mut check = Check {
                st: &st,
                touched: HashSet::new(),
                codes: HashSet::new(),
                next_seq: st.next_seq,
            };
            for job in jobs {
                match check.job(job) {
                    Ok(acc) => {
                        encode(&acc.rec, &mut buf);
                        batch.push(acc);
                    }
                    Err((e, reply)) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            st.poisoned
        };
        if batch.is_empty() {
            return;
        }
        if poisoned {
            return self.fail(batch, StoreError::Poisoned);
        }
        #[cfg(test)]
        let fault = self
            .shared
            .fail_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        #[cfg(not(test))]
        let fault = false;
        if let Err((e, lost)) = self.journal.append(&buf, fault) {
            tracing::error!(path = %self.journal.path.display(), error = %e, "voucher ledger write failed");
            if lost {
                tracing::error!("voucher ledger could not undo the failed write; refusing changes until restart");
                self.shared.lock().poisoned = true;
            }
            return self.fail(batch, StoreError::Write(Arc::new(e)));
        }
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        self.write_audit(&batch);
        self.apply(batch);
    }

    /// Appends the audit lines of a durable batch. A failure here does not
    /// fail the claims: the journal has them, and the next open repairs the
    /// audit log from it.
    fn write_audit(&mut self, batch: &[Accepted]) {
        let Some(audit) = &mut self.audit else {
            return;
        };
        let mut buf = Vec::new();
        for acc in batch {
            audit::encode_issue(&self.shared.event, &acc.rec, &mut buf);
        }
        if buf.is_empty() {
            return;
        }
        if let Err((e, _)) = audit.append(&buf, false) {
            tracing::error!(path = %audit.path.display(), error = %e,
                "voucher audit log write failed; it will be repaired from the journal at the next start");
            self.audit = None;
        }
    }

    fn apply(&self, batch: Vec<Accepted>) {
        let mut st = self.shared.lock();
        for Accepted { rec, reply } in batch {
            match st.apply(&rec) {
                Ok(waiters) => {
                    if let Record::Reserve { seq, id, key } = rec {
                        let r = Reservation::Pending(PendingClaim {
                            seq,
                            identity: id,
                            idempotency_key: key,
                        });
                        for w in waiters {
                            let _ = w.send(Ok(r.clone()));
                        }
                    }
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(()));
                    }
                }
                Err(reason) => {
                    // Checked before writing, so this is a bug: memory no
                    // longer matches the journal, stop changing either.
                    tracing::error!(%reason, "voucher ledger state does not match its journal");
                    st.poisoned = true;
                    if let Some(reply) = reply {
                        let _ = reply.send(Err(StoreError::Poisoned));
                    }
                }
            }
        }
    }

    /// Answers every job of a batch that did not reach the disk, undoing
    /// in-flight reservations.
    fn fail(&self, batch: Vec<Accepted>, err: StoreError) {
        let mut st = self.shared.lock();
        for Accepted { rec, reply } in batch {
            if let Record::Reserve { id, .. } = &rec {
                if let Some(Entry::InFlight { waiters }) = st.claims.remove(id) {
                    st.taken -= 1;
                    for w in waiters {
                        let _ = w.send(Err(err.clone()));
                    }
                }
            }
            if let Some(reply) = reply {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// Checks jobs against the state and the batch so far.
struct Check<'a> {
    st: &'a State,
    /// Identities already changed in this batch.
    touched: HashSet<String>,
    /// Codes issued in this batch.
    codes: HashSet<String>,
    next_seq: u64,
}

impl Check<'_> {
    fn job(&mut self, job: Job) -> Result<Accepted, (StoreError, Reply)> {
        let (rec, reply) = match job {
            Job::Reserve { identity, key } => {
                // Only `reserve` adds in-flight entries, once per identity,
                // and only this thread removes them.
                let seq = self.next_seq;
                self.next_seq += 1;
                self.touched.insert(identity.clone());
                let rec = Record::Reserve {
                    seq,
                    id: identity,
                    key,
                };
                return Ok(Accepted { rec, reply: None });
            }
            Job::Issue {
                identity,
                code,
                plugin,
                reply,
            } => {
                let seq = match self.pending_seq(&identity, Some(&code)) {
                    Ok(seq) => seq,
                    Err(e) => return Err((e, reply)),
                };
                if self.st.codes.contains(&code) || !self.codes.insert(code.clone()) {
                    return Err((StoreError::DuplicateCode, reply));
                }
                let at = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                let rec = Record::Issue {
                    seq,
                    id: identity,
                    code,
                    plugin,
                    at,
                };
                (rec, reply)
            }
            Job::Refuse {
                identity,
                why,
                reply,
            } => {
                if let Err(e) = self.pending_seq(&identity, None) {
                    return Err((e, reply));
                }
                (Record::Refuse { id: identity, why }, reply)
            }
            Job::SoldOut { identity, reply } => {
                if let Err(e) = self.pending_seq(&identity, None) {
                    return Err((e, reply));
                }
                (Record::SoldOut { id: identity }, reply)
            }
        };
        Ok(Accepted {
            rec,
            reply: Some(reply),
        })
    }

    /// The sequence number of `identity`'s pending claim, if it has one and
    /// nothing else in this batch changes it.
    fn pending_seq(&mut self, identity: &str, code: Option<&str>) -> Result<u64, StoreError> {
        if !self.touched.insert(identity.to_owned()) {
            return Err(StoreError::Busy);
        }
        match self.st.claims.get(identity) {
            Some(Entry::Pending { seq, .. }) => Ok(*seq),
            Some(Entry::Issued { code: c, .. }) if code.is_some_and(|code| code != c) => {
                Err(StoreError::Conflict)
            }
            _ => Err(StoreError::NotPending),
        }
    }
}
