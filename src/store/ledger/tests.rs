//! Ledger tests over real files in a temporary directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::local::{AUDIT_FILE, JOURNAL_FILE};
use super::*;

/// A fresh directory under the system temp dir, removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(name: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("usher-vouchers-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn pending(r: Reservation) -> PendingClaim {
    match r {
        Reservation::Pending(p) => p,
        other => panic!("expected pending, got {other:?}"),
    }
}

#[tokio::test]
async fn reserve_complete_and_repeat() {
    let dir = TempDir::new("basic");
    let l = Ledger::open(dir.path(), "spring", 2).expect("open");
    assert_eq!((l.remaining(), l.issued_count(), l.stock()), (2, 0, 2));

    let a = pending(l.reserve("alice").await.expect("reserve"));
    assert_eq!(a.seq, 0);
    assert_eq!(a.idempotency_key, idempotency_key("spring", "alice"));
    assert_eq!(
        l.reserve("alice").await.expect("again"),
        Reservation::Pending(a.clone())
    );
    assert_eq!(l.remaining(), 1);
    assert_eq!(l.pending(), vec![a.clone()]);

    l.complete("alice", "CODE-A", "test")
        .await
        .expect("complete");
    l.complete("alice", "CODE-A", "test")
        .await
        .expect("same code twice is a no-op");
    assert!(matches!(
        l.complete("alice", "CODE-X", "test").await,
        Err(StoreError::Conflict)
    ));
    match l.reserve("alice").await.expect("repeat") {
        Reservation::Issued(c) => assert_eq!((c.seq, c.code.as_str()), (0, "CODE-A")),
        other => panic!("{other:?}"),
    }
    assert_eq!((l.remaining(), l.issued_count()), (1, 1));
    assert!(l.pending().is_empty());

    let b = pending(l.reserve("bob").await.expect("bob"));
    assert_eq!(b.seq, 1);
    assert!(matches!(
        l.complete("bob", "CODE-A", "test").await,
        Err(StoreError::DuplicateCode)
    ));
    assert_eq!(
        l.reserve("carol").await.expect("carol"),
        Reservation::SoldOut
    );
    assert!(
        l.lookup("carol").is_none(),
        "a sold-out claim costs no memory"
    );
    assert!(matches!(
        l.complete("carol", "C", "test").await,
        Err(StoreError::NotPending)
    ));
    assert!(matches!(l.reserve("").await, Err(StoreError::BadIdentity)));
    assert!(matches!(
        l.reserve(&"x".repeat(MAX_IDENTITY_LEN + 1)).await,
        Err(StoreError::BadIdentity)
    ));
    assert!(matches!(
        l.complete("bob", "bad\ncode", "test").await,
        Err(StoreError::BadCode)
    ));
}

#[tokio::test]
async fn refusal_and_sold_out_release_units() {
    let dir = TempDir::new("release");
    let l = Ledger::open(dir.path(), "e", 3).expect("open");
    pending(l.reserve("a").await.expect("a"));
    pending(l.reserve("b").await.expect("b"));
    assert_eq!(l.remaining(), 1);

    l.refuse("a", &format!("too young{}", "!".repeat(500)))
        .await
        .expect("refuse");
    assert_eq!(l.remaining(), 2, "a refusal gives the unit back");
    match l.reserve("a").await.expect("a again") {
        Reservation::Refused(why) => {
            assert!(why.starts_with("too young") && why.len() == MAX_REASON_LEN)
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        l.refuse("a", "x").await,
        Err(StoreError::NotPending)
    ));

    l.release_sold_out("b").await.expect("sold out");
    assert_eq!(l.remaining(), 0, "the issuer's sold out is final");
    assert_eq!(l.reserve("b").await.expect("b"), Reservation::SoldOut);
    assert_eq!(l.reserve("new").await.expect("new"), Reservation::SoldOut);
    drop(l);

    let l = Ledger::open(dir.path(), "e", 3).expect("reopen");
    assert_eq!(l.remaining(), 0);
    assert!(matches!(l.lookup("a"), Some(Reservation::Refused(_))));
    assert!(l.lookup("b").is_none());
}

#[tokio::test]
async fn state_survives_reopen_and_stock_changes() {
    let dir = TempDir::new("reopen");
    {
        let l = Ledger::open(dir.path(), "e", 10).expect("open");
        for i in 0..4 {
            pending(l.reserve(&format!("id{i}")).await.expect("reserve"));
        }
        l.complete("id1", "C1", "pool").await.expect("complete");
        assert!(matches!(
            Ledger::open(dir.path(), "e", 10),
            Err(StoreError::Locked { .. })
        ));
    }
    let l = Ledger::open(dir.path(), "e", 5).expect("reopen with less stock");
    assert_eq!((l.stock(), l.remaining(), l.issued_count()), (5, 1, 1));
    let seqs: Vec<u64> = l.pending().iter().map(|p| p.seq).collect();
    assert_eq!(seqs, vec![0, 2, 3]);
    assert_eq!(pending(l.reserve("id9").await.expect("next")).seq, 4);
    drop(l);

    assert!(matches!(
        Ledger::open(dir.path(), "other", 5),
        Err(StoreError::WrongEvent { .. })
    ));
    let report = audit_check(dir.path()).expect("audit");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.stock, report.issued, report.pending), (5, 1, 4));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reservations_share_syncs() {
    let dir = TempDir::new("group");
    let l = Arc::new(Ledger::open(dir.path(), "e", 2_000).expect("open"));
    let tasks: Vec<_> = (0..2_000)
        .map(|i| {
            let l = l.clone();
            tokio::spawn(
                async move { pending(l.reserve(&format!("id{i}")).await.expect("reserve")) },
            )
        })
        .collect();
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("task").seq);
    }
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (0..2_000).collect::<Vec<_>>(),
        "dense, unique sequence numbers"
    );
    let syncs = l.syncs();
    eprintln!("2000 reservations in {syncs} syncs");
    assert!(
        syncs < 1_000,
        "group commit: {syncs} syncs for 2000 reservations"
    );
}

#[tokio::test]
async fn failed_write_changes_nothing() {
    let dir = TempDir::new("enospc");
    let l = Ledger::open(dir.path(), "e", 5).expect("open");
    pending(l.reserve("a").await.expect("a"));

    l.fail_next_writes(1);
    assert!(matches!(l.reserve("b").await, Err(StoreError::Write(_))));
    assert!(l.lookup("b").is_none());
    assert_eq!(
        l.remaining(),
        4,
        "the failed reservation gave its unit back"
    );
    assert_eq!(
        pending(l.reserve("b").await.expect("retry")).seq,
        1,
        "seq stays dense"
    );

    l.fail_next_writes(1);
    assert!(matches!(
        l.complete("a", "CODE-A", "pool").await,
        Err(StoreError::Write(_))
    ));
    assert!(
        matches!(l.lookup("a"), Some(Reservation::Pending(_))),
        "not issued unless durable"
    );
    assert_eq!(l.issued_count(), 0);
    l.complete("a", "CODE-A", "pool")
        .await
        .expect("complete after the disk recovers");
    drop(l);

    // The half-written records were cut: the journal replays cleanly.
    let l = Ledger::open(dir.path(), "e", 5).expect("reopen");
    assert_eq!(l.issued_count(), 1);
    assert_eq!(l.pending().len(), 1);
    drop(l);
    let report = audit_check(dir.path()).expect("audit");
    assert!(report.is_ok() && !report.torn_journal_tail, "{report:?}");
}

#[test]
fn unwritable_directory_is_an_error() {
    let dir = TempDir::new("rodir");
    // A directory where the journal should be: opening it for writing fails
    // for every user, root included.
    std::fs::create_dir(dir.path().join(JOURNAL_FILE)).expect("mkdir");
    assert!(matches!(
        Ledger::open(dir.path(), "e", 1),
        Err(StoreError::Io { .. })
    ));

    use std::os::unix::fs::PermissionsExt as _;
    let ro = TempDir::new("rodir2");
    let perms = std::fs::Permissions::from_mode(0o555);
    std::fs::set_permissions(ro.path(), perms).expect("chmod");
    let writable = std::fs::write(ro.path().join("probe"), b"x").is_ok();
    let res = Ledger::open(ro.path(), "e", 1);
    // Root writes anyway; the check only means something for other users.
    if !writable {
        assert!(matches!(res, Err(StoreError::Io { .. })), "{res:?}");
    }
    drop(res);
    let _ = std::fs::set_permissions(ro.path(), std::fs::Permissions::from_mode(0o755));
}

#[tokio::test]
async fn audit_check_finds_disagreements() {
    let dir = TempDir::new("audit");
    {
        let l = Ledger::open(dir.path(), "e", 3).expect("open");
        for (id, code) in [("a", "CA"), ("b", "CB")] {
            pending(l.reserve(id).await.expect("reserve"));
            l.complete(id, code, "pool").await.expect("complete");
        }
    }
    let report = audit_check(dir.path()).expect("audit");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!((report.issued, report.audit_lines), (2, 2));

    let audit = dir.path().join(AUDIT_FILE);
    let text = std::fs::read_to_string(&audit).expect("read audit");
    assert!(text.contains(&identity_hash("a")) && !text.contains("\"a\""));
    let first = text.lines().next().expect("a line").to_owned();
    // A forged extra line: the code twice, and not in the journal.
    let forged = first.replace(&identity_hash("a"), &identity_hash("z"));
    std::fs::write(&audit, format!("{text}{forged}\n")).expect("write");
    let report = audit_check(dir.path()).expect("audit");
    assert!(!report.is_ok());
    assert!(
        report.problems.iter().any(|p| p.contains("appears twice")),
        "{report:?}"
    );
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains("not in the journal")),
        "{report:?}"
    );

    // A line lost: reported, then restored from the journal at open.
    let second = text.lines().nth(1).expect("two lines");
    std::fs::write(&audit, format!("{first}\n")).expect("write");
    let report = audit_check(dir.path()).expect("audit");
    assert!(
        report.problems.iter().any(|p| p.contains("missing")),
        "{report:?}"
    );
    drop(Ledger::open(dir.path(), "e", 3).expect("reopen repairs"));
    let repaired = std::fs::read_to_string(&audit).expect("read audit");
    assert_eq!(
        repaired,
        format!("{first}\n{second}\n"),
        "same time as the original"
    );
    assert!(audit_check(dir.path()).expect("audit").is_ok());
    assert!(dir.path().join(JOURNAL_FILE).exists());
}
