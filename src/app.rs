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
use crate::proxy::client::OriginClient;
use crate::proxy::slots::Slots;
use crate::startup::{self, Loaded};
use crate::store::line::files::LineFilesError;
use crate::tls::{CertResolver, LoadedCert};

/// Why a start or a reload was refused (on reload the running config stays).
///
/// Each variant's message is its cause's message: none is also a
/// `source()`, so a chain printed cause by cause says it once.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The file has mistakes, or a file it names cannot be used.
    #[error(transparent)]
    Config(ConfigError),
    /// The room's state (line files, Redis) could not be opened.
    #[error(transparent)]
    Room(RoomError),
    /// The voucher ledger could not be opened.
    #[error(transparent)]
    Vouchers(crate::vouchers::setup::SetupError),
}

impl From<ConfigError> for ReloadError {
    fn from(e: ConfigError) -> Self {
        ReloadError::Config(e)
    }
}

impl From<RoomError> for ReloadError {
    fn from(e: RoomError) -> Self {
        ReloadError::Room(e)
    }
}

impl From<crate::vouchers::setup::SetupError> for ReloadError {
    fn from(e: crate::vouchers::setup::SetupError) -> Self {
        ReloadError::Vouchers(e)
    }
}

impl ReloadError {
    /// Whether the config or the files it names are at fault, so that
    /// retrying cannot help and `usher run` exits 78 (EX_CONFIG): all but
    /// state that another usher process still holds (a restart after it
    /// has exited works).
    pub fn is_config(&self) -> bool {
        match self {
            ReloadError::Config(_) => true,
            ReloadError::Room(RoomError::Store(LineFilesError::Locked(_))) => false,
            // a state directory usher cannot use, a damaged mark, a Redis
            // URL or TLS file that cannot work
            ReloadError::Room(_) => true,
            ReloadError::Vouchers(e) => !e.transient,
        }
    }
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
    /// Announcements and visitors' feedback.
    pub talk: crate::talk::Talk,
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
    /// Builds the shared state for `cfg`: reads every file it names
    /// ([`startup::load`]), then [`App::start`].
    pub fn new(cfg: Config, log: LogHandle) -> Result<Arc<App>, ReloadError> {
        let loaded = startup::load(&cfg, None)?;
        App::start(cfg, loaded, log)
    }

    /// Builds the shared state for `cfg` from its files, already read:
    /// opens the state (line files, Redis, voucher ledger).
    pub fn start(cfg: Config, loaded: Loaded, log: LogHandle) -> Result<Arc<App>, ReloadError> {
        let metrics = Arc::new(Metrics::new());
        zero_series(&metrics);
        let Loaded {
            certs,
            origin,
            room: prepared,
            vouchers: issuer,
        } = loaded;
        let certs = certs.map(|c| {
            record_expiry(&c, &metrics);
            Arc::new(CertResolver::new(c))
        });
        let room = Room::with_store(
            cfg.room.as_ref(),
            prepared,
            metrics.clone(),
            cfg.store.as_ref(),
        )?;
        let vouchers = match (&cfg.vouchers, issuer) {
            (Some(v), Some(issuer)) => {
                let event = cfg.room.as_ref().map_or("default", |r| r.event.as_str());
                // With Redis, the room's connection: one per process.
                Some(Arc::new(crate::vouchers::setup::build(
                    v,
                    issuer,
                    event,
                    metrics.clone(),
                    room.redis_claims(),
                )?))
            }
            _ => None,
        };
        room.set_vouchers_left(vouchers.as_ref().map(|v| v.remaining()));
        let cfg_pass_rate = pass_rate(&cfg);
        let slots = Slots::new(cfg.origin.max_in_flight, metrics.clone());
        // The closed-loop gate starts from the origin's slots, before the
        // first tick has read its load.
        room.set_origin_load(slots.load());
        metrics.config_last_reload_successful.set(1);
        metrics.config_last_reload_success_timestamp.set(unix_now());
        let talk = crate::talk::Talk::new(
            cfg.store.as_ref().and_then(|s| s.state_dir()),
            room.redis_connection().map(|con| {
                let event = cfg.room.as_ref().map_or("default", |r| r.event.as_str());
                crate::store::redis_talk::RedisTalk::new(con, event)
            }),
        );
        if let Some(r) = &cfg.room {
            talk.board
                .from_config(&r.messages, crate::talk::unix_secs());
        }
        talk.webhook
            .set_url(cfg.room.as_ref().and_then(|r| r.feedback_webhook.clone()));
        Ok(Arc::new(App {
            talk,
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
        // Build everything that can fail before swapping anything: the
        // same stage as at start, so a reload refuses what a start would.
        let loaded = startup::load(&new, Some(&self.room))?;
        let certs = match (loaded.certs, &self.certs) {
            (Some(c), Some(_)) => {
                record_expiry(&c, &self.metrics);
                Some(c)
            }
            _ => None,
        };
        let client = self
            .origin
            .load()
            .needs_rebuild(&new.origin)
            .then_some(loaded.origin);
        let room = loaded.room;
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
        if let Some(r) = &new.room {
            self.talk
                .board
                .from_config(&r.messages, crate::talk::unix_secs());
        }
        self.talk
            .webhook
            .set_url(new.room.as_ref().and_then(|r| r.feedback_webhook.clone()));
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
        if new.server.admin_api.socket != current.server.admin_api.socket {
            out.push("server.admin_socket".to_string());
        }
        let pp = |c: &Config| c.server.proxy_protocol.as_ref().map(|p| sorted(&p.listen));
        if pp(new) != pp(&current) {
            // Which listeners read the header is fixed when they start;
            // `from` applies live.
            out.push("server.proxy_protocol.listen".to_string());
        }
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

/// Exports each certificate's expiry and warns about one that ends soon.
fn record_expiry(certs: &[LoadedCert], metrics: &Metrics) {
    let now = unix_now() as i64;
    for c in certs {
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
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Every labelled series dashboards and alerts expect exists from the start,
/// at zero. The labels belong to the modules that count them (metrics knows
/// no module above it), so they are created here, where both meet.
fn zero_series(m: &Metrics) {
    for r in crate::admission::adaptive::Reason::ALL {
        m.room.adaptive_changes.with_label_values(&[r.label()]);
    }
    for cut in crate::admission::flow::Move::ALL
        .iter()
        .filter(|m| m.is_cut())
    {
        m.room.gate_backoffs.with_label_values(&[cut.label()]);
    }
    for l in crate::vouchers::ClaimResult::LABELS {
        m.vouchers.claims.with_label_values(&[l]);
    }
    for c in crate::talk::CATEGORIES {
        m.talk.feedback.with_label_values(&[c]);
    }
    for r in crate::talk::feedback::REFUSALS {
        m.talk.feedback_refused.with_label_values(&[r]);
    }
}

impl crate::vouchers::upkeep::Upkept for App {
    fn recover_after(&self) -> std::time::Duration {
        self.config
            .load()
            .vouchers
            .as_ref()
            .map_or(std::time::Duration::from_secs(30), |c| c.recover_after)
    }

    fn left(&self, left: u64) {
        self.room.set_vouchers_left(Some(left));
        self.metrics.vouchers.remaining.set(left as i64);
    }
}
