//! usher started as systemd starts it with socket activation: the test
//! binds the listener and usher inherits it as fd 3 (`LISTEN_FDS=1`,
//! `LISTEN_PID` set by an `sh` wrapper that `exec`s usher, keeping its
//! pid). The port is known before usher runs, so its log may be in any
//! format or level, and its stderr may be whatever the test chooses (a
//! pipe, a terminal).

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::TempDir;

/// A running usher on an inherited socket.
pub struct Activated {
    child: Child,
    /// The inherited listener's address.
    pub addr: SocketAddr,
    /// The folder with its config.
    pub dir: TempDir,
    out: Arc<Mutex<Vec<u8>>>,
    _listener: TcpListener,
}

impl Activated {
    /// Binds 127.0.0.1:0, writes `config(addr)` to `usher.toml` and starts
    /// `usher run` on it with the socket as fd 3, `env` added, and stderr
    /// to `stderr` (`None`: a pipe the test reads with [`Activated::output`]).
    pub fn start(
        config: impl Fn(SocketAddr) -> String,
        env: &[(&str, &str)],
        stderr: Option<Stdio>,
    ) -> Activated {
        let dir = TempDir::new("activated");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().unwrap();
        let path = dir.write("usher.toml", &config(addr));
        let fd: RawFd = listener.as_raw_fd();
        let mut cmd = Command::new("sh");
        cmd.args([
            "-c",
            "LISTEN_PID=$$ exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_usher"),
            "run",
            "-c",
        ])
        .arg(&path)
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NO_COLOR")
        .env("LISTEN_FDS", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let piped = stderr.is_none();
        cmd.stderr(stderr.unwrap_or_else(Stdio::piped));
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close).
        unsafe {
            cmd.pre_exec(move || {
                // Out of the way first (fd may be 3 already), then onto 3;
                // dup2 clears FD_CLOEXEC, so it survives exec.
                let high = libc::fcntl(fd, libc::F_DUPFD, 100);
                if high < 0 || libc::dup2(high, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(high);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn usher");
        let out = Arc::new(Mutex::new(Vec::new()));
        if piped {
            let mut err = child.stderr.take().expect("stderr piped");
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
        Activated {
            child,
            addr,
            dir,
            out,
            _listener: listener,
        }
    }

    /// Everything it wrote to a piped stderr so far.
    pub fn output(&self) -> Vec<u8> {
        self.out.lock().unwrap().clone()
    }

    /// Waits (at most 10 s) until its stderr holds `n` lines containing `needle`.
    pub async fn wait_for_lines(&self, needle: &str, n: usize) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = String::from_utf8_lossy(&self.output()).into_owned();
            if text.lines().filter(|l| l.contains(needle)).count() >= n {
                return text;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("no {n} lines with {needle:?} in 10 s:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
