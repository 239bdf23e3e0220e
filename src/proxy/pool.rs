//! usher's own keep-alive pool of HTTP/1.1 connections to the origin,
//! on `hyper::client::conn::http1` directly.
//!
//! hyper-util's general client spawns a task per request to learn when a
//! connection may go back to its pool, and races a checkout against a lazy
//! connect on every request. Here a connection goes back when the response
//! body it carried has ended (its wrapper, [`PooledBody`], sees the end), and
//! a checkout is a pop from a short list: the last connection used is the
//! first reused (warm, and the rest age out after `origin.idle_timeout`).

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_rustls::{HttpsConnector, MaybeHttpsStream};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::civil::Tick;
use crate::{Body, BoxError};

/// Why a request got no response from the origin.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made (refused, unreachable, timed out, TLS).
    #[error("connecting to the origin: {0}")]
    Connect(BoxError),
    /// The connection failed while the request was sent or answered.
    #[error("origin connection: {0}")]
    Http(#[from] hyper::Error),
}

impl SendError {
    /// Whether no connection could be made.
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

struct Idle {
    tx: SendRequest<Body>,
    since: Tick,
}

/// An idle plain connection of the relay (`server::relay`): a bare socket
/// between two exchanges.
struct RawIdle {
    io: TcpStream,
    since: Tick,
}

/// The pool of one origin.
pub struct Pool {
    connector: HttpsConnector<HttpConnector>,
    /// Where to connect (scheme and authority of the origin).
    target: Uri,
    builder: http1::Builder,
    idle: Mutex<VecDeque<Idle>>,
    raw_idle: Mutex<VecDeque<RawIdle>>,
    max_idle: usize,
    idle_timeout: Duration,
}

/// A connection taken from the pool (or just made) for one request.
pub struct Conn {
    tx: SendRequest<Body>,
    /// Whether it carried a request before (the origin may have closed it
    /// just as this one is sent).
    pub reused: bool,
}

impl Pool {
    /// A pool connecting through `connector` to `target`, keeping at most
    /// `max_idle` idle connections for at most `idle_timeout` each.
    pub fn new(
        connector: HttpsConnector<HttpConnector>,
        target: Uri,
        max_idle: usize,
        idle_timeout: Duration,
    ) -> Arc<Pool> {
        let mut builder = http1::Builder::new();
        builder.preserve_header_case(true);
        let pool = Arc::new(Pool {
            connector,
            target,
            builder,
            idle: Mutex::new(VecDeque::new()),
            raw_idle: Mutex::new(VecDeque::new()),
            max_idle,
            idle_timeout,
        });
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(reap(Arc::downgrade(&pool)));
        }
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_raw(&self) -> std::sync::MutexGuard<'_, VecDeque<RawIdle>> {
        self.raw_idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A plain connection for the relay: the most recently used idle one
    /// younger than `idle_timeout` (`true`: reused, the origin may have
    /// closed it since), or a new one (`false`).
    pub async fn checkout_raw(&self) -> Result<(TcpStream, bool), SendError> {
        let popped = {
            let mut idle = self.lock_raw();
            let now = Tick::now();
            while idle
                .front()
                .is_some_and(|i| now.since(i.since) >= self.idle_timeout)
            {
                idle.pop_front();
            }
            idle.pop_back()
        };
        if let Some(RawIdle { io, .. }) = popped {
            return Ok((io, true));
        }
        // Boxed: the rare path, kept out of every request's future.
        Box::pin(self.connect_raw()).await.map(|io| (io, false))
    }

    /// A new plain connection to the origin, made by the pool's connector
    /// (its connect timeout, `TCP_NODELAY`, keep-alive).
    pub async fn connect_raw(&self) -> Result<TcpStream, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        match connector
            .call(self.target.clone())
            .await
            .map_err(SendError::Connect)?
        {
            MaybeHttpsStream::Http(io) => Ok(io.into_inner()),
            MaybeHttpsStream::Https(_) => Err(SendError::Connect(
                "the relay speaks plain HTTP/1.1 only".into(),
            )),
        }
    }

    /// Takes back a plain connection between two exchanges.
    pub fn put_raw(&self, io: TcpStream) {
        if self.max_idle > 0 {
            keep(&mut self.lock_raw(), self.max_idle, |since| RawIdle {
                io,
                since,
            });
        }
    }

    /// Drops idle connections older than `idle_timeout`.
    fn prune(idle: &mut VecDeque<Idle>, timeout: Duration, now: Tick) {
        while idle
            .front()
            .is_some_and(|i| now.since(i.since) >= timeout || i.tx.is_closed())
        {
            idle.pop_front();
        }
    }

    /// A connection ready for a request: the most recently used idle one
    /// that is still open, or a new one.
    pub async fn checkout(&self) -> Result<Conn, SendError> {
        loop {
            let popped = {
                let mut idle = self.lock();
                if !idle.is_empty() {
                    Self::prune(&mut idle, self.idle_timeout, Tick::now());
                }
                idle.pop_back()
            };
            let Some(Idle { mut tx, .. }) = popped else {
                return self.connect().await;
            };
            if tx.is_closed() {
                continue;
            }
            // Handed back at the end of a body, it may still be finishing
            // that response for a moment.
            if tx.is_ready() || tx.ready().await.is_ok() {
                return Ok(Conn { tx, reused: true });
            }
        }
    }

    async fn connect(&self) -> Result<Conn, SendError> {
        let mut connector = self.connector.clone();
        std::future::poll_fn(|cx| connector.poll_ready(cx))
            .await
            .map_err(SendError::Connect)?;
        let io = connector
            .call(self.target.clone())
            .await
            .map_err(SendError::Connect)?;
        let (tx, conn) = self.builder.handshake::<_, Body>(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "origin connection ended");
            }
        });
        Ok(Conn { tx, reused: false })
    }

    /// Takes back a connection whose last response ended cleanly.
    fn put(&self, tx: SendRequest<Body>) {
        if !tx.is_closed() && self.max_idle > 0 {
            keep(&mut self.lock(), self.max_idle, |since| Idle { tx, since });
        }
    }
}

/// Adds an idle connection, made by `idle` from the time it went idle
/// (to the coarse clock's tick: an idle timeout is seconds), unless `max`
/// wait already (then it is dropped: closed).
fn keep<T>(list: &mut VecDeque<T>, max: usize, idle: impl FnOnce(Tick) -> T) {
    if list.len() < max {
        list.push_back(idle(Tick::now()));
    }
}

/// Closes connections idle past the timeout while nothing checks out.
async fn reap(pool: Weak<Pool>) {
    let every = match pool.upgrade() {
        Some(p) => (p.idle_timeout / 2).max(Duration::from_millis(100)),
        None => return,
    };
    loop {
        tokio::time::sleep(every).await;
        let Some(p) = pool.upgrade() else { return };
        let now = Tick::now();
        Pool::prune(&mut p.lock(), p.idle_timeout, now);
        p.lock_raw().retain(|i| now.since(i.since) < p.idle_timeout);
    }
}

impl Conn {
    /// Sends `req`. `Err` with the request when it was not sent at all
    /// (the connection had closed): it can go out on another connection.
    pub async fn send(
        &mut self,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, (SendError, Option<Request<Body>>)> {
        self.tx.try_send_request(req).await.map_err(|mut e| {
            let unsent = e.take_message();
            (SendError::Http(e.into_error()), unsent)
        })
    }

    /// Wraps the response body so that the connection returns to `pool`
    /// once the body has ended (when `reusable`: not after an upgrade).
    pub fn carry(self, pool: &Arc<Pool>, body: Incoming, reusable: bool) -> PooledBody {
        PooledBody {
            inner: body,
            back: reusable.then(|| (self.tx, pool.clone())),
            ended: false,
        }
    }
}

/// An origin response body that hands its connection back to the pool
/// when it has been read to the end (a body dropped early closes it).
pub struct PooledBody {
    inner: Incoming,
    back: Option<(SendRequest<Body>, Arc<Pool>)>,
    ended: bool,
}

impl PooledBody {
    fn give_back(&mut self) {
        if let Some((tx, pool)) = self.back.take() {
            pool.put(tx);
        }
    }
}

impl http_body::Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                this.ended = true;
                this.give_back();
            }
            Poll::Ready(Some(Err(_))) => {
                // Broken: the connection is not reused.
                this.back = None;
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        // All of a sized body read (or none to read): the connection is
        // between messages and can carry the next request.
        if !self.ended && self.inner.is_end_stream() {
            self.give_back();
        }
    }
}
