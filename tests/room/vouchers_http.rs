//! Vouchers over real sockets: only admitted visitors claim, the same
//! person always gets the same code, never beyond the stock, the room turns
//! sold out at once, the origin's claim route is intercepted, and a usher
//! SIGKILLed in the middle of claims loses and repeats nothing.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::support::process::UsherProcess;
use crate::support::TempDir;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn write_common(dir: &Path, stock: usize) {
    std::fs::write(
        dir.join("keys"),
        usher::tokens::Keyring::generate_line("t1").unwrap() + "\n",
    )
    .unwrap();
    std::fs::write(dir.join("admin.token"), ADMIN_TOKEN).unwrap();
    let codes: Vec<String> = (0..stock).map(|i| format!("CINE-{i:05}")).collect();
    std::fs::write(dir.join("codes.txt"), codes.join("\n") + "\n").unwrap();
}

/// The admin token (`admin.token` beside the keys).
const ADMIN_TOKEN: &str = "vouchers-admin-token-0123456789abcdef";

fn config(dir: &Path, origin: &str, stock: usize, extra: &str) -> String {
    format!(
        r#"
[server]
listen = ["127.0.0.1:0"]
admin = "127.0.0.1:0"
admin_token_file = "{token}"
[log]
format = "json"
[origin]
url = "{origin}"
[room]
keys_file = "{keys}"
max_active_users = 100000
new_users_per_minute = 1000000
burst = 100000
[room.limits]
tickets_per_minute_per_ip = 10000000
requests_per_second_per_ip = 0
[vouchers]
plugin = "pool"
pool_file = "{codes}"
stock = {stock}
state_dir = "{state}"
identity = "header:x-user"
{extra}
"#,
        keys = dir.join("keys").display(),
        token = dir.join("admin.token").display(),
        codes = dir.join("codes.txt").display(),
        state = dir.join("state").display(),
    )
}

struct Reply {
    status: u16,
    json: serde_json::Value,
    headers: http::HeaderMap,
}

async fn send(c: &HttpClient, req: http::request::Builder) -> Reply {
    let resp = c
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        json: serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        headers,
    }
}

/// Gets a pass (the room is wide open) and returns the cookie pair.
async fn pass(c: &HttpClient, base: &str) -> String {
    let r = send(c, Request::get(format!("{base}/__usher/status"))).await;
    assert_eq!(r.json["state"], "admitted", "{:?}", r.json);
    let set = r
        .headers
        .get(header::SET_COOKIE)
        .expect("a pass")
        .to_str()
        .unwrap();
    set.split(';').next().unwrap().to_string()
}

async fn claim(c: &HttpClient, base: &str, pass: &str, user: &str) -> Reply {
    send(
        c,
        Request::post(format!("{base}/__usher/voucher"))
            .header(header::COOKIE, pass)
            .header("x-user", user)
            .header(header::ACCEPT, "application/json"),
    )
    .await
}

async fn start_in_process(cfg_text: &str, dir: &Path) -> usher::server::Running {
    let cfg = usher::config::Config::parse(cfg_text, "test", dir).unwrap_or_else(|e| panic!("{e}"));
    let app = usher::app::App::new(cfg, usher::logging::LogHandle::none()).unwrap();
    let listeners = usher::server::Listeners::bind(&app).await.unwrap();
    usher::server::serve(app, listeners)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_never_exceed_the_stock_and_repeat_the_same_code() {
    let _shared = crate::support::crowd_shared().await;
    let dir = TempDir::new("vouchers-crowd");
    write_common(&dir, 100);
    let running = start_in_process(&config(&dir, "http://127.0.0.1:9", 100, ""), &dir).await;
    let base = format!("http://{}", running.bound.plain[0]);
    let c = client();

    // without a pass, or with a forged one: no claim
    let none = claim(&c, &base, "", "alice").await;
    assert_eq!(
        (none.status, none.json["state"].as_str()),
        (403, Some("not_admitted"))
    );
    let forged = claim(
        &c,
        &base,
        "usher_pass=AQIMdG1wLTA1ZjQ2YWVmKpdRbDVLaIQ.AAAAAAAAAAAAAAAAAAAAAA",
        "alice",
    )
    .await;
    assert_eq!(forged.status, 403);

    // 600 claims at once from 250 people for 100 vouchers
    let passes: Vec<String> = {
        let mut v = Vec::new();
        for _ in 0..50 {
            v.push(pass(&c, &base).await);
        }
        v
    };
    let passes = Arc::new(passes);
    let mut tasks = Vec::new();
    for i in 0..600 {
        let (c, base, passes) = (c.clone(), base.clone(), passes.clone());
        tasks.push(tokio::spawn(async move {
            let user = format!("user-{}", i % 250);
            let r = claim(&c, &base, &passes[i % passes.len()], &user).await;
            (user, r.status, r.json)
        }));
    }
    let mut codes: HashMap<String, String> = HashMap::new();
    let mut sold_out = 0;
    for t in tasks {
        let (user, status, json) = t.await.unwrap();
        match (status, json["state"].as_str()) {
            (200, Some("issued")) => {
                let code = json["code"].as_str().unwrap().to_string();
                if let Some(prev) = codes.insert(user.clone(), code.clone()) {
                    assert_eq!(prev, code, "{user} got two different codes");
                }
            }
            (410, Some("sold_out")) => sold_out += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(codes.len(), 100, "exactly the stock was issued");
    let unique: HashSet<&String> = codes.values().collect();
    assert_eq!(unique.len(), 100, "no code twice");
    assert!(sold_out > 0);

    // the room says sold out at once: newcomers get no ticket
    let newcomer = send(&c, Request::get(format!("{base}/movies/1"))).await;
    assert_eq!(newcomer.headers.get("x-usher-state").unwrap(), "sold_out");
    assert!(
        newcomer.headers.get(header::SET_COOKIE).is_none(),
        "no ticket for something that is gone"
    );
    let status = send(&c, Request::get(format!("{base}/__usher/status"))).await;
    assert_eq!(status.json["state"], "sold_out");

    running.shutdown(Duration::from_secs(2)).await;
    let report = usher::vouchers::audit_check(&dir.join("state")).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.issued, 100);
}

#[tokio::test]
async fn the_origins_claim_route_is_intercepted_with_the_code() {
    // an origin that echoes the X-Usher-Voucher header it received
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let v = req
                            .headers()
                            .get("x-usher-voucher")
                            .map(|v| v.to_str().unwrap().to_string());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(format!("voucher={v:?}")),
                        )))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    let dir = TempDir::new("vouchers-intercept");
    write_common(&dir, 5);
    let text = config(
        &dir,
        &format!("http://{origin}"),
        5,
        "intercept = \"POST /voucher/claim\"",
    );
    let running = start_in_process(&text, &dir).await;
    let base = format!("http://{}", running.bound.plain[0]);
    let c = client();
    let p = pass(&c, &base).await;
    let body = |r: http::Response<hyper::body::Incoming>| async move {
        String::from_utf8(r.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    };
    let req = |path: &str, spoof: bool| {
        let mut b = Request::post(format!("{base}{path}"))
            .header(header::COOKIE, &p)
            .header("x-user", "bob");
        if spoof {
            b = b.header("x-usher-voucher", "FAKE");
        }
        b.body(Full::new(Bytes::new())).unwrap()
    };
    let first = body(c.request(req("/voucher/claim", false)).await.unwrap()).await;
    assert!(first.starts_with("voucher=Some(\"CINE-"), "{first}");
    let again = body(c.request(req("/VOUCHER//claim", false)).await.unwrap()).await;
    assert_eq!(
        first, again,
        "the same person, the same code (path variants included)"
    );
    let spoofed = body(c.request(req("/other", true)).await.unwrap()).await;
    assert_eq!(
        spoofed, "voucher=None",
        "a client cannot hand the origin a code"
    );
    running.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test]
async fn a_browser_gets_the_voucher_page_and_an_app_gets_json() {
    let dir = TempDir::new("vouchers-page");
    write_common(&dir, 1);
    let running = start_in_process(&config(&dir, "http://127.0.0.1:9", 1, ""), &dir).await;
    let base = format!("http://{}", running.bound.plain[0]);
    let c = client();
    let page = |method: http::Method, cookie: &str, user: &str| {
        Request::builder()
            .method(method)
            .uri(format!("{base}/__usher/voucher"))
            .header(header::COOKIE, cookie)
            .header("x-user", user)
            .header(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let read = |r: http::Response<hyper::body::Incoming>| async move {
        let status = r.status().as_u16();
        let kind = r.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, kind, String::from_utf8(body.to_vec()).unwrap())
    };

    let (status, kind, text) =
        read(c.request(page(http::Method::GET, "", "a")).await.unwrap()).await;
    assert_eq!((status, kind.as_str()), (403, "text/html; charset=utf-8"));
    assert!(
        text.contains("아직 입장 전입니다") && text.contains("To the line"),
        "{text}"
    );

    let p = pass(&c, &base).await;
    let (status, _, text) = read(c.request(page(http::Method::GET, &p, "a")).await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("<form method=\"post\" action=\"/__usher/voucher\">"),
        "{text}"
    );
    assert!(text.contains("받기 / Claim"), "{text}");

    let (status, _, text) = read(c.request(page(http::Method::POST, &p, "a")).await.unwrap()).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("Your voucher") && text.contains("CINE-00000"),
        "{text}"
    );

    // The stock of one is gone: the next person is told so, as a page.
    let resp = c.request(page(http::Method::POST, &p, "b")).await.unwrap();
    assert_eq!(resp.headers()["x-usher-state"], "sold_out");
    let (status, _, text) = read(resp).await;
    assert_eq!(status, 410);
    assert!(text.contains("All vouchers are gone"), "{text}");

    // An app that accepts anything gets JSON: the same code again.
    let app = send(
        &c,
        Request::post(format!("{base}/__usher/voucher"))
            .header(header::COOKIE, &p)
            .header("x-user", "a")
            .header(header::ACCEPT, "*/*"),
    )
    .await;
    assert_eq!(
        (
            app.status,
            app.json["state"].as_str(),
            app.json["code"].as_str()
        ),
        (200, Some("issued"), Some("CINE-00000"))
    );
    running.shutdown(Duration::from_secs(2)).await;
}

/// Starts the binary on `cfg`; its plain listener read back from its log.
fn start_binary(cfg: &Path) -> (UsherProcess, String) {
    let proc = UsherProcess::run(cfg);
    let base = proc.base();
    (proc, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_in_the_middle_of_claims_loses_and_repeats_nothing() {
    let _shared = crate::support::crowd_shared().await;
    let dir = TempDir::new("vouchers-kill");
    write_common(&dir, 300);
    let cfg = dir.join("usher.toml");
    std::fs::write(&cfg, config(&dir, "http://127.0.0.1:9", 300, "")).unwrap();
    let (mut proc, base) = start_binary(&cfg);
    let c = client();
    let p = Arc::new(pass(&c, &base).await);

    // claims stream in; usher is killed while they fly
    let mut tasks = Vec::new();
    for i in 0..400 {
        let (c, base, p) = (c.clone(), base.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis((i % 40) * 5)).await;
            let req = Request::post(format!("{base}/__usher/voucher"))
                .header(header::COOKIE, p.as_str())
                .header("x-user", format!("user-{i}"))
                .header(header::ACCEPT, "application/json")
                .body(Full::new(Bytes::new()))
                .unwrap();
            match c.request(req).await {
                Ok(r) if r.status() == 200 => {
                    let b = r.into_body().collect().await.ok()?.to_bytes();
                    let v: serde_json::Value = serde_json::from_slice(&b).ok()?;
                    Some((i, v["code"].as_str()?.to_string()))
                }
                _ => None,
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(80)).await;
    proc.kill(); // SIGKILL
    let mut before: HashMap<u64, String> = HashMap::new();
    for t in tasks {
        if let Some((i, code)) = t.await.unwrap() {
            before.insert(i, code);
        }
    }
    drop(proc);

    // restart on the same ledger: every answered code is still that person's,
    // and pending claims finish with the same idempotency key
    let (proc, base) = start_binary(&cfg);
    let p = pass(&c, &base).await; // the keys file keeps old passes valid too
    let mut after: HashMap<u64, String> = HashMap::new();
    for i in 0..400u64 {
        let r = claim(&c, &base, &p, &format!("user-{i}")).await;
        match (r.status, r.json["state"].as_str()) {
            (200, Some("issued")) => {
                after.insert(i, r.json["code"].as_str().unwrap().to_string());
            }
            (410, Some("sold_out")) => {}
            other => panic!("user-{i}: {other:?}"),
        }
    }
    for (i, code) in &before {
        assert_eq!(
            after.get(i),
            Some(code),
            "user-{i} was told {code} before the crash"
        );
    }
    let unique: HashSet<&String> = after.values().collect();
    assert_eq!(unique.len(), after.len(), "no code twice");
    assert_eq!(after.len(), 300, "the whole stock, no more");
    drop(proc);
    let report = usher::vouchers::audit_check(&dir.join("state")).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert_eq!(report.issued, 300);
    eprintln!(
        "answered before the kill: {}, issued after restart: {}",
        before.len(),
        after.len()
    );
}
