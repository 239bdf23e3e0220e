//! The gate's rate: a GCRA limiter (governor) over new admissions, generic
//! over the clock so tests drive it with `FakeRelativeClock`. Capacity (the
//! other half of the gate) is counted by the room from active users.

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

/// governor's clock on tokio's time: in production the monotonic clock, in
/// tests the paused clock that `tokio::time::advance` moves, so the gate and
/// the line see the same time.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    epoch: tokio::time::Instant,
}

impl TokioClock {
    /// A clock counting from `epoch`.
    pub fn new(epoch: tokio::time::Instant) -> Self {
        TokioClock { epoch }
    }
}

impl Clock for TokioClock {
    type Instant = std::time::Duration;

    fn now(&self) -> std::time::Duration {
        self.epoch.elapsed()
    }
}

/// `new_users_per_minute` with a burst, as a limiter.
pub struct Gate<C: Clock = DefaultClock> {
    limiter: RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<C::Instant>>,
    per_minute: u32,
    burst: u32,
}

impl<C: Clock> Gate<C> {
    /// A gate admitting `per_minute` new visitors a minute, `burst` at once.
    pub fn new(per_minute: u32, burst: u32, clock: C) -> Self {
        let quota =
            Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN))
                .allow_burst(NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN));
        Gate {
            limiter: RateLimiter::direct_with_clock(quota, clock),
            per_minute,
            burst,
        }
    }

    /// Whether this gate has the given settings (so a reload can keep its state).
    pub fn same(&self, per_minute: u32, burst: u32) -> bool {
        self.per_minute == per_minute && self.burst == burst
    }

    /// Takes up to `want` admissions the rate allows now; returns how many.
    pub fn take(&self, want: u64) -> u64 {
        let mut n = 0;
        while n < want && self.limiter.check().is_ok() {
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;
    use std::time::Duration;

    #[test]
    fn rate_and_burst_are_exact() {
        let clock = FakeRelativeClock::default();
        let gate = Gate::new(600, 20, clock.clone());
        assert_eq!(gate.take(100), 20, "the burst first");
        assert_eq!(gate.take(100), 0);
        clock.advance(Duration::from_millis(100));
        assert_eq!(gate.take(100), 1, "one per 100 ms at 600/min");
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            gate.take(1000),
            20,
            "never more than the burst after idling"
        );
        clock.advance(Duration::from_millis(1_000));
        assert_eq!(gate.take(5), 5, "want caps the take");
        assert_eq!(gate.take(100), 5);
    }
}
