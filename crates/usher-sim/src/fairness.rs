//! Fairness and waiting: was the crowd let in in the order it came, and
//! how long did people wait. Everything here is O(n log n) so it stays
//! quick for a million visitors.

use serde::Serialize;

use super::visitor::Record;

/// How well admission order followed arrival order.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Fairness {
    /// Visitors compared (admitted without leaving since taking their place).
    pub compared: u64,
    /// Visitors let in later than someone who arrived after them, by more
    /// than the slack.
    pub overtaken: u64,
    /// `overtaken / compared`.
    pub overtaken_share: f64,
    /// Pairs (earlier arrival, later arrival) admitted the other way round
    /// by more than the slack.
    pub inverted_pairs: u64,
    /// `inverted_pairs` over all pairs compared.
    pub inverted_pair_share: f64,
    /// Slack allowed: one polling interval (simulated seconds).
    pub slack_seconds: f64,
    /// Patient visitors (admitted without leaving since taking their place
    /// in line) compared by ticket number.
    pub ticket_compared: u64,
    /// Patient visitors let in more than the slack before someone holding
    /// an earlier ticket.
    pub ticket_order_violations: u64,
}

/// Counts `values[..]` in a Fenwick tree over ranks.
struct Fenwick(Vec<u64>);

impl Fenwick {
    fn add(&mut self, mut i: usize) {
        i += 1;
        while i < self.0.len() {
            self.0[i] += 1;
            i += i & i.wrapping_neg();
        }
    }
    /// Values added with rank < `i`.
    fn below(&self, mut i: usize) -> u64 {
        let mut s = 0;
        while i > 0 {
            s += self.0[i];
            i -= i & i.wrapping_neg();
        }
        s
    }
}

/// Measures fairness with `slack` simulated seconds over the visitors
/// admitted without leaving since they took their place: someone who left
/// and came back was not there to be let in, so their order says nothing.
pub fn fairness(records: &[Record], slack: f64) -> Fairness {
    let mut adm: Vec<(f64, f64)> = records
        .iter()
        .filter(|r| r.continuous)
        .filter_map(|r| r.admitted_at.map(|a| (r.entry, a)))
        .collect();
    adm.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = adm.len();
    // Overtaken: the earliest admission among later arrivals beats mine by more than the slack.
    let mut overtaken = 0u64;
    let mut min_later = f64::INFINITY;
    for &(_, a) in adm.iter().rev() {
        if min_later + slack < a {
            overtaken += 1;
        }
        min_later = min_later.min(a);
    }
    // Inverted pairs: for each visitor, earlier arrivals admitted more than the slack after them.
    let mut sorted: Vec<f64> = adm.iter().map(|x| x.1).collect();
    sorted.sort_by(f64::total_cmp);
    let rank = |v: f64| sorted.partition_point(|x| *x < v);
    let mut tree = Fenwick(vec![0; n + 1]);
    let mut inverted = 0u64;
    for (seen, &(_, a)) in adm.iter().enumerate() {
        let not_later = tree.below(sorted.partition_point(|x| *x <= a + slack));
        inverted += seen as u64 - not_later;
        tree.add(rank(a));
    }
    let pairs = (n as u64).saturating_mul(n.saturating_sub(1) as u64) / 2;
    // Ticket order among patient visitors.
    let mut patient: Vec<(u64, f64)> = records
        .iter()
        .filter(|r| r.continuous)
        .filter_map(|r| Some((r.ticket?, r.admitted_at?)))
        .collect();
    patient.sort_by_key(|p| p.0);
    let mut latest_earlier = f64::NEG_INFINITY;
    let mut violations = 0u64;
    for &(_, a) in &patient {
        if a + slack < latest_earlier {
            violations += 1;
        }
        latest_earlier = latest_earlier.max(a);
    }
    Fairness {
        compared: n as u64,
        overtaken,
        overtaken_share: ratio(overtaken, n as u64),
        inverted_pairs: inverted,
        inverted_pair_share: ratio(inverted, pairs),
        slack_seconds: slack,
        ticket_compared: patient.len() as u64,
        ticket_order_violations: violations,
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Percentiles of a set of simulated durations.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Spread {
    /// How many.
    pub count: u64,
    /// Median.
    pub p50: Option<f64>,
    /// 90th percentile.
    pub p90: Option<f64>,
    /// 99th percentile.
    pub p99: Option<f64>,
    /// Largest.
    pub max: Option<f64>,
}

/// Percentiles of `values` (sorted here).
pub fn spread(mut values: Vec<f64>) -> Spread {
    values.sort_by(f64::total_cmp);
    let q = |p: f64| {
        let i = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len().max(1)) - 1;
        values.get(i).copied()
    };
    Spread {
        count: values.len() as u64,
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        max: values.last().copied(),
    }
}

/// Waits of admitted visitors (entry to admission), simulated seconds.
pub fn waits(records: &[Record]) -> Vec<f64> {
    waits_of(records, |_| true)
}

/// Waits of the admitted visitors that pass `keep`.
pub fn waits_of(records: &[Record], keep: impl Fn(&Record) -> bool) -> Vec<f64> {
    records
        .iter()
        .filter(|r| keep(r))
        .filter_map(|r| r.admitted_at.map(|a| (a - r.entry).max(0.0)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Outcome;

    fn rec(entry: f64, admitted: Option<f64>, ticket: Option<u64>) -> Record {
        Record {
            id: 0,
            arrival: entry,
            entry,
            admitted_at: admitted,
            ticket,
            continuous: admitted.is_some(),
            outcome: Outcome::Browsed,
            visits: 1,
            errors: 0,
            voucher: None,
            voucher_at: None,
            first_eta: None,
            left_after: None,
        }
    }

    #[test]
    fn in_order_is_fair() {
        let r: Vec<Record> = (0..100)
            .map(|i| rec(i as f64, Some(100.0 + i as f64), Some(i)))
            .collect();
        let f = fairness(&r, 1.0);
        assert_eq!((f.compared, f.overtaken, f.inverted_pairs), (100, 0, 0));
        assert_eq!(f.ticket_order_violations, 0);
        assert_eq!(f.ticket_compared, 100);
    }

    #[test]
    fn reversed_is_unfair_and_slack_forgives_small_swaps() {
        let r: Vec<Record> = (0..10)
            .map(|i| rec(i as f64, Some(100.0 - 10.0 * i as f64), Some(i)))
            .collect();
        let f = fairness(&r, 1.0);
        assert_eq!(f.overtaken, 9, "all but the last arrival were overtaken");
        assert_eq!(f.inverted_pairs, 45);
        assert_eq!(f.inverted_pair_share, 1.0);
        assert_eq!(f.ticket_order_violations, 9);
        // Swaps within the slack do not count.
        let close: Vec<Record> = (0..10)
            .map(|i| rec(i as f64, Some(100.0 - 0.1 * i as f64), Some(i)))
            .collect();
        let f = fairness(&close, 1.0);
        assert_eq!(
            (f.overtaken, f.inverted_pairs, f.ticket_order_violations),
            (0, 0, 0)
        );
    }

    #[test]
    fn one_jump_counts_once_per_pair() {
        // Visitor 4 (last to arrive) gets in first; everyone else in order.
        let mut r: Vec<Record> = (0..4)
            .map(|i| rec(i as f64, Some(50.0 + i as f64), Some(i)))
            .collect();
        r.push(rec(4.0, Some(10.0), Some(4)));
        r.push(rec(5.0, None, None));
        let f = fairness(&r, 1.0);
        assert_eq!(f.compared, 5);
        assert_eq!(f.overtaken, 4);
        assert_eq!(f.inverted_pairs, 4);
        assert_eq!(f.ticket_order_violations, 1);
    }

    #[test]
    fn spread_of_waits() {
        let s = spread((1..=100).map(f64::from).collect());
        assert_eq!(
            (s.count, s.p50, s.p90, s.max),
            (100, Some(50.0), Some(90.0), Some(100.0))
        );
        assert_eq!(spread(Vec::new()).p50, None);
        let mut lucky = rec(5.0, Some(20.0), None);
        lucky.voucher = Some("V-1".into());
        let r = [rec(10.0, Some(70.0), None), rec(0.0, None, None), lucky];
        assert_eq!(waits(&r), vec![60.0, 15.0]);
        assert_eq!(waits_of(&r, |x| x.voucher.is_some()), vec![15.0]);
    }
}
