//! The shared state of a running usher: the config snapshot behind an
//! `ArcSwap`, the origin client, the metrics, and the reload that swaps
//! them (parse, validate, build, swap; keep the last good on any error).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;

use crate::admission::gate::TokioClock;
use crate::admission::pass_limit::PassLimit;
use crate::admission::room::{Room, RoomError};
use crate::config::{Config, ConfigError};
use crate::logging::{AccessLog, LogHandle};
use crate::metrics::Metrics;
use crate::proxy::client::{ClientError, OriginClient};
use crate::proxy::slots::Slots;
use crate::server::tls::{self, CertError, CertResolver, LoadedCert};

/// Why a reload was refused (the running config stays).
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file has mistakes.
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// A certificate could not be loaded.
    #[error("certificate: {0}")]
    Cert(#[from] CertError),
    /// The origin client could not be built.
    #[error("{0}")]
    Origin(#[from] ClientError),
    /// The room's keys or template could not be loaded.
    #[error("{0}")]
    Room(#[from] RoomError),
    /// The voucher plugin or ledger could not be opened.
    #[error("{0}")]
    Vouchers(#[from] crate::vouchers::setup::SetupError),
}

/// What a successful reload changed that it could not apply.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadReport {
    /// Settings that need a restart to take effect (listen addresses).
    pub restart_required: Vec<String>,
}

/// Shared state of the running process.
pub struct App {
    /// The current config; a request loads it once.
    pub config: ArcSwap<Config>,
    /// The origin client (rebuilt when origin settings change).
    pub origin: ArcSwap<OriginClient>,
    /// The origin's in-flight cap.
    pub slots: Arc<Slots>,
    /// Every metric.
    pub metrics: Arc<Metrics>,
    /// The access log.
    pub access_log: AccessLog,
    /// TLS certificates, when TLS listeners run.
    pub certs: Option<Arc<CertResolver>>,
    /// The listen addresses the config named at start (a reload that
    /// names others needs a restart).
    pub bound: Mutex<Bound>,
    /// The addresses actually listened on (real ports where `:0` was asked).
    pub listening: Mutex<Bound>,
    /// Log filter control.
    pub log: LogHandle,
    /// The waiting room (idle when the config has no `[room]`).
    pub room: Room,
    /// Requests per pass per second (a copied pass gets one visitor's rate).
    pub pass_limit: ArcSwap<PassLimit>,
    /// The voucher claim service, when the event has vouchers.
    pub vouchers: Option<Arc<crate::vouchers::Vouchers>>,
    /// Serializes reloads (SIGHUP and the admin API may race).
    reload_lock: tokio::sync::Mutex<ReloadReport>,
}

/// Addresses bound at start.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Bound {
    /// Plain listeners.
    pub plain: Vec<SocketAddr>,
    /// TLS listeners.
    pub tls: Vec<SocketAddr>,
    /// Admin listener.
    pub admin: Option<SocketAddr>,
}

impl App {
    /// Builds the shared state for `cfg` (loads certificates, builds the client).
    pub fn new(cfg: Config, log: LogHandle) -> Result<Arc<App>, ReloadError> {
        let metrics = Arc::new(Metrics::new());
        let certs = match &cfg.server.tls {
            Some(t) => Some(Arc::new(CertResolver::new(load_certs(
                &t.certificates,
                &metrics,
            )?))),
            None => None,
        };
        let origin = OriginClient::new(&cfg.origin)?;
        let room = Room::with_store(
            cfg.room.as_ref(),
            Room::prepare(cfg.room.as_ref(), None)?,
            metrics.clone(),
            cfg.store.as_ref(),
        )?;
        let vouchers = match &cfg.vouchers {
            Some(v) => {
                let event = cfg.room.as_ref().map_or("default", |r| r.event.as_str());
                // With Redis, the room's connection: one per process.
                Some(Arc::new(crate::vouchers::setup::build(
                    v,
                    event,
                    metrics.clone(),
                    room.redis_claims(),
                )?))
            }
            None => None,
        };
        room.set_vouchers_left(vouchers.as_ref().map(|v| v.remaining()));
        let cfg_pass_rate = pass_rate(&cfg);
        let slots = Slots::new(cfg.origin.max_in_flight, metrics.clone());
        // The closed-loop gate starts from the origin's slots, before the
        // first tick has read its load.
        room.set_origin_load(slots.load());
        metrics.config_last_reload_successful.set(1);
        metrics.config_last_reload_success_timestamp.set(unix_now());
        Ok(Arc::new(App {
            access_log: AccessLog::new(cfg.log.access),
            config: ArcSwap::from_pointee(cfg),
            origin: ArcSwap::from_pointee(origin),
            slots,
            metrics,
            certs,
            bound: Mutex::new(Bound::default()),
            listening: Mutex::new(Bound::default()),
            log,
            pass_limit: ArcSwap::from_pointee(pass_limit(&cfg_pass_rate)),
            room,
            vouchers,
            reload_lock: tokio::sync::Mutex::new(ReloadReport::default()),
        }))
    }

    /// Re-reads the config file and swaps it in, or keeps the running one
    /// and says why. Requests in flight finish on the snapshot they began with.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        let mut last = self.reload_lock.lock().await;
        let current = self.config.load_full();
        let result = self.try_reload(&current);
        match &result {
            Ok(report) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["success"])
                    .inc();
                self.metrics.config_last_reload_successful.set(1);
                self.metrics
                    .config_last_reload_success_timestamp
                    .set(unix_now());
                self.metrics
                    .config_restart_required
                    .set(i64::from(!report.restart_required.is_empty()));
                for what in &report.restart_required {
                    tracing::warn!(setting = %what, "config reloaded, but this change needs a restart");
                }
                tracing::info!("config reloaded");
                *last = report.clone();
            }
            Err(e) => {
                self.metrics
                    .config_reloads
                    .with_label_values(&["failure"])
                    .inc();
                self.metrics.config_last_reload_successful.set(0);
                tracing::error!("config reload failed, keeping the running config: {e}");
            }
        }
        result
    }

    fn try_reload(&self, current: &Config) -> Result<ReloadReport, ReloadError> {
        let new = match &current.source {
            Some(path) => Config::load(path)?,
            None => Config::embedded(),
        };
        // Build everything that can fail before swapping anything.
        let certs = match (&new.server.tls, &self.certs) {
            (Some(t), Some(_)) => Some(load_certs(&t.certificates, &self.metrics)?),
            _ => None,
        };
        let origin = self.origin.load();
        let client = if origin.needs_rebuild(&new.origin) {
            Some(OriginClient::new(&new.origin)?)
        } else {
            None
        };
        let room = Room::prepare(new.room.as_ref(), Some(&self.room))?;
        let report = ReloadReport {
            restart_required: self.restart_required(&new),
        };

        if let (Some(resolver), Some(certs)) = (&self.certs, certs) {
            resolver.replace(certs);
        }
        if let Some(c) = client {
            self.origin.store(Arc::new(c));
        }
        self.slots.resize(new.origin.max_in_flight);
        self.room.apply(new.room.as_ref(), room);
        if self.pass_limit.load().per_second() != pass_rate(&new) {
            self.pass_limit
                .store(Arc::new(pass_limit(&pass_rate(&new))));
        }
        self.access_log.set(new.log.access);
        if new.log.level != current.log.level {
            self.log.set_level(&new.log.level);
        }
        self.config.store(Arc::new(new));
        Ok(report)
    }

    /// Settings in `new` that the running process cannot apply without a restart.
    fn restart_required(&self, new: &Config) -> Vec<String> {
        let bound = self.bound.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut out = Vec::new();
        if sorted(&new.server.listen) != sorted(&bound.plain) {
            out.push("server.listen".to_string());
        }
        let tls: Vec<SocketAddr> = new
            .server
            .tls
            .as_ref()
            .map(|t| t.listen.clone())
            .unwrap_or_default();
        if sorted(&tls) != sorted(&bound.tls) {
            out.push("server.tls.listen".to_string());
        }
        if new.server.admin != bound.admin {
            out.push("server.admin".to_string());
        }
        let current = self.config.load();
        if new.vouchers != current.vouchers {
            // The ledger stays open for the whole event; swapping it live
            // could hand out a unit twice.
            out.push("vouchers".to_string());
        }
        if new.store != current.store {
            // The line's files are opened (and locked) once at start.
            out.push("store".to_string());
        }
        let event = |c: &Config| c.room.as_ref().map(|r| r.event.clone());
        if matches!(
            current.store,
            Some(crate::config::store::StoreConfig::Redis(_))
        ) && event(new) != event(&current)
        {
            // The shared line's keys are named after the event at start.
            out.push("room.event (the shared line in Redis belongs to the event)".to_string());
        }
        if current.vouchers.is_some() && event(new) != event(&current) {
            out.push("room.event (the voucher ledger belongs to the event)".to_string());
        }
        out
    }

    /// What the last successful reload could not apply.
    pub async fn last_reload(&self) -> ReloadReport {
        self.reload_lock.lock().await.clone()
    }

    /// Where the config came from.
    pub fn source(&self) -> Option<PathBuf> {
        self.config.load().source.clone()
    }
}

fn pass_rate(cfg: &Config) -> u32 {
    cfg.room
        .as_ref()
        .map_or(0, |r| r.requests_per_second_per_pass)
}

fn pass_limit(per_second: &u32) -> PassLimit {
    PassLimit::new(*per_second, TokioClock::new(tokio::time::Instant::now()))
}

fn sorted(v: &[SocketAddr]) -> Vec<SocketAddr> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn load_certs(
    files: &[(PathBuf, PathBuf)],
    metrics: &Metrics,
) -> Result<Vec<LoadedCert>, CertError> {
    let certs = files
        .iter()
        .map(|(c, k)| tls::load(c, k))
        .collect::<Result<Vec<_>, _>>()?;
    let now = unix_now() as i64;
    for c in &certs {
        let label = c.path.display().to_string();
        if let Some(t) = c.not_after {
            metrics
                .tls_cert_expiry
                .with_label_values(&[&label])
                .set(t as f64);
            let days = (t - now) / 86_400;
            if days < 14 {
                tracing::warn!(certificate = %label, days_left = days, "TLS certificate expires soon");
            }
        }
    }
    Ok(certs)
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
