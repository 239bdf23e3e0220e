//! A prequeue across three processes: drawn once, served in rank order.

use crate::support::http as http_util;
use crate::support::process;
use crate::support::redis;
use crate::support::TempDir;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use process::UsherProcess;
use redis::RedisServer;

use http_util::HttpClient;

use super::event::*;
use super::nodes::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prequeue_across_three_processes_is_drawn_once_and_served_in_rank_order() {
    use sha2::{Digest, Sha256};
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let dir = TempDir::keyed("redis-prequeue");
    let (origin, inside) = origin().await;
    let opens = SystemTime::now() + Duration::from_secs(10);
    let opens_secs = opens
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let opens = SystemTime::UNIX_EPOCH + Duration::from_secs(opens_secs);
    let more = format!(
        "opens_at = \"{}\"",
        humantime::format_rfc3339_seconds(opens)
    );
    let nodes: Vec<UsherProcess> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| node_with(&redis.url(), origin, &dir, n, &STEADY, &more))
        .collect();
    let keys = usher::tokens::Keyring::load(&dir.join("keys")).unwrap();
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    const N: usize = 15;
    let mut tickets = Vec::new();
    for i in 0..N {
        let r = get(
            &c,
            &format!("{}/__usher/status", nodes[i % 3].base()),
            None,
            None,
        )
        .await
        .unwrap();
        assert_eq!(
            (r.state.as_str(), r.position),
            ("prequeue", None),
            "visitor {i}"
        );
        tickets.push(r.cookie("usher_ticket").unwrap());
    }
    assert!(SystemTime::now() < opens, "the arrivals took too long");
    // the draw anyone can check once the seed is published (STATE.md)
    let material = keys.seal_ticket(&usher::tokens::Ticket {
        event: usher::tokens::event_id("default"),
        number: 0,
        issued_at: opens_secs,
    });
    let mut h = Sha256::new();
    h.update(b"usher prequeue seed\0");
    h.update(material.as_bytes());
    let ranks = usher::admission::line::shuffled_ranks(N as u32, h.finalize().into());
    let bases = bases(&nodes);
    let seen = Arc::new(Mutex::new(Seen::default()));
    let mut tasks = Vec::new();
    for (i, ticket) in tickets.into_iter().enumerate() {
        let (c, bases, seen) = (c.clone(), bases.clone(), seen.clone());
        let n = number(&keys, &ticket);
        let rank = u64::from(ranks[n as usize - 1]);
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut k = i;
            let pass = loop {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "{n} never admitted"
                );
                k += 1;
                let url = format!("{}/__usher/status", bases[k % 3]);
                let sent = Instant::now();
                let r = get(&c, &url, Some(&ticket), None).await.unwrap();
                if r.state == "admitted" {
                    assert!(SystemTime::now() >= opens, "admitted before the opening");
                    seen.lock().unwrap().admitted.push((rank, Instant::now()));
                    break r.cookie("usher_pass").unwrap();
                }
                if r.state == "queued" {
                    seen.lock().unwrap().queued.push((rank, sent));
                } else {
                    assert_eq!(r.state, "prequeue", "ticket {n}");
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let url = format!("{}/movies/1", bases[k % 3]);
            assert_eq!(
                get(&c, &url, Some(&pass), Some(n)).await.unwrap().status,
                200
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            let url = format!("{}/checkout", bases[(k + 1) % 3]);
            assert_eq!(
                get(&c, &url, Some(&pass), Some(n)).await.unwrap().status,
                200
            );
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // FIFO in rank space: the drawn order, whichever node answered
    assert_fifo(&seen.lock().unwrap());
    assert_cap(&inside, STEADY.max_active);
    let drawn = nodes
        .iter()
        .filter_map(|n| n.admin_get("/admin/status"))
        .filter_map(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .filter(|v| v["room"]["prequeue_seed_sha256"].is_string())
        .count();
    assert_eq!(drawn, 1, "one node drew, and says so");
}
