//! Slow and flooding clients: slowloris, slow POST, slow readers, per-address
//! connection caps, and HTTP/2 floods (rapid reset, CONTINUATION, SETTINGS,
//! PING) made of hand-built frames. During each, a probe client on a fresh
//! connection still gets its answer quickly (a liveness check, not a
//! timing benchmark).

use crate::support::security as security_support;

use std::convert::Infallible;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use security_support::h2raw::{self, H2Raw};
use security_support::{config, connect_from, exchange, probe, Recorder, Usher};

const PROBE_BOUND: Duration = Duration::from_secs(2);

fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// Opens a connection from `src`, writes `prefix`, then one byte every
/// `every` until the server closes; the time the server took to close, or
/// `None` if it was still open after `limit`.
async fn trickle(
    addr: SocketAddr,
    src: IpAddr,
    prefix: &'static [u8],
    every: Duration,
    limit: Duration,
) -> (Option<Duration>, Vec<u8>) {
    let s = connect_from(src, addr).await.unwrap();
    let (mut r, mut w) = s.into_split();
    let started = Instant::now();
    let writer = async move {
        let _ = w.write_all(prefix).await;
        loop {
            tokio::time::sleep(every).await;
            if w.write_all(b"a").await.is_err() {
                // keep the write half (and so the socket) open for the reader
                std::future::pending::<()>().await;
            }
        }
    };
    let reader = async move {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return got,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::select! {
        got = reader => (Some(started.elapsed()), got),
        _ = writer => unreachable!(),
        _ = tokio::time::sleep(limit) => (None, Vec::new()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_heads_are_cut_at_the_header_timeout() {
    let origin = Recorder::start().await;
    let usher = Usher::start(&config(origin.addr, "header_read_timeout = \"1s\"", "")).await;
    // 100 clients on 10 addresses, each trickling its head a byte at a time.
    let attackers: Vec<_> = (0..100u8)
        .map(|i| {
            tokio::spawn(trickle(
                usher.addr,
                loopback(10 + i % 10),
                b"GET / HTTP/1.1\r\nHost: a\r\nX-Slow: ",
                Duration::from_millis(100),
                Duration::from_secs(5),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(probe(usher.addr, PROBE_BOUND).await, 200);
    // Even a head trickled from its first byte: sniffing the protocol and
    // reading the head each get header_read_timeout, so 2 s at worst.
    let from_first_byte = tokio::spawn(trickle(
        usher.addr,
        loopback(9),
        b"",
        Duration::from_millis(100),
        Duration::from_secs(5),
    ));
    for a in attackers {
        let (closed, _) = a.await.unwrap();
        let t = closed.expect("a slowloris connection was still open after 5 s");
        assert!(t < Duration::from_millis(1_800), "closed after {t:?}");
    }
    let (closed, _) = from_first_byte.await.unwrap();
    let t = closed.expect("still open after 5 s");
    assert!(t < Duration::from_millis(2_800), "closed after {t:?}");
    assert_eq!(origin.lines(), ["GET /probe HTTP/1.1"]);
    usher.stop().await;
}

/// With one origin slot, a stalled upload must not keep it: the upload is
/// cut with 408 after body_read_timeout and the next visitor is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_post_is_cut_by_the_body_timeout() {
    let origin = Recorder::start().await;
    let text = config(
        origin.addr,
        "body_read_timeout = \"1s\"",
        "max_in_flight = 1\nqueue_timeout = \"5s\"",
    )
    .replace("response_timeout = \"5s\"", "response_timeout = \"2s\"");
    let usher = Usher::start(&text).await;

    // Stalled: ten bytes of a hundred, then nothing.
    let started = Instant::now();
    let stalled = tokio::spawn(exchange(
        usher.addr,
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789",
        Duration::from_secs(5),
    ));
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The probe waits for the one slot, which the stalled upload gives back.
    assert_eq!(probe(usher.addr, Duration::from_secs(3)).await, 200);
    let reply = stalled.await.unwrap();
    assert_eq!(reply.statuses(), [408], "{}", reply.text());
    assert!(reply.closed);
    let t = started.elapsed();
    assert!(t < Duration::from_millis(2_500), "cut after {t:?}");

    // Trickled: a byte every 300 ms never trips the idle timeout, but the
    // origin (which waits for the whole body) answers nothing within
    // origin.response_timeout, so the exchange ends with 504.
    let (closed, got) = trickle(
        usher.addr,
        loopback(1),
        b"POST /upload HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n",
        Duration::from_millis(300),
        Duration::from_secs(5),
    )
    .await;
    let t = closed.expect("a trickled upload was still open after 5 s");
    assert!(t < Duration::from_millis(3_500), "ended after {t:?}");
    assert!(
        String::from_utf8_lossy(&got).starts_with("HTTP/1.1 504"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert_eq!(probe(usher.addr, PROBE_BOUND).await, 200);
    // The origin got the probes only: no upload ever completed.
    assert!(origin
        .seen()
        .iter()
        .all(|s| s.head.starts_with("GET /probe")));
    usher.stop().await;
}

/// An origin with a body too large for any socket buffer at `/big`.
async fn big_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = if req.uri().path() == "/big" {
                        let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
                        let frames = futures_util::stream::iter(
                            (0..1024).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))),
                        );
                        StreamBody::new(frames).boxed()
                    } else {
                        http_body_util::Full::new(Bytes::from_static(b"ok"))
                            .map_err(|never| match never {})
                            .boxed()
                    };
                    Ok::<_, Infallible>(hyper::Response::new(body))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A client that asks for 64 MiB and never reads holds its origin slot
/// only until server.send_timeout; then usher drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reader_is_cut_by_the_send_timeout() {
    let origin = big_origin().await;
    let usher = Usher::start(&config(
        origin,
        "send_timeout = \"1s\"",
        "max_in_flight = 1\nqueue_timeout = \"8s\"",
    ))
    .await;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    let mut reader = sock.connect(usher.addr).await.unwrap();
    reader
        .write_all(b"GET /big HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The probe needs the only slot, held by the reader that never reads.
    let started = Instant::now();
    assert_eq!(probe(usher.addr, Duration::from_secs(6)).await, 200);
    let waited = started.elapsed();
    // usher dropped the slow reader: what it can still read ends well
    // short of 64 MiB, with EOF or a reset.
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the slow reader's connection was never closed"
    );
    assert!(total < 64 << 20, "read {total} bytes: the whole body?");
    eprintln!("slow reader: probe waited {waited:?}; reader got {total} bytes before the close");
    usher.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped() {
    let origin = Recorder::start().await;
    let usher = Usher::start(&config(
        origin.addr,
        "max_connections_per_ip = 5\nheader_read_timeout = \"10s\"\ntrusted_proxies = [\"127.0.0.3\"]",
        "",
    ))
    .await;
    let mut held = Vec::new();
    for _ in 0..5 {
        let mut s = connect_from(loopback(2), usher.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The sixth from the same address is closed without an answer.
    let mut sixth = connect_from(loopback(2), usher.addr).await.unwrap();
    let _ = sixth.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    let reply = security_support::read_until_close(&mut sixth, Duration::from_secs(2)).await;
    assert!(reply.closed && reply.bytes.is_empty(), "{reply:?}");
    // Other addresses are not affected, nor is a trusted proxy's.
    assert_eq!(probe(usher.addr, PROBE_BOUND).await, 200);
    let mut from_proxy = Vec::new();
    for _ in 0..10 {
        let mut s = connect_from(loopback(3), usher.addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        from_proxy.push(s);
    }
    let mut s = connect_from(loopback(3), usher.addr).await.unwrap();
    s.write_all(b"GET /via-proxy HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = security_support::read_until_close(&mut s, Duration::from_secs(2)).await;
    assert_eq!(reply.statuses(), [200]);
    // Closing one frees a place for the address.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut s = connect_from(loopback(2), usher.addr).await.unwrap();
    s.write_all(b"GET /again HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let reply = security_support::read_until_close(&mut s, Duration::from_secs(2)).await;
    assert_eq!(reply.statuses(), [200]);
    let refused = usher
        .app
        .metrics
        .connections_refused
        .with_label_values(&["per_ip_limit"])
        .get();
    assert_eq!(refused, 1);
    drop((held, from_proxy));
    usher.stop().await;
}

fn get_block(path: &str) -> Vec<u8> {
    h2raw::request_block("GET", path, &[])
}

/// Rapid reset (CVE-2023-44487): thousands of streams opened and cancelled
/// at once. usher answers GOAWAY and closes; the origin sees a bounded
/// number of requests, and others are still served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_is_cut_off() {
    let origin = Recorder::start().await;
    let usher = Usher::start(&config(origin.addr, "", "")).await;
    let mut conn = H2Raw::connect(usher.addr).await;
    const STREAMS: u32 = 5_000;
    let block = get_block("/reset");
    let mut bytes = Vec::new();
    for i in 0..STREAMS {
        let id = 2 * i + 1;
        bytes.extend(h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            id,
            &block,
        ));
        // CANCEL
        bytes.extend(h2raw::frame(h2raw::RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let _ = conn.send(&bytes).await;
    let (frames, closed) = conn.drain(Duration::from_secs(5)).await;
    let goaway = frames.iter().find(|f| f.kind == h2raw::GOAWAY);
    assert!(closed, "the connection stayed open");
    assert!(goaway.is_some(), "no GOAWAY: {:?}", frames.last());
    assert_eq!(probe(usher.addr, PROBE_BOUND).await, 200);
    let reached = origin
        .lines()
        .iter()
        .filter(|l| l.contains("/reset"))
        .count();
    eprintln!(
        "rapid reset: GOAWAY code {:?}, {reached} of {STREAMS} cancelled streams reached the origin",
        goaway.and_then(|g| g.error_code())
    );
    assert!(
        reached < 200,
        "{reached} cancelled streams reached the origin"
    );
    usher.stop().await;
}

/// CONTINUATION flood: a header block that never ends. h2 bounds it by
/// the header list size; usher closes the connection and forwards nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_is_cut_off() {
    let origin = Recorder::start().await;
    let usher = Usher::start(&config(origin.addr, "", "")).await;
    let mut conn = H2Raw::connect(usher.addr).await;
    let mut first = h2raw::request_block("GET", "/flood", &[]);
    first.extend(h2raw::literal(b"x-flood", &[b'a'; 1000]));
    let sent = conn.send(&h2raw::frame(h2raw::HEADERS, 0, 1, &first)).await;
    assert!(sent);
    let piece = h2raw::literal(b"x-flood", &[b'a'; 4000]);
    let started = Instant::now();
    let mut frames_sent = 0;
    // Up to 40 MB of CONTINUATION; usher must hang up long before.
    while frames_sent < 10_000 && started.elapsed() < Duration::from_secs(5) {
        if !conn
            .send(&h2raw::frame(h2raw::CONTINUATION, 0, 1, &piece))
            .await
        {
            break;
        }
        frames_sent += 1;
    }
    let (frames, closed) = conn.drain(Duration::from_secs(3)).await;
    let goaway = frames.iter().find(|f| f.kind == h2raw::GOAWAY);
    eprintln!(
        "CONTINUATION flood: {frames_sent} frames written before the close; GOAWAY {:?}",
        goaway.and_then(|g| g.error_code())
    );
    // usher hung up long before 40 MB (what was written before it did sat
    // in socket buffers, not in usher).
    assert!(closed, "usher kept the connection");
    assert!(
        frames_sent < 10_000,
        "{frames_sent} CONTINUATION frames accepted"
    );
    if let Some(code) = goaway.and_then(|g| g.error_code()) {
        assert_eq!(code, 0xb, "ENHANCE_YOUR_CALM");
    }
    assert_eq!(probe(usher.addr, PROBE_BOUND).await, 200);
    assert!(origin.lines().iter().all(|l| !l.contains("/flood")));
    usher.stop().await;
}

/// SETTINGS and PING floods from a client that never reads the ACKs: h2
/// keeps at most one pong and one settings ACK pending and stops reading
/// while it cannot write them, so the flood is bounded by the socket
/// buffers; the send timeout then drops the client that never reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_settings_and_ping_floods_are_bounded() {
    let origin = Recorder::start().await;
    let usher = Usher::start(&config(origin.addr, "send_timeout = \"1s\"", "")).await;
    let mut conn = H2Raw::connect(usher.addr).await;
    let mut burst = Vec::new();
    for i in 0..1000u64 {
        burst.extend(h2raw::frame(h2raw::PING, 0, 0, &i.to_be_bytes()));
        burst.extend(h2raw::frame(h2raw::SETTINGS, 0, 0, &[]));
    }
    let started = Instant::now();
    let mut bursts = 0;
    let mut probed = false;
    // Write floods for up to 4 s without reading a byte.
    while started.elapsed() < Duration::from_secs(4) {
        match tokio::time::timeout(Duration::from_millis(500), conn.stream.write_all(&burst)).await
        {
            Ok(Ok(())) => bursts += 1,
            Ok(Err(_)) => break,
            Err(_) => {
                // usher stopped reading: backpressure, as it should.
                if !probed {
                    assert_eq!(probe(usher.addr, PROBE_BOUND).await, 200);
                    probed = true;
                }
            }
        }
    }
    if !probed {
        assert_eq!(probe(usher.addr, PROBE_BOUND).await, 200);
    }
    let (_, closed) = conn.drain(Duration::from_secs(20)).await;
    eprintln!(
        "SETTINGS+PING flood: {} frames written in {:?} before usher stopped reading or closed",
        bursts * 2000,
        started.elapsed()
    );
    assert!(closed, "the flooding connection is closed in the end");
    assert!(bursts < 10_000);
    usher.stop().await;
}

/// Idle connections held with bounded memory: the real binary, its VmRSS
/// before and after `USHER_IDLE_CONNECTIONS` (default 2,000) connections
/// from 200 addresses, half silent, half with a head begun. The probe is
/// still answered meanwhile, and memory comes back when they close. Then as
/// many that each served a request and went idle (parked), in a fresh usher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_cost_bounded_memory() {
    use crate::support::process::UsherProcess;
    use crate::support::TempDir;
    let n: usize = std::env::var("USHER_IDLE_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    let origin = Recorder::start().await;
    let dir = TempDir::new("idle");
    let path = dir.path().join("usher.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"\"\nheader_read_timeout = \"60s\"\n\
             [origin]\nurl = \"http://{}\"\n[log]\nformat = \"json\"\n",
            origin.addr
        ),
    )
    .unwrap();
    let usher = UsherProcess::run(&path);
    let addr = usher.addr();
    for _ in 0..20 {
        assert_eq!(probe(addr, PROBE_BOUND).await, 200);
    }
    let before = usher.rss_kib();
    let started = Instant::now();
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = connect_from(loopback(10 + (i % 200) as u8), addr)
            .await
            .expect("connect");
        if i % 2 == 1 {
            s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.unwrap();
        }
        held.push(s);
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(probe(addr, PROBE_BOUND).await, 200);
    let during = usher.rss_kib();
    let fds = usher.fds();
    drop(held);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(probe(addr, PROBE_BOUND).await, 200);
    let after = usher.rss_kib();
    let per_conn = (during.saturating_sub(before) * 1024) / n as u64;
    eprintln!(
        "{n} idle connections (opened in {opened:?}): VmRSS {before} KiB -> {during} KiB \
         ({per_conn} bytes each), {fds} fds; {after} KiB after they closed"
    );
    assert!(fds >= n, "usher held {fds} fds for {n} connections");
    // About 13.5 KiB each in a debug build.
    assert!(per_conn < 32 * 1024, "{per_conn} bytes per idle connection");

    // Served, then idle: each answered one request and rests between
    // requests with hyper's buffers released (about 8 KiB each in a debug
    // build, 4 KiB in a release one; 30 KiB when hyper kept them). A fresh usher, so that the memory
    // freed above is not counted as reused.
    drop(usher);
    let usher = UsherProcess::run(&path);
    let addr = usher.addr();
    assert_eq!(probe(addr, PROBE_BOUND).await, 200);
    let before = usher.rss_kib();
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let mut s = connect_from(loopback(10 + (i % 200) as u8), addr)
            .await
            .expect("connect");
        s.write_all(b"GET /served HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    for s in &mut held {
        assert_eq!(read_one_answer(s).await, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = usher.rss_kib();
    // Still the same connections: each serves again.
    for s in held.iter_mut().take(20) {
        s.write_all(b"GET /again HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_one_answer(s).await, 200);
    }
    let per_served = (during.saturating_sub(before) * 1024) / n as u64;
    eprintln!(
        "{n} served idle connections: VmRSS {before} KiB -> {during} KiB ({per_served} bytes each)"
    );
    assert!(
        per_served < 16 * 1024,
        "{per_served} bytes per served idle connection"
    );
}

/// Reads one answer with a Content-Length body off `s`; its status.
async fn read_one_answer(s: &mut tokio::net::TcpStream) -> u16 {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return head.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(n > 0, "closed before the answer");
        buf.extend_from_slice(&chunk[..n]);
    }
}
