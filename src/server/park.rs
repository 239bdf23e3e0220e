//! Parking idle HTTP/1 connections: between requests a keep-alive connection
//! leaves hyper and waits for its next bytes as a bare socket.
//!
//! Why: hyper keeps an 8 KiB read buffer and an 8 KiB write buffer per
//! HTTP/1 connection for its whole life, plus its connection state: about
//! 30 KiB per idle keep-alive connection in all. A waiting room holds
//! hundreds of thousands of phones that poll every few seconds and are idle
//! in between.
//!
//! How: [`Parkable`] sits between hyper and the guarded IO. When hyper asks
//! to read, the socket has nothing, and the connection has rested for
//! [`REST`] (no request in flight, every byte written flushed, the smuggling
//! guard between heads), it answers end-of-stream. hyper, idle, ends the
//! connection gracefully;
//! its shutdown is swallowed and the IO handed back through [`Home`]. The
//! caller then waits for readability (or the idle timeout, or the drain)
//! and serves the next request with a new hyper connection on the same IO
//! and guard. Nothing is lost: hyper's read buffer is empty at that point
//! (the guard saw every byte read, and all were consumed by complete
//! requests), and so is its write buffer (flushed).
//!
//! Why not at the first empty read: a client that sends its next request a
//! few microseconds after the answer (an app, a load generator, a browser
//! fetching a page's parts) would build a new hyper connection per request,
//! more work than the request itself. Why not much later: every connection
//! of a burst would hold hyper's buffers at once, and the allocator keeps
//! that peak. A short rest costs one timer reset per request. A client
//! that comes back within [`BUSY_REST`] of its connection parking is busy,
//! and its next hyper connection rests that long instead.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{Duration, Instant, Sleep};

use super::stall::SendTimeout;
use crate::h1_guard::H1Guard;

/// The IO of a guarded HTTP/1 connection.
pub type Guarded<S> = H1Guard<SendTimeout<S>>;

/// A socket whose readability can be awaited without reading.
pub trait Readable {
    /// Ready when the underlying socket has bytes (or an end or error) to read.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Readable for TcpStream {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_read_ready(cx)
    }
}

impl Readable for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Parked only when rustls had no plaintext left: new bytes must come
        // from the socket.
        self.get_ref().0.poll_read_ready(cx)
    }
}

/// Waits until `io`'s socket is readable.
pub async fn readable<S: Readable>(io: &Guarded<S>) -> io::Result<()> {
    std::future::poll_fn(|cx| io.get_ref().get_ref().poll_readable(cx)).await
}

/// Requests of a connection in flight: from the service's call until hyper
/// drops the answer's body (its last byte written to hyper's buffer).
#[derive(Clone, Default)]
pub struct Flight(Arc<AtomicUsize>);

impl Flight {
    /// Counts a request in flight until the returned guard is dropped.
    pub fn enter(&self) -> Busy {
        self.0.fetch_add(1, Ordering::AcqRel);
        Busy(self.0.clone())
    }

    fn idle(&self) -> bool {
        self.0.load(Ordering::Acquire) == 0
    }
}

/// One request in flight (see [`Flight`]).
pub struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An answer's body that keeps its request counted in flight until hyper
/// drops it.
pub struct Tracked<B> {
    inner: B,
    _busy: Busy,
}

impl<B> Tracked<B> {
    /// Wraps `inner`, holding `busy` as long as it lives.
    pub fn new(inner: B, busy: Busy) -> Self {
        Tracked { inner, _busy: busy }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How long a connection rests (nothing to read, nothing in flight) before
/// it parks. A client that keeps its connection busy answers within tens of
/// microseconds; 10 ms raised the idle benchmark's 10,000 connections from
/// 4.2 KiB to 6.5 KiB each (more of a burst alive at once, and the
/// allocator keeps the peak), 2 ms did not.
pub const REST: Duration = Duration::from_millis(2);

/// How long a *busy* connection rests before it parks: one whose client
/// came back within this time of its last parking. Such a client sends
/// its requests a few milliseconds apart (a load generator with hundreds
/// of connections, a browser fetching a page's parts, an app's burst),
/// and parking it after every answer built a new hyper connection per
/// request: at 256 connections, each 3 ms apart, every request. A phone
/// polling every few seconds is never busy; neither is a connection that
/// served one request, so idle connections still park after [`REST`].
pub const BUSY_REST: Duration = Duration::from_millis(25);

/// The rest of the next hyper connection, from how long the connection
/// stayed parked (see [`BUSY_REST`]).
pub fn rest_after(parked_for: Duration) -> Duration {
    if parked_for < BUSY_REST {
        BUSY_REST
    } else {
        REST
    }
}

/// Where a parked connection's IO goes when hyper lets go of it.
pub struct Home<S>(Mutex<Option<Guarded<S>>>);

impl<S> Home<S> {
    /// An empty home.
    pub fn new() -> Arc<Self> {
        Arc::new(Home(Mutex::new(None)))
    }

    /// The IO, if the connection parked.
    pub fn take(&self) -> Option<Guarded<S>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// The guarded IO as hyper sees it (see the module documentation).
pub struct Parkable<S> {
    io: Option<Guarded<S>>,
    home: Arc<Home<S>>,
    flight: Flight,
    /// Bytes written since the last completed flush (or a write pending).
    dirty: bool,
    /// End-of-stream was answered to park: the IO goes home, not shut down.
    parked: bool,
    /// Armed while the connection rests; it parks when this fires. Made at
    /// the first rest, then reset: one allocation per hyper connection.
    rest: Option<Pin<Box<Sleep>>>,
    /// Whether `rest` is armed for the current rest.
    resting: bool,
    /// How long a rest lasts ([`REST`] or [`BUSY_REST`]).
    rest_for: Duration,
}

impl<S: Unpin> Parkable<S> {
    /// Wraps `io` for one hyper connection that parks after resting
    /// `rest_for`.
    pub fn new(io: Guarded<S>, home: Arc<Home<S>>, flight: Flight, rest_for: Duration) -> Self {
        Parkable {
            io: Some(io),
            home,
            flight,
            dirty: false,
            parked: false,
            rest: None,
            resting: false,
            rest_for,
        }
    }

    fn io(&mut self) -> Pin<&mut Guarded<S>> {
        Pin::new(self.io.as_mut().expect("IO present until drop"))
    }

    fn wrote<T>(&mut self, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.dirty = true;
        polled
    }

    /// Whether the connection, at rest now, has rested for `rest_for`. The
    /// first call of a rest arms the timer; its firing wakes hyper to read
    /// again, and then this answers true.
    fn rested(&mut self, cx: &mut Context<'_>) -> bool {
        let timer = match &mut self.rest {
            Some(t) if self.resting => t,
            Some(t) => {
                t.as_mut().reset(Instant::now() + self.rest_for);
                t
            }
            None => self
                .rest
                .insert(Box::pin(tokio::time::sleep(self.rest_for))),
        };
        self.resting = true;
        timer.as_mut().poll(cx).is_ready()
    }
}

impl<S> Drop for Parkable<S> {
    fn drop(&mut self) {
        if self.parked {
            *self.home.0.lock().unwrap_or_else(|e| e.into_inner()) = self.io.take();
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Parkable<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            return Poll::Ready(Ok(()));
        }
        match this.io().poll_read(cx, buf) {
            Poll::Pending => {
                let rests = !this.dirty
                    && this.flight.idle()
                    && this.io.as_mut().is_some_and(|io| io.at_rest());
                if rests && this.rested(cx) {
                    this.parked = true;
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                }
            }
            ready => {
                this.resting = false;
                ready
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Parkable<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = this.io().poll_write(cx, buf);
        this.wrote(polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = this.io().poll_write_vectored(cx, bufs);
        this.wrote(polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.as_ref().is_some_and(|io| io.is_write_vectored())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = this.io().poll_flush(cx);
        if let Poll::Ready(Ok(())) = polled {
            this.dirty = false;
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            // Not the end of the connection: only of this hyper connection.
            return this.io().poll_flush(cx);
        }
        this.io().poll_shutdown(cx)
    }
}

/// The graceful drain: on shutdown every connection is told once.
pub struct Drain {
    rx: watch::Receiver<()>,
    fired: bool,
}

impl Drain {
    /// Watches `rx` (its sender says when to drain; dropped: drain too).
    pub fn new(rx: watch::Receiver<()>) -> Self {
        Drain { rx, fired: false }
    }

    /// Whether the drain has begun.
    pub fn fired(&mut self) -> bool {
        self.fired = self.fired || self.rx.has_changed().unwrap_or(true);
        self.fired
    }

    /// The drain's own receiver, for a connection that keeps one wait for
    /// its whole life (`changed()` resolves when the drain begins).
    pub fn watch(&self) -> watch::Receiver<()> {
        self.rx.clone()
    }

    /// Resolves when the drain begins (at once if it has).
    pub async fn signal(&mut self) {
        if !self.fired {
            let _ = self.rx.changed().await;
            self.fired = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h1_guard::GuardLimits;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    fn parkable(
        io: DuplexStream,
        rest_for: Duration,
    ) -> (Parkable<DuplexStream>, Arc<Home<DuplexStream>>, Flight) {
        let (guarded, _handle) =
            H1Guard::new(SendTimeout::new(io, Duration::ZERO), GuardLimits::default());
        let (home, flight) = (Home::new(), Flight::default());
        (
            Parkable::new(guarded, home.clone(), flight.clone(), rest_for),
            home,
            flight,
        )
    }

    /// One read with nothing more to come soon: `Some(n)` bytes, `None` pending.
    async fn read_now(p: &mut Parkable<DuplexStream>) -> Option<usize> {
        let mut buf = [0u8; 64];
        tokio::time::timeout(Duration::from_millis(50), p.read(&mut buf))
            .await
            .ok()
            .map(|r| r.unwrap())
    }

    // On tokio's paused clock: time moves only when every task waits, so a
    // busy machine (eight test threads on two cores) cannot stretch the
    // 2 ms rest under the test's feet.
    #[tokio::test(start_paused = true)]
    async fn parks_only_when_the_connection_rests() {
        let (ours, mut client) = tokio::io::duplex(1024);
        let (mut p, home, flight) = parkable(ours, REST);
        client.write_all(b"GET / HTTP/1.1\r\nHo").await.unwrap();
        assert_eq!(read_now(&mut p).await, Some(18));
        // Mid-head: waits for the rest.
        assert_eq!(read_now(&mut p).await, None);
        client.write_all(b"st: a\r\n\r\n").await.unwrap();
        assert_eq!(read_now(&mut p).await, Some(9));
        // The request is in flight: no parking.
        let busy = flight.enter();
        assert_eq!(read_now(&mut p).await, None);
        p.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        drop(busy);
        // Written but not flushed yet: no parking.
        assert_eq!(read_now(&mut p).await, None);
        p.flush().await.unwrap();
        // At rest, and bytes come within the rest: read as they come.
        let mut buf = [0u8; 64];
        let early = tokio::time::timeout(REST / 4, p.read(&mut buf)).await;
        assert!(early.is_err(), "parked before REST: {early:?}");
        client
            .write_all(b"GET /next HTTP/1.1\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(read_now(&mut p).await, Some(22));
        let busy = flight.enter();
        p.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        p.flush().await.unwrap();
        drop(busy);
        // At rest for REST: end-of-stream to hyper, and the IO goes home.
        let rest = Instant::now();
        assert_eq!(read_now(&mut p).await, Some(0));
        assert!(rest.elapsed() >= REST, "parked after {:?}", rest.elapsed());
        p.shutdown().await.unwrap();
        assert!(home.take().is_none(), "handed over on drop only");
        drop(p);
        let mut io = home.take().expect("the IO came home");
        // Not shut down: the client can still talk to it.
        client.write_all(b"GET /2 HTTP/1.1\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert_eq!(io.read(&mut buf).await.unwrap(), 17);
        assert!(!io.at_rest(), "the guard still follows the stream");
    }

    #[tokio::test]
    async fn a_connection_that_never_rested_is_shut_down() {
        let (ours, mut client) = tokio::io::duplex(1024);
        let (mut p, home, _flight) = parkable(ours, REST);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        assert_eq!(read_now(&mut p).await, Some(16));
        p.shutdown().await.unwrap();
        drop(p);
        assert!(home.take().is_none());
        let mut buf = [0u8; 8];
        assert_eq!(client.read(&mut buf).await.unwrap(), 0, "closed");
    }

    /// A client that came back soon after its connection parked is busy:
    /// its next hyper connection rests [`BUSY_REST`] before parking.
    #[tokio::test(start_paused = true)]
    async fn a_busy_connection_rests_longer_before_it_parks() {
        assert_eq!(rest_after(Duration::from_micros(300)), BUSY_REST);
        assert_eq!(rest_after(BUSY_REST - Duration::from_millis(1)), BUSY_REST);
        assert_eq!(rest_after(BUSY_REST), REST);
        assert_eq!(rest_after(Duration::from_secs(5)), REST);
        let (ours, mut client) = tokio::io::duplex(1024);
        let (mut p, home, _flight) = parkable(ours, BUSY_REST);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        assert_eq!(read_now(&mut p).await, Some(18));
        // Past the short rest: still in hyper.
        let mut buf = [0u8; 64];
        let early = tokio::time::timeout(REST * 4, p.read(&mut buf)).await;
        assert!(early.is_err(), "parked before BUSY_REST: {early:?}");
        let rest = Instant::now();
        assert_eq!(read_now(&mut p).await, Some(0));
        assert!(
            rest.elapsed() + REST * 4 >= BUSY_REST,
            "parked after {:?}",
            rest.elapsed()
        );
        drop(p);
        assert!(home.take().is_some(), "parked, the IO came home");
        drop(client);
    }
}
