//! Visitors who leave at once: the line moves at the configured rate
//! (without one, as fast as the origin takes them: `tests/gate`).

use crate::support as common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::inproc::metric;
use common::{crowd_shared, within};

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
        let room = format!(
            "new_users_per_minute = {}\nburst = 5\nmax_active_users = {CAPACITY}\n\
             tick = \"50ms\"\nrefresh = \"2s\"",
            (PER_SECOND * 60.0) as u32
        );
        let usher = usher_before(addr, CAPACITY, &room).await;
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
        seen.assert_no_errors();
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
