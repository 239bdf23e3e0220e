//! Two usher processes sharing a real Redis: an announcement made on one
//! node reaches visitors waiting on the other within a poll or two, and
//! feedback posted on one node is read through the other's admin API.
//! Skipped with a note when redis-server is not installed.

mod common;
#[path = "support/redis.rs"]
mod redis;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::clients::{admin_get, admin_post, exchange};
use common::origin::Origin;
use common::proc::UsherProc;
use common::{Response, TempDir};
use redis::RedisServer;

async fn node(name: &str, origin: SocketAddr, redis: &str) -> UsherProc {
    let tail = format!(
        "[room]\nevent = \"talk-nodes\"\nmax_active_users = 1\nnew_users_per_minute = 1\n\
         session_duration = \"10m\"\nrefresh = \"1s\"\nmessage = \"start\"\n\
         [room.limits]\ntickets_per_minute_per_ip = 100000\nrequests_per_second_per_ip = 0\n\n\
         [store]\nbackend = \"redis\"\nurl = \"{redis}\"\nnode_id = \"{name}\"\n"
    );
    UsherProc::spawn(
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
    let _ = get_with(a.addr, "/", "").await;
    let mut cookie = None;
    for _ in 0..50 {
        let r = get_with(b.addr, "/", "").await;
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
        let r = get_with(b.addr, "/__usher/status", &headers).await;
        serde_json::from_slice::<serde_json::Value>(&r.body).expect("status JSON")
    };
    assert_eq!(poll().await["message"], "start");

    let r = admin_post(
        a.admin,
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
        b.addr,
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
    let r = admin_get(a.admin, "/admin/feedback").await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["source"], "redis", "{v}");
    assert_eq!(v["feedback"][0]["text"], "stuck at the same place");
    assert_eq!(v["feedback"][0]["category"], "cant_get_in");
}
