//! The per-address limits (`[room.limits]`), one check for every store
//! backend. Shared addresses are people, not attackers: carriers put many
//! phones behind one address (CGNAT), so going over a limit never earns an
//! error page or costs a place in line.
//!
//! - Over `requests_per_second_per_ip` (checked after a valid pass: an
//!   admitted visitor is governed by the per-pass limit instead): a holding
//!   answer that asks to come back after one poll interval. The ticket
//!   cookie is not looked at, so the place is kept as it was.
//! - A newcomer over `tickets_per_minute_per_ip`: a proof-of-work
//!   challenge (`ticket_proof_bits`, see [`crate::tokens::proof`]); the
//!   solution, brought back in the `usher_pow` cookie or the `X-Usher-Pow`
//!   header, gets the ticket anyway. Each challenge is sealed with the
//!   room's keys, expires after [`CHALLENGE_TTL_SECS`] and is accepted once
//!   per node (the ids spent are kept in memory until they expire).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use http::HeaderMap;

use super::{Hold, Room, Verdict};
use crate::config::room::RoomConfig;
use crate::holding::RoomState;
use crate::tokens::cookie::get_cookie;
use crate::tokens::{proof, Challenge};

/// Cookie the holding page's script sets with a solved challenge.
pub const POW_COOKIE: &str = "usher_pow";
/// Header an app sends a solved challenge in (`challenge "." nonce`).
pub const POW_HEADER: &str = "x-usher-pow";
/// How long a challenge may be solved and brought back: long enough for a
/// slow phone, short enough that a farm cannot stockpile solutions.
pub const CHALLENGE_TTL_SECS: u64 = 120;
/// Challenge ids remembered at most (about 5 MB). Full of unexpired ids, a
/// node refuses further solutions (the visitor gets a fresh challenge)
/// rather than forget one and accept it twice.
const MAX_SPENT: usize = 200_000;

/// Challenge ids already accepted, with when they expire (unix seconds).
#[derive(Default)]
pub(super) struct Spent {
    ids: HashMap<u64, u64>,
    pruned_at: u64,
}

impl Spent {
    /// Records `id`, valid until `until`: false when it was accepted
    /// before, or the set is full of ids still valid at `now`.
    fn spend(&mut self, id: u64, until: u64, now: u64) -> bool {
        if self.ids.len() >= MAX_SPENT && now > self.pruned_at {
            self.prune(now);
        }
        if self.ids.len() >= MAX_SPENT || self.ids.contains_key(&id) {
            return false;
        }
        self.ids.insert(id, until);
        true
    }

    /// Forgets the ids that expired by `now` (they would be refused as
    /// expired anyway).
    pub(super) fn prune(&mut self, now: u64) {
        self.ids.retain(|_, until| *until > now);
        self.pruned_at = now;
    }
}

impl Room {
    /// The per-address request limit: `Some` holding answer (come back
    /// after one poll interval) when this address is over it.
    pub(super) fn request_limited(&self, cfg: &RoomConfig, ip: IpAddr) -> Option<Verdict> {
        let limiter = self.request_limit.load();
        if limiter.1.as_ref()?.check_key(&ip).is_ok() {
            return None;
        }
        self.metrics
            .room
            .rate_limited
            .with_label_values(&["request"])
            .inc();
        // One poll interval: pages over the limit come back at the pace
        // they would poll anyway, so they add no load to the address.
        Some(Verdict::Hold(Hold::retry(cfg.refresh.as_secs().max(1))))
    }

    /// The per-address ticket limit for a newcomer: `None` to issue the
    /// ticket (under the limit, or a valid solution brought), else a
    /// challenge (or with `ticket_proof_bits = 0`, a holding answer asking
    /// to come back when the limit has refilled a little).
    pub(super) fn ticket_gate(
        &self,
        cfg: &RoomConfig,
        headers: &HeaderMap,
        ip: IpAddr,
    ) -> Option<Verdict> {
        let m = &self.metrics.room;
        let bits = cfg.ticket_proof_bits;
        if bits > 0 {
            let solution = headers
                .get(POW_HEADER)
                .and_then(|v| v.to_str().ok())
                .or_else(|| get_cookie(headers, POW_COOKIE));
            if let Some(solution) = solution {
                if self.accept_proof(solution, bits) {
                    m.proof_of_work.with_label_values(&["solved"]).inc();
                    return None;
                }
                m.proof_of_work.with_label_values(&["rejected"]).inc();
            }
        }
        if self.ticket_limit.load().1.check_key(&ip).is_ok() {
            return None;
        }
        m.rate_limited.with_label_values(&["ticket"]).inc();
        if bits == 0 {
            let refill = 60 / u64::from(cfg.tickets_per_minute_per_ip.max(1));
            return Some(Verdict::Hold(Hold::retry(
                refill.max(cfg.refresh.as_secs()).max(1),
            )));
        }
        m.proof_of_work.with_label_values(&["issued"]).inc();
        let token = self.keys.load().seal_challenge(&Challenge {
            event: self.event_id.load(Ordering::Relaxed),
            issued_at: self.unix_ms() / 1000,
            id: rand::random(),
        });
        let mut hold = Hold::bare(RoomState::Queued);
        hold.challenge = Some((token, bits));
        Some(Verdict::Hold(hold))
    }

    /// Whether `solution` solves a challenge this room issued, not expired
    /// and not accepted before (on this node). Cheapest check first: the
    /// seal, then the hash, then the set of spent ids.
    fn accept_proof(&self, solution: &str, bits: u32) -> bool {
        let Some((token, nonce)) = proof::split(solution) else {
            return false;
        };
        let now = self.unix_ms() / 1000;
        let event = self.event_id.load(Ordering::Relaxed);
        let Ok(c) = self
            .keys
            .load()
            .open_challenge(token, event, now, CHALLENGE_TTL_SECS)
        else {
            return false;
        };
        proof::solves(token, nonce, bits)
            && self.spent.lock().unwrap_or_else(|e| e.into_inner()).spend(
                c.id,
                c.issued_at + CHALLENGE_TTL_SECS,
                now,
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_is_spent_once_and_forgotten_after_expiry() {
        let mut s = Spent::default();
        assert!(s.spend(7, 100, 10));
        assert!(!s.spend(7, 100, 20), "replayed");
        assert!(s.spend(8, 100, 20));
        s.prune(100);
        assert!(s.ids.is_empty(), "expired ids are forgotten");
    }

    #[test]
    fn a_full_set_refuses_rather_than_forgets() {
        let mut s = Spent::default();
        for id in 0..MAX_SPENT as u64 {
            assert!(s.spend(id, 1_000, 1));
        }
        assert!(!s.spend(u64::MAX, 1_000, 2), "full of live ids");
        assert!(!s.spend(0, 1_000, 3), "and still no replay");
        assert!(
            s.spend(u64::MAX, 2_000, 1_000),
            "once they expire, room again"
        );
    }
}
