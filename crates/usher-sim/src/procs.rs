//! The processes a run starts and stops: the theater (the demo origin),
//! usher (one process, or several nodes sharing a `redis-server` of the
//! run's own), all on loopback ports picked here, plus `/proc` readings of
//! their CPU and memory and a small probe client for health and stats.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::scenario::Scenario;
use super::SimError;

/// Largest probe answer read (usher's `/metrics` is a few tens of kilobytes).
const MAX_PROBE_BODY: usize = 4 * 1024 * 1024;
/// How long a child has to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Process names of the usher nodes of a multi-node run (also their log
/// files), one per node up to [`super::scenario::MAX_NODES`].
pub const NODE_NAMES: [&str; super::scenario::MAX_NODES] = [
    "usher-1", "usher-2", "usher-3", "usher-4", "usher-5", "usher-6", "usher-7", "usher-8",
];
/// The Redis server a multi-node run starts (looked up on `PATH`).
pub const REDIS_SERVER: &str = "redis-server";

/// Where the binaries are.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// The `usher` binary.
    pub usher: PathBuf,
    /// The theater example binary.
    pub theater: PathBuf,
}

impl Binaries {
    /// `usher` and `examples/theater` in the directory of the running
    /// executable (`target/<profile>/`), or of its parent when it runs from
    /// `deps/` (a test binary).
    pub fn beside_current_exe() -> Result<Binaries, SimError> {
        let exe = std::env::current_exe().map_err(SimError::Io)?;
        let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
        if dir.ends_with("deps") {
            dir.pop();
        }
        Ok(Binaries {
            usher: dir.join("usher"),
            theater: dir.join("examples").join("theater"),
        })
    }
}

/// A free loopback port (bound, read, released; the child binds it next).
pub fn free_port() -> Result<u16, SimError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(SimError::Io)?;
    Ok(l.local_addr().map_err(SimError::Io)?.port())
}

/// A loopback address.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A started child process.
pub struct Proc {
    /// `theater` or `usher`.
    pub name: &'static str,
    /// Its process id.
    pub pid: u32,
    log: PathBuf,
    child: std::process::Child,
}

impl Proc {
    /// Starts `program` with `args`, output to `<dir>/<name>.log`.
    pub fn spawn(
        name: &'static str,
        program: &Path,
        args: &[String],
        dir: &Path,
    ) -> Result<Proc, SimError> {
        let log = dir.join(format!("{name}.log"));
        let spawn_err = |e: std::io::Error| SimError::Spawn {
            what: name,
            path: program.display().to_string(),
            reason: e.to_string(),
        };
        let out = std::fs::File::create(&log).map_err(spawn_err)?;
        let err = out.try_clone().map_err(spawn_err)?;
        // Its own process group: a Ctrl-C at the terminal reaches only the
        // simulator, which then stops the run's children in order (visitors,
        // usher nodes, Redis last) instead of racing them.
        let child = std::process::Command::new(program)
            .process_group(0)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(spawn_err)?;
        let pid = child.id();
        Ok(Proc {
            name,
            pid,
            log,
            child,
        })
    }

    /// The last lines of its output, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(8)..].join("\n")
    }

    /// Whether it has exited.
    pub fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, a grace period, then SIGKILL.
    pub async fn stop(mut self) {
        if self.exited() {
            return;
        }
        if let Ok(pid) = i32::try_from(self.pid) {
            // SAFETY: kill(2) on our own child's pid; no memory is touched.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let end = tokio::time::Instant::now() + STOP_GRACE;
        while tokio::time::Instant::now() < end {
            if self.exited() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Drop kills it.
    }
}

impl Drop for Proc {
    /// A child never outlives its run, even on an error path or a panic.
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts the theater on `port` with the scenario's origin (latency in real time).
pub fn start_theater(bin: &Path, port: u16, s: &Scenario, dir: &Path) -> Result<Proc, SimError> {
    let o = &s.origin;
    let args = vec![
        "--listen".into(),
        loopback(port).to_string(),
        "--capacity".into(),
        o.capacity.to_string(),
        "--latency-ms".into(),
        s.origin_latency_real_ms().to_string(),
        "--overload".into(),
        o.overload.clone(),
        "--vouchers".into(),
        o.vouchers.to_string(),
    ];
    Proc::spawn("theater", bin, &args, dir)
}

/// Starts the run's own `redis-server` on loopback `port`. Nothing is
/// saved unless `aof_dir` is given: then every write is logged and synced
/// there (`appendonly yes`, `appendfsync always`), the setting usher
/// requires of a Redis that holds vouchers (docs/STATE.md).
pub fn start_redis(port: u16, aof_dir: Option<&Path>, dir: &Path) -> Result<Proc, SimError> {
    start_redis_at(Path::new(REDIS_SERVER), port, aof_dir, dir)
}

fn start_redis_at(
    program: &Path,
    port: u16,
    aof_dir: Option<&Path>,
    dir: &Path,
) -> Result<Proc, SimError> {
    let mut args: Vec<String> = vec![
        "--port".into(),
        port.to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        String::new(),
    ];
    match aof_dir {
        Some(aof) => args.extend([
            "--appendonly".into(),
            "yes".into(),
            "--appendfsync".into(),
            "always".into(),
            "--dir".into(),
            aof.display().to_string(),
        ]),
        None => args.extend(["--appendonly".into(), "no".into()]),
    }
    Proc::spawn("redis-server", program, &args, dir).map_err(|e| match e {
        SimError::Spawn { what, path, reason } => SimError::Spawn {
            what,
            path,
            reason: format!(
                "{reason}; [usher] nodes > 1 needs redis-server installed and on PATH (apt install redis-server)"
            ),
        },
        other => other,
    })
}

/// Waits until the Redis on `port` answers `PING`, the process dies, or
/// `within` passes.
pub async fn wait_redis(proc: &mut Proc, port: u16, within: Duration) -> Result<(), SimError> {
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        if proc.exited() {
            break;
        }
        let ping = tokio::time::timeout(Duration::from_millis(500), ping_redis(port));
        if let Ok(Ok(true)) = ping.await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(SimError::NotReady {
        what: proc.name,
        addr: loopback(port),
        log: proc.log_tail(),
    })
}

async fn ping_redis(port: u16) -> std::io::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut c = tokio::net::TcpStream::connect(loopback(port)).await?;
    c.write_all(b"PING\r\n").await?;
    let mut buf = [0u8; 16];
    let n = c.read(&mut buf).await?;
    Ok(buf[..n].starts_with(b"+PONG"))
}

/// One node's part in a multi-node run: the shared Redis and its own id.
#[derive(Debug, Clone, Copy)]
pub struct NodeStore<'a> {
    /// `redis://127.0.0.1:PORT/`.
    pub url: &'a str,
    /// `sim-K`.
    pub node_id: &'a str,
}

/// usher's config for a run: loopback listeners, the scenario's room in
/// real time, per-address limits off (every simulated visitor shares
/// 127.0.0.1) unless the scenario gives `[addresses]` (then usher's
/// defaults in simulated time, see `limits_scaled`), a key file so the simulator can read ticket numbers; with
/// `store`, the Redis backend and this node's id (and its share of the
/// origin's in-flight cap).
pub fn usher_config(
    s: &Scenario,
    listen: u16,
    admin: u16,
    origin: u16,
    keys: &Path,
    store: Option<NodeStore<'_>>,
) -> String {
    let u = &s.usher;
    let store = store.map_or(String::new(), |n| {
        format!(
            "\n[store]\nbackend = \"redis\"\nurl = \"{}\"\nnode_id = \"{}\"\n",
            n.url, n.node_id
        )
    });
    let ms = |sim: f64| format!("{}ms", s.real(sim).as_millis().max(1));
    let tick_ms = (250.0 / s.time_scale).round().max(10.0) as u64;
    format!(
        r#"# Generated by usher-sim for scenario "{name}" (time_scale {scale}).
[server]
listen = ["{listen}"]
admin = "{admin}"
max_connections = {max_conn}
shutdown_grace = "2s"

[origin]
url = "http://{origin}"
max_in_flight = {in_flight}
max_idle = {in_flight}
response_timeout = "{timeout}"

[log]
format = "text"
level = "warn"
access = "off"

[room]
event = "sim"
mode = "fifo"
keys_file = "{keys}"
{max_active}{rate}burst = {burst}
session_duration = "{session}"
ticket_grace = "{grace}"
claim_window = "{claim}"
refresh = "{refresh}s"
tick = "{tick_ms}ms"
{limits}{store}"#,
        name = s.name.replace(['"', '\\', '\n'], " "),
        scale = s.time_scale,
        listen = loopback(listen),
        admin = loopback(admin),
        max_conn = s.client.connections + 1_000,
        origin = loopback(origin),
        in_flight = s.origin_max_in_flight_per_node(),
        timeout = ms(s.client.timeout_seconds),
        keys = keys.display(),
        max_active = u
            .max_active_users
            .map_or(String::new(), |n| format!("max_active_users = {n}\n")),
        rate = s
            .rate_real_per_minute()
            .map_or(String::new(), |r| format!("new_users_per_minute = {r}\n")),
        burst = u.burst,
        session = ms(u.session_seconds),
        grace = ms(u.ticket_grace_seconds),
        claim = ms(u.claim_window_seconds),
        refresh = s.refresh_real().as_secs(),
        limits = if s.addresses.is_some() {
            limits_scaled(s.time_scale)
        } else {
            LIMITS_OFF.to_string()
        },
    )
}

/// Proof-of-work bits in a simulation: low on purpose (see `limits_scaled`).
pub const SIM_TICKET_PROOF_BITS: u32 = 10;

/// usher's per-address limits for visitors from `[addresses]`: its
/// defaults in simulated time, so multiplied by `time_scale` in real time
/// (as the admission rate is). The bursts, derived from the rates by usher,
/// grow with them. The proof of work is cheap: the simulator solves every
/// challenge on the same cores as usher, and what a phone pays for one is
/// not what a run measures (see the report's notes).
fn limits_scaled(scale: f64) -> String {
    use usher::config::room::{
        DEFAULT_REQUESTS_PER_SECOND_PER_IP, DEFAULT_TICKETS_PER_MINUTE_PER_IP,
    };
    let scaled = |n: u32| {
        (f64::from(n) * scale.max(1.0))
            .round()
            .min(f64::from(u32::MAX)) as u32
    };
    format!(
        "
[room.limits]
# usher's defaults in simulated time (x time_scale {scale} in real time)
tickets_per_minute_per_ip = {}
requests_per_second_per_ip = {}
# low: the simulator solves every challenge on usher's own cores
ticket_proof_bits = {SIM_TICKET_PROOF_BITS}
",
        scaled(DEFAULT_TICKETS_PER_MINUTE_PER_IP),
        scaled(DEFAULT_REQUESTS_PER_SECOND_PER_IP),
    )
}

/// usher's per-address limits turned off: without `[addresses]` every
/// simulated visitor is 127.0.0.1, one address for the whole crowd.
const LIMITS_OFF: &str = "
[room.limits]
tickets_per_minute_per_ip = 100000000
requests_per_second_per_ip = 0
";

/// A small client for health checks, `/metrics` and `/api/stats`.
pub struct Probe {
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Default for Probe {
    fn default() -> Self {
        Probe {
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(4)
                .build_http(),
        }
    }
}

impl Probe {
    /// `GET http://addr/path`: status and body, or `None` after `timeout`.
    pub async fn get(
        &self,
        addr: SocketAddr,
        path: &str,
        timeout: Duration,
    ) -> Option<(u16, String)> {
        let uri: http::Uri = format!("http://{addr}{path}").parse().ok()?;
        let fetch = async {
            let resp = self.client.get(uri).await.ok()?;
            let status = resp.status().as_u16();
            let body = Limited::new(resp.into_body(), MAX_PROBE_BODY)
                .collect()
                .await
                .ok()?
                .to_bytes();
            Some((status, String::from_utf8_lossy(&body).into_owned()))
        };
        tokio::time::timeout(timeout, fetch).await.ok().flatten()
    }

    /// Waits until `GET path` answers 200, the process dies, or `within` passes.
    pub async fn wait_ready(
        &self,
        proc: &mut Proc,
        addr: SocketAddr,
        path: &str,
        within: Duration,
    ) -> Result<(), SimError> {
        let end = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < end {
            if proc.exited() {
                break;
            }
            if let Some((200, _)) = self.get(addr, path, Duration::from_millis(500)).await {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(SimError::NotReady {
            what: proc.name,
            addr,
            log: proc.log_tail(),
        })
    }
}

/// CPU time and resident memory of a process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcUsage {
    /// User plus system CPU seconds.
    pub cpu_seconds: f64,
    /// Resident set size in bytes.
    pub rss_bytes: u64,
}

/// Reads `/proc/<pid>/stat` and `/proc/<pid>/status`.
pub fn proc_usage(pid: u32) -> Option<ProcUsage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_proc(&stat, &status, clock_ticks())
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// Parses the two files; fields 14 and 15 of `stat` (after the command name
/// in parentheses, which may itself hold spaces) are user and system ticks.
pub fn parse_proc(stat: &str, status: &str, ticks: f64) -> Option<ProcUsage> {
    let after = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let rss_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    Some(ProcUsage {
        cpu_seconds: (utime + stime) as f64 / ticks,
        rss_bytes: rss_kb * 1024,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read() {
        let stat =
            "1234 (us her) S 1 1234 1234 0 -1 4194560 500 0 0 0 250 50 0 0 20 0 3 0 100 1000 200";
        let status = "Name:\tusher\nVmRSS:\t   20480 kB\nThreads:\t3\n";
        let u = parse_proc(stat, status, 100.0).unwrap();
        assert_eq!(u.cpu_seconds, 3.0);
        assert_eq!(u.rss_bytes, 20480 * 1024);
        assert!(parse_proc("garbage", status, 100.0).is_none());
        let me = proc_usage(std::process::id()).unwrap();
        assert!(me.rss_bytes > 0);
    }

    #[test]
    fn generated_config_is_valid_for_usher() {
        let s = Scenario::parse(super::super::scenario::tests_support::SMALL, "t").unwrap();
        let dir = std::env::temp_dir();
        let text = usher_config(&s, 1, 2, 3, &dir.join("keys"), None);
        // Keys are read at start, not at parse: the config itself must validate.
        let cfg = usher::config::Config::parse(&text, "sim", &dir).unwrap();
        let room = cfg.room.unwrap();
        assert_eq!(room.new_users_per_minute, 600);
        assert_eq!(room.refresh, Duration::from_secs(1));
        assert_eq!(room.session_duration, Duration::from_secs(12));
        assert_eq!(cfg.origin.max_in_flight, 8);
        assert!(
            !text.contains("[store]"),
            "one node keeps the embedded store"
        );
    }

    #[test]
    fn addresses_get_ushers_per_address_limits_in_simulated_time() {
        use usher::config::room::{
            DEFAULT_REQUESTS_PER_SECOND_PER_IP, DEFAULT_TICKETS_PER_MINUTE_PER_IP,
        };
        let small = super::super::scenario::tests_support::SMALL;
        let dir = std::env::temp_dir();
        let room = |text: &str| {
            let s = Scenario::parse(text, "t").unwrap();
            let cfg = usher_config(&s, 1, 2, 3, &dir.join("keys"), None);
            usher::config::Config::parse(&cfg, "sim", &dir)
                .unwrap()
                .room
                .unwrap()
        };
        // One address for the whole crowd: the limits are off.
        let off = room(small);
        assert_eq!(off.requests_per_second_per_ip, 0);
        assert!(off.tickets_per_minute_per_ip > 1_000_000);
        // Carriers and own addresses: usher's defaults in simulated time.
        let with = format!("{small}[addresses]\nshared = 5\nshared_share = 0.3\n");
        let scale = Scenario::parse(&with, "t").unwrap().time_scale;
        let on = room(&with);
        assert_eq!(
            on.requests_per_second_per_ip,
            (f64::from(DEFAULT_REQUESTS_PER_SECOND_PER_IP) * scale).round() as u32
        );
        assert_eq!(
            on.tickets_per_minute_per_ip,
            (f64::from(DEFAULT_TICKETS_PER_MINUTE_PER_IP) * scale).round() as u32
        );
        assert_eq!(on.ticket_proof_bits, SIM_TICKET_PROOF_BITS);
    }

    #[test]
    fn a_missing_redis_server_is_named() {
        let dir = std::env::temp_dir().join(format!("usher-sim-nored-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("bin").join("redis-server");
        let err = start_redis_at(&missing, 1, None, &dir)
            .err()
            .expect("no such program")
            .to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.starts_with("starting redis-server"), "{err}");
        assert!(err.contains("nodes > 1 needs redis-server"), "{err}");
    }

    #[test]
    fn node_config_shares_redis_and_splits_the_origin_cap() {
        let text = super::super::scenario::tests_support::SMALL
            .replace("[usher]\n", "[usher]\nnodes = 3\n");
        let s = Scenario::parse(&text, "t").unwrap();
        let dir = std::env::temp_dir();
        let node = NodeStore {
            url: "redis://127.0.0.1:6390/",
            node_id: "sim-2",
        };
        let text = usher_config(&s, 1, 2, 3, &dir.join("keys"), Some(node));
        let cfg = usher::config::Config::parse(&text, "sim", &dir).unwrap();
        assert!(text.contains("backend = \"redis\""), "{text}");
        assert!(text.contains("node_id = \"sim-2\""), "{text}");
        // Capacity 8 over 3 nodes: 2 each, 6 at most at the origin.
        assert_eq!(cfg.origin.max_in_flight, 2);
    }
}
