//! The origin, the in-process usher and the helpers the room's HTTP tests share.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// An origin that counts the requests it serves and says which it was.
async fn origin(hits: Arc<AtomicUsize>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let hits = hits.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<hyper::body::Incoming>| {
                    hits.fetch_add(1, Ordering::SeqCst);
                    let mut b = Response::builder().header("x-origin", "1");
                    if req.uri().path() == "/checkout" {
                        b = b.header("x-usher-release", "1");
                    }
                    let cookies = req
                        .headers()
                        .get(header::COOKIE)
                        .map(|c| c.to_str().unwrap().to_string());
                    async move {
                        Ok::<_, Infallible>(
                            b.body(Full::new(Bytes::from(cookies.unwrap_or_default())))
                                .unwrap(),
                        )
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

/// The support module's in-process usher, with this file's origin counter
/// and client beside it.
pub(super) struct Usher {
    usher: crate::support::inproc::Usher,
    /// The folder of its config, keys and token, removed after it.
    _dir: crate::support::TempDir,
    pub(super) addr: SocketAddr,
    pub(super) admin: SocketAddr,
    pub(super) hits: Arc<AtomicUsize>,
    client: Client<HttpConnector, Full<Bytes>>,
}

pub(super) async fn start(room: &str) -> Usher {
    let hits = Arc::new(AtomicUsize::new(0));
    let origin = origin(hits.clone()).await;
    let dir = crate::support::TempDir::new("room-http");
    std::fs::write(dir.join("bypass.secret"), "a-long-enough-shared-secret\n").unwrap();
    std::fs::write(dir.join("test.keys"), TEST_KEYS).unwrap();
    std::fs::write(dir.join("admin.token"), ADMIN_TOKEN).unwrap();
    let text = format!(
        "[server]\nlisten = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\nadmin_token_file = \"admin.token\"\n[origin]\nurl = \"http://{origin}\"\n[room]\n{room}\n"
    );
    let usher = crate::support::inproc::Usher::start_in(&text, &dir).await;
    Usher {
        addr: usher.addr,
        admin: usher.admin.expect("an admin listener"),
        usher,
        _dir: dir,
        hits,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

pub(super) struct Answer {
    pub(super) status: u16,
    pub(super) state: Option<String>,
    pub(super) origin: bool,
    pub(super) cookies: Vec<String>,
    pub(super) body: String,
    pub(super) retry_after: Option<String>,
    pub(super) headers: http::HeaderMap,
}

impl Usher {
    pub(super) async fn send(&self, req: http::request::Builder, body: &str) -> Answer {
        let resp = self
            .client
            .request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
            .await
            .unwrap();
        let h = resp.headers().clone();
        let status = resp.status().as_u16();
        let body = String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes())
            .into_owned();
        Answer {
            status,
            state: h.get("x-usher-state").map(|v| v.to_str().unwrap().into()),
            origin: h.contains_key("x-origin"),
            cookies: h
                .get_all(header::SET_COOKIE)
                .iter()
                .map(|v| v.to_str().unwrap().into())
                .collect(),
            body,
            retry_after: h
                .get(header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap().into()),
            headers: h,
        }
    }

    pub(super) async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut r = Request::get(format!("http://{}{path}", self.addr));
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        self.send(r, "").await
    }

    pub(super) async fn admin(&self, path: &str, body: &str) -> serde_json::Value {
        let r = Request::post(format!("http://{}{path}", self.admin))
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json");
        let a = self.send(r, body).await;
        serde_json::from_str(&a.body).unwrap_or_else(|_| panic!("{path}: {} {}", a.status, a.body))
    }

    pub(super) async fn stop(self) {
        self.usher.stop().await;
    }
}

pub(super) fn jar(cookies: &[String]) -> String {
    cookies
        .iter()
        .filter(|c| !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The admin API's token (`admin_token_file = "admin.token"`).
pub(super) const ADMIN_TOKEN: &str = "room-http-admin-token-0123456789abcdef";

/// A keys file (`keys_file = "test.keys"`), so a test can seal tokens the
/// room accepts (or, with another key, tokens it must refuse).
pub(super) const TEST_KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";

pub(super) const HIGH_LIMITS: &str =
    "[room.limits]\ntickets_per_minute_per_ip = 100000\nrequests_per_second_per_ip = 0";

pub(super) fn json_get(
    u: &Usher,
    path: &str,
    cookie: Option<&str>,
    pow: Option<&str>,
) -> http::request::Builder {
    let mut r =
        Request::get(format!("http://{}{path}", u.addr)).header(header::ACCEPT, "application/json");
    if let Some(c) = cookie {
        r = r.header(header::COOKIE, c);
    }
    if let Some(p) = pow {
        r = r.header("x-usher-pow", p);
    }
    r
}

pub(super) fn ticket_of(a: &Answer) -> Option<String> {
    a.cookies
        .iter()
        .find(|c| c.starts_with("usher_ticket=") && !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap().to_string())
}

impl Usher {
    pub(super) async fn metrics(&self) -> String {
        let r = Request::get(format!("http://{}/metrics", self.admin));
        self.send(r, "").await.body
    }
}

pub(super) fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series}"))
}

/// The challenge in a JSON answer: token and bits.
pub(super) fn challenge_of(a: &Answer) -> Option<(String, u32)> {
    let v: serde_json::Value = serde_json::from_str(&a.body).ok()?;
    Some((
        v["challenge"].as_str()?.to_string(),
        v["difficulty"].as_u64()? as u32,
    ))
}
