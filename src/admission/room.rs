//! The waiting room's state and decisions: who is admitted, who waits and
//! where, and the admission tick that moves the line.
//!
//! One mutex guards the line, the active set, the gate and the rate
//! window; every critical section is short and allocation-free. A visitor
//! with a pass that needs no refresh never takes the lock: passes are
//! checked by signature alone.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use governor::{DefaultKeyedRateLimiter, Quota};
use http::{HeaderMap, HeaderValue};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

use super::active::{Active, RateWindow};
use super::adaptive::{Aimd, OriginHealth};
use super::gate::{Gate, TokioClock};
use super::line::{Line, LineConfig, LineMode, Place};
use super::persist;
#[path = "durable.rs"]
mod durable;
#[path = "room_gate.rs"]
mod room_gate;
pub use room_gate::LONG_POLL_MAX;
#[path = "room_limits.rs"]
mod room_limits;
pub use room_limits::{CHALLENGE_TTL_SECS, POW_COOKIE, POW_HEADER};
#[path = "room_visitor.rs"]
mod room_visitor;
#[path = "shared.rs"]
mod shared;
#[path = "shared_health.rs"]
mod shared_health;
#[path = "shared_outage.rs"]
mod shared_outage;
use crate::config::room::{Mode, RoomConfig};
use crate::holding::{HoldingPages, RoomState, TemplateError};
use crate::metrics::Metrics;
use crate::store::line_files::{LineFiles, LineFilesError};
use crate::tokens::cookie::{get_cookie, SetCookie};
use crate::tokens::{event_id, KeyError, Keyring, Pass, Ticket};
pub use room_visitor::Visitor;

/// Cookie holding the place in line.
pub const TICKET_COOKIE: &str = "usher_ticket";
/// Cookie holding the admission pass.
pub const PASS_COOKIE: &str = "usher_pass";
/// Cookie remembering the chosen page language.
pub const LANG_COOKIE: &str = "usher_lang";

/// Why the room's settings could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// The keys file.
    #[error("room.keys_file: {0}")]
    Keys(KeyError),
    /// The template file could not be read.
    #[error("room.template {path}: {reason}")]
    TemplateFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The template is broken.
    #[error("room.template: {0}")]
    Template(TemplateError),
    /// The line's files under `[store] state_dir`.
    #[error("store: {0}")]
    Store(LineFilesError),
    /// The Redis store could not be set up.
    #[error("{0}")]
    Shared(String),
}

// The wrapped errors are part of each message, so none is also a
// `source()`: a chain printed cause by cause would say everything twice.
impl From<KeyError> for RoomError {
    fn from(e: KeyError) -> Self {
        RoomError::Keys(e)
    }
}

impl From<TemplateError> for RoomError {
    fn from(e: TemplateError) -> Self {
        RoomError::Template(e)
    }
}

impl From<LineFilesError> for RoomError {
    fn from(e: LineFilesError) -> Self {
        RoomError::Store(e)
    }
}

/// Live changes from the admin API; they outlast config reloads until reset.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Mode (pause and resume set and clear `paused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Active visitors at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_users: Option<u64>,
    /// New visitors per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_users_per_minute: Option<u32>,
    /// Operator's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The room's effective settings: config with overrides applied.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Settings {
    /// Mode.
    pub mode: Mode,
    /// Active visitors at most (with the closed-loop gate: its limit now,
    /// under any ceiling).
    pub max_active_users: u64,
    /// New visitors per minute (0: no fixed rate, the closed-loop gate
    /// alone decides).
    pub new_users_per_minute: u32,
    /// Operator's message.
    pub message: String,
}

/// The answer for one visitor.
#[derive(Debug)]
pub enum Verdict {
    /// Go on to the origin.
    Admit {
        /// The pass id (to free the slot if the origin says so).
        pass_id: u64,
        /// Cookies to set on the answer (a new or refreshed pass, a cleared ticket).
        cookies: Vec<HeaderValue>,
    },
    /// Wait: show the holding page or status JSON.
    Hold(Hold),
    /// No answer possible now (the durable store cannot reserve ticket
    /// numbers): a 503-like refusal with a wait. The per-address limits are
    /// holding answers ([`Hold::retry_after`], [`Hold::challenge`]), never this.
    Limited {
        /// Seconds to wait.
        retry_after: u64,
        /// What is limited (`store`).
        scope: &'static str,
    },
}

/// What the holding page or JSON shows.
#[derive(Debug)]
pub struct Hold {
    /// The state shown.
    pub state: RoomState,
    /// Live visitors ahead (FIFO), when known.
    pub position: Option<u64>,
    /// Estimated wait, when the rate is known.
    pub eta_seconds: Option<u64>,
    /// Seconds until the scheduled opening.
    pub opens_in_seconds: Option<u64>,
    /// Cookies to set (a new ticket).
    pub cookies: Vec<HeaderValue>,
    /// Come back after this many seconds (`Retry-After`, and the page's
    /// next poll): set when the address is over a limit, so this answer
    /// says nothing about the visitor's place.
    pub retry_after: Option<u64>,
    /// A proof-of-work challenge and its bits, for a newcomer over the
    /// per-address ticket limit (see `room_limits`).
    pub challenge: Option<(String, u32)>,
}

impl Hold {
    /// A holding answer in `state` with nothing else known.
    pub fn bare(state: RoomState) -> Hold {
        Hold {
            state,
            position: None,
            eta_seconds: None,
            opens_in_seconds: None,
            cookies: Vec::new(),
            retry_after: None,
            challenge: None,
        }
    }

    /// "Still waiting, come back in `seconds`": over a per-address limit.
    pub fn retry(seconds: u64) -> Hold {
        Hold {
            retry_after: Some(seconds),
            ..Hold::bare(RoomState::Queued)
        }
    }
}

struct State {
    event_id: u64,
    line: Line,
    active: Active,
    gate: Gate<TokioClock>,
    rate: RateWindow,
    rng: StdRng,
    ticks: u64,
    /// Ticket numbers up to here are reserved on disk (durable store only).
    mark: u64,
    /// False when the mark of the current event could not be read: no
    /// ticket is issued rather than risk a number twice.
    mark_ok: bool,
}

type IpLimiter = DefaultKeyedRateLimiter<IpAddr>;

/// The waiting room.
pub struct Room {
    epoch: tokio::time::Instant,
    /// Added to the room clock: a restored room resumes its snapshot's clock.
    clock_base: u64,
    /// The line's files with `[store]`.
    files: Option<LineFiles>,
    /// The shared line with `[store] backend = "redis"`.
    shared: Option<shared::Shared>,
    /// Wall time (unix ms) at `epoch`: the room's wall clock advances with
    /// its monotonic one, so tokens, opening times and tests agree.
    wall_epoch: u64,
    state: Mutex<State>,
    keys: ArcSwap<Keyring>,
    pages: ArcSwap<HoldingPages>,
    overrides: Mutex<Overrides>,
    ticket_limit: ArcSwap<(u32, IpLimiter)>,
    request_limit: ArcSwap<(u32, Option<IpLimiter>)>,
    /// Proof-of-work challenges accepted, so each is accepted once.
    spent: Mutex<room_limits::Spent>,
    event_id: AtomicU64,
    opened_hash: Mutex<Option<String>>,
    draining: AtomicBool,
    metrics: Arc<Metrics>,
    /// Origin answers seen by the proxy, for the adaptive gate.
    pub health: OriginHealth,
    /// The adaptive gate's rate and when it last moved (room ms).
    adaptive: Mutex<Option<(Aimd, u64)>>,
    /// The closed-loop gate, once the origin's load has been read.
    flow: Mutex<Option<super::flow::Flow>>,
    /// Its limit as of the last tick (0: not stepped yet), read on the
    /// request path without the lock.
    flow_limit_now: AtomicU64,
    /// The origin's load as last read by the tick loop.
    origin_load: Mutex<Option<crate::proxy::slots::Load>>,
    /// Places granted so far, for long polls (see `room_gate`).
    handoff: tokio::sync::watch::Sender<u64>,
    /// Visitors inside (active plus fresh grants) right after the last
    /// tick's grants: with short visits they are gone by the next tick, yet
    /// the limit held the line back at that moment.
    used_after_tick: AtomicU64,
    /// Vouchers left (`u64::MAX`: the event has no vouchers).
    vouchers_left: AtomicU64,
    /// The origin said its own stock is gone (`X-Usher-Sold-Out`).
    origin_sold_out: AtomicBool,
}

/// Everything a reload must load before it can swap (files that may fail).
pub struct Prepared {
    keys: Keyring,
    pages: HoldingPages,
}

impl Prepared {
    /// The room's keys and pages, read by the start-up stage
    /// ([`crate::startup`]).
    pub fn new(keys: Keyring, pages: HoldingPages) -> Prepared {
        Prepared { keys, pages }
    }

    /// The running room's keys: what a config without `room.keys_file`
    /// keeps across a reload (its random key).
    pub fn running_keys(room: &Room) -> Keyring {
        Keyring::clone(&room.keys.load())
    }
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn line_config(cfg: &RoomConfig, mode: Mode) -> LineConfig {
    LineConfig {
        grace_ms: cfg.ticket_grace.as_millis() as u64,
        claim_window_ms: cfg.claim_window.as_millis() as u64,
        mode: if mode == Mode::Random {
            LineMode::Random
        } else {
            LineMode::Fifo
        },
    }
}

fn ip_limiter(per: u32, minute: bool) -> IpLimiter {
    let n = NonZeroU32::new(per.max(1)).unwrap_or(NonZeroU32::MIN);
    let quota = if minute {
        // A quarter of the minute's allowance at once: a family behind one
        // address can all join, a script cannot farm places.
        Quota::per_minute(n)
            .allow_burst(NonZeroU32::new((per / 4).max(5)).unwrap_or(NonZeroU32::MIN))
    } else {
        Quota::per_second(n)
            .allow_burst(NonZeroU32::new(per.saturating_mul(2)).unwrap_or(NonZeroU32::MIN))
    };
    IpLimiter::keyed(quota)
}

impl Room {
    /// Loads what `cfg` names (keys, template) without applying it.
    /// Without a keys file, the running room's random key is kept, so a
    /// reload does not cost anyone their place.
    pub fn prepare(
        cfg: Option<&RoomConfig>,
        running: Option<&Room>,
    ) -> Result<Prepared, RoomError> {
        let keys = match (cfg.and_then(|c| c.keys_file.as_ref()), running) {
            (Some(path), _) => Keyring::load(path)?,
            (None, Some(room)) => Keyring::clone(&room.keys.load()),
            (None, None) => Keyring::ephemeral(),
        };
        let template = match cfg.and_then(|c| c.template.as_ref()) {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|e| RoomError::TemplateFile {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?,
                )
            }
            None => None,
        };
        let pages = HoldingPages::new(template.as_deref())?;
        Ok(Prepared { keys, pages })
    }

    /// A room for `cfg` (an idle one when the config has no `[room]`).
    pub fn new(cfg: Option<&RoomConfig>, prepared: Prepared, metrics: Arc<Metrics>) -> Room {
        Room::build(cfg, prepared, metrics, None)
    }

    fn build(
        cfg: Option<&RoomConfig>,
        prepared: Prepared,
        metrics: Arc<Metrics>,
        store: Option<(LineFiles, persist::Resumed)>,
    ) -> Room {
        let epoch = tokio::time::Instant::now();
        let wall_epoch = wall_ms();
        let default = RoomConfig::defaults();
        let c = cfg.unwrap_or(&default);
        if cfg.is_some_and(|c| c.keys_file.is_none()) {
            tracing::warn!("room.keys_file is not set: using a random key, so places in line do not survive a restart");
        }
        let prequeue = c
            .opens_at
            .as_ref()
            .is_some_and(|(_, at)| unix_ms(*at) > wall_epoch);
        let state = State {
            event_id: event_id(&c.event),
            line: Line::new(line_config(c, c.mode), 0, prequeue),
            active: Active::default(),
            gate: Gate::new(c.new_users_per_minute, c.burst, TokioClock::new(epoch)),
            rate: RateWindow::new(60_000),
            rng: StdRng::from_os_rng(),
            ticks: 0,
            mark: 0,
            mark_ok: true,
        };
        let mut state = state;
        let (files, clock_base) = match store {
            Some((files, r)) => {
                state.line = r.line;
                state.active = r.active;
                state.rate = r.rate;
                state.mark = r.mark;
                (Some(files), r.clock)
            }
            None => (None, 0),
        };
        Room {
            epoch,
            clock_base,
            files,
            shared: None,
            wall_epoch,
            event_id: AtomicU64::new(state.event_id),
            state: Mutex::new(state),
            keys: ArcSwap::from_pointee(prepared.keys),
            pages: ArcSwap::from_pointee(prepared.pages),
            overrides: Mutex::new(Overrides::default()),
            ticket_limit: ArcSwap::from_pointee((
                c.tickets_per_minute_per_ip,
                ip_limiter(c.tickets_per_minute_per_ip, true),
            )),
            request_limit: ArcSwap::from_pointee((
                c.requests_per_second_per_ip,
                (c.requests_per_second_per_ip > 0)
                    .then(|| ip_limiter(c.requests_per_second_per_ip, false)),
            )),
            spent: Mutex::new(room_limits::Spent::default()),
            opened_hash: Mutex::new(None),
            draining: AtomicBool::new(false),
            metrics,
            health: OriginHealth::default(),
            adaptive: Mutex::new(None),
            flow: Mutex::new(None),
            flow_limit_now: AtomicU64::new(0),
            origin_load: Mutex::new(None),
            handoff: tokio::sync::watch::Sender::new(0),
            used_after_tick: AtomicU64::new(0),
            vouchers_left: AtomicU64::new(u64::MAX),
            origin_sold_out: AtomicBool::new(false),
        }
    }

    /// Applies a reloaded config. A new event name starts a new line.
    pub fn apply(&self, cfg: Option<&RoomConfig>, prepared: Prepared) {
        self.keys.store(Arc::new(prepared.keys));
        self.pages.store(Arc::new(prepared.pages));
        let Some(c) = cfg else { return };
        if self.ticket_limit.load().0 != c.tickets_per_minute_per_ip {
            self.ticket_limit.store(Arc::new((
                c.tickets_per_minute_per_ip,
                ip_limiter(c.tickets_per_minute_per_ip, true),
            )));
        }
        if self.request_limit.load().0 != c.requests_per_second_per_ip {
            self.request_limit.store(Arc::new((
                c.requests_per_second_per_ip,
                (c.requests_per_second_per_ip > 0)
                    .then(|| ip_limiter(c.requests_per_second_per_ip, false)),
            )));
        }
        let settings = self.settings(c);
        let now = self.now_ms();
        let mut s = self.lock();
        let id = event_id(&c.event);
        if id != s.event_id && self.shared.is_some() {
            tracing::warn!(event = %c.event, "room.event changed: the shared line keeps its event until a restart");
        } else if id != s.event_id {
            tracing::warn!(event = %c.event, "room.event changed: a new line starts");
            let prequeue = c
                .opens_at
                .as_ref()
                .is_some_and(|(_, at)| unix_ms(*at) > self.unix_ms());
            s.line = Line::new(line_config(c, settings.mode), now, prequeue);
            if let Some(files) = &self.files {
                // The new event's numbering resumes above its own mark; its
                // old snapshot (another clock) is not restored.
                match files.load(id) {
                    Ok(found) => {
                        s.line = Line::empty_above(
                            line_config(c, settings.mode),
                            now,
                            found.mark,
                            prequeue,
                        );
                        (s.mark, s.mark_ok) = (found.mark, true);
                    }
                    Err(e) => {
                        tracing::error!(
                            "{e}: no ticket is issued for this event until this is fixed"
                        );
                        s.mark_ok = false;
                    }
                }
            }
            s.event_id = id;
            self.event_id.store(id, Ordering::Relaxed);
            self.clear_origin_sold_out();
            *self.opened_hash.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        s.line.set_config(line_config(c, settings.mode));
        if !s.gate.same(settings.new_users_per_minute, c.burst) {
            s.gate = Gate::new(
                settings.new_users_per_minute,
                c.burst,
                TokioClock::new(self.epoch),
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Unix time in milliseconds on the room's clock.
    pub fn unix_ms(&self) -> u64 {
        self.wall_epoch + self.epoch.elapsed().as_millis() as u64
    }

    /// Milliseconds on the room's clock (tokio's, so tests can pause it).
    pub fn now_ms(&self) -> u64 {
        self.clock_base + self.epoch.elapsed().as_millis() as u64
    }

    /// The settings in force: config plus admin overrides.
    pub fn settings(&self, cfg: &RoomConfig) -> Settings {
        let flow = self.flow_limit(cfg);
        let o = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
        // With the closed-loop gate, the file's and the operator's numbers
        // are ceilings over its limit; without it, they are the numbers.
        let max_active_users = match (cfg.closed_loop, o.max_active_users) {
            (Some(cl), over) => {
                let ceiling = over.or(cl.max_active).unwrap_or(u64::MAX);
                flow.unwrap_or(ceiling).min(ceiling)
            }
            (None, Some(over)) => over,
            (None, None) => cfg.max_active_users,
        };
        Settings {
            mode: o.mode.as_deref().and_then(Mode::parse).unwrap_or(cfg.mode),
            max_active_users,
            new_users_per_minute: o.new_users_per_minute.unwrap_or_else(|| {
                let adaptive = self.adaptive.lock().unwrap_or_else(|e| e.into_inner());
                match (&cfg.adaptive, *adaptive, cfg.closed_loop) {
                    (_, _, Some(cl)) => cl.per_minute.unwrap_or(0),
                    (Some(_), Some((aimd, _)), None) => aimd.rate,
                    _ => cfg.new_users_per_minute,
                }
            }),
            message: o.message.clone().unwrap_or_else(|| cfg.message.clone()),
        }
    }

    /// Changes the overrides (`None` fields keep theirs) and applies them.
    pub fn set_overrides(&self, cfg: &RoomConfig, change: Overrides) -> Result<Settings, String> {
        if let Some(m) = &change.mode {
            Mode::parse(m).ok_or_else(|| {
                format!("mode `{m}`: use fifo, random, passthrough, closed or paused")
            })?;
        }
        if change.max_active_users == Some(0) || change.new_users_per_minute == Some(0) {
            return Err("rates and capacities must be at least 1 (pause the room instead)".into());
        }
        {
            let mut o = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
            if change.mode.is_some() {
                o.mode = change.mode;
            }
            if change.max_active_users.is_some() {
                o.max_active_users = change.max_active_users;
            }
            if change.new_users_per_minute.is_some() {
                o.new_users_per_minute = change.new_users_per_minute;
            }
            if change.message.is_some() {
                o.message = change.message;
            }
        }
        let settings = self.settings(cfg);
        let mut s = self.lock();
        s.line.set_config(line_config(cfg, settings.mode));
        if !s.gate.same(settings.new_users_per_minute, cfg.burst) {
            s.gate = Gate::new(
                settings.new_users_per_minute,
                cfg.burst,
                TokioClock::new(self.epoch),
            );
        }
        Ok(settings)
    }

    /// Clears the mode override (resume) or every override (`all`).
    pub fn clear_overrides(&self, cfg: &RoomConfig, all: bool) -> Settings {
        {
            let mut o = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
            if all {
                *o = Overrides::default();
                self.clear_origin_sold_out();
            } else {
                o.mode = None;
            }
        }
        let _ = self.set_overrides(cfg, Overrides::default());
        self.settings(cfg)
    }

    /// The overrides in force.
    pub fn overrides(&self) -> Overrides {
        self.overrides
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Marks the node as draining (readiness fails so the balancer moves away).
    pub fn set_draining(&self, on: bool) {
        self.draining.store(on, Ordering::Relaxed);
    }

    /// Whether the node is draining.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// The holding page renderer.
    pub fn pages(&self) -> arc_swap::Guard<Arc<HoldingPages>> {
        self.pages.load()
    }

    fn cookie(
        &self,
        cfg: &RoomConfig,
        name: &str,
        value: &str,
        max_age: u64,
        secure: bool,
    ) -> HeaderValue {
        SetCookie {
            name,
            value,
            max_age: Some(max_age),
            secure,
            domain: cfg.cookie_domain.as_deref(),
        }
        .to_header_value()
    }

    /// Decides for one request to a protected path.
    pub fn decide(
        &self,
        cfg: &RoomConfig,
        headers: &HeaderMap,
        ip: IpAddr,
        secure: bool,
    ) -> Verdict {
        if let Some(v) = self.early(cfg, headers, ip, secure) {
            return v;
        }
        self.decide_line(cfg, headers, ip, secure)
    }

    /// What needs no line: a valid pass, the per-address request limit,
    /// sold out, closed, passthrough.
    ///
    /// The pass comes first: an admitted visitor is governed by the
    /// per-pass limit (`requests_per_second_per_pass`, which also bounds a
    /// copied pass), so many admitted visitors behind one carrier address
    /// neither see the address limit nor use up the allowance of those
    /// still waiting behind it. A pass costs one HMAC and no lock, so
    /// checking it before the address limit gives a flood nothing cheaper.
    pub(super) fn early(
        &self,
        cfg: &RoomConfig,
        headers: &HeaderMap,
        ip: IpAddr,
        secure: bool,
    ) -> Option<Verdict> {
        let m = &self.metrics.room;
        let event = self.event_id.load(Ordering::Relaxed);
        let now_unix = self.unix_ms() / 1000;
        let keys = self.keys.load();

        if let Some(token) = get_cookie(headers, PASS_COOKIE) {
            match keys.open_pass(token, event, now_unix) {
                Ok(pass) => return Some(self.admit_pass(cfg, &keys, pass, now_unix, secure)),
                Err(r) => m
                    .token_rejects
                    .with_label_values(&["pass", r.label()])
                    .inc(),
            }
        }
        if let Some(v) = self.request_limited(cfg, ip) {
            return Some(v);
        }
        if self.vouchers_left() == Some(0) {
            return Some(Verdict::Hold(Hold::bare(RoomState::SoldOut)));
        }
        let settings = self.settings(cfg);
        match settings.mode {
            Mode::Closed => return Some(Verdict::Hold(Hold::bare(RoomState::Closed))),
            Mode::Passthrough => {
                let pass_id = self.lock().rng.random();
                m.admitted_direct.inc();
                return Some(self.new_pass(
                    cfg,
                    &keys,
                    pass_id,
                    now_unix,
                    now_unix,
                    secure,
                    Vec::new(),
                ));
            }
            _ => {}
        }
        None
    }

    fn decide_line(
        &self,
        cfg: &RoomConfig,
        headers: &HeaderMap,
        ip: IpAddr,
        secure: bool,
    ) -> Verdict {
        let m = &self.metrics.room;
        let event = self.event_id.load(Ordering::Relaxed);
        let now_unix = self.unix_ms() / 1000;
        let keys = self.keys.load();
        let settings = self.settings(cfg);
        let now = self.now_ms();
        let mut cookies = Vec::new();
        if let Some(token) = get_cookie(headers, TICKET_COOKIE) {
            match keys.open_ticket(token, event, now_unix, cfg.ticket_max_age.as_secs()) {
                Ok(ticket) => {
                    let mut s = self.lock();
                    match s.line.observe(ticket.number, now) {
                        Place::Granted if s.line.take(ticket.number, now) => {
                            let pass_id = s.rng.random();
                            drop(s);
                            m.admitted_line.inc();
                            m.wait_seconds
                                .observe(now_unix.saturating_sub(ticket.issued_at) as f64);
                            cookies.push(SetCookie::clear(
                                TICKET_COOKIE,
                                secure,
                                cfg.cookie_domain.as_deref(),
                            ));
                            return self.new_pass(
                                cfg, &keys, pass_id, now_unix, now_unix, secure, cookies,
                            );
                        }
                        Place::Waiting { position } => {
                            return Verdict::Hold(self.hold(
                                cfg,
                                &settings,
                                &s,
                                Some(position),
                                now,
                            ));
                        }
                        Place::InDraw { .. } => {
                            return Verdict::Hold(self.hold(cfg, &settings, &s, None, now))
                        }
                        // Skipped while away, grant expired, or from another life:
                        // a new place at the back.
                        _ => {}
                    }
                }
                Err(r) => m
                    .token_rejects
                    .with_label_values(&["ticket", r.label()])
                    .inc(),
            }
        }

        // A new visitor.
        if let Some(limited) = self.ticket_gate(cfg, headers, ip) {
            return limited;
        }
        let mut s = self.lock();
        let admits = matches!(settings.mode, Mode::Fifo | Mode::Random);
        if admits && s.line.is_open() && s.line.waiting() == 0 {
            let free = self.free_places(cfg, &settings, s.active.len(), &s.line, now);
            let rated = settings.new_users_per_minute > 0;
            if free > 0 && (!rated || s.gate.take(1) == 1) {
                let pass_id = s.rng.random();
                s.rate.record(now, 1);
                drop(s);
                m.admitted_direct.inc();
                return self.new_pass(cfg, &keys, pass_id, now_unix, now_unix, secure, cookies);
            }
        }
        if !self.reserve(&mut s) {
            return Verdict::Limited {
                retry_after: 5,
                scope: "store",
            };
        }
        let number = s.line.issue(now);
        m.tickets_issued.inc();
        let position = match s.line.observe(number, now) {
            Place::Waiting { position } => Some(position),
            _ => None,
        };
        let mut hold = self.hold(cfg, &settings, &s, position, now);
        drop(s);
        let token = keys.seal_ticket(&Ticket {
            event,
            number,
            issued_at: now_unix,
        });
        hold.cookies.push(self.cookie(
            cfg,
            TICKET_COOKIE,
            &token,
            cfg.ticket_max_age.as_secs(),
            secure,
        ));
        Verdict::Hold(hold)
    }

    fn hold(
        &self,
        cfg: &RoomConfig,
        settings: &Settings,
        s: &State,
        position: Option<u64>,
        now: u64,
    ) -> Hold {
        let opens_in = cfg
            .opens_at
            .as_ref()
            .map(|(_, at)| unix_ms(*at).saturating_sub(self.unix_ms()) / 1000)
            .filter(|s| *s > 0);
        let state = if !s.line.is_open() {
            RoomState::Prequeue
        } else if settings.mode == Mode::Paused {
            RoomState::Paused
        } else {
            RoomState::Queued
        };
        let eta_seconds = match (state, s.rate.per_second(now)) {
            (RoomState::Queued, Some(rate)) if rate > 0.0 => {
                let ahead = position.unwrap_or_else(|| s.line.waiting()) as f64;
                Some(((ahead + 1.0) / rate).ceil() as u64)
            }
            _ => None,
        };
        Hold {
            position,
            eta_seconds,
            opens_in_seconds: opens_in,
            ..Hold::bare(state)
        }
    }

    /// A valid pass: go on, refreshing it (and the active slot) at most
    /// once per refresh step so most requests take no lock at all.
    fn admit_pass(
        &self,
        cfg: &RoomConfig,
        keys: &Keyring,
        pass: Pass,
        now_unix: u64,
        secure: bool,
    ) -> Verdict {
        let session = cfg.session_duration.as_secs();
        let step = (session / 10).max(5);
        let refreshed_at = pass.expires_at.saturating_sub(session + step);
        if now_unix.saturating_sub(refreshed_at) < step {
            return Verdict::Admit {
                pass_id: pass.pass_id,
                cookies: Vec::new(),
            };
        }
        self.new_pass(
            cfg,
            keys,
            pass.pass_id,
            pass.admitted_at,
            now_unix,
            secure,
            Vec::new(),
        )
    }

    /// Seals a pass valid for a session (plus one refresh step) from now
    /// and counts its holder as active until then.
    #[allow(clippy::too_many_arguments)]
    fn new_pass(
        &self,
        cfg: &RoomConfig,
        keys: &Keyring,
        pass_id: u64,
        admitted_at: u64,
        now_unix: u64,
        secure: bool,
        mut cookies: Vec<HeaderValue>,
    ) -> Verdict {
        let session = cfg.session_duration.as_secs();
        let step = (session / 10).max(5);
        let expires_at = now_unix + session + step;
        let until = self.now_ms() + (session + step) * 1000;
        self.lock().active.touch(pass_id, until);
        if let Some(sh) = &self.shared {
            sh.touch_later(pass_id, self.unix_ms() + (session + step) * 1000);
        }
        let token = keys.seal_pass(&Pass {
            event: self.event_id.load(Ordering::Relaxed),
            pass_id,
            admitted_at,
            expires_at,
        });
        cookies.push(self.cookie(cfg, PASS_COOKIE, &token, session + step, secure));
        Verdict::Admit { pass_id, cookies }
    }

    /// Records the vouchers left; at zero the room is sold out at once:
    /// people in line are told on their next poll, newcomers get no ticket,
    /// admitted visitors keep using the site.
    pub fn set_vouchers_left(&self, left: Option<u64>) {
        self.vouchers_left
            .store(left.unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Vouchers left, when the event has any (0 once the origin said its
    /// own stock is gone, see [`Room::origin_sold_out`]).
    pub fn vouchers_left(&self) -> Option<u64> {
        if self.origin_sold_out.load(Ordering::Relaxed) {
            return Some(0);
        }
        Some(self.vouchers_left.load(Ordering::Relaxed)).filter(|n| *n != u64::MAX)
    }

    /// The origin answered `X-Usher-Sold-Out: 1`: a site that gives out
    /// its own vouchers says its stock is gone. From now on the room is sold
    /// out, as when usher's own stock reaches zero: people in line are told
    /// on their next poll, newcomers get no ticket, admitted visitors keep
    /// using the site. Until the event changes or the operator resets the
    /// room. Returns true the first time.
    pub fn origin_sold_out(&self) -> bool {
        let first = !self.origin_sold_out.swap(true, Ordering::Relaxed);
        if first {
            tracing::warn!(
                "the origin said its stock is gone (X-Usher-Sold-Out): the room is sold out"
            );
        }
        first
    }

    /// Forgets the origin's sold-out (a new event, or an operator's reset).
    pub fn clear_origin_sold_out(&self) {
        self.origin_sold_out.store(false, Ordering::Relaxed);
    }

    /// The valid pass a request carries, if any (no side effects beyond
    /// counting a rejected token).
    pub fn check_pass(&self, headers: &HeaderMap) -> Option<Pass> {
        let token = get_cookie(headers, PASS_COOKIE)?;
        let event = self.event_id.load(Ordering::Relaxed);
        match self
            .keys
            .load()
            .open_pass(token, event, self.unix_ms() / 1000)
        {
            Ok(p) => Some(p),
            Err(r) => {
                self.metrics
                    .room
                    .token_rejects
                    .with_label_values(&["pass", r.label()])
                    .inc();
                None
            }
        }
    }

    /// Frees a visitor's slot at once (`X-Usher-Release` from the origin).
    pub fn release(&self, pass_id: u64) {
        self.lock().active.release(pass_id);
        if let Some(sh) = &self.shared {
            sh.release(pass_id);
        }
    }

    /// One admission tick: rotate liveness, open a scheduled event, and let
    /// in as many as the rate and free capacity allow.
    pub fn tick(&self, cfg: &RoomConfig) {
        let now = self.now_ms();
        self.adapt(cfg, now);
        let handoff = Self::handoff_ms(cfg);
        let (used, waiting) = {
            let s = self.lock();
            (
                (s.active.len() + s.line.pending_recent(now, handoff))
                    .max(self.used_after_tick.load(Ordering::Relaxed)),
                s.line.waiting() > 0,
            )
        };
        self.step_flow(cfg, now, used, waiting);
        let settings = self.settings(cfg);
        let m = &self.metrics.room;
        let mut s = self.lock();
        let active = s.active.prune(now);
        if !s.line.is_open()
            && cfg
                .opens_at
                .as_ref()
                .is_none_or(|(_, at)| unix_ms(*at) <= self.unix_ms())
        {
            let seed = self.prequeue_seed(cfg);
            let hash = s.line.open(seed);
            tracing::info!(event = %cfg.event, seed_sha256 = %hash, prequeue = s.line.stats().prequeue, "room opened: pre-queue shuffled once");
            *self.opened_hash.lock().unwrap_or_else(|e| e.into_inner()) = Some(hash);
        }
        let admitting = matches!(settings.mode, Mode::Fifo | Mode::Random) && s.line.is_open();
        let budget = if admitting {
            let free = self.free_places(cfg, &settings, active, &s.line, now);
            let want = free.min(s.line.waiting());
            if settings.new_users_per_minute == 0 {
                want
            } else {
                s.gate.take(want)
            }
        } else {
            0
        };
        let State { line, rng, .. } = &mut *s;
        let out = line.tick(now, budget, rng);
        s.rate.record(now, out.granted);
        s.ticks += 1;
        let rate = s.rate.per_second(now);
        let waiting = s.line.waiting();
        m.queue_length.set(waiting as i64);
        m.active_users.set(s.active.len() as i64);
        m.pending_admissions.set(s.line.pending() as i64);
        m.admission_rate.set(rate.unwrap_or(0.0));
        m.wait_estimate.set(
            rate.filter(|r| *r > 0.0)
                .map_or(0.0, |r| waiting as f64 / r),
        );
        m.max_active_users.set(settings.max_active_users as i64);
        m.new_users_per_minute
            .set(match settings.new_users_per_minute {
                // No fixed rate: what the closed-loop gate admits, per minute.
                0 => (rate.unwrap_or(0.0) * 60.0).round() as i64,
                n => i64::from(n),
            });
        let prune = s.ticks % 40 == 0;
        let open = s.line.is_open();
        let granted_total = s.line.stats().granted_total;
        self.used_after_tick.store(
            s.active.len() + s.line.pending_recent(now, handoff),
            Ordering::Relaxed,
        );
        drop(s);
        self.announce_grants(granted_total);
        m.set_state(match settings.mode {
            _ if self.vouchers_left() == Some(0) => "sold_out",
            _ if !open => "prequeue",
            Mode::Fifo | Mode::Random => "open",
            Mode::Paused => "paused",
            Mode::Closed => "closed",
            Mode::Passthrough => "passthrough",
        });
        if prune {
            self.prune_limiters();
        }
    }

    /// governor keeps state for every address ever seen: forget the ones
    /// whose limits have refilled, so a million addresses pass through
    /// without a million entries staying.
    fn prune_limiters(&self) {
        let t = self.ticket_limit.load();
        t.1.retain_recent();
        t.1.shrink_to_fit();
        if let Some(r) = &self.request_limit.load().1 {
            r.retain_recent();
            r.shrink_to_fit();
        }
        self.spent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .prune(self.unix_ms() / 1000);
    }

    /// The adaptive gate's step, once per interval: the admission rate
    /// follows the origin's health between floor and ceiling.
    fn adapt(&self, cfg: &RoomConfig, now: u64) {
        let Some(a) = &cfg.adaptive else {
            *self.adaptive.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return;
        };
        let waiting = self.lock().line.waiting() > 0;
        let changed = {
            let mut slot = self.adaptive.lock().unwrap_or_else(|e| e.into_inner());
            let (aimd, last) =
                slot.get_or_insert_with(|| (Aimd::new(a, cfg.new_users_per_minute), now));
            if now.saturating_sub(*last) < a.interval.as_millis() as u64 {
                return;
            }
            *last = now;
            let before = aimd.rate;
            let sample = self.health.take();
            aimd.step(a, sample, waiting)
                .map(|reason| (before, aimd.rate, reason, sample))
        };
        let m = &self.metrics.room;
        if let Some((from, to, reason, sample)) = changed {
            m.adaptive_changes
                .with_label_values(&[reason.label()])
                .inc();
            tracing::info!(
                from,
                to,
                reason = reason.label(),
                origin_requests = sample.requests,
                origin_errors = sample.errors,
                origin_mean_latency_ms = sample.mean_latency.as_millis() as u64,
                "adaptive gate changed the admission rate"
            );
            let settings = self.settings(cfg);
            let mut s = self.lock();
            if !s.gate.same(settings.new_users_per_minute, cfg.burst) {
                s.gate = Gate::new(
                    settings.new_users_per_minute,
                    cfg.burst,
                    TokioClock::new(self.epoch),
                );
            }
        }
        if let Some((aimd, _)) = *self.adaptive.lock().unwrap_or_else(|e| e.into_inner()) {
            m.adaptive_rate.set(i64::from(aimd.rate));
        }
    }

    /// The pre-queue shuffle seed: derived from the signing key, so it is
    /// secret until the opening yet fixed for the event (its hash is logged
    /// for audit, and the same key and event give the same order).
    fn prequeue_seed(&self, cfg: &RoomConfig) -> [u8; 32] {
        let opens = cfg
            .opens_at
            .as_ref()
            .and_then(|(_, at)| at.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let material = self.keys.load().seal_ticket(&Ticket {
            event: event_id(&cfg.event),
            number: 0,
            issued_at: opens,
        });
        let mut h = Sha256::new();
        h.update(b"usher prequeue seed\0");
        h.update(material.as_bytes());
        h.finalize().into()
    }

    /// The line's figures for `/admin/status`.
    pub fn status(&self, cfg: &RoomConfig) -> serde_json::Value {
        let settings = self.settings(cfg);
        let now = self.now_ms();
        let s = self.lock();
        let st = s.line.stats();
        let rate = s.rate.per_second(now);
        let mut v = serde_json::json!({
            "event": cfg.event,
            "settings": settings,
            "overrides": self.overrides(),
            "open": st.open,
            "opens_at": cfg.opens_at.as_ref().map(|(t, _)| t.clone()),
            "prequeue_seed_sha256": self.opened_hash.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            "issued": st.issued,
            "waiting": st.waiting,
            "active": s.active.len(),
            "pending": st.pending,
            "admitted_from_line": st.taken_total,
            "skipped_abandoned": st.skipped_total,
            "expired_grants": st.expired_total,
            "admission_rate_per_second": rate,
            "wait_estimate_seconds": rate.filter(|r| *r > 0.0).map(|r| (st.waiting as f64 / r).ceil()),
            "line_memory_bytes": st.memory_bytes,
            "draining": self.draining(),
            "vouchers_left": self.vouchers_left(),
            "store_up": self.store_up(),
            "shared": self.shared_status(),
            "gate": self.gate_status(cfg),
        });
        drop(s);
        if let Some(shared) = self.shared_status() {
            // The line is in Redis: its figures, not this node's empty one.
            for key in ["waiting", "active", "pending"] {
                v[key] = shared[key].clone();
            }
            v["wait_estimate_seconds"] = serde_json::json!(rate
                .filter(|r| *r > 0.0)
                .map(|r| (shared["waiting"].as_u64().unwrap_or(0) as f64 / r).ceil()));
            for key in [
                "issued",
                "admitted_from_line",
                "skipped_abandoned",
                "expired_grants",
                "line_memory_bytes",
            ] {
                v[key] = serde_json::Value::Null;
            }
        }
        v
    }
}
