//! usher in-process, through the library: the same `App`, listeners and
//! `serve` the binary uses, on ports the kernel picks.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use usher::app::App;
use usher::config::Config;
use usher::logging::LogHandle;
use usher::server::{self, Listeners, Running};

/// A running in-process usher.
pub struct Usher {
    /// Shared state (config, metrics).
    pub app: Arc<App>,
    /// First plain listener.
    pub addr: SocketAddr,
    /// First TLS listener, if any.
    pub tls: Option<SocketAddr>,
    /// Admin listener, if any.
    pub admin: Option<SocketAddr>,
    running: Option<Running>,
}

impl Usher {
    /// Starts usher with `toml` (relative paths taken from `base`).
    pub async fn start_in(toml: &str, base: &Path) -> Usher {
        let cfg = Config::parse(toml, "test", base).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let app = App::new(cfg, LogHandle::none()).expect("App::new");
        let listeners = Listeners::bind(&app).await.expect("bind listeners");
        let running = server::serve(app.clone(), listeners);
        let b = running.bound.clone();
        Usher {
            app,
            addr: *b.plain.first().expect("a plain listener"),
            tls: b.tls.first().copied(),
            admin: b.admin,
            running: Some(running),
        }
    }

    /// Starts usher with `toml`.
    pub async fn start(toml: &str) -> Usher {
        Usher::start_in(toml, Path::new(".")).await
    }

    /// Starts usher with defaults in front of `origin`, plus extra `[origin]` lines.
    pub async fn in_front_of(origin: SocketAddr, origin_extra: &str) -> Usher {
        Usher::start(&super::config(origin, "", origin_extra, "")).await
    }

    /// Stops it, giving open connections `grace` to finish.
    pub async fn shutdown(mut self, grace: Duration) -> usize {
        match self.running.take() {
            Some(r) => r.shutdown(grace).await,
            None => 0,
        }
    }

    /// Stops it, giving open connections 2 s to finish.
    pub async fn stop(self) {
        self.shutdown(Duration::from_secs(2)).await;
    }

    /// The text of `/metrics`.
    pub fn metrics(&self) -> String {
        String::from_utf8(self.app.metrics.encode()).expect("metrics are UTF-8")
    }
}

impl Drop for Usher {
    fn drop(&mut self) {
        let rt = tokio::runtime::Handle::try_current();
        if let (Some(r), Ok(rt)) = (self.running.take(), rt) {
            // Stop accepting at once; connections still open die with the runtime.
            rt.spawn(async move {
                r.shutdown(Duration::ZERO).await;
            });
        }
    }
}

/// The value of the metric line starting with `series` (name and labels as
/// written in the exposition text), if present.
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| {
            l.strip_prefix(series)
                .is_some_and(|rest| rest.starts_with(' '))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
