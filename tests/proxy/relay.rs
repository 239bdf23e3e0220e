//! The relay (src/server/relay/): plain GETs and HEADs forwarded without
//! hyper, on the same connections as the requests hyper serves. What it
//! must keep: order on a shared connection, the framing of every answer,
//! the Date a forwarding proxy adds, and no difference a client can see.

use crate::support as common;

use std::time::Duration;

use common::clients::connect;
use common::h1::{Conn, Response};
use common::inproc::Usher;
use common::{within, Origin, Reply};
use tokio::net::TcpStream;

const HOST: &str = "cinema.example";

/// The test origin answering [`replies`], and an usher in front of it with
/// `origin` (lines under `[origin]`).
async fn start(origin: &str) -> (Origin, Usher) {
    let o = Origin::start(|r| replies(r.target())).await;
    let usher = Usher::in_front_of(o.addr, origin).await;
    (o, usher)
}

/// `GET path` with this file's `Host` on `c`, and its answer.
async fn get(c: &mut Conn<TcpStream>, path: &str) -> Response {
    c.send(format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    c.read_response("GET").await.unwrap()
}

fn replies(path: &str) -> Reply {
    match path {
        "/chunked" => Reply::Chunked {
            headers: vec![("Content-Type".into(), "text/plain".into())],
            chunks: vec![b"chunk ".to_vec(), b"by chunk".to_vec()],
            trailers: vec![],
        },
        "/undated" => Reply::Raw(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 7\r\n\r\nundated".to_vec(),
        ),
        "/until-close" => Reply::ThenClose(
            Duration::ZERO,
            Box::new(Reply::Raw(
                b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the origin closes".to_vec(),
            )),
        ),
        "/dated" => Reply::Raw(
            b"HTTP/1.1 200 OK\r\nDate: Tue, 01 Dec 2026 09:00:00 GMT\r\nContent-Length: 5\r\n\r\ndated"
                .to_vec(),
        ),
        "/broken-chunks" => Reply::Raw(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX3\r\nabc\r\n0\r\n\r\n".to_vec(),
        ),
        "/big" => Reply::Pattern(300_000),
        p => Reply::ok(&format!("for {p}")),
    }
}

/// Relayed requests and hyper's (a body: hyper's), pipelined in one write,
/// are answered in order and reach the origin in order, whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_and_hyper_requests_share_a_connection_in_order() {
    within(15, "mixed pipeline", async {
        let (origin, usher) = start("").await;
        let mut c = connect(usher.addr).await;
        let batch = format!(
            "GET /chunked HTTP/1.1\r\nHost: {HOST}\r\n\r\n\
             POST /form HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello\
             HEAD /head HTTP/1.1\r\nHost: {HOST}\r\n\r\n\
             GET /big HTTP/1.1\r\nHost: {HOST}\r\n\r\n\
             GET /last HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
        );
        c.send(batch.as_bytes()).await.unwrap();
        let r = c.read_response("GET").await.unwrap();
        assert!(r.head.chunked(), "{}", String::from_utf8_lossy(&r.head.raw));
        assert_eq!(r.text(), "chunk by chunk");
        assert_eq!(c.read_response("POST").await.unwrap().text(), "for /form");
        let r = c.read_response("HEAD").await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.body.is_empty());
        let r = c.read_response("GET").await.unwrap();
        assert_eq!(r.body.len(), 300_000);
        assert_eq!(c.read_response("GET").await.unwrap().text(), "for /last");
        let seen: Vec<String> = origin
            .wait_for(5)
            .await
            .iter()
            .map(|r| format!("{} {}", r.head.method(), r.target()))
            .collect();
        assert_eq!(
            seen,
            [
                "GET /chunked",
                "POST /form",
                "HEAD /head",
                "GET /big",
                "GET /last"
            ]
        );
    })
    .await;
}

/// An answer without a length ends when the origin closes: the visitor
/// gets all of it, told the connection closes, and then it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_until_close_closes_the_visitors_connection() {
    within(10, "close-delimited", async {
        let (_origin, usher) = start("").await;
        let mut c = connect(usher.addr).await;
        let r = get(&mut c, "/until-close").await;
        assert_eq!(r.text(), "until the origin closes");
        assert_eq!(r.head.get("connection"), Some("close"));
        assert!(c.closed_within(Duration::from_secs(2)).await);
    })
    .await;
}

/// The origin's Date is kept; an answer without one gets one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_without_a_date_gets_one() {
    within(10, "date", async {
        let (_origin, usher) = start("").await;
        let mut c = connect(usher.addr).await;
        let r = get(&mut c, "/undated").await;
        assert_eq!(r.text(), "undated");
        let date = r.head.get_all("date");
        assert_eq!(date.len(), 1, "{}", String::from_utf8_lossy(&r.head.raw));
        assert!(httpdate::parse_http_date(date[0]).is_ok(), "{date:?}");
        // one the origin sent stays as sent
        let r = get(&mut c, "/dated").await;
        assert_eq!(r.head.get_all("date"), ["Tue, 01 Dec 2026 09:00:00 GMT"]);
    })
    .await;
}

/// `Connection: close` from the visitor: answered, said, and closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_asking_to_close_is_answered_then_closed() {
    within(10, "visitor close", async {
        let (origin, usher) = start("").await;
        let mut c = connect(usher.addr).await;
        c.send(
            format!("GET /bye HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let r = c.read_response("GET").await.unwrap();
        assert_eq!(r.text(), "for /bye");
        assert_eq!(r.head.get("connection"), Some("close"));
        assert!(c.closed_within(Duration::from_secs(2)).await);
        let seen = origin.wait_for(1).await.remove(0);
        assert_eq!(seen.head.get("connection"), None);
    })
    .await;
}

/// `origin.preserve_host = false`: the origin gets its own name as `Host`
/// (in the visitor's line), the visitor's in `X-Forwarded-Host`; a request
/// without a `Host` gets the origin's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_origin_can_get_its_own_host() {
    within(10, "origin host", async {
        let (origin, usher) = start("preserve_host = false").await;
        let mut c = connect(usher.addr).await;
        c.send(
            format!("GET /h HTTP/1.1\r\nX-Before: 1\r\nhOsT: {HOST}\r\nX-After: 2\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(c.read_response("GET").await.unwrap().text(), "for /h");
        let seen = origin.wait_for(1).await.remove(0).head;
        let own = origin.addr.to_string();
        assert_eq!(seen.get_all("host"), [own.as_str()]);
        assert_eq!(seen.get_all("x-forwarded-host"), [HOST]);
        let raw = String::from_utf8_lossy(&seen.raw).to_string();
        assert!(
            raw.contains(&format!("X-Before: 1\r\nhOsT: {own}\r\nX-After: 2\r\n")),
            "{raw}"
        );
        c.send(b"GET /none HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(c.read_response("GET").await.unwrap().text(), "for /none");
        let seen = origin.wait_for(1).await.remove(0).head;
        assert_eq!(seen.get_all("host"), [own.as_str()]);
        assert!(seen.get("x-forwarded-host").is_none());
    })
    .await;
}

/// A malformed chunked answer is relayed up to where it breaks, then both
/// connections end: the origin's is not reused (the next request gets a
/// whole answer on a new one), the visitor's closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunked_answer_ends_both_connections() {
    within(10, "broken chunks", async {
        let (origin, usher) = start("").await;
        let mut c = connect(usher.addr).await;
        c.send(format!("GET /broken-chunks HTTP/1.1\r\nHost: {HOST}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        assert!(
            c.read_response("GET").await.is_err(),
            "a whole answer from a broken one"
        );
        let before = origin.connections();
        let mut c = connect(usher.addr).await;
        assert_eq!(get(&mut c, "/after").await.text(), "for /after");
        assert_eq!(origin.connections(), before + 1, "a new origin connection");
    })
    .await;
}

/// `origin.relay = false`: every request goes through hyper (an answer
/// without a length comes re-chunked, on a connection that stays open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_can_be_switched_off() {
    within(10, "relay off", async {
        let (_origin, usher) = start("relay = false").await;
        let mut c = connect(usher.addr).await;
        let r = get(&mut c, "/until-close").await;
        assert_eq!(r.text(), "until the origin closes");
        assert!(r.head.chunked(), "{}", String::from_utf8_lossy(&r.head.raw));
        assert_eq!(get(&mut c, "/next").await.text(), "for /next");
    })
    .await;
}
