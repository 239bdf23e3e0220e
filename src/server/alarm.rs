//! One timer for an HTTP/1.1 connection's whole life, shared by the waits
//! that need a deadline: the rest between requests and the origin's
//! answer to a relayed request; and the coarse clock those deadlines are
//! read from.
//!
//! Why: a timer made for each wait is put in tokio's timer wheel and taken
//! out again, and its deadline costs a clock read, at every request. For a
//! forwarded request that was about 3% of usher's time (`perf`, c=256:
//! `Timeout::poll`, `clear_entry`, the clock) and 4.7% of its instructions
//! (callgrind), on a path where nginx keeps one timer per connection. The
//! alarm is moved only when it rings: it is set no later than any wait's
//! deadline and, when it rings before that deadline, set again for the
//! deadline or one step on, whichever comes first. A connection whose
//! requests take microseconds moves it once a step (seconds), not once a
//! request.
//!
//! Deadlines are [`Tick`]s, from the kernel's coarse monotonic clock: a
//! wait of seconds needs no better than its tick (1-10 ms), and reading it
//! takes no time-stamp counter read (4 ns here, `Instant::now` 16 ns, up
//! to 50 ns under load; twice a rest). A wait ends up to two ticks after
//! its deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::time::{Duration, Instant, Sleep};

use crate::civil::Tick;

/// The connection's timer (see the module documentation).
pub struct Alarm {
    /// Boxed: pinned once for the connection, moved with it.
    sleep: Pin<Box<Sleep>>,
    /// The tick the alarm is set for.
    set_for: Tick,
    /// The longest the alarm is set ahead when it rings early: the
    /// shortest wait the connection makes, so that a wait starting later
    /// never finds it set past its own deadline (it would move it).
    step: Duration,
}

/// The shortest step: one under the coarse clock's tick rings again and
/// again before the tick moves on (a zero timeout in the config made a
/// zero step, and a wait was woken every millisecond, tokio's timer's
/// turn).
const MIN_STEP: Duration = Duration::from_millis(50);

impl Alarm {
    /// An alarm set `step` (at least [`MIN_STEP`]) from now.
    pub fn new(step: Duration) -> Self {
        let step = step.max(MIN_STEP);
        Alarm {
            sleep: Box::pin(tokio::time::sleep(step)),
            set_for: Tick::now() + step,
            step,
        }
    }

    /// Ready once `deadline` has come, however early the alarm was set.
    pub fn until(&mut self, deadline: Tick) -> Until<'_> {
        if self.set_for > deadline {
            // Set for later than this wait ends: the first wait of all, or
            // a reload shortened a timeout.
            self.set(Tick::now(), deadline);
        }
        Until {
            alarm: self,
            deadline,
        }
    }

    /// Sets the alarm for `at`, `now` being now.
    fn set(&mut self, now: Tick, at: Tick) {
        self.set_for = at;
        self.sleep.as_mut().reset(Instant::now() + at.since(now));
    }
}

/// The wait of [`Alarm::until`].
pub struct Until<'a> {
    alarm: &'a mut Alarm,
    deadline: Tick,
}

impl Future for Until<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            ready!(this.alarm.sleep.as_mut().poll(cx));
            let now = Tick::now();
            if now >= this.deadline {
                return Poll::Ready(());
            }
            // Rang for an earlier wait's deadline (or the tick lags the
            // timer): on to this one's, or a step, whichever is sooner;
            // polled again, so registered.
            let next = this.deadline.min(now + this.alarm.step);
            this.alarm.set(now, next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Alarm, Tick};
    use std::future::Future;
    use std::time::{Duration, Instant};

    /// Waits on the real clocks (the coarse one is not tokio's): each
    /// must end at or after its deadline, and not long after it.
    fn ended_on_time(started: Instant, wait: Duration) {
        let took = started.elapsed();
        assert!(
            took + Duration::from_millis(10) >= wait,
            "{took:?} < {wait:?}"
        );
        assert!(
            took < wait + Duration::from_millis(500),
            "{took:?} >> {wait:?}"
        );
    }

    #[tokio::test]
    async fn a_wait_ends_at_its_deadline_whatever_the_alarm_was_set_for() {
        let mut alarm = Alarm::new(Duration::from_millis(400));
        // Set for 400 ms: a wait of 100 ms moves it earlier.
        let started = Instant::now();
        alarm.until(Tick::now() + Duration::from_millis(100)).await;
        ended_on_time(started, Duration::from_millis(100));
        // Now set for a time past: a wait of 250 ms rings early, at
        // once, and ends at its deadline, not a step (400 ms) later.
        let started = Instant::now();
        alarm.until(Tick::now() + Duration::from_millis(250)).await;
        ended_on_time(started, Duration::from_millis(250));
    }

    #[tokio::test]
    async fn a_zero_step_does_not_ring_every_millisecond() {
        // A config with a zero timeout gives a zero step; a wait of 300 ms
        // after the alarm rang must not be woken at every turn of tokio's
        // timer (1 ms) until the coarse tick passes its deadline.
        let mut alarm = Alarm::new(Duration::ZERO);
        alarm.until(Tick::now()).await;
        let started = Instant::now();
        let mut wait = std::pin::pin!(alarm.until(Tick::now() + Duration::from_millis(300)));
        let mut polls = 0;
        std::future::poll_fn(|cx| {
            polls += 1;
            wait.as_mut().poll(cx)
        })
        .await;
        ended_on_time(started, Duration::from_millis(300));
        assert!(polls <= 12, "woken {polls} times in a 300 ms wait");
    }

    #[tokio::test]
    async fn a_short_wait_after_long_waits_that_were_left_ends_on_time() {
        let mut alarm = Alarm::new(Duration::from_millis(50));
        // Long waits (an origin's answer) that end early, as when the
        // answer comes: the alarm rings and moves on within them.
        for _ in 0..3 {
            let far = Tick::now() + Duration::from_secs(60);
            let r = tokio::time::timeout(Duration::from_millis(70), alarm.until(far)).await;
            assert!(r.is_err(), "the 60 s wait is not over at 70 ms");
        }
        let started = Instant::now();
        alarm.until(Tick::now() + Duration::from_millis(30)).await;
        ended_on_time(started, Duration::from_millis(30));
    }
}
