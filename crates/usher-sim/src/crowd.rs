//! The crowd: every visitor's arrival, patience, returns and habits, drawn
//! once from the scenario's seed. The protected and unprotected runs meet
//! exactly the same crowd, so their difference is usher's doing alone.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::scenario::{Patience, Scenario, MAX_RETURNS};

/// Visits a visitor can make: the first and the returns.
pub const MAX_VISITS: usize = MAX_RETURNS as usize + 1;

/// One visitor's plan (simulated seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct VisitorPlan {
    /// Index in arrival order.
    pub id: u32,
    /// First arrival, from the opening.
    pub arrival: f64,
    /// Visits made at most (1 + returns).
    pub visits: u8,
    /// Patience on each visit.
    pub patience: [f32; MAX_VISITS],
    /// Time away before each return (index 0 unused).
    pub away: [f32; MAX_VISITS],
    /// Pages browsed once admitted.
    pub pages: u32,
    /// Finishes with a checkout (frees the slot).
    pub checkout: bool,
    /// Seed for this visitor's small random choices (poll jitter, think time).
    pub seed: u64,
}

/// A standard normal draw (Box-Muller).
fn normal(rng: &mut SmallRng) -> f64 {
    let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
    let u2: f64 = rng.random();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// An exponential draw with this mean.
pub fn exponential(rng: &mut SmallRng, mean: f64) -> f64 {
    let u: f64 = rng.random();
    -mean * (1.0 - u).ln()
}

/// A patience draw.
pub fn patience(rng: &mut SmallRng, p: &Patience) -> f64 {
    match *p {
        Patience::Lognormal {
            median_seconds,
            sigma,
        } => median_seconds * (sigma * normal(rng)).exp(),
        Patience::Exponential { mean_seconds } => exponential(rng, mean_seconds),
    }
}

/// Arrival times, sorted: the spike share uniform over the spike, the rest
/// over the tail with a rate falling linearly to zero.
pub fn arrivals(s: &Scenario, rng: &mut SmallRng) -> Vec<f64> {
    let n = s.visitors as usize;
    let spike = ((n as f64) * s.arrivals.spike_share).round() as usize;
    let (sp, tail) = (s.arrivals.spike_seconds, s.arrivals.tail_seconds);
    let mut out: Vec<f64> = (0..n)
        .map(|i| {
            let u: f64 = rng.random();
            if i < spike {
                u * sp
            } else {
                // Inverse of the CDF of a density falling linearly over the tail.
                sp + tail * (1.0 - (1.0 - u).sqrt())
            }
        })
        .collect();
    out.sort_by(f64::total_cmp);
    out
}

/// Draws the whole crowd.
pub fn crowd(s: &Scenario) -> Vec<VisitorPlan> {
    let mut rng = SmallRng::seed_from_u64(s.seed);
    let times = arrivals(s, &mut rng);
    let c = &s.comeback;
    times
        .into_iter()
        .enumerate()
        .map(|(i, arrival)| {
            let mut visits = 1u8;
            while u32::from(visits) <= c.max_returns.min(MAX_RETURNS)
                && rng.random_bool(c.probability.clamp(0.0, 1.0))
            {
                visits += 1;
            }
            let mut p = [0f32; MAX_VISITS];
            let mut away = [0f32; MAX_VISITS];
            for k in 0..MAX_VISITS {
                p[k] = patience(&mut rng, &s.patience) as f32;
                away[k] = if k == 0 {
                    0.0
                } else {
                    exponential(&mut rng, c.after_seconds) as f32
                };
            }
            VisitorPlan {
                id: i as u32,
                arrival,
                visits,
                patience: p,
                away,
                pages: s.browse.pages,
                checkout: rng.random_bool(s.browse.checkout_share.clamp(0.0, 1.0)),
                seed: rng.random(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario() -> Scenario {
        let text = r#"
name = "t"
visitors = 20000
time_scale = 10
time_limit_seconds = 600
[arrivals]
spike_share = 0.6
spike_seconds = 60
tail_seconds = 600
[patience]
distribution = "lognormal"
median_seconds = 300
sigma = 0.8
[return]
probability = 0.3
after_seconds = 100
max_returns = 2
[origin]
capacity = 8
latency_ms = 100
vouchers = 50
[usher]
max_active_users = 10
new_users_per_minute = 60
session_seconds = 120
refresh_seconds = 10
ticket_grace_seconds = 200
claim_window_seconds = 60
"#;
        Scenario::parse(text, "t").unwrap()
    }

    #[test]
    fn spike_then_tail() {
        let s = scenario();
        let c = crowd(&s);
        assert_eq!(c.len(), 20_000);
        assert!(c.windows(2).all(|w| w[0].arrival <= w[1].arrival));
        let in_spike = c.iter().filter(|v| v.arrival <= 60.0).count();
        assert!((11_500..12_600).contains(&in_spike), "{in_spike}");
        // The tail thins out: its first half holds about three quarters.
        let early_tail = c
            .iter()
            .filter(|v| v.arrival > 60.0 && v.arrival <= 360.0)
            .count();
        let ratio = early_tail as f64 / (20_000 - in_spike) as f64;
        assert!((0.72..0.78).contains(&ratio), "{ratio}");
        assert!(c.iter().all(|v| v.arrival <= 660.0));
    }

    #[test]
    fn patience_median_and_returns() {
        let s = scenario();
        let c = crowd(&s);
        let mut p: Vec<f32> = c.iter().map(|v| v.patience[0]).collect();
        p.sort_by(f32::total_cmp);
        let median = p[p.len() / 2];
        assert!((280.0..320.0).contains(&median), "{median}");
        let returning = c.iter().filter(|v| v.visits > 1).count() as f64 / c.len() as f64;
        assert!((0.28..0.32).contains(&returning), "{returning}");
        assert!(c.iter().all(|v| v.visits <= 3));
    }

    #[test]
    fn same_seed_same_crowd() {
        let s = scenario();
        assert_eq!(crowd(&s), crowd(&s));
        let mut other = s.clone();
        other.seed += 1;
        assert_ne!(crowd(&s)[0], crowd(&other)[0]);
    }
}
