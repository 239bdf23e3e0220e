//! The theater over real sockets: pages, checkout and the counters, 503 past
//! capacity, the voucher counter, h2c, and the latency curve.

use super::*;
use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::Empty;
use hyper::header::HeaderMap;
use hyper::header::{CACHE_CONTROL, CONTENT_LENGTH};
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
