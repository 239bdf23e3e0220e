//! theater: a small cinema chain website, usher's demo origin.
//!
//! It behaves like the sites a government discount-voucher giveaway knocked over: it serves at
//! most `--capacity` requests at once, slows down as it fills up, and past capacity answers a
//! fast plain 503 page (the collapse visitors saw). It runs its own naive voucher counter, which
//! usher replaces by issuing vouchers at the edge and forwarding them in `X-Usher-Voucher`.
//!
//! Service time: `base * (1 + 3 * (in_flight / capacity)^2)`, with `in_flight` counting this
//! request: a lone request takes about `base`, a full house `4 * base`. With `--overload slow`
//! nothing is refused and the factor keeps growing (capped at 50x) as load passes capacity.
//!
//! `/health` and `/api/stats` skip the limit and the latency so probes and tests can watch the
//! origin while it is saturated; they are not counted in `served`. `max_in_flight_seen` counts
//! every arrival, refused ones included, so a value above `capacity` means the origin was pushed
//! past what it can take (a test behind usher expects it to stay at or below `capacity`).
//!
//! Run: `cargo run --example theater -- --listen 127.0.0.1:8000`.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

mod pages;
#[cfg(test)]
mod tests;

use pages::{overloaded, respond, route, Resp};

/// Largest request body the claim form reads; the form itself sends a few bytes.
const MAX_BODY: usize = 16 * 1024;
/// Longest voucher code accepted from usher; real codes are far shorter.
const MAX_CODE: usize = 128;
/// How long open connections may finish after Ctrl-C.
const DRAIN: Duration = Duration::from_secs(5);
/// Keeps `--overload slow` from sleeping for minutes when load is far past capacity.
const MAX_SLOWDOWN: f64 = 50.0;

/// Command line of the demo origin.
#[derive(Parser, Debug, Clone)]
#[command(about = "Hanbit Cinema: usher's demo origin that collapses under a flash crowd")]
struct Args {
    /// Address to listen on (HTTP/1.1 and h2c).
    #[arg(long, default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// Requests it can serve at once.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..))]
    capacity: u64,
    /// Base service time in milliseconds (grows with load, see the module doc).
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// What happens once in-flight requests reach capacity.
    #[arg(long, value_enum, default_value_t = Overload::Error)]
    overload: Overload,
    /// Stock of its own naive voucher form.
    #[arg(long, default_value_t = 1000)]
    vouchers: u64,
}

/// Behaviour past capacity.
#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
enum Overload {
    /// Answer 503 at once with a plain error page.
    Error,
    /// Accept everything and get slower and slower.
    Slow,
}

/// Tunables of one theater instance.
#[derive(Clone, Debug)]
struct Settings {
    capacity: u64,
    latency: Duration,
    overload: Overload,
    vouchers: u64,
}

/// Counters since start, shown by `/api/stats`.
#[derive(Default, Debug)]
struct Stats {
    served: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight_seen: AtomicU64,
    rejected_503: AtomicU64,
}

/// Shared state of the site.
struct Theater {
    settings: Settings,
    stats: Stats,
    vouchers_left: AtomicU64,
}

/// One request being handled; gives its slot back on drop, even if the client goes away.
struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    /// Counts the request in and returns the in-flight count including it.
    fn enter(stats: &'a Stats) -> (Self, u64) {
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_in_flight_seen.fetch_max(now, Ordering::SeqCst);
        (Self(stats), now)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Theater {
    fn new(settings: Settings) -> Self {
        let vouchers_left = AtomicU64::new(settings.vouchers);
        Self {
            settings,
            stats: Stats::default(),
            vouchers_left,
        }
    }

    /// Service time for a request that finds `in_flight` requests (itself included).
    fn service_time(&self, in_flight: u64) -> Duration {
        let load = in_flight as f64 / self.settings.capacity as f64;
        let factor = (1.0 + 3.0 * load * load).min(MAX_SLOWDOWN);
        self.settings.latency.mul_f64(factor)
    }

    /// Takes one voucher from the naive stock; returns its number (1-based), None when gone.
    fn take_voucher(&self) -> Option<u64> {
        let before = self
            .vouchers_left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .ok()?;
        Some(self.settings.vouchers - before + 1)
    }

    fn stats_json(&self) -> serde_json::Value {
        let s = &self.stats;
        serde_json::json!({
            "served": s.served.load(Ordering::SeqCst),
            "in_flight": s.in_flight.load(Ordering::SeqCst),
            "max_in_flight_seen": s.max_in_flight_seen.load(Ordering::SeqCst),
            "rejected_503": s.rejected_503.load(Ordering::SeqCst),
            "capacity": self.settings.capacity,
            "vouchers_left": self.vouchers_left.load(Ordering::SeqCst),
        })
    }
}

/// Answers one request: probes directly, the rest through the capacity limit and latency.
async fn handle(t: Arc<Theater>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    match req.uri().path() {
        "/health" if get => return Ok(respond(StatusCode::OK, "text/plain", "ok\n")),
        "/api/stats" if get => {
            let body = t.stats_json().to_string();
            return Ok(respond(StatusCode::OK, "application/json", body));
        }
        _ => {}
    }
    let (_slot, in_flight) = InFlight::enter(&t.stats);
    if in_flight > t.settings.capacity && t.settings.overload == Overload::Error {
        t.stats.rejected_503.fetch_add(1, Ordering::SeqCst);
        return Ok(overloaded());
    }
    let service_time = t.service_time(in_flight);
    if !service_time.is_zero() {
        tokio::time::sleep(service_time).await;
    }
    let resp = route(&t, req).await;
    t.stats.served.fetch_add(1, Ordering::SeqCst);
    Ok(resp)
}

/// Serves HTTP/1.1 and h2c on `listener` until `shutdown` resolves, then drains connections.
async fn serve(listener: TcpListener, t: Arc<Theater>, shutdown: impl Future<Output = ()>) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // A timer lets hyper drop clients that dribble headers (slowloris) instead of holding them.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually out of file descriptors under a flood: back off instead of spinning.
                    eprintln!("theater: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let t = t.clone();
        let svc = service_fn(move |req| handle(t.clone(), req));
        let conn = builder.serve_connection(TokioIo::new(stream), svc);
        let conn = graceful.watch(conn.into_owned());
        tokio::spawn(async move {
            // Client resets are routine under load; nothing useful to report.
            let _ = conn.await;
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, graceful.shutdown()).await;
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let settings = Settings {
        capacity: args.capacity,
        latency: Duration::from_millis(args.latency_ms),
        overload: args.overload,
        vouchers: args.vouchers,
    };
    let listener = TcpListener::bind(args.listen).await?;
    println!(
        "theater listening on http://{} (capacity {}, base latency {} ms)",
        listener.local_addr()?,
        args.capacity,
        args.latency_ms
    );
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    serve(listener, Arc::new(Theater::new(settings)), shutdown).await;
    Ok(())
}
