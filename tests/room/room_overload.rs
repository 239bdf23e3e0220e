//! Twenty times more visitors than a fragile origin can take, over real
//! sockets: the origin never sees more than it can take, every visitor gets
//! the origin's page or the holding page (no 5xx, no connection errors), and
//! everyone who keeps polling is admitted, in ticket order.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::support::{InFlight, TempDir};

/// Requests the origin serves at once.
const CAPACITY: usize = 12;
/// Requests a browser makes at once for a page (the page and its parts).
const PARALLEL: usize = 3;
/// Visitors the origin can take at once.
const ACTIVE: usize = CAPACITY / PARALLEL;
const VISITORS: usize = ACTIVE * 20;

/// A fragile origin: serves CAPACITY requests at once (50 ms each), answers
/// 503 beyond that, and remembers the most it ever had in flight.
#[derive(Default)]
struct Fragile {
    in_flight: AtomicUsize,
    max_seen: AtomicUsize,
    overloaded: AtomicUsize,
}

async fn start_origin(state: Arc<Fragile>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let state = state.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let state = state.clone();
                    async move {
                        let (_counted, now) = InFlight::enter(&state.in_flight);
                        state.max_seen.fetch_max(now, Ordering::SeqCst);
                        let resp = if now > CAPACITY {
                            state.overloaded.fetch_add(1, Ordering::SeqCst);
                            Response::builder()
                                .status(503)
                                .body(Full::new(Bytes::from("collapsed")))
                                .unwrap()
                        } else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            let mut b = Response::builder().header("x-origin", "theater");
                            if req.uri().path() == "/checkout" {
                                b = b.header("x-usher-release", "1");
                            }
                            b.body(Full::new(Bytes::from("movie page"))).unwrap()
                        };
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn start_usher(
    origin: SocketAddr,
    keys: &std::path::Path,
) -> (usher::server::Running, SocketAddr) {
    let keys = keys.display();
    let text = format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
admin = ""
[origin]
url = "http://{origin}"
max_in_flight = 64          # only the room protects the origin here
[room]
keys_file = "{keys}"
max_active_users = {ACTIVE}
new_users_per_minute = 1200
burst = {ACTIVE}
tick = "50ms"
refresh = "1s"
ticket_grace = "10s"
claim_window = "5s"
session_duration = "30s"
[room.limits]
tickets_per_minute_per_ip = 1000000
requests_per_second_per_ip = 0
"#
    );
    let cfg = usher::config::Config::parse(&text, "test", std::path::Path::new(".")).unwrap();
    let app = usher::app::App::new(cfg, usher::logging::LogHandle::none()).unwrap();
    let listeners = usher::server::Listeners::bind(&app).await.unwrap();
    let running = usher::server::serve(app, listeners);
    let addr = running.bound.plain[0];
    (running, addr)
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

/// One browser: cookies kept, polls at the interval the server gives.
struct Visitor {
    base: String,
    jar: HashMap<String, String>,
}

enum Answer {
    Origin,
    Held { refresh: u64 },
    Admitted,
}

impl Visitor {
    async fn get(&mut self, client: &HttpClient, path: &str, json: bool) -> Answer {
        let mut req = Request::get(format!("{}{path}", self.base));
        if !self.jar.is_empty() {
            let c: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            req = req.header(header::COOKIE, c.join("; "));
        }
        if json {
            req = req.header(header::ACCEPT, "application/json");
        }
        let resp = client
            .request(req.body(Empty::new()).unwrap())
            .await
            .expect("no connection errors");
        for v in resp.headers().get_all(header::SET_COOKIE) {
            let text = v.to_str().unwrap();
            let (k, val) = text.split(';').next().unwrap().split_once('=').unwrap();
            if text.contains("Max-Age=0") {
                self.jar.remove(k);
            } else {
                self.jar.insert(k.into(), val.into());
            }
        }
        let status = resp.status();
        let origin = resp.headers().contains_key("x-origin");
        let state = resp
            .headers()
            .get("x-usher-state")
            .map(|v| v.to_str().unwrap().to_string());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            status,
            StatusCode::OK,
            "only the origin's page or the holding page: {body:?}"
        );
        if origin {
            return Answer::Origin;
        }
        let state = state.expect("usher's own answers say their state");
        let v: serde_json::Value = if json {
            serde_json::from_slice(&body).unwrap()
        } else {
            serde_json::json!({})
        };
        if state == "admitted" || v["state"] == "admitted" {
            return Answer::Admitted;
        }
        assert_eq!(state, "queued");
        Answer::Held {
            refresh: v["refresh_seconds"].as_u64().unwrap_or(1),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_times_overload_is_held_fairly() {
    let _shared = crate::support::crowd_shared().await;
    let origin_state = Arc::new(Fragile::default());
    let origin = start_origin(origin_state.clone()).await;
    let dir = TempDir::new("overload");
    let key_line = usher::tokens::Keyring::generate_line("test").unwrap();
    std::fs::write(dir.join("keys"), format!("{key_line}\n")).unwrap();
    let keys = Arc::new(usher::tokens::Keyring::parse(&key_line).unwrap());
    let (running, usher) = start_usher(origin, &dir.join("keys")).await;
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();

    // Everyone arrives at once, as at the opening minute.
    let event = usher::tokens::event_id("default");
    let mut tasks = Vec::new();
    for i in 0..VISITORS {
        let client = client.clone();
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move {
            let mut v = Visitor {
                base: format!("http://{usher}"),
                jar: HashMap::new(),
            };
            let mut answer = v.get(&client, "/movies/1", false).await;
            // the place in line, read from the signed ticket (None: let in on arrival)
            let ticket = v.jar.get("usher_ticket").map(|t| {
                keys.open_ticket(t, event, now_unix(), 3600)
                    .expect("a ticket usher signed")
                    .number
            });
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match answer {
                    Answer::Origin => break,
                    Answer::Admitted => {
                        answer = v.get(&client, "/movies/1", false).await;
                        assert!(
                            matches!(answer, Answer::Origin),
                            "an admitted visitor reaches the origin"
                        );
                        break;
                    }
                    Answer::Held { refresh } => {
                        assert!(Instant::now() < deadline, "visitor {i} was never admitted");
                        // the interval the server gives, with jitter
                        let jitter = (i as u64 * 37) % 200;
                        tokio::time::sleep(Duration::from_millis(refresh * 1000 - 100 + jitter))
                            .await;
                        answer = v.get(&client, "/__usher/status", true).await;
                    }
                }
            }
            let admitted_at = started.elapsed();
            // browse: a page with its parts, fetched at once like a browser does
            let parts: Vec<_> = (0..PARALLEL)
                .map(|k| {
                    let (client, mut v) = (
                        client.clone(),
                        Visitor {
                            base: v.base.clone(),
                            jar: v.jar.clone(),
                        },
                    );
                    tokio::spawn(
                        async move { v.get(&client, &format!("/movies/{k}"), false).await },
                    )
                })
                .collect();
            for p in parts {
                assert!(
                    matches!(p.await.unwrap(), Answer::Origin),
                    "an admitted visitor's page loads"
                );
            }
            // done: checkout frees the slot for the next in line
            assert!(matches!(
                v.get(&client, "/checkout", false).await,
                Answer::Origin
            ));
            (ticket, admitted_at)
        }));
    }
    let mut admitted = Vec::new();
    for t in tasks {
        admitted.push(t.await.expect("visitor finished"));
    }
    running.shutdown(Duration::from_secs(5)).await;
    let direct = admitted.iter().filter(|(t, _)| t.is_none()).count();
    eprintln!(
        "{VISITORS} visitors, {direct} admitted on arrival, all in after {:?}; origin peak {} in flight",
        started.elapsed(),
        origin_state.max_seen.load(Ordering::SeqCst)
    );

    assert_eq!(admitted.len(), VISITORS, "everyone who kept polling got in");
    assert!(
        origin_state.max_seen.load(Ordering::SeqCst) <= CAPACITY,
        "the origin saw {} at once, more than its {CAPACITY}",
        origin_state.max_seen.load(Ordering::SeqCst)
    );
    assert_eq!(origin_state.overloaded.load(Ordering::SeqCst), 0);
    // In ticket order: nobody is let in before an earlier ticket by more than
    // one polling interval (the time the earlier visitor needs to notice).
    assert!(
        direct <= ACTIVE,
        "only the burst gets in on arrival, the rest queue"
    );
    let slack = Duration::from_millis(1_000 + 100 + 200 + 250);
    let queued: Vec<(u64, Duration)> = admitted
        .iter()
        .filter_map(|(t, at)| t.map(|t| (t, *at)))
        .collect();
    for (i, ti) in &queued {
        for (j, tj) in &queued {
            if i < j {
                assert!(
                    *tj + slack >= *ti,
                    "ticket {j} got in at {tj:?}, long before ticket {i} at {ti:?}"
                );
            }
        }
    }
}
