//! The floor under usher's hot path: what hyper alone costs, with nothing of
//! usher's around it (no guard, room, ticket, metrics, log or parking), on
//! the runtime usher builds on one CPU; and what a proxy without hyper
//! costs. Three modes:
//!
//!   hyper_floor page  127.0.0.1:18130 [seconds]
//!   hyper_floor proxy 127.0.0.1:18131 127.0.0.1:18080 [seconds]
//!   hyper_floor raw   127.0.0.1:18132 127.0.0.1:18080 [seconds]
//!
//! `page` answers every request with the same 2.7 KB page (a clone of one
//! `Bytes`: no per-request work at all). `proxy` forwards every request to
//! the origin over a connection of its own made for each client connection
//! (the cheapest pool there is: no checkout, no replay) and streams the
//! answer back. Both keep header case as usher must (byte-faithful
//! forwarding). Compared with nginx in `docs/BENCHMARKS.md` ("The floor")
//! to tell usher's own cost from hyper's.
//!
//! `raw` is the same 1:1 proxy without hyper: each request head is parsed
//! once (`httparse`), relayed as its own bytes with an `X-Forwarded-For`
//! line added, and the origin's answer relayed as bytes after its head is
//! parsed for its length. What an HTTP/1.1 forwarding path of usher's own
//! could reach. Only what the benchmark sends: bodiless requests, answers
//! with a `Content-Length`; anything else closes the connection.
//!
//! Loopback only; stops by itself after `seconds` (default 120).

// The allocator usher's binary runs on, so the two are measured alike.
#[path = "../src/allocator.rs"]
mod allocator;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn page() -> Bytes {
    let line = "<p>You are in the line. Your place is kept; this page updates itself.</p>\n";
    let mut s = String::from("<!doctype html><html><head><title>In line</title></head><body>\n");
    while s.len() < 2_700 {
        s.push_str(line);
    }
    s.push_str("</body></html>\n");
    Bytes::from(s)
}

fn server() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.preserve_header_case(true);
    b
}

async fn serve_page(s: TcpStream, body: Bytes) {
    let svc = service_fn(move |_req: Request<Incoming>| {
        let mut r = Response::new(Full::new(body.clone()));
        r.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        async move { Ok::<_, Infallible>(r) }
    });
    let _ = server().serve_connection(TokioIo::new(s), svc).await;
}

async fn serve_proxy(s: TcpStream, origin: SocketAddr) {
    let Ok(o) = TcpStream::connect(origin).await else {
        return;
    };
    let _ = o.set_nodelay(true);
    let Ok((tx, conn)) = hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .handshake::<_, Incoming>(TokioIo::new(o))
        .await
    else {
        return;
    };
    tokio::spawn(conn);
    let tx: Arc<tokio::sync::Mutex<SendRequest<Incoming>>> = Arc::new(tokio::sync::Mutex::new(tx));
    let svc = service_fn(move |req: Request<Incoming>| {
        let tx = tx.clone();
        async move {
            let sent = {
                let mut tx = tx.lock().await;
                if tx.ready().await.is_err() {
                    return Err("origin gone");
                }
                tx.send_request(req)
            };
            sent.await.map_err(|_| "origin failed")
        }
    });
    let _ = server().serve_connection(TokioIo::new(s), svc).await;
}

/// The largest answer body `raw` relays (it holds each answer whole).
const MAX_ANSWER: usize = 1 << 20;

/// The end of the head in `buf` (just past its empty line), if it is all there.
fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Reads into `buf` until it holds a whole head; its length, or `None` at
/// the end of the stream or on an error.
async fn read_head(s: &mut TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(end) = head_end(buf) {
            return Some(end);
        }
        if buf.len() > 64 * 1024 || s.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

async fn serve_raw(mut c: TcpStream, origin: SocketAddr) {
    let Ok(mut o) = TcpStream::connect(origin).await else {
        return;
    };
    let _ = o.set_nodelay(true);
    let xff = match c.peer_addr() {
        Ok(p) => format!("X-Forwarded-For: {}\r\n\r\n", p.ip()),
        Err(_) => return,
    };
    let mut inb: Vec<u8> = Vec::with_capacity(4096);
    let mut outb: Vec<u8> = Vec::with_capacity(16 * 1024);
    let mut head: Vec<u8> = Vec::with_capacity(4096);
    loop {
        let Some(end) = read_head(&mut c, &mut inb).await else {
            return;
        };
        {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut fields);
            if !matches!(req.parse(&inb[..end]), Ok(httparse::Status::Complete(_))) {
                return;
            }
            let has_body = req.headers.iter().any(|h| {
                h.name.eq_ignore_ascii_case("transfer-encoding")
                    || (h.name.eq_ignore_ascii_case("content-length") && h.value != b"0")
            });
            if has_body {
                return;
            }
        }
        head.clear();
        head.extend_from_slice(&inb[..end - 2]);
        head.extend_from_slice(xff.as_bytes());
        inb.drain(..end);
        if o.write_all(&head).await.is_err() {
            return;
        }
        let Some(rend) = read_head(&mut o, &mut outb).await else {
            return;
        };
        let length = {
            let mut fields = [httparse::EMPTY_HEADER; 64];
            let mut resp = httparse::Response::new(&mut fields);
            if !matches!(resp.parse(&outb[..rend]), Ok(httparse::Status::Complete(_))) {
                return;
            }
            let length = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| {
                    std::str::from_utf8(h.value)
                        .ok()?
                        .trim()
                        .parse::<usize>()
                        .ok()
                });
            // A bounded buffer: a longer answer ends the connection.
            match length {
                Some(n) if n <= MAX_ANSWER => n,
                _ => return,
            }
        };
        let total = rend + length;
        while outb.len() < total {
            match o.read_buf(&mut outb).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
        if c.write_all(&outb[..total]).await.is_err() {
            return;
        }
        outb.drain(..total);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "hyper_floor page ADDR [seconds] | hyper_floor proxy|raw ADDR ORIGIN [seconds]";
    let mode = args.first().map(String::as_str).expect(usage);
    let addr: SocketAddr = args.get(1).and_then(|a| a.parse().ok()).expect(usage);
    let origin: Option<SocketAddr> = match mode {
        "proxy" | "raw" => Some(args.get(2).and_then(|a| a.parse().ok()).expect(usage)),
        "page" => None,
        _ => panic!("{usage}"),
    };
    let seconds_at = if origin.is_some() { 3 } else { 2 };
    let seconds: u64 = args
        .get(seconds_at)
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    assert!(addr.ip().is_loopback(), "loopback only");
    assert!(origin.is_none_or(|o| o.ip().is_loopback()), "loopback only");
    allocator::tune();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let listener = TcpListener::bind(addr).await.expect("bind");
        let body = page();
        let serve = async {
            loop {
                if let Ok((s, _)) = listener.accept().await {
                    let _ = s.set_nodelay(true);
                    match origin {
                        Some(o) if mode == "raw" => tokio::spawn(serve_raw(s, o)),
                        Some(o) => tokio::spawn(serve_proxy(s, o)),
                        None => tokio::spawn(serve_page(s, body.clone())),
                    };
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(seconds), serve).await;
    });
}
