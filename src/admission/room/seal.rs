//! Passes and tickets: how long a pass lives, and sealing them into the
//! cookies the room sets. The keys live here; a reload swaps them.

use std::sync::Arc;

use arc_swap::ArcSwap;
use http::HeaderValue;

use super::{PASS_COOKIE, TICKET_COOKIE};
use crate::config::room::RoomConfig;
use crate::metrics::RoomMetrics;
use crate::tokens::cookie::SetCookie;
use crate::tokens::{Keyring, Pass, Ticket};

/// A pass is refreshed at most once per step: a tenth of the session, at
/// least 5 s, so most requests carry a pass that needs no new cookie.
fn refresh_step(session_secs: u64) -> u64 {
    (session_secs / 10).max(5)
}

/// How long a pass lives (s): a session plus one refresh step. The active
/// slot it holds (in memory or in Redis) lives as long.
pub fn pass_life_secs(cfg: &RoomConfig) -> u64 {
    let session = cfg.session_duration.as_secs();
    session + refresh_step(session)
}

/// Whether `pass` was sealed less than a refresh step ago (no new cookie).
pub(super) fn pass_is_fresh(cfg: &RoomConfig, pass: &Pass, now_unix: u64) -> bool {
    let session = cfg.session_duration.as_secs();
    let step = refresh_step(session);
    let refreshed_at = pass.expires_at.saturating_sub(session + step);
    now_unix.saturating_sub(refreshed_at) < step
}

/// The signing keys and the cookies sealed with them.
pub(super) struct Seal {
    keys: ArcSwap<Keyring>,
}

impl Seal {
    pub(super) fn new(keys: Keyring) -> Seal {
        Seal {
            keys: ArcSwap::from_pointee(keys),
        }
    }

    /// The keys in force.
    pub(super) fn keys(&self) -> arc_swap::Guard<Arc<Keyring>> {
        self.keys.load()
    }

    /// Swaps the keys (a reload).
    pub(super) fn set_keys(&self, keys: Keyring) {
        self.keys.store(Arc::new(keys));
    }

    /// The valid pass `headers` carry, counting a rejected one.
    pub(super) fn open_pass(
        &self,
        token: Option<&str>,
        event: u64,
        now_unix: u64,
        m: &RoomMetrics,
    ) -> Option<Pass> {
        let token = token?;
        self.keys
            .load()
            .open_pass(token, event, now_unix)
            .map_err(|r| {
                m.token_rejects
                    .with_label_values(&["pass", r.label()])
                    .inc()
            })
            .ok()
    }

    /// The valid ticket `headers` carry, counting a rejected one.
    pub(super) fn open_ticket(
        &self,
        cfg: &RoomConfig,
        token: Option<&str>,
        event: u64,
        now_unix: u64,
        m: &RoomMetrics,
    ) -> Option<Ticket> {
        let token = token?;
        self.keys
            .load()
            .open_ticket(token, event, now_unix, cfg.ticket_max_age.as_secs())
            .map_err(|r| {
                m.token_rejects
                    .with_label_values(&["ticket", r.label()])
                    .inc()
            })
            .ok()
    }

    /// The pass cookie: valid for [`pass_life_secs`] from `now_unix`.
    pub(super) fn pass_cookie(
        &self,
        cfg: &RoomConfig,
        event: u64,
        pass_id: u64,
        admitted_at: u64,
        now_unix: u64,
        secure: bool,
    ) -> HeaderValue {
        let life = pass_life_secs(cfg);
        let token = self.keys.load().seal_pass(&Pass {
            event,
            pass_id,
            admitted_at,
            expires_at: now_unix + life,
        });
        cookie(cfg, PASS_COOKIE, &token, life, secure)
    }

    /// The ticket cookie for place `number`, issued at `now_unix`.
    pub(super) fn ticket_cookie(
        &self,
        cfg: &RoomConfig,
        event: u64,
        number: u64,
        now_unix: u64,
        secure: bool,
    ) -> HeaderValue {
        let token = self.keys.load().seal_ticket(&Ticket {
            event,
            number,
            issued_at: now_unix,
        });
        cookie(
            cfg,
            TICKET_COOKIE,
            &token,
            cfg.ticket_max_age.as_secs(),
            secure,
        )
    }
}

/// The ticket cookie cleared (its holder got a pass).
pub(super) fn clear_ticket(cfg: &RoomConfig, secure: bool) -> HeaderValue {
    SetCookie::clear(TICKET_COOKIE, secure, cfg.cookie_domain.as_deref())
}

fn cookie(cfg: &RoomConfig, name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    SetCookie {
        name,
        value,
        max_age: Some(max_age),
        secure,
        domain: cfg.cookie_domain.as_deref(),
    }
    .to_header_value()
}
