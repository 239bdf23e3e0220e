//! Three usher processes (the real binary) sharing one line in a real
//! Redis, scraped as Prometheus scrapes them: the shipped dashboard's
//! queries, evaluated over the three scrapes, give the line's true figures
//! (people in line, active, pending, admissions and tickets per minute),
//! not three times them. Line-wide gauges are the same on every node (so
//! the dashboard takes their max); counters count each node's own work (so
//! it sums them).

use crate::support::http as http_util;
use crate::support::process;
use crate::support::promql;
use crate::support::redis;
use crate::support::{within, TempDir};

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use http::Request;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use process::UsherProcess;
use promql::{dashboard, eval, panel_query, samples, Sample};
use redis::RedisServer;

use http_util::HttpClient;

/// Room capacity: the line grants this many places at once.
const MAX_ACTIVE: usize = 4;
/// Visitors who take a ticket.
const VISITORS: usize = 10;
/// Of the granted visitors, those who come back for their pass (one on
/// each node); the rest of the grants stay pending.
const TAKE: usize = 3;

/// One node on the line in Redis at `redis`: `room` is the rest of its
/// `[room]`, `more` any tables after `[store]`.
fn node_with(redis: &str, dir: &Path, name: &str, room: &str, more: &str) -> UsherProcess {
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
tick = "50ms"
{room}
[room.limits]
tickets_per_minute_per_ip = 10000000
requests_per_second_per_ip = 0
requests_per_second_per_pass = 0
[store]
backend = "redis"
url = "{redis}"
node_id = "{name}"
timeout = "300ms"
{more}
"#,
            keys = dir.join("keys").display(),
        ),
    )
}

fn node(redis: &str, dir: &Path, name: &str) -> UsherProcess {
    let room = format!(
        "max_active_users = {MAX_ACTIVE}\nnew_users_per_minute = 60000\nburst = 10\n\
         refresh = \"1s\"\nticket_grace = \"2m\"\nclaim_window = \"2m\""
    );
    node_with(redis, dir, name, &room, "")
}

/// A node of the room with a scheduled opening (`opens`, RFC 3339) and a
/// shared stock of one voucher.
fn node_with_stock(redis: &str, dir: &Path, name: &str, opens: &str) -> UsherProcess {
    let room = format!(
        "max_active_users = 100\nnew_users_per_minute = 600\nburst = 10\nopens_at = \"{opens}\""
    );
    let vouchers = format!(
        "[vouchers]\nidentity = \"header:x-user\"\nplugin = \"pool\"\npool_file = \"{}\"\nstock = 1",
        dir.join("codes.txt").display()
    );
    node_with(redis, dir, name, &room, &vouchers)
}

/// Whether a scrape says the room is in `state` (and in no other).
fn room_state_is(s: &[Sample], state: &str) -> bool {
    let states: Vec<&str> = s
        .iter()
        .filter(|x| x.name == "usher_room_state" && x.value == 1.0)
        .map(|x| x.labels["state"].as_str())
        .collect();
    states == [state]
}

fn scrape(n: &UsherProcess) -> Vec<Sample> {
    let (status, body) = n.admin_get("/metrics").expect("metrics answer");
    assert_eq!(status, 200);
    samples(&body)
}

/// The value of the unlabelled series `name` in a scrape.
fn value(s: &[Sample], name: &str) -> f64 {
    s.iter()
        .find(|x| x.name == name && x.labels.is_empty())
        .unwrap_or_else(|| panic!("{name} not exported"))
        .value
}

/// Checks every 5 ms (for at most 10 s) until `check` finds what it waits for.
async fn until<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    within(10, what, async {
        loop {
            if let Some(found) = check() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// Waits until every node's scrape satisfies `ok`.
async fn until_every_node(nodes: &[UsherProcess], what: &str, ok: impl Fn(&[Sample]) -> bool) {
    let what = format!("every node to report {what}");
    until(&what, || nodes.iter().all(|n| ok(&scrape(n))).then_some(())).await
}

/// Waits until one node's scrape satisfies `ok`: that node's index.
async fn until_a_node(nodes: &[UsherProcess], what: &str, ok: impl Fn(&[Sample]) -> bool) -> usize {
    let what = format!("a node to report {what}");
    until(&what, || nodes.iter().position(|n| ok(&scrape(n)))).await
}

/// One status request: (state, cookie set by name).
async fn status(c: &HttpClient, base: &str, cookie: Option<&str>) -> (String, Vec<String>) {
    let mut req = Request::get(format!("{base}/__usher/status"));
    if let Some(k) = cookie {
        req = req.header(http::header::COOKIE, k);
    }
    let r = http_util::send(c, req).await.unwrap();
    let state = r.json["state"].as_str().unwrap_or_default().to_string();
    (state, r.cookies)
}

/// The dashboard query of panel `title`, legend `legend`, over the three
/// nodes' scrapes: its one value (or the value of group `group`).
fn dashboard_value(
    title: &str,
    legend: &str,
    group: &[&str],
    before: &[Vec<Sample>],
    after: &[Vec<Sample>],
    seconds: f64,
) -> f64 {
    let expr = panel_query(&dashboard(), title, legend);
    let out = eval(&expr, before, after, seconds).unwrap();
    let key: Vec<String> = group.iter().map(|s| s.to_string()).collect();
    *out.get(&key)
        .unwrap_or_else(|| panic!("{title} / {legend}: no group {key:?} in {out:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_reads_the_lines_figures_from_three_nodes() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let dir = TempDir::keyed("monitoring-nodes");
    let nodes: Vec<UsherProcess> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| node(&redis.url(), &dir, n))
        .collect();
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    until_every_node(&nodes, "3 nodes", |s| value(s, "usher_store_nodes") == 3.0).await;

    // Everyone takes a ticket while the room is paused (no direct
    // admission), one node after the other.
    for n in &nodes {
        assert_eq!(n.admin_post("/admin/pause"), Some(200));
    }
    let before: Vec<Vec<Sample>> = nodes.iter().map(scrape).collect();
    let started = Instant::now();
    let mut tickets = Vec::new();
    for i in 0..VISITORS {
        let (state, cookies) = status(&c, &nodes[i % 3].base(), None).await;
        assert_eq!(state, "paused");
        let t = cookies.into_iter().find(|k| k.starts_with("usher_ticket="));
        tickets.push(t.expect("a ticket"));
    }
    for n in &nodes {
        assert_eq!(n.admin_post("/admin/resume"), Some(200));
    }

    // The lease holder grants MAX_ACTIVE places; every node reports them
    // and the line's admission rate, though only one node granted and
    // nobody has taken a pass yet.
    let granted = |s: &[Sample]| {
        value(s, "usher_pending_admissions") == MAX_ACTIVE as f64
            && value(s, "usher_queue_length") == (VISITORS - MAX_ACTIVE) as f64
    };
    until_every_node(&nodes, "the grants", granted).await;
    for n in &nodes {
        assert!(
            value(&scrape(n), "usher_admission_rate") > 0.0,
            "every node reports the line's admission rate"
        );
    }

    // The first TAKE visitors come back for their pass, each on another node.
    for (i, t) in tickets.iter().take(TAKE).enumerate() {
        let (state, cookies) = status(&c, &nodes[i % 3].base(), Some(t)).await;
        assert_eq!(state, "admitted", "visitor {i}");
        assert!(cookies.iter().any(|k| k.starts_with("usher_pass=")));
    }
    let (active, pending, waiting) = (TAKE, MAX_ACTIVE - TAKE, VISITORS - MAX_ACTIVE);
    until_every_node(&nodes, "the passes taken", |s| {
        value(s, "usher_active_users") == active as f64
            && value(s, "usher_pending_admissions") == pending as f64
    })
    .await;
    let after: Vec<Vec<Sample>> = nodes.iter().map(scrape).collect();
    let seconds = started.elapsed().as_secs_f64();
    let per_minute = |n: usize| n as f64 / seconds * 60.0;

    // Each node counted its own pass and its own tickets.
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let line = |s: &[Sample]| {
            s.iter()
                .find(|x| x.name == "usher_admitted_total" && x.labels["via"] == "line")
                .map_or(0.0, |x| x.value)
        };
        assert_eq!(line(a) - line(b), 1.0, "node {i} gave one pass");
        let tickets =
            value(a, "usher_tickets_issued_total") - value(b, "usher_tickets_issued_total");
        assert_eq!(
            tickets,
            (VISITORS / 3 + usize::from(i < VISITORS % 3)) as f64
        );
    }

    let read = |title, legend, group: &[&str]| {
        dashboard_value(title, legend, group, &before, &after, seconds)
    };
    let line_figures = [
        ("Active users / capacity", "active", active),
        ("Active users vs max_active_users", "active", active),
        ("Line length", "admitted, not yet arrived", pending),
        ("Line length", "in line", waiting),
        ("People in line", "in line", waiting),
    ];
    for (title, legend, truth) in line_figures {
        assert_eq!(read(title, legend, &[]), truth as f64, "{title} / {legend}");
    }
    let rate = read(
        "Admissions per minute vs the gate",
        "admitted ({{via}})",
        &["line"],
    );
    assert!(
        (rate - per_minute(TAKE)).abs() < 1e-9,
        "{rate} admitted/min"
    );
    let rate = read("Tickets issued per minute", "tickets", &[]);
    assert!(
        (rate - per_minute(VISITORS)).abs() < 1e-9,
        "{rate} tickets/min"
    );

    // What a sum over the nodes would have read: three times the line.
    let summed: f64 = after.iter().map(|s| value(s, "usher_active_users")).sum();
    assert_eq!(summed, 3.0 * active as f64);
}

/// With the line in Redis, every node's `usher_room_state` follows the
/// room as its holding answers do: the pre-queue until the opening, open
/// after it, sold out once the shared voucher stock is gone; and
/// `usher_room_new_users_per_minute` is the configured rate on every node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reports_the_rooms_state_and_rate() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let dir = TempDir::keyed("monitoring-states");
    std::fs::write(dir.join("codes.txt"), "CODE-1\nCODE-2\n").unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let opens = SystemTime::UNIX_EPOCH + Duration::from_secs(now + 8);
    let opens = humantime::format_rfc3339_seconds(opens).to_string();
    let nodes: Vec<UsherProcess> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| node_with_stock(&redis.url(), &dir, n, &opens))
        .collect();
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    until_every_node(&nodes, "the pre-queue and the rate", |s| {
        room_state_is(s, "prequeue") && value(s, "usher_room_new_users_per_minute") == 600.0
    })
    .await;
    let (state, _) = status(&c, &nodes[0].base(), None).await;
    assert_eq!(state, "prequeue", "the holding answer agrees");

    // The first node to report the room open lets a newcomer in at once:
    // no node says open while the pre-queue's draw is still ahead.
    let first = until_a_node(&nodes, "the opening", |s| room_state_is(s, "open")).await;
    let (state, cookies) = status(&c, &nodes[first].base(), None).await;
    assert_eq!(state, "admitted", "a newcomer on the node reporting open");
    until_every_node(&nodes, "the opening", |s| room_state_is(s, "open")).await;

    // That visitor claims the one voucher: every node sells out.
    let pass = cookies
        .into_iter()
        .find(|k| k.starts_with("usher_pass="))
        .expect("a pass");
    let claim = Request::post(format!("{}/__usher/voucher", nodes[first].base()))
        .header(http::header::COOKIE, &pass)
        .header("x-user", "one");
    let r = http_util::send(&c, claim).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.json);
    until_every_node(&nodes, "sold out", |s| room_state_is(s, "sold_out")).await;
}
