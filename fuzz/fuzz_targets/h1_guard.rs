//! The HTTP/1 smuggling guard's scanner: any byte stream, cut into reads of
//! any sizes, never panics, and the verdicts never depend on where the
//! reads were cut (the same bytes read at once give the same answers).
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncRead, ReadBuf};
use usher::h1_guard::{GuardLimits, H1Guard, Rejection};

/// Reads `data` in pieces of the given sizes (cycled), like a socket would.
struct Pieces<'a> {
    data: &'a [u8],
    sizes: &'a [u8],
    turn: usize,
}

impl AsyncRead for Pieces<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let size = if self.sizes.is_empty() {
            usize::MAX
        } else {
            usize::from(self.sizes[self.turn % self.sizes.len()]) + 1
        };
        self.turn += 1;
        let n = size.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

fn verdicts(data: &[u8], sizes: &[u8]) -> Vec<Result<(), Rejection>> {
    let limits = GuardLimits {
        max_head_bytes: 512,
        max_headers: 8,
    };
    let (mut guard, handle) = H1Guard::new(
        Pieces {
            data,
            sizes,
            turn: 0,
        },
        limits,
    );
    let mut cx = Context::from_waker(Waker::noop());
    let mut space = [0u8; 97];
    loop {
        let mut buf = ReadBuf::new(&mut space);
        match Pin::new(&mut guard).poll_read(&mut cx, &mut buf) {
            Poll::Ready(Ok(())) if buf.filled().is_empty() => break,
            Poll::Ready(Ok(())) => {}
            other => panic!("in-memory read failed: {other:?}"),
        }
    }
    // Every head the stream held has a verdict; after a rejection all are.
    (0..64).map(|_| handle.next_request()).collect()
}

fuzz_target!(|input: &[u8]| {
    // The first bytes choose read sizes; the rest is the connection.
    let cut = usize::from(input.first().copied().unwrap_or(0) % 8);
    let Some((sizes, data)) = input.get(1..).map(|r| r.split_at(cut.min(r.len()))) else {
        return;
    };
    let whole = verdicts(data, &[]);
    let pieces = verdicts(data, sizes);
    assert_eq!(whole, pieces, "read sizes {sizes:?} changed the verdicts");
});
