//! `[room]`: the waiting room. Absent, usher is a plain protective proxy
//! (in-flight cap, guards) with no line; present, every protected request
//! needs a pass, and visitors beyond the gate wait in line.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use super::validate::{parse_cidr, Problems};

pub use super::room_file::{
    RawAdaptive, RawLimits, RawRoom, DEFAULT_BURST, DEFAULT_CLAIM_WINDOW, DEFAULT_MAX_ACTIVE_USERS,
    DEFAULT_NEW_USERS_PER_MINUTE, DEFAULT_REFRESH, DEFAULT_REQUESTS_PER_SECOND_PER_IP,
    DEFAULT_REQUESTS_PER_SECOND_PER_PASS, DEFAULT_SESSION_DURATION, DEFAULT_TICK,
    DEFAULT_TICKETS_PER_MINUTE_PER_IP, DEFAULT_TICKET_GRACE, DEFAULT_TICKET_MAX_AGE,
    DEFAULT_TICKET_PROOF_BITS, MAX_TICKET_PROOF_BITS,
};

/// How the room admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// First come, first served.
    Fifo,
    /// A lottery among those waiting.
    Random,
    /// No line: everyone is admitted (and counted).
    Passthrough,
    /// Nobody new is admitted; a page says the event is closed.
    Closed,
    /// New visitors hold; admitted ones keep going.
    Paused,
}

impl Mode {
    /// Parses a mode name.
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "fifo" => Mode::Fifo,
            "random" => Mode::Random,
            "passthrough" => Mode::Passthrough,
            "closed" => Mode::Closed,
            "paused" => Mode::Paused,
            _ => return None,
        })
    }

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Fifo => "fifo",
            Mode::Random => "random",
            Mode::Passthrough => "passthrough",
            Mode::Closed => "closed",
            Mode::Paused => "paused",
        }
    }
}

/// The closed-loop gate's settings: its target and the operator's
/// ceilings (each only when set in the file).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClosedLoop {
    /// Share of the origin's slots to keep busy (0.1 to 1).
    pub target: f64,
    /// `max_active_users`, when set: never more inside.
    pub max_active: Option<u64>,
    /// `new_users_per_minute`, when set: never faster.
    pub per_minute: Option<u32>,
}

/// `[room.adaptive]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveConfig {
    /// Mean origin response time to stay under.
    pub target_latency: Duration,
    /// Share of origin answers that may fail (5xx or no answer).
    pub max_error_rate: f64,
    /// Lowest admission rate (new visitors per minute).
    pub floor: u32,
    /// Highest admission rate.
    pub ceiling: u32,
    /// How often the rate is reconsidered.
    pub interval: Duration,
    /// Added per healthy interval while people wait.
    pub increase: u32,
    /// Factor applied on an unhealthy interval (0 < f < 1).
    pub decrease: f64,
}

/// The validated `[room]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomConfig {
    /// Event name.
    pub event: String,
    /// Admission mode.
    pub mode: Mode,
    /// Active visitors at most (fixed gate; the default when unset).
    pub max_active_users: u64,
    /// New visitors per minute (fixed gate; the default when unset).
    pub new_users_per_minute: u32,
    /// The closed-loop gate, when on (see `admission::flow`).
    pub closed_loop: Option<ClosedLoop>,
    /// Burst.
    pub burst: u32,
    /// Pass session length.
    pub session_duration: Duration,
    /// Place kept while away.
    pub ticket_grace: Duration,
    /// Time to take a granted pass.
    pub claim_window: Duration,
    /// Admission tick.
    pub tick: Duration,
    /// Poll interval for waiting pages.
    pub refresh: Duration,
    /// Oldest ticket accepted.
    pub ticket_max_age: Duration,
    /// Scheduled opening, as given and parsed.
    pub opens_at: Option<(String, SystemTime)>,
    /// Protected prefixes, normalised.
    pub protect: Vec<String>,
    /// Bypass prefixes, normalised.
    pub bypass_paths: Vec<String>,
    /// Bypass networks.
    pub bypass_cidrs: Vec<IpNet>,
    /// Bypass header name and its secret.
    pub bypass_header: Option<(http::HeaderName, String)>,
    /// The file the bypass secret was read from (shown instead of the secret).
    pub bypass_secret_file: Option<PathBuf>,
    /// Keys file.
    pub keys_file: Option<PathBuf>,
    /// Cookie domain.
    pub cookie_domain: Option<String>,
    /// Operator's message (`room.message` as written).
    pub message: String,
    /// The announcement per language (`room.messages` over `room.message`).
    pub messages: super::messages::Messages,
    /// Where feedback is also sent (`room.feedback_webhook`).
    pub feedback_webhook: Option<http::Uri>,
    /// Template override file.
    pub template: Option<PathBuf>,
    /// Default page language is English.
    pub default_english: bool,
    /// New tickets per address per minute.
    pub tickets_per_minute_per_ip: u32,
    /// Requests per address per second (0 = off).
    pub requests_per_second_per_ip: u32,
    /// Requests per pass per second (0 = off).
    pub requests_per_second_per_pass: u32,
    /// Proof-of-work bits for a ticket over the per-address limit (0 = none).
    pub ticket_proof_bits: u32,
    /// The adaptive gate, when enabled.
    pub adaptive: Option<AdaptiveConfig>,
}

impl RoomConfig {
    /// The room with every default (what an empty `[room]` section gives).
    pub fn defaults() -> RoomConfig {
        room(
            &RawRoom::default(),
            Path::new("."),
            &mut Problems::default(),
        )
    }

    /// Whether `ip` is in a bypass network.
    pub fn bypass_ip(&self, ip: IpAddr) -> bool {
        crate::net::is_trusted(ip, &self.bypass_cidrs)
    }
}

/// Normalises a configured prefix the way request paths are normalised.
fn prefix(p: &mut Problems, key: String, text: &str) -> Option<String> {
    if !text.starts_with('/') {
        p.push(key, format!("`{text}` must start with /"));
        return None;
    }
    Some(crate::paths::normalize(text).into_owned())
}

pub(super) fn room(raw: &RawRoom, base: &Path, p: &mut Problems) -> RoomConfig {
    let mode = Mode::parse(&raw.mode).unwrap_or_else(|| {
        p.push(
            "room.mode",
            format!(
                "`{}`: use fifo, random, passthrough, closed or paused",
                raw.mode
            ),
        );
        Mode::Fifo
    });
    if raw.event.is_empty() || raw.event.len() > 64 {
        p.push("room.event", "give the event a name of 1 to 64 characters");
    }
    if raw.max_active_users == Some(0) {
        p.push(
            "room.max_active_users",
            "must be at least 1 (use mode = \"closed\" to admit nobody)",
        );
    }
    if raw.new_users_per_minute == Some(0) {
        p.push(
            "room.new_users_per_minute",
            "must be at least 1 (use mode = \"paused\" to stop admissions)",
        );
    }
    let closed_loop = gate(raw, p);
    if raw.burst == 0 {
        p.push("room.burst", "must be at least 1");
    }
    let dur = |p: &mut Problems, key: &str, text: &str, min: Duration| {
        match super::units::parse_duration(text) {
            Ok(d) if d >= min => d,
            Ok(_) => {
                p.push(
                    key,
                    format!(
                        "`{text}` is too short (at least {})",
                        super::units::format_duration(min)
                    ),
                );
                min
            }
            Err(e) => {
                p.push(key, e);
                min
            }
        }
    };
    let session_duration = dur(
        p,
        "room.session_duration",
        &raw.session_duration,
        Duration::from_secs(10),
    );
    let ticket_grace = dur(
        p,
        "room.ticket_grace",
        &raw.ticket_grace,
        Duration::from_secs(10),
    );
    let claim_window = dur(
        p,
        "room.claim_window",
        &raw.claim_window,
        Duration::from_secs(5),
    );
    let tick = dur(p, "room.tick", &raw.tick, Duration::from_millis(10));
    let refresh = dur(p, "room.refresh", &raw.refresh, Duration::from_secs(1));
    let ticket_max_age = dur(
        p,
        "room.ticket_max_age",
        &raw.ticket_max_age,
        Duration::from_secs(60),
    );
    if refresh * 2 > ticket_grace {
        p.push(
            "room.refresh",
            "must be at most half of room.ticket_grace, or polling visitors would lose their place",
        );
    }
    if refresh > claim_window {
        p.push(
            "room.claim_window",
            "must be at least room.refresh, or admitted visitors miss their turn",
        );
    }
    let opens_at = raw.opens_at.as_ref().and_then(|t| match parse_rfc3339_offset(t) {
        Some(at) => Some((t.clone(), at)),
        None => {
            p.push(
                "room.opens_at",
                format!("`{t}` is not an RFC 3339 time with a zone, like \"2026-12-01T09:00:00+09:00\""),
            );
            None
        }
    });
    let protect = raw
        .protect
        .iter()
        .enumerate()
        .filter_map(|(i, x)| prefix(p, format!("room.protect.{i}"), x))
        .collect();
    let bypass_paths = raw
        .bypass_paths
        .iter()
        .enumerate()
        .filter_map(|(i, x)| prefix(p, format!("room.bypass_paths.{i}"), x))
        .collect();
    let bypass_cidrs = raw
        .bypass_cidrs
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            parse_cidr(c)
                .map_err(|e| p.push(format!("room.bypass_cidrs.{i}"), e))
                .ok()
        })
        .collect();
    let bypass_header = match (&raw.bypass_header, &raw.bypass_secret_file) {
        (None, None) => None,
        (Some(h), Some(f)) => {
            let name = http::HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| p.push("room.bypass_header", format!("`{h}` is not a header name")))
                .ok();
            let path = base.join(f);
            let secret = std::fs::read_to_string(&path)
                .map(|s| s.trim().to_string())
                .map_err(|e| {
                    p.push(
                        "room.bypass_secret_file",
                        format!("{}: {e}", path.display()),
                    )
                })
                .ok();
            match secret {
                Some(s) if s.len() < 16 => {
                    p.push(
                        "room.bypass_secret_file",
                        "the secret must be at least 16 characters",
                    );
                    None
                }
                Some(s) => name.map(|n| (n, s)),
                None => None,
            }
        }
        _ => {
            p.push(
                "room.bypass_header",
                "give both bypass_header and bypass_secret_file, or neither",
            );
            None
        }
    };
    if let Some(d) = &raw.cookie_domain {
        if !crate::tokens::cookie::is_valid_domain(d) {
            p.push(
                "room.cookie_domain",
                format!("`{d}` is not a cookie domain"),
            );
        }
    }
    let default_english = match raw.default_lang.as_str() {
        "ko" => false,
        "en" => true,
        other => {
            p.push(
                "room.default_lang",
                format!("`{other}`: use \"ko\" or \"en\""),
            );
            false
        }
    };
    RoomConfig {
        event: raw.event.clone(),
        mode,
        max_active_users: raw.max_active_users.unwrap_or(DEFAULT_MAX_ACTIVE_USERS),
        new_users_per_minute: raw
            .new_users_per_minute
            .unwrap_or(DEFAULT_NEW_USERS_PER_MINUTE),
        closed_loop,
        burst: raw.burst,
        session_duration,
        ticket_grace,
        claim_window,
        tick,
        refresh,
        ticket_max_age,
        opens_at,
        protect,
        bypass_paths,
        bypass_cidrs,
        bypass_header,
        bypass_secret_file: raw.bypass_secret_file.as_ref().map(|f| base.join(f)),
        keys_file: raw.keys_file.as_ref().map(|f| base.join(f)),
        cookie_domain: raw.cookie_domain.clone().filter(|d| !d.is_empty()),
        message: raw.message.clone(),
        messages: super::messages::messages(&raw.message, raw.messages.as_ref(), p),
        feedback_webhook: super::talk::feedback_webhook(raw.feedback_webhook.as_deref(), p),
        template: raw.template.as_ref().map(|f| base.join(f)),
        default_english,
        tickets_per_minute_per_ip: raw.limits.tickets_per_minute_per_ip,
        requests_per_second_per_ip: raw.limits.requests_per_second_per_ip,
        requests_per_second_per_pass: raw.limits.requests_per_second_per_pass,
        ticket_proof_bits: proof_bits(raw.limits.ticket_proof_bits, p),
        adaptive: raw
            .adaptive
            .as_ref()
            .filter(|a| a.enabled)
            .map(|a| adaptive(a, raw, p)),
    }
}

/// `room.limits.ticket_proof_bits`, at most [`MAX_TICKET_PROOF_BITS`].
fn proof_bits(bits: u32, p: &mut Problems) -> u32 {
    if bits > MAX_TICKET_PROOF_BITS {
        p.push(
            "room.limits.ticket_proof_bits",
            format!(
                "{bits} bits is 2^{bits} hashes per ticket, far too slow for a phone; use {MAX_TICKET_PROOF_BITS} at most (16 is about a second)"
            ),
        );
    }
    bits.min(MAX_TICKET_PROOF_BITS)
}

/// `room.gate`: closed-loop unless the file fixes a rate (or turns on the
/// older adaptive rate); both ceilings kept when set.
fn gate(raw: &RawRoom, p: &mut Problems) -> Option<ClosedLoop> {
    let adaptive = raw.adaptive.as_ref().is_some_and(|a| a.enabled);
    let closed = match raw.gate.as_deref() {
        None => raw.new_users_per_minute.is_none() && !adaptive,
        Some("closed-loop") if adaptive => {
            p.push(
                "room.gate",
                "`closed-loop` and room.adaptive are two controllers of one gate: turn one off",
            );
            false
        }
        Some("closed-loop") => true,
        Some("fixed") => false,
        Some(other) => {
            p.push(
                "room.gate",
                format!("`{other}`: use \"closed-loop\" or \"fixed\""),
            );
            false
        }
    };
    if !(raw.origin_target > 0.05 && raw.origin_target <= 1.0) {
        p.push(
            "room.origin_target",
            format!(
                "`{}`: a share of origin.max_in_flight above 0.05 and at most 1 (e.g. 0.85)",
                raw.origin_target
            ),
        );
    }
    closed.then_some(ClosedLoop {
        target: raw.origin_target.clamp(0.05, 1.0),
        max_active: raw.max_active_users,
        per_minute: raw.new_users_per_minute,
    })
}

fn adaptive(a: &RawAdaptive, room: &RawRoom, p: &mut Problems) -> AdaptiveConfig {
    let d = |p: &mut Problems, key: &str, text: &str| {
        super::units::parse_duration(text).unwrap_or_else(|e| {
            p.push(key, e);
            Duration::from_secs(1)
        })
    };
    if a.floor == 0 || a.floor > a.ceiling {
        p.push(
            "room.adaptive.floor",
            "must be at least 1 and at most room.adaptive.ceiling",
        );
    }
    let start = room
        .new_users_per_minute
        .unwrap_or(DEFAULT_NEW_USERS_PER_MINUTE);
    if !(start >= a.floor && start <= a.ceiling) {
        p.push(
            "room.new_users_per_minute",
            "with the adaptive gate, the starting rate must lie between floor and ceiling",
        );
    }
    if !(a.decrease > 0.0 && a.decrease < 1.0) {
        p.push(
            "room.adaptive.decrease",
            "must be between 0 and 1 (e.g. 0.7 cuts by 30%)",
        );
    }
    if !(0.0..=1.0).contains(&a.max_error_rate) {
        p.push(
            "room.adaptive.max_error_rate",
            "must be a share between 0 and 1",
        );
    }
    AdaptiveConfig {
        target_latency: d(p, "room.adaptive.target_latency", &a.target_latency),
        max_error_rate: a.max_error_rate,
        floor: a.floor.max(1),
        ceiling: a.ceiling.max(a.floor.max(1)),
        interval: d(p, "room.adaptive.interval", &a.interval),
        increase: a.increase,
        decrease: a.decrease,
    }
}

/// Parses RFC 3339 with any UTC offset (humantime takes only `Z`).
pub fn parse_rfc3339_offset(t: &str) -> Option<SystemTime> {
    let t = t.trim();
    let (main, offset_secs) = if let Some(m) = t.strip_suffix('Z').or_else(|| t.strip_suffix('z')) {
        (m, 0i64)
    } else {
        let i = t.len().checked_sub(6)?;
        let (m, off) = t.split_at(i);
        let sign = match off.as_bytes().first()? {
            b'+' => 1,
            b'-' => -1,
            _ => return None,
        };
        let h: i64 = off.get(1..3)?.parse().ok()?;
        let mi: i64 = off.get(4..6)?.parse().ok()?;
        if off.as_bytes().get(3) != Some(&b':') {
            return None;
        }
        (m, sign * (h * 3600 + mi * 60))
    };
    let utc = humantime::parse_rfc3339_weak(main).ok()?;
    let secs = offset_secs.unsigned_abs();
    if offset_secs >= 0 {
        utc.checked_sub(Duration::from_secs(secs))
    } else {
        utc.checked_add(Duration::from_secs(secs))
    }
}

#[cfg(test)]
#[path = "room_tests.rs"]
mod tests;
