//! The origin's health as the proxy sees it: answers, failures and time to
//! response headers, counted per forward and read (and reset) by the
//! adaptive gate once per interval.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Origin answers counted by the proxy since the last look.
#[derive(Debug, Default)]
pub struct OriginHealth {
    requests: AtomicU64,
    errors: AtomicU64,
    latency_us: AtomicU64,
}

/// One interval's view of the origin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Answers (or failures) seen.
    pub requests: u64,
    /// Failures among them (5xx, connect errors, timeouts).
    pub errors: u64,
    /// Mean time to response headers.
    pub mean_latency: Duration,
}

impl OriginHealth {
    /// Records one origin exchange (three relaxed atomic adds).
    pub fn record(&self, took: Duration, failed: bool) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.latency_us
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What was seen since the last call, resetting the counts.
    pub fn take(&self) -> Sample {
        let requests = self.requests.swap(0, Ordering::Relaxed);
        let errors = self.errors.swap(0, Ordering::Relaxed);
        let latency = self.latency_us.swap(0, Ordering::Relaxed);
        Sample {
            requests,
            errors,
            mean_latency: Duration::from_micros(latency.checked_div(requests).unwrap_or(0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{OriginHealth, Sample};
    use std::time::Duration;

    #[test]
    fn the_window_resets_on_take() {
        let h = OriginHealth::default();
        h.record(Duration::from_millis(100), false);
        h.record(Duration::from_millis(300), true);
        let seen = Sample {
            requests: 2,
            errors: 1,
            mean_latency: Duration::from_millis(200),
        };
        assert_eq!(h.take(), seen);
        assert_eq!(
            h.take(),
            Sample {
                requests: 0,
                errors: 0,
                mean_latency: Duration::ZERO
            }
        );
    }
}
