//! usher as a real process for black-box tests: its own config file and
//! ports on 127.0.0.1, a log file beside the config, killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A fresh directory under the system temp dir, for one test: named after
/// `name`, the process and a counter, so tests sharing a binary (and so a
/// process id) never share a directory even when they share a name.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "usher-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// [`temp_dir`] with a room signing key in `keys` (every node of a test
/// shares it, as every node of a deployment shares its keys file).
pub fn keyed_temp_dir(name: &str) -> PathBuf {
    let d = temp_dir(name);
    std::fs::write(
        d.join("keys"),
        usher::tokens::Keyring::generate_line("t1").unwrap() + "\n",
    )
    .unwrap();
    d
}

/// The admin token of every usher [`Usher::start`] runs.
pub const ADMIN_TOKEN: &str = "procs-admin-token-0123456789abcdef-0123456789";

/// One usher process.
pub struct Usher {
    child: Child,
    /// `http://127.0.0.1:PORT` of the public listener.
    pub base: String,
    /// `http://127.0.0.1:PORT` of the admin listener.
    pub admin: String,
    /// Where its log goes.
    pub log: PathBuf,
}

impl Usher {
    /// Writes `config(0, 0)` to `dir/NAME.toml` (so both listeners take a
    /// port the kernel picks), starts `usher run` on it, reads the ports
    /// back from its log and waits until its admin listener answers
    /// `/healthz`.
    /// The config's `[server]` gets `admin_token_file` (holding
    /// [`ADMIN_TOKEN`]) added, so tests need not write it.
    pub fn start(dir: &Path, name: &str, config: impl Fn(u16, u16) -> String) -> Usher {
        let path = dir.join(format!("{name}.toml"));
        let token = dir.join("admin.token");
        std::fs::write(&token, format!("{ADMIN_TOKEN}\n")).unwrap();
        let text = config(0, 0).replacen(
            "[server]\n",
            &format!("[server]\nadmin_token_file = \"{}\"\n", token.display()),
            1,
        );
        assert!(
            text.contains("admin_token_file"),
            "the config needs a [server]"
        );
        std::fs::write(&path, text).unwrap();
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_usher"))
            .args(["run", "-c"])
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let started = Instant::now();
        let (port, admin) = loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let (Some(port), Some(admin)) = (
                logged_port(&text, "listening", false),
                logged_port(&text, "admin API listening", true),
            ) {
                break (port, admin);
            }
            if let Ok(Some(st)) = child.try_wait() {
                panic!("usher {name} exited ({st}): {text}");
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "usher {name} did not log its listeners: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut u = Usher {
            child,
            base: format!("http://127.0.0.1:{port}"),
            admin: format!("http://127.0.0.1:{admin}"),
            log,
        };
        while http_get(admin, "/healthz").is_none_or(|(s, _)| s != 200) {
            if let Ok(Some(st)) = u.child.try_wait() {
                panic!(
                    "usher {name} exited ({st}): {}",
                    std::fs::read_to_string(&u.log).unwrap_or_default()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "usher {name} did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        u
    }

    /// The process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no shutdown, no goodbye.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// `GET path` on the admin listener, with the token: (status, body).
    pub fn admin_get(&self, path: &str) -> Option<(u16, String)> {
        let port = self.admin.rsplit(':').next()?.parse().ok()?;
        admin_request(port, "GET", path)
    }

    /// `POST path` (empty JSON body) on the admin listener, with the token: the status.
    pub fn admin_post(&self, path: &str) -> Option<u16> {
        let port = self.admin.rsplit(':').next()?.parse().ok()?;
        admin_request(port, "POST", path).map(|(s, _)| s)
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

impl Drop for Usher {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The port of the first listener logged with `message` (text or JSON
/// log): the admin listener, or (`admin` false) the first plain one.
fn logged_port(log: &str, message: &str, admin: bool) -> Option<u16> {
    log.lines()
        .filter(|l| l.contains(message) && (admin || !l.contains("admin")))
        .filter(|l| admin || l.contains("tls=false") || l.contains("\"tls\":false"))
        .find_map(|l| {
            let (_, rest) = l
                .split_once("listener=")
                .or_else(|| l.split_once("\"listener\":\""))?;
            let addr = rest.split(['"', ' ']).next()?;
            addr.parse::<std::net::SocketAddr>().ok().map(|a| a.port())
        })
}

/// A plain HTTP/1.0 GET on 127.0.0.1 with a short timeout: (status, body).
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    http_request(port, "GET", path)
}

/// A plain HTTP/1.0 request without a body: (status, body).
pub fn http_request(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    raw_request(port, method, path, "")
}

/// A request without a body to the admin listener of an usher started by
/// [`Usher::start`]: with its token, and as JSON. (status, body).
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
