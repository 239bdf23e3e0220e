//! Request smuggling, over raw sockets with exact bytes, against an origin
//! that records every request it receives: each ambiguous framing gets a
//! clean 400 (431 for oversized heads), the connection closes, and the
//! origin sees at most the one request the client meant. Run with and
//! without a `[room]` (passthrough, so requests are forwarded).

use crate::support::security as security_support;

use std::time::Duration;

use security_support::h2raw::{self, H2Raw};
use security_support::{config, exchange, Recorder, Usher, PASSTHROUGH_ROOM};

const WAIT: Duration = Duration::from_secs(3);

/// One attack: the bytes, the statuses expected back in order, and how many
/// complete requests the origin may receive (the ones the client meant).
struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    statuses: &'static [u16],
    forwarded: usize,
}

fn case(name: &'static str, bytes: &[u8], statuses: &'static [u16], forwarded: usize) -> Case {
    Case {
        name,
        bytes: bytes.to_vec(),
        statuses,
        forwarded,
    }
}

/// `POST /` with `headers` (each ending in CRLF) and `body`.
fn post(headers: &str, body: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: a\r\n{headers}\r\n{body}").into_bytes()
}

/// A request smuggled after a body, to see whether it reaches the origin.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

fn cases() -> Vec<Case> {
    let good = "GET /first HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut v = vec![
        // Positive controls: honest framing is forwarded, pipelining works.
        case(
            "honest content-length body then a pipelined GET",
            format!("{}GET /second HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", String::from_utf8(post("Content-Length: 5\r\n", "hello")).unwrap()).as_bytes(),
            &[200, 200],
            2,
        ),
        case(
            "honest chunked body with a tab before the value",
            &post("Transfer-Encoding:\tchunked\r\nConnection: close\r\n", "5\r\nhello\r\n0\r\n\r\n"),
            &[200],
            1,
        ),
        // Content-Length with Transfer-Encoding, both orders.
        case(
            "CL then TE",
            &post("Content-Length: 6\r\nTransfer-Encoding: chunked\r\n", &format!("0\r\n\r\n{SMUGGLED}")),
            &[400],
            0,
        ),
        case(
            "TE then CL",
            &post("Transfer-Encoding: chunked\r\nContent-Length: 6\r\n", &format!("0\r\n\r\n{SMUGGLED}")),
            &[400],
            0,
        ),
        // Duplicate or malformed Content-Length.
        case("duplicate equal CL", &post("Content-Length: 5\r\nContent-Length: 5\r\n", "hello"), &[400], 0),
        case("duplicate different CL", &post("Content-Length: 5\r\nContent-Length: 40\r\n", &format!("hello{SMUGGLED}")), &[400], 0),
        case("CL list", &post("Content-Length: 5, 5\r\n", "hello"), &[400], 0),
        case("CL +5", &post("Content-Length: +5\r\n", "hello"), &[400], 0),
        case("CL 0x10", &post("Content-Length: 0x10\r\n", "0123456789abcdef"), &[400], 0),
        case("CL -1", &post("Content-Length: -1\r\n", ""), &[400], 0),
        case("CL 5 5", &post("Content-Length: 5 5\r\n", "hello"), &[400], 0),
        case("CL overflow", &post("Content-Length: 99999999999999999999999\r\n", "x"), &[400], 0),
        // Transfer-Encoding variants.
        case("TE chunked, identity", &post("Transfer-Encoding: chunked, identity\r\n", "0\r\n\r\n"), &[400], 0),
        case("TE identity, chunked", &post("Transfer-Encoding: identity, chunked\r\n", "0\r\n\r\n"), &[400], 0),
        case("TE xchunked", &post("Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"), &[400], 0),
        case("TE chunked twice", &post("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), &[400], 0),
        case("TE identity", &post("Transfer-Encoding: identity\r\n", ""), &[400], 0),
        case("TE line with a leading tab (folded)", &post("X-A: 1\r\n\tTransfer-Encoding: chunked\r\n", "0\r\n\r\n"), &[400], 0),
        case("TE value with a vertical tab", &post("Transfer-Encoding: \x0bchunked\r\n", "0\r\n\r\n"), &[400], 0),
        case("TE name with a trailing tab", &post("Transfer-Encoding\t: chunked\r\n", "0\r\n\r\n"), &[400], 0),
        // Line structure.
        case("obs-fold", &post("X-A: 1\r\n continued\r\nContent-Length: 0\r\n", ""), &[400], 0),
        case("bare LF line ends", format!("GET / HTTP/1.1\nHost: a\n\n{SMUGGLED}").as_bytes(), &[400], 0),
        case("bare LF after one header", format!("GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n{SMUGGLED}").as_bytes(), &[400], 0),
        case("bare CR in a value", &post("X-A: a\rb\r\nContent-Length: 0\r\n", ""), &[400], 0),
        case("space before the colon", &post("Content-Length : 5\r\n", "hello"), &[400], 0),
        case("space before the colon (Host)", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", &[400], 0),
        case("NUL in a header name", b"GET / HTTP/1.1\r\nHost: a\r\nX-\0A: 1\r\n\r\n", &[400], 0),
        case("0x80 in a header name", b"GET / HTTP/1.1\r\nHost: a\r\nX-\x80A: 1\r\n\r\n", &[400], 0),
        case("0xFF in a header name", b"GET / HTTP/1.1\r\nHost: a\r\nX-\xffA: 1\r\n\r\n", &[400], 0),
        case("NUL in a value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\x002\r\n\r\n", &[400], 0),
        case("empty header name", b"GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", &[400], 0),
        case("header without a colon", b"GET / HTTP/1.1\r\nHost: a\r\nX-A\r\n\r\n", &[400], 0),
        case("double space in the request line", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", &[400], 0),
        case("HTTP/1.2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", &[400], 0),
        // HTTP/1.0 with Transfer-Encoding.
        case("TE on HTTP/1.0", format!("POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}").as_bytes(), &[400], 0),
        // Bad chunk sizes: hyper fails the body it is reading, so the origin
        // never gets a complete request; the client gets 400 and the close.
        case("chunk size 0x5", &post("Transfer-Encoding: chunked\r\n", &format!("0x5\r\nhello\r\n0\r\n\r\n{SMUGGLED}")), &[400], 0),
        case("chunk size -1", &post("Transfer-Encoding: chunked\r\n", &format!("-1\r\nhello\r\n0\r\n\r\n{SMUGGLED}")), &[400], 0),
        case("chunk size overflow", &post("Transfer-Encoding: chunked\r\n", &format!("10000000000000005\r\nhello\r\n0\r\n\r\n{SMUGGLED}")), &[400], 0),
        case("chunk size with junk", &post("Transfer-Encoding: chunked\r\n", &format!("5 x\r\nhello\r\n0\r\n\r\n{SMUGGLED}")), &[400], 0),
        case("chunk data longer than its size", &post("Transfer-Encoding: chunked\r\n", &format!("2\r\nhello\r\n0\r\n\r\n{SMUGGLED}")), &[400], 0),
        // Pipelined smuggles: the honest first request is answered, the
        // second refused, nothing after it reaches the origin.
        case(
            "pipelined CL+TE after a good request",
            format!("{good}POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}").as_bytes(),
            &[200, 400],
            1,
        ),
        case(
            "pipelined bare LF after a good request",
            format!("{good}GET /x HTTP/1.1\nHost: a\n\n{SMUGGLED}").as_bytes(),
            &[200, 400],
            1,
        ),
        case(
            "smuggle after a refused Upgrade",
            format!("GET /first HTTP/1.1\r\nHost: a\r\nUpgrade: foo\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}").as_bytes(),
            &[200],
            1,
        ),
        case(
            "smuggle after a refused Connection: upgrade",
            format!("GET /first HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: foo\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{SMUGGLED}").as_bytes(),
            &[200],
            1,
        ),
        case(
            "smuggle after a malformed chunked body",
            &post("Transfer-Encoding: chunked\r\n", &format!("5;a\0b\r\nhello\r\n0\r\n\r\n{SMUGGLED}")),
            &[200, 400],
            1,
        ),
    ];
    // Heads too large: 431.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70_000)
    );
    v.push(Case {
        name: "head over the limit",
        bytes: big.into_bytes(),
        statuses: &[431],
        forwarded: 0,
    });
    let many: String = (0..150).map(|i| format!("X-{i}: 1\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n");
    v.push(Case {
        name: "too many headers",
        bytes: many.into_bytes(),
        statuses: &[431],
        forwarded: 0,
    });
    v
}

async fn run_cases(extra: &str) {
    let origin = Recorder::start().await;
    let usher = Usher::start(&config(origin.addr, "", extra)).await;
    let mut failures = Vec::new();
    for c in cases() {
        let before = origin.count();
        let reply = exchange(usher.addr, &c.bytes, WAIT).await;
        // let an aborted origin exchange settle before counting
        tokio::time::sleep(Duration::from_millis(20)).await;
        let got = origin.count() - before;
        let statuses = reply.statuses();
        let lines = origin.lines()[before..].to_vec();
        if statuses != c.statuses
            || !reply.closed
            || got != c.forwarded
            || lines.iter().any(|l| l.contains("smuggled"))
        {
            failures.push(format!(
                "{}: statuses {statuses:?} (want {:?}), closed {}, origin got {got} (want {}): {lines:?}\n{}",
                c.name,
                c.statuses,
                reply.closed,
                c.forwarded,
                reply.text().lines().next().unwrap_or_default()
            ));
        }
    }
    usher.stop().await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_is_refused_without_a_room() {
    run_cases("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_is_refused_with_a_room() {
    run_cases(PASSTHROUGH_ROOM).await;
}

/// Over HTTP/2, fields HTTP/2 forbids (connection-specific ones, CR/LF or
/// NUL in values, upper-case names, `te` other than `trailers`) reset the
/// stream; nothing reaches the origin, and the connection still serves.
async fn h2_cases(extra: &str) {
    let origin = Recorder::start().await;
    let usher = Usher::start(&config(origin.addr, "", extra)).await;
    let bad: &[(&str, &[u8], &[u8])] = &[
        ("CR LF in a value", b"x-a", b"1\r\nx-injected: 2"),
        ("LF in a value", b"x-a", b"1\nx-injected: 2"),
        ("NUL in a value", b"x-a", b"1\x002"),
        ("connection", b"connection", b"keep-alive"),
        ("transfer-encoding", b"transfer-encoding", b"chunked"),
        ("keep-alive", b"keep-alive", b"timeout=5"),
        ("proxy-connection", b"proxy-connection", b"keep-alive"),
        ("upgrade", b"upgrade", b"websocket"),
        ("te other than trailers", b"te", b"gzip"),
        ("upper-case name", b"X-Upper", b"1"),
        ("space in a name", b"x a", b"1"),
        ("colon in a name", b"x:a", b"1"),
    ];
    let mut failures = Vec::new();
    let mut conn = H2Raw::connect(usher.addr).await;
    let mut id = 1;
    for (name, n, v) in bad {
        let block = h2raw::request_block("GET", "/h2", &[(n, v)]);
        let sent = conn
            .send(&h2raw::frame(
                h2raw::HEADERS,
                h2raw::END_HEADERS | h2raw::END_STREAM,
                id,
                &block,
            ))
            .await;
        let answer = conn.answer_for(id, WAIT).await;
        let ok = sent
            && match &answer {
                Some(f) if f.kind == h2raw::RST_STREAM => true,
                // h2 treats an undecodable field as a connection error
                Some(f) if f.kind == h2raw::GOAWAY => f.error_code() == Some(1),
                Some(f) => f.static_status().is_some_and(|s| s == 400),
                None => false,
            };
        if !ok {
            failures.push(format!("{name}: {answer:?}"));
        }
        if answer.as_ref().is_some_and(|f| f.kind == h2raw::GOAWAY) {
            conn = H2Raw::connect(usher.addr).await;
            id = 1;
        } else {
            id += 2;
        }
    }
    // Content-Length that the DATA contradicts.
    let block = h2raw::request_block("POST", "/h2", &[(b"content-length", b"3")]);
    let mut bytes = h2raw::frame(h2raw::HEADERS, h2raw::END_HEADERS, id, &block);
    bytes.extend(h2raw::frame(
        h2raw::DATA,
        h2raw::END_STREAM,
        id,
        b"hello world",
    ));
    conn.send(&bytes).await;
    let answer = conn.answer_for(id, WAIT).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The stream is reset; a request already on its way to the origin is
    // cut, so the origin never gets a complete request with the wrong body.
    assert!(
        origin.seen().iter().all(|s| s.body != b"hello world"),
        "content-length mismatch reached the origin: {answer:?}"
    );
    id += 2;
    // The same connection (or a new one) still serves a good request.
    let block = h2raw::request_block("GET", "/good", &[]);
    if !conn
        .send(&h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            id,
            &block,
        ))
        .await
    {
        conn = H2Raw::connect(usher.addr).await;
        id = 1;
        conn.send(&h2raw::frame(
            h2raw::HEADERS,
            h2raw::END_HEADERS | h2raw::END_STREAM,
            id,
            &block,
        ))
        .await;
    }
    let answer = conn.answer_for(id, WAIT).await;
    assert_eq!(answer.and_then(|f| f.static_status()), Some(200));
    let lines = origin.lines();
    drop(conn);
    usher.stop().await;
    assert!(
        failures.is_empty(),
        "not refused over h2:\n{}",
        failures.join("\n")
    );
    assert_eq!(
        lines,
        ["GET /good HTTP/1.1"],
        "only the good request reaches the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_forbidden_fields_are_refused_without_a_room() {
    h2_cases("").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_forbidden_fields_are_refused_with_a_room() {
    h2_cases(PASSTHROUGH_ROOM).await;
}
