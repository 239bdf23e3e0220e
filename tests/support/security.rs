//! Shared pieces of the security and fault tests: an in-process usher
//! started from a config string, a raw-TCP origin that records every
//! request it receives, and raw-socket exchanges with exact bytes.

pub use super::{h2raw, tls};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The in-process usher of every test (`start`, `stop`).
pub use super::inproc::Usher;

/// The config of a plain proxy in front of `origin`, plus `extra` TOML
/// appended (e.g. a `[room]` section).
pub fn config(origin: SocketAddr, server_extra: &str, extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
admin = ""
{server_extra}
[origin]
url = "http://{origin}"
response_timeout = "5s"
{extra}
"#
    )
}

/// A `[room]` that forwards everything it governs (passthrough, high limits).
pub const PASSTHROUGH_ROOM: &str = r#"
[room]
mode = "passthrough"
max_active_users = 1000000
[room.limits]
tickets_per_minute_per_ip = 1000000
requests_per_second_per_ip = 0
"#;

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub head: String,
    pub body: Vec<u8>,
}

/// An origin speaking raw HTTP/1.1 that records every request head (and
/// body) it receives and answers each with `200 origin`.
pub struct Recorder {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(record(stream, log.clone()));
            }
        });
        Recorder { addr, seen }
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// The request lines received so far.
    pub fn lines(&self) -> Vec<String> {
        self.seen()
            .iter()
            .map(|s| s.head.lines().next().unwrap_or_default().to_string())
            .collect()
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads requests off one origin connection; stops on anything it cannot
/// frame (usher only ever sends Content-Length or chunked bodies).
async fn record(mut stream: TcpStream, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        // a complete head?
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let lower = head.to_ascii_lowercase();
            let mut at = end + 4;
            let body = if lower.contains("\r\ntransfer-encoding: chunked") {
                let mut body = Vec::new();
                loop {
                    let Some(eol) = find(&buf[at..], b"\r\n") else {
                        break None;
                    };
                    let size_text = String::from_utf8_lossy(&buf[at..at + eol]).into_owned();
                    let size =
                        usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16)
                            .unwrap_or(0);
                    let data = at + eol + 2;
                    if size == 0 {
                        // no trailers from usher's client: CRLF ends it
                        if buf.len() < data + 2 {
                            break None;
                        }
                        at = data + 2;
                        break Some(body);
                    }
                    if buf.len() < data + size + 2 {
                        break None;
                    }
                    body.extend_from_slice(&buf[data..data + size]);
                    at = data + size + 2;
                }
            } else {
                let len = lower
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                (buf.len() >= at + len).then(|| {
                    let b = buf[at..at + len].to_vec();
                    at += len;
                    b
                })
            };
            let Some(body) = body else { break };
            log.lock().unwrap().push(Seen { head, body });
            buf.drain(..at);
            let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\nx-origin: recorder\r\n\r\norigin";
            if stream.write_all(reply).await.is_err() {
                return;
            }
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// What came back on a raw connection.
#[derive(Debug)]
pub struct Reply {
    pub bytes: Vec<u8>,
    /// The server closed (or reset) the connection within the wait.
    pub closed: bool,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Status codes of the responses, in order.
    pub fn statuses(&self) -> Vec<u16> {
        let text = self.text();
        let mut out = Vec::new();
        let mut rest = text.as_str();
        while let Some(i) = rest.find("HTTP/1.") {
            let line = &rest[i..];
            if let Some(code) = line.get(9..12).and_then(|c| c.parse().ok()) {
                out.push(code);
            }
            rest = &rest[i + 8..];
        }
        out
    }
}

/// Writes `bytes` on a new connection to `addr`, then reads until the
/// server closes or `wait` passes.
pub async fn exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Reply {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // A server that refuses early may reset before the last bytes are written.
    let _ = s.write_all(bytes).await;
    read_until_close(&mut s, wait).await
}

/// A connection from a chosen loopback source address (any of 127/8), so
/// one test can look like many clients.
pub async fn connect_from(src: std::net::IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(SocketAddr::new(src, 0))?;
    sock.connect(addr).await
}

/// Reads until EOF, reset or `wait`.
pub async fn read_until_close(s: &mut TcpStream, wait: Duration) -> Reply {
    let deadline = Instant::now() + wait;
    let mut bytes = Vec::new();
    let mut buf = [0u8; 16384];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return Reply {
                    bytes,
                    closed: true,
                }
            }
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Err(_) => {
                return Reply {
                    bytes,
                    closed: false,
                }
            }
        }
    }
}

/// A liveness probe: a plain GET on a fresh connection must be answered
/// within `bound`. Returns its status.
pub async fn probe(addr: SocketAddr, bound: Duration) -> u16 {
    let started = Instant::now();
    let reply = tokio::time::timeout(
        bound,
        exchange(
            addr,
            b"GET /probe HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n",
            bound,
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("probe not answered within {bound:?}"));
    let status = reply.statuses().first().copied();
    assert!(
        started.elapsed() < bound,
        "probe took {:?}",
        started.elapsed()
    );
    status.unwrap_or_else(|| panic!("probe got no answer: {:?}", reply.text()))
}
