//! Logs: tracing to stderr as text or JSON lines (the filter reloads live),
//! and the access log, one line per request in combined or JSON format with
//! credentials redacted.
//!
//! The access log is not a tracing event: each line is written whole to
//! stderr by itself, so a JSON line is one object with the request's fields
//! at the top level (not a string inside `message`), and `log.level` (the
//! app log's filter) never silences it; `log.access` alone turns it on or off.

use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::time::{Duration, SystemTime};

use http::{header, Request, Response};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, Registry};

use crate::config::{AccessLog as Format, LogConfig};
use crate::metrics::Outcome;

/// Changes the log filter of the running process.
pub struct LogHandle(Option<reload::Handle<Targets, Registry>>);

impl LogHandle {
    /// A handle that changes nothing (tests, or when logging was set up elsewhere).
    pub fn none() -> LogHandle {
        LogHandle(None)
    }

    /// Applies a new filter directive.
    pub fn set_level(&self, level: &str) {
        if let (Some(h), Ok(f)) = (&self.0, level.parse::<Targets>()) {
            let _ = h.reload(f);
        }
    }
}

/// Installs the global subscriber. `RUST_LOG`, when set, wins over the config.
pub fn init(cfg: &LogConfig) -> LogHandle {
    let directive = std::env::var("RUST_LOG").unwrap_or_else(|_| cfg.level.clone());
    let filter = directive
        .parse::<Targets>()
        .unwrap_or_else(|_| Targets::new().with_default(tracing::Level::INFO));
    let (filter, handle) = reload::Layer::new(filter);
    let colour = colour(
        std::io::stderr().is_terminal(),
        std::env::var_os("JOURNAL_STREAM").is_some(),
        std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
    );
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_target(true);
    let result = if cfg.json {
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt.json().flatten_event(true))
            .try_init()
    } else {
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt)
            .try_init()
    };
    LogHandle(result.is_ok().then_some(handle))
}

/// Whether text logs get ANSI colours: only for a person at a terminal.
/// Not when stderr is a pipe or a file, not under journald (which sets
/// `JOURNAL_STREAM` and stores the escape codes as they are), and not with
/// `NO_COLOR` set (no-color.org).
pub fn colour(stderr_is_terminal: bool, journal: bool, no_color: bool) -> bool {
    stderr_is_terminal && !journal && !no_color
}

/// The access log; its format changes on reload.
pub struct AccessLog {
    format: AtomicU8,
}

/// What the access log needs from a request, captured before it is consumed.
pub struct RequestLine {
    method: http::Method,
    target: String,
    version: http::Version,
    referer: Option<String>,
    user_agent: Option<String>,
}

/// Query parameters never written to logs (usher's own tokens and common credentials).
const SECRET_PARAMS: [&str; 6] = [
    "usher_ticket",
    "usher_pass",
    "token",
    "access_token",
    "password",
    "code",
];

impl RequestLine {
    /// Captures the loggable parts of `req`: never cookies or
    /// `Authorization`, and secret-looking query values redacted.
    pub fn of<B>(req: &Request<B>) -> RequestLine {
        let text = |h| {
            req.headers()
                .get(h)
                .and_then(|v: &http::HeaderValue| v.to_str().ok())
                .map(|s| s.chars().take(512).collect::<String>())
        };
        RequestLine {
            method: req.method().clone(),
            target: redact_target(req.uri().path_and_query().map_or("/", |p| p.as_str())),
            version: req.version(),
            referer: text(header::REFERER).map(|r| redact_target(&r)),
            user_agent: text(header::USER_AGENT),
        }
    }

    /// The same from an HTTP/1.1 head's parts (the relay's, which builds no
    /// `Request`): fields that are not visible ASCII are left out, as
    /// [`of`](Self::of) leaves them.
    pub fn from_head(
        method: &str,
        target: &str,
        referer: Option<&str>,
        user_agent: Option<&str>,
    ) -> RequestLine {
        let text = |v: Option<&str>| {
            v.filter(|s| s.bytes().all(|b| b == b'\t' || (32..127).contains(&b)))
                .map(|s| s.chars().take(512).collect::<String>())
        };
        RequestLine {
            method: http::Method::from_bytes(method.as_bytes()).unwrap_or_default(),
            target: redact_target(target),
            version: http::Version::HTTP_11,
            referer: text(referer).map(|r| redact_target(&r)),
            user_agent: text(user_agent),
        }
    }
}

/// Replaces the values of secret query parameters with `REDACTED`.
pub fn redact_target(target: &str) -> String {
    let Some((path, query)) = target.split_once('?') else {
        return target.to_string();
    };
    let mut out = String::with_capacity(target.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let name = pair.split('=').next().unwrap_or_default();
        if pair.contains('=') && SECRET_PARAMS.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            out.push_str(name);
            out.push_str("=REDACTED");
        } else {
            out.push_str(pair);
        }
    }
    out
}

impl AccessLog {
    /// An access log in `format`.
    pub fn new(format: Format) -> AccessLog {
        AccessLog {
            format: AtomicU8::new(format as u8),
        }
    }

    /// Changes the format (on reload).
    pub fn set(&self, format: Format) {
        self.format.store(format as u8, Ordering::Relaxed);
    }

    fn format(&self) -> Format {
        match self.format.load(Ordering::Relaxed) {
            x if x == Format::Combined as u8 => Format::Combined,
            x if x == Format::Json as u8 => Format::Json,
            _ => Format::Off,
        }
    }

    /// Whether lines are written at all.
    pub fn enabled(&self) -> bool {
        self.format() != Format::Off
    }

    /// Writes one line for an answered request to stderr, in one write so
    /// that lines from many requests never interleave.
    pub fn write<B>(
        &self,
        req: &RequestLine,
        client: IpAddr,
        resp: &Response<B>,
        outcome: Outcome,
        took: Duration,
    ) {
        let Some(line) = self.line(req, client, resp, outcome, took, SystemTime::now()) else {
            return;
        };
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }

    /// The line for an answered request, newline included; `None` when off.
    pub fn line<B>(
        &self,
        req: &RequestLine,
        client: IpAddr,
        resp: &Response<B>,
        outcome: Outcome,
        took: Duration,
        now: SystemTime,
    ) -> Option<String> {
        let bytes = resp
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok());
        let status = resp.status().as_u16();
        let version = match req.version {
            http::Version::HTTP_2 => "HTTP/2.0",
            http::Version::HTTP_10 => "HTTP/1.0",
            _ => "HTTP/1.1",
        };
        let mut line = match self.format() {
            Format::Off => return None,
            Format::Combined => format!(
                "{client} - - [{}] \"{} {} {version}\" {status} {} \"{}\" \"{}\"",
                clf_time(now),
                req.method,
                escape(&req.target),
                bytes.unwrap_or("-"),
                escape(req.referer.as_deref().unwrap_or("-")),
                escape(req.user_agent.as_deref().unwrap_or("-")),
            ),
            Format::Json => serde_json::json!({
                "time": humantime::format_rfc3339_millis(now).to_string(),
                "type": "access",
                "client": client.to_string(),
                "method": req.method.as_str(),
                "target": req.target,
                "version": version,
                "status": status,
                "bytes": bytes.and_then(|b| b.parse::<u64>().ok()),
                "outcome": format!("{outcome:?}").to_lowercase(),
                "duration_ms": took.as_secs_f64() * 1000.0,
                "referer": req.referer,
                "user_agent": req.user_agent,
            })
            .to_string(),
        };
        line.push('\n');
        Some(line)
    }
}

/// Escapes quotes, backslashes and control bytes for the combined format.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// `25/Nov/2026:18:00:00 +0000`
fn clf_time(t: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let c = crate::civil::Civil::of(secs);
    let rem = c.secs_of_day;
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A warning at most once per [`QUIET`], with the number kept quiet since:
/// a misconfigured balancer, a scan or a dead Sentinel asked every 200 ms
/// must not flood the log (metrics count every one).
pub struct Throttle {
    next: AtomicU64,
    quiet: AtomicU64,
}

/// Shortest gap between two warnings of one kind.
pub const QUIET: Duration = Duration::from_secs(10);

impl Throttle {
    /// A throttle that lets the first warning through.
    pub const fn new() -> Throttle {
        Throttle {
            next: AtomicU64::new(0),
            quiet: AtomicU64::new(0),
        }
    }

    /// `Some(kept quiet since the last one)` when a warning may be written
    /// at `now_ms` (milliseconds on any monotonic clock), else `None`.
    pub fn admit(&self, now_ms: u64) -> Option<u64> {
        let next = self.next.load(Ordering::Relaxed);
        let quiet_ms = QUIET.as_millis() as u64;
        if now_ms >= next
            && self
                .next
                .compare_exchange(
                    next,
                    now_ms + quiet_ms,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok()
        {
            return Some(self.quiet.swap(0, Ordering::Relaxed));
        }
        self.quiet.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Throttle {
    /// [`Throttle::admit`] now, on the process's monotonic clock.
    pub fn admit_now(&self) -> Option<u64> {
        static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
        self.admit(
            START
                .get_or_init(std::time::Instant::now)
                .elapsed()
                .as_millis() as u64,
        )
    }
}

impl Default for Throttle {
    fn default() -> Self {
        Throttle::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted() {
        assert_eq!(
            redact_target("/a?x=1&usher_pass=abc&Token=t&y"),
            "/a?x=1&usher_pass=REDACTED&Token=REDACTED&y"
        );
        assert_eq!(redact_target("/plain"), "/plain");
        let req = Request::builder()
            .uri("/p?password=hunter2")
            .header("cookie", "usher_pass=secret")
            .header("authorization", "Bearer secret")
            .body(())
            .unwrap();
        let line = RequestLine::of(&req);
        assert_eq!(line.target, "/p?password=REDACTED");
    }

    #[test]
    fn clf_dates() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_634_096);
        assert_eq!(clf_time(t), "25/Nov/2026:19:14:56 +0000");
        assert_eq!(
            clf_time(SystemTime::UNIX_EPOCH),
            "01/Jan/1970:00:00:00 +0000"
        );
    }

    #[test]
    fn level_directives_are_targets_and_levels() {
        use tracing::Level;
        use tracing_subscriber::filter::Targets;
        let t: Targets = "usher=debug,hyper=warn".parse().unwrap();
        assert!(t.would_enable("usher::proxy", &Level::DEBUG));
        assert!(!t.would_enable("hyper::proto", &Level::INFO));
        assert!(!t.would_enable("redis", &Level::ERROR), "no default: off");
        let t: Targets = "warn".parse().unwrap();
        assert!(t.would_enable("usher", &Level::WARN));
        assert!(!t.would_enable("usher", &Level::INFO));
        assert!("usher=loud".parse::<Targets>().is_err());
    }

    #[test]
    fn colour_only_at_a_terminal_outside_journald() {
        assert!(colour(true, false, false));
        assert!(!colour(false, false, false), "piped or redirected");
        assert!(!colour(true, true, false), "journald");
        assert!(!colour(true, false, true), "NO_COLOR");
    }

    #[test]
    fn a_json_line_is_one_object_with_the_fields_at_the_top() {
        let log = AccessLog::new(Format::Json);
        let req = Request::builder()
            .method("POST")
            .uri("/buy?seat=7&token=s3cret")
            .header("user-agent", "ua \"quoted\"\tend")
            .body(())
            .unwrap();
        let resp = Response::builder()
            .status(201)
            .header("content-length", "12")
            .body(())
            .unwrap();
        let client: IpAddr = "203.0.113.7".parse().unwrap();
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_634_096);
        let line = log
            .line(
                &RequestLine::of(&req),
                client,
                &resp,
                Outcome::Forwarded,
                Duration::from_millis(3),
                t,
            )
            .unwrap();
        assert!(
            line.ends_with('\n') && line.matches('\n').count() == 1,
            "{line:?}"
        );
        assert!(
            !line.contains('\u{1b}'),
            "control bytes are escaped: {line:?}"
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["type"], "access");
        assert_eq!(v["client"], "203.0.113.7");
        assert_eq!(v["method"], "POST");
        assert_eq!(v["target"], "/buy?seat=7&token=REDACTED");
        assert_eq!(v["status"], 201);
        assert_eq!(v["bytes"], 12);
        assert_eq!(v["outcome"], "forwarded");
        assert_eq!(v["time"], "2026-11-25T19:14:56.000Z");
        assert_eq!(v["user_agent"], "ua \"quoted\"\tend");

        log.set(Format::Combined);
        let line = log
            .line(
                &RequestLine::of(&req),
                client,
                &resp,
                Outcome::Forwarded,
                Duration::ZERO,
                t,
            )
            .unwrap();
        assert_eq!(
            line,
            "203.0.113.7 - - [25/Nov/2026:19:14:56 +0000] \"POST /buy?seat=7&token=REDACTED HTTP/1.1\" 201 12 \"-\" \"ua \\\"quoted\\\"\\x09end\"\n"
        );
        log.set(Format::Off);
        assert!(log
            .line(
                &RequestLine::of(&req),
                client,
                &resp,
                Outcome::Forwarded,
                Duration::ZERO,
                t
            )
            .is_none());
    }

    #[test]
    fn escapes_quotes_and_controls() {
        assert_eq!(escape("a\"b\\c\n"), "a\\\"b\\\\c\\x0a");
    }
}
