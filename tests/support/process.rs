//! usher as the real binary, for what only a process shows: signals, exit
//! codes, the CLI, its memory and file descriptors, nodes sharing a store.
//! One handle, [`UsherProcess`]: `usher run -c CONFIG` with stderr kept in
//! memory; the ports the kernel picked are read back from its log (JSON or
//! text), and it is killed on drop.

use std::io::BufRead;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{admin_token_file, write_atomic, TempDir, ADMIN_TOKEN};

/// The usher binary built for these tests.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_usher"))
}

/// `usher check -c path`, run to the end.
pub fn check(path: &Path) -> std::process::Output {
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

/// A running `usher run`, started by one of [`UsherProcess::run`],
/// [`UsherProcess::run_nofile`], [`UsherProcess::spawn`] or
/// [`UsherProcess::node`], and listening on every listener its config names.
pub struct UsherProcess {
    child: Child,
    /// Its config file.
    pub config: PathBuf,
    /// The folder [`UsherProcess::spawn`] was given: removed after the
    /// process is killed (fields drop after [`Drop::drop`]).
    _dir: Option<TempDir>,
    plain: Vec<SocketAddr>,
    tls: Vec<SocketAddr>,
    admin: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl UsherProcess {
    /// Runs `usher run -c config` and waits (blocking the thread, at most
    /// 20 s) until it has logged "usher started" and every listener its
    /// config names (`server.listen`,
    /// `server.tls.listen`, `server.admin`). The config should ask for
    /// `:0` ports; its log may be JSON or text, at info level.
    pub fn run(config: &Path) -> UsherProcess {
        UsherProcess::launch(config, None, None)
    }

    /// [`UsherProcess::run`] under `ulimit -n nofile`.
    pub fn run_nofile(config: &Path, nofile: u32) -> UsherProcess {
        UsherProcess::launch(config, Some(nofile), None)
    }

    /// Writes `text` to `usher.toml` in `dir` and runs it, waiting on a
    /// blocking thread so that the test's runtime keeps running. `dir` lives
    /// as long as the process.
    pub async fn spawn(dir: TempDir, text: &str) -> UsherProcess {
        let config = dir.write("usher.toml", text);
        let run =
            tokio::task::spawn_blocking(move || UsherProcess::launch(&config, None, Some(dir)));
        match run.await {
            Ok(u) => u,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }

    /// One node of several in `dir`: writes `text` to `dir/NAME.toml` with
    /// `admin_token_file` ([`ADMIN_TOKEN`]) added to its `[server]`, so
    /// [`UsherProcess::admin_get`] and friends are let in, and runs it.
    pub fn node(dir: &Path, name: &str, text: &str) -> UsherProcess {
        let text = text.replacen(
            "[server]\n",
            &format!(
                "[server]\nadmin_token_file = \"{}\"\n",
                admin_token_file().display()
            ),
            1,
        );
        assert!(
            text.contains("admin_token_file"),
            "the config needs a [server]"
        );
        let path = dir.join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        UsherProcess::run(&path)
    }

    fn launch(config: &Path, nofile: Option<u32>, dir: Option<TempDir>) -> UsherProcess {
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("sh");
                c.arg("-c")
                    .arg(format!("ulimit -n {n} && exec \"$0\" run -c \"$1\""))
                    .arg(env!("CARGO_BIN_EXE_usher"))
                    .arg(config);
                c
            }
            None => {
                let mut c = bin();
                c.args(["run", "-c"]).arg(config);
                c
            }
        };
        let mut child = cmd
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
        let mut u = UsherProcess {
            child,
            config: config.to_path_buf(),
            _dir: dir,
            plain: Vec::new(),
            tls: Vec::new(),
            admin: None,
            logs,
        };
        u.wait_listening();
        u
    }

    fn wait_listening(&mut self) {
        let text = std::fs::read_to_string(&self.config).unwrap_or_default();
        let want = Wanted::from_config(&text);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let lines = self.logs();
            let (mut plain, mut tls, mut admin) = (Vec::new(), Vec::new(), None);
            for line in &lines {
                match listener(line) {
                    Some(Listener::Plain(a)) => plain.push(a),
                    Some(Listener::Tls(a)) => tls.push(a),
                    Some(Listener::Admin(a)) => admin = admin.or(Some(a)),
                    None => {}
                }
            }
            let started = lines.iter().any(|l| l.contains("usher started"));
            if started
                && plain.len() >= want.plain
                && tls.len() >= want.tls
                && (admin.is_some() || !want.admin)
            {
                (self.plain, self.tls, self.admin) = (plain, tls, admin);
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "usher exited ({status}) before listening:\n{}",
                    lines.join("\n")
                );
            }
            assert!(
                Instant::now() < deadline,
                "usher did not listen within 20 s:\n{}",
                lines.join("\n")
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its first plain listener.
    pub fn addr(&self) -> SocketAddr {
        *self.plain.first().expect("a plain listener")
    }

    /// Its first TLS listener, if any.
    pub fn tls(&self) -> Option<SocketAddr> {
        self.tls.first().copied()
    }

    /// Its admin listener.
    pub fn admin(&self) -> SocketAddr {
        self.admin.expect("an admin listener")
    }

    /// `http://ADDR` of its first plain listener.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The folder holding its config file.
    pub fn dir(&self) -> &Path {
        self.config.parent().expect("the config's folder")
    }

    /// Writes `text` to `name` in [`UsherProcess::dir`] atomically (a new
    /// config or certificate for a reload).
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        write_atomic(self.dir(), name, text)
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

    /// SIGKILL, and reaped: no shutdown, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
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

    /// Its log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// How many log lines so far contain `needle`.
    pub fn logged(&self, needle: &str) -> usize {
        let logs = self.logs.lock().unwrap();
        logs.iter().filter(|l| l.contains(needle)).count()
    }

    /// Waits at most `wait` until `needle` has been logged `n` times.
    pub async fn wait_logged(&self, needle: &str, n: usize, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            if self.logged(needle) >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
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

    /// Its open file descriptors.
    pub fn fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// `GET path` on the admin listener with [`ADMIN_TOKEN`]: (status, body).
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        admin_request(self.admin().port(), "GET", path)
    }

    /// `POST path` (empty JSON body) on the admin listener with
    /// [`ADMIN_TOKEN`]: the status.
    pub fn admin_post(&self, path: &str) -> Option<u16> {
        admin_request(self.admin().port(), "POST", path).map(|(s, _)| s)
    }

    /// A metric's value from `/metrics` (first series whose name and
    /// labels start with `series`).
    pub fn metric(&self, series: &str) -> Option<f64> {
        let (_, body) = self.admin_get("/metrics")?;
        body.lines()
            .find(|l| l.starts_with(series))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for UsherProcess {
    fn drop(&mut self) {
        if self.alive() {
            self.kill();
        }
    }
}

/// The listeners a config names, as counts.
struct Wanted {
    plain: usize,
    tls: usize,
    admin: bool,
}

impl Wanted {
    /// Unset keys count as usher's defaults (one plain listener, the admin
    /// one on); a config that does not parse waits for nothing (usher will
    /// refuse it and exit).
    fn from_config(text: &str) -> Wanted {
        let Ok(t) = text.parse::<toml::Table>() else {
            return Wanted {
                plain: 0,
                tls: 0,
                admin: false,
            };
        };
        let server = t.get("server");
        let count = |v: Option<&toml::Value>| v.and_then(|l| l.as_array()).map(Vec::len);
        Wanted {
            plain: count(server.and_then(|s| s.get("listen"))).unwrap_or(1),
            tls: count(
                server
                    .and_then(|s| s.get("tls"))
                    .and_then(|t| t.get("listen")),
            )
            .unwrap_or(0),
            admin: server
                .and_then(|s| s.get("admin"))
                .and_then(|a| a.as_str())
                .is_none_or(|a| !a.is_empty()),
        }
    }
}

/// A listener as its log line names it.
enum Listener {
    Plain(SocketAddr),
    Tls(SocketAddr),
    Admin(SocketAddr),
}

/// The listener a log line (JSON, or tracing's text format) announces.
fn listener(line: &str) -> Option<Listener> {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
        let addr = v["listener"].as_str()?.parse().ok()?;
        return match (v["message"].as_str()?, v["tls"].as_bool()) {
            ("admin API listening", _) => Some(Listener::Admin(addr)),
            ("listening", Some(false)) => Some(Listener::Plain(addr)),
            ("listening", Some(true)) => Some(Listener::Tls(addr)),
            _ => None,
        };
    }
    let field = |name: &str| {
        let (_, rest) = line.split_once(&format!(" {name}="))?;
        rest.split(' ').next()
    };
    let addr = field("listener")?.parse().ok()?;
    if line.contains(": admin API listening listener=") {
        return Some(Listener::Admin(addr));
    }
    if !line.contains(": listening listener=") {
        return None;
    }
    match field("tls")? {
        "false" => Some(Listener::Plain(addr)),
        "true" => Some(Listener::Tls(addr)),
        _ => None,
    }
}

/// A plain HTTP/1.0 GET on 127.0.0.1 with a short timeout: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    raw_request(port, "GET", path, "")
}

/// A request without a body to an admin listener, with [`ADMIN_TOKEN`] and
/// as JSON: (status, body).
pub fn admin_request(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    let headers =
        format!("Authorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\n");
    raw_request(port, method, path, &headers)
}

fn raw_request(port: u16, method: &str, path: &str, headers: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n{headers}Content-Length: 0\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.split(' ').nth(1)?.parse().ok()?;
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Some((status, body.to_string()))
}
