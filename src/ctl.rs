//! `usher ctl`: a tiny blocking HTTP/1.1 client for the admin listener, so
//! on-call can pause, widen or drain the room from a shell without curl and
//! without remembering paths and JSON shapes. Also the default key id of
//! `usher keygen`.
//!
//! It sends one request with `Connection: close`, reads a bounded answer and
//! hands back the status and body; the CLI prints the body and exits
//! non-zero on anything but 2xx.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Largest answer read from the admin listener: status JSON is a few KiB.
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// Time to connect to the admin listener (it is local).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Time to wait for the answer: a reload loads certificates and may build
/// a new origin client.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// What to ask the admin listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `GET /admin/status`.
    Status,
    /// `POST /admin/reload`: re-read the config file.
    Reload,
    /// `POST /admin/pause`: admit nobody new; the line keeps its order.
    Pause,
    /// `POST /admin/resume`: admit again.
    Resume,
    /// `POST /admin/drain`: take this node out of the load balancer
    /// (`/readyz` fails) before a restart or upgrade.
    Drain,
    /// `POST /admin/undrain`: `/readyz` succeeds again.
    Undrain,
    /// `POST /admin/room {"reset": true}`: drop every live change; the
    /// config file's values apply again.
    Reset,
    /// `POST /admin/room {"new_users_per_minute": N}`.
    SetRate(u64),
    /// `POST /admin/room {"max_active_users": N}`.
    SetCapacity(u64),
    /// `POST /admin/room {"message": TEXT}`.
    SetMessage(String),
    /// `POST /admin/room {"mode": MODE}` (`fifo`, `random`, `passthrough`,
    /// `closed`, `paused`).
    SetMode(String),
}

impl Action {
    /// Method, path and JSON body of the request for this action.
    pub fn request(&self) -> (&'static str, &'static str, Option<serde_json::Value>) {
        use serde_json::json;
        match self {
            Action::Status => ("GET", "/admin/status", None),
            Action::Reload => ("POST", "/admin/reload", None),
            Action::Pause => ("POST", "/admin/pause", None),
            Action::Resume => ("POST", "/admin/resume", None),
            Action::Drain => ("POST", "/admin/drain", None),
            Action::Undrain => ("POST", "/admin/undrain", None),
            Action::Reset => ("POST", "/admin/room", Some(json!({ "reset": true }))),
            Action::SetRate(n) => (
                "POST",
                "/admin/room",
                Some(json!({ "new_users_per_minute": n })),
            ),
            Action::SetCapacity(n) => (
                "POST",
                "/admin/room",
                Some(json!({ "max_active_users": n })),
            ),
            Action::SetMessage(m) => ("POST", "/admin/room", Some(json!({ "message": m }))),
            Action::SetMode(m) => ("POST", "/admin/room", Some(json!({ "mode": m }))),
        }
    }
}

/// Why the admin listener gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The address does not resolve.
    #[error("cannot resolve the admin address {0:?}")]
    Resolve(String),
    /// Connecting, writing or reading failed.
    #[error("admin listener at {addr}: {source}")]
    Io {
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The answer is not HTTP/1.x as expected.
    #[error("admin listener sent a malformed answer: {0}")]
    Malformed(&'static str),
    /// The answer is larger than [`MAX_REPLY_BYTES`].
    #[error("admin listener's answer is larger than 1 MiB")]
    TooLarge,
}

/// The admin listener's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Body, decoded from chunked transfer coding when needed.
    pub body: String,
}

impl Reply {
    /// True for 2xx.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body for a terminal: pretty JSON when it is JSON, else as sent.
    pub fn pretty(&self) -> String {
        match serde_json::from_str::<serde_json::Value>(&self.body) {
            Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_else(|_| self.body.clone()),
            Err(_) => self.body.trim_end().to_string(),
        }
    }
}

/// Sends `action` to the admin listener at `admin` (`host:port`).
pub fn call(admin: &str, action: &Action) -> Result<Reply, CtlError> {
    let addrs: Vec<SocketAddr> = admin
        .to_socket_addrs()
        .map_err(|_| CtlError::Resolve(admin.to_string()))?
        .collect();
    let io = |source| CtlError::Io {
        addr: admin.to_string(),
        source,
    };
    let mut last = None;
    let mut stream = None;
    for a in &addrs {
        match TcpStream::connect_timeout(a, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    let mut stream = match (stream, last) {
        (Some(s), _) => s,
        (None, Some(e)) => return Err(io(e)),
        (None, None) => return Err(CtlError::Resolve(admin.to_string())),
    };
    stream.set_read_timeout(Some(READ_TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(READ_TIMEOUT)).map_err(io)?;
    stream
        .write_all(&encode_request(admin, action))
        .map_err(io)?;
    let mut raw = Vec::new();
    (&mut stream)
        .take(MAX_REPLY_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .map_err(io)?;
    if raw.len() > MAX_REPLY_BYTES {
        return Err(CtlError::TooLarge);
    }
    parse_reply(&raw)
}

/// The request bytes for `action`, addressed to `host`.
pub fn encode_request(host: &str, action: &Action) -> Vec<u8> {
    let (method, path, body) = action.request();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: usher-ctl/{}\r\n\
         Accept: application/json\r\nConnection: close\r\nContent-Length: {}\r\n",
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    if !body.is_empty() {
        out.push_str("Content-Type: application/json\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// Parses a complete HTTP/1.x answer (read until the server closed).
pub fn parse_reply(raw: &[u8]) -> Result<Reply, CtlError> {
    let end =
        memchr::memmem::find(raw, b"\r\n\r\n").ok_or(CtlError::Malformed("no end of head"))?;
    let head =
        std::str::from_utf8(&raw[..end]).map_err(|_| CtlError::Malformed("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    if !parts.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(CtlError::Malformed("not an HTTP/1 status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or(CtlError::Malformed("bad status code"))?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or(CtlError::Malformed("header without colon"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().ends_with("chunked");
        } else if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| CtlError::Malformed("bad content-length"))?,
            );
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or(CtlError::Malformed("body shorter than content-length"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Reply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, CtlError> {
    let mut out = Vec::new();
    loop {
        let eol = memchr::memmem::find(rest, b"\r\n").ok_or(CtlError::Malformed("chunk size"))?;
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .map(|s| s.split(';').next().unwrap_or_default().trim())
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or(CtlError::Malformed("chunk size"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = rest
            .get(..size)
            .ok_or(CtlError::Malformed("truncated chunk"))?;
        out.extend_from_slice(chunk);
        rest = rest
            .get(size..)
            .and_then(|r| r.strip_prefix(b"\r\n"))
            .ok_or(CtlError::Malformed("chunk not followed by CRLF"))?;
    }
}

/// A key id for a key generated at `unix_secs`: `k` and the UTC date
/// (`k20250301`), so ids sort by age and say when a key was made.
pub fn default_kid(unix_secs: u64) -> String {
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = (unix_secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("k{year:04}{month:02}{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn room_settings_are_json_posts() {
        let req =
            String::from_utf8(encode_request("127.0.0.1:9090", &Action::SetRate(600))).unwrap();
        assert!(req.starts_with("POST /admin/room HTTP/1.1\r\nHost: 127.0.0.1:9090\r\n"));
        assert!(req.contains("Content-Type: application/json\r\n"));
        assert!(req.ends_with("\r\n\r\n{\"new_users_per_minute\":600}"));
        assert!(req.contains("Content-Length: 28\r\n"));
        let (_, _, body) = Action::SetMessage("Sold \"out\"".into()).request();
        assert_eq!(body.unwrap()["message"], "Sold \"out\"");
        assert_eq!(
            Action::Reset.request().2.unwrap(),
            serde_json::json!({"reset": true})
        );
        assert_eq!(
            Action::SetMode("closed".into()).request().2.unwrap()["mode"],
            "closed"
        );
        assert_eq!(Action::Undrain.request().1, "/admin/undrain");
        let (m, p, body) = Action::SetCapacity(5000).request();
        assert_eq!((m, p), ("POST", "/admin/room"));
        assert_eq!(body.unwrap(), serde_json::json!({"max_active_users": 5000}));
        let get = String::from_utf8(encode_request("h", &Action::Status)).unwrap();
        assert!(
            get.starts_with("GET /admin/status ") && get.ends_with("Content-Length: 0\r\n\r\n")
        );
    }

    #[test]
    fn replies_parse_with_length_chunked_or_close() {
        let r = parse_reply(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}trailing").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "{}"));
        let r = parse_reply(
            b"HTTP/1.1 422 Unprocessable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str(), r.ok()), (422, "abcde", false));
        let r = parse_reply(b"HTTP/1.0 204 No Content\r\n\r\n").unwrap();
        assert!(r.ok() && r.body.is_empty());
    }

    #[test]
    fn malformed_replies_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"HTTP/1.1 200 OK\r\n",
            b"SSH-2.0-OpenSSH\r\n\r\n",
            b"HTTP/1.1 abc OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nff\r\nshort",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(
                parse_reply(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn call_talks_over_a_real_socket() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = server.accept().unwrap();
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.ends_with(b"{\"message\":\"hi\"}") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0, "client closed early");
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 10\r\n\r\nnot found\n")
                .unwrap();
            String::from_utf8(got).unwrap()
        });
        let r = call(&addr, &Action::SetMessage("hi".into())).unwrap();
        assert_eq!((r.status, r.pretty().as_str()), (404, "not found"));
        assert!(handle.join().unwrap().starts_with("POST /admin/room "));
    }

    #[test]
    fn call_to_a_closed_port_is_an_io_error() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert!(matches!(
            call(&port.to_string(), &Action::Status),
            Err(CtlError::Io { .. })
        ));
        assert!(matches!(
            call("not an address", &Action::Status),
            Err(CtlError::Resolve(_))
        ));
    }

    #[test]
    fn default_kid_is_the_utc_date() {
        assert_eq!(default_kid(0), "k19700101");
        assert_eq!(default_kid(951_782_400), "k20000229");
        assert_eq!(default_kid(1_735_689_599), "k20241231");
        assert_eq!(default_kid(1_735_689_600), "k20250101");
        assert!(crate::tokens::Keyring::generate_line(&default_kid(1_735_689_600)).is_ok());
    }
}
