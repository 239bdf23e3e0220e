//! The journal's records and their line format, and replay.
//!
//! One record per line: `CRC32 SPACE JSON NEWLINE`, the CRC as 8 lower-case
//! hex digits over the JSON bytes. A record counts only once its whole line,
//! newline included, is on disk and synced; a crash can therefore leave at
//! most a torn *last* line, which replay drops (it was never acknowledged).
//! A bad line followed by good ones is damage, not a torn write: replay then
//! refuses to guess and reports the line.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::state::State;
use super::StoreError;
use crate::store::crc32;

/// Journal format version, in the `open` record.
pub(crate) const VERSION: u32 = 1;

/// One journal record.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(tag = "t")]
pub(crate) enum Record {
    /// First line: which event this ledger belongs to.
    #[serde(rename = "open")]
    Open { event: String, v: u32 },
    /// The stock from this open on (written when it changes).
    #[serde(rename = "stock")]
    Stock { n: u64 },
    /// A unit reserved for `id`, as claim number `seq`.
    #[serde(rename = "res")]
    Reserve { seq: u64, id: String, key: String },
    /// `id`'s pending claim got `code` from `plugin`, at unix milliseconds `at`.
    #[serde(rename = "iss")]
    Issue {
        seq: u64,
        id: String,
        code: String,
        plugin: String,
        at: u64,
    },
    /// The issuer refused `id`; its unit goes back to the stock.
    #[serde(rename = "ref")]
    Refuse { id: String, why: String },
    /// The issuer ran out while `id` was pending: the unit is released and
    /// the event is sold out from here on.
    #[serde(rename = "out")]
    SoldOut { id: String },
}

/// Appends `rec` as one journal line to `out`.
pub(crate) fn encode(rec: &Record, out: &mut Vec<u8>) {
    // Records hold only strings and integers: serializing cannot fail.
    let json = serde_json::to_vec(rec).expect("journal records serialize");
    out.extend_from_slice(format!("{:08x} ", crc32(&json)).as_bytes());
    out.extend_from_slice(&json);
    out.push(b'\n');
}

/// Decodes one line (without its newline); `None` if damaged.
fn decode(line: &[u8]) -> Option<Record> {
    if line.len() < 10 || line[8] != b' ' {
        return None;
    }
    let crc = u32::from_str_radix(std::str::from_utf8(&line[..8]).ok()?, 16).ok()?;
    let json = &line[9..];
    if crc32(json) != crc {
        return None;
    }
    serde_json::from_slice(json).ok()
}

/// What replay found.
pub(crate) struct Replay {
    /// The event in the `open` record; `None` for an empty journal.
    pub event: Option<String>,
    /// Claims and counters; `stock` is the last recorded one (0 if none).
    pub state: State,
    /// Whether any `stock` record was seen.
    pub stock_recorded: bool,
    /// Length of the whole, valid records.
    pub good_len: u64,
    /// 1-based line number of a torn last record, if there was one.
    pub torn_line: Option<u64>,
    /// Every `iss` record, in order (to repair or check the audit log).
    pub issues: Vec<Record>,
}

/// Replays the journal's bytes. Does not touch the file.
pub(crate) fn replay(path: &Path, bytes: &[u8]) -> Result<Replay, StoreError> {
    let mut out = Replay {
        event: None,
        state: State::new(0),
        stock_recorded: false,
        good_len: 0,
        torn_line: None,
        issues: Vec::new(),
    };
    let corrupt = |line: u64, reason: String| StoreError::Corrupt {
        path: path.to_path_buf(),
        line,
        reason,
    };
    let mut offset = 0usize;
    let mut line_no = 0u64;
    while offset < bytes.len() {
        line_no += 1;
        let rest = &bytes[offset..];
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (Some(&rest[..i]), offset + i + 1),
            None => (None, bytes.len()),
        };
        let Some(rec) = line.and_then(decode) else {
            if any_good_line(&bytes[next..]) {
                return Err(corrupt(line_no, "damaged record before valid ones".into()));
            }
            out.torn_line = Some(line_no);
            break;
        };
        match (&rec, line_no) {
            (Record::Open { event, v }, 1) => {
                if *v != VERSION {
                    return Err(corrupt(line_no, format!("unknown journal version {v}")));
                }
                out.event = Some(event.clone());
            }
            (Record::Open { .. }, _) => {
                return Err(corrupt(line_no, "second open record".into()));
            }
            (_, 1) => return Err(corrupt(line_no, "first record is not open".into())),
            (rec, _) => {
                out.state
                    .apply(rec)
                    .map_err(|reason| corrupt(line_no, reason))?;
                match rec {
                    Record::Stock { .. } => out.stock_recorded = true,
                    Record::Issue { .. } => out.issues.push(rec.clone()),
                    _ => {}
                }
            }
        }
        offset = next;
        out.good_len = offset as u64;
    }
    Ok(out)
}

/// Whether any complete line in `bytes` decodes.
fn any_good_line(bytes: &[u8]) -> bool {
    let mut rest = bytes;
    while let Some(i) = memchr::memchr(b'\n', rest) {
        if decode(&rest[..i]).is_some() {
            return true;
        }
        rest = &rest[i + 1..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(rec: &Record) -> Vec<u8> {
        let mut v = Vec::new();
        encode(rec, &mut v);
        v
    }

    #[test]
    fn round_trip_and_damage() {
        let rec = Record::Reserve {
            seq: 7,
            id: "a\"b\nc".into(),
            key: "k".into(),
        };
        let l = line(&rec);
        assert_eq!(l.iter().filter(|&&b| b == b'\n').count(), 1);
        assert_eq!(decode(&l[..l.len() - 1]), Some(rec));
        let mut bad = l.clone();
        bad[12] ^= 1;
        assert_eq!(decode(&bad[..bad.len() - 1]), None);
        assert_eq!(decode(b""), None);
        assert_eq!(decode(b"zzzzzzzz {}"), None);
    }

    #[test]
    fn torn_tail_dropped_middle_damage_refused() {
        let p = Path::new("j");
        let mut bytes = line(&Record::Open {
            event: "e".into(),
            v: VERSION,
        });
        bytes.extend(line(&Record::Stock { n: 3 }));
        let good = bytes.len() as u64;
        let third = line(&Record::Reserve {
            seq: 0,
            id: "x".into(),
            key: "k".into(),
        });
        let mut torn = bytes.clone();
        torn.extend_from_slice(&third[..third.len() / 2]);
        let r = replay(p, &torn).expect("torn tail is repaired");
        assert_eq!((r.good_len, r.torn_line), (good, Some(3)));
        assert_eq!(r.state.stock, 3);

        let mut middle = bytes.clone();
        middle.extend_from_slice(b"00000000 garbage\n");
        middle.extend(third);
        assert!(matches!(
            replay(p, &middle),
            Err(StoreError::Corrupt { line: 3, .. })
        ));
    }
}
