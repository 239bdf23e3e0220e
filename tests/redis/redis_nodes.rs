//! Three usher processes (the real binary) sharing one line in a real
//! Redis, visitors spread across them, and the faults of an event:
//! - steady: one global FIFO order; the origin never has more visitors
//!   inside than `max_active_users` across all nodes;
//! - Redis stopped mid-event and restarted (with its append-only file):
//!   passes keep working, newcomers are held, `/readyz` and
//!   `usher_store_up` say so, nobody loses a place, FIFO and the cap hold;
//! - Redis paused (SIGSTOP) for 10 s, longer than `ticket_grace`: every
//!   answer within the command timeout, and after it nobody is skipped;
//! - one node SIGKILLed mid-event: the others carry the line on;
//! - `on_failure = "local_share"`: each node admits its share, 1/3 of the
//!   capacity, ticket holders first, and the shared line resumes after.

use crate::support::http as http_util;
use crate::support::procs;
use crate::support::redis;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use procs::{keyed_temp_dir, Usher};
use redis::{RedisOptions, RedisServer};
use tokio::net::TcpListener;

use http_util::HttpClient;

/// Who is inside, as the origin sees it: a visitor enters with its first
/// page and leaves at `/checkout` (answered with `X-Usher-Release`).
#[derive(Default)]
struct Inside {
    now: Mutex<HashSet<String>>,
    most: AtomicUsize,
}

async fn origin() -> (SocketAddr, Arc<Inside>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let inside = Arc::new(Inside::default());
    let seen = inside.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let inside = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let inside = inside.clone();
                    async move {
                        let who = req
                            .headers()
                            .get("x-visitor")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let mut b = Response::builder();
                        let mut set = inside.now.lock().unwrap();
                        if req.uri().path() == "/checkout" {
                            set.remove(&who);
                            b = b.header("x-usher-release", "1");
                        } else if !who.is_empty() {
                            set.insert(who);
                            inside.most.fetch_max(set.len(), Ordering::SeqCst);
                        }
                        Ok::<_, Infallible>(b.body(Full::new(Bytes::from("page"))).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, inside)
}

struct Room {
    max_active: usize,
    grace: &'static str,
    on_failure: &'static str,
}

const STEADY: Room = Room {
    max_active: 4,
    grace: "2m",
    on_failure: "hold",
};

fn node(redis: &str, origin: SocketAddr, dir: &Path, name: &str, room: &Room) -> Usher {
    node_with(redis, origin, dir, name, room, "")
}

/// [`node`] with more `[room]` settings.
fn node_with(
    redis: &str,
    origin: SocketAddr,
    dir: &Path,
    name: &str,
    room: &Room,
    more: &str,
) -> Usher {
    Usher::start(dir, name, |port, admin| {
        format!(
            r#"
[server]
listen = ["127.0.0.1:{port}"]
admin = "127.0.0.1:{admin}"
[origin]
url = "http://{origin}"
[room]
keys_file = "{keys}"
max_active_users = {max}
new_users_per_minute = 60000
burst = 10
tick = "50ms"
refresh = "1s"
ticket_grace = "{grace}"
{more}
[room.limits]
tickets_per_minute_per_ip = 10000000
requests_per_second_per_ip = 0
requests_per_second_per_pass = 0
[store]
backend = "redis"
url = "{redis}"
node_id = "{name}"
timeout = "300ms"
on_failure = "{on_failure}"
"#,
            keys = dir.join("keys").display(),
            max = room.max_active,
            grace = room.grace,
            on_failure = room.on_failure,
        )
    })
}

struct Reply {
    state: String,
    position: Option<u64>,
    cookies: Vec<String>,
    status: u16,
}

impl Reply {
    fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|k| k.starts_with(&format!("{name}=")))
            .cloned()
    }
}

/// A status or page request, with the visitor's cookie and its id for the
/// origin's count.
async fn get(
    c: &HttpClient,
    url: &str,
    cookie: Option<&str>,
    visitor: Option<u64>,
) -> Result<Reply, String> {
    let mut req = Request::get(url);
    if let Some(k) = cookie {
        req = req.header(header::COOKIE, k);
    }
    if let Some(v) = visitor {
        req = req.header("x-visitor", v.to_string());
    }
    let r = http_util::send(c, req).await?;
    Ok(Reply {
        state: r.json["state"].as_str().unwrap_or_default().to_string(),
        position: r.json["position"].as_u64(),
        cookies: r.cookies,
        status: r.status,
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

/// What the visitors of one event saw.
#[derive(Default)]
struct Seen {
    /// (ticket number, when its admission answer arrived)
    admitted: Vec<(u64, Instant)>,
    /// (ticket number, when a request answered "queued" with a position
    /// was sent)
    queued: Vec<(u64, Instant)>,
    /// Visitors given a new ticket while they held one: a lost place.
    requeued: Vec<u64>,
    /// Slowest answer to a poll.
    slowest: Duration,
}

/// `count` visitors take tickets one after the other across the nodes,
/// then all poll (each on the next node every time, skipping dead ones)
/// until admitted, browse three pages on any node with the pass and check
/// out. `during` runs alongside once `after` visitors are in.
async fn event<F, Fut>(
    bases: Arc<Vec<String>>,
    admins: &[u16],
    keys: &usher::tokens::Keyring,
    count: usize,
    after: usize,
    during: F,
) -> Seen
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    // everyone arrives while the room is paused (no direct admission into
    // the empty line), then the line opens at once
    let admin = |path: &'static str| {
        for &port in admins {
            assert_eq!(
                procs::admin_request(port, "POST", path).map(|r| r.0),
                Some(200)
            );
        }
    };
    admin("/admin/pause");
    let mut tickets = Vec::new();
    for i in 0..count {
        let r = get(&c, &format!("{}/__usher/status", bases[i % 3]), None, None)
            .await
            .unwrap();
        assert_eq!(
            r.state, "paused",
            "visitor {i}: every newcomer takes a ticket"
        );
        tickets.push(r.cookie("usher_ticket").unwrap());
    }
    // a waiting visitor sees the same place from any node
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, t) in tickets.iter().enumerate().step_by(5) {
        for base in bases.iter() {
            let r = get(&c, &format!("{base}/__usher/status"), Some(t), None)
                .await
                .unwrap();
            assert_eq!(r.position, Some(i as u64), "visitor {i} on {base}");
        }
    }
    // and every node's status counts the shared line, not its own
    for &port in admins {
        let (_, body) = procs::admin_request(port, "GET", "/admin/status").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["room"]["waiting"], count, "{}", v["room"]);
        assert_eq!(v["room"]["shared"]["nodes"], 3, "{}", v["room"]);
    }
    admin("/admin/resume");
    let numbers: Vec<u64> = tickets.iter().map(|t| number(keys, t)).collect();
    assert_eq!(
        numbers,
        (1..=count as u64).collect::<Vec<_>>(),
        "one sequence across nodes"
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let admitted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, ticket) in tickets.into_iter().enumerate() {
        let (c, bases, seen, admitted) = (c.clone(), bases.clone(), seen.clone(), admitted.clone());
        let n = numbers[i];
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut k = i;
            let pass = loop {
                assert!(
                    started.elapsed() < Duration::from_secs(90),
                    "visitor {n} never admitted"
                );
                k += 1;
                let sent = Instant::now();
                let Ok(r) = get(
                    &c,
                    &format!("{}/__usher/status", bases[k % 3]),
                    Some(&ticket),
                    None,
                )
                .await
                else {
                    continue; // a dead node: the next one
                };
                let took = sent.elapsed();
                let pass = {
                    let mut s = seen.lock().unwrap();
                    s.slowest = s.slowest.max(took);
                    if r.cookie("usher_ticket").is_some() {
                        s.requeued.push(n);
                    }
                    if r.state == "admitted" {
                        s.admitted.push((n, Instant::now()));
                        admitted.fetch_add(1, Ordering::SeqCst);
                        r.cookie("usher_pass")
                    } else {
                        assert_eq!(r.state, "queued", "visitor {n}");
                        // without a position the node could not read the
                        // line (its store is down): it holds everyone, so
                        // the answer says nothing about order
                        if r.position.is_some() {
                            s.queued.push((n, sent));
                        }
                        None
                    }
                };
                if let Some(pass) = pass {
                    break pass;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            };
            for j in 0..3 {
                k += 1;
                let url = format!("{}/movies/{j}", bases[k % 3]);
                if let Ok(r) = get(&c, &url, Some(&pass), Some(n)).await {
                    assert_eq!(r.status, 200, "visitor {n}: the pass works");
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            loop {
                k += 1;
                let url = format!("{}/checkout", bases[k % 3]);
                if let Ok(r) = get(&c, &url, Some(&pass), Some(n)).await {
                    assert_eq!(r.status, 200);
                    break;
                }
            }
        }));
    }
    while admitted.load(Ordering::SeqCst) < after {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    during().await;
    for t in tasks {
        t.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.admitted.len(), count);
    seen
}

/// FIFO: once X was admitted, no earlier ticket was still queued on a
/// request sent after that.
fn assert_fifo(seen: &Seen) {
    for &(x, at) in &seen.admitted {
        for &(y, sent) in &seen.queued {
            assert!(
                !(y < x && sent > at),
                "ticket {y} still queued after {x} was admitted"
            );
        }
    }
    assert!(seen.requeued.is_empty(), "places lost: {:?}", seen.requeued);
}

fn assert_cap(inside: &Inside, max: usize) {
    let most = inside.most.load(Ordering::SeqCst);
    assert!(most <= max, "the origin had {most} inside at once > {max}");
    assert!(most >= 2, "the line moved several at once ({most})");
}

async fn three(redis: &str, origin: SocketAddr, dir: &Path, room: &Room) -> Vec<Usher> {
    ["n1", "n2", "n3"]
        .iter()
        .map(|n| node(redis, origin, dir, n, room))
        .collect()
}

fn bases(nodes: &[Usher]) -> Arc<Vec<String>> {
    Arc::new(nodes.iter().map(|n| n.base.clone()).collect())
}

fn admins(nodes: &[Usher]) -> Vec<u16> {
    nodes
        .iter()
        .map(|n| n.admin.rsplit(':').next().unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_one_fifo_line_within_the_active_limit() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let dir = keyed_temp_dir("redis-steady");
    let (origin, inside) = origin().await;
    let nodes = three(&redis.url(), origin, &dir, &STEADY).await;
    let keys = usher::tokens::Keyring::load(&dir.join("keys")).unwrap();
    let seen = event(bases(&nodes), &admins(&nodes), &keys, 24, 0, || async {}).await;
    assert_fifo(&seen);
    assert_cap(&inside, STEADY.max_active);
    // the line is empty again: once the last releases reached Redis (a
    // tick), a newcomer on any node goes straight in
    let started = Instant::now();
    loop {
        let (_, body) = nodes[1].admin_get("/admin/status").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["room"]["active"] == 0 && v["room"]["pending"] == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{}", v["room"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let r = get(&c, &format!("{}/__usher/status", nodes[1].base), None, None)
        .await
        .unwrap();
    assert_eq!(r.state, "admitted", "direct admission into an empty line");
    assert!(r.cookie("usher_pass").is_some() && r.cookie("usher_ticket").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Newcomers held without a ticket, `/readyz` 503 and `usher_store_up` 0
/// on every node.
async fn assert_holding(c: &HttpClient, nodes: &[Usher]) {
    let started = Instant::now();
    for n in nodes {
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never saw the outage"
            );
            if n.admin_get("/readyz").is_some_and(|(s, _)| s == 503) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(n.metric("usher_store_up"), Some(0.0));
        let held = get(c, &format!("{}/__usher/status", n.base), None, None)
            .await
            .unwrap();
        assert_eq!((held.state.as_str(), held.position), ("queued", None));
        assert!(held.cookies.is_empty(), "no ticket without Redis");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_event_and_restarted_loses_nothing() {
    let dir = keyed_temp_dir("redis-restart");
    let data = dir.join("redis");
    std::fs::create_dir_all(&data).unwrap();
    let aof = |port| RedisOptions {
        port,
        aof_dir: Some(data.clone()),
        ..RedisOptions::default()
    };
    let Some(mut redis) = RedisServer::start_with(aof(None)) else {
        return;
    };
    let (port, url) = (redis.port, redis.url());
    let (origin, inside) = origin().await;
    let nodes = three(&url, origin, &dir, &STEADY).await;
    let keys = usher::tokens::Keyring::load(&dir.join("keys")).unwrap();
    let restarted = Arc::new(Mutex::new(None));
    let r2 = restarted.clone();
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let seen = event(bases(&nodes), &admins(&nodes), &keys, 18, 4, || async {
        redis.stop();
        assert_holding(&c, &nodes).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        *r2.lock().unwrap() = RedisServer::start_with(aof(Some(port)));
    })
    .await;
    assert!(restarted.lock().unwrap().is_some());
    assert_fifo(&seen);
    assert_cap(&inside, STEADY.max_active);
    for n in &nodes {
        assert_eq!(n.admin_get("/readyz").map(|r| r.0), Some(200));
        assert_eq!(n.metric("usher_store_up"), Some(1.0));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_ten_seconds_mid_event_skips_nobody() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    // the pause is as long as a ticket's grace (the shortest allowed):
    // nobody who could not poll through it loses their place (the resume
    // after a longer gap is in tests/redis/redis_line.rs)
    let room = Room {
        grace: "10s",
        ..STEADY
    };
    let dir = keyed_temp_dir("redis-pause");
    let (origin, inside) = origin().await;
    let nodes = three(&redis.url(), origin, &dir, &room).await;
    let keys = usher::tokens::Keyring::load(&dir.join("keys")).unwrap();
    let pid = redis.child.id().to_string();
    let paused = Arc::new(AtomicBool::new(false));
    let p2 = paused.clone();
    let seen = event(bases(&nodes), &admins(&nodes), &keys, 18, 4, || async {
        let stop = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status();
        assert!(stop.unwrap().success());
        p2.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap();
    })
    .await;
    assert!(paused.load(Ordering::SeqCst));
    assert_fifo(&seen);
    assert_cap(&inside, room.max_active);
    // a poll waits for Redis at most the command timeout (300 ms), twice
    // at worst (observe, then take); never the length of the pause
    assert!(
        seen.slowest < Duration::from_secs(3),
        "slowest {:?}",
        seen.slowest
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sigkilled_mid_event_the_others_carry_on() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let dir = keyed_temp_dir("redis-kill");
    let (origin, inside) = origin().await;
    let mut nodes = three(&redis.url(), origin, &dir, &STEADY).await;
    let keys = usher::tokens::Keyring::load(&dir.join("keys")).unwrap();
    let all = bases(&nodes);
    let ports = admins(&nodes);
    let (first, _) = nodes.split_at_mut(1);
    // n1 started first: it holds the tick lease when it dies
    let seen = event(all, &ports, &keys, 18, 4, || async {
        first[0].kill();
    })
    .await;
    assert_fifo(&seen);
    assert_cap(&inside, STEADY.max_active);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_share_admits_each_nodes_share_ticket_holders_first() {
    let Some(mut redis) = RedisServer::start(None) else {
        return;
    };
    let port = redis.port;
    let room = Room {
        max_active: 6,
        on_failure: "local_share",
        ..STEADY
    };
    let dir = keyed_temp_dir("redis-share");
    let (origin, _) = origin().await;
    let nodes = three(&redis.url(), origin, &dir, &room).await;
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    while nodes
        .iter()
        .any(|n| n.metric("usher_store_nodes") != Some(3.0))
    {
        assert!(started.elapsed() < Duration::from_secs(10), "no heartbeats");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a visitor takes a ticket (the room paused: no direct admission) and
    // does not poll again before Redis goes away
    let status = |i: usize| format!("{}/__usher/status", nodes[i].base);
    nodes
        .iter()
        .for_each(|n| assert_eq!(n.admin_post("/admin/pause"), Some(200)));
    let ticket = get(&c, &status(0), None, None)
        .await
        .unwrap()
        .cookie("usher_ticket")
        .unwrap();
    nodes
        .iter()
        .for_each(|n| assert_eq!(n.admin_post("/admin/resume"), Some(200)));
    redis.stop();
    let started = Instant::now();
    for n in &nodes {
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no local share"
            );
            let r = n.admin_get("/readyz");
            if r.as_ref()
                .is_some_and(|(s, b)| *s == 200 && b.contains("share (1/3)"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(n.metric("usher_store_up"), Some(0.0));
    }
    // the ticket holder first; a newcomer right after waits behind them
    let r = get(&c, &status(0), Some(&ticket), None).await.unwrap();
    assert_eq!(r.state, "admitted", "the ticket holder goes first");
    let r = get(&c, &status(0), None, None).await.unwrap();
    assert_eq!(
        r.state, "queued",
        "newcomers wait while ticket holders poll"
    );
    assert!(r.cookies.is_empty());
    // two refresh intervals without ticket holders: newcomers, up to 6/3 each
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let mut admitted = [1, 0, 0];
    for (i, got) in admitted.iter_mut().enumerate() {
        for _ in 0..4 {
            let r = get(&c, &status(i), None, None).await.unwrap();
            if r.state == "admitted" {
                assert!(r.cookie("usher_pass").is_some());
                *got += 1;
            }
        }
    }
    assert_eq!(admitted, [2, 2, 2], "each node its share of 6");
    assert_eq!(
        nodes[1].metric("usher_admitted_total{via=\"local_share\"}"),
        Some(2.0)
    );
    // Redis back (empty): the shared line resumes, newcomers take tickets
    let _again = RedisServer::start(Some(port)).unwrap();
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(20), "never resumed");
        if nodes[2]
            .admin_get("/readyz")
            .is_some_and(|(_, b)| b == "ready\n")
        {
            let r = get(&c, &status(2), None, None).await.unwrap();
            if r.cookie("usher_ticket").is_some() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prequeue_across_three_processes_is_drawn_once_and_served_in_rank_order() {
    use sha2::{Digest, Sha256};
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let dir = keyed_temp_dir("redis-prequeue");
    let (origin, inside) = origin().await;
    let opens = SystemTime::now() + Duration::from_secs(10);
    let opens_secs = opens
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let opens = SystemTime::UNIX_EPOCH + Duration::from_secs(opens_secs);
    let more = format!(
        "opens_at = \"{}\"",
        humantime::format_rfc3339_seconds(opens)
    );
    let nodes: Vec<Usher> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| node_with(&redis.url(), origin, &dir, n, &STEADY, &more))
        .collect();
    let keys = usher::tokens::Keyring::load(&dir.join("keys")).unwrap();
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    const N: usize = 15;
    let mut tickets = Vec::new();
    for i in 0..N {
        let r = get(
            &c,
            &format!("{}/__usher/status", nodes[i % 3].base),
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            (r.state.as_str(), r.position),
            ("prequeue", None),
            "visitor {i}"
        );
        tickets.push(r.cookie("usher_ticket").unwrap());
    }
    assert!(SystemTime::now() < opens, "the arrivals took too long");
    // the draw anyone can check once the seed is published (STATE.md)
    let material = keys.seal_ticket(&usher::tokens::Ticket {
        event: usher::tokens::event_id("default"),
        number: 0,
        issued_at: opens_secs,
    });
    let mut h = Sha256::new();
    h.update(b"usher prequeue seed\0");
    h.update(material.as_bytes());
    let ranks = usher::admission::line::shuffled_ranks(N as u32, h.finalize().into());
    let bases = bases(&nodes);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut tasks = Vec::new();
    for (i, ticket) in tickets.into_iter().enumerate() {
        let (c, bases, seen) = (c.clone(), bases.clone(), seen.clone());
        let n = number(&keys, &ticket);
        let rank = u64::from(ranks[n as usize - 1]);
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut k = i;
            let pass = loop {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{n} never admitted"
                );
                k += 1;
                let url = format!("{}/__usher/status", bases[k % 3]);
                let sent = Instant::now();
                let r = get(&c, &url, Some(&ticket), None).await.unwrap();
                if r.state == "admitted" {
                    assert!(SystemTime::now() >= opens, "admitted before the opening");
                    seen.lock().unwrap().admitted.push((rank, Instant::now()));
                    break r.cookie("usher_pass").unwrap();
                }
                if r.state == "queued" {
                    seen.lock().unwrap().queued.push((rank, sent));
                } else {
                    assert_eq!(r.state, "prequeue", "ticket {n}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let url = format!("{}/movies/1", bases[k % 3]);
            assert_eq!(
                get(&c, &url, Some(&pass), Some(n)).await.unwrap().status,
                200
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            let url = format!("{}/checkout", bases[(k + 1) % 3]);
            assert_eq!(
                get(&c, &url, Some(&pass), Some(n)).await.unwrap().status,
                200
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // FIFO in rank space: the drawn order, whichever node answered
    assert_fifo(&seen.lock().unwrap());
    assert_cap(&inside, STEADY.max_active);
    let drawn = nodes
        .iter()
        .filter_map(|n| n.admin_get("/admin/status"))
        .filter_map(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .filter(|v| v["room"]["prequeue_seed_sha256"].is_string())
        .count();
    assert_eq!(drawn, 1, "one node drew, and says so");
    let _ = std::fs::remove_dir_all(&dir);
}
