//! Two usher processes sharing a real Redis: an announcement made on one
//! node reaches visitors waiting on the other within a poll or two, and
//! feedback posted on one node is read through the other's admin API.
//! Skipped with a note when redis-server is not installed.

use crate::support as common;
use crate::support::redis;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::clients::{admin_get, admin_post, exchange};
use common::origin::Origin;
use common::process::UsherProcess;
use common::{Response, TempDir};
use redis::RedisServer;

async fn node(name: &str, origin: SocketAddr, redis: &str) -> UsherProcess {
    node_with(name, origin, redis, "").await
}

/// [`node`] with more `[room]` lines.
async fn node_with(name: &str, origin: SocketAddr, redis: &str, more: &str) -> UsherProcess {
    let tail = format!(
        "[room]\nevent = \"talk-nodes\"\nmax_active_users = 1\nnew_users_per_minute = 1\n{more}\
         session_duration = \"10m\"\nrefresh = \"1s\"\nmessage = \"start\"\n\
         [room.limits]\ntickets_per_minute_per_ip = 100000\nrequests_per_second_per_ip = 0\n\n\
         [store]\nbackend = \"redis\"\nurl = \"{redis}\"\nnode_id = \"{name}\"\n"
    );
    UsherProcess::spawn(
        TempDir::new(&format!("talk-{name}")),
        &common::config(origin, "", "", &tail),
    )
    .await
}

async fn get_with(addr: SocketAddr, path: &str, headers: &str) -> Response {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{headers}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
}

fn ticket(r: &Response) -> Option<String> {
    r.head.get_all("set-cookie").into_iter().find_map(|c| {
        let kv = c.split(';').next()?;
        kv.starts_with("usher_ticket=").then(|| kv.to_string())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_announcement_on_one_node_reaches_visitors_on_the_other() {
    let Some(redis) = RedisServer::start(None) else {
        eprintln!("redis-server not installed: skipped");
        return;
    };
    let origin = Origin::ok().await;
    let a = node("a", origin.addr, &redis.url()).await;
    let b = node("b", origin.addr, &redis.url()).await;

    // The one place goes to the first visitor; the next waits on node b.
    let _ = get_with(a.addr(), "/", "").await;
    let mut cookie = None;
    for _ in 0..50 {
        let r = get_with(b.addr(), "/", "").await;
        if let Some(t) = ticket(&r) {
            cookie = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let cookie = cookie.expect("a ticket from node b");
    let headers =
        format!("Cookie: {cookie}\r\nAccept: application/json\r\nAccept-Language: en\r\n");
    let poll = || async {
        let r = get_with(b.addr(), "/__usher/status", &headers).await;
        serde_json::from_slice::<serde_json::Value>(&r.body).expect("status JSON")
    };
    assert_eq!(poll().await["message"], "start");

    let r = admin_post(
        a.admin(),
        "/admin/message",
        r#"{"ko":"재고 추가","en":"More stock added"}"#,
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text());
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["shared"], true);
    assert!(v.get("shared_error").is_none(), "{v}");

    // Node b follows Redis every second; the page polls every second.
    let made = Instant::now();
    loop {
        let s = poll().await;
        if s["message"] == "More stock added" {
            assert_eq!(s["messages"]["ko"], "재고 추가");
            break;
        }
        assert!(
            made.elapsed() < Duration::from_secs(3),
            "node b still shows {}",
            s["message"]
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Feedback on node b, read through node a.
    let body = "category=cant_get_in&text=stuck+at+the+same+place";
    let r = exchange(
        b.addr(),
        format!(
            "POST /__usher/feedback HTTP/1.1\r\nHost: t\r\nCookie: {cookie}\r\n\
             Accept: application/json\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text());
    let r = admin_get(a.admin(), "/admin/feedback").await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["source"], "redis", "{v}");
    assert_eq!(v["feedback"][0]["text"], "stuck at the same place");
    assert_eq!(v["feedback"][0]["category"], "cant_get_in");
    // with the visitor's place in the shared line when they wrote
    assert_eq!(v["feedback"][0]["state"], "waiting", "{v}");
    assert_eq!(
        v["feedback"][0]["position"],
        poll().await["position"],
        "{v}"
    );
    assert!(v["feedback"][0]["position"].is_u64(), "{v}");
}

/// Before the opening every node tells the same time to go, from the
/// line's clock (Redis's `TIME`, each node correcting its own by the skew it
/// measured), so a visitor switching nodes never sees the countdown jump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_event_notice_gives_every_node_the_same_time_to_the_opening() {
    let Some(redis) = RedisServer::start(None) else {
        eprintln!("redis-server not installed: skipped");
        return;
    };
    let origin = Origin::ok().await;
    let unix =
        |t: std::time::SystemTime| t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let opens = unix(std::time::SystemTime::now()) + 3_600;
    let more = format!(
        "opens_at = \"{}\"\n",
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(opens))
    );
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(node_with(name, origin.addr, &redis.url(), &more).await);
    }
    // a node answers from the line's clock once it has measured its skew
    // (its first tick); then all three, asked within a few milliseconds
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64
    };
    let started = Instant::now();
    loop {
        let before = unix_ms();
        let mut seen = Vec::new();
        for n in &nodes {
            let r = get_with(n.addr(), "/__usher/event?format=json", "").await;
            assert_eq!(r.status(), 200, "{}", r.text());
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            assert_eq!(v["prequeue_draw"], true, "{v}");
            seen.push(v["opens_in_seconds"].as_u64().expect("opens_in_seconds"));
        }
        let after = unix_ms();
        // the test's own clock brackets every answer ...
        let (early, late) = (opens - after / 1000 - 1, opens - before / 1000 + 1);
        for s in &seen {
            assert!(
                (early..=late).contains(s),
                "{seen:?} not in {early}..={late}"
            );
        }
        // ... and the nodes agree to the second; exactly, when all three
        // were asked well inside one second (a node's skew is measured to
        // a few milliseconds)
        let spread = seen.iter().max().unwrap() - seen.iter().min().unwrap();
        assert!(spread <= 1, "nodes disagree: {seen:?}");
        if before / 1000 == after / 1000 && before % 1000 >= 100 && after % 1000 <= 900 {
            assert_eq!(spread, 0, "nodes disagree: {seen:?}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}
