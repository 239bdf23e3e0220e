//! Visitors who stay and browse: the gate backs off when the origin slows down.

use crate::support as common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::inproc::metric;
use common::{crowd_alone, within};

use super::crowd::*;
use super::fragile::*;

/// No rate set, visitors who stay and browse: once the gate keeps the
/// origin busy, the origin slowing down five times makes the gate back off
/// within seconds, and hold back, without the origin ever seeing more than
/// its slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_backs_off_when_the_origin_slows_down() {
    const CAPACITY: usize = 16;
    const VISITORS: usize = 300;
    const LATENCY_MS: u64 = 40;
    let _alone = crowd_alone().await;
    within(45, "gate backs off on a slow origin", async {
        let origin = Fragile::new(CAPACITY, LATENCY_MS, false);
        let addr = origin.start().await;
        let room = "refresh = \"2s\"\nsession_duration = \"30s\"";
        let usher = usher_before(addr, CAPACITY, room).await;
        let gate = &room_status(&usher).await["gate"];
        assert_eq!(gate["mode"], "closed-loop", "{gate}");
        let (tracer, trace) = trace_gate(usher.admin.expect("admin listener"));

        // The crowd: once in, each browses (a page every 160-240 ms, no
        // release) until the test ends: at 40 ms a page, about 80 of them
        // inside fill the target share of the slots.
        let seen = Arc::new(Seen::default());
        let client = crowd_client();
        let started = Instant::now();
        let tasks: Vec<_> = (0..VISITORS)
            .map(|i| {
                let mut b = Browser {
                    base: format!("http://{}", usher.addr),
                    client: client.clone(),
                    jar: HashMap::new(),
                    seen: seen.clone(),
                };
                tokio::spawn(async move {
                    b.wait_turn(started).await;
                    for k in 0.. {
                        match b.get(&format!("/page/{i}/{k}"), false).await {
                            Some(a) if a.origin => {}
                            Some(a) if a.state.is_some() => {
                                b.seen.held_again.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => {}
                        }
                        let pause = 160 + rand::random::<u64>() % 80;
                        tokio::time::sleep(Duration::from_millis(pause)).await;
                    }
                })
            })
            .collect();

        // Loaded: the gate has let in enough to keep the origin busy (the
        // first arrivals alone make it half busy for a moment, hence 0.7),
        // and has had a second and a half to settle.
        let loaded = tokio::time::timeout(Duration::from_secs(12), async {
            loop {
                let m = usher.metrics();
                if metric(&m, "usher_gate_origin_busy_ratio").unwrap_or(0.0) >= 0.7 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(
            loaded.is_ok(),
            "the origin never got 70% busy in 12 s:\n{}",
            trace.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let m = usher.metrics();
        let loaded_at = started.elapsed();
        let limit_before = metric(&m, "usher_gate_limit").expect("usher_gate_limit");
        let backoffs_before = backoffs(&m);
        let busy_before = metric(&m, "usher_gate_origin_busy_ratio").unwrap_or(0.0);
        let active_before = metric(&m, "usher_active_users").unwrap_or(0.0);
        assert!(
            busy_before >= 0.5,
            "the origin is busy before the slowdown: {busy_before}"
        );
        let gate = &room_status(&usher).await["gate"];
        assert_eq!(gate["mode"], "closed-loop", "{gate}");
        assert!(gate["limit"].as_u64().is_some_and(|l| l >= 1), "{gate}");

        // The origin slows down five times.
        origin.latency_ms.store(LATENCY_MS * 5, Ordering::SeqCst);
        let slowed = Instant::now();
        let (mut backed_off, mut fell) = (None, None);
        let mut lowest = limit_before;
        while slowed.elapsed() < Duration::from_secs(3) {
            tokio::time::sleep(Duration::from_millis(25)).await;
            let m = usher.metrics();
            if backed_off.is_none() && backoffs(&m) > backoffs_before {
                backed_off = Some(slowed.elapsed());
            }
            let limit = metric(&m, "usher_gate_limit").unwrap_or(f64::MAX);
            lowest = lowest.min(limit);
            // a cut, not the gate's breathing around its aim
            if fell.is_none() && limit <= 0.9 * limit_before {
                fell = Some(slowed.elapsed());
            }
        }
        // and it holds back while the origin stays slow
        tokio::time::sleep(Duration::from_millis(500)).await;
        let end = usher.metrics();
        let limit_end = metric(&end, "usher_gate_limit").unwrap_or(f64::MAX);
        let gate_end = room_status(&usher).await["gate"].clone();
        for t in tasks {
            t.abort();
        }
        tracer.abort();
        let reasons: Vec<&str> = end
            .lines()
            .filter(|l| l.starts_with("usher_gate_backoffs_total{"))
            .collect();
        let report = format!(
            "slowdown at {loaded_at:.1?} (busy {busy_before:.2}, limit {limit_before}, \
             active {active_before}, {backoffs_before} back-offs so far); 5x slower: \
             back-off after {backed_off:.1?}, limit at most 90% of {limit_before} after \
             {fell:.1?}, lowest {lowest}, 3.5 s on {limit_end}; {reasons:?}; gate then \
             {gate_end}; origin: {} served, peak {} in flight, {} overloaded; visitors saw \
             (5xx, 429, other, broken) {:?}, held again {}\ngate:\n{}",
            origin.served(),
            origin.max_seen(),
            origin.overloaded(),
            seen.errors(),
            seen.held_again.load(Ordering::SeqCst),
            trace.lock().unwrap().join("\n")
        );
        eprintln!("{report}");
        assert!(
            backed_off.is_some(),
            "no back-off within 3 s of the origin slowing down 5x \
             (usher_gate_backoffs_total {backoffs_before} before)"
        );
        assert!(
            fell.is_some(),
            "usher_gate_limit did not fall to 90% of {limit_before} within 3 s \
             (lowest {lowest})"
        );
        assert!(
            limit_end < limit_before,
            "the gate holds back while the origin stays slow: limit {limit_end}, \
             {limit_before} before"
        );
        origin.assert_spared();
        assert_eq!(
            seen.held_again.load(Ordering::SeqCst),
            0,
            "nobody admitted is held again"
        );
        usher.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}
