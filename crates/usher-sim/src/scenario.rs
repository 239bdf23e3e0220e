//! Scenario files: the crowd, the origin and usher's settings for one
//! simulated morning, read from TOML and checked all at once.
//!
//! Every duration in a scenario is in *simulated* seconds. A run compresses
//! time by `time_scale`: one real second stands for `time_scale` simulated
//! ones, so usher's rates are multiplied and its durations divided by it,
//! and the origin's latency is divided too (throughput and load then keep
//! the same ratio, and concurrency is unchanged: Little's law).

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::addresses::Addresses;

/// The most visitors a scenario may have: keeps the per-visitor records
/// (a few dozen bytes each) and the run's memory bounded.
pub const MAX_VISITORS: u64 = 1_000_000;
/// The most simulated seconds per real second.
pub const MAX_TIME_SCALE: f64 = 100.0;
/// The most pages a visitor browses; the browse loop is bounded by it.
pub const MAX_PAGES: u32 = 100;
/// The most times a visitor comes back after giving up.
pub const MAX_RETURNS: u32 = 5;
/// The most usher nodes a run starts: each is a process on the same few
/// cores, so more would measure the machine rather than the room.
pub const MAX_NODES: usize = 8;
/// The most client connections the simulator keeps open: well below the
/// machine's open-file limit (20,000), which usher and the origin share.
pub const MAX_CONNECTIONS: usize = 4_000;

/// Why a scenario could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: {reason}")]
    Read {
        /// The file.
        file: String,
        /// Why.
        reason: String,
    },
    /// The TOML is malformed or has unknown keys.
    #[error("{file}: {reason}")]
    Parse {
        /// The file.
        file: String,
        /// The parser's message (with line and column).
        reason: String,
    },
    /// Values out of range, each with its key.
    #[error("{file}: {}", problems.join("; "))]
    Invalid {
        /// The file.
        file: String,
        /// `key: what is wrong` for every mistake.
        problems: Vec<String>,
    },
}

/// One scenario.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short title for the report.
    pub name: String,
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// Seed of every random choice, so a rerun meets the same crowd.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Visitors in the crowd.
    pub visitors: u64,
    /// Simulated seconds per real second.
    #[serde(default = "one")]
    pub time_scale: f64,
    /// Hard stop, in simulated seconds after the opening.
    pub time_limit_seconds: f64,
    /// When visitors arrive.
    pub arrivals: Arrivals,
    /// How long a waiting visitor stays before giving up.
    pub patience: Patience,
    /// Whether a visitor who gave up comes back.
    #[serde(default, rename = "return")]
    pub comeback: Comeback,
    /// What an admitted visitor does on the site.
    #[serde(default)]
    pub browse: Browse,
    /// The voucher step right after admission.
    #[serde(default)]
    pub voucher: Voucher,
    /// The demo origin.
    pub origin: Origin,
    /// usher's `[room]` and `[origin]` settings, in simulated time.
    pub usher: UsherSettings,
    /// The simulated browsers' HTTP client.
    #[serde(default)]
    pub client: ClientSettings,
    /// Source addresses: carriers shared by many visitors and visitors'
    /// own (protected runs). Without it everyone is 127.0.0.1 and usher's
    /// per-address limits are off.
    #[serde(default)]
    pub addresses: Option<Addresses>,
}

fn default_seed() -> u64 {
    2024
}
fn one() -> f64 {
    1.0
}

/// The arrival curve: a share of the crowd in the opening spike (uniform),
/// the rest in a tail whose rate falls linearly to zero.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arrivals {
    /// Share of visitors arriving in the spike (0 to 1).
    pub spike_share: f64,
    /// Length of the spike.
    pub spike_seconds: f64,
    /// Length of the tail after the spike.
    pub tail_seconds: f64,
}

/// Patience: how long a visitor keeps waiting (in line, or reloading an
/// error page) before giving up.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "distribution", rename_all = "lowercase", deny_unknown_fields)]
pub enum Patience {
    /// Log-normal: most give up around the median, a few wait very long.
    Lognormal {
        /// Median patience.
        median_seconds: f64,
        /// Spread of the underlying normal (0.5 narrow, 1.5 wide).
        sigma: f64,
    },
    /// Exponential: memoryless giving up.
    Exponential {
        /// Mean patience.
        mean_seconds: f64,
    },
}

/// Coming back after giving up, with the cookies kept.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Comeback {
    /// Chance that a visitor who gave up comes back (each time).
    pub probability: f64,
    /// Mean time away (exponential).
    pub after_seconds: f64,
    /// Returns at most.
    pub max_returns: u32,
}

/// Browsing after admission.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Browse {
    /// Pages after the first one.
    pub pages: u32,
    /// Mean think time between pages (exponential).
    pub think_seconds: f64,
    /// Paths visited in turn.
    pub paths: Vec<String>,
    /// Share of visitors who finish with `POST /checkout` (the origin then
    /// tells usher to free their slot at once).
    pub checkout_share: f64,
}

impl Default for Browse {
    fn default() -> Self {
        Browse {
            pages: 3,
            think_seconds: 15.0,
            paths: vec!["/movies/1".into(), "/movies/2".into(), "/api/movies".into()],
            checkout_share: 0.5,
        }
    }
}

/// The voucher claim: the theater's own form now (`POST /voucher/claim`,
/// HTML answer), usher's `POST /__usher/voucher` (JSON) later.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Voucher {
    /// Whether admitted visitors claim one.
    pub enabled: bool,
    /// `POST` or `GET`.
    pub method: String,
    /// Where.
    pub path: String,
    /// Request body (for POST).
    pub body: String,
    /// Its content type.
    pub content_type: String,
    /// Attempts when the claim fails with an error.
    pub attempts: u32,
}

impl Default for Voucher {
    fn default() -> Self {
        Voucher {
            enabled: true,
            method: "POST".into(),
            path: "/voucher/claim".into(),
            body: "want=1".into(),
            content_type: "application/x-www-form-urlencoded".into(),
            attempts: 3,
        }
    }
}

/// The demo origin's settings.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// Requests it serves at once.
    pub capacity: u64,
    /// Base service time in simulated milliseconds.
    pub latency_ms: f64,
    /// `error` (503 past capacity) or `slow` (ever slower).
    #[serde(default = "overload_error")]
    pub overload: String,
    /// Its voucher stock.
    pub vouchers: u64,
}

fn overload_error() -> String {
    "error".into()
}

/// usher's settings as an operator would write them (simulated time).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsherSettings {
    /// `room.max_active_users` (unset: the closed-loop gate's limit alone).
    #[serde(default)]
    pub max_active_users: Option<u64>,
    /// `room.new_users_per_minute` (unset: usher's closed-loop gate).
    #[serde(default)]
    pub new_users_per_minute: Option<f64>,
    /// `room.burst`.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// `room.session_duration`.
    pub session_seconds: f64,
    /// `room.refresh` (the real value is rounded to whole seconds, at least 1).
    pub refresh_seconds: f64,
    /// `room.ticket_grace`.
    pub ticket_grace_seconds: f64,
    /// `room.claim_window`.
    pub claim_window_seconds: f64,
    /// `origin.max_in_flight` across all nodes (default: the origin's
    /// capacity); each node gets an equal share, at least one.
    #[serde(default)]
    pub origin_max_in_flight: Option<usize>,
    /// usher processes sharing one line through a Redis of the run's own
    /// (1: one process with the embedded store, no Redis).
    #[serde(default = "one_node")]
    pub nodes: usize,
}

fn one_node() -> usize {
    1
}

fn default_burst() -> u32 {
    20
}

/// The simulated browsers' shared client.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientSettings {
    /// Connections open at most (requests beyond wait for one).
    pub connections: usize,
    /// A request with no answer after this is a timeout (a browser's patience).
    pub timeout_seconds: f64,
    /// Mean time before reloading an error page.
    pub retry_seconds: f64,
}

impl Default for ClientSettings {
    fn default() -> Self {
        ClientSettings {
            connections: 1_000,
            timeout_seconds: 30.0,
            retry_seconds: 10.0,
        }
    }
}

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError::Read {
            file: file.clone(),
            reason: e.to_string(),
        })?;
        Scenario::parse(&text, &file)
    }

    /// Parses and checks scenario text; `file` names it in messages.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let s: Scenario = toml::from_str(text).map_err(|e| ScenarioError::Parse {
            file: file.to_string(),
            reason: e.to_string(),
        })?;
        let problems = s.problems();
        if problems.is_empty() {
            Ok(s)
        } else {
            Err(ScenarioError::Invalid {
                file: file.to_string(),
                problems,
            })
        }
    }

    /// Every mistake, as `key: message`.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        let mut range = |key: &str, v: f64, lo: f64, hi: f64| {
            if !(lo..=hi).contains(&v) {
                p.push(format!("{key}: {v} is outside {lo} to {hi}"));
            }
        };
        let day = 7.0 * 86_400.0;
        range("visitors", self.visitors as f64, 1.0, MAX_VISITORS as f64);
        range("time_scale", self.time_scale, 1.0, MAX_TIME_SCALE);
        range("time_limit_seconds", self.time_limit_seconds, 1.0, day);
        range("arrivals.spike_share", self.arrivals.spike_share, 0.0, 1.0);
        range(
            "arrivals.spike_seconds",
            self.arrivals.spike_seconds,
            0.0,
            day,
        );
        range(
            "arrivals.tail_seconds",
            self.arrivals.tail_seconds,
            0.0,
            day,
        );
        match self.patience {
            Patience::Lognormal {
                median_seconds,
                sigma,
            } => {
                range("patience.median_seconds", median_seconds, 0.001, day);
                range("patience.sigma", sigma, 0.0, 5.0);
            }
            Patience::Exponential { mean_seconds } => {
                range("patience.mean_seconds", mean_seconds, 0.001, day)
            }
        }
        range("return.probability", self.comeback.probability, 0.0, 1.0);
        range(
            "return.after_seconds",
            self.comeback.after_seconds,
            0.0,
            day,
        );
        range(
            "return.max_returns",
            self.comeback.max_returns.into(),
            0.0,
            MAX_RETURNS.into(),
        );
        range(
            "browse.pages",
            self.browse.pages.into(),
            0.0,
            MAX_PAGES.into(),
        );
        range("browse.think_seconds", self.browse.think_seconds, 0.0, day);
        range(
            "browse.checkout_share",
            self.browse.checkout_share,
            0.0,
            1.0,
        );
        range("voucher.attempts", self.voucher.attempts.into(), 1.0, 10.0);
        range(
            "origin.capacity",
            self.origin.capacity as f64,
            1.0,
            100_000.0,
        );
        range("origin.latency_ms", self.origin.latency_ms, 0.0, 600_000.0);
        if let Some(n) = self.usher.max_active_users {
            range("usher.max_active_users", n as f64, 1.0, 1e9);
        }
        if let Some(r) = self.usher.new_users_per_minute {
            range("usher.new_users_per_minute", r, 0.001, 1e8);
        }
        range("usher.burst", self.usher.burst.into(), 1.0, 1e6);
        range(
            "usher.nodes",
            self.usher.nodes as f64,
            1.0,
            MAX_NODES as f64,
        );
        range(
            "client.connections",
            self.client.connections as f64,
            1.0,
            MAX_CONNECTIONS as f64,
        );
        range(
            "client.timeout_seconds",
            self.client.timeout_seconds,
            0.001,
            day,
        );
        range("client.retry_seconds", self.client.retry_seconds, 0.0, day);
        if self.usher.nodes > self.origin_max_in_flight() {
            p.push(format!(
                "usher.nodes: {} nodes with one origin request each exceed origin_max_in_flight = {}",
                self.usher.nodes,
                self.origin_max_in_flight()
            ));
        }
        if self.browse.pages > 0 && self.browse.paths.is_empty() {
            p.push("browse.paths: give at least one path to browse".into());
        }
        for (i, path) in self.browse.paths.iter().enumerate() {
            if !path.starts_with('/') || path.len() > 256 {
                p.push(format!(
                    "browse.paths.{i}: `{path}` must start with / (256 bytes at most)"
                ));
            }
        }
        if !self.voucher.path.starts_with('/') || self.voucher.path.len() > 256 {
            p.push("voucher.path: must start with / (256 bytes at most)".into());
        }
        if !matches!(self.voucher.method.as_str(), "GET" | "POST") {
            p.push(format!(
                "voucher.method: `{}`: use GET or POST",
                self.voucher.method
            ));
        }
        if self.voucher.body.len() > 4096 {
            p.push("voucher.body: 4096 bytes at most".into());
        }
        if http::HeaderValue::from_str(&self.voucher.content_type).is_err() {
            p.push("voucher.content_type: not a header value".into());
        }
        if !matches!(self.origin.overload.as_str(), "error" | "slow") {
            p.push(format!(
                "origin.overload: `{}`: use error or slow",
                self.origin.overload
            ));
        }
        // usher's own minimums hold in real time: say which simulated value meets them.
        let scale = self.time_scale.max(1.0);
        let mut real_min = |key: &str, sim: f64, min_real: f64| {
            if sim / scale < min_real {
                p.push(format!(
                    "{key}: {sim} s simulated is {:.2} s real at time_scale {scale}; usher needs at least {min_real} s (use {} or more)",
                    sim / scale,
                    min_real * scale
                ));
            }
        };
        real_min("usher.session_seconds", self.usher.session_seconds, 10.0);
        real_min("usher.refresh_seconds", self.usher.refresh_seconds, 1.0);
        real_min(
            "usher.ticket_grace_seconds",
            self.usher.ticket_grace_seconds,
            10.0,
        );
        real_min(
            "usher.claim_window_seconds",
            self.usher.claim_window_seconds,
            5.0,
        );
        let refresh = self.refresh_real().as_secs_f64();
        if refresh * 2.0 > self.usher.ticket_grace_seconds / scale {
            p.push("usher.ticket_grace_seconds: must be at least twice the refresh".into());
        }
        if refresh > self.usher.claim_window_seconds / scale {
            p.push("usher.claim_window_seconds: must be at least the refresh".into());
        }
        if let Some(problem) = self.long_poll_problem() {
            p.push(problem);
        }
        if let Some(a) = &self.addresses {
            p.extend(a.problems(self.client.connections));
        }
        p
    }

    /// The client's timeout must outlast usher's longest long poll (one
    /// refresh) with a real second to spare for the answer; otherwise
    /// the visitors near the head of the line would time out.
    fn long_poll_problem(&self) -> Option<String> {
        let poll = self.refresh_real().as_secs_f64() * self.time_scale;
        let need = poll + self.time_scale;
        (self.client.timeout_seconds < need).then(|| {
            format!(
                "client.timeout_seconds: {} s is shorter than usher's longest long poll ({poll} s simulated, one refresh) plus one real second; use {need} or more",
                self.client.timeout_seconds
            )
        })
    }

    /// A simulated duration in real time.
    pub fn real(&self, sim_seconds: f64) -> Duration {
        Duration::from_secs_f64((sim_seconds / self.time_scale).clamp(0.0, 1e9))
    }

    /// A real duration in simulated seconds.
    pub fn sim(&self, real: Duration) -> f64 {
        real.as_secs_f64() * self.time_scale
    }

    /// usher's real poll interval: whole seconds, at least one.
    pub fn refresh_real(&self) -> Duration {
        let secs = (self.usher.refresh_seconds / self.time_scale)
            .round()
            .max(1.0);
        Duration::from_secs(secs as u64)
    }

    /// The origin's real base latency in whole milliseconds (what the theater takes).
    pub fn origin_latency_real_ms(&self) -> u64 {
        (self.origin.latency_ms / self.time_scale).round().max(0.0) as u64
    }

    /// usher's real admission rate per minute (at least one), when the
    /// scenario fixes one (otherwise usher's closed-loop gate decides).
    pub fn rate_real_per_minute(&self) -> Option<u32> {
        self.usher
            .new_users_per_minute
            .map(|r| (r * self.time_scale).round().clamp(1.0, u32::MAX as f64) as u32)
    }

    /// The in-flight cap usher puts on the origin.
    pub fn origin_max_in_flight(&self) -> usize {
        self.usher
            .origin_max_in_flight
            .unwrap_or(self.origin.capacity as usize)
            .max(1)
    }

    /// The in-flight cap of each node: the total split evenly, rounded
    /// down, so the origin never sees more than the total (the check
    /// refuses more nodes than the total).
    pub fn origin_max_in_flight_per_node(&self) -> usize {
        (self.origin_max_in_flight() / self.usher.nodes.max(1)).max(1)
    }

    /// Whether usher runs as several nodes sharing a Redis.
    pub fn multi_node(&self) -> bool {
        self.usher.nodes > 1
    }

    /// Simulated seconds from the opening until the last arrival.
    pub fn arrival_span(&self) -> f64 {
        self.arrivals.spike_seconds + self.arrivals.tail_seconds
    }
}

#[cfg(test)]
mod tests;
/// A small valid scenario for unit tests.
#[cfg(test)]
pub(crate) mod tests_support;
