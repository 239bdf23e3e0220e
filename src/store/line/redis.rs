//! The waiting line in Redis, shared by several usher nodes: the store of
//! `[store] backend = "redis"` (the room's side is `admission/room/shared.rs`;
//! see docs/STATE.md). Each atomic step is one Lua script (`lua/*.lua`), so a
//! poll, an issue or a take costs one round trip, and every key of an
//! event shares the hash tag `{usher:EVENT}` so Redis Cluster works.
//!
//! Keys (`P` = `{usher:EVENT}`):
//! - `P:issued` ticket counter (INCR); `P:frontier` the frontier.
//! - `P:live:W` liveness bitmap of window `W = now / grace` (SETBIT on
//!   issue and poll, expires after three windows); live = seen in `W` or
//!   `W - 1`, as in the in-process line.
//! - `P:wait` the union of the two windows, rebuilt by each tick (BITOP);
//!   positions are `BITCOUNT … BIT` over it (Redis >= 7).
//! - `P:granted`, `P:taken` fate bitmaps (`10` granted, `11` taken, `01`
//!   expired); `P:grants` list of `at:rank` for the claim window;
//!   `P:pending` granted-not-taken count.
//! - `P:active` ZSET pass id -> session end (ms); `P:lease` the ticking
//!   node (`SET PX`): one node advances the frontier per tick.
//! - `P:nodes` ZSET node id -> last tick (ms): the live nodes; `P:admitted`
//!   places granted so far (the rate every node measures); `P:waiting`
//!   live tickets behind the frontier at the last tick.
//! - `P:gate` the shared gate's theoretical arrival time (GCRA, ms): the
//!   one global rate for the tick's grants and direct admissions.
//! - The pre-queue (an event with `opens_at`): `P:opened` the number of
//!   tickets issued before the opening (fixed by the holder's first tick
//!   after it), `P:drawn` once the draw is done, `P:rank` / `P:order`
//!   the draw (4 bytes big-endian per ticket / per rank), `P:carried` how
//!   many tickets' liveness the ticks carried into rank order so far (a
//!   chunk a tick, so a long pre-queue never stalls Redis), `P:pqfront` the
//!   frontier in rank space, `P:pqlive:W` / `P:pqwait` liveness in rank
//!   order. Pre-queue tickets go first, in rank order; the number frontier
//!   starts after them.
//! - `P:undecided` (the lottery, `mode = "random"`): live tickets neither
//!   granted nor taken nor expired, rebuilt by each tick; lots are drawn
//!   among them and the frontier does not move.
//! - `P:ticked` the last tick (ms); `P:careful` until when (ms) the
//!   frontier waits for places not seen since a gap in ticking (an
//!   outage) instead of skipping them.
//!
//! - `P:gap` after a repair (the line went back below what a node saw: a
//!   failover lost the last writes), for a grace: see `lua/tick.lua`.
//!
//! Times are milliseconds on a clock shared by the nodes (Unix time).

use std::sync::LazyLock;

use crate::store::redis_conn::StoreCon;
use redis::{RedisError, Script};

/// Where a ticket stands in the shared line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisPlace {
    /// Waiting, with `position` live tickets ahead (as of the last tick).
    Waiting {
        /// Live tickets between the frontier and this one.
        position: u64,
    },
    /// Admitted: take the pass now.
    Granted,
    /// The pass was already taken.
    Taken,
    /// Skipped while away, or the grant expired: queue again.
    Forfeited,
    /// Not a number of this line.
    Unknown,
    /// In the pre-queue: the event has not opened (or its draw is not
    /// done yet); no position until the draw.
    Prequeue,
    /// Waiting in a lottery (`mode = "random"`): no position.
    InDraw,
}

/// What one tick did, and the shared figures every node reads from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RedisTick {
    /// Whether this node holds the lease and advanced the line; the other
    /// nodes grant nothing and see the figures of the holder's last tick.
    pub holder: bool,
    /// Places granted.
    pub granted: u64,
    /// Abandoned places (and never-issued gaps) passed.
    pub skipped: u64,
    /// Active passes (after pruning, on the holder).
    pub active: u64,
    /// Granted places not yet taken.
    pub pending: u64,
    /// Nodes whose heartbeat is fresh, this one included.
    pub nodes: u64,
    /// Of those, the nodes that beat within the live window
    /// ([`RedisLine::set_live_window`]; all of them without one): the `N`
    /// of the local share, which a node that just died no longer inflates.
    pub live_nodes: u64,
    /// Numbers and frontier places the line had gone back by and this tick
    /// repaired (a failover to a replica that missed the last writes); 0
    /// normally.
    pub repaired: u64,
    /// Places granted since the event began, by every node: each node
    /// measures the admission rate (and so the wait estimate) from it.
    pub admitted: u64,
    /// Live tickets still waiting behind the frontier.
    pub waiting: u64,
    /// On the holder after the opening: the number of pre-queue tickets
    /// whose ranks it must now draw ([`RedisLine::draw`]); 0 otherwise.
    pub draw: u64,
    /// From the opening until the draw is done (ranks written, then the
    /// live tickets carried into rank order a chunk per tick): nobody is
    /// admitted meanwhile, on any node.
    pub drawing: bool,
}

/// The shared gate: new admissions per minute (0: none) and how many at
/// once. One GCRA in Redis for every node, the tick's grants and the
/// direct admissions alike.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SharedGate {
    /// Admissions per minute; 0 admits nobody.
    pub per_minute: u32,
    /// Admissions at once after a quiet spell.
    pub burst: u32,
}

/// A newcomer that may be admitted directly into an empty line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Direct {
    /// The capacity: active plus pending across all nodes stays below it.
    pub max_active: u64,
    /// The shared gate.
    pub gate: SharedGate,
    /// The pass the newcomer gets if admitted.
    pub pass_id: u64,
    /// Its session end (unix ms).
    pub until: u64,
}

/// What became of a newcomer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// Admitted at once: the pass is in the active set.
    Admitted,
    /// A place in line.
    Ticket(u64),
}

/// Timing of the shared line.
#[derive(Debug, Clone, Copy)]
pub struct RedisLineConfig {
    /// Liveness window (the room's `ticket_grace`).
    pub grace_ms: u64,
    /// Time to take a granted place.
    pub claim_window_ms: u64,
    /// How long a tick lease lasts: another node takes over after this.
    pub lease_ms: u64,
    /// A node not heard from for this long is no longer counted live (the
    /// `N` of `on_failure = "local_share"`).
    pub heartbeat_ms: u64,
}

/// One node's handle on the shared line of one event.
#[derive(Clone)]
pub struct RedisLine {
    con: StoreCon,
    prefix: String,
    node: String,
    cfg: RedisLineConfig,
    /// The event's opening (unix ms) when it has a pre-queue, else 0.
    opens_at: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// `mode = "random"`: the tick draws lots instead of moving a frontier.
    lottery: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Grants older than this (ms) no longer hold a slot (0: the claim window).
    handoff_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// A cap on active plus every pending grant, beside `max_active` (0: none).
    hard_cap: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// A node that beat within this (ms) is live (0: the heartbeat ttl).
    live_window_ms: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// This node's clock minus Redis's (ms), taken off its heartbeat stamps.
    clock_offset_ms: std::sync::Arc<std::sync::atomic::AtomicI64>,
    /// The highest ticket number and frontier this node has seen: the
    /// floors a line that went back (failover) is repaired to.
    seen: std::sync::Arc<Seen>,
}

/// What a node has seen of the line, and the repairs it made.
#[derive(Debug, Default)]
struct Seen {
    issued: std::sync::atomic::AtomicU64,
    frontier: std::sync::atomic::AtomicU64,
    repairs: std::sync::atomic::AtomicU64,
}

impl Seen {
    fn issued(&self) -> u64 {
        self.issued.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn note_issued(&self, n: u64) {
        self.issued
            .fetch_max(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn repaired(&self, n: u64) {
        if n > 0 {
            self.repairs
                .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
        }
    }
}

/// Pre-queue tickets carried into rank order by one tick after the draw:
/// about 60 ms of Redis time, so a million take 20 ticks, never one stall.
const CARRY_PER_TICK: u64 = 50_000;

/// The scripts, hashed once (`EVALSHA` names a script by its SHA-1; the
/// crate loads it on a `NOSCRIPT` answer, e.g. after a Redis restart).
static ISSUE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/issue.lua")));
static OBSERVE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/observe.lua")));
static TAKE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/take.lua")));
static TICK: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/tick.lua")));
static DRAW: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/draw.lua")));

impl RedisLine {
    /// The line of `event` over `con` (see [`crate::store::redis_conn`]); `node`
    /// names this node in the tick lease.
    pub fn new(
        con: impl Into<StoreCon>,
        event: &str,
        node: &str,
        cfg: RedisLineConfig,
    ) -> RedisLine {
        RedisLine {
            con: con.into(),
            prefix: format!("{{usher:{event}}}"),
            node: node.to_string(),
            cfg,
            opens_at: Default::default(),
            lottery: Default::default(),
            handoff_ms: Default::default(),
            hard_cap: Default::default(),
            live_window_ms: Default::default(),
            clock_offset_ms: Default::default(),
            seen: Default::default(),
        }
    }

    /// Repairs made so far by this node's steps (a number or frontier place
    /// the line had gone back by, after a failover), for the metrics.
    pub fn repairs(&self) -> u64 {
        self.seen.repairs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Nodes count as live ([`RedisTick::live_nodes`]) while they beat
    /// within `ms` (a few ticks); 0 counts every heartbeat not yet expired.
    pub fn set_live_window(&self, ms: u64) {
        self.live_window_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// This node's measured clock skew from Redis (ms, positive: ahead):
    /// its heartbeat stamps are corrected by it, so a node whose clock is
    /// behind is not read as silent by the others.
    pub fn set_clock_offset(&self, ms: i64) {
        self.clock_offset_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// With a hand-off window, `max_active` counts only fresh grants; this
    /// cap (0: none) still counts every pending grant, so an operator's
    /// ceiling holds even when an old grant is taken late.
    pub fn set_hard_cap(&self, cap: u64) {
        self.hard_cap
            .store(cap, std::sync::atomic::Ordering::Relaxed);
    }

    /// Grants not taken within `ms` give their slot back to the pool at the
    /// next tick (their owners may still take them within the claim
    /// window); 0 keeps them holding it for the whole claim window.
    pub fn set_handoff(&self, ms: u64) {
        self.handoff_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Draw lots among the live waiting tickets (`mode = "random"`) or
    /// serve them in order.
    pub fn set_lottery(&self, on: bool) {
        self.lottery.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    fn lottery(&self) -> u8 {
        u8::from(self.lottery.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Sets (or clears) the opening of an event with a pre-queue: tickets
    /// issued before it are drawn into a random order at the opening.
    pub fn set_opens_at(&self, unix_ms: Option<u64>) {
        self.opens_at
            .store(unix_ms.unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
    }

    fn prequeue(&self) -> u8 {
        u8::from(self.opens_at.load(std::sync::atomic::Ordering::Relaxed) > 0)
    }

    /// The connection, shared with the voucher ledger.
    pub fn connection(&self) -> &StoreCon {
        &self.con
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    fn window(&self, now: u64) -> u64 {
        now / self.cfg.grace_ms.max(1)
    }

    fn live(&self, window: u64) -> String {
        self.key(&format!("live:{window}"))
    }

    /// The rank-ordered liveness window of the pre-queue after its draw.
    fn pq_live(&self, window: u64) -> String {
        self.key(&format!("pqlive:{window}"))
    }

    fn live_ttl(&self) -> u64 {
        3 * self.cfg.grace_ms.max(1)
    }

    /// Issues the next ticket number (from 1), marked live.
    pub async fn issue(&self, now: u64) -> Result<u64, RedisError> {
        match self.enter(now, None).await? {
            Entry::Ticket(n) => Ok(n),
            Entry::Admitted => unreachable!("no direct admission was asked for"),
        }
    }

    /// A newcomer: with `direct`, admitted at once when nobody is waiting,
    /// there is room and the shared gate allows; else (or without
    /// `direct`) the next ticket number, marked live.
    pub async fn enter(&self, now: u64, direct: Option<Direct>) -> Result<Entry, RedisError> {
        let d = direct.unwrap_or_default();
        let (kind, number, repaired): (u8, u64, u64) = ISSUE
            .key(self.key("issued"))
            .key(self.live(self.window(now)))
            .key(self.key("frontier"))
            .key(self.key("pending"))
            .key(self.key("active"))
            .key(self.key("gate"))
            .key(self.key("admitted"))
            .key(self.key("opened"))
            .key(self.key("drawn"))
            .key(self.key("pqfront"))
            .key(self.key("waiting"))
            .arg(self.live_ttl())
            .arg(now)
            .arg(u8::from(direct.is_some()))
            .arg(d.max_active)
            .arg(d.gate.per_minute)
            .arg(d.gate.burst)
            .arg(d.pass_id)
            .arg(d.until)
            .arg(self.prequeue())
            .arg(self.lottery())
            .arg(self.seen.issued())
            .invoke_async(&mut self.con.clone())
            .await?;
        self.seen.repaired(repaired);
        Ok(if kind == 0 {
            Entry::Admitted
        } else {
            self.seen.note_issued(number);
            Entry::Ticket(number)
        })
    }

    /// A poll from ticket `number`: marks it live and says where it stands.
    pub async fn observe(&self, number: u64, now: u64) -> Result<RedisPlace, RedisError> {
        let (kind, position, repaired): (u8, u64, u64) = OBSERVE
            .key(self.key("issued"))
            .key(self.key("frontier"))
            .key(self.key("granted"))
            .key(self.key("taken"))
            .key(self.live(self.window(now)))
            .key(self.key("wait"))
            .key(self.key("opened"))
            .key(self.key("drawn"))
            .key(self.key("rank"))
            .key(self.key("pqfront"))
            .key(self.pq_live(self.window(now)))
            .key(self.key("pqwait"))
            .key(self.key("gap"))
            .arg(number)
            .arg(self.live_ttl())
            .arg(self.prequeue())
            .arg(self.lottery())
            .arg(now)
            .arg(self.seen.issued())
            .arg(
                self.seen
                    .frontier
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
            .invoke_async(&mut self.con.clone())
            .await?;
        self.seen.repaired(repaired);
        if kind != 0 {
            self.seen.note_issued(number);
        }
        Ok(match kind {
            1 => RedisPlace::Waiting { position },
            2 => RedisPlace::Granted,
            3 => RedisPlace::Taken,
            4 => RedisPlace::Forfeited,
            5 => RedisPlace::Prequeue,
            6 => RedisPlace::InDraw,
            _ => RedisPlace::Unknown,
        })
    }

    /// Takes a granted place: true exactly once; the pass joins the active
    /// set until `until` (ms).
    pub async fn take(&self, number: u64, pass_id: u64, until: u64) -> Result<bool, RedisError> {
        let n: u8 = TAKE
            .key(self.key("granted"))
            .key(self.key("taken"))
            .key(self.key("pending"))
            .key(self.key("active"))
            .arg(number)
            .arg(pass_id)
            .arg(until)
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(n == 1)
    }

    /// Extends (or adds) an admitted visitor's session.
    pub async fn touch(&self, pass_id: u64, until: u64) -> Result<(), RedisError> {
        redis::cmd("ZADD")
            .arg(self.key("active"))
            .arg(until)
            .arg(pass_id)
            .exec_async(&mut self.con.clone())
            .await
    }

    /// Extends many sessions in one command (a node's batch per tick).
    pub async fn touch_many(&self, sessions: &[(u64, u64)]) -> Result<(), RedisError> {
        if sessions.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("ZADD");
        cmd.arg(self.key("active"));
        for (id, until) in sessions {
            cmd.arg(*until).arg(*id);
        }
        cmd.exec_async(&mut self.con.clone()).await
    }

    /// Ends admitted visitors' sessions (the origin said so), in one command.
    pub async fn release_many(&self, pass_ids: &[u64]) -> Result<(), RedisError> {
        if pass_ids.is_empty() {
            return Ok(());
        }
        let mut cmd = redis::cmd("ZREM");
        cmd.arg(self.key("active"));
        for id in pass_ids {
            cmd.arg(*id);
        }
        cmd.exec_async(&mut self.con.clone()).await
    }

    /// One admission tick, on every node every tick: renews this node's
    /// heartbeat; the node holding the lease (or taking it over) also
    /// grants what the shared `gate` allows, never beyond `max_active`
    /// active plus pending across all nodes.
    pub async fn tick(
        &self,
        now: u64,
        max_active: u64,
        gate: SharedGate,
    ) -> Result<RedisTick, RedisError> {
        let w = self.window(now);
        let out: Vec<i64> = TICK
            .key(self.key("lease"))
            .key(self.key("issued"))
            .key(self.key("frontier"))
            .key(self.key("granted"))
            .key(self.key("taken"))
            .key(self.live(w))
            .key(self.live(w.saturating_sub(1)))
            .key(self.key("wait"))
            .key(self.key("grants"))
            .key(self.key("pending"))
            .key(self.key("active"))
            .key(self.key("nodes"))
            .key(self.key("admitted"))
            .key(self.key("waiting"))
            .key(self.key("ticked"))
            .key(self.key("careful"))
            .key(self.key("gate"))
            .key(self.key("opened"))
            .key(self.key("drawn"))
            .key(self.key("pqfront"))
            .key(self.pq_live(w))
            .key(self.pq_live(w.saturating_sub(1)))
            .key(self.key("pqwait"))
            .key(self.key("order"))
            .key(self.key("undecided"))
            .key(self.key("rank"))
            .key(self.key("carried"))
            .key(self.key("gap"))
            .arg(&self.node)
            .arg(self.cfg.lease_ms)
            .arg(now)
            .arg(self.cfg.claim_window_ms)
            .arg(max_active)
            .arg(gate.per_minute)
            .arg(self.cfg.heartbeat_ms)
            .arg(self.cfg.grace_ms)
            .arg(gate.burst)
            .arg(self.prequeue())
            .arg(u8::from({
                let at = self.opens_at.load(std::sync::atomic::Ordering::Relaxed);
                at > 0 && now >= at
            }))
            .arg(self.lottery())
            .arg(rand::random::<u32>() & 0x7fff_ffff)
            .arg(CARRY_PER_TICK)
            .arg(self.handoff_ms.load(std::sync::atomic::Ordering::Relaxed))
            .arg(self.hard_cap.load(std::sync::atomic::Ordering::Relaxed))
            .arg(
                self.live_window_ms
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
            .arg({
                let off = self
                    .clock_offset_ms
                    .load(std::sync::atomic::Ordering::Relaxed);
                (now as i64).saturating_sub(off).max(0)
            })
            .arg(self.seen.issued())
            .arg(
                self.seen
                    .frontier
                    .load(std::sync::atomic::Ordering::Relaxed),
            )
            .invoke_async(&mut self.con.clone())
            .await?;
        let n = |i: usize| out.get(i).map_or(0, |v| u64::try_from(*v).unwrap_or(0));
        self.seen.note_issued(n(11));
        self.seen
            .frontier
            .fetch_max(n(12), std::sync::atomic::Ordering::Relaxed);
        self.seen.repaired(n(13));
        Ok(RedisTick {
            holder: n(0) == 1,
            granted: n(1),
            skipped: n(2),
            active: n(3),
            pending: n(4),
            nodes: n(5),
            admitted: n(6),
            waiting: n(7),
            draw: n(8),
            drawing: n(9) == 1,
            live_nodes: n(10),
            repaired: n(13),
        })
    }

    /// The pre-queue draw, after a tick said `draw = P`: `ranks[n - 1]` is
    /// the rank of ticket `n` (a permutation of `1..=P`, the same on every
    /// node: from the event's secret seed). True when this call drew; false
    /// when it was done already (another node) or `P` does not match.
    pub async fn draw(&self, ranks: &[u32]) -> Result<bool, RedisError> {
        let mut rank = Vec::with_capacity(ranks.len() * 4);
        let mut order = vec![0u8; ranks.len() * 4];
        for (i, r) in ranks.iter().enumerate() {
            rank.extend_from_slice(&r.to_be_bytes());
            let at = (*r as usize).saturating_sub(1) * 4;
            if let Some(slot) = order.get_mut(at..at + 4) {
                slot.copy_from_slice(&(i as u32 + 1).to_be_bytes());
            }
        }
        let done: u8 = DRAW
            .key(self.key("opened"))
            .key(self.key("drawn"))
            .key(self.key("rank"))
            .key(self.key("order"))
            .key(self.key("carried"))
            .arg(ranks.len())
            .arg(rank)
            .arg(order)
            .invoke_async(&mut self.con.clone())
            .await?;
        Ok(done == 1)
    }
}
