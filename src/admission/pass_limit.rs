//! Requests per pass per second (`room.limits.requests_per_second_per_pass`).
//!
//! A pass is a bearer token: copied from one browser to a thousand bots, it
//! would let all of them through while counting as one active visitor. The
//! room's capacity cannot see that, so the pass itself gets a request rate:
//! one visitor's worth (a page load at once, then a human pace). Over it,
//! the holder gets 429 with Retry-After, which a real browser barely meets.
//!
//! Keyed by pass id, generic over the clock (tests use governor's
//! `FakeRelativeClock`). Like every keyed limiter, its state must be pruned
//! on a schedule ([`PassLimit::prune`], from the admission tick), or it
//! grows with every pass ever seen.

use std::num::NonZeroU32;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::gate::TokioClock;

/// How many times the per-second rate a pass may use at once: a page and
/// its parts load together.
pub const BURST_FACTOR: u32 = 5;

type Keyed<C> =
    RateLimiter<u64, DefaultKeyedStateStore<u64>, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The per-pass request limiter; off when built with a rate of 0.
pub struct PassLimit<C: Clock = TokioClock> {
    per_second: u32,
    clock: C,
    limiter: Option<Keyed<C>>,
}

impl<C: Clock + Clone> PassLimit<C> {
    /// A limiter allowing `per_second` requests per pass (burst:
    /// [`BURST_FACTOR`] times that); 0 turns it off.
    pub fn new(per_second: u32, clock: C) -> Self {
        let limiter = NonZeroU32::new(per_second).map(|n| {
            let burst = NonZeroU32::new(per_second.saturating_mul(BURST_FACTOR)).unwrap_or(n);
            RateLimiter::dashmap_with_clock(Quota::per_second(n).allow_burst(burst), clock.clone())
        });
        PassLimit {
            per_second,
            clock,
            limiter,
        }
    }

    /// The rate it was built with (a reload keeps the limiter when unchanged).
    pub fn per_second(&self) -> u32 {
        self.per_second
    }

    /// Counts one request on `pass_id`: `Ok` to go on, or `Err(seconds)` to
    /// wait (at least 1, for Retry-After).
    pub fn check(&self, pass_id: u64) -> Result<(), u64> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(&pass_id).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            (wait.as_secs_f64().ceil() as u64).max(1)
        })
    }

    /// Forgets passes whose allowance has refilled (call it on a schedule).
    pub fn prune(&self) {
        if let Some(l) = &self.limiter {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }

    /// Passes remembered now.
    pub fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }

    /// Whether no pass is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn a_copied_pass_gets_one_visitors_rate() {
        let clock = FakeRelativeClock::default();
        let limit = PassLimit::new(10, clock.clone());
        // a page load at once: the burst
        for i in 0..50 {
            assert_eq!(limit.check(7), Ok(()), "request {i} of the burst");
        }
        // the same pass from everywhere else at that moment: refused
        let retry = limit.check(7).unwrap_err();
        assert_eq!(retry, 1, "a tenth of a second to wait rounds up to 1 s");
        // another pass is not affected
        assert_eq!(limit.check(8), Ok(()));
        // the allowance refills at the configured rate
        clock.advance(Duration::from_millis(100));
        assert_eq!(limit.check(7), Ok(()));
        assert!(limit.check(7).is_err());
        clock.advance(Duration::from_secs(1));
        for _ in 0..10 {
            assert_eq!(limit.check(7), Ok(()));
        }
        assert!(limit.check(7).is_err());
    }

    #[test]
    fn zero_is_off_and_pruning_forgets_refilled_passes() {
        let off = PassLimit::new(0, FakeRelativeClock::default());
        for _ in 0..10_000 {
            assert_eq!(off.check(1), Ok(()));
        }
        assert!(off.is_empty());

        let clock = FakeRelativeClock::default();
        let limit = PassLimit::new(2, clock.clone());
        for id in 0..1000 {
            assert_eq!(limit.check(id), Ok(()));
        }
        assert_eq!(limit.len(), 1000);
        clock.advance(Duration::from_secs(60));
        limit.prune();
        assert_eq!(limit.len(), 0, "memory follows recent passes only");
        assert_eq!(limit.per_second(), 2);
    }
}
