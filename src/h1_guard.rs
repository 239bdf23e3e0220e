//! The HTTP/1 request-smuggling guard: it reads the raw byte stream of a connection before
//! hyper parses it and refuses every ambiguous request framing.
//!
//! Why: hyper 1.x accepts a request carrying both Content-Length and Transfer-Encoding (it
//! follows chunked and drops Content-Length, so the service never sees both), duplicate equal
//! Content-Lengths, bare-LF line endings and more. An origin or another hop may frame such a
//! request differently, which is how requests get smuggled. Like nginx >= 1.21.1, usher answers
//! them with 400 and closes the connection, forwarding nothing.
//!
//! How: [`H1Guard`] wraps the connection's IO and scans each newly read slice (writes pass
//! through untouched). It validates each request head, then follows the body framing
//! (Content-Length bodies are skipped unread; chunked bodies are walked chunk by chunk) to find
//! where the next pipelined head starts. The verdict for each head is queued; the service takes
//! them in order through [`GuardHandle::next_request`]. A malformed chunked body flags the
//! *next* request (hyper fails the current body on its own).
//!
//! Scanning stops for good on the h2c preface (prior knowledge), after a head that asks for an
//! upgrade (`Upgrade` header or CONNECT: what follows may not be HTTP/1; the caller closes the
//! connection when it refuses the upgrade), and after the first rejection (the caller closes the
//! connection after answering it).

mod scan;
mod syntax;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_io;

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use scan::Scanner;

/// Bounds on what one request head may use; they also bound the guard's memory per connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuardLimits {
    /// Largest request head, request line and CRLFs included. Also the limit for one
    /// chunk-size line and for one trailer section.
    pub max_head_bytes: usize,
    /// Most header fields in one head (and trailer fields in one trailer section).
    pub max_headers: usize,
}

/// nginx's default `large_client_header_buffers` (4 × 8k) allows heads up to 32 KiB; a real
/// browser head is a few KiB.
pub const DEFAULT_MAX_HEAD_BYTES: usize = 32 * 1024;
/// hyper's own default limit on header fields.
pub const DEFAULT_MAX_HEADERS: usize = 100;

impl Default for GuardLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: DEFAULT_MAX_HEAD_BYTES,
            max_headers: DEFAULT_MAX_HEADERS,
        }
    }
}

/// Why a request was refused. Body-level faults (`BadChunk*`, `BadTrailer`) are reported on
/// the request that follows the malformed body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("request has both Content-Length and Transfer-Encoding")]
    ContentLengthWithTransferEncoding,
    #[error("request has more than one Content-Length header")]
    DuplicateContentLength,
    #[error("Content-Length is not a plain decimal number")]
    InvalidContentLength,
    #[error("request has more than one Transfer-Encoding header")]
    DuplicateTransferEncoding,
    #[error("Transfer-Encoding is not exactly `chunked`")]
    UnsupportedTransferEncoding,
    #[error("Transfer-Encoding on an HTTP/1.0 request")]
    TransferEncodingOnHttp10,
    #[error("header line starts with whitespace (obs-fold)")]
    ObsFold,
    #[error("line ends in a bare LF instead of CRLF")]
    BareLf,
    #[error("whitespace between a header name and its colon")]
    SpaceBeforeColon,
    #[error("header name is empty, missing its colon, or not a token")]
    InvalidHeaderName,
    #[error("header value holds a control byte")]
    InvalidHeaderValue,
    #[error("malformed request line")]
    InvalidRequestLine,
    #[error("request head is larger than the limit")]
    HeadTooLarge,
    #[error("request head has more header fields than the limit")]
    TooManyHeaders,
    #[error("previous request had a malformed chunk-size line")]
    BadChunkSize,
    #[error("previous request had chunk data not followed by CRLF")]
    BadChunkData,
    #[error("previous request had a malformed or oversized trailer section")]
    BadTrailer,
}

impl Rejection {
    /// The status code to answer with.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::HeadTooLarge | Rejection::TooManyHeaders => 431,
            _ => 400,
        }
    }

    /// A stable snake_case name, for a metric label or a log field.
    pub fn label(&self) -> &'static str {
        match self {
            Rejection::ContentLengthWithTransferEncoding => "content_length_with_transfer_encoding",
            Rejection::DuplicateContentLength => "duplicate_content_length",
            Rejection::InvalidContentLength => "invalid_content_length",
            Rejection::DuplicateTransferEncoding => "duplicate_transfer_encoding",
            Rejection::UnsupportedTransferEncoding => "unsupported_transfer_encoding",
            Rejection::TransferEncodingOnHttp10 => "transfer_encoding_on_http10",
            Rejection::ObsFold => "obs_fold",
            Rejection::BareLf => "bare_lf",
            Rejection::SpaceBeforeColon => "space_before_colon",
            Rejection::InvalidHeaderName => "invalid_header_name",
            Rejection::InvalidHeaderValue => "invalid_header_value",
            Rejection::InvalidRequestLine => "invalid_request_line",
            Rejection::HeadTooLarge => "head_too_large",
            Rejection::TooManyHeaders => "too_many_headers",
            Rejection::BadChunkSize => "bad_chunk_size",
            Rejection::BadChunkData => "bad_chunk_data",
            Rejection::BadTrailer => "bad_trailer",
        }
    }
}

/// Verdicts shared between the scanner (reading side) and the service. Heads `0..ok_heads`
/// passed; the rejection, if any, belongs to head `ok_heads` (scanning stops at it).
#[derive(Default)]
struct Verdicts {
    ok_heads: AtomicU64,
    rejection: OnceLock<Rejection>,
    asked: AtomicU64,
}

/// The service's side of a guarded connection: it takes the verdict of each request in order.
#[derive(Clone)]
pub struct GuardHandle(Arc<Verdicts>);

impl GuardHandle {
    /// Returns the verdict for the next request on the connection: call it exactly once per
    /// request, in order (HTTP/1 requests on a connection are sequential). A request whose
    /// head the guard has not scanned (after a passthrough) is `Ok`.
    pub fn next_request(&self) -> Result<(), Rejection> {
        let index = self.0.asked.fetch_add(1, Ordering::Relaxed);
        self.verdict(index)
    }

    /// The verdict [`next_request`](Self::next_request) would return, without taking it: the
    /// relay looks before it decides whether the request is its own or hyper's.
    pub fn peek_next(&self) -> Result<(), Rejection> {
        self.verdict(self.0.asked.load(Ordering::Relaxed))
    }

    fn verdict(&self, index: u64) -> Result<(), Rejection> {
        if index < self.0.ok_heads.load(Ordering::Acquire) {
            return Ok(());
        }
        self.0
            .rejection
            .get()
            .map_or(Ok(()), |&rejection| Err(rejection))
    }
}

impl std::fmt::Debug for GuardHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuardHandle")
            .field("ok_heads", &self.0.ok_heads.load(Ordering::Relaxed))
            .field("rejection", &self.0.rejection.get())
            .finish()
    }
}

/// A connection's IO with the smuggling guard on its reading side.
pub struct H1Guard<T> {
    inner: T,
    scanner: Scanner,
    /// Bytes read (and scanned) already, given back to be read again before the socket's:
    /// a head the relay read and left to hyper, or what a client pipelined after a relayed
    /// request.
    unread: Bytes,
}

impl<T> H1Guard<T> {
    /// Wraps `inner`; the handle goes to the service that answers this connection's requests.
    pub fn new(inner: T, limits: GuardLimits) -> (Self, GuardHandle) {
        let verdicts = Arc::new(Verdicts::default());
        let scanner = Scanner::new(limits, Arc::clone(&verdicts));
        let unread = Bytes::new();
        (
            Self {
                inner,
                scanner,
                unread,
            },
            GuardHandle(verdicts),
        )
    }

    /// The wrapped IO (for its peer address, TLS session...).
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Whether the connection rests between requests: every byte read so far belonged to a
    /// complete request and nothing of the next one has arrived (never after a passthrough or
    /// a rejection). Releases the guard's line buffer when it does.
    pub fn at_rest(&mut self) -> bool {
        self.unread.is_empty() && self.scanner.at_rest()
    }

    /// Gives back `bytes`, read through this guard (so scanned already): the next reads return
    /// them first (before any given back earlier and not read yet: they were read from it
    /// first), unscanned, then the socket's bytes.
    pub fn unread(&mut self, bytes: &[u8]) {
        self.unread = if self.unread.is_empty() {
            Bytes::copy_from_slice(bytes)
        } else {
            // Read before what still waits here: they come first.
            [bytes, &self.unread[..]].concat().into()
        };
    }

    /// Whether bytes given back wait to be read.
    pub fn has_unread(&self) -> bool {
        !self.unread.is_empty()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for H1Guard<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.unread.is_empty() {
            let n = this.unread.len().min(buf.remaining());
            buf.put_slice(&this.unread.split_to(n));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.scanner.feed(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for H1Guard<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
