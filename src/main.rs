//! The `usher` command: `run`, `check`, and small helpers for ops.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use usher::app::App;
use usher::config::store::StoreConfig;
use usher::config::Config;
use usher::ctl::Action;
use usher::notify::Notifier;
use usher::server::{self, activation, Listeners};
use usher::startup::Loaded;

mod allocator;

/// sysexits.h EX_CONFIG: what systemd and ops scripts expect for a bad config.
const EX_CONFIG: u8 = 78;
/// sysexits.h EX_UNAVAILABLE: `usher ctl` could not reach the admin listener.
const EX_UNAVAILABLE: u8 = 69;

#[derive(Parser)]
#[command(
    name = "usher",
    version,
    about = "A traffic shield: a fair, live waiting room in front of an unchanged site"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run usher (without -c: the embedded default, in front of the demo origin on 127.0.0.1:8000).
    Run {
        /// Config file.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Check a config file and every file it names (all `run` would refuse,
    /// without listening); print the effective config, or exit 78 listing every mistake.
    Check {
        /// Config file.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
    /// Certificates.
    Cert {
        #[command(subcommand)]
        command: CertCommand,
    },
    /// Talk to a running usher's admin API; prints its JSON answer, exits 1
    /// on a refusal (non-2xx), 69 when it cannot be reached, 78 when the
    /// config or token file is unusable.
    ///
    /// The token: --token-file, else $USHER_ADMIN_TOKEN, else the config's
    /// server.admin_token_file, else the one usher made (admin.token in
    /// its state directory, /var/lib/usher by default).
    Ctl {
        /// The admin listener [default: the config's server.admin, else 127.0.0.1:9090].
        #[arg(long)]
        admin: Option<String>,
        /// The admin Unix socket [default: the config's server.admin_socket].
        #[arg(long, conflicts_with = "admin")]
        socket: Option<PathBuf>,
        /// The config of the running usher: where its admin API and token are.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// A file holding the admin token.
        #[arg(long)]
        token_file: Option<PathBuf>,
        #[command(subcommand)]
        command: usher::ctl::cli::CtlCommand,
    },
    /// Print a new token key line (`KID:SECRET`) for the key file.
    Keygen {
        /// Key id (1 to 16 of A-Z a-z 0-9 _ -); default: `k` and today's UTC date.
        #[arg(long)]
        kid: Option<String>,
    },
    /// Vouchers: verify a signed code, check the ledger against the audit log.
    Voucher {
        #[command(subcommand)]
        command: VoucherCommand,
    },
}

#[derive(Subcommand)]
enum VoucherCommand {
    /// Check a code minted by the `signed` plugin (offline, with its key);
    /// prints its sequence number; exit 1 if it is not genuine.
    Verify {
        /// The code.
        code: String,
        /// The key file (`vouchers.key_file`).
        #[arg(long)]
        key: PathBuf,
        /// Also check that the code belongs to this identity (e.g. `pass:…`).
        #[arg(long)]
        identity: Option<String>,
    },
    /// Check that the ledger and the audit log agree (no code twice, none
    /// beyond the stock); exit 1 on any disagreement. Safe while usher runs.
    Audit {
        /// The ledger directory (`vouchers.state_dir`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Or the config file naming it.
        #[arg(short, long)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum CertCommand {
    /// Write a self-signed development certificate and key (PEM).
    Dev {
        /// Names (DNS names or IP addresses) the certificate is for.
        #[arg(long = "name", default_values = ["localhost", "127.0.0.1", "::1"])]
        names: Vec<String>,
        /// Certificate file to write.
        #[arg(long, default_value = "certs/dev.crt")]
        cert: PathBuf,
        /// Key file to write (mode 0600).
        #[arg(long, default_value = "certs/dev.key")]
        key: PathBuf,
        /// Validity in days.
        #[arg(long, default_value_t = 90)]
        days: u32,
    },
}

/// The config and every file it names, read and checked: what `usher run`
/// needs before it binds anything, and all `usher check` does.
fn load(path: Option<&PathBuf>) -> Result<(Config, Loaded), usher::config::ConfigError> {
    let cfg = match path {
        Some(p) => Config::load(p)?,
        None => Config::embedded(),
    };
    let loaded = usher::startup::load(&cfg, None)?;
    Ok((cfg, loaded))
}

/// An error and its causes on one line, each cause said once: a cause
/// whose text the message already holds is not repeated.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(text.trim()) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(text.trim());
    }
    out
}

fn main() -> ExitCode {
    allocator::tune();
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match load(config.as_ref()) {
            Ok((cfg, _)) => {
                print!("{}", cfg.render());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(EX_CONFIG)
            }
        },
        Command::Run { config } => {
            // Every file is read before anything else happens: a mistake
            // in the config or a file it names exits 78, which systemd does
            // not retry (RestartPreventExitStatus=78).
            let (cfg, loaded) = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            match run(cfg, loaded) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    // Logging (to stderr, the journal under systemd) is on
                    // by now: one line there, not the same line twice.
                    tracing::error!("{}", one_line(&e));
                    let config = e
                        .downcast_ref::<usher::app::ReloadError>()
                        .is_some_and(usher::app::ReloadError::is_config);
                    if config {
                        ExitCode::from(EX_CONFIG)
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
        Command::Cert {
            command:
                CertCommand::Dev {
                    names,
                    cert,
                    key,
                    days,
                },
        } => match dev_cert(&names, &cert, &key, days) {
            Ok(()) => {
                println!(
                    "wrote {} and {} (valid {days} days for {})",
                    cert.display(),
                    key.display(),
                    names.join(", ")
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("usher: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Ctl {
            admin,
            socket,
            config,
            token_file,
            command,
        } => {
            let config = match config.map(|c| Config::load(&c)).transpose() {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            let options = usher::ctl::Options {
                admin,
                socket,
                config,
                token_file,
                env_token: std::env::var(usher::ctl::TOKEN_ENV).ok(),
            };
            ctl(options, command.action())
        }
        Command::Voucher { command } => voucher(command),
        Command::Keygen { kid } => {
            let kid = kid.unwrap_or_else(|| usher::ctl::default_kid(usher::app::unix_now() as u64));
            match usher::tokens::Keyring::generate_line(&kid) {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("usher: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn ctl(options: usher::ctl::Options, action: Action) -> ExitCode {
    let client = match options.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("usher: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    match client.call(&action) {
        Ok(reply) => {
            println!("{}", reply.pretty());
            if reply.ok() {
                ExitCode::SUCCESS
            } else {
                eprintln!("usher: the admin listener answered {}", reply.status);
                if reply.status == 401 && client.token.is_none() {
                    eprintln!(
                        "usher: no token found: give -c CONFIG, --token-file or ${}",
                        usher::ctl::TOKEN_ENV
                    );
                }
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("usher: {e}");
            ExitCode::from(EX_UNAVAILABLE)
        }
    }
}

fn voucher(command: VoucherCommand) -> ExitCode {
    match command {
        VoucherCommand::Verify {
            code,
            key,
            identity,
        } => {
            let key = match usher::vouchers::VoucherKey::load(&key) {
                Ok(k) => k,
                Err(e) => {
                    eprintln!("usher: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match usher::vouchers::verify_signed(&code, &key) {
                Ok(info)
                    if identity
                        .as_deref()
                        .is_none_or(|id| info.matches_identity(id)) =>
                {
                    println!("genuine: prefix {} sequence {}", info.prefix, info.seq);
                    ExitCode::SUCCESS
                }
                Ok(_) => {
                    println!("genuine, but issued to another identity");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    println!("not genuine: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        VoucherCommand::Audit { dir, config } => {
            let dir = match (dir, config) {
                (Some(d), _) => d,
                (None, Some(c)) => match Config::load(&c) {
                    Ok(cfg) => match &cfg.vouchers {
                        Some(_) if matches!(cfg.store, Some(StoreConfig::Redis(_))) => {
                            return report_audit(redis_audit(&cfg));
                        }
                        Some(v) => v.state_dir.clone(),
                        None => {
                            eprintln!("usher: {} has no [vouchers] section", c.display());
                            return ExitCode::from(EX_CONFIG);
                        }
                    },
                    Err(e) => {
                        eprint!("{e}");
                        return ExitCode::from(EX_CONFIG);
                    }
                },
                (None, None) => {
                    eprintln!("usher: give --dir or -c");
                    return ExitCode::FAILURE;
                }
            };
            report_audit(usher::vouchers::audit_check(&dir).map_err(|e| e.to_string()))
        }
    }
}

/// The shared ledger's audit (`[store] backend = "redis"`), over one
/// connection made for it.
fn redis_audit(cfg: &Config) -> Result<usher::vouchers::AuditReport, String> {
    let (Some(StoreConfig::Redis(store)), Some(v)) = (&cfg.store, &cfg.vouchers) else {
        return Err("no shared voucher ledger in this config".into());
    };
    let event = cfg.room.as_ref().map_or("default", |r| r.event.as_str());
    let stock = usher::vouchers::setup::effective_stock(v).map_err(|e| e.to_string())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let con = usher::store::redis_conn::connect(store, event)?;
        let ledger = usher::store::RedisLedger::new(con, event, stock);
        ledger.audit().await.map_err(|e| e.to_string())
    })
}

/// Prints an audit report; exit 0 only when everything agrees.
fn report_audit(report: Result<usher::vouchers::AuditReport, String>) -> ExitCode {
    match report {
        Ok(report) => {
            println!(
                "event {}: stock {}, issued {}, pending {}, refused {}, audit lines {}{}",
                report.event,
                report.stock,
                report.issued,
                report.pending,
                report.refused,
                report.audit_lines,
                if report.exhausted {
                    ", issuer sold out"
                } else {
                    ""
                }
            );
            for p in &report.problems {
                println!("problem: {p}");
            }
            if report.is_ok() {
                println!("ledger and audit log agree");
                ExitCode::SUCCESS
            } else {
                println!("{} problem(s)", report.problem_count);
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("usher: {e}");
            ExitCode::FAILURE
        }
    }
}

fn dev_cert(names: &[String], cert: &PathBuf, key: &PathBuf, days: u32) -> anyhow::Result<()> {
    let (cert_pem, key_pem) =
        usher::tls::dev_certificate(names, days).context("making the certificate")?;
    for p in [cert, key] {
        if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    std::fs::write(cert, cert_pem).with_context(|| format!("writing {}", cert.display()))?;
    write_private(key, key_pem.as_bytes()).with_context(|| format!("writing {}", key.display()))?;
    Ok(())
}

/// Writes a secret readable by its owner only.
fn write_private(path: &PathBuf, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)
}

/// Raises the soft open-file limit to the hard limit: every visitor is a
/// socket, and the default soft limit (1024) is far below a flash crowd.
fn raise_nofile() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("could not raise the open-file limit");
            }
        }
    }
}

fn run(cfg: Config, loaded: Loaded) -> anyhow::Result<()> {
    let log = usher::logging::init(&cfg.log);
    raise_nofile();
    let notifier = Arc::new(Notifier::from_env());
    // Read before the runtime starts threads; the fds are ours from here on.
    let passed = activation::from_env().context("socket activation")?;
    // Given one CPU (a small VM, or pinned with taskset), one thread runs
    // everything: the work-stealing scheduler's hand-offs buy nothing there
    // and cost on every wake-up.
    let one_cpu = std::thread::available_parallelism().is_ok_and(|n| n.get() == 1);
    let runtime = if one_cpu {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    }
    .context("starting the runtime")?;
    runtime.block_on(async move {
        let app = App::start(cfg, loaded, log)?;
        let inherited = match passed {
            Some(p) => {
                tracing::info!(
                    sockets = p.0.len(),
                    "socket activation: using inherited sockets"
                );
                // SAFETY: LISTEN_PID names this process, so the service
                // manager handed these fds to us and nothing else owns them.
                unsafe { activation::adopt(p, &app.config.load()) }.context("socket activation")?
            }
            None => activation::Matched::default(),
        };
        let listeners = Listeners::bind_with(&app, inherited).await?;
        // Before READY=1: a SIGHUP or SIGTERM that systemd sends right after
        // must find our handlers, not the default action (terminate).
        let signals = Signals::install()?;
        let running = server::serve(app.clone(), listeners);
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "usher started");
        notifier.ready(&listening_status(&running.bound));
        if let Some(every) = usher::notify::watchdog_from_env() {
            tracing::info!(every = ?every, "systemd watchdog enabled");
            usher::notify::spawn_watchdog(notifier.clone(), every);
        }
        wait_for_stop(&app, &notifier, signals).await;
        notifier.stopping();
        let grace = app.config.load().server.shutdown_grace;
        let left = running.shutdown(grace).await;
        tracing::info!(left, "usher stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// The `STATUS=` line once listening: where.
fn listening_status(bound: &usher::app::Bound) -> String {
    let all: Vec<String> = bound
        .plain
        .iter()
        .chain(&bound.tls)
        .map(|a| a.to_string())
        .collect();
    match bound.admin {
        Some(a) => format!("listening on {}; admin on {a}", all.join(", ")),
        None => format!("listening on {}", all.join(", ")),
    }
}

/// The signals usher answers.
struct Signals {
    hup: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Signals {
            hup: signal(SignalKind::hangup()).context("installing the SIGHUP handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }
}

/// Reloads on SIGHUP until SIGTERM or SIGINT, telling systemd about each.
async fn wait_for_stop(app: &App, notifier: &Notifier, mut s: Signals) {
    loop {
        tokio::select! {
            _ = s.hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                notifier.reloading();
                // Ready again either way: a failed reload keeps the running config.
                match app.reload().await {
                    Ok(r) if r.restart_required.is_empty() => notifier.ready("config reloaded"),
                    Ok(r) => notifier.ready(&format!(
                        "config reloaded; restart to apply {}", r.restart_required.join(", ")
                    )),
                    Err(e) => notifier.ready(&format!("reload failed, running config kept: {e}")),
                }
            }
            _ = s.term.recv() => { tracing::info!("SIGTERM: shutting down"); return; }
            _ = s.int.recv() => { tracing::info!("SIGINT: shutting down"); return; }
        }
    }
}
