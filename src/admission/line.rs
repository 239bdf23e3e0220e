//! The waiting line: ticket numbers, the admission frontier, liveness,
//! grants and their claim window, the pre-queue shuffle and the lottery.
//!
//! Pure and synchronous: time is a `now` in milliseconds passed by the
//! caller (any monotonic-ish scale; a `now` earlier than one already seen
//! is treated as the latest), randomness is passed in, and the caller
//! holds the lock. Nothing here allocates per queued visitor: a ticket is
//! four bits (plus four bytes while it sits in a shuffled pre-queue).
//!
//! # Ranks
//! Admission order is *rank* order. Tickets issued after opening have
//! rank = number; pre-queue tickets get a shuffled rank at [`Line::open`].
//! The *frontier* is the highest rank the line has passed: every rank at
//! or below it was granted or skipped.
//!
//! # Liveness
//! Each poll marks the ticket in the current window's bitset; a ticket is
//! live if marked in the current or the previous window. Windows rotate
//! every `grace_ms`, so a ticket seen at `t` is live at least until
//! `t + grace` (inclusive) and is no longer live from `t + 2 * grace` on:
//! "absent longer than grace, plus at most one rotation period". Two sets
//! (not three at `grace / 2`) keep it at four bits per ticket; the cost is
//! that an abandoned place may still be granted up to one grace late,
//! where it holds a pending slot until its claim window ends.
//!
//! # Fates
//! The frontier *grants* live places and *skips* places not live, which
//! cost no budget: abandonment never slows the line. A skipped visitor who
//! comes back is [`Place::Forfeited`], as is one whose grant was not taken
//! within `claim_window_ms`. Granted-not-taken places are *pending*; the
//! caller counts them as active so the gate does not over-admit.
//!
//! # Lottery
//! In [`LineMode::Random`] each tick grants `budget` places drawn
//! uniformly among live waiting tickets; the frontier then only moves
//! over the resolved (or abandoned) prefix, so an abandoned place is
//! forfeited when the frontier reaches it, as in FIFO.
//!
//! # Memory
//! Whole 4096-rank blocks below the lowest rank that can still matter
//! (the frontier, or an older grant still in its claim window) are dropped
//! after each tick, and the pre-queue map once the frontier has passed it.

mod bits;
pub(crate) mod codec;
mod grants;
mod prequeue;
mod snapshot;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_model;
#[cfg(test)]
mod tests_snapshot;

use rand::Rng;

use bits::{Bits, Slot};
pub use codec::SnapshotError;
use grants::Grants;
pub use prequeue::{seed_hash, shuffled_ranks};
use prequeue::{Prequeue, Rank};

/// How the line chooses whom to admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LineMode {
    /// First come, first served (in rank order).
    #[default]
    Fifo,
    /// A lottery among live waiting tickets at every tick.
    Random,
}

/// The line's tunables; all can change live with [`Line::set_config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineConfig {
    /// How long a visitor may go without polling and keep the place; also
    /// the liveness window rotation period (0 is treated as 1).
    pub grace_ms: u64,
    /// How long a granted visitor has to come back and take the pass.
    pub claim_window_ms: u64,
    /// FIFO or lottery.
    pub mode: LineMode,
}

/// Where a ticket stands, as answered to its poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// FIFO: waiting, with `position` live waiting tickets ahead.
    Waiting {
        /// Live tickets between the frontier and this one.
        position: u64,
    },
    /// Before opening (pre-queue) or in lottery mode: no order yet.
    InDraw {
        /// Live waiting tickets, this one included.
        waiting: u64,
    },
    /// Admitted: the visitor may take a pass now ([`Line::take`]).
    Granted,
    /// The pass was already taken (while the line still remembers: once
    /// compacted away, a taken place reads as `Forfeited`).
    Taken,
    /// The place was skipped while the visitor was away, or the grant was
    /// not taken in time (or is too old to tell): issue a new ticket.
    Forfeited,
    /// Not a number this line issued (0, or beyond `issued`).
    Unknown,
}

/// What one admission tick did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TickOutcome {
    /// Places granted (at most the budget).
    pub granted: u64,
    /// Abandoned places the frontier passed.
    pub skipped: u64,
}

/// Counters for metrics and the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LineStats {
    /// Tickets issued (the highest number).
    pub issued: u64,
    /// Tickets in the shuffled pre-queue (0 until opened).
    pub prequeue: u64,
    /// Whether the event is open (the pre-queue shuffled, or none).
    pub open: bool,
    /// The frontier, in rank space.
    pub frontier: u64,
    /// Live tickets beyond the frontier, not yet granted.
    pub waiting: u64,
    /// Granted places neither taken nor expired.
    pub pending: u64,
    /// Places granted so far.
    pub granted_total: u64,
    /// Abandoned places skipped so far.
    pub skipped_total: u64,
    /// Passes taken so far.
    pub taken_total: u64,
    /// Grants that expired untaken so far.
    pub expired_total: u64,
    /// Heap and inline bytes held by the line.
    pub memory_bytes: usize,
}

/// The waiting line of one event. See the module docs.
#[derive(Debug)]
pub struct Line {
    cfg: LineConfig,
    bits: Bits,
    grants: Grants,
    prequeue: Prequeue,
    issued: u64,
    frontier: u64,
    /// Latest `now` seen.
    now: u64,
    /// Start of the current liveness window.
    rotated_at: u64,
    totals: Totals,
    /// After a restore: the frontier stays at or below this rank until
    /// this time (see [`Line::resume_above`]).
    hold: Option<(u64, u64)>,
    /// (tick time, places granted) of recent ticks, for
    /// [`Line::pending_recent`]; not saved (after a restore, older grants
    /// no longer hold a slot, though their owners may still take them).
    recent: std::collections::VecDeque<(u64, u64)>,
}

/// Running totals reported in [`LineStats`].
#[derive(Debug, Default)]
struct Totals {
    granted: u64,
    skipped: u64,
    taken: u64,
    expired: u64,
}

impl Line {
    /// An empty line at `now`. With `prequeue`, tickets are collected
    /// unordered and nothing is granted until [`Line::open`].
    pub fn new(cfg: LineConfig, now: u64, prequeue: bool) -> Self {
        Self {
            cfg,
            bits: Bits::default(),
            grants: Grants::default(),
            prequeue: Prequeue::new(prequeue),
            issued: 0,
            frontier: 0,
            now,
            rotated_at: now,
            totals: Totals::default(),
            hold: None,
            recent: Default::default(),
        }
    }

    /// Replaces the tunables (live reload). Takes effect at the next call.
    pub fn set_config(&mut self, cfg: LineConfig) {
        self.cfg = cfg;
    }

    /// The current tunables.
    pub fn config(&self) -> LineConfig {
        self.cfg
    }

    /// Whether the event is open (see [`Line::open`]).
    pub fn is_open(&self) -> bool {
        self.prequeue.is_open()
    }

    /// The highest ticket number issued (or reserved past, after a restore).
    pub fn issued(&self) -> u64 {
        self.issued
    }

    /// Live tickets beyond the frontier, not yet granted. O(1).
    pub fn waiting(&self) -> u64 {
        self.bits.waiting()
    }

    /// Granted places neither taken nor expired (as of the last call).
    pub fn pending(&self) -> u64 {
        self.grants.pending()
    }

    /// Pending places granted within the last `window_ms`: the ones that
    /// still hold a slot. A live visitor near the head of the line learns
    /// of the grant within a poll, so a grant older than that whose owner
    /// has not come back gives its slot back to the pool (the owner may
    /// still take it until the claim window ends).
    pub fn pending_recent(&self, now: u64, window_ms: u64) -> u64 {
        let since = now.saturating_sub(window_ms);
        let recent: u64 = self
            .recent
            .iter()
            .rev()
            .take_while(|(at, _)| *at >= since)
            .map(|(_, n)| n)
            .sum();
        recent.min(self.grants.pending())
    }

    /// Rotates liveness windows and expires old grants up to `now`.
    fn advance(&mut self, now: u64) {
        self.now = self.now.max(now);
        let period = self.cfg.grace_ms.max(1);
        let windows = self.now.saturating_sub(self.rotated_at) / period;
        if windows > 0 {
            self.bits.rotate(windows);
            self.rotated_at += windows * period;
        }
        let claim = self.cfg.claim_window_ms;
        self.totals.expired += self.grants.expire(self.now, claim, &mut self.bits);
    }

    /// Issues the next ticket number (from 1), marked live.
    pub fn issue(&mut self, now: u64) -> u64 {
        self.advance(now);
        self.issued += 1;
        // New tickets always rank by number: identity before opening (the
        // shuffle comes later), after all pre-queue ranks afterwards.
        self.bits.ensure(self.issued);
        self.bits.mark_live(self.issued);
        self.issued
    }

    fn rank(&self, number: u64) -> Option<Rank> {
        if number == 0 || number > self.issued {
            return None;
        }
        match self.prequeue.rank(number) {
            Rank::At(rank) if rank < self.bits.low_rank() => Some(Rank::Gone),
            other => Some(other),
        }
    }

    /// A poll from ticket `number`: marks it live if it is still waiting
    /// and says where it stands. Costs O(blocks + 64) words in FIFO.
    pub fn observe(&mut self, number: u64, now: u64) -> Place {
        self.advance(now);
        let rank = match self.rank(number) {
            None => return Place::Unknown,
            Some(Rank::Gone) => return Place::Forfeited,
            Some(Rank::At(rank)) => rank,
        };
        match self.bits.slot(rank) {
            Some(Slot::Granted) => Place::Granted,
            Some(Slot::Taken) => Place::Taken,
            Some(Slot::Open { .. }) if rank > self.frontier => {
                self.bits.mark_live(rank);
                if self.is_open() && self.cfg.mode == LineMode::Fifo {
                    // Nothing at or below the frontier is live waiting, so
                    // everything counted is strictly between the two.
                    Place::Waiting {
                        position: self.bits.count_before(rank),
                    }
                } else {
                    Place::InDraw {
                        waiting: self.bits.waiting(),
                    }
                }
            }
            Some(Slot::Open { .. } | Slot::Expired) | None => Place::Forfeited,
        }
    }

    /// The visitor takes its pass: true exactly once, if the place is
    /// granted and its claim window is still running.
    pub fn take(&mut self, number: u64, now: u64) -> bool {
        self.advance(now);
        let Some(Rank::At(rank)) = self.rank(number) else {
            return false;
        };
        if !self.bits.take(rank) {
            return false;
        }
        self.grants.taken();
        self.totals.taken += 1;
        true
    }

    /// One admission tick: rotates windows, expires old grants, then grants
    /// up to `budget` live places (none before opening). `rng` is used only
    /// by the lottery. Costs O(words passed + blocks) in FIFO and
    /// O(granted * (blocks + 64)) in the lottery.
    pub fn tick<R: Rng + ?Sized>(&mut self, now: u64, budget: u64, rng: &mut R) -> TickOutcome {
        self.advance(now);
        if !self.is_open() {
            return TickOutcome::default();
        }
        let outcome = match self.cfg.mode {
            LineMode::Fifo => self.grant_fifo(budget),
            LineMode::Random => self.grant_random(budget, rng),
        };
        self.totals.granted += outcome.granted;
        self.totals.skipped += outcome.skipped;
        if outcome.granted > 0 {
            self.recent.push_back((self.now, outcome.granted));
        }
        let keep = self.now.saturating_sub(self.cfg.claim_window_ms);
        while self.recent.front().is_some_and(|(at, _)| *at < keep) {
            self.recent.pop_front();
        }
        self.compact();
        outcome
    }

    fn grant_fifo(&mut self, budget: u64) -> TickOutcome {
        let start = self.frontier + 1;
        let top = self.top();
        let mut out = TickOutcome::default();
        while out.granted < budget && self.frontier < top {
            let from = self.frontier + 1;
            match self.bits.next_waiting(from).filter(|&r| r <= top) {
                Some(rank) => {
                    out.skipped += self.bits.count_open(from, rank);
                    self.bits.grant(rank);
                    out.granted += 1;
                    self.frontier = rank;
                }
                None => {
                    out.skipped += self.bits.count_open(from, top + 1);
                    self.frontier = top;
                }
            }
        }
        self.grants
            .push_range(self.now, start, self.frontier + 1, out.granted);
        out
    }

    fn grant_random<R: Rng + ?Sized>(&mut self, budget: u64, rng: &mut R) -> TickOutcome {
        let draws = budget.min(self.bits.waiting());
        let mut ranks = Vec::with_capacity(usize::try_from(draws).unwrap_or(0));
        for _ in 0..draws {
            let k = rng.random_range(0..self.bits.waiting());
            let Some(rank) = self.bits.select(k) else {
                break;
            };
            self.bits.grant(rank);
            ranks.push(rank);
        }
        let mut out = TickOutcome {
            granted: ranks.len() as u64,
            skipped: 0,
        };
        self.grants.push_list(self.now, ranks);
        let from = self.frontier + 1;
        let top = self.top();
        let stop = match self.bits.next_waiting(from) {
            Some(rank) if rank <= top => rank - 1,
            _ => top,
        };
        if stop >= from {
            out.skipped = self.bits.count_open(from, stop + 1);
            self.frontier = stop;
        }
        out
    }

    /// Drops state below the lowest rank that can still matter.
    fn compact(&mut self) {
        let low = (self.frontier + 1).min(self.grants.min_rank().unwrap_or(u64::MAX));
        self.bits.compact(low);
        self.prequeue.compact(low);
    }

    /// Opens the event: shuffles the pre-queue once (see
    /// [`shuffled_ranks`]) and returns the hex SHA-256 of `seed` for the
    /// audit log. Later calls change nothing and return the first hash.
    pub fn open(&mut self, seed: [u8; 32]) -> String {
        if self.prequeue.open(self.issued, seed) {
            self.bits.permute_live(self.prequeue.perm());
        }
        self.prequeue
            .hash()
            .map_or_else(|| seed_hash(&seed), str::to_owned)
    }

    /// Counters for metrics and the status page.
    pub fn stats(&self) -> LineStats {
        LineStats {
            issued: self.issued,
            prequeue: self.prequeue.len(),
            open: self.is_open(),
            frontier: self.frontier,
            waiting: self.bits.waiting(),
            pending: self.grants.pending(),
            granted_total: self.totals.granted,
            skipped_total: self.totals.skipped,
            taken_total: self.totals.taken,
            expired_total: self.totals.expired,
            memory_bytes: self.memory_bytes(),
        }
    }

    /// Bytes held by the line (struct plus heap).
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>()
            + self.bits.memory_bytes()
            + self.grants.memory_bytes()
            + self.prequeue.memory_bytes()
    }
}
