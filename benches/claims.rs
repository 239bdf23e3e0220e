//! Voucher claims per second for each built-in plugin, through the real
//! claim service and its fsync'd ledger (release build):
//!
//!     cargo bench --bench claims
//!
//! The webhook plugin talks to a minimal idempotent issuer on loopback.
//! `redis-pool` runs the pool plugin on the ledger shared through a local
//! redis-server (`appendonly yes`, `appendfsync always`, as vouchers need),
//! three connections as three nodes would (skipped without redis-server).
//! `redis-pool-wait` is the same with a replica and `min_replicas_acked =
//! 1`: each code shown only once its claim is on the replica (`WAIT`).
//! Prints one line per plugin; numbers go to docs/BENCHMARKS.md.

#[path = "../tests/support/redis.rs"]
#[allow(dead_code)]
mod redis;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use usher::store::redis_conn::connect_url;
use usher::store::redis_durable::Durability;
use usher::store::{Ledger, RedisLedger};
use usher::vouchers::{
    ClaimContext, PoolIssuer, SignedIssuer, VoucherIssuer, VoucherKey, Vouchers, WebhookConfig,
    WebhookIssuer,
};

const CONCURRENCY: usize = 256;

/// `cargo bench` passes `--bench`; under `cargo test --all-targets` the same
/// binary runs as a quick smoke test with few claims.
fn claims() -> usize {
    if std::env::args().any(|a| a == "--bench") {
        20_000
    } else {
        300
    }
}

fn dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("usher-bench-claims-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

async fn run(name: &str, issuer: Arc<dyn VoucherIssuer>) {
    let n = claims();
    let d = dir(name);
    let ledger = Ledger::open(&d, "bench", n as u64).unwrap();
    let v = Arc::new(Vouchers::new(ledger, issuer));
    crowd(name, &[v], n).await;
    let _ = std::fs::remove_dir_all(&d);
}

/// The pool plugin on the shared ledger, claims spread over three handles.
async fn run_redis(issuer: Arc<dyn VoucherIssuer>) {
    run_redis_with(issuer, false).await;
}

/// [`run_redis`], or with `wait` a replica of the ledger's Redis and every
/// claim waiting for it (`min_replicas_acked = 1`).
async fn run_redis_with(issuer: Arc<dyn VoucherIssuer>, wait: bool) {
    let d = dir("redis");
    let persist = redis::RedisOptions {
        aof_dir: Some(d.clone()),
        ..redis::RedisOptions::default()
    };
    let Some(server) = redis::RedisServer::start_with(persist) else {
        return;
    };
    let replica = wait.then(|| {
        redis::RedisServer::start_with(redis::RedisOptions {
            args: vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                server.port.to_string(),
            ],
            ..redis::RedisOptions::default()
        })
        .unwrap()
    });
    if replica.is_some() {
        in_sync(&server).await;
    }
    let durable = wait.then_some(Durability {
        replicas: 1,
        timeout: Duration::from_secs(1),
    });
    let n = claims();
    let nodes: Vec<Arc<Vouchers>> = (0..3)
        .map(|_| {
            let con = connect_url(&server.url(), Duration::from_secs(5)).unwrap();
            Arc::new(Vouchers::new(
                RedisLedger::new(con, "bench", n as u64).with_durability(durable),
                issuer.clone(),
            ))
        })
        .collect();
    let before = used_memory(&server).await;
    crowd(
        if wait {
            "redis-pool-wait"
        } else {
            "redis-pool"
        },
        &nodes,
        n,
    )
    .await;
    if wait {
        drop(replica);
        drop(server);
        let _ = std::fs::remove_dir_all(&d);
        return;
    }
    let after = used_memory(&server).await;
    println!(
        "plugin=redis-pool redis_bytes_per_claim={:.0}",
        (after - before) as f64 / n as f64
    );
    drop(server);
    let _ = std::fs::remove_dir_all(&d);
}

/// Waits until `server` has a replica in sync.
async fn in_sync(server: &redis::RedisServer) {
    let con = connect_url(&server.url(), Duration::from_secs(5)).unwrap();
    let started = Instant::now();
    loop {
        let info: String = ::redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut con.clone())
            .await
            .unwrap();
        if info.contains("state=online") {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn used_memory(server: &redis::RedisServer) -> i64 {
    let con = connect_url(&server.url(), Duration::from_secs(5)).unwrap();
    let l = RedisLedger::new(con, "bench", 0);
    l.memory_used().await.unwrap() as i64
}

/// `n` claims by `n` people, at most [`CONCURRENCY`] in flight, spread over `nodes`.
async fn crowd(name: &str, nodes: &[Arc<Vouchers>], n: usize) {
    let started = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(CONCURRENCY));
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let v = nodes[i % nodes.len()].clone();
        let permit = sem.clone().acquire_owned().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let r = v
                .claim(&format!("member-{i}"), &ClaimContext::default())
                .await;
            drop(permit);
            r.label() == "issued"
        }));
    }
    let mut issued = 0;
    for t in tasks {
        issued += usize::from(t.await.unwrap());
    }
    let took = started.elapsed();
    assert_eq!(issued, n, "every claim issued exactly once");
    println!(
        "plugin={name} claims={n} issued={issued} concurrency={CONCURRENCY} seconds={:.2} claims_per_second={:.0} fsyncs={}",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64(),
        nodes[0].ledger().local().map_or(0, |l| l.syncs())
    );
}

/// A minimal issuer answering `{"code": ...}` derived from the idempotency key.
async fn webhook_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let key = req
                            .headers()
                            .get("idempotency-key")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("x")
                            .to_string();
                        let _ = req.into_body().collect().await;
                        let body = format!("{{\"code\":\"WH-{}\"}}", &key[..key.len().min(20)]);
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    addr
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let codes: String = (0..claims()).map(|i| format!("POOL-{i:06}\n")).collect();
        run("pool", Arc::new(PoolIssuer::parse(&codes).unwrap())).await;
        run_redis(Arc::new(PoolIssuer::parse(&codes).unwrap())).await;
        run_redis_with(Arc::new(PoolIssuer::parse(&codes).unwrap()), true).await;
        let key = VoucherKey::from_secret(&[7u8; 32]).unwrap();
        run(
            "signed",
            Arc::new(SignedIssuer::new("BENCH", key.clone()).unwrap()),
        )
        .await;
        let addr = webhook_server().await;
        let mut cfg = WebhookConfig::new(format!("http://{addr}/issue").parse().unwrap());
        cfg.attempt_timeout = Duration::from_secs(5);
        run("webhook", Arc::new(WebhookIssuer::new(cfg, key).unwrap())).await;
    });
}
