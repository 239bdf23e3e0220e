//! The adaptive gate: admissions follow the origin's measured health.
//!
//! AIMD, as TCP does for the same problem (find the rate a shared resource
//! can take without a model of it): every interval, if the origin's error
//! rate or mean response time is over its target, the admission rate is cut
//! by a factor; if the origin is healthy and people are waiting, it grows by
//! a fixed step; always between the configured floor and ceiling.

use crate::config::room::AdaptiveConfig;

use crate::proxy::health::Sample;

/// Why the rate changed, for `usher_adaptive_changes_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The origin failed too often: cut.
    Errors,
    /// The origin was slow: cut.
    Latency,
    /// Healthy with people waiting: grow.
    Healthy,
}

impl Reason {
    /// Every reason.
    pub const ALL: [Reason; 3] = [Reason::Errors, Reason::Latency, Reason::Healthy];

    /// Metric label.
    pub fn label(self) -> &'static str {
        match self {
            Reason::Errors => "errors",
            Reason::Latency => "latency",
            Reason::Healthy => "healthy",
        }
    }
}

/// The controller's state: the current rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Aimd {
    /// New visitors per minute now.
    pub rate: u32,
}

impl Aimd {
    /// Starts at `start`, clamped to the floor and ceiling.
    pub fn new(cfg: &AdaptiveConfig, start: u32) -> Aimd {
        Aimd {
            rate: start.clamp(cfg.floor, cfg.ceiling),
        }
    }

    /// One interval: returns the reason if the rate changed.
    pub fn step(
        &mut self,
        cfg: &AdaptiveConfig,
        s: Sample,
        people_waiting: bool,
    ) -> Option<Reason> {
        if s.requests == 0 {
            // No traffic, no evidence: hold.
            return None;
        }
        let reason = if s.errors as f64 > cfg.max_error_rate * s.requests as f64 {
            Reason::Errors
        } else if s.mean_latency > cfg.target_latency {
            Reason::Latency
        } else if people_waiting {
            Reason::Healthy
        } else {
            return None;
        };
        let new = match reason {
            Reason::Healthy => self.rate.saturating_add(cfg.increase),
            _ => (f64::from(self.rate) * cfg.decrease) as u32,
        }
        .clamp(cfg.floor, cfg.ceiling);
        if new == self.rate {
            return None;
        }
        self.rate = new;
        Some(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn cfg() -> AdaptiveConfig {
        AdaptiveConfig {
            target_latency: Duration::from_millis(200),
            max_error_rate: 0.05,
            floor: 60,
            ceiling: 1200,
            interval: Duration::from_secs(5),
            increase: 60,
            decrease: 0.5,
        }
    }

    fn sample(requests: u64, errors: u64, ms: u64) -> Sample {
        Sample {
            requests,
            errors,
            mean_latency: Duration::from_millis(ms),
        }
    }

    #[test]
    fn grows_additively_while_healthy_and_people_wait() {
        let c = cfg();
        let mut a = Aimd::new(&c, 600);
        assert_eq!(a.step(&c, sample(100, 0, 50), true), Some(Reason::Healthy));
        assert_eq!(a.rate, 660);
        assert_eq!(
            a.step(&c, sample(100, 0, 50), false),
            None,
            "nobody waits: no need to grow"
        );
        for _ in 0..20 {
            a.step(&c, sample(100, 0, 50), true);
        }
        assert_eq!(a.rate, 1200, "never above the ceiling");
    }

    #[test]
    fn cuts_multiplicatively_on_errors_or_latency_down_to_the_floor() {
        let c = cfg();
        let mut a = Aimd::new(&c, 1000);
        assert_eq!(a.step(&c, sample(100, 6, 50), true), Some(Reason::Errors));
        assert_eq!(a.rate, 500);
        assert_eq!(
            a.step(&c, sample(100, 5, 250), true),
            Some(Reason::Latency),
            "5% is allowed; slow is not"
        );
        assert_eq!(a.rate, 250);
        for _ in 0..10 {
            a.step(&c, sample(10, 10, 900), true);
        }
        assert_eq!(a.rate, 60, "never below the floor");
        assert_eq!(
            a.step(&c, sample(0, 0, 0), true),
            None,
            "no traffic, no change"
        );
    }
}
