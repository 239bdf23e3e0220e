//! Redis Sentinels of the test's own (`redis-server CONF --sentinel`), on
//! free ports, watching one primary under the name `usher`, quick to act
//! (down after 2 s); killed on drop.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sentinel {
    child: Child,
    pub port: u16,
}

impl Sentinel {
    /// A Sentinel watching `127.0.0.1:primary` with `quorum`; its config
    /// file (Sentinel rewrites it) in `dir`.
    pub fn start(dir: &Path, primary: u16, quorum: u32) -> Sentinel {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = dir.join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor usher 127.0.0.1 {primary} {quorum}\n\
                 sentinel down-after-milliseconds usher 2000\n\
                 sentinel failover-timeout usher 5000\n\
                 sentinel parallel-syncs usher 1\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server --sentinel");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "Sentinel did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Sentinel { child, port }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The primary's port this Sentinel names now.
    pub async fn primary(&self) -> Option<u16> {
        let client = ::redis::Client::open(format!("redis://{}/", self.addr())).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        let r: Option<(String, u16)> = ::redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg("usher")
            .query_async(&mut c)
            .await
            .ok()?;
        r.map(|(_, p)| p)
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
