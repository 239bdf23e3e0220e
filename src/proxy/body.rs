//! Body wrappers used while forwarding: the origin's response body keeps
//! its origin slot until it has been streamed to the end (or dropped), and
//! the client's request body is watched for stalls and faults so that a
//! slow or broken upload is answered as the client's fault, not the origin's.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::slots::Slot;
use crate::BoxError;

/// A response body that holds an origin slot while it streams.
pub struct SlotBody<B> {
    inner: B,
    slot: Option<Slot>,
}

impl<B> SlotBody<B> {
    /// Wraps `inner`, releasing `slot` when the body ends or is dropped.
    pub fn new(inner: B, slot: Slot) -> Self {
        SlotBody {
            inner,
            slot: Some(slot),
        }
    }
}

impl<B> Body for SlotBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => {
                this.slot.take();
            }
            _ => {}
        }
        polled.map(|o| o.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Why a client's request body failed on its way to the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFault {
    /// The body's framing was broken (a bad chunk, a cut connection).
    Malformed,
    /// The body passed `server.max_request_body`.
    TooLarge,
    /// No body bytes arrived for `server.body_read_timeout`.
    Stalled,
}

/// Where a [`RequestBody`] records how it failed, for the code that sent it.
#[derive(Debug, Default)]
pub struct BodyFate(AtomicU8);

impl BodyFate {
    fn set(&self, fault: BodyFault) {
        let code = match fault {
            BodyFault::Malformed => 1,
            BodyFault::TooLarge => 2,
            BodyFault::Stalled => 3,
        };
        let _ = self
            .0
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
    }

    /// The first fault seen, if any.
    pub fn get(&self) -> Option<BodyFault> {
        match self.0.load(Ordering::Acquire) {
            1 => Some(BodyFault::Malformed),
            2 => Some(BodyFault::TooLarge),
            3 => Some(BodyFault::Stalled),
            _ => None,
        }
    }
}

/// The error a stalled request body ends with.
#[derive(Debug, thiserror::Error)]
#[error("no request body bytes for {0:?}")]
pub struct BodyStalled(pub Duration);

/// A client's request body on its way to the origin: it fails when no
/// frame arrives for `idle` (slow-POST defence: a trickled upload would
/// otherwise hold an origin slot until `origin.response_timeout`), and
/// records in its [`BodyFate`] why it failed.
pub struct RequestBody<B> {
    inner: B,
    idle: Duration,
    /// `None` when the idle timeout is off.
    sleep: Option<Pin<Box<Sleep>>>,
    fate: Arc<BodyFate>,
}

impl<B> RequestBody<B> {
    /// Wraps `inner`; `idle` is the longest wait for the next frame
    /// (zero: no limit).
    pub fn new(inner: B, idle: Duration, fate: Arc<BodyFate>) -> Self {
        RequestBody {
            inner,
            idle,
            sleep: (!idle.is_zero()).then(|| Box::pin(tokio::time::sleep(idle))),
            fate,
        }
    }
}

impl<B> Body for RequestBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(sleep) = &mut this.sleep {
                    sleep.as_mut().reset(Instant::now() + this.idle);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e: BoxError = e.into();
                this.fate.set(
                    if e.downcast_ref::<http_body_util::LengthLimitError>()
                        .is_some()
                    {
                        BodyFault::TooLarge
                    } else {
                        BodyFault::Malformed
                    },
                );
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.sleep.as_mut().map(|s| s.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => {
                    this.fate.set(BodyFault::Stalled);
                    Poll::Ready(Some(Err(Box::new(BodyStalled(this.idle)))))
                }
                _ => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>;

    fn frames(items: Vec<Result<Frame<Bytes>, BoxError>>) -> StreamBody<Frames> {
        StreamBody::new(futures_util::stream::iter(items))
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_idle_time() {
        let inner = StreamBody::new(futures_util::stream::pending::<
            Result<Frame<Bytes>, BoxError>,
        >());
        let fate = Arc::new(BodyFate::default());
        let mut body = RequestBody::new(inner, Duration::from_secs(5), fate.clone());
        let started = Instant::now();
        let got = body.frame().await.expect("an error, not the end");
        assert!(got.is_err());
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(fate.get(), Some(BodyFault::Stalled));
    }

    #[tokio::test(start_paused = true)]
    async fn faults_are_told_apart() {
        let fate = Arc::new(BodyFate::default());
        let body = frames(vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Err("broken chunk".into()),
        ]);
        let mut body = RequestBody::new(body, Duration::from_secs(5), fate.clone());
        assert!(body.frame().await.unwrap().is_ok());
        assert!(fate.get().is_none());
        assert!(body.frame().await.unwrap().is_err());
        assert_eq!(fate.get(), Some(BodyFault::Malformed));

        let fate = Arc::new(BodyFate::default());
        let limited = http_body_util::Limited::new(
            frames(vec![Ok(Frame::data(Bytes::from_static(b"abcdef")))]),
            3,
        );
        let mut body = RequestBody::new(limited, Duration::from_secs(5), fate.clone());
        assert!(body.frame().await.unwrap().is_err());
        assert_eq!(fate.get(), Some(BodyFault::TooLarge));
    }
}
