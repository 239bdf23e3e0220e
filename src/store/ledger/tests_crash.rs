//! Crash shapes written by hand: torn records, zero-filled tails, damage.

use std::fs::OpenOptions;
use std::io::Write as _;

use super::journal::{encode, Record};
use super::local::{AUDIT_FILE, JOURNAL_FILE};
use super::tests::TempDir;
use super::*;

fn append(path: &std::path::Path, bytes: &[u8]) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(bytes).expect("append");
}

async fn two_claims(dir: &std::path::Path) {
    let l = Ledger::open(dir, "e", 5).expect("open");
    for id in ["a", "b"] {
        assert!(matches!(l.reserve(id).await, Ok(Reservation::Pending(_))));
    }
    l.complete("a", "CODE-A", "pool").await.expect("complete");
}

#[tokio::test]
async fn torn_records_are_cut_at_open() {
    let dir = TempDir::new("torn");
    two_claims(dir.path()).await;
    let journal = dir.path().join(JOURNAL_FILE);
    let len = std::fs::metadata(&journal).expect("stat").len();

    // The crash hit while "b" was being issued: half its record made it.
    let mut rec = Vec::new();
    let issue = Record::Issue {
        seq: 1,
        id: "b".into(),
        code: "CODE-B".into(),
        plugin: "pool".into(),
        at: 0,
    };
    encode(&issue, &mut rec);
    append(&journal, &rec[..rec.len() - 5]);
    append(&dir.path().join(AUDIT_FILE), b"{\"time\":\"2025");

    let report = audit_check(dir.path()).expect("audit reads a torn journal");
    assert!(report.torn_journal_tail && report.is_ok(), "{report:?}");

    let l = Ledger::open(dir.path(), "e", 5).expect("reopen");
    assert_eq!(std::fs::metadata(&journal).expect("stat").len(), len);
    assert_eq!(l.issued_count(), 1);
    let p = l.pending();
    assert_eq!((p.len(), p[0].identity.as_str(), p[0].seq), (1, "b", 1));
    l.complete("b", "CODE-B", "pool").await.expect("finish b");
    drop(l);
    let report = audit_check(dir.path()).expect("audit");
    assert!(report.is_ok() && !report.torn_journal_tail, "{report:?}");
    assert_eq!(report.issued, 2);
}

#[tokio::test]
async fn zero_filled_tail_is_cut() {
    // What a file system may leave after power loss: the size grew, the
    // data did not arrive.
    let dir = TempDir::new("zeros");
    two_claims(dir.path()).await;
    append(&dir.path().join(JOURNAL_FILE), &[0u8; 4096]);
    let l = Ledger::open(dir.path(), "e", 5).expect("reopen");
    assert_eq!((l.issued_count(), l.pending().len()), (1, 1));
}

#[tokio::test]
async fn torn_first_record_starts_afresh() {
    let dir = TempDir::new("torn-head");
    std::fs::write(dir.path().join(JOURNAL_FILE), b"1a2b3c4d {\"t\":\"op").expect("write");
    let l = Ledger::open(dir.path(), "e", 2).expect("open");
    assert!(matches!(l.reserve("a").await, Ok(Reservation::Pending(p)) if p.seq == 0));
}

#[tokio::test]
async fn damage_before_valid_records_stops_the_open() {
    let dir = TempDir::new("damage");
    two_claims(dir.path()).await;
    let journal = dir.path().join(JOURNAL_FILE);
    let mut bytes = std::fs::read(&journal).expect("read");
    // Flip one byte inside the third record (the reservation of "a").
    let third = bytes
        .iter()
        .enumerate()
        .filter(|(_, &b)| b == b'\n')
        .nth(1)
        .map(|(i, _)| i + 20)
        .expect("three lines");
    bytes[third] ^= 0x20;
    std::fs::write(&journal, &bytes).expect("write");
    assert!(matches!(
        Ledger::open(dir.path(), "e", 5),
        Err(StoreError::Corrupt { line: 3, .. })
    ));
    assert!(matches!(
        audit_check(dir.path()),
        Err(StoreError::Corrupt { line: 3, .. })
    ));
}

#[tokio::test]
async fn journal_lines_are_crc_and_json() {
    let dir = TempDir::new("format");
    two_claims(dir.path()).await;
    let text = std::fs::read_to_string(dir.path().join(JOURNAL_FILE)).expect("read");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    for line in &lines {
        let (crc, json) = line.split_once(' ').expect("crc and json");
        assert_eq!(crc, format!("{:08x}", crate::store::crc32(json.as_bytes())));
        assert!(serde_json::from_str::<serde_json::Value>(json).is_ok());
    }
    assert!(lines[0].contains("\"t\":\"open\"") && lines[0].contains("\"event\":\"e\""));
    assert!(lines[4].contains("\"t\":\"iss\"") && lines[4].contains("CODE-A"));
}
