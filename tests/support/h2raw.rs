//! A raw HTTP/2 client for attack tests: frames built by hand (RFC 9113 §4)
//! and header blocks made of HPACK literals (RFC 7541 §6.2), so a test can
//! send what no well-behaved client library would.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// One frame as read back.
#[derive(Debug, Clone)]
pub struct Frame {
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

impl Frame {
    /// The error code of a RST_STREAM or GOAWAY.
    pub fn error_code(&self) -> Option<u32> {
        let at = match self.kind {
            RST_STREAM => 0,
            GOAWAY => 4,
            _ => return None,
        };
        let b = self.payload.get(at..at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// The `:status` of a response HEADERS frame when the server used a
    /// static-table entry for it (RFC 7541 Appendix A), as h2 does for the
    /// common codes.
    pub fn static_status(&self) -> Option<u16> {
        if self.kind != HEADERS {
            return None;
        }
        Some(match self.payload.first()? {
            0x88 => 200,
            0x89 => 204,
            0x8a => 206,
            0x8b => 304,
            0x8c => 400,
            0x8d => 404,
            0x8e => 500,
            _ => return None,
        })
    }
}

/// Encodes one frame.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.push(kind);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn integer(out: &mut Vec<u8>, first: u8, n: u8, mut value: usize) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(first | value as u8);
        return;
    }
    out.push(first | max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

/// A literal header field without indexing, new name (RFC 7541 §6.2.2):
/// the bytes go on the wire exactly as given.
pub fn literal(name: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.push(0x00);
    integer(&mut out, 0, 7, name.len());
    out.extend_from_slice(name);
    integer(&mut out, 0, 7, value.len());
    out.extend_from_slice(value);
    out
}

/// A header block for `method path` with `:scheme http` and
/// `:authority a`, followed by `extra` literal fields.
pub fn request_block(method: &str, path: &str, extra: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(literal(b":method", method.as_bytes()));
    b.extend(literal(b":scheme", b"http"));
    b.extend(literal(b":path", path.as_bytes()));
    b.extend(literal(b":authority", b"a"));
    for (n, v) in extra {
        b.extend(literal(n, v));
    }
    b
}

/// A raw HTTP/2 connection.
pub struct H2Raw {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl H2Raw {
    /// Connects and sends the preface and an empty SETTINGS frame.
    pub async fn connect(addr: SocketAddr) -> H2Raw {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut hello = PREFACE.to_vec();
        hello.extend(frame(SETTINGS, 0, 0, &[]));
        stream.write_all(&hello).await.unwrap();
        H2Raw {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes raw bytes; false when the server has closed the connection.
    pub async fn send(&mut self, bytes: &[u8]) -> bool {
        self.stream.write_all(bytes).await.is_ok()
    }

    /// The next frame, or `None` on close or after `wait`.
    pub async fn read_frame(&mut self, wait: Duration) -> Option<Frame> {
        let deadline = Instant::now() + wait;
        loop {
            if self.buf.len() >= 9 {
                let len = u32::from_be_bytes([0, self.buf[0], self.buf[1], self.buf[2]]) as usize;
                if self.buf.len() >= 9 + len {
                    let f = Frame {
                        kind: self.buf[3],
                        flags: self.buf[4],
                        stream: u32::from_be_bytes([
                            self.buf[5],
                            self.buf[6],
                            self.buf[7],
                            self.buf[8],
                        ]) & 0x7fff_ffff,
                        payload: self.buf[9..9 + len].to_vec(),
                    };
                    self.buf.drain(..9 + len);
                    return Some(f);
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let mut chunk = [0u8; 16384];
            match tokio::time::timeout(left, self.stream.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => self.buf.extend_from_slice(&chunk[..n]),
                _ => return None,
            }
        }
    }

    /// Reads frames until one on `stream` (HEADERS or RST_STREAM) or a
    /// GOAWAY arrives; `None` on close or after `wait`.
    pub async fn answer_for(&mut self, stream: u32, wait: Duration) -> Option<Frame> {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let f = self.read_frame(left).await?;
            if f.kind == GOAWAY || (f.stream == stream && matches!(f.kind, HEADERS | RST_STREAM)) {
                return Some(f);
            }
            if f.kind == SETTINGS && f.flags & 1 == 0 {
                let _ = self.send(&frame(SETTINGS, 1, 0, &[])).await;
            }
        }
    }

    /// Reads everything until the server closes or `wait` passes; returns
    /// the frames read and whether the connection was closed.
    pub async fn drain(&mut self, wait: Duration) -> (Vec<Frame>, bool) {
        let deadline = Instant::now() + wait;
        let mut frames = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return (frames, false);
            }
            match self.read_frame(left).await {
                Some(f) => frames.push(f),
                None => return (frames, Instant::now() < deadline),
            }
        }
    }
}
