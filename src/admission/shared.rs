//! The room with `[store] backend = "redis"`: the line is shared by every
//! node through [`RedisLine`]; passes stay stateless (no Redis on the pass
//! path); pass refreshes are batched and flushed once per tick; only the
//! node holding the lease advances the frontier, with its gate as the one
//! global rate. While Redis is unreachable new visitors get the holding
//! page (`on_failure = "hold"`) and nothing else changes.
//!
//! Not shared (yet): the pre-queue (the shared line is open from the
//! start), the lottery (the shared tick is FIFO), direct admission of a
//! newcomer into an empty line (every newcomer takes a ticket and is
//! granted by the next tick).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use http::HeaderMap;
use rand::Rng;

use super::{Hold, Room, Verdict, TICKET_COOKIE};
use crate::config::room::{Mode, RoomConfig};
use crate::config::store::RedisStore;
use crate::holding::RoomState;
use crate::store::redis_line::{RedisLine, RedisLineConfig, RedisPlace, RedisTick};
use crate::tokens::cookie::{get_cookie, SetCookie};
use crate::tokens::Ticket;

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
    line: RedisLine,
    up: AtomicBool,
    batch: Mutex<Batch>,
    last: Mutex<Option<RedisTick>>,
    gauge: prometheus::IntGauge,
}

impl Shared {
    pub(super) fn new(
        store: &RedisStore,
        event: &str,
        cfg: &RoomConfig,
        gauge: prometheus::IntGauge,
    ) -> Result<Shared, String> {
        let con = crate::store::redis_conn::connect(store)?;
        let line_cfg = RedisLineConfig {
            grace_ms: cfg.ticket_grace.as_millis() as u64,
            claim_window_ms: cfg.claim_window.as_millis() as u64,
            // Three ticks without a tick from the holder: another node takes over.
            lease_ms: (cfg.tick.as_millis() as u64 * 3).max(500),
        };
        let line = RedisLine::new(con, event, &store.node_id, line_cfg);
        Ok(Shared {
            line,
            up: AtomicBool::new(true),
            batch: Mutex::new(Batch::default()),
            last: Mutex::new(None),
            gauge,
        })
    }

    fn mark(&self, ok: bool, what: &str, err: Option<&redis::RedisError>) {
        let was = self.up.swap(ok, Ordering::Relaxed);
        if was != ok {
            self.gauge.set(i64::from(ok));
        }
        match (was, ok, err) {
            (true, false, Some(e)) => tracing::error!(
                "Redis unreachable ({what}: {e}): passes keep working, new visitors get the holding page"
            ),
            (false, true, _) => tracing::info!("Redis reachable again: admissions resume"),
            _ => {}
        }
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
    /// releases. On failure the batch is dropped: sessions still end by
    /// their expiry in the set.
    async fn flush(&self) {
        let b = std::mem::take(&mut *self.batch.lock().unwrap_or_else(|e| e.into_inner()));
        for chunk in b.touch.chunks(1000) {
            if let Err(e) = self.line.touch_many(chunk).await {
                self.mark(false, "session refresh", Some(&e));
                return;
            }
        }
        for chunk in b.release.chunks(1000) {
            if let Err(e) = self.line.release_many(chunk).await {
                self.mark(false, "session release", Some(&e));
                return;
            }
        }
    }
}

impl Room {
    /// [`Room::decide`] for every store: the Redis backend answers from
    /// the shared line (one Redis command per poll), the others at once.
    pub async fn decide_async(
        &self,
        cfg: &RoomConfig,
        headers: &HeaderMap,
        ip: std::net::IpAddr,
        secure: bool,
    ) -> Verdict {
        let Some(sh) = &self.shared else {
            return self.decide(cfg, headers, ip, secure);
        };
        if let Some(v) = self.early(cfg, headers, ip, secure) {
            return v;
        }
        let m = &self.metrics.room;
        let event = self.event_id.load(Ordering::Relaxed);
        let now_ms = self.unix_ms();
        let now_unix = now_ms / 1000;
        let keys = self.keys.load();
        let settings = self.settings(cfg);
        let hold = |position: Option<u64>| {
            Verdict::Hold(Hold {
                state: if settings.mode == Mode::Paused {
                    RoomState::Paused
                } else {
                    RoomState::Queued
                },
                position,
                eta_seconds: None,
                opens_in_seconds: None,
                cookies: Vec::new(),
            })
        };
        if let Some(token) = get_cookie(headers, TICKET_COOKIE) {
            match keys.open_ticket(token, event, now_unix, cfg.ticket_max_age.as_secs()) {
                Ok(ticket) => match sh.line.observe(ticket.number, now_ms).await {
                    Ok(RedisPlace::Granted) => {
                        let pass_id: u64 = self.lock().rng.random();
                        let session = cfg.session_duration.as_secs();
                        let until = now_ms + (session + (session / 10).max(5)) * 1000;
                        match sh.line.take(ticket.number, pass_id, until).await {
                            Ok(true) => {
                                sh.mark(true, "take", None);
                                m.admitted_line.inc();
                                m.wait_seconds
                                    .observe(now_unix.saturating_sub(ticket.issued_at) as f64);
                                let clear = SetCookie::clear(
                                    TICKET_COOKIE,
                                    secure,
                                    cfg.cookie_domain.as_deref(),
                                );
                                return self.new_pass(
                                    cfg,
                                    &keys,
                                    pass_id,
                                    now_unix,
                                    now_unix,
                                    secure,
                                    vec![clear],
                                );
                            }
                            Ok(false) => {}
                            Err(e) => {
                                sh.mark(false, "take", Some(&e));
                                return hold(None);
                            }
                        }
                    }
                    Ok(RedisPlace::Waiting { position }) => {
                        sh.mark(true, "poll", None);
                        return hold(Some(position));
                    }
                    Ok(_) => sh.mark(true, "poll", None),
                    Err(e) => {
                        // The place is not lost: the same ticket polls again.
                        sh.mark(false, "poll", Some(&e));
                        return hold(None);
                    }
                },
                Err(r) => m
                    .token_rejects
                    .with_label_values(&["ticket", r.label()])
                    .inc(),
            }
        }
        if let Some(limited) = self.ticket_limited(ip) {
            return limited;
        }
        let number = match sh.line.issue(now_ms).await {
            Ok(n) => {
                sh.mark(true, "issue", None);
                n
            }
            Err(e) => {
                sh.mark(false, "issue", Some(&e));
                return hold(None);
            }
        };
        m.tickets_issued.inc();
        let token = keys.seal_ticket(&Ticket {
            event,
            number,
            issued_at: now_unix,
        });
        let mut v = hold(None);
        if let Verdict::Hold(h) = &mut v {
            h.cookies.push(self.cookie(
                cfg,
                TICKET_COOKIE,
                &token,
                cfg.ticket_max_age.as_secs(),
                secure,
            ));
        }
        v
    }

    /// Whether the line is shared through Redis.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    /// The line's Redis connection (`None` without Redis), for the voucher
    /// ledger: one connection per process.
    pub fn redis_connection(&self) -> Option<redis::aio::ConnectionManager> {
        self.shared.as_ref().map(|sh| sh.line.connection().clone())
    }

    /// Redis reachable at the last command (`None` without Redis).
    pub fn store_up(&self) -> Option<bool> {
        self.shared.as_ref().map(Shared::is_up)
    }

    /// The admission tick with Redis: flushes this node's pass refreshes
    /// (one command), then ticks the shared line if this node holds the
    /// lease, its gate being the one global rate.
    pub async fn tick_shared(&self, cfg: &RoomConfig) {
        let Some(sh) = &self.shared else {
            return self.tick(cfg);
        };
        self.adapt(cfg, self.now_ms());
        let settings = self.settings(cfg);
        let prune = {
            let mut s = self.lock();
            s.ticks += 1;
            s.ticks % 40 == 0
        };
        if prune {
            self.prune_limiters();
        }
        sh.flush().await;
        let admitting = matches!(settings.mode, Mode::Fifo | Mode::Random);
        let last = *sh.last.lock().unwrap_or_else(|e| e.into_inner());
        let used = last.map_or(0, |t| t.active + t.pending);
        let want = settings.max_active_users.saturating_sub(used);
        let budget = if admitting {
            self.lock().gate.take(want)
        } else {
            0
        };
        let max_active = if admitting {
            settings.max_active_users
        } else {
            0
        };
        let m = &self.metrics.room;
        match sh.line.tick(self.unix_ms(), max_active, budget).await {
            Ok(Some(t)) => {
                sh.mark(true, "tick", None);
                *sh.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
                let now = self.now_ms();
                let mut s = self.lock();
                s.rate.record(now, t.granted);
                let rate = s.rate.per_second(now);
                drop(s);
                m.active_users.set(t.active as i64);
                m.pending_admissions.set(t.pending as i64);
                m.admission_rate.set(rate.unwrap_or(0.0));
            }
            Ok(None) => sh.mark(true, "tick", None),
            Err(e) => sh.mark(false, "tick", Some(&e)),
        }
        m.max_active_users.set(settings.max_active_users as i64);
        m.set_state(match settings.mode {
            Mode::Fifo | Mode::Random => "open",
            Mode::Paused => "paused",
            Mode::Closed => "closed",
            Mode::Passthrough => "passthrough",
        });
    }
}
