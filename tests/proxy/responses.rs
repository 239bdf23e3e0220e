//! What reaches the client: responses as the origin sent them, bodiless
//! responses without a body, redirects untouched, trailers relayed, and an
//! upgraded connection tunnelled both ways.

use crate::support as common;

use std::time::Duration;

use common::clients::{connect, exchange};
use common::inproc::Usher;
use common::{within, Origin, Reply};

const HOST: &str = "cinema.example";

fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

fn replies(path: &str) -> Reply {
    match path {
        "/head" => Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 1234\r\nETag: \"h\"\r\n\r\n"
                .to_vec(),
        ),
        "/204" => Reply::Raw(b"HTTP/1.1 204 No Content\r\nX-Note: n\r\n\r\n".to_vec()),
        "/304" => Reply::Raw(
            b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nCache-Control: max-age=60\r\n\r\n".to_vec(),
        ),
        "/302" => Reply::Full {
            status: 302,
            headers: headers(&[("Location", "/a%2Fb?x=%20&y=a+b")]),
            body: b"moved".to_vec(),
        },
        "/301" => Reply::Full {
            status: 301,
            headers: headers(&[("Location", "http://127.0.0.1:1/moved?q=%7E#top")]),
            body: Vec::new(),
        },
        "/cookies" => Reply::Full {
            status: 201,
            headers: headers(&[
                ("Set-Cookie", "a=1; Path=/; HttpOnly"),
                ("X-Custom", "x"),
                ("Set-Cookie", "b=2; Path=/; Secure"),
                ("Cache-Control", "no-cache"),
                ("Vary", "Accept-Encoding"),
                ("Vary", "Cookie"),
            ]),
            body: b"<p>created</p>".to_vec(),
        },
        "/trailers" => Reply::Chunked {
            headers: headers(&[("Trailer", "X-Checksum"), ("Content-Type", "text/plain")]),
            chunks: vec![b"hello ".to_vec(), b"world".to_vec()],
            trailers: headers(&[("X-Checksum", "abc123")]),
        },
        "/ws" => Reply::Upgrade,
        _ => Reply::ok("ok"),
    }
}

/// The response fields that must cross unchanged: all but `Date` (a proxy
/// adds it when the origin sent none, RFC 9110 §6.6.1), names in the case
/// written, keeping the order of same-named fields.
fn end_to_end(fields: &[(String, String)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = fields
        .iter()
        .filter(|(n, _)| !n.eq_ignore_ascii_case("date"))
        .cloned()
        .collect();
    v.sort_by_key(|f| f.0.to_ascii_lowercase());
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_reach_the_client_as_sent() {
    within(20, "responses", async {
        let origin = Origin::start(|r| replies(r.target())).await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        for path in ["/302", "/301", "/cookies", "/plain"] {
            let raw = format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n");
            let direct = exchange(origin.addr, raw.as_bytes()).await;
            let via = exchange(usher.addr, raw.as_bytes()).await;
            assert_eq!(via.head.first_line, direct.head.first_line, "{path}");
            assert_eq!(
                end_to_end(&via.head.headers),
                end_to_end(&direct.head.headers),
                "{path}:\n{}",
                String::from_utf8_lossy(&via.head.raw)
            );
            assert_eq!(via.body, direct.body, "{path}");
        }
        // redirects untouched, byte for byte
        let r = exchange(
            usher.addr,
            format!("GET /301 HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(
            String::from_utf8_lossy(&r.head.raw).contains("http://127.0.0.1:1/moved?q=%7E#top\r\n"),
            "{}",
            String::from_utf8_lossy(&r.head.raw)
        );
    })
    .await;
}

/// HEAD, 204 and 304 carry no body: the next response on the same
/// connection must start right after the head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_responses_relay_no_body() {
    within(20, "bodiless responses", async {
        let origin = Origin::start(|r| replies(r.target())).await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        let mut c = connect(usher.addr).await;
        for (method, path, status) in [
            ("HEAD", "/head", 200),
            ("GET", "/204", 204),
            ("GET", "/304", 304),
        ] {
            c.send(format!("{method} {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let r = c.read_response(method).await.unwrap();
            assert_eq!(r.status(), status, "{path}");
            match path {
                "/head" => {
                    assert_eq!(r.head.get("content-length"), Some("1234"));
                    assert_eq!(r.head.get("etag"), Some("\"h\""));
                }
                "/204" => {
                    assert_eq!(r.head.get("x-note"), Some("n"));
                    assert_eq!(r.head.get("transfer-encoding"), None);
                }
                _ => {
                    assert_eq!(r.head.get("etag"), Some("\"v1\""));
                    assert_eq!(r.head.get("cache-control"), Some("max-age=60"));
                }
            }
            // the next response must parse right after this head
            c.send(format!("GET /after HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let next = c.read_response("GET").await.unwrap();
            assert_eq!(next.head.first_line, "HTTP/1.1 200 OK", "after {path}");
            assert_eq!(next.text(), "ok", "after {path}");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_trailers_are_relayed() {
    within(10, "trailers", async {
        let origin = Origin::start(|r| replies(r.target())).await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        let raw = format!("GET /trailers HTTP/1.1\r\nHost: {HOST}\r\nTE: trailers\r\n\r\n");
        let r = exchange(usher.addr, raw.as_bytes()).await;
        assert_eq!(r.status(), 200);
        assert!(r.head.chunked(), "{}", String::from_utf8_lossy(&r.head.raw));
        assert_eq!(r.text(), "hello world");
        assert_eq!(
            r.trailers,
            [("x-checksum".to_string(), "abc123".to_string())],
            "trailers (names as hyper writes them)"
        );
        let seen = origin.wait_for(1).await.remove(0);
        assert_eq!(seen.head.get("te"), Some("trailers"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_is_tunnelled_both_ways() {
    within(10, "upgrade", async {
        let origin = Origin::start(|r| replies(r.target())).await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        let mut c = connect(usher.addr).await;
        c.send(
            format!(
                "GET /ws HTTP/1.1\r\nHost: {HOST}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
                 Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let head = c.read_head().await.unwrap().expect("101 head");
        assert_eq!(head.status(), 101, "{}", String::from_utf8_lossy(&head.raw));
        assert_eq!(head.get("upgrade"), Some("websocket"));
        let seen = origin.wait_for(1).await.remove(0).head;
        assert_eq!(seen.get("upgrade"), Some("websocket"));
        assert!(seen
            .get("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("upgrade")));
        assert_eq!(
            seen.get("sec-websocket-key"),
            Some("dGhlIHNhbXBsZSBub25jZQ==")
        );

        for msg in [
            b"ping-1".to_vec(),
            vec![7u8; 200_000],
            b"\x81\x05hello".to_vec(),
        ] {
            c.send(&msg).await.unwrap();
            let mut back = c.take_buffered();
            let rest = (msg.len() - back.len()) as u64;
            c.read_n(rest, &mut |b| back.extend_from_slice(b))
                .await
                .unwrap();
            assert_eq!(back, msg, "echo of {} bytes", msg.len());
        }
        // closing our side ends the tunnel and the origin's echo
        tokio::io::AsyncWriteExt::shutdown(&mut c.io).await.unwrap();
        assert!(c.closed_within(Duration::from_secs(5)).await);
    })
    .await;
}

/// A slow stream (SSE, long poll) reaches the client chunk by chunk as the
/// origin sends it, and `origin.response_timeout` (time to the response
/// head) does not cut a body that takes longer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_stream_is_relayed_as_it_comes() {
    within(15, "slow stream", async {
        let gap = Duration::from_millis(400);
        let origin = Origin::start(move |_| Reply::Trickle {
            chunks: vec![
                b"data: 1\n\n".to_vec(),
                b"data: 2\n\n".to_vec(),
                b"data: 3\n\n".to_vec(),
            ],
            gap,
        })
        .await;
        let usher = Usher::in_front_of(origin.addr, "response_timeout = \"300ms\"").await;
        let mut c = connect(usher.addr).await;
        c.send(format!("GET /events HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let head = c.read_head().await.unwrap().unwrap();
        assert_eq!(head.status(), 200);
        // raw chunked bytes: the first event must arrive well before the
        // second is even sent
        let mut raw = Vec::new();
        within(1, "first event", async {
            while !raw.ends_with(b"data: 1\n\n\r\n") {
                c.read_n(1, &mut |b| raw.extend_from_slice(b))
                    .await
                    .unwrap();
            }
        })
        .await;
        assert!(
            started.elapsed() < gap,
            "first event held back: {:?}",
            started.elapsed()
        );
        // the rest completes, past the 300 ms response timeout
        within(5, "rest of the stream", async {
            while !raw.ends_with(b"\r\n0\r\n\r\n") {
                c.read_n(1, &mut |b| raw.extend_from_slice(b))
                    .await
                    .unwrap();
            }
        })
        .await;
        let text = String::from_utf8_lossy(&raw).into_owned();
        assert!(
            text.contains("data: 2\n\n") && text.contains("data: 3\n\n"),
            "{text:?}"
        );
        assert!(started.elapsed() >= gap * 2);
    })
    .await;
}

/// The origin's `Connection: close` is about usher's connection to it; the
/// client's connection stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_connection_close_stays_on_its_hop() {
    within(10, "origin closes", async {
        let origin = Origin::start(|_| {
            Reply::ThenClose(
                Duration::ZERO,
                Box::new(Reply::Full {
                    status: 200,
                    headers: headers(&[("Connection", "close")]),
                    body: b"bye".to_vec(),
                }),
            )
        })
        .await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        let mut c = connect(usher.addr).await;
        for _ in 0..3 {
            c.send(format!("GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let r = c.read_response("GET").await.unwrap();
            assert_eq!(r.text(), "bye");
            assert_eq!(r.head.get("connection"), None, "{:?}", r.head.headers);
        }
        assert_eq!(origin.connections(), 3);
    })
    .await;
}
