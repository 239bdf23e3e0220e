//! Three usher nodes (in-process Apps) sharing one line in a real Redis
//! (`[store] backend = "redis"`), visitors spread across them: one global
//! FIFO order, never more visitors inside than max_active_users across all
//! nodes, and with Redis stopped passes keep working while newcomers are
//! held, admissions resuming when it is back.

#[path = "support/redis.rs"]
mod redis;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use redis::RedisServer;
use tokio::net::TcpListener;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

const MAX_ACTIVE: usize = 4;
const VISITORS: usize = 24;

async fn origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let mut b = Response::builder();
                    if req.uri().path() == "/checkout" {
                        b = b.header("x-usher-release", "1");
                    }
                    Ok::<_, Infallible>(b.body(Full::new(Bytes::from("page"))).unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn node(
    redis: &str,
    origin: SocketAddr,
    dir: &Path,
    name: &str,
) -> (usher::server::Running, String) {
    let text = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
[origin]
url = "http://{origin}"
[room]
keys_file = "{keys}"
max_active_users = {MAX_ACTIVE}
new_users_per_minute = 60000
burst = 10
tick = "50ms"
[room.limits]
tickets_per_minute_per_ip = 10000000
requests_per_second_per_ip = 0
[store]
backend = "redis"
url = "{redis}"
node_id = "{name}"
timeout = "300ms"
"#,
        keys = dir.join("keys").display(),
    );
    let cfg = usher::config::Config::parse(&text, "test", dir).unwrap_or_else(|e| panic!("{e}"));
    let app = usher::app::App::new(cfg, usher::logging::LogHandle::none()).unwrap();
    let listeners = usher::server::Listeners::bind(&app).await.unwrap();
    let running = usher::server::serve(app, listeners);
    let addr = running.bound.plain[0];
    (running, format!("http://{addr}"))
}

struct Reply {
    state: String,
    position: Option<u64>,
    cookies: Vec<String>,
    status: u16,
}

async fn get(c: &HttpClient, url: &str, cookie: Option<&str>) -> Result<Reply, String> {
    let mut req = Request::get(url).header(header::ACCEPT, "application/json");
    if let Some(k) = cookie {
        req = req.header(header::COOKIE, k);
    }
    let resp = c
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let cookies = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter(|v| !v.contains("Max-Age=0"))
        .map(|v| v.split(';').next().unwrap().to_string())
        .collect();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    Ok(Reply {
        state: v["state"].as_str().unwrap_or_default().to_string(),
        position: v["position"].as_u64(),
        cookies,
        status,
    })
}

fn number(keys: &usher::tokens::Keyring, cookie: &str) -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    keys.open_ticket(
        cookie.trim_start_matches("usher_ticket="),
        usher::tokens::event_id("default"),
        now,
        86_400,
    )
    .unwrap()
    .number
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("usher-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("keys"),
        usher::tokens::Keyring::generate_line("t1").unwrap() + "\n",
    )
    .unwrap();
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_fifo_line_within_the_active_limit() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let dir = temp_dir("redis-nodes");
    let origin = origin().await;
    let mut nodes = Vec::new();
    for name in ["n1", "n2", "n3"] {
        nodes.push(node(&redis.url(), origin, &dir, name).await);
    }
    let bases: Arc<Vec<String>> = Arc::new(nodes.iter().map(|(_, b)| b.clone()).collect());
    let keys = Arc::new(usher::tokens::Keyring::load(&dir.join("keys")).unwrap());
    let c = Client::builder(TokioExecutor::new()).build_http();

    // arrivals one after the other, spread over the nodes
    let mut tickets = Vec::new();
    for i in 0..VISITORS {
        let r = get(&c, &format!("{}/__usher/status", bases[i % 3]), None)
            .await
            .unwrap();
        assert_eq!(
            r.state, "queued",
            "visitor {i}: every newcomer takes a ticket"
        );
        let t = r
            .cookies
            .into_iter()
            .find(|k| k.starts_with("usher_ticket="))
            .unwrap();
        tickets.push(t);
    }
    let numbers: Vec<u64> = tickets.iter().map(|t| number(&keys, t)).collect();
    assert_eq!(
        numbers,
        (1..=VISITORS as u64).collect::<Vec<_>>(),
        "one sequence across nodes"
    );

    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    // (number, when its admission answer arrived) and (number, when a
    // queued answer's request started)
    let admitted: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let queued: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let mut tasks = Vec::new();
    for (i, ticket) in tickets.into_iter().enumerate() {
        let (c, bases, inside, most) = (c.clone(), bases.clone(), inside.clone(), most.clone());
        let (admitted, queued) = (admitted.clone(), queued.clone());
        let n = numbers[i];
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut k = i;
            let pass = loop {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "visitor {n} never admitted"
                );
                k += 1;
                let sent = Instant::now();
                let r = get(
                    &c,
                    &format!("{}/__usher/status", bases[k % 3]),
                    Some(&ticket),
                )
                .await
                .unwrap();
                if r.state == "admitted" {
                    let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(now, Ordering::SeqCst);
                    admitted.lock().unwrap().push((n, Instant::now()));
                    break r
                        .cookies
                        .into_iter()
                        .find(|k| k.starts_with("usher_pass="))
                        .unwrap();
                }
                assert_eq!(r.state, "queued", "visitor {n}");
                assert!(r.position.is_some(), "visitor {n}: a position");
                queued.lock().unwrap().push((n, sent));
                tokio::time::sleep(Duration::from_millis(40)).await;
            };
            // browse on any node with the stateless pass, then leave
            for j in 0..3 {
                let r = get(
                    &c,
                    &format!("{}/movies/{j}", bases[(k + j) % 3]),
                    Some(&pass),
                )
                .await
                .unwrap();
                assert_eq!(r.status, 200);
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            inside.fetch_sub(1, Ordering::SeqCst);
            let r = get(&c, &format!("{}/checkout", bases[k % 3]), Some(&pass))
                .await
                .unwrap();
            assert_eq!(r.status, 200);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let most = most.load(Ordering::SeqCst);
    assert!(most <= MAX_ACTIVE, "{most} inside at once > {MAX_ACTIVE}");
    assert!(most >= 2, "the line moved several at once ({most})");
    let admitted = admitted.lock().unwrap().clone();
    assert_eq!(admitted.len(), VISITORS);
    // FIFO: once X was admitted, no earlier ticket was still queued on a
    // request sent after that.
    for &(x, at) in &admitted {
        for &(y, sent) in queued.lock().unwrap().iter() {
            assert!(
                !(y < x && sent > at),
                "ticket {y} still queued after {x} was admitted"
            );
        }
    }
    for (r, _) in nodes {
        r.shutdown(Duration::from_secs(1)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_holds_newcomers_keeps_passes_and_recovers() {
    let Some(mut redis) = RedisServer::start(None) else {
        return;
    };
    let port = redis.port;
    let dir = temp_dir("redis-down");
    let origin = origin().await;
    let (running, base) = node(&redis.url(), origin, &dir, "solo").await;
    let c = Client::builder(TokioExecutor::new()).build_http();
    let r = get(&c, &format!("{base}/__usher/status"), None)
        .await
        .unwrap();
    let ticket = r.cookies[0].clone();
    let pass = loop {
        let r = get(&c, &format!("{base}/__usher/status"), Some(&ticket))
            .await
            .unwrap();
        if r.state == "admitted" {
            break r
                .cookies
                .into_iter()
                .find(|k| k.starts_with("usher_pass="))
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    };
    redis.stop();
    let t = Instant::now();
    let held = get(&c, &format!("{base}/__usher/status"), None)
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "bounded: {:?}",
        t.elapsed()
    );
    assert_eq!(
        (held.state.as_str(), held.position),
        ("queued", None),
        "newcomers held"
    );
    assert!(held.cookies.is_empty(), "no ticket without Redis");
    let r = get(&c, &format!("{base}/movies/1"), Some(&pass))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "passes keep working");
    // back on the same port: admissions resume by themselves
    let _again = RedisServer::start(Some(port)).unwrap();
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "admissions never resumed"
        );
        let r = get(&c, &format!("{base}/__usher/status"), None)
            .await
            .unwrap();
        if let Some(t) = r.cookies.iter().find(|k| k.starts_with("usher_ticket=")) {
            let mut ok = false;
            for _ in 0..100 {
                let r = get(&c, &format!("{base}/__usher/status"), Some(t))
                    .await
                    .unwrap();
                if r.state == "admitted" {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            assert!(ok, "a newcomer admitted again");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    running.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_loses_nothing_the_others_carry_on() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let dir = temp_dir("redis-kill");
    let origin = origin().await;
    let (first, base1) = node(&redis.url(), origin, &dir, "k1").await;
    let c = Client::builder(TokioExecutor::new()).build_http();
    // the first node has ticked (it holds the lease) and issued every ticket
    let mut tickets = Vec::new();
    for _ in 0..10 {
        let r = get(&c, &format!("{base1}/__usher/status"), None)
            .await
            .unwrap();
        tickets.push(
            r.cookies
                .into_iter()
                .find(|k| k.starts_with("usher_ticket="))
                .unwrap(),
        );
    }
    first.shutdown(Duration::from_millis(100)).await;
    let (second, base2) = node(&redis.url(), origin, &dir, "k2").await;
    // every ticket is admitted on the other node once the lease moved
    let started = Instant::now();
    let mut left: Vec<String> = tickets;
    while !left.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{} never admitted",
            left.len()
        );
        let mut still = Vec::new();
        for t in left {
            let r = get(&c, &format!("{base2}/__usher/status"), Some(&t))
                .await
                .unwrap();
            match r.state.as_str() {
                "admitted" => {
                    let pass = r
                        .cookies
                        .into_iter()
                        .find(|k| k.starts_with("usher_pass="))
                        .unwrap();
                    assert_eq!(
                        get(&c, &format!("{base2}/checkout"), Some(&pass))
                            .await
                            .unwrap()
                            .status,
                        200
                    );
                }
                "queued" => still.push(t),
                other => panic!("{other}"),
            }
        }
        left = still;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    second.shutdown(Duration::from_secs(1)).await;
    let _ = std::fs::remove_dir_all(&dir);
}
