//! Visitors who leave at once: the line moves at the configured rate, or,
//! without one, as fast as the origin takes them.

use crate::support as common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::inproc::{metric, Usher};
use common::{config, within};

/// Crowd tests share the machine by cost: see [`common::crowd_alone`].
use common::{crowd_alone, crowd_shared};

use super::crowd::*;
use super::fragile::*;

/// A fixed rate of 60 a second, visitors who leave at once (every answer of
/// the origin releases them), `max_active_users` = the origin's 20 slots: the
/// line moves at the configured rate, because a granted place is taken at
/// once by its long-polling holder instead of sitting idle until the next
/// poll (without `wait=1` this measures about 37/s).
///
/// The tick is 50 ms: the GCRA's bucket holds `burst` admissions and the
/// room draws on it once a tick, so no rate above burst / tick is possible
/// (with burst 5 at the default 250 ms tick: 20/s, whatever the rate says).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_crowd_admits_at_the_configured_rate() {
    const CAPACITY: usize = 20;
    const VISITORS: usize = 600;
    const PER_SECOND: f64 = 60.0;
    let _shared = crowd_shared().await;
    within(45, "release crowd at a fixed rate", async {
        let origin = Fragile::new(CAPACITY, 20, true);
        let addr = origin.start().await;
        let usher = Usher::start(&config(
            addr,
            "max_connections_per_ip = 0",
            &format!("max_in_flight = {CAPACITY}"),
            &format!(
                "[room]\nnew_users_per_minute = {}\nburst = 5\nmax_active_users = {CAPACITY}\n\
                 tick = \"50ms\"\nrefresh = \"2s\"\n{NO_ADDRESS_LIMITS}",
                (PER_SECOND * 60.0) as u32
            ),
        ))
        .await;
        let seen = Arc::new(Seen::default());
        let t = Instant::now();
        // 600 at 60/s: 10 s; stop waiting at 20 s (at a third of the rate
        // it would take 30).
        let done = release_crowd(&usher, VISITORS, &seen, Duration::from_secs(20)).await;
        let took = t.elapsed();
        let admitted = seen.admitted();
        let steady = rate_between(&admitted, 2.0, 8.0);
        let m = usher.metrics();
        let counted = metric(&m, "usher_admitted_total{via=\"line\"}").unwrap_or(0.0)
            + metric(&m, "usher_admitted_total{via=\"direct\"}").unwrap_or(0.0);
        eprintln!(
            "fixed rate: {done}/{VISITORS} in after {took:.1?} ({} on arrival); \
             {steady:.1}/s from the 2nd to the 8th second after the first; per second {:?}; \
             usher counted {counted} admissions; origin: {} served, peak {} in flight, \
             {} overloaded, mean {:.1?}; visitors saw (5xx, 429, other, broken) {:?}",
            seen.direct.load(Ordering::SeqCst),
            per_second(&admitted),
            origin.served(),
            origin.max_seen(),
            origin.overloaded(),
            origin.mean_latency(),
            seen.errors()
        );
        assert_eq!(
            seen.errors(),
            (0, 0, 0, 0),
            "visitors saw (5xx, 429, other statuses, broken connections)"
        );
        origin.assert_spared();
        assert!(
            steady >= 0.9 * PER_SECOND,
            "{steady:.1} admissions a second from the 2nd to the 8th second, \
             below 90% of the configured {PER_SECOND}; per second {:?}",
            per_second(&admitted)
        );
        assert_eq!(done, VISITORS, "everyone was let in within 20 s");
        assert_eq!(counted as usize, VISITORS, "usher counted every admission");
        usher.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}

/// No rate set: the closed-loop gate lets visitors who leave at once in as
/// fast as the origin takes them. Each brings one request of the origin's
/// latency L, so at the target share of 20 slots the origin takes
/// 20 x 0.85 / L visitors a second (about 740/s at L = 23 ms); the gate
/// must reach 70% of that over some two seconds. The test client is not
/// what limits: the same crowd on this machine is let in at about 990/s by
/// a fixed gate of 1000/s (burst 250), with the origin's slots full and no
/// error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_crowd_closed_loop_keeps_the_origin_busy() {
    const CAPACITY: usize = 20;
    const VISITORS: usize = 2000;
    let _alone = crowd_alone().await;
    within(45, "release crowd, closed-loop gate", async {
        let origin = Fragile::new(CAPACITY, 20, true);
        let addr = origin.start().await;
        let usher = Usher::start(&config(
            addr,
            "max_connections_per_ip = 0",
            &format!("max_in_flight = {CAPACITY}"),
            &format!("[room]\nrefresh = \"2s\"\n{NO_ADDRESS_LIMITS}"),
        ))
        .await;
        let (tracer, trace) = trace_gate(usher.admin.expect("admin listener"));
        let seen = Arc::new(Seen::default());
        let t = Instant::now();
        let done = release_crowd(&usher, VISITORS, &seen, Duration::from_secs(25)).await;
        let took = t.elapsed();
        tracer.abort();
        let admitted = seen.admitted();
        let best = best_rate(&admitted, 2.0);
        let latency = origin.mean_latency().as_secs_f64();
        let ceiling = CAPACITY as f64 * 0.85 / latency;
        let m = usher.metrics();
        let reasons: Vec<&str> = m
            .lines()
            .filter(|l| l.starts_with("usher_gate_backoffs_total{"))
            .collect();
        let report = format!(
            "closed loop: {done}/{VISITORS} in after {took:.1?} ({} on arrival); \
             best {best:.0}/s over 2 s (the origin takes {ceiling:.0}/s at the target); \
             per second {:?}; {reasons:?}; origin: {} served, peak {} in flight, \
             {} overloaded, mean {:.1?}; visitors saw (5xx, 429, other, broken) {:?}\n\
             gate:\n{}",
            seen.direct.load(Ordering::SeqCst),
            per_second(&admitted),
            origin.served(),
            origin.max_seen(),
            origin.overloaded(),
            origin.mean_latency(),
            seen.errors(),
            trace.lock().unwrap().join("\n")
        );
        eprintln!("{report}");
        assert_eq!(
            seen.errors(),
            (0, 0, 0, 0),
            "visitors saw (5xx, 429, other statuses, broken connections)"
        );
        origin.assert_spared();
        assert!(
            best >= 0.7 * ceiling,
            "at best {best:.0} admissions a second, below 70% of the {ceiling:.0} \
             the origin takes at the target"
        );
        assert_eq!(done, VISITORS, "everyone was let in within 25 s");
        usher.shutdown(Duration::from_secs(1)).await;
    })
    .await;
}
