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

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

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

type Resp = Response<Full<Bytes>>;

/// id, Korean title, English title, minutes, rating.
struct Movie(u32, &'static str, &'static str, u32, &'static str);

const MOVIES: [Movie; 5] = [
    Movie(1, "별빛 정거장", "Starlight Station", 118, "12"),
    Movie(2, "한강의 여름", "Summer on the Han", 104, "ALL"),
    Movie(3, "마지막 상영", "The Last Screening", 131, "15"),
    Movie(4, "고양이 탐정", "Detective Cat", 96, "ALL"),
    Movie(5, "새벽의 추격", "Chase at Dawn", 122, "18"),
];

const STYLE: &str = "body{margin:0;font-family:system-ui,sans-serif;background:#111;color:#eee}\
header{display:flex;justify-content:space-between;align-items:center;padding:1em 2em;background:#b3122e}\
header a{color:#fff;text-decoration:none;font-weight:bold}.brand span{font-weight:normal;opacity:.8}\
main{max-width:48em;margin:2em auto;padding:0 1em}ul.movies{list-style:none;padding:0}\
ul.movies li{padding:.8em;margin:.5em 0;background:#222;border-radius:6px}\
a{color:#ffcc4d}.code{font-size:2em;font-family:monospace;color:#7fff7f}\
button{font-size:1.2em;padding:.5em 1.5em;background:#ffcc4d;border:0;border-radius:6px}\
footer{text-align:center;opacity:.5;padding:2em}\n";

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

/// Builds a response with Content-Length; everything but the stylesheet is `no-store`.
fn respond(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let body: Bytes = body.into();
    let len = body.len() as u64;
    let mut resp = Response::new(Full::new(body));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

fn html(status: StatusCode, title: &str, main: &str) -> Resp {
    let body = format!(
        "<!doctype html>\n<html lang=\"ko\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · 시네마 한빛</title><link rel=\"stylesheet\" href=\"/static/style.css\">\
         </head><body><header><a class=\"brand\" href=\"/\">시네마 한빛 <span>Hanbit Cinema</span></a>\
         <a href=\"/voucher\">할인권 Vouchers</a></header><main>{main}</main>\
         <footer>시네마 한빛 · Hanbit Cinema · demo origin for usher</footer></body></html>\n"
    );
    respond(status, "text/html; charset=utf-8", body)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// The page visitors saw when the real sites went down: plain, no stylesheet, fast.
fn overloaded() -> Resp {
    respond(
        StatusCode::SERVICE_UNAVAILABLE,
        "text/html; charset=utf-8",
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>503 Service Unavailable</title>\
         </head><body><h1>503 Service Unavailable</h1><p>접속자가 많아 서비스를 이용할 수 없습니다. \
         잠시 후 다시 시도해 주세요.</p><p>The server is temporarily unable to service your request \
         due to heavy load. Please try again later.</p></body></html>\n",
    )
}

fn not_found() -> Resp {
    let main = "<h1>404</h1><p>페이지를 찾을 수 없습니다. Page not found.</p><p><a href=\"/\">홈 Home</a></p>";
    html(StatusCode::NOT_FOUND, "404", main)
}

fn home() -> Resp {
    let mut main = String::from(
        "<h1>지금 상영 중 Now showing</h1><p>정부 문화 할인권 선착순 지급 중! \
         Government discount vouchers, first come first served: \
         <a href=\"/voucher\">받기 Claim yours</a></p><ul class=\"movies\">",
    );
    for m in &MOVIES {
        main.push_str(&format!(
            "<li><a href=\"/movies/{}\">{} <small>{}</small></a> · {} min · {}</li>",
            m.0, m.1, m.2, m.3, m.4
        ));
    }
    main.push_str("</ul>");
    html(StatusCode::OK, "홈 Home", &main)
}

fn movie(id: &str) -> Resp {
    let Some(m) = MOVIES.iter().find(|m| id.parse() == Ok(m.0)) else {
        return not_found();
    };
    let main = format!(
        "<h1>{} <small>{}</small></h1><p>{} min · 관람등급 rating {}</p>\
         <form method=\"post\" action=\"/checkout\"><button>예매 Book a seat</button></form>\
         <p><a href=\"/voucher\">할인권 받기 Get a discount voucher</a></p>",
        m.1, m.2, m.3, m.4
    );
    html(StatusCode::OK, m.2, &main)
}

fn movies_json() -> Resp {
    let list: Vec<_> = MOVIES
        .iter()
        .map(|m| serde_json::json!({"id": m.0, "title_ko": m.1, "title_en": m.2, "minutes": m.3, "rating": m.4}))
        .collect();
    let body = serde_json::Value::from(list).to_string();
    respond(StatusCode::OK, "application/json", body)
}

fn voucher_form(t: &Theater) -> Resp {
    let left = t.vouchers_left.load(Ordering::SeqCst);
    let main = format!(
        "<h1>문화 할인권 Discount voucher</h1><p>1인 1매, 선착순. One per person, while stock lasts \
         (남은 수량 left: {left}).</p><form method=\"post\" action=\"/voucher/claim\">\
         <input type=\"hidden\" name=\"want\" value=\"1\"><button>받기 Claim</button></form>"
    );
    html(StatusCode::OK, "할인권 Voucher", &main)
}

fn voucher_page(code: &str) -> Resp {
    let main = format!(
        "<h1>발급 완료 Issued</h1><p>your voucher: <span class=\"code\">{}</span></p>\
         <p>상영관에서 보여 주세요. Show it at the box office.</p>",
        escape(code)
    );
    html(StatusCode::OK, "할인권 Voucher", &main)
}

async fn claim(t: &Theater, req: Request<Incoming>) -> Resp {
    // usher issued the voucher at the edge; this site only displays it.
    let edge_code = match req.headers().get("x-usher-voucher").map(|v| v.to_str()) {
        None => None,
        Some(Ok(code)) if !code.is_empty() && code.len() <= MAX_CODE => Some(code.to_owned()),
        Some(_) => return bad_request("Bad voucher."),
    };
    // Reading the (tiny) form keeps the connection reusable; its content does not matter.
    let body = Limited::new(req.into_body(), MAX_BODY);
    if body.collect().await.is_err() {
        return bad_request("Bad request body.");
    }
    if let Some(code) = edge_code {
        return voucher_page(&code);
    }
    match t.take_voucher() {
        Some(n) => voucher_page(&format!("HANBIT-{n:06}")),
        None => {
            let mut resp = html(
                StatusCode::OK,
                "매진 Sold out",
                "<h1>매진 Sold out</h1><p>할인권이 모두 소진되었습니다. All vouchers are gone.</p>",
            );
            // Tells usher the stock is gone, so everyone still in line is
            // told at once instead of waiting for nothing.
            resp.headers_mut()
                .insert("x-usher-sold-out", HeaderValue::from_static("1"));
            resp
        }
    }
}

fn bad_request(why: &str) -> Resp {
    html(
        StatusCode::BAD_REQUEST,
        "400",
        &format!("<h1>400</h1><p>{why}</p>"),
    )
}

fn checkout() -> Resp {
    let main = "<h1>예매 완료 Booked</h1><p>감사합니다! Thank you, enjoy the film.</p>";
    let mut resp = html(StatusCode::OK, "예매 Checkout", main);
    // Tells usher this visitor is done so their slot can go to the next in line.
    resp.headers_mut()
        .insert("x-usher-release", HeaderValue::from_static("1"));
    resp
}

async fn route(t: &Theater, req: Request<Incoming>) -> Resp {
    let get = matches!(*req.method(), Method::GET | Method::HEAD);
    let post = req.method() == Method::POST;
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/" if get => home(),
        "/static/style.css" if get => {
            let mut resp = respond(StatusCode::OK, "text/css; charset=utf-8", STYLE);
            let cache = HeaderValue::from_static("public, max-age=3600");
            resp.headers_mut().insert(CACHE_CONTROL, cache);
            resp
        }
        "/voucher" if get => voucher_form(t),
        "/voucher/claim" if post => claim(t, req).await,
        "/api/movies" if get => movies_json(),
        "/checkout" if post => checkout(),
        "/" | "/static/style.css" | "/voucher" | "/api/movies" => not_allowed("GET, HEAD"),
        "/voucher/claim" | "/checkout" => not_allowed("POST"),
        p => match p.strip_prefix("/movies/") {
            Some(id) if get => movie(id),
            _ => not_found(),
        },
    }
}

fn not_allowed(allow: &'static str) -> Resp {
    let mut resp = respond(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain",
        "not allowed\n",
    );
    resp.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    resp
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use hyper::header::HeaderMap;
    use tokio::net::TcpStream;

    fn theater(capacity: u64, latency_ms: u64, vouchers: u64) -> Theater {
        let latency = Duration::from_millis(latency_ms);
        let overload = Overload::Error;
        Theater::new(Settings {
            capacity,
            latency,
            overload,
            vouchers,
        })
    }

    /// Starts a theater on an ephemeral port, the way scenario tests embed it.
    async fn start(capacity: u64, latency_ms: u64, vouchers: u64) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let t = Arc::new(theater(capacity, latency_ms, vouchers));
        tokio::spawn(serve(listener, t, std::future::pending()));
        addr
    }

    async fn call(
        addr: SocketAddr,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "t");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Empty::<Bytes>::new()).unwrap();
        let (parts, body) = sender.send_request(req).await.unwrap().into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        let len = parts.headers[CONTENT_LENGTH].to_str().unwrap();
        assert_eq!(len, body.len().to_string(), "Content-Length on {path}");
        let text = String::from_utf8(body.to_vec()).unwrap();
        (parts.status, parts.headers, text)
    }

    async fn get(addr: SocketAddr, path: &str) -> (StatusCode, HeaderMap, String) {
        call(addr, Method::GET, path, &[]).await
    }

    async fn stats(addr: SocketAddr) -> serde_json::Value {
        serde_json::from_str(&get(addr, "/api/stats").await.2).unwrap()
    }

    #[tokio::test]
    async fn pages_checkout_and_stats_counting() {
        let addr = start(8, 0, 10).await;
        let (status, headers, body) = get(addr, "/").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CACHE_CONTROL], "no-store");
        assert!(body.contains("/movies/5") && body.contains("/voucher"));
        assert_eq!(get(addr, "/movies/3").await.0, StatusCode::OK);
        assert_eq!(get(addr, "/movies/6").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(addr, "/movies/x").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(addr, "/nowhere").await.0, StatusCode::NOT_FOUND);
        assert_eq!(get(addr, "/static/style.css").await.0, StatusCode::OK);
        let movies: serde_json::Value =
            serde_json::from_str(&get(addr, "/api/movies").await.2).unwrap();
        assert_eq!(movies.as_array().map(Vec::len), Some(5));
        assert_eq!(get(addr, "/health").await.2, "ok\n");
        let (status, headers, _) = call(addr, Method::POST, "/checkout", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers["x-usher-release"], "1",
            "checkout releases the visitor"
        );
        assert!(get(addr, "/").await.1.get("x-usher-release").is_none());
        let s = stats(addr).await;
        assert_eq!(s["served"], 9, "probes are not counted: {s}");
        assert_eq!(s["in_flight"], 0);
        assert_eq!(s["max_in_flight_seen"], 1);
        assert_eq!(s["rejected_503"], 0);
        assert_eq!(s["capacity"], 8);
    }

    #[tokio::test]
    async fn answers_503_past_capacity() {
        let addr = start(1, 250, 10).await;
        let slow = tokio::spawn(get(addr, "/"));
        // Wait (by polling, not sleeping) until the first request holds the only slot.
        let mut held = false;
        for _ in 0..10_000 {
            if stats(addr).await["in_flight"] == 1 {
                held = true;
                break;
            }
            tokio::task::yield_now().await;
        }
        assert!(held, "first request never became in flight");
        let extra: Vec<_> = (0..3)
            .map(|_| tokio::spawn(get(addr, "/movies/1")))
            .collect();
        for r in extra {
            let (status, _, body) = r.await.unwrap();
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert!(body.contains("503 Service Unavailable"));
        }
        assert_eq!(slow.await.unwrap().0, StatusCode::OK);
        let s = stats(addr).await;
        assert_eq!(s["rejected_503"], 3);
        assert_eq!(s["served"], 1);
        assert_eq!(s["in_flight"], 0);
        assert!(s["max_in_flight_seen"].as_u64() >= Some(2), "{s}");
    }

    #[tokio::test]
    async fn vouchers_edge_naive_and_sold_out() {
        let addr = start(4, 0, 2).await;
        let claim = |h| call(addr, Method::POST, "/voucher/claim", h);
        assert!(claim(&[]).await.2.contains("HANBIT-000001"));
        let (status, headers, body) = claim(&[("x-usher-voucher", "<b>EDGE-42")]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers[CACHE_CONTROL], "no-store");
        assert!(
            body.contains("your voucher: <span class=\"code\">&lt;b&gt;EDGE-42<"),
            "{body}"
        );
        let naive = claim(&[]).await.2;
        assert!(
            naive.contains("HANBIT-000002"),
            "edge codes leave the stock alone"
        );
        assert!(claim(&[]).await.2.contains("Sold out"));
        assert_eq!(stats(addr).await["vouchers_left"], 0);
        let wrong_method = get(addr, "/voucher/claim").await.0;
        assert_eq!(wrong_method, StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn speaks_h2c() {
        let addr = start(4, 0, 1).await;
        let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
        let (mut sender, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get("http://t/movies/2").body(Empty::<Bytes>::new());
        let req = req.unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.version(), hyper::Version::HTTP_2);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("Summer on the Han"));
    }

    #[test]
    fn latency_grows_with_load() {
        let t = theater(10, 100, 0);
        assert_eq!(t.service_time(0), Duration::from_millis(100));
        assert_eq!(t.service_time(5), Duration::from_millis(175));
        assert_eq!(t.service_time(10), Duration::from_millis(400));
        assert_eq!(t.take_voucher(), None);
    }
}
