//! usher under a service manager, played by the test: the notify protocol
//! (READY, RELOADING with MONOTONIC_USEC, READY, STOPPING, WATCHDOG) over a
//! real datagram socket, socket activation with inherited fds across a
//! restart, `usher ctl` and `usher keygen`, `systemd-analyze verify` on
//! the shipped units when the tool exists, and the unit, the example
//! configs and the operations guide agreeing on credential names.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::support::TempDir;

const USHER: &str = env!("CARGO_BIN_EXE_usher");

/// A fresh folder for one test's files, removed after it.
fn temp_dir(name: &str) -> TempDir {
    TempDir::new(&format!("sd-{name}"))
}

/// A loopback URL where nothing listens.
fn unused_origin() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", l.local_addr().unwrap())
}

/// The admin token of [`write_config`]'s usher (`usher ctl` gets it from
/// `$USHER_ADMIN_TOKEN`).
const ADMIN_TOKEN: &str = "systemd-admin-token-0123456789abcdef-0123";

fn write_config(dir: &Path, listen: &str, admin: &str) -> PathBuf {
    let path = dir.join("usher.toml");
    std::fs::write(dir.join("admin.token"), ADMIN_TOKEN).unwrap();
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = [\"{listen}\"]\nadmin = \"{admin}\"\nshutdown_grace = \"2s\"\n\
             admin_token_file = \"admin.token\"\n\n\
             [origin]\nurl = \"{}\"\n",
            unused_origin()
        ),
    )
    .unwrap();
    path
}

/// The test's end of `$NOTIFY_SOCKET`.
struct Manager {
    sock: UnixDatagram,
    path: PathBuf,
    watchdogs: usize,
}

impl Manager {
    fn new(dir: &Path) -> Manager {
        let path = dir.join("notify.sock");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        Manager {
            sock,
            path,
            watchdogs: 0,
        }
    }

    /// The next datagram that is not a watchdog ping.
    fn next(&mut self) -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = self.sock.recv(&mut buf).expect("a notification in time");
            let msg = String::from_utf8(buf[..n].to_vec()).unwrap();
            if msg == "WATCHDOG=1" {
                self.watchdogs += 1;
            } else {
                return msg;
            }
        }
    }
}

/// Kills the child if the test fails half-way.
struct Usher(Child);

impl Drop for Usher {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Usher {
    fn signal(&self, sig: libc::c_int) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.0.id() as libc::pid_t, sig) }, 0);
    }

    fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = self.0.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "usher did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn assign(msg: &str, key: &str) -> Option<String> {
    msg.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

fn monotonic_usec() -> u64 {
    usher::notify::monotonic_usec()
}

fn ctl(admin: &str, args: &[&str]) -> Output {
    Command::new(USHER)
        .args(["ctl", "--admin", admin])
        .args(args)
        .env("USHER_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .unwrap()
}

#[test]
fn notifies_ready_reloading_ready_and_stopping_in_order() {
    let dir = temp_dir("notify");
    let cfg = write_config(&dir, "127.0.0.1:0", "127.0.0.1:0");
    let mut mgr = Manager::new(&dir);
    let mut usher = Usher(
        Command::new(USHER)
            .args(["run", "-c"])
            .arg(&cfg)
            .env("NOTIFY_SOCKET", &mgr.path)
            .env("WATCHDOG_USEC", "200000")
            .env_remove("WATCHDOG_PID")
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let ready = mgr.next();
    assert_eq!(ready.lines().next(), Some("READY=1"), "{ready}");
    let status = assign(&ready, "STATUS").unwrap();
    let admin = status.rsplit("admin on ").next().unwrap().to_string();
    assert!(admin.parse::<SocketAddr>().is_ok(), "{status}");

    let out = ctl(&admin, &["status"]);
    assert!(out.status.success(), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["version"], env!("CARGO_PKG_VERSION"));

    let before = monotonic_usec();
    usher.signal(libc::SIGHUP);
    let reloading = mgr.next();
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading}");
    let usec: u64 = lines
        .next()
        .and_then(|l| l.strip_prefix("MONOTONIC_USEC="))
        .expect("MONOTONIC_USEC in the same datagram")
        .parse()
        .unwrap();
    assert!(before <= usec && usec <= monotonic_usec());
    let ready = mgr.next();
    assert_eq!(ready.lines().next(), Some("READY=1"), "{ready}");
    assert_eq!(assign(&ready, "STATUS").as_deref(), Some("config reloaded"));

    // A broken file: the reload fails, the service is ready again anyway.
    std::fs::write(&cfg, "[origin]\nurl = 42\n").unwrap();
    usher.signal(libc::SIGHUP);
    assert!(mgr.next().starts_with("RELOADING=1\nMONOTONIC_USEC="));
    let ready = mgr.next();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    let status = assign(&ready, "STATUS").unwrap();
    assert!(status.starts_with("reload failed"), "{status}");
    assert!(!status.contains('\n'));
    let out = ctl(&admin, &["reload"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["result"], "failure");

    usher.signal(libc::SIGTERM);
    assert!(mgr.next().starts_with("STOPPING=1"));
    assert_eq!(usher.wait_exit().code(), Some(0));
    assert!(mgr.watchdogs > 0, "no WATCHDOG=1 while running");
}

#[test]
fn ctl_says_when_the_admin_listener_is_unreachable() {
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let out = ctl(&closed.to_string(), &["pause"]);
    assert_eq!(out.status.code(), Some(69), "{out:?}");
}

#[test]
fn keygen_prints_a_line_the_keyring_accepts() {
    let out = Command::new(USHER)
        .args(["keygen", "--kid", "test1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let line = String::from_utf8(out.stdout).unwrap();
    assert!(line.starts_with("test1:"));
    let ring = usher::tokens::Keyring::parse(&line).unwrap();
    assert_eq!(ring.signing_kid(), "test1");
    let out = Command::new(USHER).arg("keygen").output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().starts_with('k'));
    let out = Command::new(USHER)
        .args(["keygen", "--kid", "no spaces"])
        .output()
        .unwrap();
    assert!(!out.status.success());
}

/// Starts usher with `fds` as fds 3, 4, ... the way systemd does: the
/// `sh` wrapper sets `LISTEN_PID` to its own pid, which `exec` keeps.
fn activated(cfg: &Path, mgr: &Manager, fds: &[RawFd], names: &str) -> Usher {
    assert!(fds.len() <= 4);
    let mut src = [-1; 4];
    src[..fds.len()].copy_from_slice(fds);
    let n = fds.len();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", USHER, "run", "-c"])
        .arg(cfg)
        .env("NOTIFY_SOCKET", &mgr.path)
        .env("LISTEN_FDS", n.to_string())
        .env("LISTEN_FDNAMES", names)
        .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (fcntl, dup2, close) on fixed arrays.
    unsafe {
        cmd.pre_exec(move || {
            // Move the sources out of the way first, so placing one on
            // fd 3 + i cannot clobber another that happens to sit there.
            let mut high = [-1; 4];
            for (h, fd) in high.iter_mut().zip(&src).take(n) {
                *h = libc::fcntl(*fd, libc::F_DUPFD, 100);
                if *h < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for (target, h) in (3..).zip(&high).take(n) {
                // dup2 clears FD_CLOEXEC on the new fd, so it survives exec.
                if libc::dup2(*h, target) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(*h);
            }
            Ok(())
        });
    }
    Usher(cmd.spawn().unwrap())
}

fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

#[test]
fn socket_activation_serves_inherited_sockets_and_a_restart_refuses_nobody() {
    let dir = temp_dir("activation");
    // The test holds the sockets, as systemd does: they outlive each usher.
    let plain = TcpListener::bind("127.0.0.1:0").unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").unwrap();
    let stray = TcpListener::bind("127.0.0.1:0").unwrap();
    let (plain_addr, admin_addr) = (plain.local_addr().unwrap(), admin.local_addr().unwrap());
    // The admin socket is found by its name; usher could not bind the plain
    // address itself (the test's socket holds it), so serving proves adoption.
    let cfg = write_config(&dir, &plain_addr.to_string(), "127.0.0.1:0");
    let fds = [plain.as_raw_fd(), admin.as_raw_fd(), stray.as_raw_fd()];
    let mut mgr = Manager::new(&dir);

    let mut first = activated(&cfg, &mgr, &fds, "http:admin:stray");
    let ready = mgr.next();
    assert!(ready.starts_with("READY=1\n"), "{ready}");
    assert!(ready.contains(&format!("admin on {admin_addr}")), "{ready}");
    assert!(get(admin_addr, "/healthz").ends_with("\r\n\r\nok\n"));
    assert!(get(plain_addr, "/").starts_with("HTTP/1.1 "));

    first.signal(libc::SIGTERM);
    assert!(mgr.next().starts_with("STOPPING=1"));
    assert_eq!(first.wait_exit().code(), Some(0));
    let mut log = String::new();
    if let Some(mut e) = first.0.stderr.take() {
        let _ = e.read_to_string(&mut log);
    }
    assert!(log.contains("matches no configured listener"), "{log}");

    // Between the two processes a visitor connects and asks: the kernel
    // queues them on the inherited socket until the next usher accepts.
    let mut waiting = TcpStream::connect(plain_addr).expect("no refusal while restarting");
    waiting
        .write_all(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();

    let mut second = activated(&cfg, &mgr, &fds, "http:admin:stray");
    assert!(mgr.next().starts_with("READY=1\n"));
    let mut answer = String::new();
    let _ = waiting.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 "), "{answer:?}");
    second.signal(libc::SIGTERM);
    assert_eq!(second.wait_exit().code(), Some(0));
}

#[test]
fn shipped_units_pass_systemd_analyze_verify() {
    let Some(tool) = which("systemd-analyze") else {
        println!("note: systemd-analyze not found; unit files not verified");
        return;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let dir = temp_dir("units");
    for unit in ["usher.service", "usher.socket"] {
        let text = std::fs::read_to_string(root.join(unit)).unwrap();
        // verify checks that ExecStart binaries exist: point them at ours.
        std::fs::write(dir.join(unit), text.replace("/usr/local/bin/usher", USHER)).unwrap();
    }
    let out = Command::new(tool)
        .arg("verify")
        .arg(dir.join("usher.service"))
        .arg(dir.join("usher.socket"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Lines about our units; the host's own units may have unrelated noise.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("usher.service") || l.contains("usher.socket"))
        .collect();
    assert!(out.status.success() && ours.is_empty(), "{err}");
}

/// The values of `Key=` lines in a unit file.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_string())
        .collect()
}

#[test]
fn unit_credentials_and_example_configs_agree() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("systemd/usher.service")).unwrap();
    let mut loaded = std::collections::BTreeSet::new();
    for v in unit_values(&unit, "LoadCredential") {
        let (id, source) = v.split_once(':').unwrap_or((&v, &v));
        // A name, searched in the credential store, is skipped when
        // missing; an absolute path that is missing fails the start
        // (243/CREDENTIALS) even where the config does not need it.
        assert!(
            !source.contains('/'),
            "LoadCredential={v}: name the source, not a path"
        );
        loaded.insert(id.to_string());
    }
    assert!(!loaded.is_empty(), "the unit loads no credential");

    const DIR: &str = "/run/credentials/usher.service/";
    let mut used = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(root.join("config")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for (at, _) in text.match_indices(DIR) {
            let name: String = text[at + DIR.len()..]
                .chars()
                .take_while(|c| *c != '"')
                .collect();
            assert!(
                loaded.contains(&name),
                "{} names credential `{name}`, which the unit does not load ({loaded:?})",
                path.display()
            );
            used.insert(name);
        }
        // no other absolute secret path: everything else is relative to
        // the config's folder or under the state directory
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            if let Some((key, value)) = line.split_once('=') {
                let value = value.trim();
                if key.trim().ends_with("_file") || key.trim() == "key" {
                    assert!(
                        value.starts_with(&format!("\"{DIR}")) || !value.starts_with("\"/"),
                        "{}: {line}: a file by absolute path outside the credentials",
                        path.display()
                    );
                }
            }
        }
    }
    assert_eq!(
        used, loaded,
        "credentials the unit loads but no example uses"
    );

    let ops = std::fs::read_to_string(root.join("docs/OPERATIONS.md")).unwrap();
    for name in &loaded {
        assert!(
            ops.contains(&format!("| `{name}` | `/etc/credstore/usher.{name}` |")),
            "docs/OPERATIONS.md does not list credential {name}"
        );
        assert!(
            unit.contains(&format!("LoadCredential={name}:usher.{name}\n")),
            "the unit loads {name} from another source than the guide says"
        );
    }

    // 78 is not retried: usher run checks itself (RestartPreventExitStatus
    // covers the main process only, never ExecStartPre=).
    assert!(unit_values(&unit, "ExecStartPre").is_empty(), "{unit}");
    assert!(unit_values(&unit, "ExecStart")
        .iter()
        .any(|v| v.contains("usher run")));
    assert!(unit_values(&unit, "RestartPreventExitStatus")
        .iter()
        .any(|v| v.split_whitespace().any(|s| s == "78")));
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}
