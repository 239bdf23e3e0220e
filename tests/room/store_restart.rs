//! The durable local line (`[store] backend = "local"`) over the real
//! binary: visitors take tickets, usher is SIGKILLed, restarted on the same
//! state_dir, and every ticket is still valid with the same order and
//! positions (including tickets handed out after the last snapshot), and
//! new tickets get numbers above every earlier one.

use std::path::Path;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::support::process::UsherProcess;
use crate::support::TempDir;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn config(dir: &Path) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
admin = ""
[log]
format = "json"
[origin]
url = "http://127.0.0.1:9"
[room]
keys_file = "{keys}"
max_active_users = 1
new_users_per_minute = 1
burst = 1
[room.limits]
tickets_per_minute_per_ip = 10000000
requests_per_second_per_ip = 0
[store]
state_dir = "{state}"
"#,
        keys = dir.join("keys").display(),
        state = dir.join("state").display(),
    )
}

/// Starts the binary on `cfg`: the process and the base URL of its plain
/// listener (a port the kernel picks, read back from its log).
fn start(cfg: &Path) -> (UsherProcess, String) {
    let proc = UsherProcess::run(cfg);
    let base = proc.base();
    (proc, base)
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Polls the status endpoint; returns (state, position, ticket cookie set).
async fn status(
    c: &HttpClient,
    base: &str,
    cookie: Option<&str>,
) -> (String, Option<u64>, Option<String>) {
    let mut req =
        Request::get(format!("{base}/__usher/status")).header(header::ACCEPT, "application/json");
    if let Some(k) = cookie {
        req = req.header(header::COOKIE, k);
    }
    let resp = c
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let ticket = resp
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with("usher_ticket="))
        .map(|v| v.split(';').next().unwrap().to_string());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    (
        v["state"].as_str().unwrap_or_default().to_string(),
        v["position"].as_u64(),
        ticket,
    )
}

async fn status_of(c: &HttpClient, base: &str, t: &str) -> (String, Option<u64>, Option<String>) {
    status(c, base, Some(t)).await
}

fn number(keys: &usher::tokens::Keyring, cookie: &str) -> u64 {
    let token = cookie.trim_start_matches("usher_ticket=");
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    keys.open_ticket(token, usher::tokens::event_id("default"), now, 86_400)
        .unwrap()
        .number
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_survive_sigkill_with_their_order_and_numbers_never_repeat() {
    let dir = TempDir::keyed("store-restart");
    let cfg = dir.join("usher.toml");
    let text = config(&dir);
    std::fs::write(&cfg, &text).unwrap();
    let keys = usher::tokens::Keyring::load(&dir.join("keys")).unwrap();
    let c = client();

    let (mut proc, base) = start(&cfg);
    let (first, _, _) = status(&c, &base, None).await;
    assert_eq!(first, "admitted", "the first visitor fills the one slot");
    let mut tickets = Vec::new();
    for i in 0..20u64 {
        let (state, pos, t) = status(&c, &base, None).await;
        assert_eq!((state.as_str(), pos), ("queued", Some(i)));
        tickets.push(t.expect("a ticket"));
    }
    // The snapshot is written every second; these three come after it
    // (numbers reserved on disk, but not in the snapshot).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    for i in 20..23u64 {
        let (state, pos, t) = status(&c, &base, None).await;
        assert_eq!((state.as_str(), pos), ("queued", Some(i)));
        tickets.push(t.expect("a ticket"));
    }
    let before: Vec<u64> = tickets.iter().map(|t| number(&keys, t)).collect();
    assert!(before.windows(2).all(|w| w[0] < w[1]), "{before:?}");

    proc.kill(); // SIGKILL: no shutdown snapshot
    let (mut proc, base) = start(&cfg);

    for (i, t) in tickets.iter().enumerate() {
        let (state, pos, again) = status(&c, &base, Some(t)).await;
        assert_eq!(
            (state.as_str(), pos),
            ("queued", Some(i as u64)),
            "ticket {} keeps its place after the crash",
            before[i]
        );
        assert!(again.is_none(), "the same ticket, not a new one");
    }
    let (state, pos, fresh) = status(&c, &base, None).await;
    assert_eq!(
        (state.as_str(), pos),
        ("queued", Some(23)),
        "a newcomer queues behind"
    );
    let fresh = fresh.unwrap();
    let n = number(&keys, &fresh);
    assert!(
        n > *before.last().unwrap(),
        "new number {n} above every earlier one {before:?}"
    );

    // A clean stop (SIGTERM, which also writes a last snapshot) exits 0
    // and keeps every place; numbering still never goes back.
    tickets.push(fresh);
    let pid = proc.pid().to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    let exit = proc
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("usher exits on SIGTERM");
    assert!(exit.success(), "clean exit: {exit}");
    let (_proc, base) = start(&cfg);
    for (i, t) in tickets.iter().enumerate() {
        let (state, pos, _) = status_of(&c, &base, t).await;
        assert_eq!((state.as_str(), pos), ("queued", Some(i as u64)));
    }
    let (_, _, newer) = status(&c, &base, None).await;
    assert!(number(&keys, &newer.unwrap()) > n);
}
