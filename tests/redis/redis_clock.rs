//! Clock skew between a node and Redis, with real usher processes and a
//! real redis-server: a node whose clock is 30 s from Redis's `TIME` turns
//! not ready and says why, in `/readyz`, its metrics and its log; a node on
//! the same Redis with an honest clock stays ready.
//!
//! Nothing can move a real clock by 30 s inside a test, so the skewed node
//! reaches Redis through `support/time_shift.rs`: a loopback proxy that
//! passes everything through and answers `TIME` 30 s late. Its Redis is
//! the real one for every other command (the line works through it).

use crate::support::process;
use crate::support::redis;
use crate::support::time_shift;
use crate::support::TempDir;

use std::path::Path;
use std::time::{Duration, Instant};

use process::UsherProcess;
use redis::RedisServer;
use time_shift::TimeShift;

fn node(dir: &Path, name: &str, redis: &str) -> UsherProcess {
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
max_active_users = 10
new_users_per_minute = 600
ticket_grace = "30s"
tick = "100ms"
[store]
backend = "redis"
url = "{redis}"
node_id = "{name}"
timeout = "500ms"
"#,
            keys = dir.join("keys").display(),
        ),
    )
}

/// Polls `ok` every 50 ms for at most `within`.
fn wait_for(within: Duration, mut ok: impl FnMut() -> bool) -> bool {
    let started = Instant::now();
    while started.elapsed() < within {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_30_s_off_from_redis_turns_not_ready_and_says_why() {
    let Some(server) = RedisServer::start(None) else {
        return;
    };
    // Redis seen through the proxy is 30 s ahead: the node is 30 s behind it
    let shift = TimeShift::start(server.port, 30).await;
    let dir = TempDir::keyed("redis-clock");
    let skewed = node(&dir, "skewed", &shift.url());
    let honest = node(&dir, "honest", &server.url());

    let readyz = |u: &UsherProcess| u.admin_get("/readyz").unwrap_or((0, String::new()));
    assert!(
        wait_for(Duration::from_secs(10), || readyz(&skewed).0 == 503),
        "the skewed node stayed ready: {:?}",
        readyz(&skewed)
    );
    let (_, why) = readyz(&skewed);
    assert!(why.starts_with("clock skew:"), "{why}");
    // named in seconds: about -30 (the round trip's midpoint moves it by
    // milliseconds on a busy machine: -29.999 is as right as -30.001)
    let named: f64 = why
        .split("clock is ")
        .nth(1)
        .and_then(|r| r.split(" s").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the skew is named: {why}"));
    assert!((-30.5..=-29.5).contains(&named), "the skew is named: {why}");
    assert!(why.contains("limit 7.500 s"), "the limit is named: {why}");
    let skew = skewed.metric("usher_clock_skew_seconds").unwrap();
    assert!((-30.5..=-29.5).contains(&skew), "{skew}");
    assert_eq!(skewed.metric("usher_clock_skew_exceeded"), Some(1.0));
    let log = skewed.logs().join("\n");
    assert!(
        log.contains("clock skew: this node's clock is off from Redis's TIME"),
        "{log}"
    );
    // the line itself works through the proxy: the store is up
    assert_eq!(skewed.metric("usher_store_up"), Some(1.0));

    // the honest node on the same Redis: ready, skew near 0
    assert!(wait_for(Duration::from_secs(5), || {
        honest.metric("usher_clock_skew_seconds").is_some()
    }));
    let (status, body) = readyz(&honest);
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let skew = honest.metric("usher_clock_skew_seconds").unwrap();
    assert!(skew.abs() < 0.5, "{skew}");
    assert_eq!(honest.metric("usher_clock_skew_exceeded"), Some(0.0));
}

/// The proxy cuts RESP frames where they end and shifts only `TIME`.
#[test]
fn frames_are_cut_where_they_end() {
    assert_eq!(time_shift::frame_len(b"+OK\r\n+x"), Some(5));
    assert_eq!(time_shift::frame_len(b"$3\r\nabc\r\n"), Some(9));
    assert_eq!(time_shift::frame_len(b"$3\r\nab"), None);
    assert_eq!(time_shift::frame_len(b"*2\r\n:1\r\n$-1\r\n"), Some(13));
    assert_eq!(time_shift::frame_len(b"*1\r\n*1\r\n:1\r"), None);
    assert!(time_shift::is_time(b"*1\r\n$4\r\ntime\r\n"));
    assert_eq!(
        time_shift::shifted(b"*2\r\n$10\r\n1700000000\r\n$6\r\n123456\r\n", 30),
        b"*2\r\n$10\r\n1700000030\r\n$6\r\n123456\r\n".to_vec()
    );
}
