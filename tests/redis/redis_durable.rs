//! Voucher claims that survive a failover (`[store] min_replicas_acked`),
//! against a real primary and a real replica: a code is shown only once
//! its claim is on the replica; with the replica stopped the claim is
//! refused ("try again"), never shown; the same person asking again gets
//! the same code once the replica caught up; after the primary is killed
//! and the replica promoted, every code ever shown is there.

use crate::support::process;
use crate::support::redis;
use crate::support::TempDir;

use std::time::{Duration, Instant};

use ::redis::aio::ConnectionManager;
use process::UsherProcess;
use redis::{RedisOptions, RedisServer};
use usher::store::redis_conn::connect_url;
use usher::store::redis_durable::Durability;
use usher::store::{RedisLedger, Reservation, StoreError};

const WAIT: Duration = Duration::from_millis(300);

/// A primary and a replica of it, the replica in sync.
async fn pair() -> Option<(RedisServer, RedisServer)> {
    let primary = RedisServer::start(None)?;
    let replica = RedisServer::start_with(RedisOptions {
        args: vec![
            "--replicaof".into(),
            "127.0.0.1".into(),
            primary.port.to_string(),
        ],
        ..RedisOptions::default()
    })?;
    let con = connect_url(&primary.url(), Duration::from_secs(2)).unwrap();
    let started = Instant::now();
    loop {
        let info: String = ::redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut con.clone())
            .await
            .unwrap();
        if info.contains("state=online") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "{info}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Some((primary, replica))
}

fn ledger(url: &str, durable: bool) -> RedisLedger {
    let con = connect_url(url, Duration::from_secs(2)).unwrap();
    RedisLedger::new(con, "show", 10).with_durability(durable.then_some(Durability {
        replicas: 1,
        timeout: WAIT,
    }))
}

/// A fresh claim through to its code (as the claim service does).
async fn claim(l: &RedisLedger, who: &str, code: &str) -> Result<String, StoreError> {
    match l.reserve(who).await? {
        Reservation::Issued(c) => Ok(c.code),
        Reservation::Pending(_) => l.complete(who, code, "pool").await.map(|()| code.into()),
        other => panic!("{other:?}"),
    }
}

/// `who` asking again until their recorded code is confirmed on the
/// replica (at most 5 s).
async fn confirmed(l: &RedisLedger, who: &str) -> String {
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match l.reserve(who).await {
                Ok(Reservation::Issued(c)) => break c.code,
                Err(StoreError::NotDurable { .. }) => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                other => panic!("{other:?}"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{who}'s code never confirmed"))
}

async fn record_on(con: &ConnectionManager, who: &str) -> Option<String> {
    ::redis::cmd("HGET")
        .arg("{usher:show}:v:claims")
        .arg(who)
        .query_async(&mut con.clone())
        .await
        .unwrap()
}

fn signal(s: &RedisServer, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &s.child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_is_shown_only_once_on_a_replica_and_survives_the_failover() {
    let Some((mut primary, replica)) = pair().await else {
        return;
    };
    let on_replica = connect_url(&replica.url(), Duration::from_secs(2)).unwrap();
    let durable = ledger(&primary.url(), true);
    // acknowledged: already on the replica when the answer comes
    // (a loaded machine may miss the first wait: the repeat then confirms
    // the same code, as a visitor's would)
    let ann = match claim(&durable, "ann", "CODE-A").await {
        Ok(code) => code,
        Err(StoreError::NotDurable { .. }) => confirmed(&durable, "ann").await,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(ann, "CODE-A");
    assert_eq!(
        record_on(&on_replica, "ann").await.as_deref(),
        Some("i|0|CODE-A")
    );

    // the replica stops answering: the claim is recorded on the primary but
    // not shown, after the wait, and a repeat is not shown either
    signal(&replica, "-STOP");
    let started = Instant::now();
    let e = claim(&durable, "bob", "CODE-B").await.unwrap_err();
    assert!(
        matches!(
            e,
            StoreError::NotDurable {
                acked: 0,
                wanted: 1
            }
        ),
        "{e}"
    );
    assert!(started.elapsed() >= WAIT, "{:?}", started.elapsed());
    let e = durable.reserve("bob").await.unwrap_err();
    assert!(matches!(e, StoreError::NotDurable { .. }), "{e}");
    // without min_replicas_acked the same moment shows a code at once,
    // though the stopped replica cannot have it (a failover now loses it)
    let eager = ledger(&primary.url(), false);
    assert_eq!(claim(&eager, "cid", "CODE-C").await.unwrap(), "CODE-C");

    // the replica catches up: bob asking again gets the same code
    signal(&replica, "-CONT");
    assert_eq!(confirmed(&durable, "bob").await, "CODE-B");

    // a claim not on the replica when the primary dies: never shown (the
    // link is cut first, so none of its bytes wait in a socket buffer)
    signal(&replica, "-STOP");
    let on_primary = connect_url(&primary.url(), Duration::from_secs(2)).unwrap();
    let _: u64 = ::redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query_async(&mut on_primary.clone())
        .await
        .unwrap();
    let e = claim(&durable, "dan", "CODE-D").await.unwrap_err();
    assert!(matches!(e, StoreError::NotDurable { .. }), "{e}");
    primary.stop();
    signal(&replica, "-CONT");
    let _: () = ::redis::cmd("REPLICAOF")
        .arg("NO")
        .arg("ONE")
        .query_async(&mut on_replica.clone())
        .await
        .unwrap();
    // the promoted replica has every code that was shown
    let promoted = ledger(&replica.url(), false);
    for (who, code) in [("ann", "CODE-A"), ("bob", "CODE-B")] {
        match promoted.reserve(who).await.unwrap() {
            Reservation::Issued(c) => assert_eq!(c.code, code, "{who}"),
            other => panic!("{who}: {other:?}"),
        }
    }
    // dan's was never shown and is not there: his claim starts again
    assert!(record_on(&on_replica, "dan").await.is_none());
    assert!(matches!(
        promoted.reserve("dan").await.unwrap(),
        Reservation::Pending(_)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_visitor_is_told_to_try_again_until_the_replica_has_the_claim() {
    let Some((primary, replica)) = pair().await else {
        return;
    };
    let dir = TempDir::keyed("redis-durable");
    std::fs::write(dir.join("codes.txt"), "SEAT-1\nSEAT-2\nSEAT-3\n").unwrap();
    let node = UsherProcess::node(
        &dir,
        "n1",
        &format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
[origin]
url = "http://127.0.0.1:9"
[room]
keys_file = "{keys}"
max_active_users = 100
new_users_per_minute = 60000
burst = 100
tick = "50ms"
[store]
backend = "redis"
url = "{url}"
node_id = "n1"
timeout = "500ms"
min_replicas_acked = 1
replica_ack_timeout = "300ms"
[vouchers]
identity = "header:x-user"
plugin = "pool"
pool_file = "{pool}"
stock = 3
"#,
            keys = dir.join("keys").display(),
            url = primary.url(),
            pool = dir.join("codes.txt").display(),
        ),
    );
    let port: u16 = node.addr().port();
    let claim = |user: &str| -> (u16, String) {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // a pass first (the line is empty: admitted at once)
        write!(s, "GET /__usher/status HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let pass = out
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: usher_pass="))
            .and_then(|c| c.split(';').next())
            .unwrap_or_else(|| panic!("no pass: {out}"))
            .to_string();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "POST /__usher/voucher HTTP/1.0\r\nHost: x\r\nAccept: application/json\r\nCookie: usher_pass={pass}\r\nX-User: {user}\r\nContent-Length: 0\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out.split(' ').nth(1).unwrap().parse().unwrap();
        (status, out.split_once("\r\n\r\n").unwrap().1.to_string())
    };
    // the first claim is shown once the replica acknowledged it (a loaded
    // machine can take longer than the 300 ms wait: asking again gets the
    // same code)
    let started = Instant::now();
    loop {
        let (status, body) = claim("ann");
        if status == 200 {
            assert!(body.contains("SEAT-1"), "{body}");
            break;
        }
        assert_eq!(status, 202, "{body}");
        assert!(!body.contains("SEAT"), "{body}");
        assert!(started.elapsed() < Duration::from_secs(10), "{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let errors_before = node
        .metric("usher_voucher_plugin_errors_total{kind=\"store_not_durable\"}")
        .unwrap_or(0.0);

    signal(&replica, "-STOP");
    let (status, body) = claim("bob");
    assert_eq!(status, 202, "not shown while the replica lags: {body}");
    assert!(body.contains("\"pending\""), "{body}");
    assert!(!body.contains("SEAT"), "{body}");
    assert_eq!(
        node.metric("usher_voucher_plugin_errors_total{kind=\"store_not_durable\"}"),
        Some(errors_before + 1.0)
    );
    signal(&replica, "-CONT");
    let started = Instant::now();
    loop {
        let (status, body) = claim("bob");
        if status == 200 {
            assert!(body.contains("SEAT-2"), "the same code: {body}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{body}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
