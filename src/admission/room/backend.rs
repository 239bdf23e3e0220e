//! Where the line lives, behind the four questions the one admission
//! algorithm (`decide`, `tick`) asks it, the shape of
//! [`crate::store::ledger::claims::ClaimLedger`]: where does a ticket stand
//! (`observe`), may its holder go in (`take`), a newcomer's entry
//! (`enter`), and one step of the line (`tick_line`).
//!
//! - `Memory`: this node's [`Line`](crate::admission::line::Line) under the
//!   room's lock;
//! - `Files`: the same line, its ticket numbers reserved on disk and its
//!   snapshot written every second (`durable`);
//! - `Redis`: the line shared by every node (`shared`), one command per
//!   question; a failed command marks Redis unreachable (`shared_outage`).

use std::sync::atomic::Ordering;

use super::seal::pass_life_secs;
use super::shared::{shared_gate, Shared};
use super::tick::Figures;
use super::{Now, Room, Settings, State};
use crate::admission::line::Place;
use crate::config::room::{Mode, RoomConfig};
use crate::store::line::files::LineFiles;
use crate::store::line::redis::{Direct, Entry as RedisEntry, RedisPlace, SharedGate};

/// The line's backend.
pub(super) enum LineBackend {
    /// This node's line in memory.
    Memory,
    /// This node's line, kept in files under `[store] state_dir`.
    Files(LineFiles),
    /// The line shared through Redis.
    Redis(Box<Shared>),
}

/// Where a ticket stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Spot {
    /// Its turn came: the holder may take the place.
    Granted,
    /// Waiting, this many live tickets ahead.
    Waiting(u64),
    /// In the pre-queue, before or during its draw: no position yet.
    Drawing,
    /// Skipped while away, grant expired, or from another life.
    Gone,
}

/// A newcomer's entry into the line.
pub(super) enum Entry {
    /// Nobody waits and a place was free: in at once.
    Admitted,
    /// A ticket, and its position when known.
    Ticket {
        /// The ticket's number.
        number: u64,
        /// Live tickets ahead.
        position: Option<u64>,
    },
    /// No ticket can be issued safely now (the files' reservation failed).
    Refused,
}

/// The backend could not answer (Redis unreachable): the place is not
/// lost, the same ticket asks again.
pub(super) struct Unreachable;

/// What the holding answer shows about the line as a whole.
pub(super) struct LineView {
    /// The pre-queue: before the opening, or during its draw.
    pub prequeue: bool,
    /// Visitors waiting, when known (the wait estimate needs it).
    pub waiting: Option<u64>,
}

impl Room {
    /// The shared line, with Redis.
    pub(super) fn redis(&self) -> Option<&Shared> {
        match &self.backend {
            LineBackend::Redis(sh) => Some(sh),
            _ => None,
        }
    }

    /// The line's files, with a local store.
    pub(super) fn files(&self) -> Option<&LineFiles> {
        match &self.backend {
            LineBackend::Files(f) => Some(f),
            _ => None,
        }
    }

    /// Where ticket `number` stands. A poll also marks it live. `mark`:
    /// whether the answer counts as Redis's health (a decision; not a
    /// feedback's lookup).
    ///
    /// Here, in `take` and in `enter`, the Redis command's future is boxed:
    /// inline, its ~500 bytes made every decision's future (and each one
    /// around it) that much larger, copied on every request with or without
    /// Redis (docs/BENCHMARKS.md).
    pub(super) async fn observe(&self, number: u64, mark: bool) -> Result<Spot, Unreachable> {
        self.observe_at(number, mark, self.now()).await
    }

    /// [`Room::observe`] at `now` (a decision's one clock reading).
    pub(super) async fn observe_at(
        &self,
        number: u64,
        mark: bool,
        now: Now,
    ) -> Result<Spot, Unreachable> {
        let Some(sh) = self.redis() else {
            return Ok(match self.lock().line.observe(number, now.room_ms) {
                Place::Granted => Spot::Granted,
                Place::Waiting { position } => Spot::Waiting(position),
                Place::InDraw { .. } => Spot::Drawing,
                _ => Spot::Gone,
            });
        };
        match Box::pin(sh.line.observe(number, now.unix_ms)).await {
            Ok(place) => {
                let spot = match place {
                    RedisPlace::Granted => Spot::Granted,
                    RedisPlace::Waiting { position } => Spot::Waiting(position),
                    RedisPlace::Prequeue | RedisPlace::InDraw => Spot::Drawing,
                    _ => Spot::Gone,
                };
                // A grant is marked by the take that follows.
                if mark && spot != Spot::Granted {
                    sh.note_health(true, "poll", None);
                }
                Ok(spot)
            }
            Err(e) => {
                if mark {
                    sh.note_health(false, "poll", Some(&e));
                }
                Err(Unreachable)
            }
        }
    }

    /// Takes the granted place of ticket `number` for pass `pass_id`: false
    /// when it is no longer granted.
    pub(super) async fn take(
        &self,
        cfg: &RoomConfig,
        number: u64,
        pass_id: u64,
        now: Now,
    ) -> Result<bool, Unreachable> {
        let Some(sh) = self.redis() else {
            return Ok(self.lock().line.take(number, now.room_ms));
        };
        let until = now.unix_ms + pass_life_secs(cfg) * 1000;
        match Box::pin(sh.line.take(number, pass_id, until)).await {
            Ok(taken) => {
                if taken {
                    sh.note_health(true, "take", None);
                }
                Ok(taken)
            }
            Err(e) => {
                sh.note_health(false, "take", Some(&e));
                Err(Unreachable)
            }
        }
    }

    /// A newcomer: in at once with pass `pass_id` when nobody waits and
    /// the rate and a free place allow it, else a ticket at the back.
    pub(super) async fn enter(
        &self,
        cfg: &RoomConfig,
        settings: &Settings,
        pass_id: u64,
        now: Now,
    ) -> Result<Entry, Unreachable> {
        let Some(sh) = self.redis() else {
            return Ok(self.enter_local(cfg, settings, now.room_ms));
        };
        let direct = settings.admits().then(|| Direct {
            max_active: settings.max_active_users,
            gate: shared_gate(cfg, settings),
            pass_id,
            until: now.unix_ms + pass_life_secs(cfg) * 1000,
        });
        match Box::pin(sh.line.enter(now.unix_ms, direct)).await {
            Ok(entry) => {
                sh.note_health(true, "issue", None);
                Ok(match entry {
                    RedisEntry::Admitted => Entry::Admitted,
                    RedisEntry::Ticket(number) => Entry::Ticket {
                        number,
                        position: None,
                    },
                })
            }
            Err(e) => {
                sh.note_health(false, "issue", Some(&e));
                Err(Unreachable)
            }
        }
    }

    fn enter_local(&self, cfg: &RoomConfig, settings: &Settings, now: u64) -> Entry {
        let mut s = self.lock();
        if settings.admits() && s.line.is_open() && s.line.waiting() == 0 {
            let free = self.free_places(cfg, settings, s.active.len(), &s.line, now);
            let rated = settings.new_users_per_minute > 0;
            if free > 0 && (!rated || s.gate.take(1) == 1) {
                s.rate.record(now, 1);
                return Entry::Admitted;
            }
        }
        if !self.reserve(&mut s) {
            return Entry::Refused;
        }
        let number = s.line.issue(now);
        let position = match s.line.observe(number, now) {
            Place::Waiting { position } => Some(position),
            _ => None,
        };
        Entry::Ticket { number, position }
    }

    /// What the holding answer shows about the line: with Redis, the
    /// pre-queue lasts until the opening and its draw; the waiting count
    /// is the last tick's, unknown while Redis is unreachable.
    pub(super) fn line_view(&self, opens_later: bool) -> LineView {
        match self.redis() {
            Some(sh) => LineView {
                prequeue: opens_later || sh.in_draw.load(Ordering::Relaxed),
                waiting: sh.is_up().then(|| sh.last().map_or(0, |t| t.waiting)),
            },
            None => {
                let s = self.lock();
                LineView {
                    prequeue: !s.line.is_open(),
                    waiting: Some(s.line.waiting()),
                }
            }
        }
    }

    /// The closed-loop gate's input: visitors inside (active plus pending)
    /// and whether anyone waits; with Redis, the last tick's shared figures
    /// (none before the first).
    pub(super) fn flow_input(&self, cfg: &RoomConfig, now: u64) -> Option<(u64, bool)> {
        if let Some(sh) = self.redis() {
            return sh.last().map(|t| (t.active + t.pending, t.waiting > 0));
        }
        let s = self.lock();
        let recent = s.line.pending_recent(now, Self::handoff_ms(cfg));
        Some((
            (s.active.len() + recent).max(self.closed_loop.used_after_tick.load(Ordering::Relaxed)),
            s.line.waiting() > 0,
        ))
    }

    /// One step of the line: liveness, the opening, the grants the rate
    /// and free places allow. Returns the line's figures.
    pub(super) async fn tick_line(&self, cfg: &RoomConfig, settings: &Settings) -> Figures {
        match self.redis() {
            Some(sh) => self.tick_redis(sh, cfg, settings).await,
            None => self.tick_local(cfg, settings),
        }
    }

    fn tick_local(&self, cfg: &RoomConfig, settings: &Settings) -> Figures {
        let now = self.now_ms();
        let handoff = Self::handoff_ms(cfg);
        let mut s = self.lock();
        let active = s.active.len();
        if !s.line.is_open() && !super::before_opening(cfg, self.unix_ms()) {
            let seed = self.prequeue_seed(cfg);
            let hash = s.line.open(seed);
            tracing::info!(event = %cfg.event, seed_sha256 = %hash, prequeue = s.line.stats().prequeue, "room opened: pre-queue shuffled once");
            *self.opened_hash.lock().unwrap_or_else(|e| e.into_inner()) = Some(hash);
        }
        let budget = if settings.admits() && s.line.is_open() {
            let free = self.free_places(cfg, settings, active, &s.line, now);
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
        let figures = Figures {
            line: Some((s.line.waiting(), s.active.len(), s.line.pending())),
            rate: s.rate.per_second(now),
            prequeue: !s.line.is_open(),
        };
        let granted_total = s.line.stats().granted_total;
        self.closed_loop.used_after_tick.store(
            s.active.len() + s.line.pending_recent(now, handoff),
            Ordering::Relaxed,
        );
        drop(s);
        self.announce_grants(granted_total);
        figures
    }

    /// The Redis line's step: flushes this node's pass refreshes (one
    /// command), then ticks the shared line: the heartbeat and the shared
    /// figures on every node, the frontier on the lease holder, its gate
    /// being the one global rate.
    async fn tick_redis(&self, sh: &Shared, cfg: &RoomConfig, settings: &Settings) -> Figures {
        if let Err(e) = sh.flush().await {
            sh.note_health(false, "session refresh", Some(&e));
        }
        let (max_active, gate) = if settings.admits() {
            (settings.max_active_users, shared_gate(cfg, settings))
        } else {
            (0, SharedGate::default())
        };
        sh.line
            .set_opens_at(cfg.opens_at.as_ref().map(|(_, at)| super::unix_ms(*at)));
        sh.line.set_lottery(settings.mode == Mode::Random);
        // The hand-off window frees the closed-loop gate's limit only; a
        // hard cap counts every pending grant.
        let closed = cfg.closed_loop.is_some();
        sh.line
            .set_handoff(if closed { Self::handoff_ms(cfg) } else { 0 });
        sh.line.set_hard_cap(if closed {
            self.knobs.hard_cap(cfg, settings).unwrap_or(0)
        } else {
            0
        });
        let now = self.unix_ms();
        let line = match sh.line.tick(now, max_active, gate).await {
            Ok(t) => {
                sh.note_health(true, "tick", None);
                self.check_clock(sh, cfg).await;
                self.note_repairs(sh);
                // A tick from before the opening leaves the line undrawn:
                // until the first tick after it, the room still shows the
                // pre-queue (newcomers are not let in before the draw).
                let undrawn = t.drawing || super::before_opening(cfg, now);
                sh.in_draw.store(undrawn, Ordering::Relaxed);
                if t.draw > 0 {
                    self.draw_shared(sh, cfg, t.draw).await;
                }
                sh.set_nodes(t.live_nodes.max(1));
                let prev = sh.set_last(t);
                self.announce_grants(t.admitted);
                // A Redis restarted empty counts from zero again: no jump.
                let granted = prev.map_or(0, |p| t.admitted.saturating_sub(p.admitted));
                self.lock().rate.record(self.now_ms(), granted);
                self.metrics.room.store_nodes.set(t.live_nodes as i64);
                Some((t.waiting, t.active, t.pending))
            }
            Err(e) => {
                sh.note_health(false, "tick", Some(&e));
                None
            }
        };
        Figures {
            line,
            rate: self.lock().rate.per_second(self.now_ms()),
            // As the holding answer says: before the opening, and during the draw.
            prequeue: super::before_opening(cfg, self.unix_ms())
                || sh.in_draw.load(Ordering::Relaxed),
        }
    }
}
