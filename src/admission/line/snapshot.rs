//! The line as bytes, for the durable local store: everything a restart
//! needs to keep every ticket's place (issued, frontier, liveness, grants,
//! the pre-queue shuffle), versioned and CRC-checked.
//!
//! Times inside are in the line's own clock; the caller restores its clock
//! so that the snapshot's `now` is where it resumes (the downtime does not
//! count against anyone's grace: nobody could poll while usher was down).

use super::bits::Bits;
use super::codec::{Reader, SnapshotError, Writer};
use super::grants::Grants;
use super::prequeue::Prequeue;
use super::{Line, LineConfig, Totals};
use crate::store::crc32;

const MAGIC: &[u8; 4] = b"USHL";
const VERSION: u32 = 1;

impl Line {
    /// The whole line as bytes: `USHL`, version, fields, CRC-32 of all
    /// before it. Costs a copy of the bitsets (half a byte per ticket still
    /// in memory).
    pub fn snapshot(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(128 + self.memory_bytes()));
        w.0.extend_from_slice(MAGIC);
        w.u32(VERSION);
        for v in [
            self.issued,
            self.frontier,
            self.now,
            self.rotated_at,
            self.totals.granted,
            self.totals.skipped,
            self.totals.taken,
            self.totals.expired,
        ] {
            w.u64(v);
        }
        self.bits.encode(&mut w);
        self.grants.encode(&mut w);
        self.prequeue.encode(&mut w);
        let crc = crc32(&w.0);
        w.u32(crc);
        w.0
    }

    /// A line from [`Line::snapshot`] bytes, with today's tunables.
    pub fn restore(cfg: LineConfig, bytes: &[u8]) -> Result<Line, SnapshotError> {
        if bytes.len() < 12 || &bytes[..4] != MAGIC {
            return Err(SnapshotError::Magic);
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let mut crc = [0u8; 4];
        crc.copy_from_slice(tail);
        let mut r = Reader::new(&body[4..]);
        let version = r.u32()?;
        if version != VERSION {
            return Err(SnapshotError::Version(version));
        }
        if crc32(body) != u32::from_le_bytes(crc) {
            return Err(SnapshotError::Checksum);
        }
        let issued = r.u64()?;
        let frontier = r.u64()?;
        let now = r.u64()?;
        let rotated_at = r.u64()?;
        let totals = Totals {
            granted: r.u64()?,
            skipped: r.u64()?,
            taken: r.u64()?,
            expired: r.u64()?,
        };
        let bits = Bits::decode(&mut r)?;
        let grants = Grants::decode(&mut r)?;
        let prequeue = Prequeue::decode(&mut r)?;
        if !r.done() {
            return Err(SnapshotError::Inconsistent("trailing bytes"));
        }
        if frontier > issued || rotated_at > now {
            return Err(SnapshotError::Inconsistent("frontier or clock"));
        }
        Ok(Line {
            cfg,
            bits,
            grants,
            prequeue,
            issued,
            frontier,
            now,
            rotated_at,
            totals,
            hold: None,
            recent: Default::default(),
        })
    }

    /// After a restart: numbers up to `mark` may have been handed out after
    /// the snapshot was taken. They stay valid (open, not yet seen), and the
    /// frontier stops before them until `hold_until`, so their owners have
    /// one grace period to poll and be marked live again. Nothing is ever
    /// issued at or below `mark` again.
    pub fn resume_above(&mut self, mark: u64, hold_until: u64) {
        if mark <= self.issued {
            return;
        }
        self.hold = Some((self.issued, hold_until));
        self.issued = mark;
        self.bits.ensure(mark);
    }

    /// An empty line whose numbering resumes above `mark` (the snapshot was
    /// lost or damaged: earlier tickets read as forfeited).
    pub fn empty_above(cfg: LineConfig, now: u64, mark: u64, prequeue: bool) -> Line {
        let mut line = Line::new(cfg, now, prequeue);
        line.issued = mark;
        if line.is_open() {
            line.frontier = mark;
            line.bits = Bits::starting_at(mark + 1);
        }
        line
    }

    /// The highest rank the frontier may pass now (see [`Line::resume_above`]).
    pub(super) fn top(&mut self) -> u64 {
        match self.hold {
            Some((rank, until)) if self.now < until => rank.min(self.issued),
            Some(_) => {
                self.hold = None;
                self.issued
            }
            None => self.issued,
        }
    }
}
