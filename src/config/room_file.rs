//! `[room]` as written: the raw serde structs and their defaults, each
//! with its reason. Validated in `room.rs`.

use serde::{Deserialize, Serialize};

/// Active visitors at most. A conservative start for a legacy site; size
/// it from the origin's capacity (docs/OPERATIONS.md).
pub const DEFAULT_MAX_ACTIVE_USERS: u64 = 1_000;
/// New visitors let in per minute: 10 a second, gentle enough for most origins.
pub const DEFAULT_NEW_USERS_PER_MINUTE: u32 = 600;
/// Admissions allowed in one burst above the steady rate.
pub const DEFAULT_BURST: u32 = 20;
/// An admitted visitor's slot frees after this long without a request.
pub const DEFAULT_SESSION_DURATION: &str = "10m";
/// A visitor who leaves the line and returns within this keeps the place.
/// Two minutes covers a phone switching networks or a closed tab reopened.
pub const DEFAULT_TICKET_GRACE: &str = "2m";
/// Time an admitted visitor has to come back and take the pass before the
/// slot goes to the next in line (a few polls' worth).
pub const DEFAULT_CLAIM_WINDOW: &str = "1m";
/// Admission tick: small enough that admissions look continuous, large
/// enough that a tick is not busy work.
pub const DEFAULT_TICK: &str = "250ms";
/// How often waiting pages poll. Position changes slowly; every 5 s keeps
/// the page live while a million visitors cost 200k polls/s at most.
pub const DEFAULT_REFRESH: &str = "5s";
/// Ticket lifetime: a ticket older than this is refused (a new one is issued).
pub const DEFAULT_TICKET_MAX_AGE: &str = "24h";
/// New tickets per client address per minute. Generous because carriers
/// put many phones behind one address (CGNAT); it stops ticket farming.
pub const DEFAULT_TICKETS_PER_MINUTE_PER_IP: u32 = 60;
/// Requests per client address per second (0 turns the limit off).
pub const DEFAULT_REQUESTS_PER_SECOND_PER_IP: u32 = 100;
/// Proof of work asked of a newcomer over the ticket limit, in leading zero
/// bits of SHA-256: 2^16 hashes, about a second for a phone's browser with
/// `crypto.subtle.digest`, and a second of a core for every extra ticket a
/// farm wants (0: no challenge, the newcomer waits for the limit instead).
pub const DEFAULT_TICKET_PROOF_BITS: u32 = 16;
/// Most bits accepted: 2^28 hashes is minutes on a phone already.
pub const MAX_TICKET_PROOF_BITS: u32 = 28;
/// Requests per pass per second, with a burst of five times that: a page
/// and its parts at once, then far more than a human clicks. A pass copied
/// to many clients gets one visitor's rate in all (0 turns the limit off).
pub const DEFAULT_REQUESTS_PER_SECOND_PER_PASS: u32 = 20;

/// Raw `[room]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRoom {
    /// Event name; tickets and passes are bound to it.
    pub event: String,
    /// `fifo`, `random`, `passthrough`, `closed` or `paused`.
    pub mode: String,
    /// Active visitors at most (with the closed-loop gate: a ceiling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_active_users: Option<u64>,
    /// New visitors admitted per minute (set, it fixes the rate unless
    /// `gate = "closed-loop"`, where it is a ceiling).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub new_users_per_minute: Option<u32>,
    /// `closed-loop` or `fixed` (default: closed-loop without a rate).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<String>,
    /// Share of `origin.max_in_flight` the closed-loop gate keeps busy.
    pub origin_target: f64,
    /// Burst above the steady rate.
    pub burst: u32,
    /// Sliding session length of a pass.
    pub session_duration: String,
    /// How long an absent visitor keeps a place.
    pub ticket_grace: String,
    /// Time to take a pass once admitted.
    pub claim_window: String,
    /// Admission tick.
    pub tick: String,
    /// Poll interval given to waiting pages.
    pub refresh: String,
    /// Oldest ticket accepted.
    pub ticket_max_age: String,
    /// Scheduled opening (RFC 3339); before it, a pre-queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub opens_at: Option<String>,
    /// Protected path prefixes (on the normalised, case-folded path).
    pub protect: Vec<String>,
    /// Path prefixes that skip the room (static assets).
    pub bypass_paths: Vec<String>,
    /// Client networks that skip the room (health checkers, offices).
    pub bypass_cidrs: Vec<String>,
    /// Header that skips the room when it carries the shared secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bypass_header: Option<String>,
    /// File holding that secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bypass_secret_file: Option<String>,
    /// Token keys (`KID:BASE64` lines). Without it a random key is used and
    /// tickets do not survive a restart.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys_file: Option<String>,
    /// Cookie `Domain` attribute (default: host-only cookies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cookie_domain: Option<String>,
    /// Operator's message on the holding page (both languages).
    pub message: String,
    /// The message per language (`{ ko = "…", en = "…" }`); a language
    /// given here wins over `message`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<super::messages::RawMessages>,
    /// Where visitors' feedback is also POSTed as JSON (http or https).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feedback_webhook: Option<String>,
    /// Holding page template override.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// `ko` or `en`: the page language when the browser states none we have.
    pub default_lang: String,
    /// Per-client limits.
    pub limits: RawLimits,
    /// The adaptive gate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adaptive: Option<RawAdaptive>,
}

/// Raw `[room.adaptive]`: admissions follow the origin's health.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdaptive {
    /// Turns it on (the section alone does not, so it can be kept ready).
    pub enabled: bool,
    /// Mean origin response time to stay under.
    pub target_latency: String,
    /// Share of origin answers that may fail.
    pub max_error_rate: f64,
    /// Lowest new_users_per_minute.
    pub floor: u32,
    /// Highest new_users_per_minute.
    pub ceiling: u32,
    /// How often the rate is reconsidered.
    pub interval: String,
    /// Added per healthy interval while people wait.
    pub increase: u32,
    /// Factor on an unhealthy interval.
    pub decrease: f64,
}

impl Default for RawAdaptive {
    fn default() -> Self {
        RawAdaptive {
            enabled: false,
            // Legacy pages answering in over half a second feel broken.
            target_latency: "500ms".into(),
            max_error_rate: 0.02,
            floor: 60,
            ceiling: 6000,
            // Several seconds: long enough to see the effect of the last change.
            interval: "5s".into(),
            increase: 60,
            // Cut by 30%: fast enough to relieve, gentle enough not to empty the site.
            decrease: 0.7,
        }
    }
}

/// Raw `[room.limits]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    /// New tickets per client address per minute.
    pub tickets_per_minute_per_ip: u32,
    /// Requests per client address per second (0 = off).
    pub requests_per_second_per_ip: u32,
    /// Requests per pass per second (0 = off).
    pub requests_per_second_per_pass: u32,
    /// Proof-of-work bits for a ticket over the per-address limit (0 = none).
    pub ticket_proof_bits: u32,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            tickets_per_minute_per_ip: DEFAULT_TICKETS_PER_MINUTE_PER_IP,
            requests_per_second_per_ip: DEFAULT_REQUESTS_PER_SECOND_PER_IP,
            requests_per_second_per_pass: DEFAULT_REQUESTS_PER_SECOND_PER_PASS,
            ticket_proof_bits: DEFAULT_TICKET_PROOF_BITS,
        }
    }
}

impl Default for RawRoom {
    fn default() -> Self {
        RawRoom {
            event: "default".into(),
            mode: "fifo".into(),
            max_active_users: None,
            new_users_per_minute: None,
            gate: None,
            origin_target: crate::config::file::DEFAULT_ORIGIN_TARGET,
            burst: DEFAULT_BURST,
            session_duration: DEFAULT_SESSION_DURATION.into(),
            ticket_grace: DEFAULT_TICKET_GRACE.into(),
            claim_window: DEFAULT_CLAIM_WINDOW.into(),
            tick: DEFAULT_TICK.into(),
            refresh: DEFAULT_REFRESH.into(),
            ticket_max_age: DEFAULT_TICKET_MAX_AGE.into(),
            opens_at: None,
            protect: vec!["/".into()],
            bypass_paths: Vec::new(),
            bypass_cidrs: Vec::new(),
            bypass_header: None,
            bypass_secret_file: None,
            keys_file: None,
            cookie_domain: None,
            message: String::new(),
            messages: None,
            feedback_webhook: None,
            template: None,
            default_lang: "ko".into(),
            limits: RawLimits::default(),
            adaptive: None,
        }
    }
}
