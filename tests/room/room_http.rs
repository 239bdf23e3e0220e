//! The waiting room over real sockets: modes and live admin changes, JSON
//! for apps, bypass rules, per-client limits (holding answers and the
//! proof-of-work challenge, never an error page), the language switch, and
//! the origin's release header.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::support::redis;

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
struct Usher {
    usher: crate::support::inproc::Usher,
    addr: SocketAddr,
    admin: SocketAddr,
    hits: Arc<AtomicUsize>,
    client: Client<HttpConnector, Full<Bytes>>,
}

async fn start(room: &str) -> Usher {
    let hits = Arc::new(AtomicUsize::new(0));
    let origin = origin(hits.clone()).await;
    let dir = crate::support::procs::temp_dir("room-http");
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
        hits,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

struct Answer {
    status: u16,
    state: Option<String>,
    origin: bool,
    cookies: Vec<String>,
    body: String,
    retry_after: Option<String>,
}

impl Usher {
    async fn send(&self, req: http::request::Builder, body: &str) -> Answer {
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
        }
    }

    async fn get(&self, path: &str, cookie: Option<&str>) -> Answer {
        let mut r = Request::get(format!("http://{}{path}", self.addr));
        if let Some(c) = cookie {
            r = r.header(header::COOKIE, c);
        }
        self.send(r, "").await
    }

    async fn admin(&self, path: &str, body: &str) -> serde_json::Value {
        let r = Request::post(format!("http://{}{path}", self.admin))
            .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}"))
            .header(header::CONTENT_TYPE, "application/json");
        let a = self.send(r, body).await;
        serde_json::from_str(&a.body).unwrap_or_else(|_| panic!("{path}: {} {}", a.status, a.body))
    }

    async fn stop(self) {
        self.usher.stop().await;
    }
}

fn jar(cookies: &[String]) -> String {
    cookies
        .iter()
        .filter(|c| !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap().to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The admin API's token (`admin_token_file = "admin.token"`).
const ADMIN_TOKEN: &str = "room-http-admin-token-0123456789abcdef";

/// A keys file (`keys_file = "test.keys"`), so a test can seal tokens the
/// room accepts (or, with another key, tokens it must refuse).
const TEST_KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n";

const HIGH_LIMITS: &str =
    "[room.limits]\ntickets_per_minute_per_ip = 100000\nrequests_per_second_per_ip = 0";

#[tokio::test]
async fn full_room_holds_newcomers_with_html_or_json() {
    let u = start(&format!("max_active_users = 1\nnew_users_per_minute = 60\nburst = 1\nrefresh = \"2s\"\nmessage = \"<b>hi</b>\"\n{HIGH_LIMITS}")).await;
    let inside = u.get("/movies/1", None).await;
    assert!(inside.origin, "the first visitor goes straight in");
    let pass = jar(&inside.cookies);
    assert!(pass.starts_with("usher_pass="), "{pass}");
    // usher's own cookies never reach the origin
    let again = u.get("/movies/1", Some(&format!("{pass}; site=1"))).await;
    assert!(again.origin);
    assert_eq!(again.body, "site=1");

    let held = u.get("/movies/2?x=1", None).await;
    assert_eq!(
        (held.status, held.state.as_deref(), held.origin),
        (200, Some("queued"), false)
    );
    assert!(
        held.body.contains("&lt;b&gt;hi&lt;/b&gt;"),
        "the operator's message, escaped"
    );
    assert!(held
        .cookies
        .iter()
        .any(|c| c.starts_with("usher_ticket=") && c.contains("HttpOnly")));
    let ticket = jar(&held.cookies);

    // apps ask for JSON on any protected URL, or poll the status endpoint
    let mut r = Request::get(format!("http://{}/api/movies", u.addr));
    r = r
        .header(header::ACCEPT, "application/json")
        .header(header::COOKIE, &ticket);
    let json = u.send(r, "").await;
    let v: serde_json::Value = serde_json::from_str(&json.body).unwrap();
    assert_eq!(v["state"], "queued");
    assert_eq!(v["position"], 0);
    assert_eq!(
        v["refresh_seconds"], 1,
        "next in line: poll again within a second (refresh is 2 s further back)"
    );
    assert_eq!(v["message"], "<b>hi</b>");
    for key in ["eta_seconds", "eta_known", "opens_at"] {
        assert!(v.get(key).is_some(), "{key} in {v}");
    }
    let status = u.get("/__usher/status", Some(&ticket)).await;
    let s: serde_json::Value = serde_json::from_str(&status.body).unwrap();
    assert_eq!(s["position"], 0, "the same place, kept across reloads");
    assert_eq!(u.get("/__usher/nothing", None).await.status, 404);
    assert_eq!(
        u.hits.load(Ordering::SeqCst),
        2,
        "nothing else reached the origin"
    );

    // the origin frees the slot; the visitor in line is let in on a later poll
    let out = u.get("/checkout", Some(&pass)).await;
    assert!(
        out.origin
            && out
                .cookies
                .iter()
                .any(|c| c.starts_with("usher_pass=;") || c.contains("Max-Age=0"))
    );
    let mut admitted = None;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = u.get("/__usher/status", Some(&ticket)).await;
        if s.body.contains("\"admitted\"") {
            admitted = Some(s);
            break;
        }
    }
    let admitted = admitted.expect("admitted once the slot freed");
    let new_pass = jar(&admitted.cookies);
    assert!(new_pass.contains("usher_pass="));
    assert!(u.get("/movies/2", Some(&new_pass)).await.origin);
    u.stop().await;
}

#[tokio::test]
async fn modes_change_live_through_the_admin_api() {
    let u = start(&format!(
        "max_active_users = 100\nnew_users_per_minute = 6000\nburst = 100\n{HIGH_LIMITS}"
    ))
    .await;
    assert!(u.get("/", None).await.origin);
    let paused = u.admin("/admin/pause", "").await;
    assert_eq!(paused["settings"]["mode"], "paused");
    let held = u.get("/", None).await;
    assert_eq!(held.state.as_deref(), Some("paused"));
    let ticket = jar(&held.cookies);
    let resumed = u.admin("/admin/resume", "").await;
    assert_eq!(resumed["settings"]["mode"], "fifo");
    let mut in_again = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if u.get("/__usher/status", Some(&ticket))
            .await
            .body
            .contains("admitted")
        {
            in_again = true;
            break;
        }
    }
    assert!(in_again, "the paused visitor is admitted after resume");

    let closed = u
        .admin(
            "/admin/room",
            r#"{"mode":"closed","message":"see you tomorrow"}"#,
        )
        .await;
    assert_eq!(closed["settings"]["mode"], "closed");
    let c = u.get("/", None).await;
    assert_eq!(c.state.as_deref(), Some("closed"));
    assert!(c.body.contains("see you tomorrow"));
    let bad = u.admin("/admin/room", r#"{"mode":"sideways"}"#).await;
    assert!(bad["error"].as_str().unwrap().contains("sideways"));
    let unknown = u.admin("/admin/room", r#"{"speed":3}"#).await;
    assert!(unknown["error"].is_string());

    u.admin("/admin/room", r#"{"mode":"passthrough"}"#).await;
    let p = u.get("/", None).await;
    assert!(p.origin && p.cookies.iter().any(|c| c.starts_with("usher_pass=")));
    let reset = u.admin("/admin/room", r#"{"reset":true}"#).await;
    assert_eq!(reset["settings"]["mode"], "fifo");
    assert_eq!(reset["overrides"], serde_json::json!({}));

    let status: serde_json::Value = {
        let a = u
            .send(
                Request::get(format!("http://{}/admin/status", u.admin))
                    .header(header::AUTHORIZATION, format!("Bearer {ADMIN_TOKEN}")),
                "",
            )
            .await;
        serde_json::from_str(&a.body).unwrap()
    };
    assert!(status["room"]["issued"].as_u64().unwrap() >= 1);
    let drained = u.admin("/admin/drain", "").await;
    assert_eq!(drained["draining"], true);
    let ready = u
        .send(Request::get(format!("http://{}/readyz", u.admin)), "")
        .await;
    assert_eq!(ready.status, 503);
    u.stop().await;
}

#[tokio::test]
async fn bypass_rules_and_protected_prefixes() {
    let u = start(&format!(
        "max_active_users = 1\nnew_users_per_minute = 60\nburst = 1\nprotect = [\"/coupon\", \"/api/\"]\n\
         bypass_paths = [\"/coupon/static/\"]\nbypass_header = \"X-Usher-Bypass\"\nbypass_secret_file = \"bypass.secret\"\n{HIGH_LIMITS}"
    ))
    .await;
    assert!(u.get("/coupon", None).await.origin, "first visitor in");
    for p in [
        "/coupon",
        "/COUPON",
        "//coupon",
        "/%63oupon",
        "/x/../coupon/claim",
        "/coupon;jsessionid=1",
        "/api/x",
    ] {
        let a = u.get(p, None).await;
        assert_eq!(a.state.as_deref(), Some("queued"), "{p} is protected");
    }
    assert!(
        u.get("/", None).await.origin,
        "unprotected paths go straight through"
    );
    assert!(
        u.get("/coupons", None).await.origin,
        "a prefix is not a substring match"
    );
    assert!(
        u.get("/coupon/static/app.js", None).await.origin,
        "bypass paths skip the room"
    );
    let mut r = Request::get(format!("http://{}/coupon", u.addr));
    r = r.header("x-usher-bypass", "a-long-enough-shared-secret");
    let partner = u.send(r, "").await;
    assert!(partner.origin, "the shared secret skips the room");
    let mut r = Request::get(format!("http://{}/coupon", u.addr));
    r = r.header("x-usher-bypass", "a-long-enough-shared-secreX");
    assert!(!u.send(r, "").await.origin, "a wrong secret does not");
    u.stop().await;
}

/// `ticket_proof_bits = 0`: a newcomer over the per-address ticket limit
/// gets the holding page with Retry-After and no ticket, never a 429.
#[tokio::test]
async fn over_the_ticket_limit_without_proof_of_work_visitors_wait() {
    let u = start("max_active_users = 1\nnew_users_per_minute = 60\nburst = 1\n[room.limits]\ntickets_per_minute_per_ip = 20\nrequests_per_second_per_ip = 0\nticket_proof_bits = 0").await;
    let mut limited = None;
    for i in 0..40 {
        let a = u.get("/", None).await;
        assert_eq!(a.status, 200, "never an error page");
        if a.retry_after.is_some() {
            limited = Some((i, a));
            break;
        }
        assert!(a.origin || a.cookies.iter().any(|c| c.starts_with("usher_ticket=")));
    }
    let (i, a) = limited.expect("one address cannot farm places");
    assert!(i >= 5, "the burst is allowed ({i})");
    assert_eq!(a.state.as_deref(), Some("queued"));
    assert!(a.cookies.is_empty(), "no ticket: {:?}", a.cookies);
    assert!(
        a.body.contains("data-pow=\"\""),
        "no challenge when bits = 0"
    );
    u.stop().await;
}

#[tokio::test]
async fn language_switch_and_negotiation() {
    let u = start(&format!(
        "max_active_users = 1\nnew_users_per_minute = 60\nburst = 1\n{HIGH_LIMITS}"
    ))
    .await;
    u.get("/", None).await;
    let ko = u.get("/", None).await;
    assert!(ko.body.contains("lang=\"ko\""));
    let mut r = Request::get(format!("http://{}/", u.addr));
    r = r.header(header::ACCEPT_LANGUAGE, "en-US,en;q=0.9");
    assert!(u.send(r, "").await.body.contains("lang=\"en\""));
    let switched = u.get("/?usher_lang=en", None).await;
    assert!(switched.body.contains("lang=\"en\""));
    let lang = switched
        .cookies
        .iter()
        .find(|c| c.starts_with("usher_lang=en"))
        .expect("remembered");
    let again = u.get("/", Some(lang.split(';').next().unwrap())).await;
    assert!(again.body.contains("lang=\"en\""));
    u.stop().await;
}

fn json_get(
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

fn ticket_of(a: &Answer) -> Option<String> {
    a.cookies
        .iter()
        .find(|c| c.starts_with("usher_ticket=") && !c.contains("Max-Age=0"))
        .map(|c| c.split(';').next().unwrap().to_string())
}

/// Many visitors behind one address (a carrier's CGNAT) over its request
/// limit: 200 holding answers with Retry-After, never 429 or 5xx, no
/// cookie set or cleared, and each keeps their place (the next poll after
/// the wait shows the same position or a better one). An admitted visitor
/// on the same address is not held: the pass is checked first.
#[tokio::test]
async fn over_the_request_limit_visitors_wait_and_keep_their_place() {
    let u = start("max_active_users = 1\nnew_users_per_minute = 1\nburst = 1\nrefresh = \"1s\"\n[room.limits]\ntickets_per_minute_per_ip = 100000\nrequests_per_second_per_ip = 5").await;
    let inside = u.get("/movies/1", None).await;
    assert!(inside.origin, "the first visitor goes straight in");
    let pass = jar(&inside.cookies);
    // Four more take a place each, and see it.
    let mut places = Vec::new();
    for _ in 0..4 {
        let a = u.send(json_get(&u, "/", None, None), "").await;
        let ticket = ticket_of(&a).expect("a ticket");
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        places.push((ticket, v["position"].as_u64().expect("a position")));
    }
    // The address's allowance (burst 10) is spent: everyone is held.
    let hits = u.hits.load(Ordering::SeqCst);
    let mut held = 0;
    for round in 0..6 {
        for (ticket, _) in &places {
            let a = u
                .send(json_get(&u, "/__usher/status", Some(ticket), None), "")
                .await;
            assert_eq!(a.status, 200, "round {round}: {}", a.body);
            assert!(
                a.cookies.is_empty(),
                "nothing set or cleared: {:?}",
                a.cookies
            );
            if let Some(after) = &a.retry_after {
                held += 1;
                assert_eq!(after, "1", "one poll interval");
                assert_eq!(a.state.as_deref(), Some("queued"));
                let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
                assert_eq!(v["state"], "queued");
                assert_eq!(v["refresh_seconds"], 1, "the page's own poll retries");
                assert!(v["position"].is_null(), "the place is not looked at");
            }
        }
        let page = u.get("/", None).await;
        assert_eq!(page.status, 200);
        if page.retry_after.is_some() {
            assert!(
                page.body.contains("<progress"),
                "the holding page, not an error"
            );
            assert!(ticket_of(&page).is_none());
        }
    }
    assert!(held > 10, "the limit was reached ({held})");
    assert_eq!(
        u.hits.load(Ordering::SeqCst),
        hits,
        "nothing reached the origin"
    );
    // An admitted visitor is governed by the per-pass limit, not the address's.
    let again = u.get("/movies/2", Some(&pass)).await;
    assert!(
        again.origin,
        "a pass goes through: {} {:?}",
        again.status, again.retry_after
    );
    // After the wait, everyone still has their place.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    for (ticket, first) in &places {
        let a = u
            .send(json_get(&u, "/__usher/status", Some(ticket), None), "")
            .await;
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        let now = v["position"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}", a.body));
        assert!(now <= *first, "{now} after {first}");
    }
    let m = u.metrics().await;
    assert!(metric(&m, "usher_rate_limited_total{scope=\"request\"}") >= f64::from(held));
    u.stop().await;
}

impl Usher {
    async fn metrics(&self) -> String {
        let r = Request::get(format!("http://{}/metrics", self.admin));
        self.send(r, "").await.body
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {series}"))
}

/// The challenge in a JSON answer: token and bits.
fn challenge_of(a: &Answer) -> Option<(String, u32)> {
    let v: serde_json::Value = serde_json::from_str(&a.body).ok()?;
    Some((
        v["challenge"].as_str()?.to_string(),
        v["difficulty"].as_u64()? as u32,
    ))
}

const POW_ROOM: &str = "event = \"pow\"\nkeys_file = \"test.keys\"\nmax_active_users = 1\nnew_users_per_minute = 1\nburst = 1\n[room.limits]\ntickets_per_minute_per_ip = 1\nrequests_per_second_per_ip = 0\nticket_proof_bits = 8";

/// Uses up the address's ticket allowance (burst 5); returns the first
/// challenge.
async fn spend_allowance(u: &Usher) -> (String, u32) {
    for _ in 0..20 {
        let a = u.send(json_get(u, "/", None, None), "").await;
        assert_eq!(a.status, 200, "{}", a.body);
        if let Some(c) = challenge_of(&a) {
            assert!(
                ticket_of(&a).is_none(),
                "a challenge comes without a ticket"
            );
            assert!(a.retry_after.is_none());
            assert_eq!(a.state.as_deref(), Some("queued"));
            return c;
        }
    }
    panic!("no challenge after 20 newcomers from one address");
}

/// Over the per-address ticket limit a newcomer gets a challenge; a
/// solution gets the ticket; a wrong, replayed, expired or forged one gets
/// a fresh challenge and no ticket. The holding page carries the
/// challenge for its script, and the cookie works like the header.
#[tokio::test]
async fn over_the_ticket_limit_a_solved_challenge_gets_the_ticket() {
    use usher::tokens::proof;
    let u = start(POW_ROOM).await;
    let (token, bits) = spend_allowance(&u).await;
    assert_eq!(bits, 8);
    let page = u.get("/", None).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("data-pow=\"\""), "the page carries it");
    assert!(page.body.contains("data-bits=\"8\""));
    assert!(ticket_of(&page).is_none());

    let nonce = proof::solve(&token, bits);
    let solution = format!("{token}.{nonce}");
    let a = u.send(json_get(&u, "/", None, Some(&solution)), "").await;
    let ticket = ticket_of(&a).unwrap_or_else(|| panic!("solved: a ticket ({})", a.body));
    assert!(challenge_of(&a).is_none());
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert!(v["position"].as_u64().is_some(), "{}", a.body);
    assert!(!ticket.is_empty());

    // Replayed: refused, a fresh challenge instead.
    let a = u.send(json_get(&u, "/", None, Some(&solution)), "").await;
    assert!(ticket_of(&a).is_none(), "a solution is good once");
    let (fresh, _) = challenge_of(&a).expect("a fresh challenge");
    assert_ne!(fresh, token);

    // Wrong nonce.
    let wrong = (0..)
        .find(|n| !proof::solves(&fresh, &n.to_string(), bits))
        .unwrap();
    let a = u
        .send(
            json_get(&u, "/", None, Some(&format!("{fresh}.{wrong}"))),
            "",
        )
        .await;
    assert!(
        ticket_of(&a).is_none() && challenge_of(&a).is_some(),
        "wrong nonce"
    );

    // Expired (sealed by the room's own key two minutes and more ago) and
    // forged (another key), each solved properly.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ours = usher::tokens::Keyring::parse(TEST_KEYS).unwrap();
    let theirs =
        usher::tokens::Keyring::parse("k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n").unwrap();
    let event = usher::tokens::event_id("pow");
    for (what, keys, issued_at) in [
        ("expired", &ours, now - 130),
        ("forged", &theirs, now),
        ("sound, as a control", &ours, now),
    ] {
        let t = keys.seal_challenge(&usher::tokens::Challenge {
            event,
            issued_at,
            id: 12_345 + issued_at,
        });
        let s = format!("{t}.{}", proof::solve(&t, bits));
        // Through the cookie this time, as the page's script sends it.
        let a = u
            .send(json_get(&u, "/", Some(&format!("usher_pow={s}")), None), "")
            .await;
        assert_eq!(a.status, 200);
        if what.starts_with("sound") {
            assert!(ticket_of(&a).is_some(), "{what}: {}", a.body);
        } else {
            assert!(ticket_of(&a).is_none(), "{what}: no ticket");
            assert!(challenge_of(&a).is_some(), "{what}: a fresh challenge");
        }
    }
    let m = u.metrics().await;
    assert_eq!(
        metric(&m, "usher_proof_of_work_total{result=\"solved\"}"),
        2.0
    );
    assert_eq!(
        metric(&m, "usher_proof_of_work_total{result=\"rejected\"}"),
        4.0
    );
    assert!(metric(&m, "usher_proof_of_work_total{result=\"issued\"}") >= 6.0);
    u.stop().await;
}

/// One machine cannot farm places cheaply: over the limit, N tickets cost
/// N solved challenges, and without solutions no ticket comes at all.
#[tokio::test]
async fn over_the_ticket_limit_each_ticket_costs_one_solution() {
    use usher::tokens::proof;
    let u = start(POW_ROOM).await;
    spend_allowance(&u).await;
    for _ in 0..30 {
        let a = u.send(json_get(&u, "/", None, None), "").await;
        assert!(ticket_of(&a).is_none() && challenge_of(&a).is_some());
    }
    let (mut tickets, mut solved) = (0, 0);
    for _ in 0..10 {
        let a = u.send(json_get(&u, "/", None, None), "").await;
        let (token, bits) = challenge_of(&a).expect("a challenge");
        let s = format!("{token}.{}", proof::solve(&token, bits));
        solved += 1;
        let a = u.send(json_get(&u, "/", None, Some(&s)), "").await;
        tickets += usize::from(ticket_of(&a).is_some());
    }
    assert_eq!((tickets, solved), (10, 10), "one solution, one ticket");
    let m = u.metrics().await;
    assert_eq!(
        metric(&m, "usher_proof_of_work_total{result=\"solved\"}"),
        10.0
    );
    assert_eq!(
        metric(&m, "usher_proof_of_work_total{result=\"rejected\"}"),
        0.0
    );
    u.stop().await;
}

/// The shared line (Redis) answers over the limits as the local one does:
/// the same check runs on both paths.
#[tokio::test]
async fn over_the_limits_the_redis_line_answers_the_same() {
    use usher::tokens::proof;
    let Some(server) = redis::RedisServer::start(None) else {
        eprintln!("redis-server not installed: skipped");
        return;
    };
    let u = start(&format!(
        "{}\n[store]\nbackend = \"redis\"\nurl = \"{}\"\nnode_id = \"a\"",
        POW_ROOM.replace(
            "requests_per_second_per_ip = 0",
            "requests_per_second_per_ip = 3"
        ),
        server.url()
    ))
    .await;
    let mut challenge = None;
    let mut waited = 0;
    for _ in 0..40 {
        let a = u.send(json_get(&u, "/", None, None), "").await;
        assert_eq!(a.status, 200, "never an error page: {}", a.body);
        if a.retry_after.is_some() {
            waited += 1;
            assert!(ticket_of(&a).is_none() && challenge_of(&a).is_none());
        } else if let Some(c) = challenge_of(&a) {
            challenge = Some(c);
            break;
        }
    }
    let (token, bits) = challenge.expect("a challenge once the tickets are spent");
    let s = format!("{token}.{}", proof::solve(&token, bits));
    // Past the request limit's burst (6): wait as told, then bring the solution.
    let ticket = loop {
        let a = u.send(json_get(&u, "/", None, Some(&s)), "").await;
        assert_eq!(a.status, 200);
        match &a.retry_after {
            Some(n) => {
                waited += 1;
                tokio::time::sleep(Duration::from_secs(n.parse().unwrap())).await;
            }
            None => break ticket_of(&a).unwrap_or_else(|| panic!("a ticket: {}", a.body)),
        }
    };
    assert!(ticket.starts_with("usher_ticket="));
    assert!(waited > 0, "the request limit was reached too");
    let a = loop {
        let a = u.send(json_get(&u, "/", None, Some(&s)), "").await;
        match &a.retry_after {
            Some(n) => tokio::time::sleep(Duration::from_secs(n.parse().unwrap())).await,
            None => break a,
        }
    };
    assert!(
        ticket_of(&a).is_none() && challenge_of(&a).is_some(),
        "replayed"
    );
    u.stop().await;
    drop(server);
}
