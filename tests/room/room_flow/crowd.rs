//! The crowd: browsers that keep their cookies and poll as the holding page
//! does, what they saw, and the figures drawn from it.

use crate::support as common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::inproc::Usher;
use http::{header, Request};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

/// The status poll the holding page makes.
pub(super) const STATUS_POLL: &str = "/__usher/status?wait=1";

/// What the crowd saw.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) server_errors: AtomicUsize,
    pub(super) too_many: AtomicUsize,
    /// Statuses other than 200, 5xx and 429.
    pub(super) odd: AtomicUsize,
    pub(super) broken: AtomicUsize,
    /// Admitted visitors held again while browsing.
    pub(super) held_again: AtomicUsize,
    /// When each visitor was let in (told so, or reached the origin
    /// straight away), from the start of the test.
    pub(super) admitted: Mutex<Vec<Duration>>,
    /// Visitors let in straight away, on arrival.
    pub(super) direct: AtomicUsize,
}

impl Seen {
    pub(super) fn errors(&self) -> (usize, usize, usize, usize) {
        (
            self.server_errors.load(Ordering::SeqCst),
            self.too_many.load(Ordering::SeqCst),
            self.odd.load(Ordering::SeqCst),
            self.broken.load(Ordering::SeqCst),
        )
    }

    /// No visitor saw a 5xx, a 429, another odd status or a broken
    /// connection.
    pub(super) fn assert_no_errors(&self) {
        assert_eq!(
            self.errors(),
            (0, 0, 0, 0),
            "visitors saw (5xx, 429, other statuses, broken connections)"
        );
    }

    pub(super) fn admitted(&self) -> Vec<Duration> {
        let mut a = self.admitted.lock().unwrap().clone();
        a.sort();
        a
    }
}

pub(super) type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// One answer as a browser sees it.
pub(super) struct Answer {
    pub(super) status: u16,
    /// From the origin.
    pub(super) origin: bool,
    /// usher's `X-Usher-State`.
    pub(super) state: Option<String>,
    /// The poll interval usher gives (JSON `refresh_seconds`, or the
    /// holding page's `data-refresh`).
    pub(super) refresh: Option<u64>,
}

/// One browser: keeps its cookies.
pub(super) struct Browser {
    pub(super) base: String,
    pub(super) client: HttpClient,
    pub(super) jar: HashMap<String, String>,
    pub(super) seen: Arc<Seen>,
}

impl Browser {
    /// `GET path`; None when the connection broke.
    pub(super) async fn get(&mut self, path: &str, json: bool) -> Option<Answer> {
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
    pub(super) async fn wait_turn(&mut self, started: Instant) {
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

pub(super) fn crowd_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Per-address limits off: the whole crowd comes from 127.0.0.1.
pub(super) const NO_ADDRESS_LIMITS: &str = "[room.limits]\n\
    tickets_per_minute_per_ip = 100000000\n\
    requests_per_second_per_ip = 0\n\
    requests_per_second_per_pass = 0\n";

/// An in-process usher in front of a crowd test's origin at `origin`: no
/// per-connection or per-address limits (the crowd is one address),
/// `max_in_flight` = the origin's `slots`, and `room`'s lines under `[room]`.
pub(super) async fn usher_before(origin: SocketAddr, slots: usize, room: &str) -> Usher {
    Usher::start(&common::config(
        origin,
        "max_connections_per_ip = 0",
        &format!("max_in_flight = {slots}"),
        &format!("[room]\n{room}\n{NO_ADDRESS_LIMITS}"),
    ))
    .await
}

/// Admissions per second from `from` to `to` seconds after the first one.
pub(super) fn rate_between(admitted: &[Duration], from: f64, to: f64) -> f64 {
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
pub(super) fn best_rate(admitted: &[Duration], window: f64) -> f64 {
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
pub(super) fn per_second(admitted: &[Duration]) -> Vec<usize> {
    let mut h = vec![0; admitted.last().map_or(0, |t| t.as_secs() as usize + 1)];
    for t in admitted {
        h[t.as_secs() as usize] += 1;
    }
    h
}

/// `usher_gate_backoffs_total`, summed over the reasons.
pub(super) fn backoffs(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("usher_gate_backoffs_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The room's part of `/admin/status`.
pub(super) async fn room_status(usher: &Usher) -> serde_json::Value {
    let r = common::clients::admin_get(usher.admin.expect("admin listener"), "/admin/status").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("status JSON");
    v["room"].clone()
}

/// Twice a second, the gate's figures from `/admin/status`, kept to
/// explain a failure.
pub(super) fn trace_gate(
    admin: SocketAddr,
) -> (tokio::task::JoinHandle<()>, Arc<Mutex<Vec<String>>>) {
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
pub(super) async fn release_crowd(
    usher: &Usher,
    n: usize,
    seen: &Arc<Seen>,
    deadline: Duration,
) -> usize {
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
