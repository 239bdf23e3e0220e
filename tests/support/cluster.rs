//! A Redis Cluster of the test's own: `primaries` redis-servers in cluster
//! mode (plus `replicas` for each) on free loopback ports, joined with
//! `redis-cli --cluster create … --cluster-yes`, quick to fail over
//! (`cluster-node-timeout` 2000 ms); every server killed on drop (through
//! [`RedisServer`]).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::{RedisOptions, RedisServer};

pub struct Cluster {
    /// Every server, primaries first (as `--cluster create` assigns them).
    pub nodes: Vec<RedisServer>,
}

/// A command's answer from the node on `port` (within 2 s).
pub async fn ask<T: ::redis::FromRedisValue>(port: u16, cmd: &::redis::Cmd) -> Option<T> {
    let client = ::redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
    let go = async {
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        cmd.query_async::<T>(&mut c).await.ok()
    };
    tokio::time::timeout(Duration::from_secs(2), go)
        .await
        .ok()
        .flatten()
}

impl Cluster {
    /// Starts and joins the cluster; `None` when redis-server is missing
    /// (as [`RedisServer::start`]).
    pub async fn start(dir: &Path, primaries: usize, replicas: usize) -> Option<Cluster> {
        let mut nodes = Vec::new();
        for i in 0..primaries * (1 + replicas) {
            let conf = dir.join(format!("nodes-{i}.conf"));
            nodes.push(RedisServer::start_with(RedisOptions {
                args: vec![
                    "--cluster-enabled".into(),
                    "yes".into(),
                    "--cluster-config-file".into(),
                    conf.display().to_string(),
                    "--cluster-node-timeout".into(),
                    "2000".into(),
                ],
                ..RedisOptions::default()
            })?);
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", &replicas.to_string(), "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster create ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let c = Cluster { nodes };
        // every node sees the whole cluster, every replica is in sync
        let started = Instant::now();
        loop {
            let mut ready = true;
            for n in &c.nodes {
                let info: String = ask(n.port, ::redis::cmd("CLUSTER").arg("INFO"))
                    .await
                    .unwrap_or_default();
                let repl: String = ask(n.port, ::redis::cmd("INFO").arg("replication"))
                    .await
                    .unwrap_or_default();
                let synced = repl.contains("role:slave") && repl.contains("master_link_status:up")
                    || repl.contains("role:master")
                        && repl.contains(&format!("connected_slaves:{replicas}"));
                ready &= info.contains("cluster_state:ok")
                    && info.contains(&format!(
                        "cluster_known_nodes:{}",
                        primaries * (1 + replicas)
                    ))
                    && synced;
            }
            if ready {
                return Some(c);
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the cluster did not settle"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The port of the primary that owns `slot`, as the node on `via` says.
    pub async fn owner(&self, via: u16, slot: u16) -> Option<u16> {
        let ranges: Vec<::redis::Value> = ask(via, ::redis::cmd("CLUSTER").arg("SLOTS")).await?;
        for r in ranges {
            let ::redis::Value::Array(items) = r else {
                continue;
            };
            let start: i64 = ::redis::from_redis_value(items[0].clone()).ok()?;
            let end: i64 = ::redis::from_redis_value(items[1].clone()).ok()?;
            if (start..=end).contains(&i64::from(slot)) {
                let ::redis::Value::Array(node) = &items[2] else {
                    return None;
                };
                return ::redis::from_redis_value(node[1].clone()).ok();
            }
        }
        None
    }

    /// The node on `port`.
    pub fn node(&mut self, port: u16) -> &mut RedisServer {
        self.nodes.iter_mut().find(|n| n.port == port).unwrap()
    }

    /// The node id of the server on `port`.
    pub async fn id(port: u16) -> String {
        ask(port, ::redis::cmd("CLUSTER").arg("MYID"))
            .await
            .expect("CLUSTER MYID")
    }

    /// Moves `slot` with its keys from the primary on `from` to the one on
    /// `to` (`CLUSTER SETSLOT … IMPORTING/MIGRATING`, `MIGRATE`, then
    /// `SETSLOT … NODE` on every primary), as `redis-cli --cluster reshard`
    /// does for one slot.
    pub async fn move_slot(&self, slot: u16, from: u16, to: u16, primaries: &[u16]) {
        let (from_id, to_id) = (Cluster::id(from).await, Cluster::id(to).await);
        let setslot = |state: &str, id: &str| {
            let mut c = ::redis::cmd("CLUSTER");
            c.arg("SETSLOT").arg(slot).arg(state).arg(id);
            c
        };
        let ok: Option<String> = ask(to, &setslot("IMPORTING", &from_id)).await;
        assert!(ok.is_some(), "SETSLOT IMPORTING");
        let ok: Option<String> = ask(from, &setslot("MIGRATING", &to_id)).await;
        assert!(ok.is_some(), "SETSLOT MIGRATING");
        loop {
            let keys: Vec<String> = ask(
                from,
                ::redis::cmd("CLUSTER")
                    .arg("GETKEYSINSLOT")
                    .arg(slot)
                    .arg(100),
            )
            .await
            .expect("GETKEYSINSLOT");
            if keys.is_empty() {
                break;
            }
            let moved: Option<String> = ask(
                from,
                ::redis::cmd("MIGRATE")
                    .arg("127.0.0.1")
                    .arg(to)
                    .arg("")
                    .arg(0)
                    .arg(5000)
                    .arg("KEYS")
                    .arg(&keys),
            )
            .await;
            assert!(moved.is_some(), "MIGRATE {keys:?}");
        }
        for p in [to, from].iter().chain(primaries) {
            let _: Option<String> = ask(*p, &setslot("NODE", &to_id)).await;
        }
    }
}
