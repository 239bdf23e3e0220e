//! The decision for one request: a valid pass goes on; then the
//! per-address limits, sold out, closed and passthrough; then the line
//! (this node's, in memory or on disk; the shared line is `shared`).

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use http::{HeaderMap, HeaderValue};
use rand::Rng;

use super::limits::Seen;
use super::seal::{clear_ticket, pass_is_fresh, pass_life_secs};
use super::verdict::{eta_seconds, hold_state};
use super::{opens_in_seconds, Hold, Room, Settings, State, Verdict};
use crate::admission::line::Place;
use crate::config::room::{Mode, RoomConfig};
use crate::holding::RoomState;
use crate::tokens::{Pass, Ticket};

impl Room {
    /// Decides for one request to a protected path, on this node's line
    /// (see [`Room::decide_async`] for every store).
    pub fn decide(
        &self,
        cfg: &RoomConfig,
        headers: &HeaderMap,
        ip: IpAddr,
        secure: bool,
    ) -> Verdict {
        let v = match self.early(cfg, headers, ip, secure) {
            Some(v) => v,
            None => self.decide_line(cfg, headers, ip, secure),
        };
        self.finish(cfg, v)
    }

    /// A holding answer completed with what the page needs: whether the
    /// visitor is near the head, the vouchers left, the pages in force.
    pub(super) fn finish(&self, cfg: &RoomConfig, mut v: Verdict) -> Verdict {
        if let Verdict::Hold(h) = &mut v {
            h.near =
                h.state == RoomState::Queued && h.position.is_some_and(|p| self.near_front(cfg, p));
            h.vouchers_left = self.vouchers_left();
            h.pages = Some(self.pages.load_full());
        }
        v
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
        if let Some(pass) = self.seal.open_pass(headers, event, now_unix, m) {
            return Some(self.admit_pass(cfg, pass, now_unix, secure));
        }
        if let Some(hold) = self.limits.request_limited(cfg, ip, m) {
            return Some(Verdict::Hold(hold));
        }
        if self.vouchers_left() == Some(0) {
            return Some(Verdict::Hold(Hold::bare(RoomState::SoldOut)));
        }
        match self.settings(cfg).mode {
            Mode::Closed => Some(Verdict::Hold(Hold::bare(RoomState::Closed))),
            Mode::Passthrough => {
                let pass_id = self.lock().rng.random();
                m.admitted_direct.inc();
                Some(self.new_pass(cfg, pass_id, now_unix, now_unix, secure, Vec::new()))
            }
            _ => None,
        }
    }

    /// The per-address ticket limit for a newcomer (see `limits`).
    pub(super) fn ticket_gate(
        &self,
        cfg: &RoomConfig,
        headers: &HeaderMap,
        ip: IpAddr,
    ) -> Option<Verdict> {
        let seen = Seen {
            keys: &self.seal.keys(),
            event: self.event_id.load(Ordering::Relaxed),
            now_unix: self.unix_ms() / 1000,
            metrics: &self.metrics.room,
        };
        self.limits
            .ticket_gate(cfg, headers, ip, &seen)
            .map(Verdict::Hold)
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
        let settings = self.settings(cfg);
        let now = self.now_ms();
        if let Some(ticket) = self.seal.open_ticket(cfg, headers, event, now_unix, m) {
            let mut s = self.lock();
            match s.line.observe(ticket.number, now) {
                Place::Granted if s.line.take(ticket.number, now) => {
                    let pass_id = s.rng.random();
                    drop(s);
                    m.admitted_line.inc();
                    return self.ticket_to_pass(cfg, &ticket, pass_id, secure);
                }
                Place::Waiting { position } => {
                    return Verdict::Hold(self.hold(cfg, &settings, &s, Some(position), now));
                }
                Place::InDraw { .. } => {
                    return Verdict::Hold(self.hold(cfg, &settings, &s, None, now))
                }
                // Skipped while away, grant expired, or from another life:
                // a new place at the back.
                _ => {}
            }
        }

        // A new visitor.
        if let Some(limited) = self.ticket_gate(cfg, headers, ip) {
            return limited;
        }
        let mut s = self.lock();
        if settings.admits() && s.line.is_open() && s.line.waiting() == 0 {
            let free = self.free_places(cfg, &settings, s.active.len(), &s.line, now);
            let rated = settings.new_users_per_minute > 0;
            if free > 0 && (!rated || s.gate.take(1) == 1) {
                let pass_id = s.rng.random();
                s.rate.record(now, 1);
                drop(s);
                m.admitted_direct.inc();
                return self.new_pass(cfg, pass_id, now_unix, now_unix, secure, Vec::new());
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
        hold.cookies.push(
            self.seal
                .ticket_cookie(cfg, event, number, now_unix, secure),
        );
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
        let state = hold_state(!s.line.is_open(), settings.mode == Mode::Paused);
        let ahead = position.unwrap_or_else(|| s.line.waiting());
        Hold {
            position,
            eta_seconds: eta_seconds(state, ahead, s.rate.per_second(now)),
            opens_in_seconds: opens_in_seconds(cfg, self.unix_ms()),
            ..Hold::bare(state)
        }
    }

    /// A valid pass: go on, refreshing it (and the active slot) at most
    /// once per refresh step so most requests take no lock at all.
    fn admit_pass(&self, cfg: &RoomConfig, pass: Pass, now_unix: u64, secure: bool) -> Verdict {
        if pass_is_fresh(cfg, &pass, now_unix) {
            return Verdict::Admit {
                pass_id: pass.pass_id,
                cookies: Vec::new(),
            };
        }
        self.new_pass(
            cfg,
            pass.pass_id,
            pass.admitted_at,
            now_unix,
            secure,
            Vec::new(),
        )
    }

    /// A waiting visitor's turn: the pass, and the ticket cleared.
    pub(super) fn ticket_to_pass(
        &self,
        cfg: &RoomConfig,
        ticket: &Ticket,
        pass_id: u64,
        secure: bool,
    ) -> Verdict {
        let now_unix = self.unix_ms() / 1000;
        self.metrics
            .room
            .wait_seconds
            .observe(now_unix.saturating_sub(ticket.issued_at) as f64);
        let clear = clear_ticket(cfg, secure);
        self.new_pass(cfg, pass_id, now_unix, now_unix, secure, vec![clear])
    }

    /// Seals a pass valid for [`pass_life_secs`] from now and counts its
    /// holder as active until then.
    pub(super) fn new_pass(
        &self,
        cfg: &RoomConfig,
        pass_id: u64,
        admitted_at: u64,
        now_unix: u64,
        secure: bool,
        mut cookies: Vec<HeaderValue>,
    ) -> Verdict {
        let life_ms = pass_life_secs(cfg) * 1000;
        let until = self.now_ms() + life_ms;
        self.lock().active.touch(pass_id, until);
        if let Some(sh) = &self.shared {
            sh.touch_later(pass_id, self.unix_ms() + life_ms);
        }
        let event = self.event_id.load(Ordering::Relaxed);
        cookies.push(
            self.seal
                .pass_cookie(cfg, event, pass_id, admitted_at, now_unix, secure),
        );
        Verdict::Admit { pass_id, cookies }
    }
}
