//! A redis-server of the test's own, on a free port, killed on drop;
//! optionally TLS-only (`RedisOptions::tls`) or with extra arguments such
//! as ACL users (`RedisOptions::args`).
// Each test binary uses its own part of this file.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub child: Child,
    pub port: u16,
    /// `rediss://` in [`RedisServer::url`] (the server listens for TLS only).
    pub tls: bool,
    /// The server's own working directory (no AOF asked for), removed on
    /// drop: a replica's full sync writes `dump.rdb` there, never into the
    /// crate being tested.
    scratch: Option<PathBuf>,
}

/// How to start the server; `Default` is a plain server on a free port.
#[derive(Default)]
pub struct RedisOptions {
    /// The port (a free one when `None`).
    pub port: Option<u16>,
    /// Listen for TLS only, with these files.
    pub tls: Option<RedisTlsFiles>,
    /// More `redis-server` arguments, e.g. `--user usher on >secret ~* +@all`.
    pub args: Vec<String>,
    /// `appendonly yes` + `appendfsync always`, the AOF in this directory:
    /// what was acknowledged survives a SIGKILL and a restart on the same dir.
    pub aof_dir: Option<PathBuf>,
}

/// The server side of TLS.
pub struct RedisTlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// CA that client certificates must chain to.
    pub ca: PathBuf,
    /// `--tls-auth-clients`: "yes", "optional" or "no".
    pub auth_clients: &'static str,
}

/// A port free a moment ago that no redis-server of this test binary has had
/// before: a replica reconnecting to its stopped primary's port must not
/// find another test's fresh (empty) server there and copy it.
fn unused_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut given = GIVEN.lock().unwrap();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

impl RedisServer {
    pub fn start(port: Option<u16>) -> Option<RedisServer> {
        RedisServer::start_with(RedisOptions {
            port,
            ..RedisOptions::default()
        })
    }

    /// Starts redis-server with `opts`. redis-server cannot listen on port 0
    /// and tell which port it got, so without `opts.port` it takes a port
    /// free a moment ago, and on a port taken meanwhile (it exits at start)
    /// it tries again on another, five times at most.
    pub fn start_with(opts: RedisOptions) -> Option<RedisServer> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match RedisServer::try_start(&opts) {
                Ok(started) => return started,
                Err(status) if opts.port.is_none() && attempt < 5 => {
                    eprintln!("redis-server exited at start ({status}); another port");
                }
                Err(status) => panic!("redis-server exited at start ({status}): a bad option?"),
            }
        }
    }

    fn try_start(opts: &RedisOptions) -> Result<Option<RedisServer>, std::process::ExitStatus> {
        let port = opts.port.unwrap_or_else(unused_port);
        // Not a `TempDir`: benches/claims.rs compiles this file on its own,
        // without the rest of the support module.
        let scratch =
            std::env::temp_dir().join(format!("usher-redis-{port}-{}", std::process::id()));
        let mut cmd = Command::new("redis-server");
        match &opts.tls {
            None => cmd.args(["--port", &port.to_string()]),
            Some(t) => cmd
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(&t.cert)
                .arg("--tls-key-file")
                .arg(&t.key)
                .arg("--tls-ca-cert-file")
                .arg(&t.ca)
                .args(["--tls-auth-clients", t.auth_clients]),
        };
        // a replica's first sync starts at once (the default waits 5 s for
        // more replicas to share one transfer)
        cmd.args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--repl-diskless-sync-delay", "0"]);
        match &opts.aof_dir {
            Some(dir) => cmd
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir),
            None => {
                std::fs::create_dir_all(&scratch).unwrap();
                cmd.args(["--appendonly", "no", "--dir"]).arg(&scratch)
            }
        };
        let child = cmd
            .args(&opts.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut child) = child else {
            // Under CI a missing server is a failure, never a silent skip.
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server not found: .ci/run must install it"
            );
            eprintln!("NOTE: redis-server not found; skipping the Redis tests");
            return Ok(None);
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(status);
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(RedisServer {
            child,
            port,
            tls: opts.tls.is_some(),
            scratch: opts.aof_dir.is_none().then_some(scratch),
        }))
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
