//! Visitors who leave at once, no rate set: the closed-loop gate lets them
//! in as fast as the origin takes them.

use crate::support as common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{crowd_alone, within};

use super::crowd::*;
use super::fragile::*;

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
        let usher = usher_before(addr, CAPACITY, "refresh = \"2s\"").await;
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
        seen.assert_no_errors();
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
