//! The hand-off and the closed-loop gate over real sockets: a crowd of
//! polling visitors (long polls, the holding page's schedule) in front of a
//! fragile origin, an in-process usher.
//!
//! - With a fixed rate, visitors who leave at once (the origin's
//!   `X-Usher-Release`) are let in at the configured rate: a granted place
//!   does not sit idle until its holder's next poll.
//! - Without a rate, the closed-loop gate keeps the origin busy, never past
//!   its slots.
//! - When the origin slows down, the gate backs off within seconds.

use crate::support as common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::inproc::{metric, Usher};
use common::{config, within, InFlight};
use http::{header, Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The tests here that load both cores take the binary's
/// [`common::BOTH_CORES`]: one at a time, even when the harness runs them in
/// parallel, and never beside another crowd test of the binary.
use common::BOTH_CORES as ONE_AT_A_TIME;

/// The status poll the holding page makes.
const STATUS_POLL: &str = "/__usher/status?wait=1";

/// A fragile origin: serves `capacity` requests at once, each after
/// `latency_ms`, answers 503 beyond that, and remembers the most it ever
/// had in flight and how long its answers took.
struct Fragile {
    capacity: usize,
    latency_ms: AtomicU64,
    /// Every answer ends the visitor's session (`X-Usher-Release: 1`).
    release: bool,
    in_flight: AtomicUsize,
    max_seen: AtomicUsize,
    overloaded: AtomicUsize,
    served: AtomicUsize,
    /// Sum of the served requests' time at the origin, microseconds.
    busy_us: AtomicU64,
}

impl Fragile {
    fn new(capacity: usize, latency_ms: u64, release: bool) -> Arc<Fragile> {
        Arc::new(Fragile {
            capacity,
            latency_ms: AtomicU64::new(latency_ms),
            release,
            in_flight: AtomicUsize::new(0),
            max_seen: AtomicUsize::new(0),
            overloaded: AtomicUsize::new(0),
            served: AtomicUsize::new(0),
            busy_us: AtomicU64::new(0),
        })
    }

    /// The origin never saw more than its slots and never answered 503.
    fn assert_spared(&self) {
        assert!(
            self.max_seen() <= self.capacity,
            "the origin saw {} at once, more than its {}",
            self.max_seen(),
            self.capacity
        );
        assert_eq!(self.overloaded(), 0, "the origin never answered 503");
    }

    fn max_seen(&self) -> usize {
        self.max_seen.load(Ordering::SeqCst)
    }

    fn overloaded(&self) -> usize {
        self.overloaded.load(Ordering::SeqCst)
    }

    fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Mean time a served request spent at the origin.
    fn mean_latency(&self) -> Duration {
        let n = self.served().max(1) as u64;
        Duration::from_micros(self.busy_us.load(Ordering::SeqCst) / n)
    }

    async fn start(self: &Arc<Self>) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(state.serve().await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        addr
    }

    async fn serve(&self) -> Response<Full<Bytes>> {
        let started = Instant::now();
        let (_counted, now) = InFlight::enter(&self.in_flight);
        self.max_seen.fetch_max(now, Ordering::SeqCst);
        let resp = if now > self.capacity {
            self.overloaded.fetch_add(1, Ordering::SeqCst);
            Response::builder()
                .status(503)
                .body(Full::new(Bytes::from("collapsed")))
                .unwrap()
        } else {
            let ms = self.latency_ms.load(Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let mut b = Response::builder().header("x-origin", "1");
            if self.release {
                b = b.header("x-usher-release", "1");
            }
            self.served.fetch_add(1, Ordering::SeqCst);
            self.busy_us
                .fetch_add(started.elapsed().as_micros() as u64, Ordering::SeqCst);
            b.body(Full::new(Bytes::from("page"))).unwrap()
        };
        resp
    }
}

/// What the crowd saw.
#[derive(Default)]
struct Seen {
    server_errors: AtomicUsize,
    too_many: AtomicUsize,
    /// Statuses other than 200, 5xx and 429.
    odd: AtomicUsize,
    broken: AtomicUsize,
    /// Admitted visitors held again while browsing.
    held_again: AtomicUsize,
    /// When each visitor was let in (told so, or reached the origin
    /// straight away), from the start of the test.
    admitted: Mutex<Vec<Duration>>,
    /// Visitors let in straight away, on arrival.
    direct: AtomicUsize,
}

impl Seen {
    fn errors(&self) -> (usize, usize, usize, usize) {
        (
            self.server_errors.load(Ordering::SeqCst),
            self.too_many.load(Ordering::SeqCst),
            self.odd.load(Ordering::SeqCst),
            self.broken.load(Ordering::SeqCst),
        )
    }

    fn admitted(&self) -> Vec<Duration> {
        let mut a = self.admitted.lock().unwrap().clone();
        a.sort();
        a
    }
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// One answer as a browser sees it.
struct Answer {
    status: u16,
    /// From the origin.
    origin: bool,
    /// usher's `X-Usher-State`.
    state: Option<String>,
    /// The poll interval usher gives (JSON `refresh_seconds`, or the
    /// holding page's `data-refresh`).
    refresh: Option<u64>,
}

/// One browser: keeps its cookies.
struct Browser {
    base: String,
    client: HttpClient,
    jar: HashMap<String, String>,
    seen: Arc<Seen>,
}

impl Browser {
    /// `GET path`; None when the connection broke.
    async fn get(&mut self, path: &str, json: bool) -> Option<Answer> {
        let mut req = Request::get(format!("{}{path}", self.base));
        if !self.jar.is_empty() {
            let c: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(header::COOKIE, c.join("; "));
        }
        if json {
            req = req.header(header::ACCEPT, "application/json");
        }
        let resp = match self.client.request(req.body(Empty::new()).unwrap()).await {
            Ok(r) => r,
            Err(_) => {
                self.seen.broken.fetch_add(1, Ordering::SeqCst);
                return None;
            }
        };
        for v in resp.headers().get_all(header::SET_COOKIE) {
            let text = v.to_str().unwrap();
            let (k, val) = text.split(';').next().unwrap().split_once('=').unwrap();
            if text.contains("Max-Age=0") {
                self.jar.remove(k);
            } else {
                self.jar.insert(k.into(), val.into());
            }
        }
        let status = resp.status().as_u16();
        let origin = resp.headers().contains_key("x-origin");
        let state = resp
            .headers()
            .get("x-usher-state")
            .map(|v| v.to_str().unwrap().to_string());
        let Ok(body) = resp.into_body().collect().await.map(|b| b.to_bytes()) else {
            self.seen.broken.fetch_add(1, Ordering::SeqCst);
            return None;
        };
        match status {
            200 => {}
            429 => {
                self.seen.too_many.fetch_add(1, Ordering::SeqCst);
            }
            500.. => {
                self.seen.server_errors.fetch_add(1, Ordering::SeqCst);
            }
            _ => {
                self.seen.odd.fetch_add(1, Ordering::SeqCst);
            }
        }
        let refresh = if status != 200 || origin {
            None
        } else if json {
            serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|v| v["refresh_seconds"].as_u64())
        } else {
            // the holding page: <... data-refresh="N" ...>
            let text = String::from_utf8_lossy(&body);
            text.split_once("data-refresh=\"")
                .and_then(|(_, rest)| rest.split('"').next())
                .and_then(|n| n.parse().ok())
        };
        Some(Answer {
            status,
            origin,
            state,
            refresh,
        })
    }

    /// Arrives at `/` and waits like the holding page does (a long poll at
    /// the interval usher gives, jittered 0.8 to 1.2, doubled after an
    /// error) until let in. Returns when let in, with the pass in the jar.
    async fn wait_turn(&mut self, started: Instant) {
        let mut refresh = 2u64;
        let mut errs = 0u32;
        let mut answer = self.get("/", false).await;
        loop {
            match answer {
                Some(a) if a.status == 200 && a.origin => {
                    // let straight in on arrival
                    self.seen.direct.fetch_add(1, Ordering::SeqCst);
                    self.seen.admitted.lock().unwrap().push(started.elapsed());
                    return;
                }
                Some(a) if a.status == 200 && a.state.as_deref() == Some("admitted") => {
                    self.seen.admitted.lock().unwrap().push(started.elapsed());
                    return;
                }
                Some(a) if a.status == 200 => {
                    errs = 0;
                    if let Some(r) = a.refresh {
                        refresh = r;
                    }
                }
                _ => errs += 1,
            }
            let jitter = 0.8 + 0.4 * rand::random::<f64>();
            let backoff = f64::from(1u32 << errs.min(3));
            tokio::time::sleep(Duration::from_secs_f64(refresh as f64 * jitter * backoff)).await;
            answer = if self.jar.contains_key("usher_ticket") {
                self.get(STATUS_POLL, true).await
            } else {
                self.get("/", false).await
            };
        }
    }
}

fn crowd_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Per-address limits off: the whole crowd comes from 127.0.0.1.
const NO_ADDRESS_LIMITS: &str = "[room.limits]\n\
    tickets_per_minute_per_ip = 100000000\n\
    requests_per_second_per_ip = 0\n\
    requests_per_second_per_pass = 0\n";

/// Admissions per second from `from` to `to` seconds after the first one.
fn rate_between(admitted: &[Duration], from: f64, to: f64) -> f64 {
    let Some(first) = admitted.first() else {
        return 0.0;
    };
    let (a, b) = (
        *first + Duration::from_secs_f64(from),
        *first + Duration::from_secs_f64(to),
    );
    admitted.iter().filter(|t| **t >= a && **t < b).count() as f64 / (to - from)
}

/// The best rate over any `window` seconds (`admitted` sorted).
fn best_rate(admitted: &[Duration], window: f64) -> f64 {
    let w = Duration::from_secs_f64(window);
    let mut best = 0;
    let mut lo = 0;
    for hi in 0..admitted.len() {
        while admitted[hi] - admitted[lo] >= w {
            lo += 1;
        }
        best = best.max(hi + 1 - lo);
    }
    best as f64 / window
}

/// Admissions in each second of the run.
fn per_second(admitted: &[Duration]) -> Vec<usize> {
    let mut h = vec![0; admitted.last().map_or(0, |t| t.as_secs() as usize + 1)];
    for t in admitted {
        h[t.as_secs() as usize] += 1;
    }
    h
}

/// `usher_gate_backoffs_total`, summed over the reasons.
fn backoffs(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("usher_gate_backoffs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The room's part of `/admin/status`.
async fn room_status(usher: &Usher) -> serde_json::Value {
    let r = common::clients::admin_get(usher.admin.expect("admin listener"), "/admin/status").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("status JSON");
    v["room"].clone()
}

/// Twice a second, the gate's figures from `/admin/status`, kept to
/// explain a failure.
fn trace_gate(admin: SocketAddr) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<String>>>) {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let task = tokio::spawn({
        let lines = lines.clone();
        async move {
            let t = Instant::now();
            loop {
                let r = common::clients::admin_get(admin, "/admin/status").await;
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.body) {
                    let (room, g) = (&v["room"], &v["room"]["gate"]);
                    lines.lock().unwrap().push(format!(
                        "{:.1}s limit {} busy {} latency {} baseline {} move {} \
                         active {} pending {} waiting {}",
                        t.elapsed().as_secs_f64(),
                        g["limit"],
                        g["origin_busy"],
                        g["origin_latency_ms"],
                        g["origin_baseline_ms"],
                        g["last_move"],
                        room["active"],
                        room["pending"],
                        room["waiting"]
                    ));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    });
    (task, lines)
}

/// A crowd of `n` visitors arriving at once; each waits its turn, then GETs
/// `/` once (the origin's answer releases it). Returns how many got that
/// far before `deadline` (the others are stopped).
async fn release_crowd(usher: &Usher, n: usize, seen: &Arc<Seen>, deadline: Duration) -> usize {
    let client = crowd_client();
    let started = Instant::now();
    let done = Arc::new(AtomicUsize::new(0));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let mut b = Browser {
                base: format!("http://{}", usher.addr),
                client: client.clone(),
                jar: HashMap::new(),
                seen: seen.clone(),
            };
            let done = done.clone();
            tokio::spawn(async move {
                b.wait_turn(started).await;
                if b.jar.contains_key("usher_pass") {
                    // told "admitted": the page, whose answer ends the visit
                    let a = b.get("/", false).await;
                    assert!(
                        a.as_ref().is_some_and(|a| a.origin),
                        "an admitted visitor reaches the origin (status {:?}, state {:?})",
                        a.as_ref().map(|a| a.status),
                        a.as_ref().and_then(|a| a.state.clone())
                    );
                }
                assert!(
                    !b.jar.contains_key("usher_pass"),
                    "the origin's release clears the pass"
                );
                done.fetch_add(1, Ordering::SeqCst);
            })
        })
        .collect();
    let aborts: Vec<_> = tasks.iter().map(|t| t.abort_handle()).collect();
    if let Ok(results) = tokio::time::timeout(deadline, futures_util::future::join_all(tasks)).await
    {
        for r in results {
            r.expect("visitor task");
        }
    }
    for a in aborts {
        a.abort();
    }
    done.load(Ordering::SeqCst)
}

/// A fixed rate of 60 a second, visitors who leave at once (every answer of
/// the origin releases them), `max_active_users` = the origin's 20 slots: the
/// line moves at the configured rate, because a granted place is taken at
/// once by its long-polling holder instead of sitting idle until the next
/// poll (without `wait=1` this measures about 37/s).
///
/// The tick is 50 ms: the GCRA's bucket holds `burst` admissions and the
/// room draws on it once a tick, so no rate above burst / tick is possible
/// (with burst 5 at the default 250 ms tick: 20/s, whatever the rate says).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_crowd_admits_at_the_configured_rate() {
    const CAPACITY: usize = 20;
    const VISITORS: usize = 600;
    const PER_SECOND: f64 = 60.0;
    let _one = ONE_AT_A_TIME.lock().await;
    within(45, "release crowd at a fixed rate", async {
        let origin = Fragile::new(CAPACITY, 20, true);
        let addr = origin.start().await;
        let usher = Usher::start(&config(
            addr,
            "max_connections_per_ip = 0",
            &format!("max_in_flight = {CAPACITY}"),
            &format!(
                "[room]\nnew_users_per_minute = {}\nburst = 5\nmax_active_users = {CAPACITY}\n\
                 tick = \"50ms\"\nrefresh = \"2s\"\n{NO_ADDRESS_LIMITS}",
                (PER_SECOND * 60.0) as u32
            ),
        ))
        .await;
        let seen = Arc::new(Seen::default());
        let t = Instant::now();
        // 600 at 60/s: 10 s; stop waiting at 20 s (at a third of the rate
        // it would take 30).
        let done = release_crowd(&usher, VISITORS, &seen, Duration::from_secs(20)).await;
        let took = t.elapsed();
        let admitted = seen.admitted();
        let steady = rate_between(&admitted, 2.0, 8.0);
        let m = usher.metrics();
        let counted = metric(&m, "usher_admitted_total{via=\"line\"}").unwrap_or(0.0)
            + metric(&m, "usher_admitted_total{via=\"direct\"}").unwrap_or(0.0);
        eprintln!(
            "fixed rate: {done}/{VISITORS} in after {took:.1?} ({} on arrival); \
             {steady:.1}/s from the 2nd to the 8th second after the first; per second {:?}; \
             usher counted {counted} admissions; origin: {} served, peak {} in flight, \
             {} overloaded, mean {:.1?}; visitors saw (5xx, 429, other, broken) {:?}",
            seen.direct.load(Ordering::SeqCst),
            per_second(&admitted),
            origin.served(),
            origin.max_seen(),
            origin.overloaded(),
            origin.mean_latency(),
            seen.errors()
        );
        assert_eq!(
            seen.errors(),
            (0, 0, 0, 0),
            "visitors saw (5xx, 429, other statuses, broken connections)"
        );
        origin.assert_spared();
        assert!(
            steady >= 0.9 * PER_SECOND,
            "{steady:.1} admissions a second from the 2nd to the 8th second, \
             below 90% of the configured {PER_SECOND}; per second {:?}",
            per_second(&admitted)
        );
        assert_eq!(done, VISITORS, "everyone was let in within 20 s");
        assert_eq!(counted as usize, VISITORS, "usher counted every admission");
        usher.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

/// No rate set: the closed-loop gate lets visitors who leave at once in as
/// fast as the origin takes them. Each brings one request of the origin's
/// latency L, so at the target share of 20 slots the origin takes
/// 20 x 0.85 / L visitors a second (about 740/s at L = 23 ms); the gate
/// must reach 70% of that over some two seconds. The test client is not
/// what limits: the same crowd on this machine is let in at about 990/s by
/// a fixed gate of 1000/s (burst 250), with the origin's slots full and no
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_crowd_closed_loop_keeps_the_origin_busy() {
    const CAPACITY: usize = 20;
    const VISITORS: usize = 2000;
    let _one = ONE_AT_A_TIME.lock().await;
    within(45, "release crowd, closed-loop gate", async {
        let origin = Fragile::new(CAPACITY, 20, true);
        let addr = origin.start().await;
        let usher = Usher::start(&config(
            addr,
            "max_connections_per_ip = 0",
            &format!("max_in_flight = {CAPACITY}"),
            &format!("[room]\nrefresh = \"2s\"\n{NO_ADDRESS_LIMITS}"),
        ))
        .await;
        let (tracer, trace) = trace_gate(usher.admin.expect("admin listener"));
        let seen = Arc::new(Seen::default());
        let t = Instant::now();
        let done = release_crowd(&usher, VISITORS, &seen, Duration::from_secs(25)).await;
        let took = t.elapsed();
        tracer.abort();
        let admitted = seen.admitted();
        let best = best_rate(&admitted, 2.0);
        let latency = origin.mean_latency().as_secs_f64();
        let ceiling = CAPACITY as f64 * 0.85 / latency;
        let m = usher.metrics();
        let reasons: Vec<&str> = m
            .lines()
            .filter(|l| l.starts_with("usher_gate_backoffs_total{"))
            .collect();
        let report = format!(
            "closed loop: {done}/{VISITORS} in after {took:.1?} ({} on arrival); \
             best {best:.0}/s over 2 s (the origin takes {ceiling:.0}/s at the target); \
             per second {:?}; {reasons:?}; origin: {} served, peak {} in flight, \
             {} overloaded, mean {:.1?}; visitors saw (5xx, 429, other, broken) {:?}\n\
             gate:\n{}",
            seen.direct.load(Ordering::SeqCst),
            per_second(&admitted),
            origin.served(),
            origin.max_seen(),
            origin.overloaded(),
            origin.mean_latency(),
            seen.errors(),
            trace.lock().unwrap().join("\n")
        );
        eprintln!("{report}");
        assert_eq!(
            seen.errors(),
            (0, 0, 0, 0),
            "visitors saw (5xx, 429, other statuses, broken connections)"
        );
        origin.assert_spared();
        assert!(
            best >= 0.7 * ceiling,
            "at best {best:.0} admissions a second, below 70% of the {ceiling:.0} \
             the origin takes at the target"
        );
        assert_eq!(done, VISITORS, "everyone was let in within 25 s");
        usher.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

/// No rate set, visitors who stay and browse: once the gate keeps the
/// origin busy, the origin slowing down five times makes the gate back off
/// within seconds, and hold back, without the origin ever seeing more than
/// its slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_backs_off_when_the_origin_slows_down() {
    const CAPACITY: usize = 16;
    const VISITORS: usize = 300;
    const LATENCY_MS: u64 = 40;
    let _one = ONE_AT_A_TIME.lock().await;
    within(45, "gate backs off on a slow origin", async {
        let origin = Fragile::new(CAPACITY, LATENCY_MS, false);
        let addr = origin.start().await;
        let usher = Usher::start(&config(
            addr,
            "max_connections_per_ip = 0",
            &format!("max_in_flight = {CAPACITY}"),
            &format!("[room]\nrefresh = \"2s\"\nsession_duration = \"30s\"\n{NO_ADDRESS_LIMITS}"),
        ))
        .await;
        let gate = &room_status(&usher).await["gate"];
        assert_eq!(gate["mode"], "closed-loop", "{gate}");
        let (tracer, trace) = trace_gate(usher.admin.expect("admin listener"));

        // The crowd: once in, each browses (a page every 160-240 ms, no
        // release) until the test ends: at 40 ms a page, about 80 of them
        // inside fill the target share of the slots.
        let seen = Arc::new(Seen::default());
        let client = crowd_client();
        let started = Instant::now();
        let tasks: Vec<_> = (0..VISITORS)
            .map(|i| {
                let mut b = Browser {
                    base: format!("http://{}", usher.addr),
                    client: client.clone(),
                    jar: HashMap::new(),
                    seen: seen.clone(),
                };
                tokio::spawn(async move {
                    b.wait_turn(started).await;
                    for k in 0.. {
                        match b.get(&format!("/page/{i}/{k}"), false).await {
                            Some(a) if a.origin => {}
                            Some(a) if a.state.is_some() => {
                                b.seen.held_again.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => {}
                        }
                        let pause = 160 + rand::random::<u64>() % 80;
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                })
            })
            .collect();

        // Loaded: the gate has let in enough to keep the origin busy (the
        // first arrivals alone make it half busy for a moment, hence 0.7),
        // and has had a second and a half to settle.
        let loaded = tokio::time::timeout(Duration::from_secs(12), async {
            loop {
                let m = usher.metrics();
                if metric(&m, "usher_gate_origin_busy_ratio").unwrap_or(0.0) >= 0.7 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            loaded.is_ok(),
            "the origin never got 70% busy in 12 s:\n{}",
            trace.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let m = usher.metrics();
        let loaded_at = started.elapsed();
        let limit_before = metric(&m, "usher_gate_limit").expect("usher_gate_limit");
        let backoffs_before = backoffs(&m);
        let busy_before = metric(&m, "usher_gate_origin_busy_ratio").unwrap_or(0.0);
        let active_before = metric(&m, "usher_active_users").unwrap_or(0.0);
        assert!(
            busy_before >= 0.5,
            "the origin is busy before the slowdown: {busy_before}"
        );
        let gate = &room_status(&usher).await["gate"];
        assert_eq!(gate["mode"], "closed-loop", "{gate}");
        assert!(gate["limit"].as_u64().is_some_and(|l| l >= 1), "{gate}");

        // The origin slows down five times.
        origin.latency_ms.store(LATENCY_MS * 5, Ordering::SeqCst);
        let slowed = Instant::now();
        let (mut backed_off, mut fell) = (None, None);
        let mut lowest = limit_before;
        while slowed.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(25)).await;
            let m = usher.metrics();
            if backed_off.is_none() && backoffs(&m) > backoffs_before {
                backed_off = Some(slowed.elapsed());
            }
            let limit = metric(&m, "usher_gate_limit").unwrap_or(f64::MAX);
            lowest = lowest.min(limit);
            // a cut, not the gate's breathing around its aim
            if fell.is_none() && limit <= 0.9 * limit_before {
                fell = Some(slowed.elapsed());
            }
        }
        // and it holds back while the origin stays slow
        tokio::time::sleep(Duration::from_millis(500)).await;
        let end = usher.metrics();
        let limit_end = metric(&end, "usher_gate_limit").unwrap_or(f64::MAX);
        let gate_end = room_status(&usher).await["gate"].clone();
        for t in tasks {
            t.abort();
        }
        tracer.abort();
        let reasons: Vec<&str> = end
            .lines()
            .filter(|l| l.starts_with("usher_gate_backoffs_total{"))
            .collect();
        let report = format!(
            "slowdown at {loaded_at:.1?} (busy {busy_before:.2}, limit {limit_before}, \
             active {active_before}, {backoffs_before} back-offs so far); 5x slower: \
             back-off after {backed_off:.1?}, limit at most 90% of {limit_before} after \
             {fell:.1?}, lowest {lowest}, 3.5 s on {limit_end}; {reasons:?}; gate then \
             {gate_end}; origin: {} served, peak {} in flight, {} overloaded; visitors saw \
             (5xx, 429, other, broken) {:?}, held again {}\ngate:\n{}",
            origin.served(),
            origin.max_seen(),
            origin.overloaded(),
            seen.errors(),
            seen.held_again.load(Ordering::SeqCst),
            trace.lock().unwrap().join("\n")
        );
        eprintln!("{report}");
        assert!(
            backed_off.is_some(),
            "no back-off within 3 s of the origin slowing down 5x \
             (usher_gate_backoffs_total {backoffs_before} before)"
        );
        assert!(
            fell.is_some(),
            "usher_gate_limit did not fall to 90% of {limit_before} within 3 s \
             (lowest {lowest})"
        );
        assert!(
            limit_end < limit_before,
            "the gate holds back while the origin stays slow: limit {limit_end}, \
             {limit_before} before"
        );
        origin.assert_spared();
        assert_eq!(
            seen.held_again.load(Ordering::SeqCst),
            0,
            "nobody admitted is held again"
        );
        usher.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}
