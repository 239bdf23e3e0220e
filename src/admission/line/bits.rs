//! The line's rank-indexed bitsets and the popcount summary that makes
//! position queries and lottery draws cheap.
//!
//! Four bits per rank: seen in the current liveness window, seen in the
//! previous one, granted, taken. The (granted, taken) pair encodes the
//! place's fate: `00` open, `10` granted and not yet taken, `11` taken,
//! `01` expired (granted but the claim window ended). A rank is *live
//! waiting* when it is open and seen in either window.
//!
//! Words are kept in `VecDeque`s that share a base word index, so
//! compaction drops whole summary blocks from the front without moving the
//! rest. Each block of [`BLOCK_WORDS`] words (4096 ranks) carries the count
//! of live-waiting ranks in it: a prefix count costs one pass over the
//! block counts on the nearer side of the rank (the total is kept) plus at
//! most one block of words.

use std::collections::VecDeque;

/// Words per summary block (64 words = 4096 ranks).
pub(super) const BLOCK_WORDS: usize = 64;

/// What the bits say about one rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// Neither granted nor taken; `live` if seen in either window.
    Open { live: bool },
    /// Granted, pass not taken yet, claim window still running.
    Granted,
    /// Granted and taken.
    Taken,
    /// Granted, but the claim window ended before it was taken.
    Expired,
}

/// The bitsets, indexed by rank (rank 0 is never used).
#[derive(Debug, Default)]
pub(super) struct Bits {
    /// Absolute index of the first stored word; a multiple of `BLOCK_WORDS`.
    base: u64,
    cur: VecDeque<u64>,
    prev: VecDeque<u64>,
    granted: VecDeque<u64>,
    taken: VecDeque<u64>,
    /// Live-waiting count per block of `BLOCK_WORDS` words.
    blocks: VecDeque<u32>,
    /// Sum of `blocks`.
    waiting: u64,
}

/// `(relative word index, mask)` for every stored word overlapping
/// `[lo, hi)`, clamped to the stored words.
fn range_words(base: u64, len: usize, lo: u64, hi: u64) -> impl Iterator<Item = (usize, u64)> {
    let lo = lo.max(base * 64);
    let hi = hi.min((base + len as u64) * 64);
    let (first, last) = (lo / 64, hi.saturating_sub(1) / 64);
    let end = if lo < hi { last + 1 } else { first };
    let words = first..end;
    words.map(move |w| {
        let mut mask = !0u64;
        if w == first {
            mask &= !0u64 << (lo % 64);
        }
        if w == last {
            mask &= !0u64 >> (63 - (hi - 1) % 64);
        }
        ((w - base) as usize, mask)
    })
}

/// Position of the `k`-th (0-based) set bit of `word`; `k < popcount`.
fn select_in_word(mut word: u64, k: u64) -> u64 {
    for _ in 0..k {
        word &= word.wrapping_sub(1);
    }
    u64::from(word.trailing_zeros())
}

impl Bits {
    /// Lowest rank still stored; everything below was compacted away.
    pub(super) fn low_rank(&self) -> u64 {
        self.base * 64
    }

    /// Live waiting ranks (maintained incrementally; O(1)).
    pub(super) fn waiting(&self) -> u64 {
        self.waiting
    }

    fn rel(&self, rank: u64) -> Option<usize> {
        let word = (rank / 64).checked_sub(self.base)?;
        let i = usize::try_from(word).ok()?;
        (i < self.cur.len()).then_some(i)
    }

    /// Live-waiting bits of relative word `i`.
    fn lw(&self, i: usize) -> u64 {
        (self.cur[i] | self.prev[i]) & !(self.granted[i] | self.taken[i])
    }

    /// Grows every set so that `rank` has a bit.
    pub(super) fn ensure(&mut self, rank: u64) {
        let Some(need) = (rank / 64 + 1).checked_sub(self.base) else {
            return;
        };
        while (self.cur.len() as u64) < need {
            if self.cur.len() % BLOCK_WORDS == 0 {
                self.blocks.push_back(0);
            }
            self.cur.push_back(0);
            self.prev.push_back(0);
            self.granted.push_back(0);
            self.taken.push_back(0);
        }
    }

    /// The fate of `rank`, or `None` if it is not stored (compacted away or
    /// never issued).
    pub(super) fn slot(&self, rank: u64) -> Option<Slot> {
        let i = self.rel(rank)?;
        let bit = 1u64 << (rank % 64);
        let granted = self.granted[i] & bit != 0;
        let taken = self.taken[i] & bit != 0;
        Some(match (granted, taken) {
            (true, false) => Slot::Granted,
            (true, true) => Slot::Taken,
            (false, true) => Slot::Expired,
            (false, false) => Slot::Open {
                live: (self.cur[i] | self.prev[i]) & bit != 0,
            },
        })
    }

    fn adjust_block(&mut self, i: usize, up: bool) {
        let block = &mut self.blocks[i / BLOCK_WORDS];
        if up {
            *block += 1;
            self.waiting += 1;
        } else {
            *block -= 1;
            self.waiting -= 1;
        }
    }

    /// Marks `rank` seen in the current window.
    pub(super) fn mark_live(&mut self, rank: u64) {
        let Some(i) = self.rel(rank) else { return };
        let bit = 1u64 << (rank % 64);
        let before = self.lw(i) & bit;
        self.cur[i] |= bit;
        if before == 0 && self.lw(i) & bit != 0 {
            self.adjust_block(i, true);
        }
    }

    /// Grants a live waiting `rank`; false if it was not live waiting.
    pub(super) fn grant(&mut self, rank: u64) -> bool {
        let Some(i) = self.rel(rank) else {
            return false;
        };
        let bit = 1u64 << (rank % 64);
        if self.lw(i) & bit == 0 {
            return false;
        }
        self.granted[i] |= bit;
        self.adjust_block(i, false);
        true
    }

    /// Marks a granted `rank` taken; false unless it was granted and not
    /// taken.
    pub(super) fn take(&mut self, rank: u64) -> bool {
        if self.slot(rank) != Some(Slot::Granted) {
            return false;
        }
        if let Some(i) = self.rel(rank) {
            self.taken[i] |= 1u64 << (rank % 64);
        }
        true
    }

    /// Expires `rank` if it is granted and not taken.
    pub(super) fn expire_one(&mut self, rank: u64) -> bool {
        if self.slot(rank) != Some(Slot::Granted) {
            return false;
        }
        if let Some(i) = self.rel(rank) {
            let bit = 1u64 << (rank % 64);
            self.granted[i] &= !bit;
            self.taken[i] |= bit;
        }
        true
    }

    /// Expires every granted, untaken rank in `[lo, hi)`; returns how many.
    pub(super) fn expire_range(&mut self, lo: u64, hi: u64) -> u64 {
        let mut n = 0;
        for (i, mask) in range_words(self.base, self.cur.len(), lo, hi) {
            let m = self.granted[i] & !self.taken[i] & mask;
            self.granted[i] &= !m;
            self.taken[i] |= m;
            n += u64::from(m.count_ones());
        }
        n
    }

    /// Open ranks (neither granted nor taken) in `[lo, hi)`.
    pub(super) fn count_open(&self, lo: u64, hi: u64) -> u64 {
        range_words(self.base, self.cur.len(), lo, hi)
            .map(|(i, mask)| u64::from((!(self.granted[i] | self.taken[i]) & mask).count_ones()))
            .sum()
    }

    /// Live waiting ranks below `rank` (all stored ranks below it).
    pub(super) fn count_before(&self, rank: u64) -> u64 {
        let Some(i) = self.rel(rank) else {
            return if rank < self.low_rank() {
                0
            } else {
                self.waiting
            };
        };
        let block = i / BLOCK_WORDS;
        // The blocks before, counted from the nearer end: a newcomer's rank
        // is in the last block, and `waiting` is the sum of them all.
        let mut n: u64 = if block * 2 <= self.blocks.len() {
            self.blocks.range(..block).map(|&c| u64::from(c)).sum()
        } else {
            let from: u64 = self.blocks.range(block..).map(|&c| u64::from(c)).sum();
            self.waiting - from
        };
        // Within the block, from its nearer end too: a newcomer's word is
        // the last one, so nothing after it is counted.
        let start = block * BLOCK_WORDS;
        let end = (start + BLOCK_WORDS).min(self.cur.len());
        let below = (1u64 << (rank % 64)) - 1;
        if i - start <= end - 1 - i {
            for j in start..i {
                n += u64::from(self.lw(j).count_ones());
            }
            n + u64::from((self.lw(i) & below).count_ones())
        } else {
            let mut from = u64::from((self.lw(i) & !below).count_ones());
            for j in i + 1..end {
                from += u64::from(self.lw(j).count_ones());
            }
            n + u64::from(self.blocks[block]) - from
        }
    }

    /// The `k`-th (0-based, in rank order) live waiting rank.
    pub(super) fn select(&self, mut k: u64) -> Option<u64> {
        for (b, &count) in self.blocks.iter().enumerate() {
            let count = u64::from(count);
            if k >= count {
                k -= count;
                continue;
            }
            let end = ((b + 1) * BLOCK_WORDS).min(self.cur.len());
            for j in b * BLOCK_WORDS..end {
                let word = self.lw(j);
                let ones = u64::from(word.count_ones());
                if k < ones {
                    return Some((self.base + j as u64) * 64 + select_in_word(word, k));
                }
                k -= ones;
            }
            return None;
        }
        None
    }

    /// The first live waiting rank at or above `from`.
    pub(super) fn next_waiting(&self, from: u64) -> Option<u64> {
        let from = from.max(self.low_rank());
        let start = self.rel(from)?;
        let at =
            |j: usize, word: u64| (self.base + j as u64) * 64 + u64::from(word.trailing_zeros());
        let first = self.lw(start) & (!0u64 << (from % 64));
        if first != 0 {
            return Some(at(start, first));
        }
        let block = start / BLOCK_WORDS;
        for b in block..self.blocks.len() {
            if self.blocks[b] == 0 {
                continue;
            }
            let begin = if b == block {
                start + 1
            } else {
                b * BLOCK_WORDS
            };
            let end = ((b + 1) * BLOCK_WORDS).min(self.cur.len());
            for j in begin..end {
                let word = self.lw(j);
                if word != 0 {
                    return Some(at(j, word));
                }
            }
        }
        None
    }

    /// Ends `windows` liveness windows: one moves current to previous, two
    /// or more forget every sighting. Recounts the summary.
    pub(super) fn rotate(&mut self, windows: u64) {
        if windows == 0 {
            return;
        }
        if windows == 1 {
            std::mem::swap(&mut self.cur, &mut self.prev);
        } else {
            self.prev.iter_mut().for_each(|w| *w = 0);
        }
        self.cur.iter_mut().for_each(|w| *w = 0);
        self.recount();
    }

    fn recount(&mut self) {
        self.waiting = 0;
        for b in 0..self.blocks.len() {
            let end = ((b + 1) * BLOCK_WORDS).min(self.cur.len());
            let count: u32 = (b * BLOCK_WORDS..end)
                .map(|j| self.lw(j).count_ones())
                .sum();
            self.blocks[b] = count;
            self.waiting += u64::from(count);
        }
    }

    /// Moves the liveness bits of ranks `1..=perm.len()` to `perm[rank-1]`
    /// (the pre-queue shuffle). Granted and taken bits are all clear then.
    pub(super) fn permute_live(&mut self, perm: &[u32]) {
        let base = self.base;
        let len = self.cur.len();
        let bit = |rank: u64| {
            let i = usize::try_from((rank / 64).checked_sub(base)?).ok()?;
            (i < len).then_some((i, 1u64 << (rank % 64)))
        };
        for set in [&mut self.cur, &mut self.prev] {
            let old = set.clone();
            for (i, mask) in range_words(base, len, 1, perm.len() as u64 + 1) {
                set[i] &= !mask;
            }
            for (n, &to) in (1u64..).zip(perm) {
                let seen = bit(n).is_some_and(|(i, b)| old[i] & b != 0);
                if let (true, Some((j, b))) = (seen, bit(u64::from(to))) {
                    set[j] |= b;
                }
            }
        }
        self.recount();
    }

    /// Drops whole blocks whose ranks are all below `low`.
    pub(super) fn compact(&mut self, low: u64) {
        let whole_words = (low / 64).saturating_sub(self.base);
        let drop_blocks = usize::try_from(whole_words / BLOCK_WORDS as u64)
            .unwrap_or(usize::MAX)
            .min(self.blocks.len());
        if drop_blocks == 0 {
            return;
        }
        for count in self.blocks.drain(..drop_blocks) {
            debug_assert_eq!(count, 0, "compacted a block with live waiting ranks");
        }
        let words = (drop_blocks * BLOCK_WORDS).min(self.cur.len());
        for set in [
            &mut self.cur,
            &mut self.prev,
            &mut self.granted,
            &mut self.taken,
        ] {
            set.drain(..words);
            if set.capacity() > 4 * set.len().max(BLOCK_WORDS) {
                set.shrink_to_fit();
            }
        }
        if self.blocks.capacity() > 4 * self.blocks.len().max(16) {
            self.blocks.shrink_to_fit();
        }
        self.base += (drop_blocks * BLOCK_WORDS) as u64;
    }

    /// Heap bytes held by the sets and the summary.
    pub(super) fn memory_bytes(&self) -> usize {
        let words = self.cur.capacity()
            + self.prev.capacity()
            + self.granted.capacity()
            + self.taken.capacity();
        words * 8 + self.blocks.capacity() * 4
    }
}

impl Bits {
    /// Writes the four sets (the block counts are derived, not stored).
    pub(super) fn encode(&self, w: &mut super::codec::Writer) {
        w.u64(self.base);
        for set in [&self.cur, &self.prev, &self.granted, &self.taken] {
            w.words(set.len(), set.iter());
        }
    }

    /// Reads what [`Bits::encode`] wrote and recounts the blocks.
    pub(super) fn decode(
        r: &mut super::codec::Reader<'_>,
    ) -> Result<Bits, super::codec::SnapshotError> {
        let base = r.u64()?;
        if base % BLOCK_WORDS as u64 != 0 {
            return Err(super::codec::SnapshotError::Inconsistent("bits base"));
        }
        let cur = VecDeque::from(r.words()?);
        let prev = VecDeque::from(r.words()?);
        let granted = VecDeque::from(r.words()?);
        let taken = VecDeque::from(r.words()?);
        let len = cur.len();
        if prev.len() != len || granted.len() != len || taken.len() != len {
            return Err(super::codec::SnapshotError::Inconsistent("bit set lengths"));
        }
        let mut bits = Bits {
            base,
            cur,
            prev,
            granted,
            taken,
            blocks: std::iter::repeat_n(0, len.div_ceil(BLOCK_WORDS)).collect(),
            waiting: 0,
        };
        bits.recount();
        Ok(bits)
    }

    /// Empty sets starting at the block holding `rank`: nothing below it
    /// exists any more.
    pub(super) fn starting_at(rank: u64) -> Bits {
        let block_ranks = BLOCK_WORDS as u64 * 64;
        Bits {
            base: rank / block_ranks * BLOCK_WORDS as u64,
            ..Bits::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::{rngs::StdRng, Rng, SeedableRng};

    use super::*;

    /// `count_before` against a count of `slot`s, for ranks in every block
    /// (it counts from the front or the back, whichever is nearer), after
    /// marks, grants, takes and a compaction.
    #[test]
    fn count_before_is_the_number_of_live_waiting_ranks_below() {
        let mut rng = StdRng::seed_from_u64(7);
        let top = 9 * 4096 + 77;
        let mut bits = Bits::starting_at(1);
        bits.ensure(top);
        for r in 1..=top {
            if rng.random_bool(0.6) {
                bits.mark_live(r);
            }
        }
        for _ in 0..3_000 {
            let r = rng.random_range(1..=top);
            if rng.random_bool(0.5) {
                bits.grant(r);
            } else if bits.grant(r) {
                bits.take(r);
            }
        }
        let naive = |bits: &Bits, rank: u64| {
            (bits.low_rank()..rank)
                .filter(|&r| bits.slot(r) == Some(Slot::Open { live: true }))
                .count() as u64
        };
        let check = |bits: &Bits, seed: u64| {
            let mut rng = StdRng::seed_from_u64(seed);
            let low = bits.low_rank().max(1);
            let mut probes: Vec<u64> = (0..300).map(|_| rng.random_range(low..=top)).collect();
            probes.extend((low..=top).step_by(997));
            probes.extend([low, low + 1, top, top - 1, top + 1, top + 5_000]);
            for r in probes {
                assert_eq!(bits.count_before(r), naive(bits, r), "rank {r}");
            }
        };
        check(&bits, 1);
        // Drop the first two blocks' worth (nothing live waiting may be
        // compacted: grant what is left there first).
        for r in 1..2 * 4096 {
            bits.grant(r);
        }
        bits.compact(2 * 4096);
        assert_eq!(bits.low_rank(), 2 * 4096);
        check(&bits, 2);
        assert_eq!(bits.count_before(top + 1), bits.waiting());
    }
}
