//! Live counters the visitors bump and the sampler reads every second:
//! plain atomics and fixed-size log histograms, so 100,000 visitors share
//! them without locks and memory stays constant however long the run.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Buckets: exact below 8 µs, then 8 per power of two up to 2^41 µs.
const BUCKETS: usize = 8 + 38 * 8;

/// A histogram of durations in microseconds, relative error under 12.5 %.
pub struct LogHistogram {
    counts: Box<[AtomicU64]>,
}

impl Default for LogHistogram {
    fn default() -> Self {
        LogHistogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn index(us: u64) -> usize {
    let v = us.min((1 << 41) - 1);
    if v < 8 {
        return v as usize;
    }
    let e = 63 - v.leading_zeros() as usize;
    let sub = ((v >> (e - 3)) & 7) as usize;
    8 + (e - 3) * 8 + sub
}

/// The middle of bucket `i`, in microseconds.
fn middle(i: usize) -> f64 {
    if i < 8 {
        return i as f64;
    }
    let e = (i - 8) / 8 + 3;
    let sub = ((i - 8) % 8) as u64;
    let low = (8 + sub) << (e - 3);
    let high = (9 + sub) << (e - 3);
    (low + high) as f64 / 2.0
}

impl LogHistogram {
    /// Counts one duration.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.counts[index(us)].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes the counts and starts again from zero.
    pub fn take(&self) -> Counts {
        Counts(
            self.counts
                .iter()
                .map(|c| c.swap(0, Ordering::Relaxed))
                .collect(),
        )
    }
}

/// A histogram's counts, taken out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Counts(Vec<u64>);

impl Counts {
    /// Values counted.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Adds another snapshot.
    pub fn merge(&mut self, other: &Counts) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a += b;
        }
    }

    /// The `q` quantile (0 to 1) in microseconds, `None` when empty.
    pub fn quantile_us(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.0.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(middle(i));
            }
        }
        None
    }
}

/// How many kinds of [`Outcome`] there are.
pub const OUTCOMES: usize = 8;

/// What finally happened to a visitor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Got in and got a voucher code.
    Voucher,
    /// Got in; the voucher claim answered sold out.
    SoldOut,
    /// Told sold out by usher while waiting, and left.
    ToldSoldOut,
    /// Got in and browsed (no voucher step).
    Browsed,
    /// Left the line out of patience (and did not come back).
    GaveUp,
    /// Left after errors (error pages, timeouts, refused connections).
    Failed,
    /// Still in line, or away meaning to return, at the time limit.
    Waiting,
    /// Admitted, still on the site at the time limit.
    Unfinished,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; OUTCOMES] = [
        Outcome::Voucher,
        Outcome::SoldOut,
        Outcome::ToldSoldOut,
        Outcome::Browsed,
        Outcome::Unfinished,
        Outcome::Waiting,
        Outcome::GaveUp,
        Outcome::Failed,
    ];

    /// Index into [`Outcome::ALL`].
    pub fn index(self) -> usize {
        Outcome::ALL.iter().position(|o| *o == self).unwrap_or(0)
    }

    /// A label for people.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Voucher => "got a voucher",
            Outcome::SoldOut => "in, sold out",
            Outcome::ToldSoldOut => "told sold out",
            Outcome::Browsed => "in, browsed",
            Outcome::GaveUp => "gave up waiting",
            Outcome::Failed => "gave up on errors",
            Outcome::Waiting => "still waiting",
            Outcome::Unfinished => "still on the site",
        }
    }
}

/// Counters shared by every visitor of one run.
#[derive(Default)]
pub struct Live {
    /// Visitors who arrived (first visit).
    pub arrived: AtomicU64,
    /// Returns after giving up.
    pub returned: AtomicU64,
    /// Visitors who reached the site (admitted).
    pub admitted: AtomicU64,
    /// In line (protected) or reloading error pages (unprotected).
    pub waiting: AtomicI64,
    /// Away, meaning to return.
    pub away: AtomicI64,
    /// On the site.
    pub browsing: AtomicI64,
    /// Final outcomes.
    pub outcomes: [AtomicU64; OUTCOMES],
    /// Answers from the site (through usher or not).
    pub site_answers: AtomicU64,
    /// 5xx answers on the site path.
    pub site_5xx: AtomicU64,
    /// 429 answers (usher's per-pass limit; the per-address limits hold
    /// or challenge instead).
    pub rejected_429: AtomicU64,
    /// Requests with no answer in time.
    pub timeouts: AtomicU64,
    /// Connections refused or broken.
    pub conn_errors: AtomicU64,
    /// usher's own answers (holding page, status JSON).
    pub usher_answers: AtomicU64,
    /// Voucher codes received.
    pub vouchers: AtomicU64,
    /// usher holding pages met by visitors already on the site.
    pub requeued: AtomicU64,
    /// Latency of answers from the site.
    pub site_latency: LogHistogram,
    /// Latency of usher's own answers (long polls, held on purpose, excepted).
    pub usher_latency: LogHistogram,
    /// How late visitors arrived versus their plan (the simulator's own lag).
    pub arrival_lag: LogHistogram,
    /// Time requests waited for one of the client's connections.
    pub connection_wait: LogHistogram,
}

impl Live {
    /// Counts a final outcome.
    pub fn finish(&self, o: Outcome) {
        self.outcomes[o.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// The outcomes so far.
    pub fn outcome_counts(&self) -> [u64; OUTCOMES] {
        std::array::from_fn(|i| self.outcomes[i].load(Ordering::Relaxed))
    }
}

/// Adds one to a gauge for as long as it lives (even if the task is aborted).
pub struct GaugeGuard<'a>(&'a AtomicI64);

impl<'a> GaugeGuard<'a> {
    /// Raises `g` until dropped.
    pub fn new(g: &'a AtomicI64) -> Self {
        g.fetch_add(1, Ordering::Relaxed);
        GaugeGuard(g)
    }
}

impl Drop for GaugeGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in [
            0u64,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1_000,
            65_000,
            1 << 30,
            u64::MAX,
        ] {
            let i = index(us);
            assert!(i >= last && i < BUCKETS, "{us}");
            last = i;
        }
        for us in [10u64, 123, 4_567, 1_000_000, 30_000_000] {
            let m = middle(index(us));
            assert!((m - us as f64).abs() / (us as f64) < 0.125, "{us} -> {m}");
        }
    }

    #[test]
    fn quantiles_and_take() {
        let h = LogHistogram::default();
        for ms in 1..=100 {
            h.record(Duration::from_millis(ms));
        }
        let c = h.take();
        assert_eq!(c.total(), 100);
        let p50 = c.quantile_us(0.5).unwrap();
        let p99 = c.quantile_us(0.99).unwrap();
        assert!((45_000.0..56_000.0).contains(&p50), "{p50}");
        assert!((90_000.0..110_000.0).contains(&p99), "{p99}");
        assert_eq!(h.take().total(), 0, "take resets");
        assert_eq!(Counts::default().quantile_us(0.5), None);
        let mut m = Counts::default();
        m.merge(&c);
        m.merge(&c);
        assert_eq!(m.total(), 200);
    }

    #[test]
    fn gauge_guard_gives_back() {
        let g = AtomicI64::new(0);
        {
            let _a = GaugeGuard::new(&g);
            let _b = GaugeGuard::new(&g);
            assert_eq!(g.load(Ordering::Relaxed), 2);
        }
        assert_eq!(g.load(Ordering::Relaxed), 0);
    }
}
