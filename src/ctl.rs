//! `usher ctl`: a small client for the admin API, so on-call can pause,
//! widen or drain the room from a shell without curl and without
//! remembering paths, JSON shapes and where the token is. Also the default
//! key id of `usher keygen`.
//!
//! It finds the API ([`Options::resolve`]): `--socket` or `--admin`, else
//! the config's `server.admin_socket` or `server.admin`; and the token:
//! `--token-file`, then `$USHER_ADMIN_TOKEN`, then the config's
//! `server.admin_token_file`, then the token usher made for itself
//! (`admin.token` in the state directory, readable by root and usher's
//! user). It sends one request over hyper's client connection (TCP or the
//! Unix socket), reads a bounded answer and hands back the status and body;
//! the CLI prints the body and exits non-zero on anything but 2xx.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::config::Config;
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

/// The environment variable `usher ctl` reads a token from.
pub const TOKEN_ENV: &str = "USHER_ADMIN_TOKEN";

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

/// Why `usher ctl` could not even ask (a setup mistake, not the server's).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The token file cannot be read or holds no usable token.
    #[error("token file {path}: {reason}")]
    TokenFile {
        /// Which.
        path: String,
        /// Why.
        reason: String,
    },
    /// The token from the environment is unusable.
    #[error("${TOKEN_ENV}: {0}")]
    TokenEnv(String),
    /// The config names neither an admin listener nor a socket.
    #[error("{0} has no admin listener (server.admin) and no admin socket (server.admin_socket)")]
    NoAdmin(String),
}

/// What the command line gave.
#[derive(Debug, Default)]
pub struct Options {
    /// `--admin HOST:PORT`.
    pub admin: Option<String>,
    /// `--socket PATH`.
    pub socket: Option<PathBuf>,
    /// The config loaded from `-c` (it names the admin address, socket and token).
    pub config: Option<Config>,
    /// `--token-file PATH`.
    pub token_file: Option<PathBuf>,
    /// `$USHER_ADMIN_TOKEN`.
    pub env_token: Option<String>,
}

/// Where to ask and with what token.
#[derive(Debug, Clone)]
pub struct Client {
    /// The admin API.
    pub target: Target,
    /// The bearer token, when one was found.
    pub token: Option<String>,
}

impl Options {
    /// The target and token these options lead to (see the module docs).
    pub fn resolve(self) -> Result<Client, SetupError> {
        let cfg = self.config.as_ref();
        let target = match (self.socket, self.admin, cfg) {
            (Some(p), _, _) => Target::Unix(p),
            (None, Some(a), _) => Target::Tcp(a),
            (None, None, Some(c)) => match (&c.server.admin_api.socket, c.server.admin) {
                (Some(p), _) => Target::Unix(p.clone()),
                (None, Some(a)) => Target::Tcp(a.to_string()),
                (None, None) => return Err(SetupError::NoAdmin(source_name(c))),
            },
            (None, None, None) => Target::Tcp(crate::config::file::DEFAULT_ADMIN.to_string()),
        };
        let token = if let Some(path) = &self.token_file {
            let fail = |reason: String| SetupError::TokenFile {
                path: path.display().to_string(),
                reason,
            };
            let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
            Some(usable(text.trim()).map_err(fail)?)
        } else if let Some(t) = self.env_token.filter(|t| !t.trim().is_empty()) {
            Some(usable(t.trim()).map_err(SetupError::TokenEnv)?)
        } else if let Some(t) = cfg.and_then(|c| c.server.admin_api.token.as_ref()) {
            Some(t.secret.clone())
        } else {
            // usher's own token; unreadable (not root, not usher's user) is
            // no error here: the server then says what is missing.
            let generated = match cfg {
                Some(c) => crate::admin::token::generated_path(c),
                None => crate::admin::token::generated_path(&Config::embedded()),
            };
            std::fs::read_to_string(generated)
                .ok()
                .and_then(|t| usable(t.trim()).ok())
        };
        Ok(Client { target, token })
    }
}

fn source_name(c: &Config) -> String {
    c.source
        .as_ref()
        .map_or("the embedded default".into(), |p| p.display().to_string())
}

/// `token` when it can go into a header and is long enough to be real.
fn usable(token: &str) -> Result<String, String> {
    match crate::config::admin::token_problem(token) {
        Some(why) => Err(why),
        None => Ok(token.to_string()),
    }
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
        .uri(path)
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
    use std::io::{Read, Write};

    const TOKEN: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn room_settings_are_json_posts_with_the_token() {
        let req = request("127.0.0.1:9090", Some(TOKEN), &Action::SetRate(600)).unwrap();
        assert_eq!(
            (req.method().as_str(), req.uri().path()),
            ("POST", "/admin/room")
        );
        let h = req.headers();
        assert_eq!(h["host"], "127.0.0.1:9090");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["authorization"], format!("Bearer {TOKEN}"));
        let body = futures_util::FutureExt::now_or_never(req.into_body().collect())
            .unwrap()
            .unwrap()
            .to_bytes();
        assert_eq!(&body[..], b"{\"new_users_per_minute\":600}");
        // Even a POST without a body says JSON: the API refuses anything else.
        let pause = request("h", None, &Action::Pause).unwrap();
        assert_eq!(pause.headers()["content-type"], "application/json");
        assert!(!pause.headers().contains_key("authorization"));
        let get = request("h", None, &Action::Status).unwrap();
        assert!(get.method() == "GET" && !get.headers().contains_key("content-type"));
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
    }

    /// A one-shot raw HTTP/1.1 server: reads one request head (and body up
    /// to `until`), answers `reply`, and hands back what it read.
    fn one_shot<S: Read + Write>(mut s: S, until: &[u8], reply: &[u8]) -> String {
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while !(got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(until)) {
            let n = s.read(&mut buf).unwrap();
            assert!(n > 0, "client closed early");
            got.extend_from_slice(&buf[..n]);
        }
        s.write_all(reply).unwrap();
        String::from_utf8(got).unwrap()
    }

    #[test]
    fn call_talks_over_tcp() {
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (s, _) = server.accept().unwrap();
            one_shot(
                s,
                b"{\"message\":\"hi\"}",
                b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n4\r\nnot \r\n6\r\nfound\n\r\n0\r\n\r\n",
            )
        });
        let c = Client {
            target: Target::Tcp(addr),
            token: Some(TOKEN.into()),
        };
        let r = c.call(&Action::SetMessage("hi".into())).unwrap();
        assert_eq!((r.status, r.pretty().as_str()), (404, "not found"));
        let seen = handle.join().unwrap().to_ascii_lowercase();
        assert!(seen.starts_with("post /admin/room http/1.1\r\n"), "{seen}");
        assert!(
            seen.contains(&format!("authorization: bearer {TOKEN}\r\n")),
            "{seen}"
        );
        assert!(
            seen.contains("content-type: application/json\r\n"),
            "{seen}"
        );
    }

    #[test]
    fn call_talks_over_a_unix_socket_and_bounds_the_answer() {
        let dir = std::env::temp_dir().join(format!("usher-ctl-sock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("admin.sock");
        let server = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (s, _) = server.accept().unwrap();
            let seen = one_shot(
                s,
                b"",
                b"HTTP/1.1 200 OK\r\ncontent-length: 11\r\n\r\n{\"a\": true}",
            );
            let (s, _) = server.accept().unwrap();
            let mut big = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n",
                MAX_REPLY_BYTES + 1
            )
            .into_bytes();
            big.resize(big.len() + MAX_REPLY_BYTES + 1, b'x');
            one_shot(s, b"", &big);
            seen
        });
        let c = Client {
            target: Target::Unix(path),
            token: None,
        };
        let r = c.call(&Action::Status).unwrap();
        assert!(r.ok());
        assert_eq!(r.pretty(), "{\n  \"a\": true\n}");
        assert!(matches!(c.call(&Action::Status), Err(CtlError::TooLarge)));
        assert!(handle
            .join()
            .unwrap()
            .starts_with("GET /admin/status HTTP/1.1\r\n"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unreachable_or_malformed_are_errors_not_panics() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let call = |target| {
            Client {
                target,
                token: None,
            }
            .call(&Action::Status)
        };
        assert!(matches!(
            call(Target::Tcp(port.to_string())),
            Err(CtlError::Io { .. })
        ));
        assert!(matches!(
            call(Target::Tcp("not an address".into())),
            Err(CtlError::Resolve(_))
        ));
        assert!(matches!(
            call(Target::Unix("/nonexistent/usher.sock".into())),
            Err(CtlError::Io { .. })
        ));
        let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap().to_string();
        let handle = std::thread::spawn(move || {
            let (s, _) = server.accept().unwrap();
            one_shot(s, b"", b"SSH-2.0-OpenSSH\r\n\r\n");
        });
        assert!(matches!(
            call(Target::Tcp(addr)),
            Err(CtlError::Malformed(_))
        ));
        handle.join().unwrap();
    }

    #[test]
    fn the_token_comes_from_the_flag_the_environment_or_the_config() {
        let dir = std::env::temp_dir().join(format!("usher-ctl-tok-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b, c) = ("a".repeat(32), "b".repeat(32), "c".repeat(32));
        std::fs::write(dir.join("flag"), format!("{a}\n")).unwrap();
        std::fs::write(dir.join("cfg"), &c).unwrap();
        let cfg = || {
            Config::parse(
                "[server]\nadmin = \"127.0.0.1:9191\"\nadmin_token_file = \"cfg\"\n\
                 [origin]\nurl = \"http://127.0.0.1:9\"\n",
                "t",
                &dir,
            )
            .unwrap()
        };
        let resolve = |flag: bool, env: Option<&str>, config: bool| {
            Options {
                token_file: flag.then(|| dir.join("flag")),
                env_token: env.map(str::to_string),
                config: config.then(cfg),
                ..Options::default()
            }
            .resolve()
            .unwrap()
        };
        assert_eq!(
            resolve(true, Some(&b), true).token.as_deref(),
            Some(a.as_str())
        );
        assert_eq!(
            resolve(false, Some(&b), true).token.as_deref(),
            Some(b.as_str())
        );
        assert_eq!(
            resolve(false, Some(""), true).token.as_deref(),
            Some(c.as_str())
        );
        let from_cfg = resolve(false, None, true);
        assert_eq!(from_cfg.token.as_deref(), Some(c.as_str()));
        assert_eq!(from_cfg.target, Target::Tcp("127.0.0.1:9191".into()));
        let default = Options::default().resolve().unwrap();
        assert_eq!(default.target, Target::Tcp("127.0.0.1:9090".into()));
        let sock = Options {
            socket: Some("/run/u.sock".into()),
            admin: Some("127.0.0.1:1".into()),
            ..Options::default()
        };
        assert_eq!(
            sock.resolve().unwrap().target,
            Target::Unix("/run/u.sock".into())
        );
        let short = Options {
            env_token: Some("short".into()),
            ..Options::default()
        };
        assert!(matches!(short.resolve(), Err(SetupError::TokenEnv(_))));
        let missing = Options {
            token_file: Some(dir.join("missing")),
            ..Options::default()
        };
        assert!(matches!(
            missing.resolve(),
            Err(SetupError::TokenFile { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
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
