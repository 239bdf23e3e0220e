//! Body wrappers used while forwarding: the origin's response body keeps
//! its origin slot until it has been streamed to the end (or dropped).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

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
