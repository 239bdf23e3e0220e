//! `usher-sim`: runs a flash-crowd scenario against the demo origin with and
//! without usher and writes an HTML report (`run`), or sizes the room for
//! an origin with Little's law (`plan`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::sync::watch;
use usher_sim::plan::{plan, PlanInput, DEFAULT_REQUESTS_PER_SESSION, DEFAULT_UTILIZATION};
use usher_sim::procs::Binaries;
use usher_sim::{run_report, Mode, RunOptions, RunSummary, Scenario};

#[derive(Parser)]
#[command(
    name = "usher-sim",
    version,
    about = "Proof under fire: a flash crowd against the demo origin, with and without usher"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a scenario (both with and without usher unless told) and write the report.
    Run {
        /// Scenario file (TOML), e.g. scenarios/opening-spike.toml.
        scenario: PathBuf,
        /// HTML report to write; the JSON summary goes beside it (.json).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Only the run straight at the origin (the collapse).
        #[arg(long, conflicts_with = "protected")]
        unprotected: bool,
        /// Only the run through usher.
        #[arg(long)]
        protected: bool,
        /// The usher binary (default: beside usher-sim).
        #[arg(long)]
        usher: Option<PathBuf>,
        /// The theater binary (default: examples/theater beside usher-sim).
        #[arg(long)]
        theater: Option<PathBuf>,
        /// No progress lines.
        #[arg(long, short)]
        quiet: bool,
        /// Also write every visitor's record as CSV beside the report.
        #[arg(long)]
        records: bool,
    },
    /// Check a scenario file and print the real-time settings it gives.
    Check {
        /// Scenario file.
        scenario: PathBuf,
    },
    /// Suggest max_active_users and new_users_per_minute for an origin (Little's law).
    Plan {
        /// Requests the origin serves at once.
        #[arg(long)]
        origin_capacity: u64,
        /// Origin latency per request under load, ms.
        #[arg(long)]
        origin_latency_ms: f64,
        /// Minutes an admitted visitor stays active.
        #[arg(long)]
        session_minutes: f64,
        /// Visitors expected.
        #[arg(long)]
        crowd: u64,
        /// Requests one visitor's session sends to the origin.
        #[arg(long, default_value_t = DEFAULT_REQUESTS_PER_SESSION)]
        requests_per_session: f64,
        /// Share of the origin's capacity to fill.
        #[arg(long, default_value_t = DEFAULT_UTILIZATION)]
        utilization: f64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Raises the soft open-file limit to the hard one: the shared client and
/// the probes need a few thousand sockets.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Plan {
            origin_capacity,
            origin_latency_ms,
            session_minutes,
            crowd,
            requests_per_session,
            utilization,
            json,
        } => {
            let input = PlanInput {
                origin_capacity,
                origin_latency_ms,
                session_minutes,
                crowd,
                requests_per_session,
                utilization,
            };
            match plan(input) {
                Ok(p) if json => match serde_json::to_string_pretty(&p) {
                    Ok(text) => println!("{text}"),
                    Err(e) => {
                        eprintln!("usher-sim: {e}");
                        return ExitCode::FAILURE;
                    }
                },
                Ok(p) => print!("{p}"),
                Err(e) => {
                    eprintln!("usher-sim plan: {e}");
                    return ExitCode::from(2);
                }
            }
            ExitCode::SUCCESS
        }
        Command::Check { scenario } => match Scenario::load(&scenario) {
            Ok(s) => {
                println!(
                    "{}: {} visitors, {}x time compression, {} s simulated limit ({:.1} real minutes)",
                    s.name,
                    s.visitors,
                    s.time_scale,
                    s.time_limit_seconds,
                    s.real(s.time_limit_seconds).as_secs_f64() / 60.0
                );
                let dir = std::env::temp_dir();
                // Several nodes: the first node's config (the others differ
                // only in ports and node_id).
                let store = s.multi_node().then_some(usher_sim::procs::NodeStore {
                    url: "redis://127.0.0.1:6379/",
                    node_id: "sim-1",
                });
                if s.multi_node() {
                    println!(
                        "# usher: {} nodes sharing one redis-server (node 1 shown)",
                        s.usher.nodes
                    );
                }
                if let Some(a) = &s.addresses {
                    println!(
                        "# visitors: {:.0}% behind {} carrier addresses, the rest one address each; usher keeps its default per-address limits",
                        a.shared_share * 100.0,
                        a.shared
                    );
                }
                print!(
                    "{}",
                    usher_sim::procs::usher_config(&s, 8080, 9090, 8000, &dir.join("keys"), store)
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Run {
            scenario,
            out,
            unprotected,
            protected,
            usher,
            theater,
            quiet,
            records,
        } => {
            raise_nofile();
            let modes = match (unprotected, protected) {
                (true, _) => vec![Mode::Unprotected],
                (_, true) => vec![Mode::Protected],
                _ => vec![Mode::Unprotected, Mode::Protected],
            };
            match run(scenario, out, modes, (usher, theater), quiet, records) {
                Ok(interrupted) if interrupted => ExitCode::from(130),
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("usher-sim: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn run(
    scenario: PathBuf,
    out: Option<PathBuf>,
    modes: Vec<Mode>,
    (usher, theater): (Option<PathBuf>, Option<PathBuf>),
    quiet: bool,
    records_csv: bool,
) -> anyhow::Result<bool> {
    let s = Scenario::load(&scenario)?;
    let mut bins = Binaries::beside_current_exe()?;
    if let Some(u) = usher {
        bins.usher = u;
    }
    if let Some(t) = theater {
        bins.theater = t;
    }
    for (what, p) in [("usher", &bins.usher), ("theater", &bins.theater)] {
        anyhow::ensure!(
            p.exists(),
            "{what} not found at {}: build it first (cargo build --release --bin usher --bin usher-sim --example theater)",
            p.display()
        );
    }
    let out = out.unwrap_or_else(|| {
        let stem = scenario
            .file_stem()
            .map_or("report".into(), |s| s.to_string_lossy().into_owned());
        PathBuf::from("reports").join(format!("{stem}.html"))
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let (tx, rx) = watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("usher-sim: stopping (visitors leave, then usher and the theater stop)");
                let _ = tx.send(true);
            }
        });
        let opts = RunOptions {
            binaries: bins,
            interrupt: rx.clone(),
            progress: !quiet,
            records_csv,
        };
        let file = scenario.display().to_string();
        let (summary, _) = run_report(&s, &file, &modes, &opts, &out).await?;
        for r in [&summary.unprotected, &summary.protected]
            .into_iter()
            .flatten()
        {
            print_headline(r);
        }
        println!("report: {}", out.display());
        println!("summary: {}", out.with_extension("json").display());
        let interrupted = *rx.borrow();
        Ok(interrupted)
    })
}

fn print_headline(r: &RunSummary) {
    let o = &r.outcomes;
    println!(
        "{:>11}: {} arrived, {} vouchers, {} sold out at the claim, {} told sold out while waiting, {} gave up waiting, {} gave up on errors, {} still waiting; \
         {} visitors met errors; origin peak {} in flight (capacity {}), {} refused; wait p50 {:.0} s; overtaken {:.2}%{}",
        r.mode,
        r.arrived,
        o.voucher,
        o.sold_out,
        o.told_sold_out,
        o.gave_up,
        o.failed,
        o.waiting,
        r.visitors_with_errors,
        r.origin.max_in_flight_seen.unwrap_or(0.0),
        r.origin.capacity,
        r.origin.rejected_503.unwrap_or(0.0),
        r.wait_seconds.p50.unwrap_or(0.0),
        r.fairness.overtaken_share * 100.0,
        r.usher.as_ref().map_or(String::new(), |u| format!(
            "; usher 5xx {}, CPU mean {:.0}%, RSS peak {:.0} MiB",
            u.own_5xx, u.cpu_mean_percent, u.rss_peak_mib
        )),
    );
}
