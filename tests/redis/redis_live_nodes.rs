//! The `N` of `on_failure = "local_share"` counts live nodes only: a node
//! that died shortly before Redis went away (its heartbeat not yet
//! expired) no longer takes a share that nobody would use. First the
//! count on the line itself, then three real usher processes.

use crate::support::process;
use crate::support::redis;
use crate::support::TempDir;

use std::path::Path;
use std::time::{Duration, Instant};

use process::{http_get, UsherProcess};
use redis::RedisServer;
use usher::store::redis_line::{RedisLine, RedisLineConfig, SharedGate};

const CFG: RedisLineConfig = RedisLineConfig {
    grace_ms: 10_000,
    claim_window_ms: 5_000,
    lease_ms: 1_000,
    heartbeat_ms: 2_000,
};

fn gate(n: u32) -> SharedGate {
    SharedGate {
        per_minute: if n == 0 { 0 } else { 6_000_000 },
        burst: n,
    }
}

fn node(url: &str, event: &str, name: &str) -> RedisLine {
    let con = usher::store::redis_conn::connect_url(url, Duration::from_millis(500)).unwrap();
    RedisLine::new(con, event, name, CFG)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_silent_for_a_few_ticks_is_not_live_though_its_heartbeat_lasts() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let nodes: Vec<RedisLine> = ["a", "b", "c"]
        .iter()
        .map(|n| node(&redis.url(), "live", n))
        .collect();
    for n in &nodes {
        n.set_live_window(750);
    }
    let t0 = 9_000_000;
    for (i, n) in nodes.iter().enumerate() {
        let t = n.tick(t0 + i as u64, 10, gate(0)).await.unwrap();
        assert_eq!((t.nodes, t.live_nodes), (i as u64 + 1, i as u64 + 1));
    }
    // c dies; a and b tick every 250 ms
    let mut now = t0;
    let mut last = None;
    for _ in 0..4 {
        now += 250;
        nodes[0].tick(now, 10, gate(0)).await.unwrap();
        last = Some(nodes[1].tick(now + 1, 10, gate(0)).await.unwrap());
    }
    let t = last.unwrap();
    // c's heartbeat (2 s) still lasts, but it missed three ticks' worth
    assert_eq!((t.nodes, t.live_nodes), (3, 2), "{t:?}");
    // c back: live again at its first beat
    let t = nodes[2].tick(now + 2, 10, gate(0)).await.unwrap();
    assert_eq!((t.nodes, t.live_nodes), (3, 3), "{t:?}");
    // a node whose clock is 1.5 s behind, its skew measured: its stamps
    // are on Redis's clock, so the others see it live
    let slow = node(&redis.url(), "live", "slow");
    slow.set_live_window(750);
    slow.set_clock_offset(-1_500);
    slow.tick(now + 3 - 1_500, 10, gate(0)).await.unwrap();
    let t = nodes[0].tick(now + 10, 10, gate(0)).await.unwrap();
    assert_eq!((t.nodes, t.live_nodes), (4, 4), "{t:?}");
    // without the correction its beat looks 1.5 s old: not live
    slow.set_clock_offset(0);
    slow.tick(now + 20 - 1_500, 10, gate(0)).await.unwrap();
    let t = nodes[0].tick(now + 30, 10, gate(0)).await.unwrap();
    assert_eq!(t.live_nodes, 3, "{t:?}");
}

fn usher(dir: &Path, name: &str, redis: &str) -> UsherProcess {
    UsherProcess::node(
        dir,
        name,
        &format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
[origin]
url = "http://127.0.0.1:9"
[room]
keys_file = "{keys}"
max_active_users = 6
new_users_per_minute = 60000
burst = 10
tick = "50ms"
refresh = "1s"
[room.limits]
tickets_per_minute_per_ip = 10000000
requests_per_second_per_ip = 0
requests_per_second_per_pass = 0
[store]
backend = "redis"
url = "{redis}"
node_id = "{name}"
timeout = "300ms"
on_failure = "local_share"
"#,
            keys = dir.join("keys").display(),
        ),
    )
}

fn wait_for(within: Duration, what: &str, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while !ok() {
        assert!(started.elapsed() < within, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A newcomer's `/__usher/status` on `u`: its state.
fn newcomer(u: &UsherProcess) -> String {
    let port: u16 = u.addr().port();
    let (_, body) = http_get(port, "/__usher/status").unwrap();
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["state"].as_str().unwrap_or_default().to_string()
}

#[test]
fn a_node_killed_before_the_outage_takes_no_share() {
    let Some(mut server) = RedisServer::start(None) else {
        return;
    };
    let dir = TempDir::keyed("redis-live-nodes");
    let mut nodes: Vec<UsherProcess> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| usher(&dir, n, &server.url()))
        .collect();
    wait_for(Duration::from_secs(10), "three heartbeats", || {
        nodes
            .iter()
            .all(|n| n.metric("usher_store_nodes") == Some(3.0))
    });
    // n3 dies; past the 1 s live window (three ticks, at least 1 s) and
    // before its 2 s heartbeat expires, the others no longer count it,
    // and Redis goes away then
    nodes[2].kill();
    wait_for(Duration::from_millis(1_800), "n3 still live", || {
        nodes[..2]
            .iter()
            .all(|n| n.metric("usher_store_nodes") == Some(2.0))
    });
    server.stop();
    for n in &nodes[..2] {
        wait_for(Duration::from_secs(10), "no local share of 1/2", || {
            n.admin_get("/readyz")
                .is_some_and(|(s, b)| s == 200 && b.contains("share (1/2)"))
        });
    }
    // each survivor admits 6 / 2 = 3 newcomers, not 6 / 3 = 2
    for n in &nodes[..2] {
        let admitted = (0..5).filter(|_| newcomer(n) == "admitted").count();
        assert_eq!(admitted, 3, "{}", n.base());
    }
}
