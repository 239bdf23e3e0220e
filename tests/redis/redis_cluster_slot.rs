//! Redis Cluster keeps all of one event's keys on one node only if they
//! hash to one slot: every key is under the hash tag `{usher:EVENT}`. This
//! runs the line's and the voucher ledger's steps on a real redis-server in
//! cluster mode (one node holding every slot), which refuses any script or
//! command whose keys are in two slots, then asks Redis for the slot of
//! every key they wrote: one slot per event.

use crate::support::redis;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use redis::{RedisOptions, RedisServer};
use usher::store::redis_conn::connect_url;
use usher::store::redis_durable::Durability;
use usher::store::redis_line::{RedisLine, RedisLineConfig, SharedGate};
use usher::store::{RedisLedger, Reservation};

const CFG: RedisLineConfig = RedisLineConfig {
    grace_ms: 10_000,
    claim_window_ms: 5_000,
    lease_ms: 1_000,
    heartbeat_ms: 2_000,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_of_an_event_is_in_one_cluster_slot() {
    let dir = crate::support::TempDir::new("redis-cluster-slot");
    let Some(server) = RedisServer::start_with(RedisOptions {
        args: vec![
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-config-file".into(),
            dir.join("nodes.conf").display().to_string(),
        ],
        ..RedisOptions::default()
    }) else {
        return;
    };
    let con = connect_url(&server.url(), Duration::from_secs(2)).unwrap();
    let _: () = ::redis::cmd("CLUSTER")
        .arg("ADDSLOTSRANGE")
        .arg(0)
        .arg(16383)
        .query_async(&mut con.clone())
        .await
        .unwrap();
    let started = Instant::now();
    loop {
        let info: String = ::redis::cmd("CLUSTER")
            .arg("INFO")
            .query_async(&mut con.clone())
            .await
            .unwrap();
        if info.contains("cluster_state:ok") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    for event in ["show", "concert-2027"] {
        // the line: every script and command once (a pre-queue and the
        // lottery touch their own keys)
        let line = RedisLine::new(con.clone(), event, "a", CFG);
        line.set_live_window(750);
        let gate = SharedGate {
            per_minute: 6_000_000,
            burst: 2,
        };
        let now = 1_000_000;
        for _ in 0..4 {
            line.issue(now).await.unwrap();
        }
        line.observe(3, now).await.unwrap();
        assert_eq!(line.tick(now, 10, gate).await.unwrap().granted, 2);
        assert!(line.take(1, 7, now + 60_000).await.unwrap());
        line.touch(7, now + 90_000).await.unwrap();
        line.touch_many(&[(8, now + 90_000)]).await.unwrap();
        line.release_many(&[8]).await.unwrap();
        line.set_lottery(true);
        line.tick(now + 250, 10, gate).await.unwrap();
        line.set_lottery(false);
        line.set_opens_at(Some(now + 500));
        line.tick(now + 600, 10, gate).await.unwrap();
        let _ = line.draw(&[1, 2, 3, 4]).await.unwrap();
        line.tick(now + 900, 10, gate).await.unwrap();
        // the voucher ledger, with the WAIT path too
        let ledger = RedisLedger::new(con.clone(), event, 5).with_durability(Some(Durability {
            replicas: 0,
            timeout: Duration::from_millis(10),
        }));
        assert!(matches!(
            ledger.reserve("ann").await.unwrap(),
            Reservation::Pending(_)
        ));
        ledger.complete("ann", "CODE-1", "pool").await.unwrap();
        assert!(matches!(
            ledger.reserve("ann").await.unwrap(),
            Reservation::Issued(_)
        ));
        ledger.reserve("bob").await.unwrap();
        ledger.refuse("bob", "no").await.unwrap();
        ledger.reserve("cid").await.unwrap();
        ledger.pending(Duration::ZERO).await.unwrap();
        ledger.refresh().await.unwrap();
        assert!(ledger.audit().await.unwrap().is_ok());
    }

    // every key an event wrote, and the slot Redis puts it in
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut con.clone())
        .await
        .unwrap();
    for event in ["show", "concert-2027"] {
        let mine: Vec<&String> = keys
            .iter()
            .filter(|k| k.starts_with(&format!("{{usher:{event}}}")))
            .collect();
        assert!(mine.len() >= 20, "{event}: {mine:?}");
        let mut slots = HashSet::new();
        for k in &mine {
            let slot: u16 = ::redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(k.as_str())
                .query_async(&mut con.clone())
                .await
                .unwrap();
            slots.insert(slot);
        }
        assert_eq!(slots.len(), 1, "{event}: {mine:?} in slots {slots:?}");
    }
    assert!(
        keys.iter().all(|k| k.starts_with("{usher:")),
        "a key outside the events' tags: {keys:?}"
    );
}
