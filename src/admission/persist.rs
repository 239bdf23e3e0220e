//! The room's durable state with `[store] backend = "local"`: the line,
//! the active set and the measured rate, in one CRC-checked file written
//! every second and at shutdown, plus the reserved ticket mark (see
//! `store::line::files`). Loading decides how the room resumes and says so
//! in the log.

use super::active::{Active, RateWindow};
use super::line::codec::{Reader, SnapshotError, Writer};
use super::line::{Line, LineConfig};
use crate::store::crc32;
use crate::store::line::files::{LineFiles, LineFilesError};

const MAGIC: &[u8; 4] = b"USHR";
const VERSION: u32 = 1;

/// The room's state as found at start.
pub(super) struct Resumed {
    pub line: Line,
    pub active: Active,
    pub rate: RateWindow,
    /// The room clock (ms) at the snapshot: the restarted room resumes it.
    pub clock: u64,
    /// Numbers up to here were reserved; the next ticket is above.
    pub mark: u64,
}

/// The room's state as bytes: `USHR`, version, clock, the line's own
/// snapshot, the active set, the rate window, CRC-32 of all before it.
pub(super) fn encode(clock: u64, line: &Line, active: &Active, rate: &RateWindow) -> Vec<u8> {
    let mut w = Writer::default();
    w.0.extend_from_slice(MAGIC);
    w.u32(VERSION);
    w.u64(clock);
    w.bytes(&line.snapshot());
    active.encode(&mut w);
    rate.encode(&mut w);
    let crc = crc32(&w.0);
    w.u32(crc);
    w.0
}

fn decode(bytes: &[u8], cfg: LineConfig) -> Result<(u64, Line, Active, RateWindow), SnapshotError> {
    if bytes.len() < 12 || &bytes[..4] != MAGIC {
        return Err(SnapshotError::Magic);
    }
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let mut crc = [0u8; 4];
    crc.copy_from_slice(tail);
    if crc32(body) != u32::from_le_bytes(crc) {
        return Err(SnapshotError::Checksum);
    }
    let mut r = Reader::new(&body[4..]);
    let version = r.u32()?;
    if version != VERSION {
        return Err(SnapshotError::Version(version));
    }
    let clock = r.u64()?;
    let line = Line::restore(cfg, r.bytes()?)?;
    let active = Active::decode(&mut r)?;
    let rate = RateWindow::decode(&mut r)?;
    if !r.done() {
        return Err(SnapshotError::Inconsistent("trailing bytes"));
    }
    Ok((clock, line, active, rate))
}

/// Reads the files of `event` and decides how the line resumes: restored
/// with numbering above the mark, or (snapshot missing or damaged) empty
/// above the mark. Fails only when the mark itself is unknown.
pub(super) fn resume(
    files: &LineFiles,
    event: u64,
    cfg: LineConfig,
    prequeue: bool,
) -> Result<Resumed, LineFilesError> {
    let found = files.load(event)?;
    let dir = files.dir().display().to_string();
    let empty = |mark: u64| Resumed {
        line: Line::empty_above(cfg, 0, mark, prequeue),
        active: Active::default(),
        rate: RateWindow::new(60_000),
        clock: 0,
        mark,
    };
    let Some(bytes) = found.snapshot else {
        if found.mark > 0 {
            tracing::warn!(state_dir = %dir, mark = found.mark, "no line snapshot: the line starts empty, numbering resumes above the reserved mark");
        }
        return Ok(empty(found.mark));
    };
    match decode(&bytes, cfg) {
        Ok((clock, mut line, active, rate)) => {
            let mark = found.mark.max(line.issued());
            // Tickets issued after the snapshot (up to the mark) have one
            // grace to poll again before the frontier may pass them.
            line.resume_above(mark, clock.saturating_add(cfg.grace_ms));
            let st = line.stats();
            tracing::info!(state_dir = %dir, issued = st.issued, waiting = st.waiting, frontier = st.frontier, pending = st.pending, active = active.len(), "line restored from its snapshot");
            Ok(Resumed {
                line,
                active,
                rate,
                clock,
                mark,
            })
        }
        Err(e) => {
            tracing::error!(state_dir = %dir, mark = found.mark, error = %e, "line snapshot unreadable: the line starts empty (earlier tickets must queue again), numbering resumes above the reserved mark");
            Ok(empty(found.mark))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::line::{LineMode, Place};

    const CFG: LineConfig = LineConfig {
        grace_ms: 1000,
        claim_window_ms: 1000,
        mode: LineMode::Fifo,
    };

    fn files(name: &str) -> (LineFiles, std::path::PathBuf) {
        let d = std::env::temp_dir().join(format!("usher-persist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        (LineFiles::open(&d).unwrap(), d)
    }

    #[test]
    fn a_damaged_or_missing_snapshot_starts_empty_above_the_mark() {
        let (f, d) = files("damaged");
        let mut line = Line::new(CFG, 0, false);
        for _ in 0..10 {
            line.issue(0);
        }
        f.reserve(1, 4096).unwrap();
        let mut bytes = encode(50, &line, &Active::default(), &RateWindow::new(60_000));
        let good = resume(&f, 1, CFG, false).unwrap();
        assert_eq!(
            (good.line.issued(), good.clock),
            (4096, 0),
            "no snapshot yet"
        );
        f.write_snapshot(1, &bytes).unwrap();
        let mut ok = resume(&f, 1, CFG, false).unwrap();
        assert_eq!((ok.line.issued(), ok.clock, ok.mark), (4096, 50, 4096));
        assert_eq!(ok.line.observe(3, 60), Place::Waiting { position: 2 });
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        f.write_snapshot(1, &bytes).unwrap();
        let mut bad = resume(&f, 1, CFG, false).unwrap();
        assert_eq!(bad.line.observe(3, 0), Place::Forfeited);
        assert_eq!(bad.line.issue(0), 4097, "numbering resumes above the mark");
        assert_eq!(bad.mark, 4096);
        // the mark itself damaged: refuse rather than guess
        std::fs::write(d.join(format!("line-{:016x}.mark", 1)), b"junk").unwrap();
        assert!(matches!(
            resume(&f, 1, CFG, false),
            Err(LineFilesError::BadMark(_))
        ));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn room_state_round_trips_and_damage_is_refused() {
        let cfg = LineConfig {
            grace_ms: 1000,
            claim_window_ms: 1000,
            mode: LineMode::Fifo,
        };
        let mut line = Line::new(cfg, 0, false);
        line.issue(5);
        let mut active = Active::default();
        active.touch(42, 9_000);
        let mut rate = RateWindow::new(60_000);
        rate.record(100, 3);
        let b = encode(777, &line, &active, &rate);
        let (clock, l, mut a, r) = decode(&b, cfg).unwrap();
        assert_eq!((clock, l.issued(), a.len()), (777, 1, 1));
        assert_eq!(r.per_second(1100), rate.per_second(1100));
        assert_eq!(a.prune(8_999), 1);
        assert_eq!(a.prune(9_000), 0);
        let mut bad = b.clone();
        bad[20] ^= 4;
        assert_eq!(decode(&bad, cfg).err(), Some(SnapshotError::Checksum));
    }
}
