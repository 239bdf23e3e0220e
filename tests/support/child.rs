//! usher as a child process (the real binary): for what only a process
//! shows — its memory, its signals, its file-descriptor limit, its exit code.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The one temp dir of the support module (re-exported where the security
/// tests have always looked for it).
pub use super::TempDir;

/// A running usher binary.
pub struct Child {
    pub child: std::process::Child,
    /// Plain listeners, as logged.
    pub plain: Vec<SocketAddr>,
    /// TLS listeners, as logged.
    pub tls: Vec<SocketAddr>,
    /// Admin listener, as logged.
    pub admin: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Child {
    /// Runs `usher run -c config` (the config should ask for JSON logs and
    /// `:0` listeners). With `nofile`, under `ulimit -n nofile`.
    pub fn spawn(config: &Path, nofile: Option<u32>) -> Child {
        let bin = env!("CARGO_BIN_EXE_usher");
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" run -c \"$1\""))
                    .arg(bin)
                    .arg(config);
                c
            }
            None => {
                let mut c = Command::new(bin);
                c.arg("run").arg("-c").arg(config);
                c
            }
        };
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("usher binary starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let mut c = Child {
            child,
            plain: Vec::new(),
            tls: Vec::new(),
            admin: None,
            log,
        };
        c.wait_started(config);
        c
    }

    /// Waits for "usher started" and its listeners: each accept loop logs
    /// "listening" from its own task, so those lines may come just after.
    /// The admin listener is waited for when the config names an address.
    fn wait_started(&mut self, config: &Path) {
        let text = std::fs::read_to_string(config).unwrap_or_default();
        let want_admin = text.contains("admin = \"") && !text.contains("admin = \"\"");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = self.lines();
            if lines.iter().any(|l| l.contains("usher started")) {
                let (mut plain, mut tls, mut admin) = (Vec::new(), Vec::new(), None);
                for l in &lines {
                    let Ok(v) = serde_json::from_str::<serde_json::Value>(l) else {
                        continue;
                    };
                    let Some(addr) = v["listener"].as_str().and_then(|a| a.parse().ok()) else {
                        continue;
                    };
                    match (v["message"].as_str(), v["tls"].as_bool()) {
                        (Some("admin API listening"), _) => admin = Some(addr),
                        (_, Some(true)) => tls.push(addr),
                        (_, Some(false)) => plain.push(addr),
                        _ => {}
                    }
                }
                if (!plain.is_empty() || !tls.is_empty()) && (admin.is_some() || !want_admin) {
                    (self.plain, self.tls, self.admin) = (plain, tls, admin);
                    return;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("usher exited at start ({status}):\n{}", lines.join("\n"));
            }
            assert!(
                Instant::now() < deadline,
                "usher did not start:\n{}",
                lines.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Everything logged so far.
    pub fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// How many log lines contain `needle`.
    pub fn logged(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until `needle` has been logged `n` times.
    pub fn wait_logged(&self, needle: &str, n: usize, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if self.logged(needle) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Resident memory, KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status")
    }

    /// Open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill only sends a signal to our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the exit.
    pub fn wait_exit(&mut self, wait: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.alive() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
