//! systemd's readiness protocol (`sd_notify`), written by hand: one datagram
//! per state change to the socket named by `$NOTIFY_SOCKET`, and the
//! watchdog keep-alive. Without `$NOTIFY_SOCKET` (not under systemd, or not
//! `Type=notify`) every call is a no-op, so the rest of usher never asks.
//!
//! The protocol is small enough that a crate would add more than it saves:
//! newline-separated `KEY=VALUE` assignments in one datagram, sent to a path
//! or to an abstract socket (written `@name`).

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::sync::Arc;
use std::time::Duration;

/// Longest `STATUS=` text sent: systemd shows one line of it in
/// `systemctl status`, and a config error can be long.
const MAX_STATUS_BYTES: usize = 512;

/// Why `$NOTIFY_SOCKET` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The value is neither an absolute path nor `@abstract`.
    #[error("NOTIFY_SOCKET is not an absolute path or @abstract name")]
    Unsupported,
    /// The address could not be built (too long, NUL byte) or the socket made.
    #[error("NOTIFY_SOCKET: {0}")]
    Io(#[from] io::Error),
}

/// Sends state changes to the service manager; a no-op when not asked to.
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { target: None }
    }

    /// Reads `$NOTIFY_SOCKET`. An unusable value is logged and disables
    /// notification rather than stopping the start: systemd then reports
    /// the missing `READY=1` itself, with a clearer message than ours.
    pub fn from_env() -> Notifier {
        match std::env::var_os("NOTIFY_SOCKET") {
            None => Notifier::disabled(),
            Some(v) => Notifier::to(&v).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "not notifying systemd");
                Notifier::disabled()
            }),
        }
    }

    /// A notifier for the socket written as in `$NOTIFY_SOCKET`: an absolute
    /// path, or `@name` for a Linux abstract socket.
    pub fn to(socket: &OsStr) -> Result<Notifier, NotifyError> {
        let bytes = socket.as_bytes();
        let addr = match bytes.first() {
            Some(b'/') => SocketAddr::from_pathname(socket)?,
            Some(b'@') => abstract_addr(&bytes[1..])?,
            _ => return Err(NotifyError::Unsupported),
        };
        Ok(Notifier {
            target: Some((UnixDatagram::unbound()?, addr)),
        })
    }

    /// True when a service manager listens.
    pub fn enabled(&self) -> bool {
        self.target.is_some()
    }

    /// Sends `state` (newline-separated assignments) as one datagram.
    pub fn send(&self, state: &str) -> io::Result<()> {
        match &self.target {
            Some((sock, addr)) => sock.send_to_addr(state.as_bytes(), addr).map(|_| ()),
            None => Ok(()),
        }
    }

    /// Sends and logs a failure: a lost notification must not stop usher.
    fn send_logged(&self, state: &str) {
        if let Err(e) = self.send(state) {
            tracing::warn!(error = %e, "could not notify systemd");
        }
    }

    /// `READY=1` with a status line: listening, or a reload finished.
    pub fn ready(&self, status: &str) {
        self.send_logged(&format!("READY=1\nSTATUS={}", status_line(status)));
    }

    /// `RELOADING=1` with the current `CLOCK_MONOTONIC` time, in one
    /// datagram: systemd 253 and later refuse a `RELOADING=1` without it.
    pub fn reloading(&self) {
        self.send_logged(&format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the config",
            monotonic_usec()
        ));
    }

    /// `STOPPING=1`: shutting down, draining connections.
    pub fn stopping(&self) {
        self.send_logged("STOPPING=1\nSTATUS=draining connections");
    }

    /// `WATCHDOG=1`: still alive.
    pub fn watchdog(&self) {
        self.send_logged("WATCHDOG=1");
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on Linux",
    ))
}

/// One line of at most [`MAX_STATUS_BYTES`]: a newline in the text would
/// otherwise start a new assignment in the datagram.
fn status_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(MAX_STATUS_BYTES));
    for part in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push_str("; ");
        }
        out.push_str(part);
    }
    if out.len() > MAX_STATUS_BYTES {
        let mut cut = MAX_STATUS_BYTES;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
    }
    out
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd compares
/// `MONOTONIC_USEC` against.
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the struct we pass.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

/// How often to send `WATCHDOG=1`, from `$WATCHDOG_USEC` and `$WATCHDOG_PID`:
/// half the period systemd waits, and only when the watchdog is meant for
/// `our_pid` (an unset `WATCHDOG_PID` means "the main process", us).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok() != Some(our_pid) {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// The watchdog interval for this process, from its environment.
pub fn watchdog_from_env() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_interval(usec.as_deref(), pid.as_deref(), std::process::id())
}

/// Sends `WATCHDOG=1` every `every` from a task on the current tokio
/// runtime, so that a runtime too stuck to run it stops the pings and
/// systemd restarts usher. Must be called inside the runtime.
pub fn spawn_watchdog(notifier: Arc<Notifier>, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            notifier.watchdog();
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bound socket and a notifier to it; the socket's file goes when
    /// the receiver is dropped.
    fn pair(name: &str) -> (Receiver, Notifier) {
        let path = std::env::temp_dir().join(format!("usher-notify-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let rx = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::to(path.as_os_str()).unwrap();
        (Receiver { rx, path }, n)
    }

    struct Receiver {
        rx: UnixDatagram,
        path: std::path::PathBuf,
    }

    impl std::ops::Deref for Receiver {
        type Target = UnixDatagram;
        fn deref(&self) -> &UnixDatagram {
            &self.rx
        }
    }

    impl Drop for Receiver {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.path);
        }
    }

    fn recv(rx: &UnixDatagram) -> String {
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn reloading_is_one_datagram_with_the_monotonic_time() {
        let (rx, n) = pair("reload");
        let before = monotonic_usec();
        n.reloading();
        let msg = recv(&rx);
        let mut lines = msg.lines();
        assert_eq!(lines.next(), Some("RELOADING=1"));
        let usec: u64 = lines
            .next()
            .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
            .unwrap()
            .parse()
            .unwrap();
        assert!(usec >= before && usec <= monotonic_usec());
    }

    #[test]
    fn ready_status_is_one_line() {
        let (rx, n) = pair("ready");
        n.ready("reload failed:\n  usher.toml:3: origin.url: bad\n");
        assert_eq!(
            recv(&rx),
            "READY=1\nSTATUS=reload failed:; usher.toml:3: origin.url: bad"
        );
    }

    #[test]
    fn abstract_socket_names_start_with_at() {
        let name = format!("usher-notify-test-{}", std::process::id());
        let rx = UnixDatagram::bind_addr(&abstract_addr(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier::to(OsStr::new(&format!("@{name}"))).unwrap();
        n.stopping();
        assert!(recv(&rx).starts_with("STOPPING=1\n"));
    }

    #[test]
    fn relative_or_empty_socket_is_refused_and_disabled_is_silent() {
        assert!(matches!(
            Notifier::to(OsStr::new("run/notify")),
            Err(NotifyError::Unsupported)
        ));
        assert!(Notifier::to(OsStr::new("")).is_err());
        let off = Notifier::disabled();
        assert!(!off.enabled());
        assert!(off.send("READY=1").is_ok());
    }

    #[test]
    fn status_is_capped_on_a_char_boundary() {
        let long = "é".repeat(MAX_STATUS_BYTES);
        let s = status_line(&long);
        assert!(s.len() <= MAX_STATUS_BYTES && s.len() > MAX_STATUS_BYTES - 2);
    }

    #[test]
    fn watchdog_interval_is_half_the_period_and_only_for_us() {
        let half = Some(Duration::from_secs(15));
        assert_eq!(watchdog_interval(Some("30000000"), None, 7), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some("7"), 7), half);
        assert_eq!(watchdog_interval(Some("30000000"), Some("8"), 7), None);
        assert_eq!(watchdog_interval(Some("30000000"), Some("x"), 7), None);
        assert_eq!(watchdog_interval(None, Some("7"), 7), None);
        assert_eq!(watchdog_interval(Some("0"), None, 7), None);
        assert_eq!(watchdog_interval(Some("soon"), None, 7), None);
    }

    #[tokio::test(start_paused = true)]
    async fn watchdog_pings_from_the_runtime() {
        let (rx, n) = pair("watchdog");
        let task = spawn_watchdog(Arc::new(n), Duration::from_secs(15));
        // The first tick fires at once; the next after one interval of
        // (paused, auto-advanced) runtime time.
        tokio::time::sleep(Duration::from_secs(16)).await;
        task.abort();
        assert_eq!(recv(&rx), "WATCHDOG=1");
        assert_eq!(recv(&rx), "WATCHDOG=1");
    }
}
