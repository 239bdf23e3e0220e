//! The audit log (one JSON line per voucher issued) and the check behind
//! `usher voucher audit`.
//!
//! The journal is the truth; the audit log is written right after each group
//! commit and repaired from the journal at open (a crash between the two, or
//! a failed audit write, leaves lines missing until then). Each line:
//!
//! ```text
//! {"time":"2025-06-01T09:00:00.123Z","event":"spring","seq":0,
//!  "identity_sha256":"9f86…","code":"SPRING-…","plugin":"pool"}
//! ```

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::journal::{self, Record};
use super::local::{AUDIT_FILE, JOURNAL_FILE};
use super::state::Entry;
use super::writer::Appender;
use super::{identity_hash, StoreError};

/// Most problems listed in a report; the count goes on past it.
const MAX_PROBLEMS: usize = 100;

/// One audit line.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct AuditLine {
    time: String,
    event: String,
    seq: u64,
    identity_sha256: String,
    code: String,
    plugin: String,
}

/// Appends the audit line of an `iss` record to `out`; other records add nothing.
pub(crate) fn encode_issue(event: &str, rec: &Record, out: &mut Vec<u8>) {
    let Record::Issue {
        seq,
        id,
        code,
        plugin,
        at,
    } = rec
    else {
        return;
    };
    let line = AuditLine {
        time: humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(*at)).to_string(),
        event: event.to_owned(),
        seq: *seq,
        identity_sha256: identity_hash(id),
        code: code.clone(),
        plugin: plugin.clone(),
    };
    // Strings and integers only: cannot fail.
    serde_json::to_writer(&mut *out, &line).expect("audit lines serialize");
    out.push(b'\n');
}

/// The audit line of a code issued at `at_ms`, cut around its sequence
/// number: `prefix + SEQ + suffix` is the line (without newline). The shared
/// ledger in Redis knows the number only inside its script, which joins the
/// parts, so both ledgers write the same line.
pub(crate) fn line_around_seq(
    event: &str,
    at_ms: u64,
    identity: &str,
    code: &str,
    plugin: &str,
) -> (String, String) {
    let line = AuditLine {
        time: humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(at_ms))
            .to_string(),
        event: event.to_owned(),
        seq: 0,
        identity_sha256: identity_hash(identity),
        code: code.to_owned(),
        plugin: plugin.to_owned(),
    };
    let json = serde_json::to_string(&line).expect("audit lines serialize");
    // Inside JSON strings every `"` is escaped, so the first `"seq":0,` is the field.
    let (head, tail) = json
        .split_once("\"seq\":0,")
        .expect("the audit line has a seq field");
    (format!("{head}\"seq\":"), format!(",{tail}"))
}

/// Parses one audit line (for the shared ledger's audit list): its sequence
/// number, identity hash and code.
pub fn parse_line(line: &str) -> Option<(u64, String, String)> {
    let l: AuditLine = serde_json::from_str(line).ok()?;
    Some((l.seq, l.identity_sha256, l.code))
}

/// The audit log's lines, the length of its whole lines (a torn last line,
/// without its newline, is left out), and the 1-based numbers of whole lines
/// that did not parse.
fn parse(bytes: &[u8]) -> (Vec<AuditLine>, u64, Vec<u64>) {
    let mut lines = Vec::new();
    let mut bad = Vec::new();
    let mut good_len = 0;
    let mut rest = bytes;
    let mut n = 0;
    while let Some(i) = memchr::memchr(b'\n', rest) {
        n += 1;
        match serde_json::from_slice::<AuditLine>(&rest[..i]) {
            Ok(l) => lines.push(l),
            Err(_) => bad.push(n),
        }
        rest = &rest[i + 1..];
        good_len = (bytes.len() - rest.len()) as u64;
    }
    (lines, good_len, bad)
}

/// Opens the audit log, cuts a torn tail, and appends the lines of issued
/// claims it lacks.
pub(crate) fn open_and_repair(
    dir: &Path,
    event: &str,
    issues: &[Record],
) -> Result<Appender, StoreError> {
    let path = dir.join(AUDIT_FILE);
    let io = |e| StoreError::io(&path, e);
    let (mut file, bytes) = super::open_append(&path)?;
    let (lines, good_len, bad) = parse(&bytes);
    if !bad.is_empty() {
        tracing::warn!(path = %path.display(), lines = ?bad, "voucher audit log has damaged lines");
    }
    if good_len != bytes.len() as u64 {
        tracing::warn!(path = %path.display(), "voucher audit log had a torn last line; cut");
        file.set_len(good_len).map_err(io)?;
    }
    let have: HashSet<u64> = lines.iter().map(|l| l.seq).collect();
    let mut missing = Vec::new();
    for rec in issues {
        if matches!(rec, Record::Issue { seq, .. } if !have.contains(seq)) {
            encode_issue(event, rec, &mut missing);
        }
    }
    if !missing.is_empty() {
        tracing::warn!(path = %path.display(), "voucher audit log was missing lines; restored from the journal");
        file.write_all(&missing).map_err(io)?;
    }
    file.sync_data().map_err(io)?;
    Ok(Appender {
        file,
        path,
        len: good_len + missing.len() as u64,
    })
}

/// What `usher voucher audit` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditReport {
    /// The event of the ledger.
    pub event: String,
    /// The last recorded stock.
    pub stock: u64,
    /// Claims issued, per the journal.
    pub issued: u64,
    /// Claims reserved but without a code yet (finished by `recover`).
    pub pending: u64,
    /// Identities the issuer refused.
    pub refused: u64,
    /// Whether the issuer declared itself sold out.
    pub exhausted: bool,
    /// Lines in the audit log.
    pub audit_lines: u64,
    /// Whether the journal ends in a torn record (repaired at the next open).
    pub torn_journal_tail: bool,
    /// Every disagreement found (at most 100 listed).
    pub problems: Vec<String>,
    /// How many problems there were in all.
    pub problem_count: u64,
}

impl AuditReport {
    /// Whether journal and audit log agree and every invariant holds.
    pub fn is_ok(&self) -> bool {
        self.problem_count == 0
    }

    pub(crate) fn problem(&mut self, p: String) {
        self.problem_count += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(p);
        }
    }
}

/// Checks a ledger directory without changing it: the audit log and the
/// journal hold the same (identity hash, code) pairs, no code and no identity
/// appears twice, and no more codes were issued than the stock. Safe to run
/// while usher has the ledger open (it only reads). Lines missing from the
/// audit log after a crash are reported until the next open restores them.
pub fn audit_check(dir: &Path) -> Result<AuditReport, StoreError> {
    let jpath = dir.join(JOURNAL_FILE);
    let bytes = fs::read(&jpath).map_err(|e| StoreError::io(&jpath, e))?;
    let rep = journal::replay(&jpath, &bytes)?;
    let apath = dir.join(AUDIT_FILE);
    let abytes = match fs::read(&apath) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(StoreError::io(&apath, e)),
    };
    let (lines, _, bad) = parse(&abytes);

    let event = rep.event.clone().unwrap_or_default();
    let mut r = AuditReport {
        event: event.clone(),
        stock: rep.state.stock,
        issued: rep.state.issued,
        exhausted: rep.state.exhausted,
        audit_lines: lines.len() as u64,
        torn_journal_tail: rep.torn_line.is_some(),
        ..AuditReport::default()
    };
    for e in rep.state.claims.values() {
        match e {
            Entry::Pending { .. } => r.pending += 1,
            Entry::Refused { .. } => r.refused += 1,
            _ => {}
        }
    }
    for n in bad {
        r.problem(format!("audit log line {n} is damaged"));
    }
    if r.issued > r.stock {
        r.problem(format!(
            "{} codes issued for a stock of {}",
            r.issued, r.stock
        ));
    }

    // Journal side: replay already refused a code issued twice.
    let mut journal: HashMap<(String, String), u64> = HashMap::new();
    for rec in &rep.issues {
        if let Record::Issue { seq, id, code, .. } = rec {
            journal.insert((identity_hash(id), code.clone()), *seq);
        }
    }
    let mut codes = HashSet::new();
    let mut identities = HashSet::new();
    let mut audit = HashSet::new();
    for l in &lines {
        if l.event != event {
            r.problem(format!("audit seq {}: event {:?}", l.seq, l.event));
        }
        if !codes.insert(l.code.as_str()) {
            r.problem(format!("audit: code of seq {} appears twice", l.seq));
        }
        if !identities.insert(l.identity_sha256.as_str()) {
            r.problem(format!(
                "audit: identity {} holds two codes",
                l.identity_sha256
            ));
        }
        let pair = (l.identity_sha256.clone(), l.code.clone());
        match journal.get(&pair) {
            Some(seq) if *seq == l.seq => {}
            Some(seq) => r.problem(format!("audit seq {} is seq {seq} in the journal", l.seq)),
            None => r.problem(format!("audit seq {} is not in the journal", l.seq)),
        }
        audit.insert(pair);
    }
    let mut missing: Vec<u64> = journal
        .iter()
        .filter(|(pair, _)| !audit.contains(*pair))
        .map(|(_, seq)| *seq)
        .collect();
    missing.sort_unstable();
    for seq in missing {
        r.problem(format!("journal seq {seq} is missing from the audit log"));
    }
    Ok(r)
}

#[cfg(test)]
#[test]
fn the_shared_ledger_writes_the_same_audit_line() {
    let rec = Record::Issue {
        seq: 42,
        id: "user \"x\" seq:0,".into(),
        code: "C\"seq\":0,D".into(),
        plugin: "pool".into(),
        at: 1_700_000_000_123,
    };
    let mut local = Vec::new();
    encode_issue("e\"seq\":0,", &rec, &mut local);
    let (head, tail) = line_around_seq(
        "e\"seq\":0,",
        1_700_000_000_123,
        "user \"x\" seq:0,",
        "C\"seq\":0,D",
        "pool",
    );
    assert_eq!(format!("{head}42{tail}\n").as_bytes(), &local[..]);
    let (seq, _, code) = parse_line(&format!("{head}42{tail}")).expect("parses");
    assert_eq!((seq, code.as_str()), (42, "C\"seq\":0,D"));
}
