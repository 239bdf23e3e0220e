//! `usher-sim`: proof under fire. Runs a flash crowd of simulated browsers
//! against the demo origin, once straight at it and once through usher,
//! and writes one self-contained HTML report with a JSON summary.
//!
//! # Layout
//! - [`scenario`]: the TOML scenario files and time compression.
//! - [`crowd`]: every visitor's plan, drawn once from the seed.
//! - [`addresses`]: the visitors' source addresses (carriers and their own).
//! - [`net`]: the shared, bounded HTTP client and cookie jars.
//! - [`visitor`]: one visitor's behaviour, browser-like.
//! - [`answers`]: reading usher's status and voucher answers.
//! - [`procs`]: starting and stopping the theater and usher, `/proc` readings.
//! - [`sampler`]: one sample a second (metrics, stats, CPU, memory).
//! - [`stats`]: lock-free counters and histograms the visitors share.
//! - [`runner`]: one run, start to stop.
//! - [`fairness`]: admission order versus arrival order; waits.
//! - [`summary`]: the numbers of a run and the JSON summary.
//! - [`svg`] and [`report`] (with `headline`): the HTML report.
//! - [`plan`]: capacity planning with Little's law.

pub mod addresses;
pub mod answers;
pub mod crowd;
pub mod fairness;
mod headline;
pub mod net;
pub mod plan;
pub mod procs;
pub mod report;
pub mod runner;
pub mod sampler;
pub mod scenario;
pub mod stats;
pub mod summary;
pub mod svg;
pub mod visitor;

use std::path::Path;

use serde::Serialize;

pub use runner::{RunOptions, RunResult};
pub use scenario::{Scenario, ScenarioError};
pub use summary::{RunSummary, Summary};

/// With usher in front of the origin, or without.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Visitors go through usher.
    Protected,
    /// Visitors go straight at the origin.
    Unprotected,
}

impl Mode {
    /// `protected` or `unprotected`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Protected => "protected",
            Mode::Unprotected => "unprotected",
        }
    }
}

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The scenario.
    #[error(transparent)]
    Scenario(#[from] ScenarioError),
    /// A child could not be started.
    #[error("starting {what} ({path}): {reason}")]
    Spawn {
        /// `usher` or `theater`.
        what: &'static str,
        /// The binary.
        path: String,
        /// Why.
        reason: String,
    },
    /// A child did not answer its health check.
    #[error("{what} did not become ready on {addr}; its last output:\n{log}")]
    NotReady {
        /// `usher` or `theater`.
        what: &'static str,
        /// Where it was asked.
        addr: std::net::SocketAddr,
        /// Its last lines of output.
        log: String,
    },
    /// A child died during the run.
    #[error("{0} exited during the run")]
    Died(&'static str),
    /// The generated usher config or keys were refused.
    #[error("usher config: {0}")]
    Config(String),
    /// File system and sockets.
    #[error("I/O: {0}")]
    Io(std::io::Error),
}

/// Notes for the report: how time was compressed and what was simplified.
pub fn notes(s: &Scenario, runs: &[&RunResult]) -> Vec<String> {
    let scale = s.time_scale;
    let mut n = Vec::new();
    let real_min = runs
        .iter()
        .map(|r| r.summary.real_seconds)
        .fold(0.0, f64::max)
        / 60.0;
    n.push(format!(
        "Time is compressed {scale}x: all times shown are simulated (the run covered up to {:.0} simulated minutes in {:.1} real minutes per run). \
         usher ran with {}, refresh = {} s real ({} s simulated), session_duration {} s simulated; \
         the theater's base latency was {} ms real ({} ms simulated). Concurrency (in-flight requests, active users) is unchanged by compression.",
        runs.iter().map(|r| r.summary.sim_seconds).fold(0.0, f64::max) / 60.0,
        real_min,
        match (s.rate_real_per_minute(), s.usher.new_users_per_minute) {
            (Some(real), Some(sim)) => format!("new_users_per_minute = {real} real ({sim} simulated)"),
            _ => "the closed-loop gate (no fixed rate)".to_string(),
        },
        s.refresh_real().as_secs(),
        s.refresh_real().as_secs_f64() * scale,
        s.usher.session_seconds,
        s.origin_latency_real_ms(),
        s.origin_latency_real_ms() as f64 * scale,
    ));
    n.push(format!(
        "{} visitors: {:.0}% arrive in the first {} s, the rest over {} s with a falling rate. Patience: {}; {}% of those who give up come back (mean {} s later, at most {} times) with their cookies.",
        s.visitors,
        s.arrivals.spike_share * 100.0,
        s.arrivals.spike_seconds,
        s.arrivals.tail_seconds,
        match s.patience {
            scenario::Patience::Lognormal { median_seconds, sigma } => format!("log-normal, median {median_seconds} s, sigma {sigma}"),
            scenario::Patience::Exponential { mean_seconds } => format!("exponential, mean {mean_seconds} s"),
        },
        s.comeback.probability * 100.0,
        s.comeback.after_seconds,
        s.comeback.max_returns,
    ));
    n.push(format!(
        "Once in, a visitor claims a voucher ({} {}), browses {} pages ({} s mean think time), and {:.0}% check out (which frees their slot at once). Without usher, a visitor reloads an error page after about {} s until patience runs out.",
        s.voucher.method, s.voucher.path, s.browse.pages, s.browse.think_seconds, s.browse.checkout_share * 100.0, s.client.retry_seconds,
    ));
    n.push(format!(
        "The origin: capacity {} requests at once, overload = {}, {} vouchers. usher capped it at max_in_flight = {}, with {}.",
        s.origin.capacity, s.origin.overload, s.origin.vouchers, s.origin_max_in_flight(),
        s.usher.max_active_users.map_or("max_active_users set by the closed-loop gate".to_string(), |n| format!("max_active_users = {n}"))
    ));
    if s.multi_node() {
        n.push(format!(
            "usher ran as {} nodes sharing one line, rate, active count and voucher stock through a redis-server of the run's own ({}); \
             each request went to the next node in turn, like a load balancer without affinity, so a visitor's polls and pages landed on different nodes. \
             Each node capped the origin at {} requests in flight ({} in all). The queue length and active users come from one node (they are shared); \
             admissions and usher's 5xx are summed over the nodes; usher's CPU and memory are the sum of the {} nodes and Redis, all on the same machine.",
            s.usher.nodes,
            if s.voucher.enabled { "appendonly yes, appendfsync always" } else { "no persistence" },
            s.origin_max_in_flight_per_node(),
            s.origin_max_in_flight_per_node() * s.usher.nodes,
            s.usher.nodes,
        ));
    }
    n.push(addresses_note(s));
    for r in runs {
        let h = &r.summary.harness;
        n.push(format!(
            "Harness, {}: at most {} client connections; {:.0} requests/s real on average, {:.0} at peak; arrivals lagged their plan by {} ms at p99 and requests waited {} ms at p99 for a connection (real time); the simulator used {:.0}% of a core on average. The machine has {} CPUs shared by the simulator, usher and the theater.",
            r.mode.as_str(),
            s.client.connections,
            h.mean_requests_per_second,
            h.peak_requests_per_second,
            h.arrival_lag_p99_ms.map_or("–".into(), |v| format!("{v:.0}")),
            h.connection_wait_p99_ms.map_or("–".into(), |v| format!("{v:.0}")),
            h.sim_cpu_mean_percent,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        ));
    }
    n.push(format!(
        "Fairness: a visitor counts as overtaken when someone who took a place later got in more than {:.0} simulated seconds (one poll interval with jitter, a tick and the request) earlier.",
        runner::fairness_slack(s)
    ));
    n
}

/// Where the visitors connected from, and what that did to usher's
/// per-address limits.
fn addresses_note(s: &Scenario) -> String {
    let Some(a) = &s.addresses else {
        return "Every simulated visitor connects from 127.0.0.1, so usher's per-address limits were turned off for the run.".into();
    };
    format!(
        "With usher, {:.0}% of the visitors connected from {} shared carrier addresses (127.1.0.1 on, like CGNAT) and the rest from an address of their own (127.2.0.1 on); \
         usher's per-address limits were its defaults in simulated time (multiplied by the {}x compression in real time, bursts included). \
         Over them a visitor is not refused: usher answers with a holding page and Retry-After (the visitor waits and asks again, not an error), or for a new place with a proof-of-work challenge, which the simulator solves and sends back. \
         The challenges were {} bits instead of usher's default {}: the simulator solves thousands of them on the same cores as usher, and the second a phone spends on one is not what this run measures. \
         Visitors with their own address opened a new connection per request (a pool per visitor would keep one idle connection per waiting visitor); carrier addresses kept pooled connections. \
         Without usher everyone connected from 127.0.0.1.",
        a.shared_share * 100.0,
        a.shared,
        s.time_scale,
        procs::SIM_TICKET_PROOF_BITS,
        usher::config::room::DEFAULT_TICKET_PROOF_BITS,
    )
}

/// Every visitor's record as CSV (simulated seconds).
pub fn records_csv(records: &[visitor::Record]) -> String {
    use std::fmt::Write;
    let mut out = String::from(
        "id,arrival,entry,admitted_at,ticket,continuous,outcome,visits,errors,voucher,voucher_at,first_eta,left_after\n",
    );
    let f = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.2}"));
    for r in records {
        let _ = writeln!(
            out,
            "{},{:.2},{:.2},{},{},{},{:?},{},{},{},{},{},{}",
            r.id,
            r.arrival,
            r.entry,
            f(r.admitted_at),
            r.ticket.map_or(String::new(), |t| t.to_string()),
            r.continuous,
            r.outcome,
            r.visits,
            r.errors,
            r.voucher.as_deref().unwrap_or("").replace([',', '\n'], " "),
            f(r.voucher_at),
            f(r.first_eta),
            f(r.left_after),
        );
    }
    out
}

/// Runs the scenario in the chosen modes and writes `out` (HTML) and the
/// JSON summary beside it (`out` with the extension `.json`).
pub async fn run_report(
    s: &Scenario,
    scenario_file: &str,
    modes: &[Mode],
    opts: &RunOptions,
    out: &Path,
) -> Result<(Summary, Vec<RunResult>), SimError> {
    let mut results = Vec::new();
    for &m in modes {
        if *opts.interrupt.borrow() {
            break;
        }
        results.push(runner::run(s, m, opts).await?);
    }
    let refs: Vec<&RunResult> = results.iter().collect();
    let find = |m: Mode| {
        results
            .iter()
            .find(|r| r.mode == m)
            .map(|r| r.summary.clone())
    };
    let summary = Summary {
        scenario: s.name.clone(),
        scenario_file: scenario_file.to_string(),
        time_scale: s.time_scale,
        generated_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        protected: find(Mode::Protected),
        unprotected: find(Mode::Unprotected),
        notes: notes(s, &refs),
    };
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(SimError::Io)?;
    }
    std::fs::write(out, report::html(s, &summary, &refs)).map_err(SimError::Io)?;
    let json = serde_json::to_string_pretty(&summary).map_err(|e| SimError::Io(e.into()))?;
    std::fs::write(out.with_extension("json"), json).map_err(SimError::Io)?;
    if opts.records_csv {
        for r in &results {
            let path = out.with_extension(format!("{}.csv", r.mode.as_str()));
            std::fs::write(path, records_csv(&r.records)).map_err(SimError::Io)?;
        }
    }
    Ok((summary, results))
}
