//! Socket activation: listening sockets handed over by systemd (or any
//! manager speaking the same protocol) as fds 3, 4, ... with `LISTEN_FDS`,
//! `LISTEN_PID` and optional `LISTEN_FDNAMES`. The sockets outlive usher's
//! process, so a restart refuses no connection: clients wait in the
//! kernel's backlog until the new process accepts.
//!
//! Each socket is matched to a configured listener by its local address;
//! one named `admin` (or bound to the admin address) is the admin listener.
//! Sockets that match nothing are reported and closed.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use crate::config::Config;

/// First inherited fd, after stdin, stdout and stderr.
const FIRST_FD: RawFd = 3;

/// Most sockets accepted from the environment: far more than usher can
/// configure, and a bound on what a wrong `LISTEN_FDS` makes us touch.
const MAX_FDS: usize = 64;

/// The fd name that marks the admin listener (`FileDescriptorName=admin`).
pub const ADMIN_NAME: &str = "admin";

/// Why the inherited sockets could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ActivationError {
    /// `LISTEN_FDS` is not a number or is beyond [`MAX_FDS`].
    #[error("LISTEN_FDS={0:?} is not a count of at most 64 sockets")]
    BadCount(String),
    /// An inherited fd is not a listening TCP socket.
    #[error("inherited fd {fd} is not a listening TCP socket: {reason}")]
    NotTcpListener {
        /// The fd.
        fd: RawFd,
        /// What it is instead.
        reason: String,
    },
}

/// The fds a service manager passed to this process: `(fd, name)`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Passed(pub Vec<(RawFd, Option<String>)>);

/// Reads the activation variables as given. `None` when they are absent or
/// meant for another process (`LISTEN_PID` is not `our_pid`): a child that
/// inherited the environment must not take its parent's sockets.
pub fn passed_fds(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    our_pid: u32,
) -> Result<Option<Passed>, ActivationError> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    if pid.trim().parse::<u32>().ok() != Some(our_pid) {
        return Ok(None);
    }
    let n: usize = fds
        .trim()
        .parse()
        .ok()
        .filter(|&n| n <= MAX_FDS)
        .ok_or_else(|| ActivationError::BadCount(fds.to_string()))?;
    let mut names = names.map(|s| s.split(':')).into_iter().flatten();
    Ok(Some(Passed(
        (0..n)
            .map(|i| {
                let name = names.next().filter(|s| !s.is_empty()).map(str::to_string);
                (FIRST_FD + i as RawFd, name)
            })
            .collect(),
    )))
}

/// The fds passed to this process, from its environment.
pub fn from_env() -> Result<Option<Passed>, ActivationError> {
    let var = |k| std::env::var(k).ok();
    passed_fds(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    )
}

/// Inherited sockets sorted by the listener they serve.
#[derive(Debug, Default)]
pub struct Matched {
    /// Plain listeners, by configured address.
    pub plain: Vec<(SocketAddr, TcpListener)>,
    /// TLS listeners, by configured address.
    pub tls: Vec<(SocketAddr, TcpListener)>,
    /// The admin listener.
    pub admin: Option<TcpListener>,
    /// Sockets that match no configured listener: `(address, name)`. They
    /// are closed; the log says so.
    pub unmatched: Vec<(SocketAddr, Option<String>)>,
}

impl Matched {
    /// The inherited socket for plain address `a`, if one was passed.
    pub fn take_plain(&mut self, a: SocketAddr) -> Option<TcpListener> {
        take(&mut self.plain, a)
    }

    /// The inherited socket for TLS address `a`, if one was passed.
    pub fn take_tls(&mut self, a: SocketAddr) -> Option<TcpListener> {
        take(&mut self.tls, a)
    }
}

fn take(v: &mut Vec<(SocketAddr, TcpListener)>, a: SocketAddr) -> Option<TcpListener> {
    let i = v.iter().position(|(b, _)| *b == a)?;
    Some(v.swap_remove(i).1)
}

/// Takes ownership of the passed fds and matches them to `cfg`'s listeners.
///
/// # Safety
///
/// Every fd in `passed` must be open and owned by nobody else in this
/// process: that is what the service manager promises with `LISTEN_PID`.
pub unsafe fn adopt(passed: Passed, cfg: &Config) -> Result<Matched, ActivationError> {
    let mut out = Matched::default();
    for (fd, name) in passed.0 {
        // SAFETY: the caller guarantees we own `fd`.
        let owned = unsafe { OwnedFd::from_raw_fd(fd) };
        let listener = listener(owned, fd)?;
        let addr = listener
            .local_addr()
            .map_err(|e| ActivationError::NotTcpListener {
                fd,
                reason: e.to_string(),
            })?;
        let tls: &[SocketAddr] = cfg.server.tls.as_ref().map_or(&[], |t| &t.listen);
        let is_admin = name.as_deref() == Some(ADMIN_NAME) || cfg.server.admin == Some(addr);
        if is_admin && cfg.server.admin.is_some() && out.admin.is_none() {
            out.admin = Some(listener);
        } else if cfg.server.listen.contains(&addr) && !out.plain.iter().any(|(a, _)| *a == addr) {
            out.plain.push((addr, listener));
        } else if tls.contains(&addr) && !out.tls.iter().any(|(a, _)| *a == addr) {
            out.tls.push((addr, listener));
        } else {
            tracing::warn!(
                fd, address = %addr, name = name.as_deref().unwrap_or(""),
                "inherited socket matches no configured listener; closing it"
            );
            out.unmatched.push((addr, name));
        }
    }
    Ok(out)
}

/// Checks that `fd` is a listening stream socket and makes it ready for tokio.
fn listener(owned: OwnedFd, fd: RawFd) -> Result<TcpListener, ActivationError> {
    let bad = |reason: String| ActivationError::NotTcpListener { fd, reason };
    let int_opt = |opt| -> Result<libc::c_int, ActivationError> {
        let mut v: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt writes at most `len` bytes into `v`.
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&mut v as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(bad(std::io::Error::last_os_error().to_string()));
        }
        Ok(v)
    };
    if int_opt(libc::SO_TYPE)? != libc::SOCK_STREAM {
        return Err(bad("not a stream socket".into()));
    }
    if int_opt(libc::SO_ACCEPTCONN)? == 0 {
        return Err(bad("not listening".into()));
    }
    // SAFETY: fcntl on an fd we own; FD_CLOEXEC keeps it from leaking into
    // any process we might start.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
    let l = TcpListener::from(owned);
    // A unix socket passes SO_TYPE and SO_ACCEPTCONN too; only TCP has an
    // inet address.
    l.local_addr().map_err(|e| bad(e.to_string()))?;
    l.set_nonblocking(true).map_err(|e| bad(e.to_string()))?;
    Ok(l)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::IntoRawFd;
    use std::path::Path;

    #[test]
    fn variables_for_another_process_are_ignored() {
        assert_eq!(passed_fds(Some("41"), Some("2"), None, 42).unwrap(), None);
        assert_eq!(passed_fds(None, Some("2"), None, 42).unwrap(), None);
        assert_eq!(passed_fds(Some("42"), None, None, 42).unwrap(), None);
    }

    #[test]
    fn fds_start_at_three_with_their_names() {
        let p = passed_fds(Some("42"), Some("3"), Some("http:admin"), 42)
            .unwrap()
            .unwrap();
        assert_eq!(
            p.0,
            vec![
                (3, Some("http".into())),
                (4, Some("admin".into())),
                (5, None)
            ]
        );
    }

    #[test]
    fn absurd_counts_are_refused() {
        for bad in ["-1", "lots", "65"] {
            assert!(matches!(
                passed_fds(Some("42"), Some(bad), None, 42),
                Err(ActivationError::BadCount(_))
            ));
        }
    }

    fn config(listen: SocketAddr, admin: SocketAddr) -> Config {
        let text = format!(
            "[server]\nlisten = [\"{listen}\"]\nadmin = \"{admin}\"\n[origin]\nurl = \"http://127.0.0.1:9\"\n"
        );
        Config::parse(&text, "test", Path::new(".")).unwrap()
    }

    #[test]
    fn sockets_match_by_address_or_admin_name() {
        let plain = TcpListener::bind("127.0.0.1:0").unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").unwrap();
        let stray = TcpListener::bind("127.0.0.1:0").unwrap();
        let (pa, sa) = (plain.local_addr().unwrap(), stray.local_addr().unwrap());
        // The admin socket is matched by name, not address.
        let cfg = config(pa, "127.0.0.1:1".parse().unwrap());
        let passed = Passed(vec![
            (stray.into_raw_fd(), None),
            (admin.into_raw_fd(), Some(ADMIN_NAME.into())),
            (plain.into_raw_fd(), Some("http".into())),
        ]);
        // SAFETY: the fds were just released by their listeners.
        let mut m = unsafe { adopt(passed, &cfg) }.unwrap();
        assert!(m.admin.is_some());
        assert!(m.take_plain(pa).is_some());
        assert!(m.take_plain(pa).is_none());
        assert_eq!(m.unmatched, vec![(sa, None)]);
    }

    #[test]
    fn a_socket_that_does_not_listen_is_refused() {
        let peer = TcpListener::bind("127.0.0.1:0").unwrap();
        let conn = std::net::TcpStream::connect(peer.local_addr().unwrap()).unwrap();
        let cfg = config(peer.local_addr().unwrap(), "127.0.0.1:1".parse().unwrap());
        let passed = Passed(vec![(conn.into_raw_fd(), None)]);
        // SAFETY: the fd was just released by its stream.
        let r = unsafe { adopt(passed, &cfg) };
        assert!(matches!(r, Err(ActivationError::NotTcpListener { .. })));
    }
}
