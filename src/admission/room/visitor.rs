//! Who is talking: the visitor a request's ticket or pass names, with
//! their state and place, for feedback. Nothing is issued or taken here
//! (a poll's liveness mark at most), unlike a decision.

use std::sync::atomic::Ordering;

use http::HeaderMap;

use super::backend::{Spot, Unreachable};
use super::{Room, TICKET_COOKIE};
use crate::config::room::RoomConfig;
use crate::tokens::cookie::get_cookie;

/// A visitor with a valid ticket or pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visitor {
    /// `ticket:N` or `pass:HEX`.
    pub id: String,
    /// `admitted`, `waiting`, `in_draw`, `granted` or `left_line`.
    pub state: &'static str,
    /// Place in line when known (the line's, Redis's with several nodes;
    /// `None` when the shared line cannot be read just now).
    pub position: Option<u64>,
}

impl Room {
    /// The visitor whose valid pass or ticket `headers` carry, if any.
    pub async fn visitor(&self, cfg: &RoomConfig, headers: &HeaderMap) -> Option<Visitor> {
        if let Some(pass) = self.check_pass(headers) {
            return Some(Visitor {
                id: format!("pass:{:016x}", pass.pass_id),
                state: "admitted",
                position: None,
            });
        }
        let token = get_cookie(headers, TICKET_COOKIE)?;
        let event = self.event_id.load(Ordering::Relaxed);
        let ticket = self
            .seal
            .keys()
            .open_ticket(
                token,
                event,
                self.unix_ms() / 1000,
                cfg.ticket_max_age.as_secs(),
            )
            .ok()?;
        // a read only: like a poll, it marks the ticket live
        let (state, position) = match self.observe(ticket.number, false).await {
            Ok(Spot::Waiting(position)) => ("waiting", Some(position)),
            Ok(Spot::Drawing) => ("in_draw", None),
            Ok(Spot::Granted) => ("granted", None),
            Ok(Spot::Gone) => ("left_line", None),
            // Redis unreachable: the feedback still counts
            Err(Unreachable) => ("waiting", None),
        };
        Some(Visitor {
            id: format!("ticket:{}", ticket.number),
            state,
            position,
        })
    }
}
