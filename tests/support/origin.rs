//! The recording origin: a raw-TCP HTTP/1.1 server that keeps the exact
//! bytes of every request head it receives and answers what the test asks.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncWriteExt, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use super::h1::{Conn, Head};
use super::pattern;

/// Request bodies are kept in memory up to this size (bigger ones are only
/// counted and checked against the test pattern).
const KEEP_BODY: usize = 1 << 20;

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The head, raw and parsed.
    pub head: Head,
    /// The decoded body (first `KEEP_BODY` bytes).
    pub body: Vec<u8>,
    /// Body length in bytes.
    pub body_len: u64,
    /// Whether the body equals the test pattern (see `pattern`).
    pub body_is_pattern: bool,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
    /// Which accepted connection (0-based) it came on.
    pub conn: usize,
}

impl Recorded {
    /// The request target.
    pub fn target(&self) -> &str {
        self.head.first_line.split(' ').nth(1).unwrap_or_default()
    }
}

/// What the origin answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Status, headers, body; Content-Length is added unless given.
    Full {
        /// Status code.
        status: u16,
        /// Headers.
        headers: Vec<(String, String)>,
        /// Body.
        body: Vec<u8>,
    },
    /// Exactly these bytes (for bodiless statuses and odd heads).
    Raw(Vec<u8>),
    /// 200, chunked, with trailers.
    Chunked {
        /// Extra headers (declare the trailers in `Trailer`).
        headers: Vec<(String, String)>,
        /// The chunks.
        chunks: Vec<Vec<u8>>,
        /// Trailer fields.
        trailers: Vec<(String, String)>,
    },
    /// 200 with `len` bytes of the test pattern, streamed.
    Pattern(u64),
    /// 101 Switching Protocols, then every byte received is echoed.
    Upgrade,
    /// 200, chunked, one chunk every `gap` (a slow stream, like SSE).
    Trickle {
        /// The chunks.
        chunks: Vec<Vec<u8>>,
        /// Pause before each chunk after the first.
        gap: Duration,
    },
    /// Waits, then answers.
    Delay(Duration, Box<Reply>),
    /// Answers, waits, then closes the connection without saying so in a
    /// header (and without reading what came meanwhile).
    ThenClose(Duration, Box<Reply>),
    /// Closes the connection without answering.
    Close,
}

impl Reply {
    /// 200 with a text body.
    pub fn ok(body: &str) -> Reply {
        Reply::Full {
            status: 200,
            headers: vec![("Content-Type".into(), "text/plain".into())],
            body: body.as_bytes().to_vec(),
        }
    }
}

type Handler = dyn Fn(&Recorded) -> Reply + Send + Sync;

/// A running recording origin.
pub struct Origin {
    /// Where it listens.
    pub addr: SocketAddr,
    records: Arc<Mutex<Vec<Recorded>>>,
    arrived: Arc<Notify>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Origin {
    /// Starts an origin on 127.0.0.1:0 that answers `handler`.
    pub async fn start(handler: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Origin {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind origin");
        let addr = listener.local_addr().expect("origin address");
        let records = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let connections = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let task = tokio::spawn({
            let (records, arrived, connections) =
                (records.clone(), arrived.clone(), connections.clone());
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let n = connections.fetch_add(1, Ordering::SeqCst);
                    let (records, arrived, handler) =
                        (records.clone(), arrived.clone(), handler.clone());
                    tokio::spawn(async move {
                        let _ = serve(stream, n, records, arrived, handler).await;
                    });
                }
            }
        });
        Origin {
            addr,
            records,
            arrived,
            connections,
            task,
        }
    }

    /// An origin that answers 200 "ok" to everything.
    pub async fn ok() -> Origin {
        Origin::start(|_| Reply::ok("ok")).await
    }

    /// Takes the requests recorded so far.
    pub fn take(&self) -> Vec<Recorded> {
        std::mem::take(&mut *self.records.lock().unwrap())
    }

    /// How many requests were recorded (and not taken).
    pub fn count(&self) -> usize {
        self.records.lock().unwrap().len()
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Waits (at most 10 s) until `n` requests are recorded, then takes them.
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let notified = self.arrived.notified();
            if self.count() >= n {
                return self.take();
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("origin: waited 10 s for {n} requests, got {}", self.count());
            }
        }
    }
}

async fn serve(
    stream: TcpStream,
    conn_no: usize,
    records: Arc<Mutex<Vec<Recorded>>>,
    arrived: Arc<Notify>,
    handler: Arc<Handler>,
) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut conn = Conn::new(stream);
    while let Some(head) = conn.read_head().await? {
        let mut body = Vec::new();
        let mut body_len = 0u64;
        let mut body_is_pattern = true;
        let mut sink = |b: &[u8]| {
            body_is_pattern &= pattern::check(body_len, b);
            body_len += b.len() as u64;
            let room = KEEP_BODY.saturating_sub(body.len());
            body.extend_from_slice(&b[..b.len().min(room)]);
        };
        let mut trailers = Vec::new();
        let expects = head
            .get("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        if expects {
            conn.send(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        if head.chunked() {
            trailers = conn.read_chunked(&mut sink).await?;
        } else if let Some(n) = head.content_length() {
            conn.read_n(n, &mut sink).await?;
        }
        let closing = head
            .get_all("connection")
            .iter()
            .any(|v| v.eq_ignore_ascii_case("close"));
        let rec = Recorded {
            head,
            body,
            body_len,
            body_is_pattern,
            trailers,
            conn: conn_no,
        };
        let mut reply = handler(&rec);
        records.lock().unwrap().push(rec);
        arrived.notify_waiters();
        let mut closing = closing.then_some(Duration::ZERO);
        loop {
            match reply {
                Reply::Delay(d, next) => {
                    tokio::time::sleep(d).await;
                    reply = *next;
                }
                Reply::ThenClose(wait, next) => {
                    closing = Some(wait);
                    reply = *next;
                }
                _ => break,
            }
        }
        match reply {
            Reply::Close => return Ok(()),
            Reply::Upgrade => {
                conn.send(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                    .await?;
                let early = conn.take_buffered();
                conn.send(&early).await?;
                let (mut r, mut w) = tokio::io::split(conn.io);
                tokio::io::copy(&mut r, &mut w).await?;
                return Ok(());
            }
            other => write_reply(&mut conn, other).await?,
        }
        if let Some(wait) = closing {
            tokio::time::sleep(wait).await;
            return Ok(());
        }
    }
    Ok(())
}

async fn write_reply(conn: &mut Conn<TcpStream>, reply: Reply) -> std::io::Result<()> {
    let mut out = BufWriter::new(&mut conn.io);
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
            for (n, v) in &headers {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
            if !headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            {
                head.push_str(&format!("Content-Length: {}\r\n", body.len()));
            }
            head.push_str("\r\n");
            out.write_all(head.as_bytes()).await?;
            out.write_all(&body).await?;
        }
        Reply::Raw(bytes) => out.write_all(&bytes).await?,
        Reply::Chunked {
            headers,
            chunks,
            trailers,
        } => {
            let mut head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n".to_string();
            for (n, v) in &headers {
                head.push_str(&format!("{n}: {v}\r\n"));
            }
            head.push_str("\r\n");
            out.write_all(head.as_bytes()).await?;
            for c in chunks {
                out.write_all(format!("{:x}\r\n", c.len()).as_bytes())
                    .await?;
                out.write_all(&c).await?;
                out.write_all(b"\r\n").await?;
                // one TCP segment per chunk, like a streaming origin
                out.flush().await?;
            }
            out.write_all(b"0\r\n").await?;
            for (n, v) in &trailers {
                out.write_all(format!("{n}: {v}\r\n").as_bytes()).await?;
            }
            out.write_all(b"\r\n").await?;
        }
        Reply::Pattern(len) => {
            out.write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").as_bytes())
                .await?;
            let mut buf = vec![0u8; 256 * 1024];
            let mut sent = 0u64;
            while sent < len {
                let n = (len - sent).min(buf.len() as u64) as usize;
                pattern::fill(sent, &mut buf[..n]);
                out.write_all(&buf[..n]).await?;
                sent += n as u64;
            }
        }
        Reply::Trickle { chunks, gap } => {
            out.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                .await?;
            for (i, c) in chunks.iter().enumerate() {
                if i > 0 {
                    out.flush().await?;
                    tokio::time::sleep(gap).await;
                }
                out.write_all(format!("{:x}\r\n", c.len()).as_bytes())
                    .await?;
                out.write_all(c).await?;
                out.write_all(b"\r\n").await?;
            }
            out.write_all(b"0\r\n\r\n").await?;
        }
        Reply::Upgrade | Reply::Delay(..) | Reply::ThenClose(..) | Reply::Close => {
            unreachable!("handled by the caller")
        }
    }
    out.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        404 => "Not Found",
        _ => "Whatever",
    }
}
