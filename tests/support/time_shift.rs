//! A test double for the clock-skew test only: a TCP proxy on 127.0.0.1
//! in front of a real redis-server that passes every command and answer
//! through unchanged, except the answer to `TIME`, whose seconds it shifts.
//! Nothing real can move Redis's clock (or usher's) by 30 s inside a test,
//! and a test-only clock offset in usher would ship in the binary; this
//! keeps usher unchanged and its Redis real for everything else.
//!
//! It reads RESP frames in both directions (a request per command, one
//! answer each, in order on a connection), so it knows which answer is
//! TIME's.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The proxy; it runs until the test's runtime ends.
pub struct TimeShift {
    pub port: u16,
}

impl TimeShift {
    /// Listens on a free port and forwards to `127.0.0.1:redis_port`,
    /// answering `TIME` `shift_secs` later (earlier if negative) than Redis.
    pub async fn start(redis_port: u16, shift_secs: i64) -> TimeShift {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", redis_port)).await {
                        relay(client, server, shift_secs).await;
                    }
                });
            }
        });
        TimeShift { port }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

async fn relay(client: TcpStream, server: TcpStream, shift: i64) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    // one flag per command sent, in order: whether it was TIME
    let asked: Arc<Mutex<VecDeque<bool>>> = Arc::default();
    let asked2 = asked.clone();
    let up = async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = match cr.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            // flags before the bytes leave: an answer cannot come earlier
            while let Some(len) = frame_len(&buf) {
                asked2.lock().unwrap().push_back(is_time(&buf[..len]));
                buf.drain(..len);
            }
            if sw.write_all(&chunk[..n]).await.is_err() {
                return;
            }
        }
    };
    let down = async move {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = match sr.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
            let mut out = Vec::new();
            while let Some(len) = frame_len(&buf) {
                let frame: Vec<u8> = buf.drain(..len).collect();
                let time = asked.lock().unwrap().pop_front().unwrap_or(false);
                out.extend(if time { shifted(&frame, shift) } else { frame });
            }
            if cw.write_all(&out).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(up, down);
}

/// The length of the complete RESP (2 or 3) frame at the start of `b`, if it is all there.
pub fn frame_len(b: &[u8]) -> Option<usize> {
    let line_end = b.windows(2).position(|w| w == b"\r\n")?;
    let head = std::str::from_utf8(&b[1..line_end]).ok()?;
    let after = line_end + 2;
    match *b.first()? {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Some(after),
        b'$' | b'=' | b'!' => {
            let n: i64 = head.parse().ok()?;
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (b.len() >= end).then_some(end)
        }
        kind @ (b'*' | b'~' | b'>' | b'%' | b'|') => {
            let n: i64 = head.parse().ok()?;
            let n = if matches!(kind, b'%' | b'|') {
                2 * n
            } else {
                n
            };
            let mut at = after;
            for _ in 0..n.max(0) {
                at += frame_len(&b[at..])?;
            }
            Some(at)
        }
        _ => None,
    }
}

/// Whether a request frame is the `TIME` command.
pub fn is_time(frame: &[u8]) -> bool {
    frame.eq_ignore_ascii_case(b"*1\r\n$4\r\nTIME\r\n")
}

/// TIME's answer (`*2 $secs $micros`) with the seconds moved by `shift`.
pub fn shifted(frame: &[u8], shift: i64) -> Vec<u8> {
    let text = String::from_utf8_lossy(frame);
    let parts: Vec<&str> = text.split("\r\n").collect();
    // ["*2", "$10", SECS, "$6", MICROS, ""]
    let (Some(secs), Some(micros)) = (
        parts.get(2).and_then(|s| s.parse::<i64>().ok()),
        parts.get(4),
    ) else {
        return frame.to_vec();
    };
    let secs = (secs + shift).to_string();
    format!(
        "*2\r\n${}\r\n{secs}\r\n${}\r\n{micros}\r\n",
        secs.len(),
        micros.len()
    )
    .into_bytes()
}
