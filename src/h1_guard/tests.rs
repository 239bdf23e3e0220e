//! One test per framing rule: the valid form passes, the smuggling form is refused with the
//! right reason, whatever the read fragmentation.

use super::scan::{Phase, Section};
use super::*;

pub(super) const OK: Result<(), Rejection> = Ok(());

pub(super) fn limits() -> GuardLimits {
    GuardLimits {
        max_head_bytes: 1024,
        max_headers: 16,
    }
}

/// Feeds `stream` in fragments of `size` bytes; returns the guard and the first `n` verdicts.
pub(super) fn run(
    stream: &[u8],
    size: usize,
    n: usize,
) -> (H1Guard<()>, Vec<Result<(), Rejection>>) {
    let (mut guard, handle) = H1Guard::new((), limits());
    for fragment in stream.chunks(size.max(1)) {
        guard.scanner.feed(fragment);
    }
    let verdicts = (0..n).map(|_| handle.next_request()).collect();
    (guard, verdicts)
}

pub(super) fn ok_heads(guard: &H1Guard<()>) -> u64 {
    guard.scanner.ok_heads
}

/// Asserts the verdicts whatever the fragmentation, and that every `Ok` comes from a head the
/// guard really scanned (an unscanned request is `Ok` too, which would make a test vacuous).
pub(super) fn check(stream: &[u8], expected: &[Result<(), Rejection>]) {
    let scanned = expected.iter().filter(|v| v.is_ok()).count() as u64;
    for size in [1, 2, 3, 5, 8, 13, stream.len()] {
        let (guard, verdicts) = run(stream, size, expected.len());
        let shown = String::from_utf8_lossy(stream);
        assert_eq!(verdicts, expected, "fragments of {size}: {shown:?}");
        assert_eq!(ok_heads(&guard), scanned, "fragments of {size}: {shown:?}");
    }
}

/// One complete valid request: accepted, and the guard is waiting for the next head.
fn pass(stream: &[u8]) {
    check(stream, &[OK]);
    let (guard, _) = run(stream, 1, 0);
    assert_eq!(guard.scanner.phase, Phase::Lines(Section::Head));
}

fn refuse(stream: &[u8], rejection: Rejection) {
    check(stream, &[Err(rejection)]);
}

/// `POST / HTTP/1.1` with the given header lines (each ending in CRLF) and no body.
fn post(headers: &str) -> Vec<u8> {
    format!("POST / HTTP/1.1\r\nHost: a\r\n{headers}\r\n").into_bytes()
}

use Rejection::*;

#[test]
fn content_length_with_transfer_encoding_is_refused_in_either_order() {
    pass(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
    pass(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    let cl_te = ContentLengthWithTransferEncoding;
    refuse(
        &post("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
        cl_te,
    );
    refuse(
        &post("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
        cl_te,
    );
    refuse(
        &post("content-length: 0\r\ntransfer-encoding: CHUNKED\r\n"),
        cl_te,
    );
}

#[test]
fn content_length_must_be_single_and_plain_digits() {
    pass(&post("Content-Length:0\r\n"));
    pass(b"POST / HTTP/1.1\r\nContent-Length: \t0007\t \r\n\r\n1234567");
    check(&post("Content-Length: 18446744073709551615\r\n"), &[OK]);
    refuse(
        &post("Content-Length: 5\r\nContent-Length: 5\r\n"),
        DuplicateContentLength,
    );
    refuse(
        &post("Content-Length: 5\r\ncontent-length: 6\r\n"),
        DuplicateContentLength,
    );
    for value in [
        "+5",
        "-5",
        "0x10",
        "5 5",
        " 5 5",
        "",
        "5,5",
        "5, 5",
        "1e3",
        "18446744073709551616",
        "\u{0665}",
    ] {
        refuse(
            &post(&format!("Content-Length: {value}\r\n")),
            InvalidContentLength,
        );
    }
}

#[test]
fn transfer_encoding_must_be_exactly_one_chunked() {
    pass(b"POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n0\r\n\r\n");
    pass(b"POST / HTTP/1.1\r\nTransfer-Encoding: \t chunked \r\n\r\n0\r\n\r\n");
    for value in [
        "chunked, identity",
        "identity, chunked",
        "xchunked",
        "chunkedx",
        "identity",
        "gzip",
        "chunked;q=1",
        "chunked chunked",
        "",
    ] {
        let head = post(&format!("Transfer-Encoding: {value}\r\n"));
        refuse(&head, UnsupportedTransferEncoding);
    }
    let two = "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n";
    refuse(&post(two), DuplicateTransferEncoding);
    refuse(
        &post("Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n"),
        UnsupportedTransferEncoding,
    );
    refuse(&post("Transfer-Encoding : chunked\r\n"), SpaceBeforeColon);
    refuse(
        &post("Transfer-Encoding:\x0bchunked\r\n"),
        InvalidHeaderValue,
    );
    // Whitespace before the name: either right after the request line or as a continuation.
    refuse(
        b"POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\n\r\n",
        ObsFold,
    );
    refuse(
        b"POST / HTTP/1.1\r\n\tTransfer-Encoding: chunked\r\n\r\n",
        ObsFold,
    );
    refuse(&post(" Transfer-Encoding: chunked\r\n"), ObsFold);
}

#[test]
fn transfer_encoding_is_refused_on_http10() {
    pass(b"POST / HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi");
    let head = b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    refuse(head, TransferEncodingOnHttp10);
}

#[test]
fn obs_fold_is_refused() {
    pass(&post("X-A: a b\r\n"));
    refuse(&post("X-A: a\r\n b\r\n"), ObsFold);
    refuse(&post("X-A: a\r\n\tb\r\n"), ObsFold);
}

#[test]
fn lines_must_end_in_crlf() {
    pass(b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n");
    pass(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    refuse(b"\nGET / HTTP/1.1\r\n\r\n", BareLf);
    refuse(b"GET / HTTP/1.1\nHost: a\r\n\r\n", BareLf);
    refuse(b"GET / HTTP/1.1\r\nHost: a\n\r\n", BareLf);
    refuse(b"GET / HTTP/1.1\r\nHost: a\r\n\n", BareLf);
    refuse(b"GET / HTTP/1.1\r\nHost: a\r\r\n\r\n", InvalidHeaderValue);
    refuse(b"GET / HTTP/1.1\r\r\n\r\n", InvalidRequestLine);
}

#[test]
fn header_names_must_be_tokens_without_trailing_space() {
    pass(&post("X-Custom_Header.1~!#$%&'*+^`|: v\r\n"));
    refuse(&post("Content-Length : 0\r\n"), SpaceBeforeColon);
    refuse(&post("Host\t: a\r\n"), SpaceBeforeColon);
    for line in [
        "X\0Y: a",
        "X\u{80}: a",
        "X Y: a",
        ": a",
        "NoColon",
        "X@Y: a",
        "X{}: a",
    ] {
        refuse(&post(&format!("{line}\r\n")), InvalidHeaderName);
    }
    refuse(&post("X\u{7f}: a\r\n"), InvalidHeaderName);
}

#[test]
fn header_values_must_not_hold_controls() {
    pass(&post("X-A: a\tb\r\nX-B:\r\nX-C:   \r\n"));
    pass(b"GET / HTTP/1.1\r\nX-Obs: \xff\x80 text\r\n\r\n");
    for value in ["a\0b", "a\rb", "\u{1}", "a\u{7f}", "\u{1b}[0m"] {
        refuse(&post(&format!("X-A: {value}\r\n")), InvalidHeaderValue);
    }
}

/// The value and target checks run 16 bytes at a time: every byte value, at each place of a
/// 40-byte value or target (the vector body and its tail), gets the per-byte rule's answer.
#[test]
fn every_byte_is_judged_alike_at_every_place_of_a_value_and_a_target() {
    let field_byte = |b: u8| (b >= 0x20 || b == b'\t') && b != 0x7f;
    let target_byte = |b: u8| b > b' ' && b != 0x7f;
    for b in 0..=255u8 {
        // A value may not end in a byte that OWS trimming or the line's end would change.
        for at in 0..39 {
            let mut value = vec![b'v'; 40];
            value[at] = b;
            let mut head = b"GET / HTTP/1.1\r\nX-A: ".to_vec();
            head.extend_from_slice(&value);
            head.extend_from_slice(b"\r\n\r\n");
            if b == b'\n' {
                refuse(&head, BareLf);
            } else if field_byte(b) {
                pass(&head);
            } else {
                refuse(&head, InvalidHeaderValue);
            }
            let mut line = b"GET /".to_vec();
            line.extend_from_slice(&value[..at]);
            line.push(b);
            line.extend_from_slice(&value[at + 1..]);
            line.extend_from_slice(b" HTTP/1.1\r\n\r\n");
            if b == b'\n' {
                refuse(&line, BareLf);
            } else if b == b' ' {
                // A second space splits the line into four parts.
                refuse(&line, InvalidRequestLine);
            } else if target_byte(b) {
                pass(&line);
            } else {
                refuse(&line, InvalidRequestLine);
            }
        }
    }
}

#[test]
fn request_line_is_strict() {
    pass(b"OPTIONS * HTTP/1.1\r\n\r\n");
    pass(b"GET http://a/b?c=d HTTP/1.0\r\n\r\n");
    for line in [
        "GET  / HTTP/1.1",
        "GET / HTTP/2.0",
        "GET / HTTP/1.1 ",
        "GET\t/ HTTP/1.1",
        "GET /\0 HTTP/1.1",
        " / HTTP/1.1",
        "GET / http/1.1",
        "GET HTTP/1.1",
        "G(T / HTTP/1.1",
    ] {
        refuse(format!("{line}\r\n\r\n").as_bytes(), InvalidRequestLine);
    }
}

#[test]
fn head_size_and_header_count_are_bounded() {
    let exact = |len: usize| {
        let mut head = b"GET / HTTP/1.1\r\nX: ".to_vec();
        head.resize(len - 4, b'a');
        head.extend_from_slice(b"\r\n\r\n");
        head
    };
    pass(&exact(limits().max_head_bytes));
    refuse(&exact(limits().max_head_bytes + 1), HeadTooLarge);
    let mut crlfs = b"\r\n".repeat(limits().max_head_bytes / 2);
    crlfs.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
    refuse(&crlfs, HeadTooLarge);

    let fields = |n: usize| post(&"X: a\r\n".repeat(n - 1));
    pass(&fields(limits().max_headers));
    refuse(&fields(limits().max_headers + 1), TooManyHeaders);
    assert_eq!(HeadTooLarge.status(), 431);
    assert_eq!(TooManyHeaders.status(), 431);
}

#[test]
fn a_line_without_end_never_buffers_past_the_limit() {
    let (mut guard, handle) = H1Guard::new((), limits());
    guard.scanner.feed(b"GET /");
    for _ in 0..20 {
        guard.scanner.feed(&[b'a'; 100]);
        assert!(guard.scanner.line.len() <= limits().max_head_bytes);
    }
    assert_eq!(handle.next_request(), Err(HeadTooLarge));
    assert_eq!(
        guard.scanner.line.capacity(),
        0,
        "buffer released after the rejection"
    );
}

#[test]
fn labels_are_distinct_snake_case_and_statuses_are_client_errors() {
    let all = [
        ContentLengthWithTransferEncoding,
        DuplicateContentLength,
        InvalidContentLength,
        DuplicateTransferEncoding,
        UnsupportedTransferEncoding,
        TransferEncodingOnHttp10,
        ObsFold,
        BareLf,
        SpaceBeforeColon,
        InvalidHeaderName,
        InvalidHeaderValue,
        InvalidRequestLine,
        HeadTooLarge,
        TooManyHeaders,
        BadChunkSize,
        BadChunkData,
        BadTrailer,
    ];
    let labels: std::collections::HashSet<_> = all.iter().map(Rejection::label).collect();
    assert_eq!(labels.len(), all.len());
    for label in labels {
        assert!(label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'));
    }
    for rejection in all {
        assert!(matches!(rejection.status(), 400 | 431), "{rejection}");
    }
}
