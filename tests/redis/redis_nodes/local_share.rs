//! `on_failure = "local_share"`: each node admits its share while Redis is
//! away, ticket holders first.

use crate::support::http as http_util;
use crate::support::TempDir;

use crate::support::redis;

use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use redis::RedisServer;

use http_util::HttpClient;

use super::nodes::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_share_admits_each_nodes_share_ticket_holders_first() {
    let Some(mut redis) = RedisServer::start(None) else {
        return;
    };
    let port = redis.port;
    let room = Room {
        max_active: 6,
        on_failure: "local_share",
        ..STEADY
    };
    let dir = TempDir::keyed("redis-share");
    let (origin, _) = origin().await;
    let nodes = three(&redis.url(), origin, &dir, &room).await;
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    while nodes
        .iter()
        .any(|n| n.metric("usher_store_nodes") != Some(3.0))
    {
        assert!(started.elapsed() < Duration::from_secs(10), "no heartbeats");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // a visitor takes a ticket (the room paused: no direct admission) and
    // does not poll again before Redis goes away
    let status = |i: usize| format!("{}/__usher/status", nodes[i].base());
    nodes
        .iter()
        .for_each(|n| assert_eq!(n.admin_post("/admin/pause"), Some(200)));
    let ticket = get(&c, &status(0), None, None)
        .await
        .unwrap()
        .cookie("usher_ticket")
        .unwrap();
    nodes
        .iter()
        .for_each(|n| assert_eq!(n.admin_post("/admin/resume"), Some(200)));
    redis.stop();
    let started = Instant::now();
    for n in &nodes {
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "no local share"
            );
            let r = n.admin_get("/readyz");
            if r.as_ref()
                .is_some_and(|(s, b)| *s == 200 && b.contains("share (1/3)"))
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(n.metric("usher_store_up"), Some(0.0));
    }
    // the ticket holder first; a newcomer right after waits behind them
    let r = get(&c, &status(0), Some(&ticket), None).await.unwrap();
    assert_eq!(r.state, "admitted", "the ticket holder goes first");
    let r = get(&c, &status(0), None, None).await.unwrap();
    assert_eq!(
        r.state, "queued",
        "newcomers wait while ticket holders poll"
    );
    assert!(r.cookies.is_empty());
    // two refresh intervals without ticket holders: newcomers, up to 6/3 each
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let mut admitted = [1, 0, 0];
    for (i, got) in admitted.iter_mut().enumerate() {
        for _ in 0..4 {
            let r = get(&c, &status(i), None, None).await.unwrap();
            if r.state == "admitted" {
                assert!(r.cookie("usher_pass").is_some());
                *got += 1;
            }
        }
    }
    assert_eq!(admitted, [2, 2, 2], "each node its share of 6");
    assert_eq!(
        nodes[1].metric("usher_admitted_total{via=\"local_share\"}"),
        Some(2.0)
    );
    // Redis back (empty): the shared line resumes, newcomers take tickets
    let _again = RedisServer::start(Some(port)).unwrap();
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(20), "never resumed");
        if nodes[2]
            .admin_get("/readyz")
            .is_some_and(|(_, b)| b == "ready\n")
        {
            let r = get(&c, &status(2), None, None).await.unwrap();
            if r.cookie("usher_ticket").is_some() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
