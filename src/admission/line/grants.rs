//! Per-tick grant records: which places each tick granted and when, so
//! that places not taken within the claim window expire and stop counting
//! as pending.
//!
//! A FIFO tick grants inside one rank range, so its record is two numbers.
//! A lottery tick grants scattered ranks, so its record lists them: memory
//! is bounded by the grants made within one claim window, which the gate
//! bounds by free capacity, never by the length of the line.

use std::collections::VecDeque;

use super::bits::Bits;

/// The ranks one tick granted.
#[derive(Debug)]
enum Granted {
    /// Every granted rank lies in `[lo, hi)`. Other ranks in that range
    /// were granted by older records (a mode switch), which expire first.
    Range { lo: u64, hi: u64 },
    /// Ranks drawn by the lottery.
    List(Vec<u64>),
}

#[derive(Debug)]
struct Record {
    at: u64,
    min_rank: u64,
    ranks: Granted,
}

/// The ring of grant records, oldest first, and the pending count.
#[derive(Debug, Default)]
pub(super) struct Grants {
    ring: VecDeque<Record>,
    pending: u64,
}

impl Grants {
    /// Granted places neither taken nor expired.
    pub(super) fn pending(&self) -> u64 {
        self.pending
    }

    /// Records a FIFO tick that granted `count` ranks within `[lo, hi)`.
    pub(super) fn push_range(&mut self, at: u64, lo: u64, hi: u64, count: u64) {
        if count == 0 {
            return;
        }
        self.pending += count;
        self.ring.push_back(Record {
            at,
            min_rank: lo,
            ranks: Granted::Range { lo, hi },
        });
    }

    /// Records a lottery tick that granted `ranks`.
    pub(super) fn push_list(&mut self, at: u64, ranks: Vec<u64>) {
        let Some(&min_rank) = ranks.iter().min() else {
            return;
        };
        self.pending += ranks.len() as u64;
        self.ring.push_back(Record {
            at,
            min_rank,
            ranks: Granted::List(ranks),
        });
    }

    /// A granted place was taken.
    pub(super) fn taken(&mut self) {
        self.pending = self.pending.saturating_sub(1);
    }

    /// Expires every record at least `claim_window` old at `now`; returns
    /// how many places expired untaken.
    pub(super) fn expire(&mut self, now: u64, claim_window: u64, bits: &mut Bits) -> u64 {
        let mut expired = 0;
        while let Some(front) = self.ring.front() {
            if now.saturating_sub(front.at) < claim_window {
                break;
            }
            let Some(record) = self.ring.pop_front() else {
                break;
            };
            expired += match record.ranks {
                Granted::Range { lo, hi } => bits.expire_range(lo, hi),
                Granted::List(ranks) => {
                    ranks.into_iter().filter(|&r| bits.expire_one(r)).count() as u64
                }
            };
        }
        self.pending = self.pending.saturating_sub(expired);
        debug_assert!(!self.ring.is_empty() || self.pending == 0);
        expired
    }

    /// Lowest rank a live record still refers to.
    pub(super) fn min_rank(&self) -> Option<u64> {
        self.ring.iter().map(|r| r.min_rank).min()
    }

    /// Heap bytes held by the records.
    pub(super) fn memory_bytes(&self) -> usize {
        let lists: usize = self
            .ring
            .iter()
            .map(|r| match &r.ranks {
                Granted::List(v) => v.capacity() * 8,
                Granted::Range { .. } => 0,
            })
            .sum();
        self.ring.capacity() * std::mem::size_of::<Record>() + lists
    }
}

impl Grants {
    /// Writes the records (times in the line's clock).
    pub(super) fn encode(&self, w: &mut super::codec::Writer) {
        w.u64(self.pending);
        w.u64(self.ring.len() as u64);
        for r in &self.ring {
            w.u64(r.at);
            w.u64(r.min_rank);
            match &r.ranks {
                Granted::Range { lo, hi } => {
                    w.u8(0);
                    w.u64(*lo);
                    w.u64(*hi);
                }
                Granted::List(v) => {
                    w.u8(1);
                    w.words(v.len(), v.iter());
                }
            }
        }
    }

    /// Reads what [`Grants::encode`] wrote.
    pub(super) fn decode(
        r: &mut super::codec::Reader<'_>,
    ) -> Result<Grants, super::codec::SnapshotError> {
        let pending = r.u64()?;
        // A record takes at least 17 bytes.
        let n = r.len(17)?;
        let mut ring = VecDeque::with_capacity(n);
        for _ in 0..n {
            let at = r.u64()?;
            let min_rank = r.u64()?;
            let ranks = match r.u8()? {
                0 => Granted::Range {
                    lo: r.u64()?,
                    hi: r.u64()?,
                },
                1 => Granted::List(r.words()?),
                _ => return Err(super::codec::SnapshotError::Inconsistent("grant record")),
            };
            ring.push_back(Record {
                at,
                min_rank,
                ranks,
            });
        }
        Ok(Grants { ring, pending })
    }
}
