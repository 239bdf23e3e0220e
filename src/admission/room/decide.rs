//! The decision for one request, one algorithm for every backend: a valid
//! pass goes on; then the per-address limits, sold out, closed and
//! passthrough; then the line (`backend`): a ticket's turn, or a newcomer's
//! entry. With Redis unreachable, `shared_outage` decides instead.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use http::{HeaderMap, HeaderValue};
use rand::Rng;

use super::backend::{Entry, Spot, Unreachable};
use super::limits::Seen;
use super::seal::{clear_ticket, pass_is_fresh, pass_life_secs};
use super::verdict::{eta_seconds, hold_state};
use super::{opens_in_seconds, Asking, Hold, Now, Room, Settings, Verdict};
use crate::config::room::{Mode, RoomConfig};
use crate::holding::RoomState;
use crate::tokens::{Pass, Ticket};

impl Room {
    /// Decides for one request to a protected path. With Redis, one
    /// command per poll; the other backends answer at once.
    pub async fn decide(
        &self,
        cfg: &RoomConfig,
        headers: &HeaderMap,
        ip: IpAddr,
        secure: bool,
    ) -> Verdict {
        self.decide_asking(cfg, Asking::of(headers), ip, secure)
            .await
    }

    /// [`Room::decide`] with the request's cookies already found.
    pub async fn decide_asking(
        &self,
        cfg: &RoomConfig,
        asking: Asking<'_>,
        ip: IpAddr,
        secure: bool,
    ) -> Verdict {
        // One clock reading and one look at the settings for the whole decision.
        let now = self.now();
        let settings = self.decision_settings(cfg);
        let v = match self.early(cfg, &settings, asking.pass, ip, secure, now) {
            Some(v) => v,
            None => {
                self.decide_line(cfg, &settings, asking, ip, secure, now)
                    .await
            }
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
        settings: &Settings,
        pass: Option<&str>,
        ip: IpAddr,
        secure: bool,
        now: Now,
    ) -> Option<Verdict> {
        let m = &self.metrics.room;
        let event = self.event_id.load(Ordering::Relaxed);
        if let Some(pass) = self.seal.open_pass(pass, event, now.unix_secs(), m) {
            return Some(self.admit_pass(cfg, pass, now, secure));
        }
        if let Some(hold) = self.limits.request_limited(cfg, ip, m) {
            return Some(Verdict::Hold(hold));
        }
        if self.vouchers_left() == Some(0) {
            return Some(Verdict::Hold(Hold::bare(RoomState::SoldOut)));
        }
        match settings.mode {
            Mode::Closed => Some(Verdict::Hold(Hold::bare(RoomState::Closed))),
            Mode::Passthrough => {
                let pass_id = self.lock().rng.random();
                m.admitted_direct.inc();
                let admitted_at = now.unix_secs();
                Some(self.new_pass(cfg, pass_id, admitted_at, now, secure, Vec::new()))
            }
            _ => None,
        }
    }

    /// The per-address ticket limit for a newcomer (see `limits`).
    pub(super) fn ticket_gate(
        &self,
        cfg: &RoomConfig,
        pow: Option<&str>,
        ip: IpAddr,
        now: Now,
    ) -> Option<Verdict> {
        let seen = Seen {
            keys: &self.seal.keys(),
            event: self.event_id.load(Ordering::Relaxed),
            now_unix: now.unix_secs(),
            metrics: &self.metrics.room,
        };
        self.limits
            .ticket_gate(cfg, pow, ip, &seen)
            .map(Verdict::Hold)
    }

    async fn decide_line(
        &self,
        cfg: &RoomConfig,
        settings: &Settings,
        asking: Asking<'_>,
        ip: IpAddr,
        secure: bool,
        now: Now,
    ) -> Verdict {
        let m = &self.metrics.room;
        let event = self.event_id.load(Ordering::Relaxed);
        let now_unix = now.unix_secs();
        let ticket = self
            .seal
            .open_ticket(cfg, asking.ticket, event, now_unix, m);
        if self.redis().is_some_and(|sh| !sh.is_up()) {
            // Only the tick probes a lost Redis: requests never wait for it.
            return self.decide_outage(cfg, settings, ticket, asking.pow, ip, secure);
        }
        let hold = |position| Verdict::Hold(self.hold(cfg, settings, position, now));
        if let Some(ticket) = ticket {
            match self.observe_at(ticket.number, true, now).await {
                Ok(Spot::Granted) => {
                    let pass_id = self.lock().rng.random();
                    match self.take(cfg, ticket.number, pass_id, now).await {
                        Ok(true) => {
                            m.admitted_line.inc();
                            return self.ticket_to_pass(cfg, &ticket, pass_id, secure, now);
                        }
                        Ok(false) => {}
                        Err(Unreachable) => return hold(None),
                    }
                }
                Ok(Spot::Waiting(position)) => return hold(Some(position)),
                Ok(Spot::Drawing) => return hold(None),
                // Skipped while away, grant expired, or from another life:
                // a new place at the back.
                Ok(Spot::Gone) => {}
                // The place is not lost: the same ticket polls again.
                Err(Unreachable) => return hold(None),
            }
        }

        // A new visitor.
        if let Some(limited) = self.ticket_gate(cfg, asking.pow, ip, now) {
            return limited;
        }
        let pass_id = self.lock().rng.random();
        match self.enter(cfg, settings, pass_id, now).await {
            Ok(Entry::Admitted) => {
                m.admitted_direct.inc();
                self.new_pass(cfg, pass_id, now_unix, now, secure, Vec::new())
            }
            Ok(Entry::Ticket { number, position }) => {
                m.tickets_issued.inc();
                let mut h = self.hold(cfg, settings, position, now);
                h.cookies.push(
                    self.seal
                        .ticket_cookie(cfg, event, number, now_unix, secure),
                );
                Verdict::Hold(h)
            }
            Ok(Entry::Refused) => Verdict::Limited {
                retry_after: 5,
                scope: "store",
            },
            Err(Unreachable) => hold(None),
        }
    }

    /// A waiting visitor's holding answer: the state, the position when
    /// known, the wait at the measured admission rate.
    pub(super) fn hold(
        &self,
        cfg: &RoomConfig,
        settings: &Settings,
        position: Option<u64>,
        now: Now,
    ) -> Hold {
        let opens_in = opens_in_seconds(cfg, now.unix_ms);
        let view = self.line_view(opens_in.is_some());
        let state = hold_state(view.prequeue, settings.mode == Mode::Paused);
        let eta = view.waiting.and_then(|waiting| {
            let rate = self.lock().rate.per_second(now.room_ms);
            eta_seconds(state, position.unwrap_or(waiting), rate)
        });
        Hold {
            position,
            eta_seconds: eta,
            opens_in_seconds: opens_in,
            ..Hold::bare(state)
        }
    }

    /// A valid pass: go on, refreshing it (and the active slot) at most
    /// once per refresh step so most requests take no lock at all.
    fn admit_pass(&self, cfg: &RoomConfig, pass: Pass, now: Now, secure: bool) -> Verdict {
        if pass_is_fresh(cfg, &pass, now.unix_secs()) {
            return Verdict::Admit {
                pass_id: pass.pass_id,
                cookies: Vec::new(),
            };
        }
        self.new_pass(cfg, pass.pass_id, pass.admitted_at, now, secure, Vec::new())
    }

    /// A waiting visitor's turn: the pass, and the ticket cleared.
    pub(super) fn ticket_to_pass(
        &self,
        cfg: &RoomConfig,
        ticket: &Ticket,
        pass_id: u64,
        secure: bool,
        now: Now,
    ) -> Verdict {
        let now_unix = now.unix_secs();
        self.metrics
            .room
            .wait_seconds
            .observe(now_unix.saturating_sub(ticket.issued_at) as f64);
        let clear = clear_ticket(cfg, secure);
        self.new_pass(cfg, pass_id, now_unix, now, secure, vec![clear])
    }

    /// Seals a pass valid for [`pass_life_secs`] from `now` and counts its
    /// holder as active until then.
    pub(super) fn new_pass(
        &self,
        cfg: &RoomConfig,
        pass_id: u64,
        admitted_at: u64,
        now: Now,
        secure: bool,
        mut cookies: Vec<HeaderValue>,
    ) -> Verdict {
        let life_ms = pass_life_secs(cfg) * 1000;
        self.lock().active.touch(pass_id, now.room_ms + life_ms);
        if let Some(sh) = self.redis() {
            sh.touch_later(pass_id, now.unix_ms + life_ms);
        }
        let event = self.event_id.load(Ordering::Relaxed);
        let now_unix = now.unix_secs();
        cookies.push(
            self.seal
                .pass_cookie(cfg, event, pass_id, admitted_at, now_unix, secure),
        );
        Verdict::Admit { pass_id, cookies }
    }
}
