//! Sold out at once for everyone, when the site gives out its own vouchers:
//! the origin answers `X-Usher-Sold-Out: 1` once its stock is gone, and
//! from then on every visitor in line is told on their next poll, newcomers
//! get no ticket, and visitors already inside keep using the site.

use crate::support as common;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use common::inproc::{metric, Usher};
use common::{config, within};
use http::{header, Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// A site whose `/claim` says its stock is gone.
async fn site() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let mut b = Response::builder().header("x-origin", "site");
                    if req.uri().path() == "/claim" {
                        b = b.header("x-usher-sold-out", "1");
                    }
                    Ok::<_, Infallible>(b.body(Full::new(Bytes::from("page"))).unwrap())
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

struct Got {
    origin: bool,
    state: Option<String>,
    cookies: Vec<String>,
    sold_out_header: bool,
    body: String,
}

async fn get(c: &HttpClient, usher: &Usher, path: &str, cookie: Option<&str>) -> Got {
    let mut req = Request::get(format!("http://{}{path}", usher.addr));
    if let Some(cookie) = cookie {
        req = req.header(header::COOKIE, cookie);
    }
    let resp = c.request(req.body(Empty::new()).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    let h = resp.headers();
    let got = Got {
        origin: h.contains_key("x-origin"),
        state: h
            .get("x-usher-state")
            .map(|v| v.to_str().unwrap().to_string()),
        cookies: h
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().split(';').next().unwrap().to_string())
            .collect(),
        sold_out_header: h.contains_key("x-usher-sold-out"),
        body: String::new(),
    };
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got {
        body: String::from_utf8_lossy(&body).into_owned(),
        ..got
    }
}

#[tokio::test]
async fn the_origins_sold_out_reaches_everyone_in_line_at_once() {
    within(20, "sold out", async {
        let usher = Usher::start(&config(
            site().await,
            "",
            "",
            "[room]\nmax_active_users = 1\nnew_users_per_minute = 600\n",
        ))
        .await;
        let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();

        // One visitor inside, one waiting.
        let inside = get(&c, &usher, "/", None).await;
        assert!(inside.origin, "the first visitor goes straight in");
        let pass = inside.cookies.join("; ");
        let waiting = get(&c, &usher, "/", None).await;
        assert_eq!(waiting.state.as_deref(), Some("queued"));
        let ticket = waiting.cookies.join("; ");
        assert!(ticket.starts_with("usher_ticket="), "{ticket}");

        // The visitor inside claims: the site says the stock is gone. The
        // header is for usher, not for the browser.
        let claim = get(&c, &usher, "/claim", Some(&pass)).await;
        assert!(claim.origin && !claim.sold_out_header);

        // The one in line is told on the next poll, page or JSON.
        let poll = get(&c, &usher, "/__usher/status", Some(&ticket)).await;
        assert_eq!(poll.state.as_deref(), Some("sold_out"));
        let v: serde_json::Value = serde_json::from_str(&poll.body).unwrap();
        assert_eq!(v["state"], "sold_out", "{v}");
        let page = get(&c, &usher, "/movies", Some(&ticket)).await;
        assert_eq!(page.state.as_deref(), Some("sold_out"));
        assert!(!page.origin);

        // A newcomer gets no ticket: there is nothing left to wait for.
        let late = get(&c, &usher, "/", None).await;
        assert_eq!(late.state.as_deref(), Some("sold_out"));
        assert!(
            !late.cookies.iter().any(|c| c.starts_with("usher_ticket=")),
            "{:?}",
            late.cookies
        );

        // The visitor inside keeps using the site.
        assert!(get(&c, &usher, "/movies/1", Some(&pass)).await.origin);

        // The room says so in its metrics at its next tick (the enclosing
        // `within` bounds the wait).
        let state = "usher_room_state{state=\"sold_out\"}";
        while metric(&usher.metrics(), state) != Some(1.0) {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}
