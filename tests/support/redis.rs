//! A redis-server of the test's own, on a free port, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct RedisServer {
    pub child: Child,
    pub port: u16,
}

/// How the server keeps its data.
#[derive(Default)]
#[allow(dead_code)]
pub struct Persist<'a> {
    /// `appendonly yes` + `appendfsync always`, the AOF in this directory:
    /// what was acknowledged survives a SIGKILL and a restart on the same dir.
    pub aof_dir: Option<&'a std::path::Path>,
}

impl RedisServer {
    #[allow(dead_code)]
    pub fn start(port: Option<u16>) -> Option<RedisServer> {
        RedisServer::start_with(port, Persist::default())
    }

    #[allow(dead_code)]
    pub fn start_with(port: Option<u16>, persist: Persist<'_>) -> Option<RedisServer> {
        let port = port.unwrap_or_else(|| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        });
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", ""]);
        match persist.aof_dir {
            Some(dir) => cmd
                .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
                .arg(dir),
            None => cmd.args(["--appendonly", "no"]),
        };
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn();
        let Ok(child) = child else {
            // Under CI a missing server is a failure, never a silent skip.
            assert!(
                std::env::var_os("CI").is_none(),
                "redis-server not found: .ci/run must install it"
            );
            eprintln!("NOTE: redis-server not found; skipping the Redis tests");
            return None;
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(RedisServer { child, port })
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}
