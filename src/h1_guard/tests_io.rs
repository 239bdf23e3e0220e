//! Body framing, pipelining, passthrough, arbitrary fragmentation, and the guard as real IO
//! under hyper.

use std::future::poll_fn;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::scan::{Phase, Section, H2_PREFACE};
use super::tests::{check, ok_heads, run, OK};
use super::*;
use Rejection::*;

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

#[test]
fn chunked_body_with_extensions_and_trailers_leads_to_the_next_head() {
    let body: &[u8] = b"5;name=value;q=\"a b\"\r\nhello\r\n\
        1A ; ext\r\nGET /xy HTTP/1.1\r\n\r\n0\r\n\n\r\n\r\n\
        000000000000000a\r\n0123456789\r\n\
        0\r\nExpires: never\r\nX-Sum:\t1\r\n\r\n";
    let post = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    check(&cat(&[post, body, GET]), &[OK, OK]);
    check(
        &cat(&[post, b"0\r\n\r\n", post, b"1\r\nx\r\n0\r\n\r\n", GET]),
        &[OK, OK, OK],
    );
}

#[test]
fn malformed_chunked_body_flags_the_next_request() {
    let post: &[u8] = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    for size_line in [
        "g",
        "",
        " 5",
        "0x5",
        "5 x",
        "-1",
        "5;a\0b",
        "5;a\rb",
        "5\n",
        "00000000000000005",
    ] {
        let stream = cat(&[post, size_line.as_bytes(), b"\r\nhello\r\n0\r\n\r\n", GET]);
        check(&stream, &[OK, Err(BadChunkSize)]);
    }
    check(
        &cat(&[post, b"5 ;ext\r\nhello\r\n0\r\n\r\n", GET]),
        &[OK, OK],
    );
    check(
        &cat(&[post, b"5\r\nhelloXX\r\n0\r\n\r\n", GET]),
        &[OK, Err(BadChunkData)],
    );
    check(
        &cat(&[post, b"5\r\nhello\n0\r\n\r\n", GET]),
        &[OK, Err(BadChunkData)],
    );
    for trailer in [
        "X: a\n\r\n",
        " folded\r\n\r\n",
        "X : a\r\n\r\n",
        "X: \0\r\n\r\n",
    ] {
        let stream = cat(&[post, b"0\r\n", trailer.as_bytes(), GET]);
        check(&stream, &[OK, Err(BadTrailer)]);
    }
    let many = "X: a\r\n".repeat(tests::limits().max_headers + 1);
    check(
        &cat(&[post, b"0\r\n", many.as_bytes(), b"\r\n", GET]),
        &[OK, Err(BadTrailer)],
    );
    let long = vec![b'a'; tests::limits().max_head_bytes];
    check(
        &cat(&[post, b"5;", &long, b"\r\nhello\r\n0\r\n\r\n"]),
        &[OK, Err(BadChunkSize)],
    );
}

#[test]
fn pipelined_smuggling_is_refused_and_scanning_stops() {
    let smuggled: &[u8] =
        b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    check(
        &cat(&[GET, smuggled]),
        &[OK, Err(ContentLengthWithTransferEncoding)],
    );
    // Nothing after a rejection is scanned: later requests carry the same refusal.
    let (guard, verdicts) = run(&cat(&[GET, smuggled, GET, GET]), 7, 4);
    assert_eq!(verdicts[1..], [Err(ContentLengthWithTransferEncoding); 3]);
    assert_eq!(guard.scanner.phase, Phase::Done);
}

#[test]
fn content_length_body_is_skipped_unread() {
    let inner: &[u8] =
        b"GET /admin HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\n\r\n";
    let head = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", inner.len());
    check(&cat(&[head.as_bytes(), inner, GET]), &[OK, OK]);
}

#[test]
fn h2_prior_knowledge_passes_through() {
    let frames: &[u8] = b"\0\0\x12\x04\0\0\0\0\0\n\nPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (guard, verdicts) = run(&cat(&[H2_PREFACE, frames]), 1, 1);
    assert_eq!((verdicts, ok_heads(&guard)), (vec![OK], 0));
    assert_eq!(guard.scanner.phase, Phase::Done);
    // Bytes that only start like the preface are an ordinary HTTP/1 head.
    check(b"PRI / HTTP/1.1\r\nHost: a\r\n\r\n", &[OK]);
    check(b"PRI * HTTP/1.1\r\nHost: a\r\n\r\n", &[OK]);
    check(b"PRI * HTTP/1.1\r\nHost: a\n\r\n", &[Err(BareLf)]);
    check(
        b"PRI * HTTP/2.0\r\n\r\nXM\r\n\r\n",
        &[Err(InvalidRequestLine)],
    );
    // The preface only counts at the start of the connection.
    check(&cat(&[GET, H2_PREFACE]), &[OK, Err(InvalidRequestLine)]);
}

#[test]
fn upgrade_and_connect_pass_through_after_their_head() {
    let smuggled: &[u8] =
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
    let ws: &[u8] =
        b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let connect: &[u8] = b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n";
    for head in [ws, connect] {
        let stream = cat(&[GET, head, b"\x81\x85\n\0garbage\n", smuggled]);
        let (guard, verdicts) = run(&stream, 3, 3);
        assert_eq!((verdicts, ok_heads(&guard)), (vec![OK, OK, OK], 2));
        assert_eq!(guard.scanner.phase, Phase::Done);
    }
    // The upgrade head itself is still checked.
    let bad =
        b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
    check(bad, &[Err(DuplicateContentLength)]);
}

/// Several valid pipelined requests exercising every framing path.
fn valid_stream() -> (Vec<u8>, u64) {
    let parts: [&[u8]; 6] = [
        b"\r\nGET /a?b=c HTTP/1.1\r\nHost: a\r\nX-Obs: \xfe\tv\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 23\r\n\r\nGET / HTTP/1.1\r\n\n\r\n\r\n\r\n",
        b"PUT /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3;x=\"y\"\r\nabc\r\nA\r\n0123456789\r\n0\r\nT: v\r\n\r\n",
        b"\r\nGET / HTTP/1.0\r\nContent-Length: 0\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost:a\r\n\r\n",
    ];
    (parts.concat(), parts.len() as u64)
}

fn assert_all_ok(fragments: &[&[u8]], heads: u64, how: &str) {
    let (mut guard, handle) = H1Guard::new((), tests::limits());
    for fragment in fragments {
        guard.scanner.feed(fragment);
    }
    assert_eq!(guard.scanner.ok_heads, heads, "{how}");
    assert_eq!(guard.scanner.phase, Phase::Lines(Section::Head), "{how}");
    assert!(guard.scanner.line.is_empty(), "{how}");
    for _ in 0..heads {
        assert_eq!(handle.next_request(), OK, "{how}");
    }
}

#[test]
fn valid_pipelined_stream_passes_however_it_is_split() {
    let (stream, heads) = valid_stream();
    for at in 0..=stream.len() {
        let (a, b) = stream.split_at(at);
        assert_all_ok(&[a, b], heads, &format!("split at {at}"));
    }
    for size in 1..=stream.len() {
        let fragments: Vec<_> = stream.chunks(size).collect();
        assert_all_ok(&fragments, heads, &format!("fragments of {size}"));
    }
    // Irregular fragment sizes from a fixed LCG, so failures reproduce.
    let mut seed = 0x2545_f491_u32;
    for round in 0..200 {
        let (mut rest, mut fragments) = (&stream[..], Vec::new());
        while !rest.is_empty() {
            seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let (head, tail) = rest.split_at(((seed >> 16) as usize % 9 + 1).min(rest.len()));
            fragments.push(head);
            rest = tail;
        }
        assert_all_ok(&fragments, heads, &format!("random round {round}"));
    }
}

#[tokio::test]
async fn reads_pass_through_unchanged_and_only_new_bytes_are_scanned() {
    let (stream, heads) = valid_stream();
    let (mut client, server) = tokio::io::duplex(7);
    let (mut guard, handle) = H1Guard::new(server, tests::limits());
    let writer = {
        let stream = stream.clone();
        tokio::spawn(async move {
            client.write_all(&stream).await?;
            client.shutdown().await?;
            let mut echo = Vec::new();
            client.read_to_end(&mut echo).await?;
            Ok::<_, io::Error>(echo)
        })
    };
    // A caller's buffer that already holds bytes: they must not be scanned again.
    let mut storage = [0u8; 64];
    let mut buf = ReadBuf::new(&mut storage);
    buf.put_slice(b"X\n\0");
    poll_fn(|cx| Pin::new(&mut guard).poll_read(cx, &mut buf))
        .await
        .unwrap();
    let mut read = buf.filled()[3..].to_vec();
    guard.read_to_end(&mut read).await.unwrap();
    assert_eq!(read, stream);
    assert_eq!(guard.scanner.ok_heads, heads);
    assert!((0..heads).all(|_| handle.next_request().is_ok()));

    guard.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
    guard.shutdown().await.unwrap();
    assert_eq!(writer.await.unwrap().unwrap(), b"HTTP/1.1 200 OK\r\n");
}

/// Serves one connection with hyper, the way usher will: the service asks the guard first.
/// Returns everything the client received.
async fn serve(input: &[u8], guarded: bool) -> String {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    let (guard, handle) = H1Guard::new(server, GuardLimits::default());
    let service = service_fn(move |req: Request<Incoming>| {
        let verdict = if guarded {
            handle.next_request()
        } else {
            Ok(())
        };
        async move {
            let mut response = match verdict {
                Ok(()) => {
                    let path = req.uri().path().to_owned();
                    let body = req.into_body().collect().await?.to_bytes();
                    Response::new(Full::new(Bytes::from(format!("{path} {}", body.len()))))
                }
                Err(rejection) => {
                    let mut response = Response::new(Full::new(Bytes::from(rejection.label())));
                    *response.status_mut() = StatusCode::from_u16(rejection.status()).unwrap();
                    response
                        .headers_mut()
                        .insert("connection", "close".parse().unwrap());
                    response
                }
            };
            response.headers_mut().insert("date", "-".parse().unwrap());
            Ok::<_, hyper::Error>(response)
        }
    });
    let conn =
        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(guard), service);
    let server = tokio::spawn(conn);
    client.write_all(input).await.unwrap();
    let mut received = String::new();
    client.read_to_string(&mut received).await.unwrap();
    let _ = server.await;
    received
}

#[tokio::test]
async fn hyper_accepts_smuggled_framing_that_the_guard_refuses() {
    let smuggled = b"POST /s HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\n";
    let plain = serve(&cat(&[GET, smuggled]), false).await;
    assert_eq!(plain.matches("HTTP/1.1 200 OK").count(), 2, "{plain}");
    assert!(
        plain.contains("/s 0"),
        "hyper forwarded the smuggled request: {plain}"
    );

    let guarded = serve(&cat(&[GET, smuggled, GET]), true).await;
    assert_eq!(guarded.matches("HTTP/1.1 200 OK").count(), 1, "{guarded}");
    assert!(guarded.contains("HTTP/1.1 400 Bad Request"), "{guarded}");
    assert!(
        guarded.ends_with("content_length_with_transfer_encoding"),
        "{guarded}"
    );

    let dup = b"POST /d HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi";
    let guarded = serve(dup, true).await;
    assert!(guarded.starts_with("HTTP/1.1 400 Bad Request"), "{guarded}");
    assert!(guarded.ends_with("duplicate_content_length"), "{guarded}");
}

/// Bytes given back are read again first, in the order they were first read, and are not
/// scanned twice: the verdicts stay one per head.
#[tokio::test]
async fn unread_bytes_come_back_first_and_are_scanned_once() {
    let (ours, mut client) = tokio::io::duplex(1024);
    let (mut guard, handle) = H1Guard::new(ours, GuardLimits::default());
    client.write_all(&cat(&[GET, GET])).await.unwrap();
    let mut first = vec![0u8; GET.len() * 2];
    guard.read_exact(&mut first).await.unwrap();
    // Given back in two pieces: the later piece first, as a reader that took more meanwhile
    // gives back what it read before what was already waiting.
    guard.unread(&first[GET.len()..]);
    guard.unread(&first[..GET.len()]);
    assert!(guard.has_unread() && !guard.at_rest());
    client.write_all(b"GET /3 HTTP/1.1\r\n\r\n").await.unwrap();
    let mut again = vec![0u8; GET.len() * 2];
    guard.read_exact(&mut again).await.unwrap();
    assert_eq!(again, first);
    assert!(!guard.has_unread());
    let mut third = [0u8; 19];
    guard.read_exact(&mut third).await.unwrap();
    assert_eq!(&third, b"GET /3 HTTP/1.1\r\n\r\n");
    for _ in 0..3 {
        assert_eq!(handle.peek_next(), Ok(()));
        assert_eq!(handle.next_request(), Ok(()));
    }
    assert!(format!("{handle:?}").contains("ok_heads: 3"), "{handle:?}");
}
