//! The shared line across a failover to a replica that missed the last
//! writes, with a real primary and replica behind one address (a relay
//! switched to the promoted replica, as a virtual IP or a managed Redis
//! endpoint does): ticket numbers never go back (no number handed twice),
//! no live visitor's position jumps backwards, the tickets issued after
//! the replica's copy keep their place, and the grants the failover lost
//! are granted again.

use crate::support::process::UsherProcess;
use crate::support::redis;
use crate::support::relay;
use crate::support::TempDir;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::{RedisOptions, RedisServer};
use relay::Relay;
use usher::store::redis_conn::connect_url;
use usher::store::redis_line::{RedisLine, RedisLineConfig, RedisPlace, SharedGate};

const CFG: RedisLineConfig = RedisLineConfig {
    grace_ms: 10_000,
    claim_window_ms: 60_000,
    lease_ms: 5_000,
    heartbeat_ms: 5_000,
};

fn gate(n: u32) -> SharedGate {
    SharedGate {
        per_minute: 6_000_000,
        burst: n,
    }
}

async fn cmd(url: &str, args: &[&str]) -> ::redis::Value {
    let con = connect_url(url, Duration::from_secs(2)).unwrap();
    let mut c = ::redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query_async(&mut con.clone()).await.unwrap()
}

/// Waits until the replica holds everything written to `primary` so far.
/// The write and its `WAIT` go on one connection: `WAIT` counts the
/// replicas that have its own connection's last write, so on a connection
/// that wrote nothing it answers at once (and a replica just past its
/// first sync is only sent the stream after its first acknowledgement, up
/// to a second later).
async fn replicated(primary: &RedisServer) {
    let con = connect_url(&primary.url(), Duration::from_secs(2)).unwrap();
    let (_, acked): ((), i64) = ::redis::pipe()
        .cmd("SET")
        .arg("sync")
        .arg("1")
        .cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(&mut con.clone())
        .await
        .unwrap();
    assert_eq!(acked, 1, "the replica has the line so far");
}

fn signal(s: &RedisServer, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &s.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// A poll that retries while the nodes reconnect after the switch.
async fn observe(l: &RedisLine, n: u64, now: u64) -> RedisPlace {
    let started = Instant::now();
    loop {
        match l.observe(n, now).await {
            Ok(p) => return p,
            Err(e) => assert!(started.elapsed() < Duration::from_secs(5), "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Kills `primary` and promotes the stopped `replica` (woken here). The dead
/// primary's port stays held (a listener that never answers) until the
/// promotion: the replica, woken, reconnects to it at once, and a listener
/// of another test given that port by the system must not become its
/// primary.
async fn promote_after_death(primary: &mut RedisServer, replica: &RedisServer) {
    let dead_port = primary.port;
    primary.stop();
    let hold = std::net::TcpListener::bind(("127.0.0.1", dead_port)).ok();
    signal(replica, "-CONT");
    let _ = cmd(&replica.url(), &["REPLICAOF", "NO", "ONE"]).await;
    drop(hold);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_that_lost_writes_repairs_the_line() {
    let Some(mut primary) = RedisServer::start(None) else {
        return;
    };
    let replica = RedisServer::start_with(RedisOptions {
        args: vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port.to_string(),
        ],
        ..RedisOptions::default()
    })
    .unwrap();
    let relay = Relay::start(primary.port).await;
    let nodes: Vec<RedisLine> = ["a", "b"]
        .iter()
        .map(|name| {
            let con = connect_url(&relay.url(), Duration::from_millis(500)).unwrap();
            RedisLine::new(con, "show", name, CFG)
        })
        .collect();
    let t0 = 50_000_000u64;
    // 20 tickets, 5 granted and taken: all on the replica
    for i in 0..20 {
        assert_eq!(nodes[i % 2].issue(t0).await.unwrap(), i as u64 + 1);
    }
    assert_eq!(nodes[0].tick(t0, 1000, gate(5)).await.unwrap().granted, 5);
    for n in 1..=5 {
        assert!(nodes[0].take(n, n, t0 + 600_000).await.unwrap());
    }
    replicated(&primary).await;

    // the replica falls behind: 10 more tickets, 5 more grants, lost
    signal(&replica, "-STOP");
    let _ = cmd(&primary.url(), &["CLIENT", "KILL", "TYPE", "replica"]).await;
    for i in 20..30 {
        assert_eq!(nodes[i % 2].issue(t0 + 100).await.unwrap(), i as u64 + 1);
    }
    let now = t0 + 250;
    assert_eq!(nodes[0].tick(now, 1000, gate(5)).await.unwrap().granted, 5);
    nodes[1].tick(now, 1000, gate(0)).await.unwrap();
    let mut before = HashMap::new();
    for n in 6..=30 {
        let p = nodes[(n % 2) as usize].observe(n, now).await.unwrap();
        before.insert(n, p);
    }
    assert_eq!(before[&6], RedisPlace::Granted);
    assert_eq!(before[&11], RedisPlace::Waiting { position: 0 });
    assert_eq!(before[&30], RedisPlace::Waiting { position: 19 });

    // the primary dies; the replica is promoted behind the same address
    promote_after_death(&mut primary, &replica).await;
    relay.switch(replica.port);
    assert_eq!(
        cmd(&replica.url(), &["GET", "{usher:show}:issued"]).await,
        ::redis::Value::BulkString(b"20".to_vec()),
        "the promoted replica missed the last tickets"
    );

    // every live visitor polls: nobody unknown, no position further back
    let now = now + 250;
    for n in 11..=30 {
        let via = &nodes[(n % 2) as usize];
        match (observe(via, n, now).await, before[&n]) {
            (RedisPlace::Waiting { position: p }, RedisPlace::Waiting { position: was }) => {
                assert!(p <= was, "ticket {n}: position {p}, was {was}")
            }
            (got, was) => panic!("ticket {n}: {got:?}, was {was:?}"),
        }
    }
    // a newcomer gets a number never handed out
    assert_eq!(nodes[1].issue(now).await.unwrap(), 31);
    // the lost grants (6..10) are granted again, ahead of everyone
    for n in 6..=10 {
        let p = observe(&nodes[0], n, now).await;
        assert!(matches!(p, RedisPlace::Waiting { .. }), "{n}: {p:?}");
    }
    let t = nodes[0].tick(now + 250, 1000, gate(5)).await.unwrap();
    assert!(t.repaired > 0 || nodes[0].repairs() + nodes[1].repairs() > 0);
    for n in 6..=10 {
        assert_eq!(observe(&nodes[1], n, now + 300).await, RedisPlace::Granted);
    }
    let p = observe(&nodes[1], 11, now + 300).await;
    assert_eq!(p, RedisPlace::Waiting { position: 0 }, "next in line");
    assert!(nodes[0].repairs() + nodes[1].repairs() >= 10);
}

/// The holding page's answer for a visitor with `cookie` (a ticket).
fn status(u: &UsherProcess, cookie: Option<&str>) -> (serde_json::Value, Option<String>) {
    use std::io::{Read, Write};
    let port: u16 = u.addr().port();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let cookie = cookie.map_or(String::new(), |c| format!("Cookie: {c}\r\n"));
    write!(
        s,
        "GET /__usher/status HTTP/1.0\r\nHost: x\r\nAccept: application/json\r\n{cookie}\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let ticket = out
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: usher_ticket="))
        .and_then(|c| c.split(';').next())
        .map(|v| format!("usher_ticket={v}"));
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (serde_json::from_str(body).unwrap_or_default(), ticket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_logs_and_counts_the_repair_and_its_visitors_keep_their_place() {
    let Some(mut primary) = RedisServer::start(None) else {
        return;
    };
    let replica = RedisServer::start_with(RedisOptions {
        args: vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port.to_string(),
        ],
        ..RedisOptions::default()
    })
    .unwrap();
    let relay = Relay::start(primary.port).await;
    let dir = TempDir::keyed("redis-line-failover");
    let url = relay.url();
    let node = UsherProcess::node(&dir, "n1", &format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\
             [origin]\nurl = \"http://127.0.0.1:9\"\n\
             [room]\nkeys_file = \"{keys}\"\nmax_active_users = 100\nnew_users_per_minute = 600\ntick = \"100ms\"\n\
             [room.limits]\ntickets_per_minute_per_ip = 10000000\nrequests_per_second_per_ip = 0\n\
             [store]\nbackend = \"redis\"\nurl = \"{url}\"\nnode_id = \"n1\"\ntimeout = \"300ms\"\n",
            keys = dir.join("keys").display()
        ));
    // paused: newcomers take tickets, nobody is admitted
    assert_eq!(node.admin_post("/admin/pause"), Some(200));
    let mut tickets = Vec::new();
    for _ in 0..5 {
        tickets.push(status(&node, None).1.expect("a ticket"));
    }
    // a few ticks count them into the line (positions read the tick's union)
    tokio::time::sleep(Duration::from_millis(300)).await;
    replicated(&primary).await;
    signal(&replica, "-STOP");
    let _ = cmd(&primary.url(), &["CLIENT", "KILL", "TYPE", "replica"]).await;
    for _ in 0..5 {
        tickets.push(status(&node, None).1.expect("a ticket"));
    }
    // the ticks count them in (three ticks unloaded; under a full test run
    // it can take longer, so wait for it, bounded)
    let started = Instant::now();
    let last = loop {
        let (last, _) = status(&node, Some(&tickets[9]));
        if last["position"] == 9 || started.elapsed() > Duration::from_secs(5) {
            break last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(last["position"], 9, "{last}");
    promote_after_death(&mut primary, &replica).await;
    relay.switch(replica.port);

    // the node repairs the counter (tickets 6..10 were lost) by itself
    let started = Instant::now();
    while node.metric("usher_store_line_repairs_total").unwrap_or(0.0) < 5.0 {
        assert!(started.elapsed() < Duration::from_secs(10), "no repair");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        cmd(&replica.url(), &["GET", "{usher:default}:issued"]).await,
        ::redis::Value::BulkString(b"10".to_vec())
    );
    let log = node.logs().join("\n");
    assert!(log.contains("the line in Redis had gone back"), "{log}");
    // the last visitor keeps a place, no further back than before
    let (now, fresh) = status(&node, Some(&tickets[9]));
    assert!(fresh.is_none(), "a new ticket: the place was lost ({now})");
    assert!(now["position"].as_u64().is_some_and(|p| p <= 9), "{now}");
}
