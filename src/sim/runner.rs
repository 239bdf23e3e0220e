//! One run of a scenario: start the theater (and usher when protected),
//! release the crowd on schedule, sample every second, stop at the time
//! limit or on request, stop the children, and sum it all up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::crowd::crowd;
use super::net::Net;
use super::procs::{free_port, loopback, start_theater, usher_config, Binaries, Probe, Proc};
use super::sampler::{Sample, Sampler};
use super::scenario::Scenario;
use super::stats::Live;
use super::summary::{summarize, RunFacts, RunSummary};
use super::visitor::{visit, Record, RunCtx};
use super::{Mode, SimError};
use crate::tokens::{event_id, Keyring};

/// How long the children have to come up.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// Seconds between progress lines.
const PROGRESS_EVERY: u64 = 10;

/// How to run.
#[derive(Clone)]
pub struct RunOptions {
    /// The binaries to start.
    pub binaries: Binaries,
    /// Turns true on Ctrl-C.
    pub interrupt: watch::Receiver<bool>,
    /// Print a progress line every few seconds (stderr).
    pub progress: bool,
    /// Also write every visitor's record as CSV beside the report.
    pub records_csv: bool,
}

/// Everything one run produced.
pub struct RunResult {
    /// With or without usher.
    pub mode: Mode,
    /// The numbers.
    pub summary: RunSummary,
    /// One sample a second.
    pub samples: Vec<Sample>,
    /// One record per visitor who arrived and finished.
    pub records: Vec<Record>,
}

/// A scratch directory for configs, keys and logs, removed on drop.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn new(mode: Mode) -> Result<Scratch, SimError> {
        let dir = std::env::temp_dir().join(format!(
            "usher-sim-{}-{}-{}",
            std::process::id(),
            mode.as_str(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::create_dir_all(&dir).map_err(SimError::Io)?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polling slack for fairness: one poll interval with its jitter, an
/// admission tick and a little for the request itself, in simulated seconds.
pub fn fairness_slack(s: &Scenario) -> f64 {
    let real = s.refresh_real().as_secs_f64() * 1.2 + 0.25 + 0.5;
    real * s.time_scale
}

/// Runs `s` once, with usher in front of the theater or without.
pub async fn run(s: &Scenario, mode: Mode, opts: &RunOptions) -> Result<RunResult, SimError> {
    let scratch = Scratch::new(mode)?;
    let probe = Probe::default();
    let theater_port = free_port()?;
    let mut theater = start_theater(&opts.binaries.theater, theater_port, s, &scratch.0)?;
    probe
        .wait_ready(
            &mut theater,
            loopback(theater_port),
            "/health",
            READY_WITHIN,
        )
        .await?;
    let mut usher: Option<(Proc, std::net::SocketAddr)> = None;
    let mut tickets = None;
    let mut target = loopback(theater_port);
    if mode == Mode::Protected {
        let key_line =
            Keyring::generate_line("sim").map_err(|e| SimError::Config(e.to_string()))?;
        let keys_path = scratch.0.join("keys");
        std::fs::write(&keys_path, format!("{key_line}\n")).map_err(SimError::Io)?;
        let keys = Keyring::parse(&key_line).map_err(|e| SimError::Config(e.to_string()))?;
        let (listen, admin) = (free_port()?, free_port()?);
        let text = usher_config(s, listen, admin, theater_port, &keys_path);
        crate::config::Config::parse(&text, "usher-sim.toml", &scratch.0)
            .map_err(|e| SimError::Config(e.to_string()))?;
        let cfg_path = scratch.0.join("usher.toml");
        std::fs::write(&cfg_path, &text).map_err(SimError::Io)?;
        let args = vec![
            "run".to_string(),
            "-c".into(),
            cfg_path.display().to_string(),
        ];
        let mut p = Proc::spawn("usher", &opts.binaries.usher, &args, &scratch.0)?;
        probe
            .wait_ready(&mut p, loopback(admin), "/readyz", READY_WITHIN)
            .await?;
        tickets = Some((keys, event_id("sim")));
        target = loopback(listen);
        usher = Some((p, loopback(admin)));
    }
    let plans = crowd(s);
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Arc::new(RunCtx {
        scenario: s.clone(),
        mode,
        net: Net::new(
            target,
            s.client.connections,
            s.real(s.client.timeout_seconds),
        ),
        live: Live::default(),
        start: Instant::now(),
        stop: stop_rx,
        records: Mutex::new(Vec::with_capacity(plans.len())),
        tickets,
    });
    let mut sampler = Sampler::new(
        loopback(theater_port),
        usher.as_ref().map(|(p, admin)| (*admin, p.pid)),
    );
    let mut interrupt = opts.interrupt.clone();
    let mut set = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut next, mut hit_limit, mut interrupted, mut died) = (0usize, false, false, None);
    let limit = s.real(s.time_limit_seconds);
    loop {
        let due = plans.get(next).map(|p| ctx.start + s.real(p.arrival));
        tokio::select! {
            () = tokio::time::sleep_until(due.unwrap_or(ctx.start)), if due.is_some() => {
                let now = Instant::now();
                while let Some(p) = plans.get(next) {
                    let at = ctx.start + s.real(p.arrival);
                    if at > now {
                        break;
                    }
                    ctx.live.arrival_lag.record(now.duration_since(at));
                    set.spawn(Box::pin(visit(ctx.clone(), p.clone())));
                    next += 1;
                }
            }
            Some(_) = set.join_next(), if !set.is_empty() => {}
            _ = tick.tick() => {
                sampler.sample(&ctx).await;
                if opts.progress && sampler.samples.len() as u64 % PROGRESS_EVERY == 0 {
                    progress(mode, sampler.samples.last());
                }
                if ctx.start.elapsed() >= limit {
                    hit_limit = true;
                    break;
                }
                if next == plans.len() && set.is_empty() {
                    break;
                }
                if theater.exited() {
                    died = Some("theater");
                    break;
                }
                if let Some((p, _)) = usher.as_mut() {
                    if p.exited() {
                        died = Some("usher");
                        break;
                    }
                }
            }
            _ = interrupt.changed() => {
                interrupted = true;
                break;
            }
        }
    }
    let _ = stop_tx.send(true);
    // Visitors wake at once; a request in flight ends by its timeout at most.
    let drain = s.real(s.client.timeout_seconds) + Duration::from_secs(2);
    let _ = tokio::time::timeout(drain, async { while set.join_next().await.is_some() {} }).await;
    set.abort_all();
    while set.join_next().await.is_some() {}
    sampler.sample(&ctx).await;
    let real_seconds = ctx.start.elapsed().as_secs_f64();
    let mut records = std::mem::take(&mut *ctx.records.lock().unwrap_or_else(|e| e.into_inner()));
    records.sort_by_key(|r| r.id);
    let lag = |h: &super::stats::LogHistogram| h.take().quantile_us(0.99).map(|us| us / 1000.0);
    let lags = (lag(&ctx.live.arrival_lag), lag(&ctx.live.connection_wait));
    let requeued = ctx.live.requeued.load(std::sync::atomic::Ordering::Relaxed);
    // Dropping the client closes its idle connections, so the children drain at once.
    drop(ctx);
    if let Some((p, _)) = usher {
        p.stop().await;
    }
    theater.stop().await;
    if let Some(what) = died {
        return Err(SimError::Died(what));
    }
    let facts = RunFacts {
        scenario: s,
        mode,
        not_arrived: (plans.len() - next) as u64,
        cut_off: (next - records.len()) as u64,
        real_seconds,
        requeued,
        hit_time_limit: hit_limit,
        interrupted,
        slack: fairness_slack(s),
        lags,
    };
    let summary = summarize(&facts, &records, &sampler);
    Ok(RunResult {
        mode,
        summary,
        samples: std::mem::take(&mut sampler.samples),
        records,
    })
}

fn progress(mode: Mode, s: Option<&Sample>) {
    let Some(s) = s else { return };
    let o = s.outcomes;
    eprintln!(
        "[{:>11}] t={:>6.0}s arrived {:>7} waiting {:>7} on site {:>6} vouchers {:>6} gave up {:>6} failed {:>6} | {:>6.0} req/s, line {}, origin in flight {}",
        mode.as_str(),
        s.t,
        s.arrived,
        s.waiting,
        s.browsing,
        o[0],
        o[5],
        o[6],
        s.requests_per_second,
        s.queue_length.map_or("-".into(), |q| format!("{q:.0}")),
        s.origin_in_flight.map_or("-".into(), |q| format!("{q:.0}")),
    );
}
