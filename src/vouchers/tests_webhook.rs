//! Webhook issuer tests against a tiny idempotent issuer on a loopback
//! socket that can fail, hang, or record a code and then never answer.

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac as _};
use http_body_util::{BodyExt as _, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::Sha256;

use super::*;
use crate::store::tests::TempDir;
use crate::store::{hex, Ledger, Reservation};

const SECRET: [u8; 32] = [9; 32];

/// What the test issuer does with a request.
#[derive(Clone, Copy, Debug)]
enum Mode {
    Ok,
    Fail500,
    /// Mints (or finds) the key's code, then never answers: the issuer
    /// succeeded after usher gave up.
    RecordThenHang,
    /// Answers this status with a `reason`.
    Status(u16, Option<&'static str>),
}

#[derive(Default)]
struct Server {
    /// Idempotency key -> code, like a real idempotent issuer.
    minted: Mutex<HashMap<String, String>>,
    requests: AtomicUsize,
    bad: AtomicUsize,
    script: Mutex<VecDeque<Mode>>,
    default: Mutex<Option<Mode>>,
    bodies: Mutex<Vec<serde_json::Value>>,
}

impl Server {
    fn set(&self, mode: Mode) {
        *self.default.lock().unwrap() = Some(mode);
    }

    fn mint(&self, key: &str) -> String {
        let mut m = self.minted.lock().unwrap();
        let n = m.len();
        m.entry(key.to_owned())
            .or_insert_with(|| format!("WH-{n:05}"))
            .clone()
    }

    fn minted(&self) -> HashMap<String, String> {
        self.minted.lock().unwrap().clone()
    }

    async fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<Full<Bytes>> {
        self.requests.fetch_add(1, Ordering::SeqCst);
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let mut mac = Hmac::<Sha256>::new_from_slice(&SECRET).expect("key");
        mac.update(&body);
        let want = format!("sha256={}", hex(&mac.finalize().into_bytes()));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let key = json["idempotency_key"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let header = |n: &str| {
            parts
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
        };
        if header("x-usher-signature") != want || header("idempotency-key") != key || key.is_empty()
        {
            self.bad.fetch_add(1, Ordering::SeqCst);
            return reply(400, serde_json::json!({}));
        }
        self.bodies.lock().unwrap().push(json);
        let next = self.script.lock().unwrap().pop_front();
        let mode = next.or(*self.default.lock().unwrap()).unwrap_or(Mode::Ok);
        match mode {
            Mode::Ok => reply(
                200,
                serde_json::json!({ "code": self.mint(&key), "batch": 7 }),
            ),
            Mode::Fail500 => reply(500, serde_json::json!({})),
            Mode::RecordThenHang => {
                self.mint(&key);
                std::future::pending().await
            }
            Mode::Status(s, reason) => reply(s, serde_json::json!({ "reason": reason })),
        }
    }
}

fn reply(status: u16, json: serde_json::Value) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::from(json.to_string())));
    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
    r
}

/// Starts the test issuer on 127.0.0.1:0.
async fn start() -> (Arc<Server>, WebhookIssuer) {
    let server = Arc::new(Server::default());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let s = server.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let s = s.clone();
                    async move { Ok::<_, Infallible>(s.handle(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let url = format!("http://{addr}/issue").parse().expect("url");
    let cfg = WebhookConfig {
        attempt_timeout: Duration::from_millis(500),
        max_attempts: 3,
        backoff_base: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        ..WebhookConfig::new(url)
    };
    let key = VoucherKey::from_secret(&SECRET).expect("key");
    (server, WebhookIssuer::new(cfg, key).expect("webhook"))
}

async fn service(dir: &TempDir, stock: u64) -> (Arc<Server>, Vouchers) {
    let (server, issuer) = start().await;
    let ledger = Ledger::open(dir.path(), "spring", stock).expect("open");
    (server, Vouchers::new(ledger, Arc::new(issuer)))
}

fn ctx() -> ClaimContext {
    ClaimContext::default()
}

fn code_of(r: ClaimResult) -> String {
    match r {
        ClaimResult::Issued { code, .. } => code,
        other => panic!("expected a code, got {other:?}"),
    }
}

#[tokio::test]
async fn signed_request_and_code() {
    let dir = TempDir::new("wh-ok");
    let (server, v) = service(&dir, 5).await;
    assert_eq!(code_of(v.claim("alice", &ctx()).await), "WH-00000");
    assert_eq!(
        server.bad.load(Ordering::SeqCst),
        0,
        "signature and key header verified"
    );
    let body = server.bodies.lock().unwrap()[0].clone();
    assert_eq!(
        body,
        serde_json::json!({
            "event": "spring",
            "identity_hash": identity_hash("alice"),
            "idempotency_key": idempotency_key("spring", "alice"),
        })
    );
    assert!(matches!(
        v.claim("alice", &ctx()).await,
        ClaimResult::Issued { fresh: false, .. }
    ));
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        1,
        "a repeat does not ask again"
    );
}

#[tokio::test]
async fn retries_server_errors_with_the_same_key() {
    let dir = TempDir::new("wh-500");
    let (server, v) = service(&dir, 5).await;
    server
        .script
        .lock()
        .unwrap()
        .extend([Mode::Fail500, Mode::Fail500]);
    assert_eq!(code_of(v.claim("a", &ctx()).await), "WH-00000");
    assert_eq!(server.requests.load(Ordering::SeqCst), 3);

    server.set(Mode::Fail500);
    assert!(
        matches!(v.claim("b", &ctx()).await, ClaimResult::RetryLater(r) if r.contains("HTTP 500"))
    );
    assert_eq!(
        server.requests.load(Ordering::SeqCst),
        6,
        "bounded attempts"
    );
    assert_eq!(v.remaining(), 3, "b keeps its unit while pending");
    server.set(Mode::Ok);
    assert_eq!(code_of(v.claim("b", &ctx()).await), "WH-00001");
    assert_eq!(server.minted().len(), 2);
}

#[tokio::test]
async fn success_after_usher_gave_up_is_neither_lost_nor_doubled() {
    let dir = TempDir::new("wh-late");
    let (server, v) = service(&dir, 5).await;
    // Within one claim: the first attempt's answer never comes, the retry
    // gets the code the issuer recorded then.
    server
        .script
        .lock()
        .unwrap()
        .push_back(Mode::RecordThenHang);
    assert_eq!(code_of(v.claim("a", &ctx()).await), "WH-00000");
    assert_eq!(server.requests.load(Ordering::SeqCst), 2);

    // Every attempt times out: usher says "retry later"; the issuer did mint.
    server.set(Mode::RecordThenHang);
    assert!(
        matches!(v.claim("b", &ctx()).await, ClaimResult::RetryLater(r) if r.contains("timed out"))
    );
    let minted = server.minted();
    assert_eq!(minted.len(), 2, "one code per key, however often asked");
    server.set(Mode::Ok);
    let report = v.recover().await;
    assert_eq!((report.pending, report.issued), (1, 1));
    let Some(Reservation::Issued(b)) = v.local().lookup("b") else {
        panic!("b issued");
    };
    assert_eq!(Some(&b.code), minted.get(&idempotency_key("spring", "b")));
    assert_eq!(server.minted(), minted);
}

#[tokio::test]
async fn answers_map_to_outcomes() {
    type Check = fn(&ClaimResult) -> bool;
    // Each answer is final: one request, no retries.
    let cases: [(Mode, Check); 5] = [
        (Mode::Status(409, None), |r| {
            matches!(r, ClaimResult::SoldOut)
        }),
        (Mode::Status(410, None), |r| {
            matches!(r, ClaimResult::SoldOut)
        }),
        (
            Mode::Status(403, Some("one per household")),
            |r| matches!(r, ClaimResult::NotEligible(s) if s == "one per household"),
        ),
        (
            Mode::Status(422, None),
            |r| matches!(r, ClaimResult::NotEligible(s) if s.contains("422")),
        ),
        // A setup mistake is not retried.
        (
            Mode::Status(404, None),
            |r| matches!(r, ClaimResult::RetryLater(s) if s.contains("404")),
        ),
    ];
    for (mode, ok) in cases {
        let dir = TempDir::new("wh-status");
        let (server, v) = service(&dir, 5).await;
        server.set(mode);
        let r = v.claim("x", &ctx()).await;
        assert!(ok(&r), "{mode:?}: {r:?}");
        assert_eq!(server.requests.load(Ordering::SeqCst), 1, "{mode:?}");
        if matches!(r, ClaimResult::SoldOut) {
            assert_eq!(v.remaining(), 0);
        }
    }
}

#[tokio::test]
async fn crash_after_the_issuer_answered() {
    let dir = TempDir::new("wh-crash");
    let (server, issuer) = start().await;
    let issuer = Arc::new(issuer);
    let answered = {
        let ledger = Ledger::open(dir.path(), "spring", 5).expect("open");
        let Ok(Reservation::Pending(p)) = ledger.reserve("bob").await else {
            panic!("pending");
        };
        let claim = Claim {
            event: "spring".into(),
            identity: "bob".into(),
            idempotency_key: p.idempotency_key,
            seq: p.seq,
            client_ip: None,
            user_agent: None,
        };
        let IssueOutcome::Issued { code, .. } = issuer.issue(&claim).await else {
            panic!("issued");
        };
        code
        // Dropped here: the process died before recording the code.
    };
    let v = Vouchers::new(
        Ledger::open(dir.path(), "spring", 5).expect("reopen"),
        issuer,
    );
    assert_eq!(v.recover().await.issued, 1);
    assert_eq!(code_of(v.claim("bob", &ctx()).await), answered);
    assert_eq!(server.minted().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crowd_with_a_flaky_issuer() {
    let dir = TempDir::new("wh-crowd");
    let (server, v) = service(&dir, 50).await;
    let modes = [
        Mode::Ok,
        Mode::Fail500,
        Mode::Ok,
        Mode::RecordThenHang,
        Mode::Ok,
    ];
    server
        .script
        .lock()
        .unwrap()
        .extend(modes.iter().cycle().take(400).copied());
    let v = Arc::new(v);
    let tasks: Vec<_> = (0..300u64)
        .map(|i| {
            let v = v.clone();
            let id = format!("u{}", (i * 37) % 120);
            tokio::spawn(async move { (id.clone(), v.claim(&id, &ctx()).await) })
        })
        .collect();
    let mut codes: HashMap<String, String> = HashMap::new();
    for t in tasks {
        let (id, r) = t.await.expect("task");
        match r {
            ClaimResult::Issued { code, .. } => {
                assert!(codes.insert(id, code.clone()).is_none_or(|c| c == code));
            }
            ClaimResult::SoldOut | ClaimResult::RetryLater(_) => {}
            other => panic!("{other:?}"),
        }
    }
    // The issuer recovers; finish what is pending.
    server.script.lock().unwrap().clear();
    server.set(Mode::Ok);
    assert_eq!(v.recover().await.still_pending, 0);
    assert!(v.local().pending().is_empty());
    assert_eq!(v.local().issued_count(), 50);

    // What the issuer minted is exactly what the ledger holds.
    let mut ledger_codes = HashMap::new();
    for i in 0..120 {
        let id = format!("u{i}");
        if let Some(Reservation::Issued(c)) = v.local().lookup(&id) {
            if let Some(early) = codes.get(&id) {
                assert_eq!(early, &c.code);
            }
            ledger_codes.insert(idempotency_key("spring", &id), c.code);
        }
    }
    assert_eq!(
        server.minted(),
        ledger_codes,
        "no lost voucher, no double issue"
    );
    let distinct: HashSet<&String> = ledger_codes.values().collect();
    assert_eq!(distinct.len(), 50);
    assert_eq!(server.bad.load(Ordering::SeqCst), 0);
    drop(v);
    assert!(audit_check(dir.path()).expect("audit").is_ok());
}

#[test]
fn refuses_urls_it_cannot_post_to() {
    let key = || VoucherKey::from_secret(&SECRET).expect("key");
    for url in ["ftp://example.com/x", "/relative"] {
        let cfg = WebhookConfig::new(url.parse().expect("uri"));
        assert_eq!(
            WebhookIssuer::new(cfg, key()).err(),
            Some(WebhookError::BadUrl),
            "{url}"
        );
    }
}
