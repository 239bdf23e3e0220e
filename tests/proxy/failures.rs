//! When the origin fails: a quick error page, never a hang. Down: 502;
//! too slow: 504; at its in-flight cap: 503 with Retry-After.

use crate::support as common;

use std::time::{Duration, Instant};

use common::clients::{connect, exchange, get};
use common::inproc::{metric, Usher};
use common::{within, Origin, Reply};

fn slow(d: Duration) -> Reply {
    Reply::Delay(d, Box::new(Reply::ok("slow")))
}

fn assert_error_page(r: &common::Response, status: u16) {
    assert_eq!(r.status(), status, "{}", r.text());
    assert!(
        r.head
            .get("content-type")
            .is_some_and(|v| v.starts_with("text/html")),
        "{:?}",
        r.head.headers
    );
    assert!(r.text().contains(&status.to_string()), "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_down_is_a_502_not_a_hang() {
    // a port with nothing behind it
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    within(10, "origin down", async {
        let usher = Usher::in_front_of(addr, "connect_timeout = \"1s\"").await;
        let started = Instant::now();
        let r = get(usher.addr, "/").await;
        assert_error_page(&r, 502);
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(
            metric(
                &usher.metrics(),
                "usher_origin_errors_total{kind=\"connect\"}"
            ),
            Some(1.0)
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_closing_without_answer_is_a_502() {
    within(10, "origin closes", async {
        let origin = Origin::start(|_| Reply::Close).await;
        let usher = Usher::in_front_of(origin.addr, "").await;
        assert_error_page(&get(usher.addr, "/").await, 502);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origin_slower_than_response_timeout_is_a_504() {
    within(10, "slow origin", async {
        let origin = Origin::start(|_| slow(Duration::from_secs(5))).await;
        let usher = Usher::in_front_of(origin.addr, "response_timeout = \"300ms\"").await;
        let started = Instant::now();
        let r = get(usher.addr, "/slow").await;
        assert_error_page(&r, 504);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_secs(3),
            "{took:?}"
        );
    })
    .await;
}

/// On a kept-alive connection too: the deadline of each request counts
/// from its own start, whatever the connection waited before (its timer
/// is the connection's, moved only when it rings).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connections_later_request_still_times_out() {
    within(15, "slow origin, second request", async {
        let origin = Origin::start(|r| match r.target() {
            "/slow" => slow(Duration::from_secs(5)),
            _ => Reply::ok("fast"),
        })
        .await;
        let usher = Usher::in_front_of(origin.addr, "response_timeout = \"300ms\"").await;
        let mut c = connect(usher.addr).await;
        let ask = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: cinema.example\r\n\r\n");
        for rest in [0, 200, 450] {
            // Rests shorter and longer than the response timeout.
            tokio::time::sleep(Duration::from_millis(rest)).await;
            c.send(ask("/fast").as_bytes()).await.unwrap();
            assert_eq!(c.read_response("GET").await.unwrap().status(), 200);
        }
        let started = Instant::now();
        c.send(ask("/slow").as_bytes()).await.unwrap();
        let r = c.read_response("GET").await.unwrap();
        assert_error_page(&r, 504);
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(290) && took < Duration::from_secs(3),
            "{took:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_cap_answers_503_with_retry_after() {
    within(15, "in-flight cap", async {
        let origin = Origin::start(|r| match r.target() {
            "/slow" => slow(Duration::from_millis(1500)),
            _ => Reply::ok("fast"),
        })
        .await;
        let usher = Usher::in_front_of(origin.addr, "max_in_flight = 1\nmax_queue = 0").await;
        let addr = usher.addr;
        let first = tokio::spawn(async move { get(addr, "/slow").await });
        origin.wait_for(1).await;

        let started = Instant::now();
        let r = get(addr, "/fast").await;
        assert_error_page(&r, 503);
        assert_eq!(r.head.get("retry-after"), Some("5"));
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "503 must not wait"
        );
        assert_eq!(origin.count(), 0, "the refused request reached the origin");

        let r = first.await.unwrap();
        assert_eq!((r.status(), r.text().as_str()), (200, "slow"));
        // the slot is free again once the slow response has been relayed
        let r = get(addr, "/fast").await;
        assert_eq!((r.status(), r.text().as_str()), (200, "fast"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_request_waits_at_most_queue_timeout() {
    within(15, "queue timeout", async {
        let origin = Origin::start(|_| slow(Duration::from_millis(1500))).await;
        let usher = Usher::in_front_of(
            origin.addr,
            "max_in_flight = 1\nmax_queue = 1\nqueue_timeout = \"200ms\"",
        )
        .await;
        let addr = usher.addr;
        let first = tokio::spawn(async move { get(addr, "/a").await });
        origin.wait_for(1).await;
        let started = Instant::now();
        let r = get(addr, "/b").await;
        let took = started.elapsed();
        assert_error_page(&r, 503);
        assert!(
            took >= Duration::from_millis(200) && took < Duration::from_millis(1200),
            "{took:?}"
        );
        assert_eq!(first.await.unwrap().status(), 200);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_the_limit_is_a_413() {
    within(10, "body limit", async {
        let origin = Origin::ok().await;
        let cfg = common::config(origin.addr, "max_request_body = \"10\"", "", "");
        let usher = Usher::start(&cfg).await;
        let r = exchange(
            usher.addr,
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world",
        )
        .await;
        assert_eq!(r.status(), 413);
        assert_eq!(origin.connections(), 0);
    })
    .await;
}

/// A client that leaves while its request waits on the origin must not
/// keep the origin slot: with a cap of one, the next visitor gets through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_gives_its_origin_slot_back() {
    within(15, "abandoned request", async {
        let origin = Origin::start(|r| match r.target() {
            "/hang" => slow(Duration::from_secs(30)),
            _ => Reply::ok("fast"),
        })
        .await;
        let usher = Usher::in_front_of(
            origin.addr,
            "max_in_flight = 1\nmax_queue = 1\nqueue_timeout = \"3s\"",
        )
        .await;
        let mut c = common::clients::connect(usher.addr).await;
        c.send(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        origin.wait_for(1).await;
        drop(c);
        let r = get(usher.addr, "/fast").await;
        assert_eq!((r.status(), r.text().as_str()), (200, "fast"));
    })
    .await;
}

/// Same, for a client that leaves half-way through sending its body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_mid_upload_gives_its_origin_slot_back() {
    within(15, "abandoned upload", async {
        let origin = Origin::ok().await;
        let usher = Usher::in_front_of(
            origin.addr,
            "max_in_flight = 1\nmax_queue = 1\nqueue_timeout = \"3s\"",
        )
        .await;
        let mut c = common::clients::connect(usher.addr).await;
        c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nfirst bytes")
            .await
            .unwrap();
        // the origin has the head once usher forwards; wait for its connection
        while origin.connections() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(c);
        let r = get(usher.addr, "/fast").await;
        assert_eq!((r.status(), r.text().as_str()), (200, "ok"));
    })
    .await;
}

/// A chunked body (no Content-Length to check up front) that grows past
/// `server.max_request_body` is the client's fault: 413, not a 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_is_a_413() {
    within(10, "chunked body limit", async {
        let origin = Origin::ok().await;
        let cfg = common::config(origin.addr, "max_request_body = \"10\"", "", "");
        let usher = Usher::start(&cfg).await;
        let r = exchange(
            usher.addr,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n6\r\nworld!\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(r.status(), 413, "{}", r.text());
        let m = usher.metrics();
        assert_eq!(
            metric(&m, "usher_origin_errors_total{kind=\"body\"}"),
            Some(0.0),
            "counted as an origin error"
        );
        // within the limit, chunked is fine
        let r = exchange(
            usher.addr,
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nhello!\r\n0\r\n\r\n",
        )
        .await;
        assert_eq!(r.status(), 200);
    })
    .await;
}
