//! The room's settings: the config, the operator's live overrides
//! (`/admin/room`) and the adaptive gate's rate, combined into the
//! [`Settings`] in force.

use std::sync::Mutex;

use super::super::adaptive::Aimd;
use crate::config::room::{Mode, RoomConfig};
use crate::metrics::RoomMetrics;
use crate::proxy::health::OriginHealth;

/// Live changes from the admin API; they outlast config reloads until reset.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// Mode (pause and resume set and clear `paused`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// Active visitors at most.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_active_users: Option<u64>,
    /// New visitors per minute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_users_per_minute: Option<u32>,
    /// Operator's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The room's effective settings: config with overrides applied.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Settings {
    /// Mode.
    pub mode: Mode,
    /// Active visitors at most (with the closed-loop gate: its limit now,
    /// under any ceiling).
    pub max_active_users: u64,
    /// New visitors per minute (0: no fixed rate, the closed-loop gate
    /// alone decides).
    pub new_users_per_minute: u32,
    /// Operator's message.
    pub message: String,
}

impl Settings {
    /// Whether the mode lets anyone in through the line.
    pub fn admits(&self) -> bool {
        matches!(self.mode, Mode::Fifo | Mode::Random)
    }

    /// `usher_room_state`'s label with these settings.
    pub(super) fn state_label(&self, sold_out: bool, prequeue: bool) -> &'static str {
        match self.mode {
            _ if sold_out => "sold_out",
            _ if prequeue => "prequeue",
            Mode::Fifo | Mode::Random => "open",
            Mode::Paused => "paused",
            Mode::Closed => "closed",
            Mode::Passthrough => "passthrough",
        }
    }
}

/// The operator's overrides and the adaptive gate's rate.
#[derive(Default)]
pub(super) struct Knobs {
    overrides: Mutex<Overrides>,
    /// The adaptive gate's rate and when it last moved (room ms).
    adaptive: Mutex<Option<(Aimd, u64)>>,
}

impl Knobs {
    /// The settings in force: config plus overrides, with `flow` the
    /// closed-loop gate's limit when it is on.
    pub(super) fn settings(&self, cfg: &RoomConfig, flow: Option<u64>) -> Settings {
        self.settings_as(cfg, flow, true)
    }

    /// [`Knobs::settings`] for one decision: everything but the operator's
    /// message, which no decision reads (the page's announcement is the
    /// board's) and which cost a `String` copy per request; `message` is
    /// left empty.
    pub(super) fn for_decision(&self, cfg: &RoomConfig, flow: Option<u64>) -> Settings {
        self.settings_as(cfg, flow, false)
    }

    fn settings_as(&self, cfg: &RoomConfig, flow: Option<u64>, message: bool) -> Settings {
        let o = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
        // With the closed-loop gate, the file's and the operator's numbers
        // are ceilings over its limit; without it, they are the numbers.
        let max_active_users = match (cfg.closed_loop, o.max_active_users) {
            (Some(cl), over) => {
                let ceiling = over.or(cl.max_active).unwrap_or(u64::MAX);
                flow.unwrap_or(ceiling).min(ceiling)
            }
            (None, Some(over)) => over,
            (None, None) => cfg.max_active_users,
        };
        Settings {
            mode: o.mode.as_deref().and_then(Mode::parse).unwrap_or(cfg.mode),
            max_active_users,
            new_users_per_minute: o.new_users_per_minute.unwrap_or_else(|| {
                let adaptive = self.adaptive.lock().unwrap_or_else(|e| e.into_inner());
                match (&cfg.adaptive, *adaptive, cfg.closed_loop) {
                    (_, _, Some(cl)) => cl.per_minute.unwrap_or(0),
                    (Some(_), Some((aimd, _)), None) => aimd.rate,
                    _ => cfg.new_users_per_minute,
                }
            }),
            message: if message {
                o.message.clone().unwrap_or_else(|| cfg.message.clone())
            } else {
                String::new()
            },
        }
    }

    /// Checks `change` and merges it into the overrides (`None` fields
    /// keep theirs).
    pub(super) fn change(&self, change: Overrides) -> Result<(), String> {
        if let Some(m) = &change.mode {
            Mode::parse(m).ok_or_else(|| {
                format!("mode `{m}`: use fifo, random, passthrough, closed or paused")
            })?;
        }
        if change.max_active_users == Some(0) || change.new_users_per_minute == Some(0) {
            return Err("rates and capacities must be at least 1 (pause the room instead)".into());
        }
        let mut o = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
        if change.mode.is_some() {
            o.mode = change.mode;
        }
        if change.max_active_users.is_some() {
            o.max_active_users = change.max_active_users;
        }
        if change.new_users_per_minute.is_some() {
            o.new_users_per_minute = change.new_users_per_minute;
        }
        if change.message.is_some() {
            o.message = change.message;
        }
        Ok(())
    }

    /// Clears the mode override (resume) or every override (`all`).
    pub(super) fn clear(&self, all: bool) {
        let mut o = self.overrides.lock().unwrap_or_else(|e| e.into_inner());
        if all {
            *o = Overrides::default();
        } else {
            o.mode = None;
        }
    }

    /// The overrides in force.
    pub(super) fn overrides(&self) -> Overrides {
        self.overrides
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The hard cap on visitors inside: the fixed gate's `max_active_users`,
    /// or a ceiling over the closed loop (the operator's override or the
    /// file's `max_active_users`), if any.
    pub(super) fn hard_cap(&self, cfg: &RoomConfig, settings: &Settings) -> Option<u64> {
        match cfg.closed_loop {
            None => Some(settings.max_active_users),
            Some(cl) => self
                .overrides
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .max_active_users
                .or(cl.max_active),
        }
    }

    /// The adaptive gate's step, once per interval: the admission rate
    /// follows the origin's health between floor and ceiling. True when
    /// the rate changed.
    pub(super) fn adapt(
        &self,
        cfg: &RoomConfig,
        now: u64,
        waiting: bool,
        health: &OriginHealth,
        m: &RoomMetrics,
    ) -> bool {
        let Some(a) = &cfg.adaptive else {
            *self.adaptive.lock().unwrap_or_else(|e| e.into_inner()) = None;
            return false;
        };
        let changed = {
            let mut slot = self.adaptive.lock().unwrap_or_else(|e| e.into_inner());
            let (aimd, last) =
                slot.get_or_insert_with(|| (Aimd::new(a, cfg.new_users_per_minute), now));
            if now.saturating_sub(*last) < a.interval.as_millis() as u64 {
                return false;
            }
            *last = now;
            let before = aimd.rate;
            let sample = health.take();
            aimd.step(a, sample, waiting)
                .map(|reason| (before, aimd.rate, reason, sample))
        };
        if let Some((from, to, reason, sample)) = changed {
            m.adaptive_changes
                .with_label_values(&[reason.label()])
                .inc();
            tracing::info!(
                from,
                to,
                reason = reason.label(),
                origin_requests = sample.requests,
                origin_errors = sample.errors,
                origin_mean_latency_ms = sample.mean_latency.as_millis() as u64,
                "adaptive gate changed the admission rate"
            );
        }
        if let Some((aimd, _)) = *self.adaptive.lock().unwrap_or_else(|e| e.into_inner()) {
            m.adaptive_rate.set(i64::from(aimd.rate));
        }
        changed.is_some()
    }
}
