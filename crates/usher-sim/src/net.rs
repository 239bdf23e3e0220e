//! The simulated browsers' network: one pooled hyper client shared by every
//! visitor, a semaphore bounding the connections it opens, per-request
//! timeouts, and a small cookie jar per visitor. With several targets (usher
//! nodes) each request goes to the next one in turn, like a load balancer
//! without affinity: a visitor's polls and pages land on different nodes.
//!
//! With source addresses (`[addresses]`), a request is sent from the
//! visitor's address: through a pooled client of its own for each carrier
//! address (their idle connections together within the bound), or, for a
//! visitor's own address, on a fresh connection closed after the answer (a
//! pool per visitor would keep one idle connection per waiting visitor).
//! The one semaphore bounds the requests, hence connections, of them all.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ACCEPT, CONTENT_TYPE, COOKIE, SET_COOKIE};
use http::{HeaderValue, Method, Request};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::Semaphore;

use super::stats::Live;

/// Largest answer body read; the theater's pages and usher's holding page
/// are a few kilobytes.
const MAX_BODY: usize = 512 * 1024;
/// Cookies a jar keeps at most, and the longest one.
const MAX_COOKIES: usize = 8;
const MAX_COOKIE_LEN: usize = 4096;
/// Header usher puts on its own room answers.
pub const X_USHER_STATE: &str = "x-usher-state";
/// usher's place-in-line cookie.
pub const TICKET_COOKIE: &str = "usher_ticket";

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the timeout.
    Timeout,
    /// Refused, reset or broken connection.
    Connection,
}

/// One answer.
#[derive(Debug)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// `X-Usher-State`, when usher answered itself.
    pub usher_state: Option<HeaderValue>,
    /// The body.
    pub body: Bytes,
    /// From sending the request to the last body byte.
    pub latency: Duration,
    /// Whether a new place in line was handed out.
    pub new_ticket: bool,
    /// Whether the place in line was cleared (usher does so on admission).
    pub ticket_cleared: bool,
    /// `Retry-After` in seconds (usher's answer over a per-address limit).
    pub retry_after: Option<u64>,
}

/// A visitor's cookies.
#[derive(Debug, Default, Clone)]
pub struct Jar(Vec<(String, String)>);

impl Jar {
    /// The `Cookie` header, if any cookie is held.
    pub fn header(&self) -> Option<HeaderValue> {
        if self.0.is_empty() {
            return None;
        }
        let mut s = String::new();
        for (k, v) in &self.0 {
            if !s.is_empty() {
                s.push_str("; ");
            }
            s.push_str(k);
            s.push('=');
            s.push_str(v);
        }
        HeaderValue::from_str(&s).ok()
    }

    /// A cookie's value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Applies one `Set-Cookie`; returns the name when a value was stored.
    pub fn apply(&mut self, set_cookie: &str) -> Option<&str> {
        if set_cookie.len() > MAX_COOKIE_LEN {
            return None;
        }
        let mut parts = set_cookie.split(';');
        let (name, value) = parts.next()?.trim().split_once('=')?;
        let cleared = value.is_empty() || parts.any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
        self.0.retain(|(k, _)| k != name);
        if cleared || self.0.len() >= MAX_COOKIES {
            return None;
        }
        self.0.push((name.to_string(), value.to_string()));
        self.0.last().map(|(k, _)| k.as_str())
    }
}

/// What a request asks for.
pub struct Ask<'a> {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub path: &'a str,
    /// Ask for JSON rather than a page.
    pub json: bool,
    /// Content type and body (POST).
    pub body: Option<(&'a str, Bytes)>,
}

impl<'a> Ask<'a> {
    /// A page load.
    pub fn page(path: &'a str) -> Self {
        Ask {
            method: Method::GET,
            path,
            json: false,
            body: None,
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The shared client of one run.
pub struct Net {
    client: HttpClient,
    /// One pooled client per carrier address.
    carriers: HashMap<Ipv4Addr, HttpClient>,
    connections: usize,
    permits: Semaphore,
    timeout: Duration,
    targets: Vec<SocketAddr>,
    next: AtomicUsize,
}

impl Net {
    /// A client for `targets` (taken in turn, one request each; at least
    /// one) with at most `connections` requests (hence connections) open at
    /// once, each given up after `timeout`.
    pub fn new(targets: Vec<SocketAddr>, connections: usize, timeout: Duration) -> Net {
        assert!(!targets.is_empty(), "Net needs a target");
        Net {
            client: pooled(connector(timeout, None), connections),
            carriers: HashMap::new(),
            connections,
            permits: Semaphore::new(connections.max(1)),
            timeout,
            targets,
            next: AtomicUsize::new(0),
        }
    }

    /// Adds a pooled client for each carrier address; their idle
    /// connections share the bound (at least one each).
    pub fn with_carriers(mut self, carriers: &[Ipv4Addr]) -> Net {
        let idle = (self.connections / carriers.len().max(1)).max(1);
        self.carriers = carriers
            .iter()
            .map(|&a| (a, pooled(connector(self.timeout, Some(a)), idle)))
            .collect();
        self
    }

    /// The client for a request from `from` (`None`: the default source).
    fn client_from(&self, from: Option<Ipv4Addr>) -> HttpClient {
        match from {
            None => self.client.clone(),
            Some(a) => match self.carriers.get(&a) {
                Some(c) => c.clone(),
                // Pooling off: the connection closes once the answer is read.
                None => Client::builder(TokioExecutor::new())
                    .pool_max_idle_per_host(0)
                    .build(connector(self.timeout, Some(a))),
            },
        }
    }

    /// The target of the next request: round-robin over all of them.
    fn next_target(&self) -> SocketAddr {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.targets.len();
        self.targets[i]
    }

    /// Sends one request from `from` (`None`: the default source) with the
    /// jar's cookies and keeps the cookies set.
    pub async fn send(
        &self,
        live: &Live,
        jar: &mut Jar,
        from: Option<Ipv4Addr>,
        ask: Ask<'_>,
    ) -> Result<Answer, Failure> {
        let queued = Instant::now();
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| Failure::Connection)?;
        live.connection_wait.record(queued.elapsed());
        let uri = format!("http://{}{}", self.next_target(), ask.path);
        let mut b = Request::builder().method(ask.method).uri(uri);
        if let Some(c) = jar.header() {
            b = b.header(COOKIE, c);
        }
        b = b.header(
            ACCEPT,
            if ask.json {
                "application/json"
            } else {
                "text/html,application/xhtml+xml"
            },
        );
        let body = match ask.body {
            Some((ct, bytes)) => {
                b = b.header(CONTENT_TYPE, ct);
                bytes
            }
            None => Bytes::new(),
        };
        let req = b.body(Full::new(body)).map_err(|_| Failure::Connection)?;
        let started = Instant::now();
        let client = self.client_from(from);
        let exchange = async {
            let resp = client.request(req).await.map_err(|_| Failure::Connection)?;
            let (parts, body) = resp.into_parts();
            let body = Limited::new(body, MAX_BODY)
                .collect()
                .await
                .map_err(|_| Failure::Connection)?
                .to_bytes();
            Ok::<_, Failure>((parts, body))
        };
        let (parts, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Failure::Timeout)??;
        let latency = started.elapsed();
        let (mut new_ticket, mut ticket_cleared) = (false, false);
        for v in parts.headers.get_all(SET_COOKIE) {
            if let Ok(text) = v.to_str() {
                let before = jar.get(TICKET_COOKIE).map(str::to_owned);
                let stored = jar.apply(text) == Some(TICKET_COOKIE);
                let now = jar.get(TICKET_COOKIE);
                new_ticket |= stored && now != before.as_deref();
                ticket_cleared |= before.is_some() && now.is_none();
            }
        }
        Ok(Answer {
            status: parts.status.as_u16(),
            usher_state: parts.headers.get(X_USHER_STATE).cloned(),
            body,
            latency,
            new_ticket,
            ticket_cleared,
            retry_after: parts
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
        })
    }
}

/// A connector with no delay and the client's timeout, bound to `local`
/// when given.
fn connector(timeout: Duration, local: Option<Ipv4Addr>) -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(timeout));
    c.set_local_address(local.map(IpAddr::V4));
    c
}

/// A pooled client keeping at most `idle` idle connections per target.
fn pooled(connector: HttpConnector, idle: usize) -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(idle)
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_timer(TokioTimer::new())
        .build(connector)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jar_keeps_replaces_and_clears() {
        let mut j = Jar::default();
        assert!(j.header().is_none());
        assert_eq!(
            j.apply("usher_ticket=abc; Path=/; HttpOnly"),
            Some("usher_ticket")
        );
        j.apply("usher_lang=ko; Max-Age=100");
        assert_eq!(j.header().unwrap(), "usher_ticket=abc; usher_lang=ko");
        j.apply("usher_ticket=def; Path=/");
        assert_eq!(j.get("usher_ticket"), Some("def"));
        assert_eq!(j.apply("usher_ticket=; Max-Age=0"), None);
        assert_eq!(j.get("usher_ticket"), None);
        j.apply("usher_pass=p; Max-Age=0");
        assert_eq!(j.get("usher_pass"), None);
        for i in 0..20 {
            j.apply(&format!("c{i}=v"));
        }
        assert!(j.0.len() <= MAX_COOKIES, "bounded");
        assert_eq!(j.apply(&format!("big={}", "x".repeat(5000))), None);
    }

    #[test]
    fn requests_go_round_robin_over_the_targets() {
        let addrs: Vec<SocketAddr> = (1..=3)
            .map(|p| SocketAddr::from(([127, 0, 0, 1], p)))
            .collect();
        let net = Net::new(addrs.clone(), 4, Duration::from_secs(1));
        let picked: Vec<SocketAddr> = (0..7).map(|_| net.next_target()).collect();
        let want: Vec<SocketAddr> = addrs.iter().cycle().take(7).copied().collect();
        assert_eq!(picked, want);
        let one = Net::new(vec![addrs[1]], 4, Duration::from_secs(1));
        assert!((0..3).all(|_| one.next_target() == addrs[1]));
    }

    /// A server answering every request with 200 and closing, noting the
    /// peer address of each connection.
    async fn peer_recorder() -> (SocketAddr, std::sync::Arc<std::sync::Mutex<Vec<IpAddr>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((mut c, peer)) = l.accept().await {
                log.lock().unwrap().push(peer.ip());
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 1024];
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match c.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
                    let _ = c.write_all(ok).await;
                });
            }
        });
        (addr, seen)
    }

    #[tokio::test]
    async fn requests_leave_from_the_visitors_address() {
        let (addr, seen) = peer_recorder().await;
        let carrier = Ipv4Addr::new(127, 1, 0, 1);
        let own = Ipv4Addr::new(127, 2, 0, 9);
        let net = Net::new(vec![addr], 4, Duration::from_secs(5)).with_carriers(&[carrier]);
        let live = Live::default();
        let mut jar = Jar::default();
        for from in [None, Some(carrier), Some(own), Some(carrier)] {
            let a = net
                .send(&live, &mut jar, from, Ask::page("/"))
                .await
                .unwrap();
            assert_eq!((a.status, &a.body[..]), (200, &b"ok"[..]));
        }
        let want: Vec<IpAddr> = [Ipv4Addr::LOCALHOST, carrier, own, carrier]
            .into_iter()
            .map(IpAddr::V4)
            .collect();
        assert_eq!(*seen.lock().unwrap(), want);
        assert_eq!(net.permits.available_permits(), 4, "every permit back");
    }
}
