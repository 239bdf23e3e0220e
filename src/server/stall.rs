//! The send timeout: a connection whose writes make no progress for
//! `server.send_timeout` fails with `TimedOut`, and so ends.
//!
//! Why: a client that asks for a large answer and never reads it would
//! otherwise keep its connection, and the origin slot its answer streams
//! from, forever (hyper has no write timeout). With `origin.max_in_flight`
//! such readers the origin would be closed to everyone. nginx's
//! `send_timeout` is the same idea.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// A connection's IO whose writes may stall at most `limit` in a row.
pub struct SendTimeout<T> {
    inner: T,
    limit: Duration,
    /// Armed while a write is pending; allocated on the first stall only.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<T> SendTimeout<T> {
    /// Wraps `inner`; a zero `limit` turns the timeout off.
    pub fn new(inner: T, limit: Duration) -> Self {
        SendTimeout {
            inner,
            limit,
            timer: None,
            armed: false,
        }
    }

    /// The wrapped IO.
    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    /// Called when a write returned `Pending`: arms the timer if it is not
    /// armed yet, and says whether the stall has lasted past the limit.
    fn stalled(&mut self, cx: &mut Context<'_>) -> bool {
        if self.limit.is_zero() {
            return false;
        }
        let deadline = Instant::now() + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.armed {
            timer.as_mut().reset(deadline);
            self.armed = true;
        }
        timer.as_mut().poll(cx).is_ready()
    }

    fn progress<R>(
        &mut self,
        polled: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        match polled {
            Poll::Ready(r) => {
                self.armed = false;
                Poll::Ready(r)
            }
            Poll::Pending if self.stalled(cx) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "send timeout: the client read nothing",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendTimeout<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendTimeout<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.progress(polled, cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.progress(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.progress(polled, cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.progress(polled, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_write_stalled_past_the_limit_fails() {
        // A pipe whose reader never reads: writes stall once it is full.
        let (a, _b) = tokio::io::duplex(64);
        let mut w = SendTimeout::new(a, Duration::from_secs(3));
        let started = Instant::now();
        let err = w.write_all(&[0u8; 1024]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_steady_reader_is_not_cut() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut w = SendTimeout::new(a, Duration::from_secs(3));
        let reader = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 64];
            let mut total = 0;
            while total < 1024 {
                tokio::time::sleep(Duration::from_secs(2)).await;
                total += b.read(&mut buf).await.unwrap();
            }
        });
        // 16 stalls of 2 s each: 32 s in all, never 3 s without progress.
        w.write_all(&[0u8; 1024]).await.unwrap();
        reader.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn zero_turns_it_off() {
        let (a, _b) = tokio::io::duplex(64);
        let mut w = SendTimeout::new(a, Duration::ZERO);
        let r = tokio::time::timeout(Duration::from_secs(3600), w.write_all(&[0u8; 1024])).await;
        assert!(r.is_err(), "still pending after an hour");
    }
}
