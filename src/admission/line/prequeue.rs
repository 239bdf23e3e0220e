//! The pre-queue: tickets issued before the event opens are shuffled once,
//! at opening, so arriving a millisecond after the page went live gives no
//! advantage.
//!
//! The shuffle is reproducible for the audit log: ticket `n` (1-based)
//! gets rank `v[n-1]`, where `v` starts as `[1, 2, ..., P]` and is shuffled
//! by Fisher-Yates from the last index down, swapping index `i` with
//! `j = rng.random_range(0..=i)` (sampled as `u32`), and `rng` is rand
//! 0.9's `StdRng::from_seed(seed)` (ChaCha12). The log records the SHA-256
//! of the seed; publishing the seed afterwards lets anyone check the order.

use rand::{rngs::StdRng, Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// Pre-queue state: collecting until opened, then a number -> rank map.
#[derive(Debug)]
pub(super) struct Prequeue {
    /// SHA-256 (hex) of the opening seed, once opened.
    hash: Option<String>,
    /// Pre-queue tickets: numbers `1..=len` were issued before opening.
    len: u64,
    /// `perm[n-1]` is the rank of pre-queue ticket `n`.
    perm: Vec<u32>,
    /// The map was dropped by compaction: every pre-queue rank is gone.
    dropped: bool,
}

/// Where a ticket number stands in rank space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rank {
    /// The ticket's rank.
    At(u64),
    /// A pre-queue ticket whose rank was compacted away.
    Gone,
}

/// Hex SHA-256 of the opening seed, for the audit log.
pub fn seed_hash(seed: &[u8; 32]) -> String {
    Sha256::digest(seed)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The pre-queue ranks for `len` tickets under `seed` (see module docs).
pub fn shuffled_ranks(len: u32, seed: [u8; 32]) -> Vec<u32> {
    let mut rng = StdRng::from_seed(seed);
    let mut ranks: Vec<u32> = (1..=len).collect();
    for i in (1..ranks.len()).rev() {
        // `i < len <= u32::MAX`, so the cast is exact.
        let j = rng.random_range(0..=i as u32) as usize;
        ranks.swap(i, j);
    }
    ranks
}

impl Prequeue {
    /// A pre-queue that is still collecting (`collecting`) or was never
    /// needed (opened from the start, with no hash until `open`).
    pub(super) fn new(collecting: bool) -> Self {
        Self {
            hash: None,
            len: 0,
            perm: Vec::new(),
            dropped: !collecting,
        }
    }

    /// True once the event is open (or had no pre-queue).
    pub(super) fn is_open(&self) -> bool {
        self.hash.is_some() || self.dropped
    }

    /// Pre-queue tickets (0 until opened).
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// The hash recorded by the first `open`.
    pub(super) fn hash(&self) -> Option<&str> {
        self.hash.as_deref()
    }

    /// Opens with `issued` tickets in the pre-queue; true if it shuffled
    /// (the caller then applies [`Prequeue::perm`] to the bitsets).
    pub(super) fn open(&mut self, issued: u64, seed: [u8; 32]) -> bool {
        if self.hash.is_some() {
            return false;
        }
        self.hash = Some(seed_hash(&seed));
        if self.dropped {
            return false;
        }
        // Beyond u32::MAX pre-queue tickets (16 GiB of map) the rest keep
        // their number as rank: defined, if not shuffled.
        let len = u32::try_from(issued).unwrap_or(u32::MAX);
        self.len = u64::from(len);
        self.perm = shuffled_ranks(len, seed);
        true
    }

    /// `perm()[n-1]` is the rank of pre-queue ticket `n`.
    pub(super) fn perm(&self) -> &[u32] {
        &self.perm
    }

    /// The rank of ticket `number` (1..=issued).
    pub(super) fn rank(&self, number: u64) -> Rank {
        if number > self.len {
            return Rank::At(number);
        }
        if self.dropped {
            return Rank::Gone;
        }
        number
            .checked_sub(1)
            .and_then(|i| usize::try_from(i).ok())
            .and_then(|i| self.perm.get(i))
            .map_or(Rank::Gone, |&r| Rank::At(u64::from(r)))
    }

    /// Frees the map once every pre-queue rank is below `low`.
    pub(super) fn compact(&mut self, low: u64) {
        if self.len > 0 && low > self.len && !self.dropped {
            self.perm = Vec::new();
            self.dropped = true;
        }
    }

    /// Heap bytes held by the map.
    pub(super) fn memory_bytes(&self) -> usize {
        self.perm.capacity() * 4 + self.hash.as_ref().map_or(0, String::capacity)
    }
}

impl Prequeue {
    /// Writes the shuffle state.
    pub(super) fn encode(&self, w: &mut super::codec::Writer) {
        w.bytes(self.hash.as_deref().unwrap_or("").as_bytes());
        w.u8(u8::from(self.hash.is_some()));
        w.u64(self.len);
        w.u8(u8::from(self.dropped));
        w.u64(self.perm.len() as u64);
        for &p in &self.perm {
            w.u32(p);
        }
    }

    /// Reads what [`Prequeue::encode`] wrote.
    pub(super) fn decode(
        r: &mut super::codec::Reader<'_>,
    ) -> Result<Prequeue, super::codec::SnapshotError> {
        use super::codec::SnapshotError;
        let hash = String::from_utf8(r.bytes()?.to_vec())
            .map_err(|_| SnapshotError::Inconsistent("seed hash"))?;
        let hash = (r.u8()? == 1).then_some(hash);
        let len = r.u64()?;
        let dropped = r.u8()? == 1;
        let n = r.len(4)?;
        let perm = (0..n).map(|_| r.u32()).collect::<Result<Vec<_>, _>>()?;
        if !dropped && perm.len() as u64 != len {
            return Err(SnapshotError::Inconsistent("pre-queue length"));
        }
        Ok(Prequeue {
            hash,
            len,
            perm,
            dropped,
        })
    }
}
