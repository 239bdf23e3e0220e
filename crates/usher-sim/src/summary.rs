//! The numbers that matter from one run, and the JSON summary of a whole
//! report (both runs side by side).

use std::collections::HashSet;

use serde::Serialize;

use super::fairness::{fairness, spread, waits, waits_of, Fairness, Spread};
use super::sampler::{Sample, Sampler};
use super::scenario::Scenario;
use super::stats::Outcome;
use super::visitor::Record;
use super::Mode;

/// Final outcomes, by kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Outcomes {
    /// Got a voucher.
    pub voucher: u64,
    /// Got in, and the voucher claim answered sold out.
    pub sold_out: u64,
    /// Told sold out by usher while waiting (status JSON or
    /// `X-Usher-State: sold_out`), and left.
    pub told_sold_out: u64,
    /// Got in and browsed (no voucher step or unreadable answer).
    pub browsed: u64,
    /// Still on the site at the time limit.
    pub unfinished: u64,
    /// Still waiting at the time limit (including visitors stopped mid-request).
    pub waiting: u64,
    /// Gave up waiting in line.
    pub gave_up: u64,
    /// Gave up after errors.
    pub failed: u64,
    /// Never arrived before the time limit.
    pub not_arrived: u64,
}

/// The origin, seen from the theater's own counters and the visitors.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct OriginSummary {
    /// Requests it can serve at once.
    pub capacity: u64,
    /// Most requests it ever had at once (refused ones included).
    pub max_in_flight_seen: Option<f64>,
    /// Requests it refused with 503.
    pub rejected_503: Option<f64>,
    /// Requests it served.
    pub served: Option<f64>,
    /// How busy it was while people waited for something still there: the
    /// mean of in flight / capacity (each second at most 1) over the
    /// seconds with a line (`usher_queue_length` > 0) and, with the voucher
    /// step on, stock left (codes received < stock); `None` without such
    /// seconds (and without usher, which has no line).
    pub busy_share_while_waiting: Option<f64>,
    /// Site latency seen by visitors, simulated ms.
    pub latency_p50_ms: Option<f64>,
    /// 95th percentile.
    pub latency_p95_ms: Option<f64>,
    /// 99th percentile.
    pub latency_p99_ms: Option<f64>,
}

/// usher's side of a protected run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsherSummary {
    /// usher processes (nodes sharing one Redis when more than one); CPU
    /// and memory below are summed over them and that Redis.
    pub nodes: usize,
    /// 5xx answers usher made itself (not relayed from the origin).
    pub own_5xx: f64,
    /// Longest line seen.
    pub max_queue_length: f64,
    /// Most active users seen.
    pub max_active_users: f64,
    /// The configured cap (null: the closed-loop gate's limit alone).
    pub max_active_users_allowed: Option<f64>,
    /// Visitors admitted.
    pub admitted_total: f64,
    /// Target admissions per simulated minute (null: no fixed rate, the
    /// closed-loop gate).
    pub target_per_minute: Option<f64>,
    /// Mean CPU over the run, percent of one core.
    pub cpu_mean_percent: f64,
    /// Highest one-second CPU, percent of one core.
    pub cpu_peak_percent: f64,
    /// Highest resident memory, MiB.
    pub rss_peak_mib: f64,
    /// 95th percentile of usher's own answers, simulated ms (status long
    /// polls, held on purpose, excepted).
    pub holding_p95_ms: Option<f64>,
}

/// Vouchers handed out, and whether any went twice.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Vouchers {
    /// Stock the origin started with.
    pub stock: u64,
    /// Codes visitors received.
    pub issued: u64,
    /// Distinct codes.
    pub unique: u64,
    /// Codes received by more than one visitor.
    pub duplicates: u64,
    /// When the last code was received, simulated seconds from the
    /// opening; `None` when none was.
    pub last_issued_seconds: Option<f64>,
}

/// How hard the simulator itself worked (to tell its limits from usher's).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Harness {
    /// Highest requests per real second.
    pub peak_requests_per_second: f64,
    /// Mean requests per real second.
    pub mean_requests_per_second: f64,
    /// 99th percentile of arrival lag behind plan, real ms.
    pub arrival_lag_p99_ms: Option<f64>,
    /// 99th percentile of waiting for a client connection, real ms.
    pub connection_wait_p99_ms: Option<f64>,
    /// Mean CPU of the simulator, percent of one core.
    pub sim_cpu_mean_percent: f64,
}

/// One run's numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSummary {
    /// `protected` or `unprotected`.
    pub mode: String,
    /// Visitors in the scenario.
    pub visitors: u64,
    /// Visitors who arrived.
    pub arrived: u64,
    /// Returns after giving up.
    pub returned: u64,
    /// Visitors who reached the site.
    pub admitted: u64,
    /// Simulated seconds the run covered.
    pub sim_seconds: f64,
    /// Real seconds it took.
    pub real_seconds: f64,
    /// Whether the time limit ended it.
    pub hit_time_limit: bool,
    /// Whether Ctrl-C ended it.
    pub interrupted: bool,
    /// Outcomes.
    pub outcomes: Outcomes,
    /// Errors visitors met: 5xx and 429 answers, timeouts, broken connections.
    pub errors_seen: u64,
    /// 429 (Too Many Requests) answers visitors met, all of them (also
    /// counted in `errors_seen`, for the visitors who finished).
    pub errors_429: u64,
    /// Visitors who met at least one error.
    pub visitors_with_errors: u64,
    /// Holding pages met by visitors already admitted (sent back to the line).
    pub requeued_after_admission: u64,
    /// The origin.
    pub origin: OriginSummary,
    /// usher (protected runs).
    pub usher: Option<UsherSummary>,
    /// Waits of admitted visitors, simulated seconds.
    pub wait_seconds: Spread,
    /// Waits of the visitors who got a voucher (same definition).
    pub wait_seconds_voucher: Spread,
    /// Time waited before giving up, simulated seconds.
    pub gave_up_after_seconds: Spread,
    /// Fairness.
    pub fairness: Fairness,
    /// Vouchers.
    pub vouchers: Vouchers,
    /// The simulator's own load.
    pub harness: Harness,
}

/// Inputs to [`summarize`] besides the records.
pub struct RunFacts<'a> {
    /// The scenario.
    pub scenario: &'a Scenario,
    /// With or without usher.
    pub mode: Mode,
    /// Visitors who never arrived.
    pub not_arrived: u64,
    /// Visitors spawned whose task was cut off at the end.
    pub cut_off: u64,
    /// Real seconds.
    pub real_seconds: f64,
    /// Holding pages met after admission.
    pub requeued: u64,
    /// Stopped by the time limit.
    pub hit_time_limit: bool,
    /// Stopped by Ctrl-C.
    pub interrupted: bool,
    /// Fairness slack, simulated seconds.
    pub slack: f64,
    /// Arrival lag p99 (real ms) and connection wait p99 (real ms).
    pub lags: (Option<f64>, Option<f64>),
}

fn max_of(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    samples.iter().filter_map(f).reduce(f64::max)
}

fn last_of(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    samples.iter().rev().find_map(f)
}

fn mean_of(samples: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> f64 {
    let v: Vec<f64> = samples.iter().filter_map(f).collect();
    if v.is_empty() {
        0.0
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

/// The mean of origin in flight / `capacity` (each second at most 1) over
/// the samples with a line and, given a `stock`, fewer codes received than
/// it: how well usher used the origin while people waited for something
/// still there. `None` when no second qualifies.
pub fn busy_share_while_waiting(
    samples: &[Sample],
    capacity: u64,
    stock: Option<u64>,
) -> Option<f64> {
    let shares: Vec<f64> = samples
        .iter()
        .filter(|x| x.queue_length.is_some_and(|q| q > 0.0))
        .filter(|x| stock.is_none_or(|s| x.vouchers_issued < s))
        .filter_map(|x| x.origin_in_flight)
        .map(|f| (f / capacity.max(1) as f64).clamp(0.0, 1.0))
        .collect();
    (!shares.is_empty()).then(|| shares.iter().sum::<f64>() / shares.len() as f64)
}

/// The codes visitors received, checked for duplicates, and when the
/// last one came.
pub fn vouchers(records: &[Record], stock: u64) -> Vouchers {
    let mut codes = HashSet::new();
    let mut v = Vouchers {
        stock,
        ..Vouchers::default()
    };
    for c in records.iter().filter_map(|r| r.voucher.as_deref()) {
        v.issued += 1;
        if !codes.insert(c) {
            v.duplicates += 1;
        }
    }
    v.unique = codes.len() as u64;
    v.last_issued_seconds = records.iter().filter_map(|r| r.voucher_at).reduce(f64::max);
    v
}

/// Computes one run's summary.
pub fn summarize(facts: &RunFacts, records: &[Record], sampler: &Sampler) -> RunSummary {
    let s = facts.scenario;
    let samples = &sampler.samples;
    let mut o = Outcomes {
        not_arrived: facts.not_arrived,
        waiting: facts.cut_off,
        ..Outcomes::default()
    };
    for r in records {
        match r.outcome {
            Outcome::Voucher => o.voucher += 1,
            Outcome::SoldOut => o.sold_out += 1,
            Outcome::ToldSoldOut => o.told_sold_out += 1,
            Outcome::Browsed => o.browsed += 1,
            Outcome::Unfinished => o.unfinished += 1,
            Outcome::Waiting => o.waiting += 1,
            Outcome::GaveUp => o.gave_up += 1,
            Outcome::Failed => o.failed += 1,
        }
    }
    let ms = |q| {
        sampler
            .site_total
            .quantile_us(q)
            .map(|us| us / 1000.0 * s.time_scale)
    };
    let usher = (facts.mode == Mode::Protected).then(|| UsherSummary {
        nodes: s.usher.nodes,
        own_5xx: last_of(samples, |x| x.usher_5xx_total).unwrap_or(0.0),
        max_queue_length: max_of(samples, |x| x.queue_length).unwrap_or(0.0),
        max_active_users: max_of(samples, |x| x.active_users).unwrap_or(0.0),
        max_active_users_allowed: s.usher.max_active_users.map(|n| n as f64),
        admitted_total: last_of(samples, |x| x.admitted_total).unwrap_or(0.0),
        target_per_minute: s.usher.new_users_per_minute,
        cpu_mean_percent: sampler.usher_cpu_seconds / facts.real_seconds.max(1e-3) * 100.0,
        cpu_peak_percent: max_of(samples, |x| x.usher_cpu).unwrap_or(0.0),
        rss_peak_mib: sampler.usher_peak_rss as f64 / (1024.0 * 1024.0),
        holding_p95_ms: sampler
            .usher_total
            .quantile_us(0.95)
            .map(|us| us / 1000.0 * s.time_scale),
    });
    let last = samples.last();
    RunSummary {
        mode: facts.mode.as_str().into(),
        visitors: s.visitors,
        arrived: last.map_or(0, |x| x.arrived),
        returned: last.map_or(0, |x| x.returned),
        admitted: records.iter().filter(|r| r.admitted_at.is_some()).count() as u64,
        sim_seconds: last.map_or(0.0, |x| x.t),
        real_seconds: facts.real_seconds,
        hit_time_limit: facts.hit_time_limit,
        interrupted: facts.interrupted,
        outcomes: o,
        errors_seen: records.iter().map(|r| u64::from(r.errors)).sum(),
        errors_429: samples.iter().map(|x| x.rejected_429).sum(),
        visitors_with_errors: records.iter().filter(|r| r.errors > 0).count() as u64,
        requeued_after_admission: facts.requeued,
        origin: OriginSummary {
            capacity: s.origin.capacity,
            max_in_flight_seen: last_of(samples, |x| x.origin_max_seen),
            rejected_503: last_of(samples, |x| x.origin_503_total),
            served: last_of(samples, |x| x.origin_served_total),
            busy_share_while_waiting: busy_share_while_waiting(
                samples,
                s.origin.capacity,
                s.voucher.enabled.then_some(s.origin.vouchers),
            ),
            latency_p50_ms: ms(0.5),
            latency_p95_ms: ms(0.95),
            latency_p99_ms: ms(0.99),
        },
        usher,
        wait_seconds: spread(waits(records)),
        wait_seconds_voucher: spread(waits_of(records, |r| r.voucher.is_some())),
        gave_up_after_seconds: spread(
            records
                .iter()
                .filter(|r| r.outcome == Outcome::GaveUp || r.outcome == Outcome::Failed)
                .filter_map(|r| r.left_after)
                .collect(),
        ),
        fairness: fairness(records, facts.slack),
        vouchers: vouchers(records, s.origin.vouchers),
        harness: Harness {
            peak_requests_per_second: max_of(samples, |x| Some(x.requests_per_second))
                .unwrap_or(0.0),
            mean_requests_per_second: mean_of(samples, |x| Some(x.requests_per_second)),
            arrival_lag_p99_ms: facts.lags.0,
            connection_wait_p99_ms: facts.lags.1,
            sim_cpu_mean_percent: mean_of(samples, |x| x.sim_cpu),
        },
    }
}

/// The JSON summary of a report.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Scenario name.
    pub scenario: String,
    /// Scenario file as given.
    pub scenario_file: String,
    /// Simulated seconds per real second.
    pub time_scale: f64,
    /// When the report was made (unix seconds).
    pub generated_unix: u64,
    /// CPUs on the machine.
    pub cpus: usize,
    /// The run through usher.
    pub protected: Option<RunSummary>,
    /// The run straight at the origin.
    pub unprotected: Option<RunSummary>,
    /// Notes on how the run was made (compression, clamped settings).
    pub notes: Vec<String>,
}

#[cfg(test)]
mod tests;
