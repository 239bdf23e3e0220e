//! usher on a real Redis Cluster (`[store] cluster = true`): three
//! primaries, each with two replicas, made by `redis-cli --cluster create`.
//! The URL names a primary that does not own the event's slot, so every
//! node must find the owner itself.
//!
//! - The line's steps for events whose slots are on each of the three
//!   primaries, all through one URL: tickets issued in order, each event's
//!   keys on its slot's owner only.
//! - Three usher nodes, 300 visitors claiming a stock of 100; the slot's
//!   primary is SIGKILLed after 30 codes and the Cluster promotes its
//!   replica; then the slot is moved (with its keys) to another primary,
//!   so the nodes get `MOVED` and follow. Exactly 100 distinct codes,
//!   every visitor told "issued" holds that code in the ledger, and the
//!   line takes newcomers after the failover and after the move.
//! - Last, the URL's own node (by then the slot's primary) is SIGKILLed:
//!   the nodes find the promoted replica through the other nodes they
//!   learnt of.

use crate::support::claims;
use crate::support::cluster;
use crate::support::http as http_util;
use crate::support::process;
use crate::support::TempDir;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use claims::{exactly_the_stock, visitor};
use cluster::{ask, Cluster};
use http::Request;
use http_util::{send, HttpClient};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use process::UsherProcess;
use usher::config::store::{RedisStore, StoreConfig};
use usher::config::Config;
use usher::store::redis_cluster::event_slot;
use usher::store::redis_conn::{connect, connect_url};
use usher::store::redis_line::{RedisLine, RedisLineConfig, RedisPlace};
use usher::store::RedisLedger;

const CFG: RedisLineConfig = RedisLineConfig {
    grace_ms: 10_000,
    claim_window_ms: 5_000,
    lease_ms: 1_000,
    heartbeat_ms: 2_000,
};

fn node(dir: &Path, name: &str, url_port: u16) -> UsherProcess {
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
max_active_users = 100000
new_users_per_minute = 1000000
burst = 100000
tick = "100ms"
[room.limits]
tickets_per_minute_per_ip = 10000000
requests_per_second_per_ip = 0
requests_per_second_per_pass = 0
[store]
backend = "redis"
url = "redis://127.0.0.1:{url_port}/"
cluster = true
node_id = "{name}"
timeout = "300ms"
min_replicas_acked = 1
replica_ack_timeout = "300ms"
[vouchers]
identity = "header:x-user"
plugin = "pool"
pool_file = "{pool}"
stock = 100
recover_after = "2s"
"#,
            keys = dir.join("keys").display(),
            pool = dir.join("codes.txt").display(),
        ),
    )
}

/// `[store]` with `cluster = true` and the URL on `port`, through the
/// config's own validation.
fn store(port: u16) -> RedisStore {
    let text = format!(
        "[origin]\nurl = \"http://127.0.0.1:1\"\n[store]\nbackend = \"redis\"\nnode_id = \"t\"\n\
         timeout = \"2s\"\ncluster = true\nurl = \"redis://127.0.0.1:{port}\"\n"
    );
    match Config::parse(&text, "test.toml", Path::new("/")) {
        Ok(Config {
            store: Some(StoreConfig::Redis(r)),
            ..
        }) => r,
        other => panic!("{:?}", other.err()),
    }
}

/// Waits until every node is ready and a newcomer gets a pass or a ticket
/// (or the sold-out answer, given without the line); how long it took.
async fn line_continues(nodes: &[UsherProcess], c: &HttpClient, what: &str) -> Duration {
    let from = Instant::now();
    for n in nodes {
        let mut last = String::new();
        loop {
            let ready = n
                .admin_get("/readyz")
                .is_some_and(|(s, b)| s == 200 && b == "ready\n");
            if ready {
                match send(c, Request::get(format!("{}/__usher/status", n.base()))).await {
                    Ok(r)
                        if r.cookie("usher_pass").is_some()
                            || r.cookie("usher_ticket").is_some()
                            || r.json["state"] == "sold_out" =>
                    {
                        break
                    }
                    Ok(r) => last = format!("{} {}", r.status, r.json),
                    Err(e) => last = e,
                }
            }
            assert!(
                from.elapsed() < Duration::from_secs(15),
                "{}: the line did not continue {what}: {last} ({:?})",
                n.base(),
                n.admin_get("/readyz")
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    from.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_a_three_primary_cluster_across_a_failover_and_a_slot_move() {
    let dir = TempDir::keyed("redis-cluster");
    let Some(mut cl) = Cluster::start(&dir, 3, 2).await else {
        return;
    };
    let primaries: Vec<u16> = cl.nodes[..3].iter().map(|n| n.port).collect();
    let some = primaries[0];

    // usher's slot is Redis's slot
    for event in ["default", "show", "concert-2027"] {
        let slot: u16 = ask(
            some,
            ::redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(format!("{{usher:{event}}}:v:claims")),
        )
        .await
        .unwrap();
        assert_eq!(slot, event_slot(event), "{event}");
    }

    // the line for events on each primary, all through one URL
    let mut on: HashMap<u16, String> = HashMap::new();
    for i in 0.. {
        let event = format!("e{i}");
        let owner = cl.owner(some, event_slot(&event)).await.unwrap();
        on.entry(owner).or_insert(event);
        if on.len() == 3 {
            break;
        }
    }
    let via = store(some);
    for (owner, event) in &on {
        let line = RedisLine::new(connect(&via, event).unwrap(), event, "t", CFG);
        assert_eq!(line.issue(1_000_000).await.unwrap(), 1, "{event}");
        assert_eq!(line.issue(1_000_000).await.unwrap(), 2, "{event}");
        let place = line.observe(2, 1_000_000).await.unwrap();
        assert!(matches!(place, RedisPlace::Waiting { .. }), "{place:?}");
        for p in &primaries {
            let n: u64 = ask(*p, &::redis::cmd("DBSIZE")).await.unwrap();
            let here: u64 = ask(
                *p,
                ::redis::cmd("CLUSTER")
                    .arg("COUNTKEYSINSLOT")
                    .arg(event_slot(event)),
            )
            .await
            .unwrap();
            assert_eq!(here > 0, p == owner, "{event}: keys on {p} (owner {owner})");
            assert!(n >= here);
        }
    }

    // three usher nodes, the URL on a primary that does not own the slot
    let slot = event_slot("default");
    let owner = cl.owner(some, slot).await.unwrap();
    let url_port = *primaries.iter().find(|p| **p != owner).unwrap();
    let pool: Vec<String> = (0..150).map(|i| format!("SEAT-{i:04}")).collect();
    std::fs::write(dir.join("codes.txt"), pool.join("\n") + "\n").unwrap();
    let nodes: Vec<UsherProcess> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| node(&dir, n, url_port))
        .collect();
    let bases = Arc::new(nodes.iter().map(|n| n.base()).collect::<Vec<_>>());
    let c: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    line_continues(&nodes, &c, "at start").await;

    // 300 visitors; the slot's primary dies once 30 codes are out
    let started = Instant::now();
    let issued = Arc::new(AtomicUsize::new(0));
    let visitors: Vec<_> = (0..300)
        .map(|i| tokio::spawn(visitor(c.clone(), bases.clone(), i, issued.clone())))
        .collect();
    while issued.load(Ordering::SeqCst) < 30 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "claims never started"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    cl.node(owner).stop();
    let killed = Instant::now();
    let at_kill = issued.load(Ordering::SeqCst);
    assert!(at_kill < 100, "the primary died mid-claims ({at_kill})");
    let promoted_port = loop {
        match cl.owner(url_port, slot).await {
            Some(p) if p != owner => break p,
            _ => {}
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "no promotion");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(!primaries.contains(&promoted_port), "its replica took over");
    let promoted = killed.elapsed();
    let back = line_continues(&nodes, &c, "after the failover").await;
    let failover_over = Instant::now();

    let mut outcomes = Vec::new();
    for v in visitors {
        outcomes.push(v.await.unwrap());
    }
    eprintln!(
        "killed with {at_kill} issued; promoted {promoted:?} after the kill; line back {back:?} after the promotion"
    );
    let codes = exactly_the_stock(&outcomes, &pool, 100);

    // the slot moves (with its keys) to the URL's primary: MOVED. After the
    // failover the nodes ask the Cluster every 200 ms for 10 s (their
    // primary in doubt); once that is over only a MOVED answer (or the
    // check every 5 s) makes them ask.
    tokio::time::sleep(Duration::from_secs(11).saturating_sub(failover_over.elapsed())).await;
    cl.move_slot(slot, promoted_port, url_port, &primaries)
        .await;
    assert_eq!(cl.owner(url_port, slot).await, Some(url_port));
    let moved = line_continues(&nodes, &c, "after the slot moved").await;
    eprintln!("line back {moved:?} after the slot moved");
    // each node followed because a command got MOVED, soon after the move
    // (not the periodic check, every 5 s)
    let followed = Instant::now();
    for n in &nodes {
        loop {
            let log = n.logs().join("\n");
            let to_url = format!("primary=127.0.0.1:{url_port}");
            if log.lines().any(|l| {
                l.contains("the event's slot moved")
                    && l.contains(&to_url)
                    && l.contains("cause=Moved")
            }) {
                break;
            }
            assert!(
                followed.elapsed() < Duration::from_secs(3),
                "{}: never followed the move:\n{log}",
                n.base()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // the ledger, now on the URL's primary, agrees with what visitors hold
    let ledger = RedisLedger::new(
        connect_url(
            &format!("redis://127.0.0.1:{url_port}/"),
            Duration::from_secs(2),
        )
        .unwrap(),
        "default",
        100,
    );
    for (i, code) in &codes {
        match ledger.lookup(&format!("header:v{i}")).await.unwrap() {
            Some(usher::store::Reservation::Issued(c)) => assert_eq!(&c.code, code, "v{i}"),
            other => panic!("v{i} was told {code}, the ledger has {other:?}"),
        }
    }
    let audit = ledger.audit().await.unwrap();
    assert!(audit.is_ok(), "{:?}", audit.problems);
    assert_eq!(audit.issued, 100);
    drop(ledger);

    // the URL's node (the slot's primary now) dies: the nodes ask the
    // Cluster nodes they learnt of and follow the promoted replica
    cl.node(url_port).stop();
    let killed = Instant::now();
    let third = *primaries
        .iter()
        .find(|p| **p != owner && **p != url_port)
        .unwrap();
    let last_owner = loop {
        match cl.owner(third, slot).await {
            Some(p) if p != url_port => break p,
            _ => {}
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "no promotion");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let back = line_continues(&nodes, &c, "with the URL's node dead").await;
    eprintln!("URL's node dead: line back {back:?} after the promotion");
    let to_new = format!("primary=127.0.0.1:{last_owner}");
    let from_url = format!("was=127.0.0.1:{url_port}");
    for n in &nodes {
        loop {
            let log = n.logs().join("\n");
            if log.lines().any(|l| {
                l.contains("the event's slot moved") && l.contains(&to_new) && l.contains(&from_url)
            }) {
                break;
            }
            assert!(
                killed.elapsed() < Duration::from_secs(30),
                "{}: never followed past the dead URL node:\n{log}",
                n.base()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    drop(nodes);
    drop(cl);
}
