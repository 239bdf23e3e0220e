//! The fragile origin the crowd tests stand usher in front of.

use crate::support as common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::InFlight;
use http::{Request, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A fragile origin: serves `capacity` requests at once, each after
/// `latency_ms`, answers 503 beyond that, and remembers the most it ever
/// had in flight and how long its answers took.
pub(super) struct Fragile {
    pub(super) capacity: usize,
    pub(super) latency_ms: AtomicU64,
    /// Every answer ends the visitor's session (`X-Usher-Release: 1`).
    pub(super) release: bool,
    pub(super) in_flight: AtomicUsize,
    pub(super) max_seen: AtomicUsize,
    pub(super) overloaded: AtomicUsize,
    pub(super) served: AtomicUsize,
    /// Sum of the served requests' time at the origin, microseconds.
    pub(super) busy_us: AtomicU64,
}

impl Fragile {
    pub(super) fn new(capacity: usize, latency_ms: u64, release: bool) -> Arc<Fragile> {
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
    pub(super) fn assert_spared(&self) {
        assert!(
            self.max_seen() <= self.capacity,
            "the origin saw {} at once, more than its {}",
            self.max_seen(),
            self.capacity
        );
        assert_eq!(self.overloaded(), 0, "the origin never answered 503");
    }

    pub(super) fn max_seen(&self) -> usize {
        self.max_seen.load(Ordering::SeqCst)
    }

    pub(super) fn overloaded(&self) -> usize {
        self.overloaded.load(Ordering::SeqCst)
    }

    pub(super) fn served(&self) -> usize {
        self.served.load(Ordering::SeqCst)
    }

    /// Mean time a served request spent at the origin.
    pub(super) fn mean_latency(&self) -> Duration {
        let n = self.served().max(1) as u64;
        Duration::from_micros(self.busy_us.load(Ordering::SeqCst) / n)
    }

    pub(super) async fn start(self: &Arc<Self>) -> SocketAddr {
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

    pub(super) async fn serve(&self) -> Response<Full<Bytes>> {
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
