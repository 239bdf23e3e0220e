//! One event: visitors take tickets across the nodes, wait, browse and
//! check out; what they saw, and the FIFO and cap checks on it.

use crate::support::http as http_util;
use crate::support::process;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use http_util::HttpClient;

use super::nodes::*;

/// What the visitors of one event saw.
#[derive(Default)]
pub(super) struct Seen {
    /// (ticket number, when its admission answer arrived)
    pub(super) admitted: Vec<(u64, Instant)>,
    /// (ticket number, when a request answered "queued" with a position
    /// was sent)
    pub(super) queued: Vec<(u64, Instant)>,
    /// Visitors given a new ticket while they held one: a lost place.
    pub(super) requeued: Vec<u64>,
    /// Slowest answer to a poll.
    pub(super) slowest: Duration,
}

/// `count` visitors take tickets one after the other across the nodes,
/// then all poll (each on the next node every time, skipping dead ones)
/// until admitted, browse three pages on any node with the pass and check
/// out. `during` runs alongside once `after` visitors are in.
pub(super) async fn event<F, Fut>(
    bases: Arc<Vec<String>>,
    admins: &[u16],
    keys: &usher::tokens::Keyring,
    count: usize,
    after: usize,
    during: F,
) -> Seen
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let c: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    // everyone arrives while the room is paused (no direct admission into
    // the empty line), then the line opens at once
    let admin = |path: &'static str| {
        for &port in admins {
            assert_eq!(
                process::admin_request(port, "POST", path).map(|r| r.0),
                Some(200)
            );
        }
    };
    admin("/admin/pause");
    let mut tickets = Vec::new();
    for i in 0..count {
        let r = get(&c, &format!("{}/__usher/status", bases[i % 3]), None, None)
            .await
            .unwrap();
        assert_eq!(
            r.state, "paused",
            "visitor {i}: every newcomer takes a ticket"
        );
        tickets.push(r.cookie("usher_ticket").unwrap());
    }
    // a waiting visitor sees the same place from any node
    tokio::time::sleep(Duration::from_millis(200)).await;
    for (i, t) in tickets.iter().enumerate().step_by(5) {
        for base in bases.iter() {
            let r = get(&c, &format!("{base}/__usher/status"), Some(t), None)
                .await
                .unwrap();
            assert_eq!(r.position, Some(i as u64), "visitor {i} on {base}");
        }
    }
    // and every node's status counts the shared line, not its own
    for &port in admins {
        let (_, body) = process::admin_request(port, "GET", "/admin/status").unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["room"]["waiting"], count, "{}", v["room"]);
        assert_eq!(v["room"]["shared"]["nodes"], 3, "{}", v["room"]);
    }
    admin("/admin/resume");
    let numbers: Vec<u64> = tickets.iter().map(|t| number(keys, t)).collect();
    assert_eq!(
        numbers,
        (1..=count as u64).collect::<Vec<_>>(),
        "one sequence across nodes"
    );
    let seen = Arc::new(Mutex::new(Seen::default()));
    let admitted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, ticket) in tickets.into_iter().enumerate() {
        let (c, bases, seen, admitted) = (c.clone(), bases.clone(), seen.clone(), admitted.clone());
        let n = numbers[i];
        tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut k = i;
            let pass = loop {
                assert!(
                    started.elapsed() < Duration::from_secs(90),
                    "visitor {n} never admitted"
                );
                k += 1;
                let sent = Instant::now();
                let Ok(r) = get(
                    &c,
                    &format!("{}/__usher/status", bases[k % 3]),
                    Some(&ticket),
                    None,
                )
                .await
                else {
                    continue; // a dead node: the next one
                };
                let took = sent.elapsed();
                let pass = {
                    let mut s = seen.lock().unwrap();
                    s.slowest = s.slowest.max(took);
                    if r.cookie("usher_ticket").is_some() {
                        s.requeued.push(n);
                    }
                    if r.state == "admitted" {
                        s.admitted.push((n, Instant::now()));
                        admitted.fetch_add(1, Ordering::SeqCst);
                        r.cookie("usher_pass")
                    } else {
                        assert_eq!(r.state, "queued", "visitor {n}");
                        // without a position the node could not read the
                        // line (its store is down): it holds everyone, so
                        // the answer says nothing about order
                        if r.position.is_some() {
                            s.queued.push((n, sent));
                        }
                        None
                    }
                };
                if let Some(pass) = pass {
                    break pass;
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
            };
            for j in 0..3 {
                k += 1;
                let url = format!("{}/movies/{j}", bases[k % 3]);
                if let Ok(r) = get(&c, &url, Some(&pass), Some(n)).await {
                    assert_eq!(r.status, 200, "visitor {n}: the pass works");
                }
                tokio::time::sleep(Duration::from_millis(60)).await;
            }
            loop {
                k += 1;
                let url = format!("{}/checkout", bases[k % 3]);
                if let Ok(r) = get(&c, &url, Some(&pass), Some(n)).await {
                    assert_eq!(r.status, 200);
                    break;
                }
            }
        }));
    }
    while admitted.load(Ordering::SeqCst) < after {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    during().await;
    for t in tasks {
        t.await.unwrap();
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.admitted.len(), count);
    seen
}

/// FIFO: once X was admitted, no earlier ticket was still queued on a
/// request sent after that.
pub(super) fn assert_fifo(seen: &Seen) {
    for &(x, at) in &seen.admitted {
        for &(y, sent) in &seen.queued {
            assert!(
                !(y < x && sent > at),
                "ticket {y} still queued after {x} was admitted"
            );
        }
    }
    assert!(seen.requeued.is_empty(), "places lost: {:?}", seen.requeued);
}

pub(super) fn assert_cap(inside: &Inside, max: usize) {
    let most = inside.most.load(Ordering::SeqCst);
    assert!(most <= max, "the origin had {most} inside at once > {max}");
    assert!(most >= 2, "the line moved several at once ({most})");
}
