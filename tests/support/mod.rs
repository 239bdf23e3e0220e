//! The one support module of the integration tests, shared by both test
//! binaries (`tests/integration.rs` has it as `mod support`,
//! `tests/gate/main.rs` by path). Everything
//! listens on 127.0.0.1:0, reads its ports back, and every wait is bounded.
//!
//! - usher in-process: [`inproc::Usher`] (the library's `App` and `serve`).
//! - usher as the real binary: [`process::UsherProcess`] (ports read back
//!   from its log, the log kept; signals, exit codes, the CLI, memory, file
//!   descriptors and their limit, the admin API; nodes of a shared store).
//! - origins: the scriptable [`origin::Origin`], the raw recording
//!   [`security::Recorder`]; [`activated::Activated`] for socket activation.
//! - Redis: [`redis::RedisServer`], [`cluster::Cluster`], [`sentinel::Sentinel`],
//!   [`relay::Relay`], [`time_shift::TimeShift`]; voucher verdicts in [`claims`].
//! - clients: raw HTTP/1.1 ([`h1`], [`clients`]), h2c and TLS ([`clients`],
//!   [`tls`]), raw h2 frames ([`h2raw`]), hyper's client ([`http`]), the
//!   headless browser ([`browser`]).
//! - temp dirs: [`TempDir`] (removed on drop; [`TempDir::keyed`] with a room key).
//! - PromQL and dashboards: [`promql`].
#![allow(dead_code, unused_imports)]

pub mod activated;
pub mod browser;
pub mod claims;
pub mod clients;
pub mod cluster;
pub mod h1;
pub mod h2raw;
pub mod http;
pub mod inproc;
pub mod origin;
pub mod process;
pub mod promql;
pub mod redis;
pub mod relay;
pub mod security;
pub mod sentinel;
pub mod time_shift;
pub mod tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

pub use h1::{Conn, Head, Response};
pub use origin::{Origin, Recorded, Reply};

/// The crowd tests of a binary share the machine by what they measure.
/// A crowd that measures how busy the gate keeps the origin
/// ([`crowd_alone`]: the closed-loop crowd and the gate's back-off, in
/// `tests/gate`) never runs beside another crowd, and has a binary of its
/// own besides: any load beside it shows as a gate that cut for nothing.
/// The other crowds ([`crowd_shared`]: the fixed-rate release,
/// room_overload, the voucher and feedback floods) check rates, order and
/// caps that a neighbour does not move, and run beside each other. Measured
/// alone (`/usr/bin/time`, user + system CPU over wall time): closed-loop
/// crowd 0.7 cores, back-off 0.26; feedback flood 1.1, fixed-rate release
/// 0.19, room_overload 0.08, voucher claims 0.13.
///
/// Shared crowds do not queue behind a lone one that waits (a fair lock
/// would split them into two rounds): a lone crowd waits until no crowd
/// runs.
static CROWDS: Crowds = Crowds {
    running: std::sync::Mutex::new(Running {
        shared: 0,
        alone: false,
    }),
    changed: tokio::sync::Notify::const_new(),
};

struct Crowds {
    running: std::sync::Mutex<Running>,
    changed: tokio::sync::Notify,
}

struct Running {
    shared: usize,
    alone: bool,
}

/// Held while a crowd test runs; lets the next one in when dropped.
pub struct CrowdGuard {
    alone: bool,
}

impl Crowds {
    async fn enter(&'static self, alone: bool) -> CrowdGuard {
        loop {
            // registered before the check: a change in between still wakes it
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut r = self.running.lock().unwrap_or_else(|e| e.into_inner());
                if !r.alone && (!alone || r.shared == 0) {
                    if alone {
                        r.alone = true;
                    } else {
                        r.shared += 1;
                    }
                    return CrowdGuard { alone };
                }
            }
            changed.await;
        }
    }
}

impl Drop for CrowdGuard {
    fn drop(&mut self) {
        let mut r = CROWDS.running.lock().unwrap_or_else(|e| e.into_inner());
        if self.alone {
            r.alone = false;
        } else {
            r.shared -= 1;
        }
        drop(r);
        CROWDS.changed.notify_waiters();
    }
}

/// Held by a crowd test that must not share the machine with another crowd.
pub async fn crowd_alone() -> CrowdGuard {
    CROWDS.enter(true).await
}

/// Held by a crowd test that may run beside other shared crowds, never
/// beside a lone one.
pub async fn crowd_shared() -> CrowdGuard {
    CROWDS.enter(false).await
}

/// Runs `fut`, failing the test if it takes longer than `secs`.
pub async fn within<F: std::future::Future>(secs: u64, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(secs), fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: still not done after {secs} s"),
    }
}

/// The admin token of every usher these helpers configure
/// (`server.admin_token_file` = [`admin_token_file`]).
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef-0123456789";

/// A file holding [`ADMIN_TOKEN`], written once per test process: one
/// file for every test process (the same text, replaced atomically, so a
/// reader never sees half of it), not one left behind by each.
pub fn admin_token_file() -> &'static Path {
    static FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    FILE.get_or_init(|| {
        let dir = std::env::temp_dir();
        let temp = dir.join(format!("usher-test-admin-{}.token.new", std::process::id()));
        std::fs::write(&temp, format!("{ADMIN_TOKEN}\n")).expect("write the admin token file");
        let p = dir.join("usher-test-admin.token");
        std::fs::rename(&temp, &p).expect("put the admin token file in place");
        p
    })
}

/// A config for usher in front of `origin`, listening on 127.0.0.1:0, with
/// extra lines for `[server]` and `[origin]`; `tail` is appended as is.
/// Its admin API takes [`ADMIN_TOKEN`].
pub fn config(origin: SocketAddr, server: &str, origin_extra: &str, tail: &str) -> String {
    format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\
         admin_token_file = \"{}\"\n{server}\n\n\
         [origin]\nurl = \"http://{origin}\"\n{origin_extra}\n\n\
         [log]\nformat = \"json\"\nlevel = \"info\"\n\n{tail}\n",
        admin_token_file().display()
    )
}

/// The test pattern: a long body whose every byte depends on its offset, so
/// lost, repeated or reordered bytes show, checked with plain slice compares
/// (fast even in a debug build, unlike a hash).
/// One request counted in flight at a test origin until it ends, or until
/// hyper drops it unanswered (its client, usher, went away): the count
/// never keeps a request the origin no longer works on.
pub struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    /// Counts one more; returns the number in flight now, this one included.
    pub fn enter(count: &'a AtomicUsize) -> (InFlight<'a>, usize) {
        (InFlight(count), count.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

pub mod pattern {
    use std::sync::OnceLock;

    /// The period: a prime, so it never lines up with buffer sizes.
    const PERIOD: usize = 65_521;

    fn table() -> &'static [u8] {
        static T: OnceLock<Vec<u8>> = OnceLock::new();
        T.get_or_init(|| {
            let mut x: u32 = 0x9e37_79b9;
            let mut t: Vec<u8> = (0..PERIOD)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    (x >> 24) as u8
                })
                .collect();
            // twice over, so any period-long window is one slice
            t.extend_from_within(..);
            t
        })
        .as_slice()
    }

    /// The pattern's bytes from `offset`, in chunks of at most `PERIOD`.
    fn pieces(offset: u64, len: usize) -> impl Iterator<Item = (usize, &'static [u8])> {
        let t = table();
        let mut done = 0usize;
        std::iter::from_fn(move || {
            if done == len {
                return None;
            }
            let start = ((offset + done as u64) % PERIOD as u64) as usize;
            let n = (len - done).min(PERIOD);
            let piece = (done, &t[start..start + n]);
            done += n;
            Some(piece)
        })
    }

    /// Fills `buf` with the pattern at `offset`.
    pub fn fill(offset: u64, buf: &mut [u8]) {
        let len = buf.len();
        for (at, p) in pieces(offset, len) {
            buf[at..at + p.len()].copy_from_slice(p);
        }
    }

    /// Whether `buf` is the pattern at `offset`.
    pub fn check(offset: u64, buf: &[u8]) -> bool {
        pieces(offset, buf.len()).all(|(at, p)| &buf[at..at + p.len()] == p)
    }
}

/// A temporary folder, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// A new empty folder under the system temp dir.
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let p = std::env::temp_dir().join(format!(
            "usher-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    /// [`TempDir::new`] with a room signing key in `keys` (every node of a
    /// test shares it, as every node of a deployment shares its keys file).
    pub fn keyed(tag: &str) -> TempDir {
        let d = TempDir::new(tag);
        let key = usher::tokens::Keyring::generate_line("t1").expect("a room key");
        d.write("keys", &(key + "\n"));
        d
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `name` in it atomically: [`write_atomic`].
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        write_atomic(&self.0, name, text)
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `text` to `name` in `dir` atomically (write, then rename), so a
/// reader (usher reloading its config) never sees half a file.
pub fn write_atomic(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, &p).expect("rename temp file");
    p
}

/// Writes a development certificate for localhost / 127.0.0.1 into `dir`;
/// returns (cert path, key path, cert PEM).
pub fn dev_cert(dir: &Path) -> (PathBuf, PathBuf, String) {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let (cert, key) = usher::tls::dev_certificate(&names, 2).expect("dev certificate");
    let c = write_atomic(dir, "dev.crt", &cert);
    let k = write_atomic(dir, "dev.key", &key);
    (c, k, cert)
}
