//! One run of a scenario: start the theater (and usher when protected: one
//! process, or `[usher] nodes` processes sharing a Redis of the run's own),
//! release the crowd on schedule, sample every second, stop at the time
//! limit or on request, stop the children, and sum it all up. Children are
//! killed on drop, so an error or a panic leaves none behind.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use super::crowd::crowd;
use super::net::Net;
use super::procs::{
    free_port, loopback, start_redis, start_theater, usher_config, wait_redis, Binaries, NodeStore,
    Probe, Proc, NODE_NAMES,
};
use super::sampler::{Sample, Sampler};
use super::scenario::Scenario;
use super::stats::{Live, Outcome};
use super::summary::{summarize, RunFacts, RunSummary};
use super::visitor::{visit, Record, RunCtx};
use super::{Mode, SimError};
use usher::tokens::{event_id, Keyring};

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

/// The protected side of a run: the usher nodes and their Redis.
struct UsherSide {
    /// Each node with its listener and admin addresses.
    nodes: Vec<(Proc, SocketAddr, SocketAddr)>,
    /// The shared store of a multi-node run.
    redis: Option<Proc>,
}

impl UsherSide {
    /// Starts Redis (several nodes only), then every node, each checked
    /// ready (`/readyz` also waits for Redis) before the crowd comes.
    async fn start(
        s: &Scenario,
        opts: &RunOptions,
        dir: &Path,
        probe: &Probe,
        theater_port: u16,
        keys_path: &Path,
    ) -> Result<UsherSide, SimError> {
        let mut redis = None;
        let mut url = None;
        if s.multi_node() {
            let port = free_port()?;
            let aof = redis_aof_dir(s, dir)?;
            let mut p = start_redis(port, aof.as_deref(), dir)?;
            wait_redis(&mut p, port, READY_WITHIN).await?;
            redis = Some(p);
            url = Some(format!("redis://127.0.0.1:{port}/"));
        }
        let mut nodes = Vec::with_capacity(s.usher.nodes);
        for (k, node_name) in NODE_NAMES.iter().copied().take(s.usher.nodes).enumerate() {
            let (listen, admin) = (free_port()?, free_port()?);
            let node_id = format!("sim-{}", k + 1);
            let store = url.as_deref().map(|url| NodeStore {
                url,
                node_id: &node_id,
            });
            let text = usher_config(s, listen, admin, theater_port, keys_path, store);
            usher::config::Config::parse(&text, "usher-sim.toml", dir)
                .map_err(|e| SimError::Config(e.to_string()))?;
            let (name, file) = match url {
                Some(_) => (node_name, format!("{node_name}.toml")),
                None => ("usher", "usher.toml".to_string()),
            };
            let cfg_path = dir.join(file);
            std::fs::write(&cfg_path, &text).map_err(SimError::Io)?;
            let args = vec![
                "run".to_string(),
                "-c".into(),
                cfg_path.display().to_string(),
            ];
            let p = Proc::spawn(name, &opts.binaries.usher, &args, dir)?;
            nodes.push((p, loopback(listen), loopback(admin)));
        }
        for (p, _, admin) in &mut nodes {
            probe.wait_ready(p, *admin, "/readyz", READY_WITHIN).await?;
        }
        Ok(UsherSide { nodes, redis })
    }

    /// Where visitors send their requests, in turn.
    fn listeners(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.1).collect()
    }

    /// The first node that exited, if any.
    fn died(&mut self) -> Option<&'static str> {
        let node = self
            .nodes
            .iter_mut()
            .find_map(|(p, _, _)| p.exited().then_some(p.name));
        node.or_else(|| {
            self.redis
                .as_mut()
                .and_then(|r| r.exited().then_some(r.name))
        })
    }

    /// Stops the nodes (together), then Redis.
    async fn stop(self) {
        futures_util::future::join_all(self.nodes.into_iter().map(|(p, _, _)| p.stop())).await;
        if let Some(r) = self.redis {
            r.stop().await;
        }
    }
}

/// Where Redis keeps its append-only file, when it keeps one: with the
/// scenario's voucher step on, Redis runs as usher requires of a Redis
/// holding vouchers (every write synced), so its cost is in the figures.
fn redis_aof_dir(s: &Scenario, dir: &Path) -> Result<Option<PathBuf>, SimError> {
    if !s.voucher.enabled {
        return Ok(None);
    }
    let aof = dir.join("redis");
    std::fs::create_dir_all(&aof).map_err(SimError::Io)?;
    Ok(Some(aof))
}

/// Polling slack for fairness: one poll interval with its jitter, an
/// admission tick and a little for the request itself, in simulated seconds.
pub fn fairness_slack(s: &Scenario) -> f64 {
    let real = s.refresh_real().as_secs_f64() * 1.2 + 0.25 + 0.5;
    real * s.time_scale
}

/// The carrier addresses of a protected run with `[addresses]`.
fn carriers(s: &Scenario, mode: Mode) -> Vec<std::net::Ipv4Addr> {
    match &s.addresses {
        Some(a) if mode == Mode::Protected => a.carriers(),
        _ => Vec::new(),
    }
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
    let mut usher: Option<UsherSide> = None;
    let mut tickets = None;
    let mut targets = vec![loopback(theater_port)];
    if mode == Mode::Protected {
        let key_line =
            Keyring::generate_line("sim").map_err(|e| SimError::Config(e.to_string()))?;
        let keys_path = scratch.0.join("keys");
        std::fs::write(&keys_path, format!("{key_line}\n")).map_err(SimError::Io)?;
        let keys = Keyring::parse(&key_line).map_err(|e| SimError::Config(e.to_string()))?;
        let side = UsherSide::start(s, opts, &scratch.0, &probe, theater_port, &keys_path).await?;
        tickets = Some((keys, event_id("sim")));
        targets = side.listeners();
        usher = Some(side);
    }
    let plans = crowd(s);
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Arc::new(RunCtx {
        scenario: s.clone(),
        mode,
        net: Net::new(
            targets,
            s.client.connections,
            s.real(s.client.timeout_seconds),
        )
        .with_carriers(&carriers(s, mode)),
        live: Live::default(),
        start: Instant::now(),
        stop: stop_rx,
        records: Mutex::new(Vec::with_capacity(plans.len())),
        tickets,
    });
    let (admins, pids) = usher.as_ref().map_or((vec![], vec![]), |u| {
        let admins = u.nodes.iter().map(|n| n.2).collect();
        let pids = u
            .nodes
            .iter()
            .map(|n| n.0.pid)
            .chain(u.redis.as_ref().map(|r| r.pid));
        (admins, pids.collect())
    });
    let mut sampler = Sampler::new(loopback(theater_port), admins, pids);
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
                if let Some(what) = usher.as_mut().and_then(UsherSide::died) {
                    died = Some(what);
                    break;
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
    if let Some(u) = usher {
        u.stop().await;
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
        o[Outcome::Voucher.index()],
        o[Outcome::GaveUp.index()],
        o[Outcome::Failed.index()],
        s.requests_per_second,
        s.queue_length.map_or("-".into(), |q| format!("{q:.0}")),
        s.origin_in_flight.map_or("-".into(), |q| format!("{q:.0}")),
    );
}
