//! usher as the real binary, for what only a process shows: signals, exit
//! codes, the CLI and its own memory use. Its JSON log on stderr tells the
//! ports the kernel picked.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::TempDir;

/// The usher binary built for these tests.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_usher"))
}

/// `usher check -c path`, run to the end.
pub fn check(path: &std::path::Path) -> std::process::Output {
    bin()
        .args(["check", "-c"])
        .arg(path)
        .output()
        .expect("run usher check")
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A running usher process.
pub struct UsherProc {
    child: Child,
    /// The folder holding its config file.
    pub dir: TempDir,
    /// Its config file.
    pub config: PathBuf,
    /// First plain listener.
    pub addr: SocketAddr,
    /// Admin listener.
    pub admin: SocketAddr,
    /// First TLS listener, if any.
    pub tls: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl UsherProc {
    /// Writes `config_text` to `usher.toml` in `dir` and runs
    /// `usher run -c` on it, waiting (at most 20 s) until it listens. The
    /// config must log JSON at info level (see `common::config`).
    pub async fn spawn(dir: TempDir, config_text: &str) -> UsherProc {
        let config = dir.write("usher.toml", config_text);
        let want_tls = config_text.contains("[server.tls]");
        let mut child = bin()
            .args(["run", "-c"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn usher");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr piped");
        std::thread::spawn({
            let logs = logs.clone();
            move || {
                // Drain it always: a full pipe would block usher's logging.
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    logs.lock().unwrap().push(line);
                }
            }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let (mut plain, mut tls, mut admin) = (None, None, None);
            for line in logs.lock().unwrap().iter() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let addr = v["listener"].as_str().and_then(|a| a.parse().ok());
                match (v["message"].as_str(), v["tls"].as_bool()) {
                    (Some("listening"), Some(false)) => plain = plain.or(addr),
                    (Some("listening"), Some(true)) => tls = tls.or(addr),
                    (Some("admin API listening"), _) => admin = admin.or(addr),
                    _ => {}
                }
            }
            if let (Some(addr), Some(admin)) = (plain, admin) {
                if tls.is_some() || !want_tls {
                    return UsherProc {
                        child,
                        dir,
                        config,
                        addr,
                        admin,
                        tls,
                        logs,
                    };
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!(
                    "usher exited ({status}) before listening:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
            if tokio::time::Instant::now() > deadline {
                panic!(
                    "usher did not listen within 20 s:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its process id.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Sends `signal` (e.g. `libc::SIGHUP`) to it.
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Resident memory in KiB (VmRSS).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/PID/status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Its log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits at most `wait` for it to exit.
    pub async fn wait_exit(&mut self, wait: Duration) -> Option<ExitStatus> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            if tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for UsherProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
