//! `usher ctl`: a small client for the admin API, so on-call can pause,
//! widen or drain the room from a shell without curl and without
//! remembering paths, JSON shapes and where the token is. Also the default
//! key id of `usher keygen`.
//!
//! [`Options::resolve`] (`resolve.rs`) finds the API and the token. The
//! [`Client`] sends one request over hyper's client connection (TCP or the
//! Unix socket), reads a bounded answer and hands back the status and body;
//! the CLI prints the body and exits non-zero on anything but 2xx.

use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

pub mod cli;
mod resolve;

pub use resolve::{Options, SetupError, TOKEN_ENV};

/// Largest answer read from the admin API: status JSON is a few KiB.
pub const MAX_REPLY_BYTES: usize = 1 << 20;

/// Time to connect to the admin API (it is local).
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
    /// `POST /admin/message {"ko": …, "en": …}`: a language left out keeps
    /// its text.
    Announce {
        /// Korean text.
        ko: Option<String>,
        /// English text.
        en: Option<String>,
    },
    /// `GET /admin/feedback[?limit=N]`: visitors' feedback, newest first.
    Feedback(Option<usize>),
}

impl Action {
    /// Method, path and JSON body of the request for this action.
    pub fn request(&self) -> (&'static str, Cow<'static, str>, Option<serde_json::Value>) {
        let (method, path, body) = self.parts();
        match self {
            Action::Feedback(Some(n)) => (method, format!("{path}?limit={n}").into(), body),
            _ => (method, path.into(), body),
        }
    }

    fn parts(&self) -> (&'static str, &'static str, Option<serde_json::Value>) {
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
            Action::Announce { ko, en } => {
                let mut body = serde_json::Map::new();
                if let Some(t) = ko {
                    body.insert("ko".into(), json!(t));
                }
                if let Some(t) = en {
                    body.insert("en".into(), json!(t));
                }
                ("POST", "/admin/message", Some(body.into()))
            }
            Action::Feedback(_) => ("GET", "/admin/feedback", None),
        }
    }
}

/// Where the admin API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host:port` of the admin listener.
    Tcp(String),
    /// The admin socket.
    Unix(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Tcp(a) => write!(f, "{a}"),
            Target::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Where to ask and with what token.
#[derive(Debug, Clone)]
pub struct Client {
    /// The admin API.
    pub target: Target,
    /// The bearer token, when one was found.
    pub token: Option<String>,
}

/// Why the admin API gave no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// The address does not resolve.
    #[error("cannot resolve the admin address {0:?}")]
    Resolve(String),
    /// Connecting, writing or reading failed.
    #[error("admin API at {addr}: {source}")]
    Io {
        /// Where.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The answer is not HTTP/1.x as expected.
    #[error("admin API sent a malformed answer: {0}")]
    Malformed(String),
    /// The answer is larger than [`MAX_REPLY_BYTES`].
    #[error("admin API's answer is larger than 1 MiB")]
    TooLarge,
}

/// The admin API's answer.
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

impl Client {
    /// Sends `action` and waits (at most 30 s) for the answer.
    pub fn call(&self, action: &Action) -> Result<Reply, CtlError> {
        let io = |source| CtlError::Io {
            addr: self.target.to_string(),
            source,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(io)?;
        rt.block_on(async {
            tokio::time::timeout(READ_TIMEOUT, self.exchange(action))
                .await
                .map_err(|_| io(std::io::ErrorKind::TimedOut.into()))?
        })
    }

    async fn exchange(&self, action: &Action) -> Result<Reply, CtlError> {
        let io = |source| CtlError::Io {
            addr: self.target.to_string(),
            source,
        };
        let connect_timeout = || io(std::io::ErrorKind::TimedOut.into());
        match &self.target {
            Target::Tcp(admin) => {
                let addrs: Vec<_> = tokio::net::lookup_host(admin.as_str())
                    .await
                    .map_err(|_| CtlError::Resolve(admin.clone()))?
                    .collect();
                let mut last = None;
                for a in addrs {
                    match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(a))
                        .await
                    {
                        Ok(Ok(s)) => return self.send(s, admin, action).await,
                        Ok(Err(e)) => last = Some(io(e)),
                        Err(_) => last = Some(connect_timeout()),
                    }
                }
                Err(last.unwrap_or_else(|| CtlError::Resolve(admin.clone())))
            }
            Target::Unix(path) => {
                let s =
                    tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(path))
                        .await
                        .map_err(|_| connect_timeout())?
                        .map_err(io)?;
                self.send(s, "localhost", action).await
            }
        }
    }

    async fn send<S>(&self, stream: S, host: &str, action: &Action) -> Result<Reply, CtlError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let malformed = |e: hyper::Error| CtlError::Malformed(e.to_string());
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(malformed)?;
        tokio::spawn(conn);
        let req = request(host, self.token.as_deref(), action)
            .map_err(|e| CtlError::Malformed(format!("building the request: {e}")))?;
        let resp = sender.send_request(req).await.map_err(malformed)?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_REPLY_BYTES)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    CtlError::TooLarge
                } else {
                    CtlError::Malformed(e.to_string())
                }
            })?
            .to_bytes();
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }
}

/// The request for `action`, addressed to `host`, with the token if any.
/// Every POST says `Content-Type: application/json` (the API refuses any other).
pub fn request(
    host: &str,
    token: Option<&str>,
    action: &Action,
) -> Result<Request<Full<Bytes>>, http::Error> {
    let (method, path, body) = action.request();
    let mut b = Request::builder()
        .method(method)
        .uri(path.as_ref())
        .header(header::HOST, host)
        .header(
            header::USER_AGENT,
            concat!("usher-ctl/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::ACCEPT, "application/json");
    if method == "POST" {
        b = b.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(t) = token {
        b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = body.map(|v| v.to_string()).unwrap_or_default();
    b.body(Full::new(Bytes::from(body)))
}

/// A key id for a key generated at `unix_secs`: `k` and the UTC date
/// (`k20250301`), so ids sort by age and say when a key was made.
pub fn default_kid(unix_secs: u64) -> String {
    let c = crate::civil::Civil::of(unix_secs);
    format!("k{:04}{:02}{:02}", c.year, c.month, c.day)
}

#[cfg(test)]
mod tests;
