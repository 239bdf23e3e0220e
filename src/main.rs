//! The `usher` command: `run`, `check`, and small helpers for ops.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use usher::app::App;
use usher::config::Config;
use usher::server::{self, Listeners};

/// sysexits.h EX_CONFIG: what systemd and ops scripts expect for a bad config.
const EX_CONFIG: u8 = 78;

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
    /// Validate a config file and print the effective config; exit 78 listing every mistake.
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

fn load(path: Option<&PathBuf>) -> Result<Config, usher::config::ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::embedded()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check { config } => match load(config.as_ref()) {
            Ok(cfg) => {
                print!("{}", cfg.render());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(EX_CONFIG)
            }
        },
        Command::Run { config } => {
            let cfg = match load(config.as_ref()) {
                Ok(c) => c,
                Err(e) => {
                    eprint!("{e}");
                    return ExitCode::from(EX_CONFIG);
                }
            };
            match run(cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    eprintln!("usher: {e:#}");
                    ExitCode::FAILURE
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
    }
}

fn dev_cert(names: &[String], cert: &PathBuf, key: &PathBuf, days: u32) -> anyhow::Result<()> {
    let (cert_pem, key_pem) =
        usher::server::tls::dev_certificate(names, days).context("making the certificate")?;
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

fn run(cfg: Config) -> anyhow::Result<()> {
    let log = usher::logging::init(&cfg.log);
    raise_nofile();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        // Before anything listens: a SIGHUP sent as soon as the ports are open
        // (systemd's ExecReload, a deploy script) must reload, and would
        // otherwise meet the default action, which ends the process.
        let signals = Signals::install()?;
        let app = App::new(cfg, log)?;
        let listeners = Listeners::bind(&app).await?;
        let running = server::serve(app.clone(), listeners);
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "usher started");
        wait_for_stop(&app, signals).await;
        let grace = app.config.load().server.shutdown_grace;
        let left = running.shutdown(grace).await;
        tracing::info!(left, "usher stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    runtime.shutdown_timeout(Duration::from_secs(1));
    Ok(())
}

/// The signals usher acts on, caught from start-up on.
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

/// Reloads on SIGHUP until SIGTERM or SIGINT.
async fn wait_for_stop(app: &App, mut s: Signals) {
    loop {
        tokio::select! {
            _ = s.hup.recv() => {
                tracing::info!("SIGHUP: reloading the config");
                let _ = app.reload().await;
            }
            _ = s.term.recv() => { tracing::info!("SIGTERM: shutting down"); return; }
            _ = s.int.recv() => { tracing::info!("SIGINT: shutting down"); return; }
        }
    }
}
