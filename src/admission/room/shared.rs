//! The room with `[store] backend = "redis"`: the line is shared by every
//! node through [`RedisLine`]; passes stay stateless (no Redis on the pass
//! path); pass refreshes are batched and flushed once per tick; only the
//! node holding the lease advances the frontier. Every node's tick is also
//! its heartbeat, and brings back the shared figures: live nodes, places
//! granted so far (each node measures the admission rate from it, so every
//! node can show a wait estimate), the line's length.
//!
//! While Redis is unreachable requests do not wait for it (only the tick
//! keeps trying, and its first success ends the outage) and passes keep
//! working. New admissions follow `store.on_failure`:
//! - `hold`: nobody new is admitted; waiting visitors keep their ticket;
//! - `local_share`: this node admits its share of the configured rate and
//!   capacity, `1/N` with `N` the nodes that beat in the three ticks
//!   before the last heartbeat (one that died just before is not counted).
//!   Waiting visitors (a valid ticket) go first: a newcomer is admitted
//!   only when no ticket holder has polled this node for two refresh
//!   intervals. The capacity share holds because every active visitor's
//!   session was last set by some node, so it is in that node's own
//!   active set: the sum over nodes is at least the global count, and no
//!   node goes past `max_active_users / N` of its own. A node that never
//!   heard a heartbeat (started during the outage) holds.
//!
//! The rate is one GCRA in Redis (`P:gate`): the holder's grants and the
//! newcomers admitted directly into an empty line, from any node, draw
//! from it.
//!
//! The pre-queue (`opens_at`): tickets issued before the opening are
//! drawn into a random order by the holder's first tick after it, with the
//! same seeded shuffle as the local line, and go first in that order.
//!
//! The lottery (`mode = "random"`): the holder draws lots among the live
//! tickets not yet decided, uniformly (rejection sampling), instead of
//! moving the frontier; a poll shows no position.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use super::status::SharedStatus;
use super::{unix_ms, Gate, Room, Settings, TokioClock};
use crate::admission::line::{seed_hash, shuffled_ranks};
use crate::config::room::{Mode, RoomConfig};
use crate::config::store::{OnFailure, RedisStore};
use crate::store::ledger::redis_durable::ClaimsConnection;
use crate::store::line::clock::ClockWatch;
use crate::store::line::redis::{RedisLine, RedisLineConfig, RedisTick, SharedGate};

/// Pass refreshes kept for the next flush at most; beyond, the oldest
/// session ends are not extended (the visitor's pass stays valid anyway).
const MAX_TOUCHES: usize = 100_000;

/// Session changes collected between ticks, flushed in order (refreshes,
/// then releases) so a release is never undone by an older refresh.
#[derive(Default)]
struct Batch {
    touch: Vec<(u64, u64)>,
    release: Vec<u64>,
}

/// One node's share of the Redis line.
pub(super) struct Shared {
    pub(super) line: RedisLine,
    up: AtomicBool,
    batch: Mutex<Batch>,
    last: Mutex<Option<RedisTick>>,
    gauge: prometheus::IntGauge,
    on_failure: OnFailure,
    /// Live nodes at the last heartbeat (beat in the last three ticks);
    /// 0 until the first one.
    nodes: AtomicU64,
    /// This node's share of the gate while Redis is unreachable
    /// (`local_share`), made at the first admission of an outage.
    pub(super) fallback: Mutex<Option<Gate<TokioClock>>>,
    /// Room time of the last poll by a ticket holder during the outage.
    pub(super) waiting_seen: AtomicU64,
    /// The event opened but its pre-queue draw is not done yet (as of the
    /// last tick, on every node).
    pub(super) in_draw: AtomicBool,
    /// This node's clock against Redis's (`/readyz`, metrics).
    pub(super) clock: ClockWatch,
    /// Room time (ms) of the last clock sample.
    pub(super) clock_sampled: AtomicU64,
    /// The ACL user may not run `TIME` (warned once).
    pub(super) clock_denied: AtomicBool,
    /// The voucher ledger's connection (its own with `min_replicas_acked`).
    claims: ClaimsConnection,
    /// Line repairs already logged and counted.
    pub(super) repairs: AtomicU64,
}

impl Shared {
    pub(super) fn new(
        store: &RedisStore,
        event: &str,
        cfg: &RoomConfig,
        gauge: prometheus::IntGauge,
    ) -> Result<Shared, String> {
        let con = crate::store::redis_conn::connect(store, event)?;
        let line_cfg = RedisLineConfig {
            grace_ms: cfg.ticket_grace.as_millis() as u64,
            claim_window_ms: cfg.claim_window.as_millis() as u64,
            // Three ticks without a tick from the holder: another node takes over.
            lease_ms: (cfg.tick.as_millis() as u64 * 3).max(500),
            // A node is live while it ticks; missing five ticks (2 s at
            // least) it no longer counts in the share.
            heartbeat_ms: (cfg.tick.as_millis() as u64 * 5).max(2_000),
        };
        let claims = ClaimsConnection::for_store(store, &con)?;
        let line = RedisLine::new(con, event, &store.node_id, line_cfg);
        // The local share's N: nodes that beat in the last three ticks (1 s
        // at least), so one that died just before an outage is not counted.
        line.set_live_window((cfg.tick.as_millis() as u64 * 3).max(1_000));
        line.set_opens_at(cfg.opens_at.as_ref().map(|(_, at)| unix_ms(*at)));
        line.set_lottery(cfg.mode == Mode::Random);
        Ok(Shared {
            line,
            up: AtomicBool::new(true),
            batch: Mutex::new(Batch::default()),
            last: Mutex::new(None),
            gauge,
            on_failure: store.on_failure,
            nodes: AtomicU64::new(0),
            fallback: Mutex::new(None),
            waiting_seen: AtomicU64::new(0),
            in_draw: AtomicBool::new(false),
            clock: ClockWatch::default(),
            clock_sampled: AtomicU64::new(0),
            clock_denied: AtomicBool::new(false),
            claims,
            repairs: AtomicU64::new(0),
        })
    }

    pub(super) fn note_health(&self, ok: bool, what: &str, err: Option<&redis::RedisError>) {
        let was = self.up.swap(ok, Ordering::Relaxed);
        if was != ok {
            self.gauge.set(i64::from(ok));
        }
        match (was, ok, err) {
            (true, false, Some(e)) => match self.on_failure {
                OnFailure::Hold => tracing::error!(
                    "Redis unreachable ({what}: {e}): passes keep working, new visitors get the holding page"
                ),
                OnFailure::LocalShare => tracing::error!(
                    nodes = self.nodes.load(Ordering::Relaxed),
                    "Redis unreachable ({what}: {e}): passes keep working, this node admits its share (1/nodes) of the rate and capacity"
                ),
            },
            (false, true, _) => {
                *self.fallback.lock().unwrap_or_else(|e| e.into_inner()) = None;
                tracing::info!("Redis reachable again: the shared line resumes");
            }
            _ => {}
        }
    }

    /// Whether this node admits its own share now (Redis unreachable,
    /// `local_share`, and the node count known).
    pub(super) fn sharing(&self) -> bool {
        self.on_failure == OnFailure::LocalShare
            && !self.is_up()
            && self.nodes.load(Ordering::Relaxed) > 0
    }

    /// Records the live nodes of the last heartbeat.
    pub(super) fn set_nodes(&self, n: u64) {
        self.nodes.store(n, Ordering::Relaxed);
    }

    /// Records the figures of the last successful tick; returns the ones before.
    pub(super) fn set_last(&self, t: RedisTick) -> Option<RedisTick> {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .replace(t)
    }

    /// Nodes alive at the last heartbeat (0: none heard yet).
    pub(super) fn nodes(&self) -> u64 {
        self.nodes.load(Ordering::Relaxed)
    }

    /// The figures of the last successful tick.
    pub(super) fn last(&self) -> Option<RedisTick> {
        *self.last.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    pub(super) fn touch_later(&self, pass_id: u64, until: u64) {
        let mut b = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        if b.touch.len() < MAX_TOUCHES {
            b.touch.push((pass_id, until));
        }
    }

    pub(super) fn release(&self, pass_id: u64) {
        let mut b = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        b.touch.retain(|(id, _)| *id != pass_id);
        if b.release.len() < MAX_TOUCHES {
            b.release.push(pass_id);
        }
    }

    /// Sends the batch: one `ZADD` per 1000 refreshes, one `ZREM` per 1000
    /// releases. On failure what was not sent goes back to the batch (up
    /// to its bound) for the next tick: passes given out during an outage
    /// count in the shared active set once Redis is back.
    pub(super) async fn flush(&self) -> Result<(), redis::RedisError> {
        let b = std::mem::take(&mut *self.batch.lock().unwrap_or_else(|e| e.into_inner()));
        let mut sent = 0;
        let mut failed = None;
        for chunk in b.touch.chunks(1000) {
            if let Err(e) = self.line.touch_many(chunk).await {
                failed = Some(e);
                break;
            }
            sent += chunk.len();
        }
        if failed.is_none() {
            for chunk in b.release.chunks(1000) {
                if let Err(e) = self.line.release_many(chunk).await {
                    failed = Some(e);
                    break;
                }
            }
        }
        let Some(e) = failed else { return Ok(()) };
        let mut now = self.batch.lock().unwrap_or_else(|e| e.into_inner());
        let mut touch = b.touch[sent..].to_vec();
        touch.append(&mut now.touch);
        touch.truncate(MAX_TOUCHES);
        let mut release = b.release;
        release.append(&mut now.release);
        release.truncate(MAX_TOUCHES);
        *now = Batch { touch, release };
        Err(e)
    }
}

/// The one global rate, kept in Redis: the configured (or overridden, or
/// adaptive) rate and burst. Without a fixed rate (the closed-loop gate
/// alone) the GCRA is opened wide: a million a minute, any number at once,
/// and the limit on visitors inside is what bounds admissions.
pub(super) fn shared_gate(cfg: &RoomConfig, settings: &Settings) -> SharedGate {
    if settings.new_users_per_minute == 0 {
        return SharedGate {
            per_minute: 1_000_000,
            burst: 1_000_000,
        };
    }
    SharedGate {
        per_minute: settings.new_users_per_minute,
        burst: cfg.burst,
    }
}

impl Room {
    /// Whether the line is shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.redis().is_some()
    }

    /// The line's Redis connection (`None` without Redis), for the voucher
    /// ledger: one connection per process.
    pub fn redis_connection(&self) -> Option<crate::store::redis_conn::StoreCon> {
        self.redis().map(|sh| sh.line.connection().clone())
    }

    /// The voucher ledger's Redis connection and the replicas a claim
    /// waits for (`None` without Redis).
    pub fn redis_claims(&self) -> Option<ClaimsConnection> {
        self.redis().map(|sh| sh.claims.clone())
    }

    /// Redis reachable at the last command (`None` without Redis).
    pub fn store_up(&self) -> Option<bool> {
        self.redis().map(Shared::is_up)
    }

    /// While Redis is unreachable with `local_share`: the nodes this node
    /// shares the rate and capacity with (`None` otherwise).
    pub fn local_share_of(&self) -> Option<u64> {
        self.redis().filter(|sh| sh.sharing()).map(Shared::nodes)
    }

    /// The shared figures of the last tick, for `/admin/status`.
    pub(super) fn shared_status(&self) -> Option<SharedStatus> {
        let sh = self.redis()?;
        let t = sh.last().unwrap_or_default();
        Some(SharedStatus {
            nodes: sh.nodes(),
            ticking: t.holder,
            waiting: t.waiting,
            active: t.active,
            pending: t.pending,
            admitted: t.admitted,
            local_share: sh.sharing(),
        })
    }

    /// The pre-queue draw on the ticking node, once the opening tick fixed
    /// its `len` tickets: the same seeded shuffle as the local line (any
    /// node that redoes it after a crash draws the same order).
    pub(super) async fn draw_shared(&self, sh: &Shared, cfg: &RoomConfig, len: u64) {
        let Ok(len) = u32::try_from(len) else {
            tracing::error!(len, "pre-queue too long to draw");
            return;
        };
        let seed = self.prequeue_seed(cfg);
        let ranks = shuffled_ranks(len, seed);
        match sh.line.draw(&ranks).await {
            Ok(true) => {
                let hash = seed_hash(&seed);
                tracing::info!(event = %cfg.event, seed_sha256 = %hash, prequeue = len, "room opened: pre-queue shuffled once (shared line)");
                *self.opened_hash.lock().unwrap_or_else(|e| e.into_inner()) = Some(hash);
            }
            Ok(false) => {}
            Err(e) => sh.note_health(false, "draw", Some(&e)),
        }
    }
}
