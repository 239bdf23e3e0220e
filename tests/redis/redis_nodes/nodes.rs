//! The origin that counts who is inside, the usher processes around one
//! Redis, and a visitor's request to them.

use crate::support::http as http_util;
use crate::support::process;

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use process::UsherProcess;
use tokio::net::TcpListener;

use http_util::HttpClient;

/// Who is inside, as the origin sees it: a visitor enters with its first
/// page and leaves at `/checkout` (answered with `X-Usher-Release`).
#[derive(Default)]
pub(super) struct Inside {
    pub(super) now: Mutex<HashSet<String>>,
    pub(super) most: AtomicUsize,
}

pub(super) async fn origin() -> (SocketAddr, Arc<Inside>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let inside = Arc::new(Inside::default());
    let seen = inside.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let inside = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let inside = inside.clone();
                    async move {
                        let who = req
                            .headers()
                            .get("x-visitor")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or_default()
                            .to_string();
                        let mut b = Response::builder();
                        let mut set = inside.now.lock().unwrap();
                        if req.uri().path() == "/checkout" {
                            set.remove(&who);
                            b = b.header("x-usher-release", "1");
                        } else if !who.is_empty() {
                            set.insert(who);
                            inside.most.fetch_max(set.len(), Ordering::SeqCst);
                        }
                        Ok::<_, Infallible>(b.body(Full::new(Bytes::from("page"))).unwrap())
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, inside)
}

pub(super) struct Room {
    pub(super) max_active: usize,
    pub(super) grace: &'static str,
    pub(super) on_failure: &'static str,
}

pub(super) const STEADY: Room = Room {
    max_active: 4,
    grace: "2m",
    on_failure: "hold",
};

pub(super) fn node(
    redis: &str,
    origin: SocketAddr,
    dir: &Path,
    name: &str,
    room: &Room,
) -> UsherProcess {
    node_with(redis, origin, dir, name, room, "")
}

/// [`node`] with more `[room]` settings.
pub(super) fn node_with(
    redis: &str,
    origin: SocketAddr,
    dir: &Path,
    name: &str,
    room: &Room,
    more: &str,
) -> UsherProcess {
    UsherProcess::node(
        dir,
        name,
        &format!(
            r#"
[server]
listen = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
[origin]
url = "http://{origin}"
[room]
keys_file = "{keys}"
max_active_users = {max}
new_users_per_minute = 60000
burst = 10
tick = "50ms"
refresh = "1s"
ticket_grace = "{grace}"
{more}
[room.limits]
tickets_per_minute_per_ip = 10000000
requests_per_second_per_ip = 0
requests_per_second_per_pass = 0
[store]
backend = "redis"
url = "{redis}"
node_id = "{name}"
timeout = "300ms"
on_failure = "{on_failure}"
"#,
            keys = dir.join("keys").display(),
            max = room.max_active,
            grace = room.grace,
            on_failure = room.on_failure,
        ),
    )
}

pub(super) struct Reply {
    pub(super) state: String,
    pub(super) position: Option<u64>,
    pub(super) cookies: Vec<String>,
    pub(super) status: u16,
}

impl Reply {
    pub(super) fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|k| k.starts_with(&format!("{name}=")))
            .cloned()
    }
}

/// A status or page request, with the visitor's cookie and its id for the
/// origin's count.
pub(super) async fn get(
    c: &HttpClient,
    url: &str,
    cookie: Option<&str>,
    visitor: Option<u64>,
) -> Result<Reply, String> {
    let mut req = Request::get(url);
    if let Some(k) = cookie {
        req = req.header(header::COOKIE, k);
    }
    if let Some(v) = visitor {
        req = req.header("x-visitor", v.to_string());
    }
    let r = http_util::send(c, req).await?;
    Ok(Reply {
        state: r.json["state"].as_str().unwrap_or_default().to_string(),
        position: r.json["position"].as_u64(),
        cookies: r.cookies,
        status: r.status,
    })
}

pub(super) fn number(keys: &usher::tokens::Keyring, cookie: &str) -> u64 {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    keys.open_ticket(
        cookie.trim_start_matches("usher_ticket="),
        usher::tokens::event_id("default"),
        now,
        86_400,
    )
    .unwrap()
    .number
}

pub(super) async fn three(
    redis: &str,
    origin: SocketAddr,
    dir: &Path,
    room: &Room,
) -> Vec<UsherProcess> {
    ["n1", "n2", "n3"]
        .iter()
        .map(|n| node(redis, origin, dir, n, room))
        .collect()
}

pub(super) fn bases(nodes: &[UsherProcess]) -> Arc<Vec<String>> {
    Arc::new(nodes.iter().map(|n| n.base()).collect())
}

pub(super) fn admins(nodes: &[UsherProcess]) -> Vec<u16> {
    nodes.iter().map(|n| n.admin().port()).collect()
}

/// Newcomers held without a ticket, `/readyz` 503 and `usher_store_up` 0
/// on every node.
pub(super) async fn assert_holding(c: &HttpClient, nodes: &[UsherProcess]) {
    let started = Instant::now();
    for n in nodes {
        loop {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "never saw the outage"
            );
            if n.admin_get("/readyz").is_some_and(|(s, _)| s == 503) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(n.metric("usher_store_up"), Some(0.0));
        let held = get(c, &format!("{}/__usher/status", n.base()), None, None)
            .await
            .unwrap();
        assert_eq!((held.state.as_str(), held.position), ("queued", None));
        assert!(held.cookies.is_empty(), "no ticket without Redis");
    }
}
