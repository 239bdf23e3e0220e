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
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use governor::{DefaultKeyedRateLimiter, Quota};

use super::Hold;
use crate::config::room::RoomConfig;
use crate::holding::RoomState;
use crate::metrics::RoomMetrics;
use crate::tokens::{proof, Challenge, Keyring};

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

type IpLimiter = DefaultKeyedRateLimiter<IpAddr>;

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

/// Challenge ids already accepted, with when they expire (unix seconds).
#[derive(Default)]
struct Spent {
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
    fn prune(&mut self, now: u64) {
        self.ids.retain(|_, until| *until > now);
        self.pruned_at = now;
    }
}

/// The per-address limits and the challenges spent.
pub(super) struct AddressLimits {
    ticket: ArcSwap<(u32, IpLimiter)>,
    request: ArcSwap<(u32, Option<IpLimiter>)>,
    /// Proof-of-work challenges accepted, so each is accepted once.
    spent: Mutex<Spent>,
}

/// What a limit check needs from the room: its keys, event and time.
pub(super) struct Seen<'a> {
    pub keys: &'a Keyring,
    pub event: u64,
    pub now_unix: u64,
    pub metrics: &'a RoomMetrics,
}

impl AddressLimits {
    pub(super) fn new(cfg: &RoomConfig) -> AddressLimits {
        AddressLimits {
            ticket: ArcSwap::from_pointee(ticket_limit(cfg)),
            request: ArcSwap::from_pointee(request_limit(cfg)),
            spent: Mutex::new(Spent::default()),
        }
    }

    /// A reload: a limiter whose number changed starts afresh.
    pub(super) fn apply(&self, cfg: &RoomConfig) {
        if self.ticket.load().0 != cfg.tickets_per_minute_per_ip {
            self.ticket.store(Arc::new(ticket_limit(cfg)));
        }
        if self.request.load().0 != cfg.requests_per_second_per_ip {
            self.request.store(Arc::new(request_limit(cfg)));
        }
    }

    /// governor keeps state for every address ever seen: forget the ones
    /// whose limits have refilled, so a million addresses pass through
    /// without a million entries staying.
    pub(super) fn prune(&self, now_unix: u64) {
        let t = self.ticket.load();
        t.1.retain_recent();
        t.1.shrink_to_fit();
        if let Some(r) = &self.request.load().1 {
            r.retain_recent();
            r.shrink_to_fit();
        }
        self.spent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .prune(now_unix);
    }

    /// The per-address request limit: `Some` holding answer (come back
    /// after one poll interval) when this address is over it.
    pub(super) fn request_limited(
        &self,
        cfg: &RoomConfig,
        ip: IpAddr,
        m: &RoomMetrics,
    ) -> Option<Hold> {
        let limiter = self.request.load();
        if limiter.1.as_ref()?.check_key(&ip).is_ok() {
            return None;
        }
        m.rate_limited.with_label_values(&["request"]).inc();
        // One poll interval: pages over the limit come back at the pace
        // they would poll anyway, so they add no load to the address.
        Some(Hold::retry(cfg.refresh.as_secs().max(1)))
    }

    /// The per-address ticket limit for a newcomer: `None` to issue the
    /// ticket (under the limit, or a valid solution brought), else a
    /// challenge (or with `ticket_proof_bits = 0`, a holding answer asking
    /// to come back when the limit has refilled a little).
    pub(super) fn ticket_gate(
        &self,
        cfg: &RoomConfig,
        pow: Option<&str>,
        ip: IpAddr,
        seen: &Seen<'_>,
    ) -> Option<Hold> {
        let m = seen.metrics;
        let bits = cfg.ticket_proof_bits;
        if bits > 0 {
            if let Some(solution) = pow {
                if self.accept_proof(solution, bits, seen) {
                    m.proof_of_work.with_label_values(&["solved"]).inc();
                    return None;
                }
                m.proof_of_work.with_label_values(&["rejected"]).inc();
            }
        }
        if self.ticket.load().1.check_key(&ip).is_ok() {
            return None;
        }
        m.rate_limited.with_label_values(&["ticket"]).inc();
        if bits == 0 {
            let refill = 60 / u64::from(cfg.tickets_per_minute_per_ip.max(1));
            return Some(Hold::retry(refill.max(cfg.refresh.as_secs()).max(1)));
        }
        m.proof_of_work.with_label_values(&["issued"]).inc();
        let token = seen.keys.seal_challenge(&Challenge {
            event: seen.event,
            issued_at: seen.now_unix,
            id: rand::random(),
        });
        let mut hold = Hold::bare(RoomState::Queued);
        hold.challenge = Some((token, bits));
        Some(hold)
    }

    /// Whether `solution` solves a challenge this room issued, not expired
    /// and not accepted before (on this node). Cheapest check first: the
    /// seal, then the hash, then the set of spent ids.
    fn accept_proof(&self, solution: &str, bits: u32, seen: &Seen<'_>) -> bool {
        let Some((token, nonce)) = proof::split(solution) else {
            return false;
        };
        let now = seen.now_unix;
        let Ok(c) = seen
            .keys
            .open_challenge(token, seen.event, now, CHALLENGE_TTL_SECS)
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

fn ticket_limit(cfg: &RoomConfig) -> (u32, IpLimiter) {
    (
        cfg.tickets_per_minute_per_ip,
        ip_limiter(cfg.tickets_per_minute_per_ip, true),
    )
}

fn request_limit(cfg: &RoomConfig) -> (u32, Option<IpLimiter>) {
    (
        cfg.requests_per_second_per_ip,
        (cfg.requests_per_second_per_ip > 0)
            .then(|| ip_limiter(cfg.requests_per_second_per_ip, false)),
    )
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
