//! The steady line across three processes, and the faults of an event:
//! Redis stopped and restarted, Redis paused, a node SIGKILLed.

use crate::support::http as http_util;
use crate::support::TempDir;

use crate::support::redis;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use redis::{RedisOptions, RedisServer};

use http_util::HttpClient;

use super::event::*;
use super::nodes::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_one_fifo_line_within_the_active_limit() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let dir = TempDir::keyed("redis-steady");
    let (origin, inside) = origin().await;
    let nodes = three(&redis.url(), origin, &dir, &STEADY).await;
    let keys = usher::tokens::Keyring::load(&dir.join("keys")).unwrap();
    let seen = event(bases(&nodes), &admins(&nodes), &keys, 24, 0, || async {}).await;
    assert_fifo(&seen);
    assert_cap(&inside, STEADY.max_active);
    // the line is empty again: once the last releases reached Redis (a
    // tick), a newcomer on any node goes straight in
    let started = Instant::now();
    loop {
        let (_, body) = nodes[1].admin_get("/admin/status").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        if v["room"]["active"] == 0 && v["room"]["pending"] == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{}", v["room"]);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let r = get(
        &c,
        &format!("{}/__usher/status", nodes[1].base()),
        None,
        None,
    )
    .await
    .unwrap();
    assert_eq!(r.state, "admitted", "direct admission into an empty line");
    assert!(r.cookie("usher_pass").is_some() && r.cookie("usher_ticket").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_mid_event_and_restarted_loses_nothing() {
    let dir = TempDir::keyed("redis-restart");
    let data = dir.join("redis");
    std::fs::create_dir_all(&data).unwrap();
    let aof = |port| RedisOptions {
        port,
        aof_dir: Some(data.clone()),
        ..RedisOptions::default()
    };
    let Some(mut redis) = RedisServer::start_with(aof(None)) else {
        return;
    };
    let (port, url) = (redis.port, redis.url());
    let (origin, inside) = origin().await;
    let nodes = three(&url, origin, &dir, &STEADY).await;
    let keys = usher::tokens::Keyring::load(&dir.join("keys")).unwrap();
    let restarted = Arc::new(Mutex::new(None));
    let r2 = restarted.clone();
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let seen = event(bases(&nodes), &admins(&nodes), &keys, 18, 4, || async {
        redis.stop();
        assert_holding(&c, &nodes).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        *r2.lock().unwrap() = RedisServer::start_with(aof(Some(port)));
    })
    .await;
    assert!(restarted.lock().unwrap().is_some());
    assert_fifo(&seen);
    assert_cap(&inside, STEADY.max_active);
    for n in &nodes {
        assert_eq!(n.admin_get("/readyz").map(|r| r.0), Some(200));
        assert_eq!(n.metric("usher_store_up"), Some(1.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_ten_seconds_mid_event_skips_nobody() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    // the pause is as long as a ticket's grace (the shortest allowed):
    // nobody who could not poll through it loses their place (the resume
    // after a longer gap is in tests/redis/redis_line.rs)
    let room = Room {
        grace: "10s",
        ..STEADY
    };
    let dir = TempDir::keyed("redis-pause");
    let (origin, inside) = origin().await;
    let nodes = three(&redis.url(), origin, &dir, &room).await;
    let keys = usher::tokens::Keyring::load(&dir.join("keys")).unwrap();
    let pid = redis.child.id().to_string();
    let paused = Arc::new(AtomicBool::new(false));
    let p2 = paused.clone();
    let seen = event(bases(&nodes), &admins(&nodes), &keys, 18, 4, || async {
        let stop = std::process::Command::new("kill")
            .args(["-STOP", &pid])
            .status();
        assert!(stop.unwrap().success());
        p2.store(true, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(10)).await;
        std::process::Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap();
    })
    .await;
    assert!(paused.load(Ordering::SeqCst));
    assert_fifo(&seen);
    assert_cap(&inside, room.max_active);
    // a poll waits for Redis at most the command timeout (300 ms), twice
    // at worst (observe, then take); never the length of the pause
    assert!(
        seen.slowest < Duration::from_secs(3),
        "slowest {:?}",
        seen.slowest
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sigkilled_mid_event_the_others_carry_on() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let dir = TempDir::keyed("redis-kill");
    let (origin, inside) = origin().await;
    let mut nodes = three(&redis.url(), origin, &dir, &STEADY).await;
    let keys = usher::tokens::Keyring::load(&dir.join("keys")).unwrap();
    let all = bases(&nodes);
    let ports = admins(&nodes);
    let (first, _) = nodes.split_at_mut(1);
    // n1 started first: it holds the tick lease when it dies
    let seen = event(all, &ports, &keys, 18, 4, || async {
        first[0].kill();
    })
    .await;
    assert_fifo(&seen);
    assert_cap(&inside, STEADY.max_active);
}
