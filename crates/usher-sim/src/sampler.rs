//! Once a second: the visitors' counters, usher's `/metrics`, the theater's
//! `/api/stats`, and usher's CPU and memory from `/proc`, as one [`Sample`].
//!
//! With several usher nodes, the figures of the shared line (queue length,
//! active users, pending admissions, the configured rate and cap) are the
//! same on every node, so the first node's are read; per-process counters
//! (admissions, usher's own 5xx) are summed over all nodes, and only when
//! every node answered; CPU and memory are summed over the nodes and the
//! run's Redis: the whole protected side's cost.

use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::procs::{proc_usage, Probe, ProcUsage};
use super::stats::{Counts, OUTCOMES};
use super::visitor::RunCtx;

/// How long one probe may take; a slower answer leaves a gap in the charts.
const PROBE_TIMEOUT: Duration = Duration::from_millis(900);

/// One second of a run. Times are simulated; counts marked "in the
/// interval" are since the previous sample.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Simulated seconds since the opening.
    pub t: f64,
    /// Visitors arrived so far.
    pub arrived: u64,
    /// Returns so far.
    pub returned: u64,
    /// Visitors who reached the site so far.
    pub admitted: u64,
    /// In line (or reloading error pages).
    pub waiting: i64,
    /// Away, meaning to return.
    pub away: i64,
    /// On the site.
    pub browsing: i64,
    /// Voucher codes visitors received so far.
    pub vouchers_issued: u64,
    /// Final outcomes so far, in [`super::stats::Outcome::ALL`] order.
    pub outcomes: [u64; OUTCOMES],
    /// Site answers in the interval.
    pub site_answers: u64,
    /// 5xx site answers in the interval.
    pub site_5xx: u64,
    /// 429 answers in the interval.
    pub rejected_429: u64,
    /// Timeouts in the interval.
    pub timeouts: u64,
    /// Broken or refused connections in the interval.
    pub conn_errors: u64,
    /// Requests per real second the simulator made in the interval.
    pub requests_per_second: f64,
    /// Site latency percentiles in the interval (simulated ms).
    pub site_p50_ms: Option<f64>,
    /// 95th percentile.
    pub site_p95_ms: Option<f64>,
    /// 99th percentile.
    pub site_p99_ms: Option<f64>,
    /// usher's own answers' 95th percentile (simulated ms).
    pub usher_p95_ms: Option<f64>,
    /// `usher_queue_length`.
    pub queue_length: Option<f64>,
    /// `usher_active_users`.
    pub active_users: Option<f64>,
    /// `usher_pending_admissions`.
    pub pending: Option<f64>,
    /// `usher_admitted_total` (all ways in).
    pub admitted_total: Option<f64>,
    /// Admissions per simulated minute over the interval.
    pub admissions_per_minute: Option<f64>,
    /// `usher_room_new_users_per_minute`, in simulated minutes.
    pub target_per_minute: Option<f64>,
    /// `usher_room_max_active_users`.
    pub max_active: Option<f64>,
    /// usher's own 5xx answers so far.
    pub usher_5xx_total: Option<f64>,
    /// usher's CPU use in the interval, percent of one core.
    pub usher_cpu: Option<f64>,
    /// usher's resident memory, MiB.
    pub usher_rss_mb: Option<f64>,
    /// The simulator's own CPU use, percent of one core.
    pub sim_cpu: Option<f64>,
    /// Theater requests in flight.
    pub origin_in_flight: Option<f64>,
    /// Theater's highest in-flight count so far.
    pub origin_max_seen: Option<f64>,
    /// Theater's 503 answers so far.
    pub origin_503_total: Option<f64>,
    /// Theater's served requests so far.
    pub origin_served_total: Option<f64>,
}

/// Sums the samples of metric `name` whose labels pass `keep`
/// (Prometheus text format); `None` when the metric is absent.
pub fn metric_sum(text: &str, name: &str, keep: impl Fn(&str) -> bool) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            match r.split_once('}') {
                Some((l, v)) => (l, v),
                None => continue,
            }
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue;
        };
        if !keep(labels) {
            continue;
        }
        if let Some(v) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        {
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

/// The sampler of one run.
pub struct Sampler {
    probe: Probe,
    theater: SocketAddr,
    usher_admins: Vec<SocketAddr>,
    usher_pids: Vec<u32>,
    last: Instant,
    last_usher: Vec<Option<ProcUsage>>,
    last_self: Option<ProcUsage>,
    last_requests: u64,
    last_admitted: Option<f64>,
    /// Every sample so far.
    pub samples: Vec<Sample>,
    /// Site latency over the whole run.
    pub site_total: Counts,
    /// usher's own answers' latency over the whole run.
    pub usher_total: Counts,
    /// Highest usher RSS seen (summed over nodes and Redis), bytes.
    pub usher_peak_rss: u64,
    /// usher CPU seconds used over the run (nodes and Redis).
    pub usher_cpu_seconds: f64,
}

impl Sampler {
    /// A sampler for the theater at `theater`, usher's admin listeners
    /// (one per node; none without usher) and the pids whose CPU and memory
    /// count as usher's (the nodes, and Redis when there is one).
    pub fn new(
        theater: SocketAddr,
        usher_admins: Vec<SocketAddr>,
        usher_pids: Vec<u32>,
    ) -> Sampler {
        Sampler {
            probe: Probe::default(),
            theater,
            last_usher: usher_pids.iter().map(|&p| proc_usage(p)).collect(),
            usher_admins,
            usher_pids,
            last: Instant::now(),
            last_self: proc_usage(std::process::id()),
            last_requests: 0,
            last_admitted: None,
            samples: Vec::new(),
            site_total: Counts::default(),
            usher_total: Counts::default(),
            usher_peak_rss: 0,
            usher_cpu_seconds: 0.0,
        }
    }

    /// Takes one sample.
    pub async fn sample(&mut self, ctx: &RunCtx) {
        let metrics = futures_util::future::join_all(
            self.usher_admins
                .iter()
                .map(|&a| self.probe.get(a, "/metrics", PROBE_TIMEOUT)),
        );
        let stats = self.probe.get(self.theater, "/api/stats", PROBE_TIMEOUT);
        let (metrics, stats) = tokio::join!(metrics, stats);
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64().max(1e-3);
        self.last = now;
        let scale = ctx.scenario.time_scale;
        let l = &ctx.live;
        let site = l.site_latency.take();
        let usher = l.usher_latency.take();
        self.site_total.merge(&site);
        self.usher_total.merge(&usher);
        let sim_ms = |c: &Counts, q| c.quantile_us(q).map(|us| us / 1000.0 * scale);
        let site_answers = l.site_answers.swap(0, Relaxed);
        let usher_answers = l.usher_answers.swap(0, Relaxed);
        let (timeouts, conn_errors) = (l.timeouts.swap(0, Relaxed), l.conn_errors.swap(0, Relaxed));
        let rejected_429 = l.rejected_429.swap(0, Relaxed);
        let requests = site_answers + usher_answers + rejected_429 + timeouts + conn_errors;
        self.last_requests = requests;
        let mut s = Sample {
            t: ctx.now(),
            arrived: l.arrived.load(Relaxed),
            returned: l.returned.load(Relaxed),
            admitted: l.admitted.load(Relaxed),
            waiting: l.waiting.load(Relaxed),
            away: l.away.load(Relaxed),
            browsing: l.browsing.load(Relaxed),
            vouchers_issued: l.vouchers.load(Relaxed),
            outcomes: l.outcome_counts(),
            site_answers,
            site_5xx: l.site_5xx.swap(0, Relaxed),
            rejected_429,
            timeouts,
            conn_errors,
            requests_per_second: requests as f64 / dt,
            site_p50_ms: sim_ms(&site, 0.5),
            site_p95_ms: sim_ms(&site, 0.95),
            site_p99_ms: sim_ms(&site, 0.99),
            usher_p95_ms: sim_ms(&usher, 0.95),
            ..Sample::default()
        };
        let texts: Vec<Option<&str>> = metrics
            .iter()
            .map(|m| match m {
                Some((200, text)) => Some(text.as_str()),
                _ => None,
            })
            .collect();
        self.read_usher(&mut s, &texts, dt, scale);
        if let Some((200, text)) = &stats {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(text) {
                let f = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
                s.origin_in_flight = f("in_flight");
                s.origin_max_seen = f("max_in_flight_seen");
                s.origin_503_total = f("rejected_503");
                s.origin_served_total = f("served");
            }
        }
        self.read_usher_usage(&mut s, dt);
        if let Some(u) = proc_usage(std::process::id()) {
            if let Some(prev) = self.last_self {
                s.sim_cpu = Some((u.cpu_seconds - prev.cpu_seconds).max(0.0) / dt * 100.0);
            }
            self.last_self = Some(u);
        }
        self.samples.push(s);
    }

    /// usher's figures from the nodes' `/metrics` texts (`None`: no answer):
    /// the shared line's from the first node, counters summed over all.
    fn read_usher(&mut self, s: &mut Sample, texts: &[Option<&str>], dt: f64, scale: f64) {
        let all = |_: &str| true;
        if let Some(Some(text)) = texts.first() {
            s.queue_length = metric_sum(text, "usher_queue_length", all);
            s.active_users = metric_sum(text, "usher_active_users", all);
            s.pending = metric_sum(text, "usher_pending_admissions", all);
            s.target_per_minute =
                metric_sum(text, "usher_room_new_users_per_minute", all).map(|r| r / scale);
            s.max_active = metric_sum(text, "usher_room_max_active_users", all);
        }
        // A node that did not answer would make a sum look like a drop.
        let Some(texts) = texts.iter().copied().collect::<Option<Vec<&str>>>() else {
            return;
        };
        let sum = |f: &dyn Fn(&str) -> Option<f64>| {
            texts
                .iter()
                .map(|t| f(t))
                .fold(None, |acc: Option<f64>, v| match (acc, v) {
                    (None, v) => v,
                    (a, None) => a,
                    (Some(a), Some(b)) => Some(a + b),
                })
        };
        s.admitted_total = sum(&|t| metric_sum(t, "usher_admitted_total", all));
        s.usher_5xx_total = sum(&|t| {
            metric_sum(t, "usher_requests_total", |l| {
                l.contains("class=\"5xx\"") && !l.contains("outcome=\"forwarded\"")
            })
        });
        if let (Some(now), Some(before)) = (s.admitted_total, self.last_admitted) {
            s.admissions_per_minute = Some((now - before).max(0.0) / dt * 60.0 / scale);
        }
        self.last_admitted = s.admitted_total.or(self.last_admitted);
    }

    /// CPU and memory of usher's processes, summed.
    fn read_usher_usage(&mut self, s: &mut Sample, dt: f64) {
        if self.usher_pids.is_empty() {
            return;
        }
        // A figure is shown only when every process was read.
        let (mut used, mut rss, mut cpu_all, mut rss_all) = (0.0, 0u64, true, true);
        for (pid, last) in self.usher_pids.iter().zip(self.last_usher.iter_mut()) {
            let Some(u) = proc_usage(*pid) else {
                (cpu_all, rss_all) = (false, false);
                continue;
            };
            match last {
                Some(prev) => used += (u.cpu_seconds - prev.cpu_seconds).max(0.0),
                None => cpu_all = false,
            }
            rss += u.rss_bytes;
            *last = Some(u);
        }
        self.usher_cpu_seconds += used;
        if cpu_all {
            s.usher_cpu = Some(used / dt * 100.0);
        }
        if rss_all {
            s.usher_rss_mb = Some(rss as f64 / (1024.0 * 1024.0));
            self.usher_peak_rss = self.usher_peak_rss.max(rss);
        }
    }

    /// Requests made in the last interval.
    pub fn last_requests(&self) -> u64 {
        self.last_requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_is_summed_by_name_and_labels() {
        let text = "# HELP usher_admitted_total x\n# TYPE usher_admitted_total counter\n\
            usher_admitted_total{via=\"direct\"} 5\nusher_admitted_total{via=\"line\"} 7\n\
            usher_admitted_total_extra 100\nusher_queue_length 42\n\
            usher_requests_total{outcome=\"forwarded\",class=\"5xx\"} 3\n\
            usher_requests_total{outcome=\"origin_error\",class=\"5xx\"} 2\n\
            usher_requests_total{outcome=\"held\",class=\"2xx\"} 9\n";
        let all = |_: &str| true;
        assert_eq!(metric_sum(text, "usher_admitted_total", all), Some(12.0));
        assert_eq!(metric_sum(text, "usher_queue_length", all), Some(42.0));
        assert_eq!(metric_sum(text, "usher_missing", all), None);
        let own_5xx = metric_sum(text, "usher_requests_total", |l| {
            l.contains("class=\"5xx\"") && !l.contains("outcome=\"forwarded\"")
        });
        assert_eq!(own_5xx, Some(2.0));
    }
}
