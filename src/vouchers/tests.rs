//! Claim service tests: real ledger files, a crowd on the multi-thread
//! runtime, crashes, and a scripted issuer for the issuer's answers.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::{Notify, Semaphore};

use super::*;
use crate::store::tests::TempDir;
use crate::store::{Ledger, Reservation};

/// An issuer whose answers are scripted; once the script is empty it issues
/// a code derived from the key. With a gate, each call waits for a permit.
#[derive(Default)]
struct Scripted {
    script: Mutex<VecDeque<IssueOutcome>>,
    calls: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    keys: Mutex<Vec<String>>,
    gate: Option<Semaphore>,
    entered: Notify,
}

impl Scripted {
    fn with(script: Vec<IssueOutcome>) -> Scripted {
        Scripted {
            script: Mutex::new(script.into()),
            ..Scripted::default()
        }
    }

    fn gated() -> Scripted {
        Scripted {
            gate: Some(Semaphore::new(0)),
            ..Scripted::default()
        }
    }
}

impl VoucherIssuer for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    fn issue<'a>(&'a self, claim: &'a Claim) -> BoxFuture<'a, IssueOutcome> {
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            self.keys
                .lock()
                .unwrap()
                .push(claim.idempotency_key.clone());
            self.entered.notify_one();
            if let Some(gate) = &self.gate {
                gate.acquire().await.expect("gate open").forget();
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            let next = self.script.lock().unwrap().pop_front();
            next.unwrap_or_else(|| IssueOutcome::Issued {
                code: format!("S-{}", &claim.idempotency_key[..16]),
                meta: serde_json::Value::Null,
            })
        })
    }
}

fn pool_text(n: usize) -> String {
    (0..n).map(|i| format!("POOL-{i:05}\n")).collect()
}

fn ctx() -> ClaimContext {
    ClaimContext::default()
}

/// 5,000 concurrent claims from 2,000 identities for 1,000 vouchers.
async fn crowd(issuer: Arc<dyn VoucherIssuer>, dir: &TempDir) -> HashMap<String, String> {
    const STOCK: u64 = 1_000;
    let ledger = Ledger::open(dir.path(), "spring", STOCK).expect("open");
    let v = Arc::new(Vouchers::new(ledger, issuer));
    let started = Instant::now();
    let tasks: Vec<_> = (0..5_000u64)
        .map(|i| {
            let v = v.clone();
            // Spread each identity's repeats across the crowd.
            let id = format!("user{}", (i * 7_919) % 2_000);
            tokio::spawn(async move {
                let r = v.claim(&id, &ctx()).await;
                (id, r)
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.expect("claim task"));
    }
    let elapsed = started.elapsed();
    eprintln!(
        "{}: 5000 claims in {:?} = {:.0} claims/s (debug build), {} syncs",
        v.local().event(),
        elapsed,
        5_000.0 / elapsed.as_secs_f64(),
        v.local().syncs()
    );

    let mut codes: HashMap<String, String> = HashMap::new();
    let mut sold_out = HashSet::new();
    let mut fresh = 0;
    for (id, r) in results {
        match r {
            ClaimResult::Issued { code, fresh: f } => {
                fresh += usize::from(f);
                let prev = codes.insert(id.clone(), code.clone());
                assert!(prev.is_none_or(|p| p == code), "{id} got two codes");
            }
            ClaimResult::SoldOut => {
                sold_out.insert(id);
            }
            other => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!(codes.len(), 1_000, "exactly the stock is issued");
    assert_eq!(fresh, 1_000, "each code issued once");
    assert!(
        codes.keys().all(|id| !sold_out.contains(id)),
        "sold out and issued for one identity"
    );
    let distinct: HashSet<&String> = codes.values().collect();
    assert_eq!(distinct.len(), 1_000, "no code twice");
    assert_eq!(codes.len() + sold_out.len(), 2_000);
    assert_eq!((v.remaining(), v.local().issued_count()), (0, 1_000));
    assert!(v.local().pending().is_empty());
    assert_eq!(v.busy_len(), 0, "the per-identity locks are gone");

    // Everyone asks again: same answers.
    for i in 0..2_000 {
        let id = format!("user{i}");
        match (v.claim(&id, &ctx()).await, codes.get(&id)) {
            (ClaimResult::Issued { code, fresh: false }, Some(c)) => assert_eq!(&code, c),
            (ClaimResult::SoldOut, None) => {}
            (r, c) => panic!("{id}: {r:?} after {c:?}"),
        }
    }
    drop(v);
    let report = audit_check(dir.path()).expect("audit");
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(
        (report.issued, report.audit_lines, report.pending),
        (1_000, 1_000, 0)
    );
    codes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crowd_pool() {
    let dir = TempDir::new("crowd-pool");
    let pool = PoolIssuer::parse(&pool_text(1_000)).expect("pool");
    let codes = crowd(Arc::new(pool), &dir).await;
    let issued: HashSet<String> = codes.into_values().collect();
    let all: HashSet<String> = pool_text(1_000).lines().map(str::to_owned).collect();
    assert_eq!(issued, all, "the whole pool, each code once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crowd_signed() {
    let dir = TempDir::new("crowd-signed");
    let key = VoucherKey::from_secret(&[3u8; 32]).expect("key");
    let issuer = SignedIssuer::new("SPRING", key.clone()).expect("issuer");
    let codes = crowd(Arc::new(issuer), &dir).await;
    let mut seqs = HashSet::new();
    for (id, code) in codes {
        let info = verify_signed(&code, &key).expect("verifies offline");
        assert!(info.matches_identity(&id));
        assert!(info.seq < 1_000 && seqs.insert(info.seq));
    }
}

#[tokio::test]
async fn crash_between_reserve_and_record_recovers_same_codes() {
    let dir = TempDir::new("crash");
    let text = pool_text(10);
    let mut expected = HashMap::new();
    {
        let pool = Arc::new(PoolIssuer::parse(&text).expect("pool"));
        let v = Vouchers::new(
            Ledger::open(dir.path(), "e", 10).expect("open"),
            pool.clone(),
        );
        for id in ["a", "b", "c"] {
            let ClaimResult::Issued { code, .. } = v.claim(id, &ctx()).await else {
                panic!("issued");
            };
            expected.insert(id.to_owned(), code);
        }
        for id in ["d", "e", "f"] {
            let Ok(Reservation::Pending(p)) = v.local().reserve(id).await else {
                panic!("pending");
            };
            // The plugin ran and answered; the process died before recording.
            let claim = Claim {
                event: "e".into(),
                identity: id.into(),
                idempotency_key: p.idempotency_key,
                seq: p.seq,
                client_ip: None,
                user_agent: None,
            };
            let IssueOutcome::Issued { code, .. } = pool.issue(&claim).await else {
                panic!("pool issues");
            };
            expected.insert(id.to_owned(), code);
        }
    }
    // And the last write was torn: half of a record with a wrong code.
    let journal = dir.path().join(crate::store::ledger::local::JOURNAL_FILE);
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .expect("journal");
    std::io::Write::write_all(
        &mut f,
        b"0badc0de {\"t\":\"iss\",\"seq\":3,\"id\":\"d\",\"code\":\"EV",
    )
    .expect("torn");
    drop(f);

    let pool = Arc::new(PoolIssuer::parse(&text).expect("pool"));
    let v = Vouchers::new(Ledger::open(dir.path(), "e", 10).expect("reopen"), pool);
    assert_eq!(v.local().pending().len(), 3);
    let report = v.recover().await;
    assert_eq!(
        report,
        RecoveryReport {
            pending: 3,
            issued: 3,
            released: 0,
            still_pending: 0
        }
    );
    for (id, code) in &expected {
        match v.claim(id, &ctx()).await {
            ClaimResult::Issued {
                code: c,
                fresh: false,
            } => assert_eq!(&c, code, "{id}"),
            other => panic!("{id}: {other:?}"),
        }
    }
    assert_eq!((v.local().issued_count(), v.remaining()), (6, 4));
    drop(v);
    let audit = audit_check(dir.path()).expect("audit");
    assert!(audit.is_ok() && audit.issued == 6, "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_identity_never_runs_the_issuer_twice_at_once() {
    let dir = TempDir::new("double-click");
    let issuer = Arc::new(Scripted::gated());
    let v = Arc::new(Vouchers::new(
        Ledger::open(dir.path(), "e", 5).expect("open"),
        issuer.clone(),
    ));
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let v = v.clone();
            tokio::spawn(async move { v.claim("x", &ctx()).await })
        })
        .collect();
    issuer.entered.notified().await;
    issuer.gate.as_ref().expect("gated").add_permits(10);
    let mut codes = HashSet::new();
    for t in tasks {
        match t.await.expect("task") {
            ClaimResult::Issued { code, .. } => codes.insert(code),
            other => panic!("{other:?}"),
        };
    }
    assert_eq!(codes.len(), 1);
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
    assert_eq!(issuer.max_in_flight.load(Ordering::SeqCst), 1);
    assert_eq!((v.remaining(), v.busy_len()), (4, 0));
}

#[tokio::test]
async fn retry_later_keeps_the_unit_and_the_key() {
    let dir = TempDir::new("retry");
    let later = || IssueOutcome::RetryLater("issuer down".into());
    let issuer = Arc::new(Scripted::with(vec![later(), later()]));
    let v = Vouchers::new(
        Ledger::open(dir.path(), "e", 3).expect("open"),
        issuer.clone(),
    );
    for _ in 0..2 {
        assert!(
            matches!(v.claim("x", &ctx()).await, ClaimResult::RetryLater(r) if r == "issuer down")
        );
        assert_eq!(v.remaining(), 2, "the pending claim keeps its unit");
        assert_eq!(v.local().pending().len(), 1);
    }
    assert!(matches!(
        v.claim("x", &ctx()).await,
        ClaimResult::Issued { fresh: true, .. }
    ));
    let keys = issuer.keys.lock().unwrap().clone();
    assert_eq!(keys, vec![idempotency_key("e", "x"); 3]);
    assert_eq!(v.local().pending().len(), 0);
}

#[tokio::test]
async fn issuer_sold_out_ends_the_event() {
    let dir = TempDir::new("issuer-sold-out");
    let issuer = Arc::new(Scripted::with(vec![IssueOutcome::SoldOut]));
    let v = Vouchers::new(
        Ledger::open(dir.path(), "e", 100).expect("open"),
        issuer.clone(),
    );
    assert!(matches!(v.claim("x", &ctx()).await, ClaimResult::SoldOut));
    assert_eq!(v.remaining(), 0);
    assert!(v.local().lookup("x").is_none(), "the unit was released");
    assert!(matches!(v.claim("y", &ctx()).await, ClaimResult::SoldOut));
    assert!(matches!(v.claim("x", &ctx()).await, ClaimResult::SoldOut));
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1, "not asked again");
}

#[tokio::test]
async fn not_eligible_is_kept_and_frees_the_unit() {
    let dir = TempDir::new("not-eligible");
    let no = IssueOutcome::NotEligible("account too new".into());
    let issuer = Arc::new(Scripted::with(vec![no]));
    let v = Vouchers::new(
        Ledger::open(dir.path(), "e", 1).expect("open"),
        issuer.clone(),
    );
    for _ in 0..2 {
        assert!(
            matches!(v.claim("x", &ctx()).await, ClaimResult::NotEligible(r) if r == "account too new")
        );
    }
    assert_eq!(issuer.calls.load(Ordering::SeqCst), 1);
    assert_eq!(v.remaining(), 1);
    assert!(matches!(
        v.claim("y", &ctx()).await,
        ClaimResult::Issued { .. }
    ));
}

#[tokio::test]
async fn dropped_claim_stays_pending_and_leaks_no_lock() {
    let dir = TempDir::new("cancel");
    let issuer = Arc::new(Scripted::gated());
    let v = Arc::new(Vouchers::new(
        Ledger::open(dir.path(), "e", 2).expect("open"),
        issuer.clone(),
    ));
    let first = tokio::spawn({
        let v = v.clone();
        async move { v.claim("x", &ctx()).await }
    });
    issuer.entered.notified().await;
    // A second click waits for the first's turn; then both go away.
    let second = tokio::spawn({
        let v = v.clone();
        async move { v.claim("x", &ctx()).await }
    });
    tokio::task::yield_now().await;
    first.abort();
    second.abort();
    assert!(first.await.is_err_and(|e| e.is_cancelled()));
    let _ = second.await;
    assert_eq!(v.busy_len(), 0);
    assert!(matches!(
        v.local().lookup("x"),
        Some(Reservation::Pending(_))
    ));

    issuer.gate.as_ref().expect("gated").add_permits(1);
    assert!(matches!(
        v.claim("x", &ctx()).await,
        ClaimResult::Issued { fresh: true, .. }
    ));
    assert_eq!(v.remaining(), 1);
}

#[tokio::test]
async fn ledger_errors_hand_out_nothing() {
    let dir = TempDir::new("store-error");
    let pool = Arc::new(PoolIssuer::parse(&pool_text(3)).expect("pool"));
    let v = Vouchers::new(Ledger::open(dir.path(), "e", 3).expect("open"), pool);
    let long = "x".repeat(crate::store::MAX_IDENTITY_LEN + 1);
    assert!(matches!(
        v.claim(&long, &ctx()).await,
        ClaimResult::Unavailable(crate::store::StoreError::BadIdentity)
    ));
    assert_eq!(v.busy_len(), 0);

    v.local().fail_next_writes(1);
    assert!(matches!(
        v.claim("x", &ctx()).await,
        ClaimResult::Unavailable(crate::store::StoreError::Write(_))
    ));
    assert!(v.local().lookup("x").is_none());

    assert!(matches!(
        v.local().reserve("x").await,
        Ok(Reservation::Pending(_))
    ));
    v.local().fail_next_writes(1);
    let r = v.claim("x", &ctx()).await;
    assert!(
        matches!(r, ClaimResult::Unavailable(_)),
        "code not durable, not answered: {r:?}"
    );
    assert!(matches!(
        v.local().lookup("x"),
        Some(Reservation::Pending(_))
    ));
    match v.claim("x", &ctx()).await {
        ClaimResult::Issued { code, fresh: true } => assert_eq!(code, "POOL-00000"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn observer_sees_every_claim() {
    #[derive(Default)]
    struct Seen(Mutex<Vec<(&'static str, bool, u64)>>);
    impl ClaimObserver for Seen {
        fn on_claim(&self, r: &ClaimResult, t: Option<std::time::Duration>, remaining: u64) {
            self.0
                .lock()
                .unwrap()
                .push((r.label(), t.is_some(), remaining));
        }
    }
    let dir = TempDir::new("observer");
    let seen = Arc::new(Seen::default());
    let pool = Arc::new(PoolIssuer::parse(&pool_text(1)).expect("pool"));
    let v = Vouchers::new(Ledger::open(dir.path(), "e", 1).expect("open"), pool)
        .with_observer(seen.clone());
    v.claim("a", &ctx()).await;
    v.claim("a", &ctx()).await;
    v.claim("b", &ctx()).await;
    let got = seen.0.lock().unwrap().clone();
    assert_eq!(
        got,
        vec![
            ("issued", true, 0),
            ("repeat", false, 0),
            ("sold_out", false, 0)
        ]
    );
    assert!(got.iter().all(|(l, ..)| ClaimResult::LABELS.contains(l)));
}
