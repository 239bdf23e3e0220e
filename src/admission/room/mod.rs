//! The waiting room: who is admitted, who waits and where, and the
//! admission tick that moves the line.
//!
//! The room is split by responsibility:
//! - `settings`: the config, the operator's overrides, the adaptive rate;
//! - `limits`: the per-address limits and the proof of work;
//! - `seal`: passes and tickets sealed into cookies, a pass's lifetime;
//! - `verdict`: the answer for one request, with what the holding page needs;
//! - `decide` and `tick`: the decision per request and the admission tick;
//! - `gate`: the closed-loop gate's side and the long poll;
//! - `durable`, `shared*`: the line's files and the shared line in Redis;
//! - `status`: the typed `/admin/status` figures.
//!
//! One mutex guards the line, the active set, the gate and the rate
//! window; every critical section is short and allocation-free. A visitor
//! with a pass that needs no refresh never takes the lock: passes are
//! checked by signature alone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::active::{Active, RateWindow};
use super::gate::{Gate, TokioClock};
use super::line::{Line, LineConfig, LineMode};
use super::persist;
use crate::config::room::{Mode, RoomConfig};
use crate::holding::{HoldingPages, TemplateError};
use crate::metrics::Metrics;
use crate::proxy::health::OriginHealth;
use crate::store::line::files::{LineFiles, LineFilesError};
use crate::tokens::cookie::{get_cookie, get_cookies};
use crate::tokens::{event_id, KeyError, Keyring};

mod backend;
mod decide;
mod durable;
mod gate;
mod limits;
mod seal;
mod settings;
mod shared;
mod shared_health;
mod shared_outage;
mod status;
mod tick;
mod verdict;
mod visitor;

pub use gate::LONG_POLL_MAX;
pub use limits::{CHALLENGE_TTL_SECS, POW_COOKIE, POW_HEADER};
pub use seal::pass_life_secs;
pub use settings::{Overrides, Settings};
pub use status::{GateStatus, RoomStatus, SharedStatus};
pub use verdict::{Hold, Verdict};
pub use visitor::Visitor;

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

struct State {
    event_id: u64,
    line: Line,
    active: Active,
    gate: Gate<TokioClock>,
    rate: RateWindow,
    rng: StdRng,
    ticks: u64,
    /// Ticket numbers up to here are reserved on disk (durable store only).
    reserved: u64,
    /// False when the reservation of the current event could not be read:
    /// no ticket is issued rather than risk a number twice.
    reserved_ok: bool,
}

/// The waiting room.
pub struct Room {
    epoch: tokio::time::Instant,
    /// Added to the room clock: a restored room resumes its snapshot's clock.
    clock_base: u64,
    /// Where the line lives: memory, files, or Redis.
    backend: backend::LineBackend,
    /// Wall time (unix ms) at `epoch`: the room's wall clock advances with
    /// its monotonic one, so tokens, opening times and tests agree.
    wall_epoch: u64,
    state: Mutex<State>,
    seal: seal::Seal,
    pages: ArcSwap<HoldingPages>,
    knobs: settings::Knobs,
    limits: limits::AddressLimits,
    event_id: AtomicU64,
    opened_hash: Mutex<Option<String>>,
    draining: AtomicBool,
    metrics: Arc<Metrics>,
    /// Origin answers seen by the proxy, for the adaptive gate.
    pub health: OriginHealth,
    /// The closed-loop gate and the long poll's hand-off (see `gate`).
    closed_loop: gate::ClosedLoop,
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
        Keyring::clone(&room.seal.keys())
    }
}
fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The room's clock read once ([`Room::now`]): its own time (tokio's, so
/// tests can pause it) and the wall time, in milliseconds.
#[derive(Clone, Copy, Debug)]
pub(super) struct Now {
    /// As [`Room::now_ms`].
    pub room_ms: u64,
    /// As [`Room::unix_ms`].
    pub unix_ms: u64,
}

impl Now {
    /// Unix time in seconds (what tokens carry).
    pub fn unix_secs(self) -> u64 {
        self.unix_ms / 1000
    }
}

/// A request as the room reads it: usher's pass and ticket cookies, and a
/// proof-of-work solution, found in one walk ([`Asking::of`]; the pipeline
/// finds the language cookie in the same walk, and the relay reads them
/// from the head's raw lines: nothing here needs a header map).
#[derive(Clone, Copy, Debug, Default)]
pub struct Asking<'a> {
    /// The `usher_pass` cookie's value.
    pub pass: Option<&'a str>,
    /// The `usher_ticket` cookie's value.
    pub ticket: Option<&'a str>,
    /// A proof-of-work solution: the `X-Usher-Pow` header's value, else the
    /// `usher_pow` cookie's.
    pub pow: Option<&'a str>,
}

impl<'a> Asking<'a> {
    /// What `headers` ask with.
    pub fn of(headers: &'a http::HeaderMap) -> Self {
        let [pass, ticket, pow] = get_cookies(headers, [PASS_COOKIE, TICKET_COOKIE, POW_COOKIE]);
        Asking {
            pass,
            ticket,
            pow: pow_header(headers).or(pow),
        }
    }
}

/// The `X-Usher-Pow` header's value, if it is text.
pub fn pow_header(headers: &http::HeaderMap) -> Option<&str> {
    headers.get(POW_HEADER).and_then(|v| v.to_str().ok())
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether `cfg` schedules an opening after `now` (unix ms).
fn before_opening(cfg: &RoomConfig, now: u64) -> bool {
    cfg.opens_at
        .as_ref()
        .is_some_and(|(_, at)| unix_ms(*at) > now)
}

/// Seconds until `cfg`'s opening from `now` (unix ms), while ahead.
fn opens_in_seconds(cfg: &RoomConfig, now: u64) -> Option<u64> {
    cfg.opens_at
        .as_ref()
        .map(|(_, at)| unix_ms(*at).saturating_sub(now) / 1000)
        .filter(|s| *s > 0)
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
            (None, Some(room)) => Keyring::clone(&room.seal.keys()),
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
        let prequeue = before_opening(c, wall_epoch);
        let state = State {
            event_id: event_id(&c.event),
            line: Line::new(line_config(c, c.mode), 0, prequeue),
            active: Active::default(),
            gate: Gate::new(c.new_users_per_minute, c.burst, TokioClock::new(epoch)),
            rate: RateWindow::new(60_000),
            rng: StdRng::from_os_rng(),
            ticks: 0,
            reserved: 0,
            reserved_ok: true,
        };
        let mut state = state;
        let (backend, clock_base) = match store {
            Some((files, r)) => {
                state.line = r.line;
                state.active = r.active;
                state.rate = r.rate;
                state.reserved = r.mark;
                (backend::LineBackend::Files(files), r.clock)
            }
            None => (backend::LineBackend::Memory, 0),
        };
        Room {
            epoch,
            clock_base,
            backend,
            wall_epoch,
            event_id: AtomicU64::new(state.event_id),
            state: Mutex::new(state),
            seal: seal::Seal::new(prepared.keys),
            pages: ArcSwap::from_pointee(prepared.pages),
            knobs: settings::Knobs::default(),
            limits: limits::AddressLimits::new(c),
            opened_hash: Mutex::new(None),
            draining: AtomicBool::new(false),
            metrics,
            health: OriginHealth::default(),
            closed_loop: gate::ClosedLoop::default(),
            vouchers_left: AtomicU64::new(u64::MAX),
            origin_sold_out: AtomicBool::new(false),
        }
    }

    /// Applies a reloaded config. A new event name starts a new line.
    pub fn apply(&self, cfg: Option<&RoomConfig>, prepared: Prepared) {
        self.seal.set_keys(prepared.keys);
        self.pages.store(Arc::new(prepared.pages));
        let Some(c) = cfg else { return };
        self.limits.apply(c);
        let settings = self.settings(c);
        let now = self.now_ms();
        let mut s = self.lock();
        let id = event_id(&c.event);
        if id != s.event_id && self.redis().is_some() {
            tracing::warn!(event = %c.event, "room.event changed: the shared line keeps its event until a restart");
        } else if id != s.event_id {
            tracing::warn!(event = %c.event, "room.event changed: a new line starts");
            let prequeue = before_opening(c, self.unix_ms());
            s.line = Line::new(line_config(c, settings.mode), now, prequeue);
            if let Some(files) = self.files() {
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
                        (s.reserved, s.reserved_ok) = (found.mark, true);
                    }
                    Err(e) => {
                        tracing::error!(
                            "{e}: no ticket is issued for this event until this is fixed"
                        );
                        s.reserved_ok = false;
                    }
                }
            }
            s.event_id = id;
            self.event_id.store(id, Ordering::Relaxed);
            self.clear_origin_sold_out();
            *self.opened_hash.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
        self.follow(&mut s, c, &settings);
    }

    /// Makes the line and the gate follow `settings`: the one place the
    /// gate is rebuilt (a reload, an override, the adaptive rate).
    fn follow(&self, s: &mut State, cfg: &RoomConfig, settings: &Settings) {
        s.line.set_config(line_config(cfg, settings.mode));
        if !s.gate.same(settings.new_users_per_minute, cfg.burst) {
            s.gate = Gate::new(
                settings.new_users_per_minute,
                cfg.burst,
                TokioClock::new(self.epoch),
            );
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One reading of the room's clock for a whole decision: its parts read
    /// the clock on their own, six times a decision (eleven reads a request
    /// in all), at ~50 ns a read on this machine (`perf`: 3% of a holding
    /// page's time).
    pub(super) fn now(&self) -> Now {
        let elapsed = self.epoch.elapsed().as_millis() as u64;
        Now {
            room_ms: self.clock_base + elapsed,
            unix_ms: self.wall_epoch + elapsed,
        }
    }

    /// Unix time in milliseconds on the room's clock.
    pub fn unix_ms(&self) -> u64 {
        self.now().unix_ms
    }

    /// Milliseconds on the room's clock (tokio's, so tests can pause it).
    pub fn now_ms(&self) -> u64 {
        self.now().room_ms
    }

    /// The settings in force: config plus admin overrides.
    pub fn settings(&self, cfg: &RoomConfig) -> Settings {
        self.knobs.settings(cfg, self.flow_limit(cfg))
    }

    /// The settings in force for one decision (without the operator's
    /// message: see `Knobs::for_decision`).
    pub(super) fn decision_settings(&self, cfg: &RoomConfig) -> Settings {
        self.knobs.for_decision(cfg, self.flow_limit(cfg))
    }

    /// Changes the overrides (`None` fields keep theirs) and applies them.
    pub fn set_overrides(&self, cfg: &RoomConfig, change: Overrides) -> Result<Settings, String> {
        self.knobs.change(change)?;
        let settings = self.settings(cfg);
        self.follow(&mut self.lock(), cfg, &settings);
        Ok(settings)
    }

    /// Clears the mode override (resume) or every override (`all`).
    pub fn clear_overrides(&self, cfg: &RoomConfig, all: bool) -> Settings {
        self.knobs.clear(all);
        if all {
            self.clear_origin_sold_out();
        }
        let _ = self.set_overrides(cfg, Overrides::default());
        self.settings(cfg)
    }

    /// The overrides in force.
    pub fn overrides(&self) -> Overrides {
        self.knobs.overrides()
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
    pub fn check_pass(&self, headers: &http::HeaderMap) -> Option<crate::tokens::Pass> {
        let event = self.event_id.load(Ordering::Relaxed);
        self.seal.open_pass(
            get_cookie(headers, PASS_COOKIE),
            event,
            self.unix_ms() / 1000,
            &self.metrics.room,
        )
    }

    /// Frees a visitor's slot at once (`X-Usher-Release` from the origin).
    pub fn release(&self, pass_id: u64) {
        self.lock().active.release(pass_id);
        if let Some(sh) = self.redis() {
            sh.release(pass_id);
        }
    }
}
