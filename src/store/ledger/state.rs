//! The ledger's memory: claims by identity and the counters, rebuilt from the
//! journal at open and changed afterwards only by records already on disk
//! (plus the in-flight marks of reservations on their way there).

use std::collections::{HashMap, HashSet};

use tokio::sync::oneshot;

use super::journal::Record;
use super::{IssuedClaim, PendingClaim, Reservation, StoreError};

/// Who waits for an in-flight reservation to become durable.
pub(crate) type Waiter = oneshot::Sender<Result<Reservation, StoreError>>;

/// One identity's claim.
pub(crate) enum Entry {
    /// Reserved in memory, record not yet synced; everyone asking waits.
    InFlight { waiters: Vec<Waiter> },
    /// Reserved and durable; the code is not known yet.
    Pending { seq: u64, key: String },
    /// Issued and durable.
    Issued { seq: u64, key: String, code: String },
    /// The issuer refused this identity (kept, so it is not asked again).
    Refused { why: String },
}

/// Claims and counters.
pub(crate) struct State {
    pub claims: HashMap<String, Entry>,
    /// Every code issued, so no code goes to two identities.
    pub codes: HashSet<String>,
    /// Sequence number of the next reservation.
    pub next_seq: u64,
    /// Units out of the stock: in flight, pending and issued.
    pub taken: u64,
    pub issued: u64,
    /// The issuer said it ran out: nothing is left, whatever `stock` says.
    pub exhausted: bool,
    pub stock: u64,
    /// A write failed and could not be undone.
    pub poisoned: bool,
}

impl State {
    pub fn new(stock: u64) -> State {
        State {
            claims: HashMap::new(),
            codes: HashSet::new(),
            next_seq: 0,
            taken: 0,
            issued: 0,
            exhausted: false,
            stock,
            poisoned: false,
        }
    }

    /// Units still free to reserve.
    pub fn remaining(&self) -> u64 {
        if self.exhausted {
            0
        } else {
            self.stock.saturating_sub(self.taken)
        }
    }

    /// The durable claim of `identity`, if any (not in-flight ones).
    pub fn durable(&self, identity: &str) -> Option<Reservation> {
        match self.claims.get(identity)? {
            Entry::InFlight { .. } => None,
            Entry::Pending { seq, key } => Some(Reservation::Pending(PendingClaim {
                seq: *seq,
                identity: identity.to_owned(),
                idempotency_key: key.clone(),
            })),
            Entry::Issued { seq, key, code } => Some(Reservation::Issued(IssuedClaim {
                seq: *seq,
                code: code.clone(),
                idempotency_key: key.clone(),
            })),
            Entry::Refused { why } => Some(Reservation::Refused(why.clone())),
        }
    }

    /// Applies a durable record. Returns the waiters of a reservation that
    /// was in flight (to answer them), or why the record does not fit (a
    /// damaged journal at replay; a bug in the writer otherwise).
    pub fn apply(&mut self, rec: &Record) -> Result<Vec<Waiter>, String> {
        match rec {
            Record::Open { .. } => return Err("open record after the first line".into()),
            Record::Stock { n } => self.stock = *n,
            Record::Reserve { seq, id, key } => {
                if *seq != self.next_seq {
                    return Err(format!(
                        "reservation {seq} where {} was next",
                        self.next_seq
                    ));
                }
                let pending = Entry::Pending {
                    seq: *seq,
                    key: key.clone(),
                };
                let waiters = match self.claims.insert(id.clone(), pending) {
                    Some(Entry::InFlight { waiters }) => waiters,
                    None => {
                        self.taken += 1;
                        Vec::new()
                    }
                    Some(_) => {
                        return Err(format!("reservation {seq} for an identity with a claim"))
                    }
                };
                self.next_seq += 1;
                return Ok(waiters);
            }
            Record::Issue { seq, id, code, .. } => {
                let Some(entry) = self.claims.get_mut(id) else {
                    return Err(format!("issue {seq} without reservation"));
                };
                let Entry::Pending { seq: s, key } = entry else {
                    return Err(format!("issue {seq} for a claim that is not pending"));
                };
                if s != seq {
                    return Err(format!("issue {seq} for reservation {s}"));
                }
                if !self.codes.insert(code.clone()) {
                    return Err(format!("issue {seq}: code issued twice"));
                }
                *entry = Entry::Issued {
                    seq: *seq,
                    key: std::mem::take(key),
                    code: code.clone(),
                };
                self.issued += 1;
            }
            Record::Refuse { id, why } => {
                self.take_pending(id)?;
                self.claims
                    .insert(id.clone(), Entry::Refused { why: why.clone() });
            }
            Record::SoldOut { id } => {
                self.take_pending(id)?;
                self.exhausted = true;
            }
        }
        Ok(Vec::new())
    }

    /// Removes `id`'s pending claim and gives its unit back.
    fn take_pending(&mut self, id: &str) -> Result<(), String> {
        if !matches!(self.claims.get(id), Some(Entry::Pending { .. })) {
            return Err("release of a claim that is not pending".into());
        }
        self.claims.remove(id);
        self.taken -= 1;
        Ok(())
    }
}
