//! The PROXY protocol (v1 text, v2 binary) on the listeners named in
//! `[server.proxy_protocol]`: an L4 balancer (AWS NLB, HAProxy in TCP mode)
//! states the visitor's address in a header before the first byte of HTTP
//! or TLS. Only peers in `server.proxy_protocol.from` may send it; anyone
//! else on such a listener is refused, and so is a connection whose header
//! is missing, malformed or late.
//!
//! The header is framed here (v1: up to CRLF within 107 bytes; v2: 16 bytes
//! and the length they carry) from peeked bytes, and exactly that many bytes
//! are then read, so what follows (a TLS ClientHello, an HTTP head) stays in
//! the socket for the next layer as if no header had been there. The fields
//! are decoded by the `proxy-header` crate; v2 TLVs are skipped unread.
//! Listeners without PROXY protocol never come here.

use std::net::SocketAddr;
use std::time::Duration;

use proxy_header::{ParseConfig, Protocol, ProxyHeader};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::logging::Throttle;
use crate::net::canonical;

/// Longest v1 header, CRLF included (the specification's own bound).
pub const V1_MAX: usize = 107;
/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Longest v2 header accepted, TLVs included. The format allows 64 KiB;
/// balancers send well under 1 KiB (addresses plus a few TLVs), and HAProxy
/// itself refuses headers over its 16 KiB buffer.
pub const V2_MAX: usize = 16 * 1024;

/// What the bytes at the start of a connection amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// A prefix of a header: at least this many bytes are needed in all.
    Incomplete(usize),
    /// Not a PROXY header, or one usher does not accept.
    Invalid,
    /// A complete header of `len` bytes.
    Header {
        /// Its length: the connection's own bytes start after it.
        len: usize,
        /// The visitor's address; `None` when the connection keeps its
        /// socket peer (v1 `UNKNOWN`, v2 `LOCAL`, `AF_UNSPEC`, `AF_UNIX` or
        /// a datagram family).
        source: Option<SocketAddr>,
    },
}

/// Frames and decodes the header at the start of `buf`. Bytes after the
/// header are never looked at, so the answer for a complete header does
/// not change when more bytes arrive.
pub fn parse(buf: &[u8]) -> Frame {
    match buf.first() {
        None => Frame::Incomplete(1),
        Some(b'P') => v1(buf),
        Some(b'\r') => v2(buf),
        Some(_) => Frame::Invalid,
    }
}

fn v1(buf: &[u8]) -> Frame {
    const PREFIX: &[u8] = b"PROXY ";
    let head = &buf[..buf.len().min(PREFIX.len())];
    if !PREFIX.starts_with(head) {
        return Frame::Invalid;
    }
    let scan = &buf[..buf.len().min(V1_MAX)];
    let Some(cr) = scan.iter().position(|&b| b == b'\r') else {
        // Only printable ASCII may stand before the CRLF.
        if scan.iter().any(|&b| !(0x20..0x7f).contains(&b)) {
            return Frame::Invalid;
        }
        return if scan.len() >= V1_MAX {
            Frame::Invalid
        } else {
            Frame::Incomplete(scan.len() + 1)
        };
    };
    if scan[..cr].iter().any(|&b| !(0x20..0x7f).contains(&b)) {
        return Frame::Invalid;
    }
    match scan.get(cr + 1) {
        None if cr + 1 < V1_MAX => return Frame::Incomplete(cr + 2),
        Some(b'\n') => {}
        _ => return Frame::Invalid,
    }
    let len = cr + 2;
    decode(&buf[..len], len, true)
}

fn v2(buf: &[u8]) -> Frame {
    let head = &buf[..buf.len().min(V2_SIGNATURE.len())];
    if !V2_SIGNATURE.starts_with(head) {
        return Frame::Invalid;
    }
    if buf.len() < 16 {
        return Frame::Incomplete(16);
    }
    // Version 2; command LOCAL (0) or PROXY (1).
    if buf[12] >> 4 != 2 || buf[12] & 0x0f > 1 {
        return Frame::Invalid;
    }
    let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX {
        return Frame::Invalid;
    }
    if buf.len() < len {
        return Frame::Incomplete(len);
    }
    decode(&buf[..len], len, false)
}

/// Decodes exactly one framed header.
fn decode(header: &[u8], len: usize, text: bool) -> Frame {
    let config = ParseConfig {
        include_tlvs: false,
        allow_v1: text,
        allow_v2: !text,
    };
    match ProxyHeader::parse(header, config) {
        Ok((h, used)) if used == len => Frame::Header {
            len,
            source: h
                .proxied_address()
                .filter(|a| a.protocol == Protocol::Stream)
                .map(|a| SocketAddr::new(canonical(a.source.ip()), a.source.port())),
        },
        _ => Frame::Invalid,
    }
}

/// Why a connection on a PROXY listener was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer is not in `server.proxy_protocol.from`.
    Untrusted,
    /// The first bytes are not a valid header (or the peer left mid-header).
    Invalid,
    /// Part of a header came, not all of it, within `header_read_timeout`.
    Timeout,
    /// Nothing came at all before the peer left or the time ran out: an idle
    /// connection, as on any listener.
    Idle,
}

impl Refusal {
    /// The `reason` label of `usher_connections_refused_total`.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Untrusted => "proxy_untrusted",
            Refusal::Invalid => "proxy_header",
            Refusal::Timeout => "proxy_timeout",
            Refusal::Idle => "idle_before_request",
        }
    }
}

/// Reads the header from `stream`, leaving every byte after it unread.
/// Returns the visitor's address, or `None` to keep the socket peer.
///
/// A balancer writes the header in one piece, so one peek usually holds
/// it all and one read takes it. Otherwise the bytes are read, never more
/// than the header must still hold (what [`Frame::Incomplete`] asks for is
/// a lower bound of its length), so nothing past it is taken, and a peer
/// that leaves mid-header is seen at once.
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<Option<SocketAddr>, Refusal> {
    let mut seen = 0usize;
    let read = async {
        // Enough for any v1 header and a v2 header with addresses and a
        // few TLVs; grown for a longer v2.
        let mut buf = vec![0u8; 256];
        let n = stream.peek(&mut buf).await.map_err(|_| Refusal::Invalid)?;
        if n == 0 {
            return Err(Refusal::Idle);
        }
        seen = n;
        let mut need = match parse(&buf[..n]) {
            Frame::Header { len, source } => {
                stream
                    .read_exact(&mut buf[..len])
                    .await
                    .map_err(|_| Refusal::Invalid)?;
                return Ok(source);
            }
            Frame::Invalid => return Err(Refusal::Invalid),
            Frame::Incomplete(need) => need,
        };
        let mut have = 0;
        loop {
            if need > buf.len() {
                buf.resize(need, 0);
            }
            stream
                .read_exact(&mut buf[have..need])
                .await
                .map_err(|_| Refusal::Invalid)?;
            have = need;
            match parse(&buf[..have]) {
                Frame::Header { len, source } if len == have => return Ok(source),
                Frame::Incomplete(n) if n > have => need = n,
                _ => return Err(Refusal::Invalid),
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r,
        Err(_) if seen == 0 => Err(Refusal::Idle),
        Err(_) => Err(Refusal::Timeout),
    }
}

/// Logs a refused connection, throttled per reason. Idle connections are
/// ordinary (as on any listener) and only counted.
pub fn log_refusal(reason: Refusal, peer: SocketAddr) {
    static THROTTLES: [Throttle; 3] = [Throttle::new(), Throttle::new(), Throttle::new()];
    let i = match reason {
        Refusal::Untrusted => 0,
        Refusal::Invalid => 1,
        Refusal::Timeout => 2,
        Refusal::Idle => return,
    };
    if let Some(quiet) = THROTTLES[i].admit_now() {
        let why = match reason {
            Refusal::Untrusted => "peer not in server.proxy_protocol.from",
            Refusal::Timeout => "PROXY header incomplete within header_read_timeout",
            _ => "no valid PROXY header",
        };
        tracing::warn!(
            peer = %peer,
            reason = reason.label(),
            suppressed = quiet,
            "connection refused on a PROXY protocol listener: {why}"
        );
    }
}

#[cfg(test)]
#[path = "proxy_protocol_tests.rs"]
mod tests;
