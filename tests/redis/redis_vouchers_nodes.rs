//! Vouchers across three usher processes (the real binary) sharing one
//! Redis: visitors spread over the nodes claim at once; every code is
//! issued once, never more than the stock; a visitor's repeat claim on
//! another node gets the same code; every node turns sold out; and a node
//! SIGKILLed in the middle of claims leaves pending claims that another
//! node finishes by itself, with the same idempotency key.

use crate::support::http as http_util;
use crate::support::process;
use crate::support::redis;
use crate::support::TempDir;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use process::UsherProcess;
use redis::RedisServer;
use usher::store::redis_conn::connect_url;
use usher::store::{RedisLedger, Reservation};

use http_util::{send, HttpClient, Reply};

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http()
}

/// One node's config: a wide-open room, the shared line and ledger in Redis.
fn config(dir: &Path, redis: &str, node: &str, vouchers: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
[origin]
url = "http://127.0.0.1:9"
[room]
keys_file = "{keys}"
max_active_users = 100000
new_users_per_minute = 1000000
burst = 100000
tick = "50ms"
[room.limits]
tickets_per_minute_per_ip = 10000000
requests_per_second_per_ip = 0
[store]
backend = "redis"
url = "{redis}"
node_id = "{node}"
timeout = "500ms"
[vouchers]
identity = "header:x-user"
{vouchers}
"#,
        keys = dir.join("keys").display(),
    )
}

/// One node on the shared line and ledger.
fn start(dir: &Path, name: &str, redis: &str, vouchers: &str) -> UsherProcess {
    UsherProcess::node(dir, name, &config(dir, redis, name, vouchers))
}

/// A pass: at once when the line is empty and the shared gate allows,
/// else a ticket from the shared line, then admitted on a later poll.
/// Passes are signed with the common keys file: valid on every node.
async fn pass(c: &HttpClient, base: &str) -> String {
    let status = format!("{base}/__usher/status");
    let r = send(c, Request::get(&status)).await.unwrap();
    if let Some(p) = r.cookies.iter().find(|k| k.starts_with("usher_pass=")) {
        return p.clone();
    }
    let ticket = r
        .cookies
        .into_iter()
        .find(|k| k.starts_with("usher_ticket="))
        .expect("a pass or a ticket");
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "never admitted"
        );
        let r = send(c, Request::get(&status).header(header::COOKIE, &ticket))
            .await
            .unwrap();
        if let Some(p) = r.cookies.into_iter().find(|k| k.starts_with("usher_pass=")) {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

async fn claim(c: &HttpClient, base: &str, pass: &str, user: &str) -> Result<Reply, String> {
    send(
        c,
        Request::post(format!("{base}/__usher/voucher"))
            .header(header::COOKIE, pass)
            .header("x-user", user),
    )
    .await
}

/// The shared ledger as a test reads it (the default event).
fn ledger(redis: &str, stock: u64) -> RedisLedger {
    RedisLedger::new(
        connect_url(redis, Duration::from_secs(2)).unwrap(),
        "default",
        stock,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_issue_the_stock_exactly_once() {
    let Some(server) = RedisServer::start(None) else {
        return;
    };
    let dir = TempDir::keyed("redis-vouchers-nodes");
    // more codes than the stock: the shared ledger alone bounds the claims
    let codes: Vec<String> = (0..150).map(|i| format!("CINE-{i:05}")).collect();
    std::fs::write(dir.join("codes.txt"), codes.join("\n") + "\n").unwrap();
    let vouchers = format!(
        "plugin = \"pool\"\npool_file = \"{}\"\nstock = 100\n",
        dir.join("codes.txt").display()
    );
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        nodes.push(start(&dir, name, &server.url(), &vouchers));
    }
    let bases: Arc<Vec<String>> = Arc::new(nodes.iter().map(|n| n.base()).collect());
    let c = client();
    let passes = Arc::new(vec![
        pass(&c, &bases[0]).await,
        pass(&c, &bases[1]).await,
        pass(&c, &bases[2]).await,
    ]);

    // 300 people at once, spread over the nodes
    let mut tasks = Vec::new();
    for i in 0..300usize {
        let (c, bases, passes) = (c.clone(), bases.clone(), passes.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("user-{i}");
            let r = claim(&c, &bases[i % 3], &passes[i % 3], &user)
                .await
                .unwrap();
            (i, r.status, r.json)
        }));
    }
    let mut issued: HashMap<usize, String> = HashMap::new();
    let mut sold_out = 0;
    for t in tasks {
        match t.await.unwrap() {
            (i, 200, json) => {
                issued.insert(i, json["code"].as_str().unwrap().to_string());
            }
            (_, 410, json) if json["state"] == "sold_out" => sold_out += 1,
            (i, status, json) => panic!("user-{i}: {status} {json}"),
        }
    }
    assert_eq!((issued.len(), sold_out), (100, 200), "exactly the stock");
    let unique: HashSet<&String> = issued.values().collect();
    assert_eq!(unique.len(), 100, "no code twice");

    // the same people again, each on another node: the same code
    for i in 0..300usize {
        let r = claim(
            &c,
            &bases[(i + 1) % 3],
            &passes[(i + 1) % 3],
            &format!("user-{i}"),
        )
        .await
        .unwrap();
        match issued.get(&i) {
            Some(code) => {
                assert_eq!(r.status, 200, "user-{i}");
                assert_eq!(r.json["code"].as_str(), Some(code.as_str()), "user-{i}");
            }
            None => assert_eq!(r.status, 410, "user-{i}"),
        }
    }
    // every node's holding page turns sold out (its counters refresh each second)
    for base in bases.iter() {
        let started = Instant::now();
        loop {
            let r = send(&c, Request::get(format!("{base}/__usher/status")))
                .await
                .unwrap();
            if r.json["state"] == "sold_out" {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "{base}: {}",
                r.json
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let l = ledger(&server.url(), 100);
    let audit = l.audit_lines().await.unwrap();
    let audit_codes: HashSet<String> = audit
        .iter()
        .map(|line| usher::store::audit::parse_line(line).unwrap().2)
        .collect();
    assert_eq!(audit.len(), 100, "one audit line per code");
    assert_eq!(
        audit_codes,
        issued.values().cloned().collect::<HashSet<_>>(),
        "the audit list is the issued set"
    );
    // the operator's check agrees, from any node's config
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["voucher", "audit", "-c"])
        .arg(dir.join("n2.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("stock 100, issued 100, pending 0") && text.contains("agree"),
        "{text}"
    );
    // a code recorded for a second identity is found
    let _: () = ::redis::cmd("RPUSH")
        .arg("{usher:default}:v:audit")
        .arg(&audit[0])
        .query_async(&mut connect_url(&server.url(), Duration::from_secs(2)).unwrap())
        .await
        .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_usher"))
        .args(["voucher", "audit", "-c"])
        .arg(dir.join("n1.toml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !out.status.success() && text.contains("appears twice"),
        "{text}"
    );
    drop(nodes);
}

/// An external issuer that answers after `delay`, the same code per key,
/// and counts the requests.
async fn slow_issuer(delay: Duration) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            let calls = counted.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let calls = calls.clone();
                    async move {
                        calls.fetch_add(1, Ordering::SeqCst);
                        let key = req
                            .headers()
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("none")
                            .to_string();
                        let _ = req.into_body().collect().await;
                        tokio::time::sleep(delay).await;
                        let body = format!("{{\"code\":\"WH-{}\"}}", &key[..16]);
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (format!("http://{addr}/issue"), calls)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_nodes_pending_claims_are_finished_by_another() {
    let Some(server) = RedisServer::start(None) else {
        return;
    };
    let dir = TempDir::keyed("redis-vouchers-kill");
    std::fs::write(
        dir.join("voucher.key"),
        usher::tokens::Keyring::generate_line("v1").unwrap() + "\n",
    )
    .unwrap();
    let (url, calls) = slow_issuer(Duration::from_millis(600)).await;
    let vouchers = format!(
        "plugin = \"webhook\"\nwebhook_url = \"{url}\"\nkey_file = \"{}\"\nstock = 100\nrecover_after = \"1s\"\n",
        dir.join("voucher.key").display()
    );
    let victim = start(&dir, "k1", &server.url(), &vouchers);
    let survivors = [
        start(&dir, "k2", &server.url(), &vouchers),
        start(&dir, "k3", &server.url(), &vouchers),
    ];
    let c = client();
    let p = Arc::new(pass(&c, &victim.base()).await);

    // 40 claims on the victim; it dies while the issuer is still answering
    let answered: Arc<Mutex<HashMap<usize, String>>> = Arc::default();
    let mut tasks = Vec::new();
    for i in 0..40usize {
        let (c, base, p, answered) = (c.clone(), victim.base(), p.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i as u64 * 5)).await;
            if let Ok(r) = claim(&c, &base, &p, &format!("user-{i}")).await {
                if r.status == 200 {
                    let code = r.json["code"].as_str().unwrap().to_string();
                    answered.lock().unwrap().insert(i, code);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(350)).await;
    let mut victim = victim;
    victim.kill(); // SIGKILL
    for t in tasks {
        t.await.unwrap();
    }
    let answered = answered.lock().unwrap().clone();
    let l = ledger(&server.url(), 100);
    let orphans = l.pending(Duration::ZERO).await.unwrap();
    assert!(!orphans.is_empty(), "claims were pending at the kill");

    // nobody claims again: the other nodes finish them by themselves
    let started = Instant::now();
    while !l.pending(Duration::ZERO).await.unwrap().is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "orphaned claims never finished"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut issued: HashMap<usize, String> = HashMap::new();
    for i in 0..40usize {
        if let Some(Reservation::Issued(claim)) =
            l.lookup(&format!("header:user-{i}")).await.unwrap()
        {
            issued.insert(i, claim.code);
        }
    }
    for o in &orphans {
        let i: usize = o
            .identity
            .trim_start_matches("header:user-")
            .parse()
            .unwrap();
        assert_eq!(
            issued.get(&i).map(String::as_str),
            Some(format!("WH-{}", &o.idempotency_key[..16]).as_str()),
            "{}: finished with its own idempotency key",
            o.identity
        );
    }
    // the visitors come back on a surviving node: the same codes
    for i in 0..40usize {
        let r = claim(&c, &survivors[i % 2].base(), &p, &format!("user-{i}"))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "user-{i}: {}", r.json);
        let code = r.json["code"].as_str().unwrap().to_string();
        if let Some(before) = answered.get(&i) {
            assert_eq!(&code, before, "user-{i} was told {before}");
        }
        if let Some(rec) = issued.get(&i) {
            assert_eq!(&code, rec, "user-{i}");
        }
    }
    let l2 = ledger(&server.url(), 100);
    l2.refresh().await.unwrap();
    assert_eq!(l2.issued_count(), 40);
    assert_eq!(l2.audit_lines().await.unwrap().len(), 40);
    eprintln!(
        "answered before the kill: {}, pending at the kill: {}, issuer calls: {}",
        answered.len(),
        orphans.len(),
        calls.load(Ordering::SeqCst)
    );
    drop(survivors);
}
