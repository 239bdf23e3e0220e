//! A small HTTP/1.1 reader over any byte stream, shared by the recording
//! origin (requests) and the raw test client (responses). It keeps the exact
//! bytes of each head, so tests can compare what crossed the wire.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest head either side accepts; the tests never come close.
const MAX_HEAD: usize = 1 << 20;

/// A parsed message head with its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The bytes as received, up to and including the blank line.
    pub raw: Vec<u8>,
    /// Request line or status line.
    pub first_line: String,
    /// Header fields in the order received, names as sent.
    pub headers: Vec<(String, String)>,
}

impl Head {
    fn parse(raw: Vec<u8>) -> Head {
        let text = String::from_utf8_lossy(&raw).into_owned();
        let mut lines = text.split("\r\n");
        let first_line = lines.next().unwrap_or_default().to_string();
        let headers = lines
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (n.to_string(), v.trim().to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect();
        Head {
            raw,
            first_line,
            headers,
        }
    }

    /// The first value of `name` (case-insensitive).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn get_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Whether the message body is chunked.
    pub fn chunked(&self) -> bool {
        self.get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
    }

    /// The announced Content-Length.
    pub fn content_length(&self) -> Option<u64> {
        self.get("content-length").and_then(|v| v.parse().ok())
    }

    /// The status code of a response head.
    pub fn status(&self) -> u16 {
        self.first_line
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0)
    }

    /// The method of a request head.
    pub fn method(&self) -> &str {
        self.first_line.split(' ').next().unwrap_or_default()
    }
}

/// A byte stream with a read buffer.
pub struct Conn<S> {
    /// The stream.
    pub io: S,
    buf: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Conn<S> {
    /// Wraps `io`.
    pub fn new(io: S) -> Self {
        Conn {
            io,
            buf: Vec::new(),
        }
    }

    /// Bytes read from the stream but not consumed yet.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }

    /// Reads more bytes into the buffer; `false` on EOF.
    async fn fill(&mut self) -> std::io::Result<bool> {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = self.io.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Writes all of `bytes`.
    pub async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.io.write_all(bytes).await?;
        self.io.flush().await
    }

    /// Reads one head; `None` on a clean EOF before any byte of it.
    pub async fn read_head(&mut self) -> std::io::Result<Option<Head>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let raw: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Ok(Some(Head::parse(raw)));
            }
            if self.buf.len() > MAX_HEAD {
                return Err(std::io::Error::other("head too large"));
            }
            if !self.fill().await? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads one CRLF-terminated line (without the CRLF).
    async fn read_line(&mut self) -> std::io::Result<String> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return Ok(String::from_utf8_lossy(&line[..end]).into_owned());
            }
            if self.buf.len() > MAX_HEAD {
                return Err(std::io::Error::other("line too long"));
            }
            if !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
    }

    /// Reads exactly `n` bytes, handing them to `sink` piece by piece.
    pub async fn read_n(
        &mut self,
        mut n: u64,
        sink: &mut impl FnMut(&[u8]),
    ) -> std::io::Result<()> {
        while n > 0 {
            if self.buf.is_empty() && !self.fill().await? {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            let take = (self.buf.len() as u64).min(n) as usize;
            sink(&self.buf[..take]);
            self.buf.drain(..take);
            n -= take as u64;
        }
        Ok(())
    }

    /// Reads a chunked body into `sink`; returns the trailer fields.
    pub async fn read_chunked(
        &mut self,
        sink: &mut impl FnMut(&[u8]),
    ) -> std::io::Result<Vec<(String, String)>> {
        loop {
            let line = self.read_line().await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = u64::from_str_radix(size, 16)
                .map_err(|_| std::io::Error::other(format!("bad chunk size line {line:?}")))?;
            if size == 0 {
                break;
            }
            self.read_n(size, sink).await?;
            if !self.read_line().await?.is_empty() {
                return Err(std::io::Error::other("chunk data not followed by CRLF"));
            }
        }
        let mut trailers = Vec::new();
        loop {
            let line = self.read_line().await?;
            if line.is_empty() {
                return Ok(trailers);
            }
            if let Some((n, v)) = line.split_once(':') {
                trailers.push((n.to_string(), v.trim().to_string()));
            }
        }
    }

    /// Reads until EOF into `sink`.
    pub async fn read_to_end(&mut self, sink: &mut impl FnMut(&[u8])) -> std::io::Result<()> {
        sink(&self.buf);
        self.buf.clear();
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            let n = self.io.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            sink(&chunk[..n]);
        }
    }

    /// Reads one response to a request with `method`, its body in memory.
    pub async fn read_response(&mut self, method: &str) -> std::io::Result<Response> {
        let head = self
            .read_head()
            .await?
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::UnexpectedEof))?;
        let mut body = Vec::new();
        let mut trailers = Vec::new();
        let status = head.status();
        let mut sink = |b: &[u8]| body.extend_from_slice(b);
        if method == "HEAD" || status == 204 || status == 304 || (100..200).contains(&status) {
            // no body
        } else if head.chunked() {
            trailers = self.read_chunked(&mut sink).await?;
        } else if let Some(n) = head.content_length() {
            self.read_n(n, &mut sink).await?;
        } else {
            self.read_to_end(&mut sink).await?;
        }
        Ok(Response {
            head,
            body,
            trailers,
        })
    }

    /// Whether the peer closes the connection within `wait` without sending
    /// anything more (bytes that do come are an error).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut one = [0u8; 1];
        matches!(
            tokio::time::timeout(wait, self.io.read(&mut one)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }
}

/// A response read by the raw client.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status line and headers, raw and parsed.
    pub head: Head,
    /// The decoded body.
    pub body: Vec<u8>,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    /// The status code.
    pub fn status(&self) -> u16 {
        self.head.status()
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
