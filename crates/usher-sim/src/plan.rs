//! Capacity planning with Little's law: from what the origin can take and
//! how visitors use it, the room's two numbers and the wait a crowd faces.

use std::fmt;

use serde::Serialize;

/// Share of the origin's capacity the plan fills by default: latency grows
/// quickly near full (the theater's is 4x at capacity), and a margin
/// absorbs bursts of page loads.
pub const DEFAULT_UTILIZATION: f64 = 0.7;
/// Requests a visitor makes in one session by default (pages and their
/// API calls; static assets that bypass the room do not count).
pub const DEFAULT_REQUESTS_PER_SESSION: f64 = 10.0;

/// What the planner is told.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanInput {
    /// Requests the origin serves at once.
    pub origin_capacity: u64,
    /// Its latency per request under load, ms.
    pub origin_latency_ms: f64,
    /// Minutes an admitted visitor stays active.
    pub session_minutes: f64,
    /// Visitors expected.
    pub crowd: u64,
    /// Requests per session reaching the origin.
    pub requests_per_session: f64,
    /// Share of the origin's capacity to fill (0 to 1).
    pub utilization: f64,
}

/// The planner's answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    /// The input.
    pub input: PlanInput,
    /// Requests per second the origin can sustain at the chosen utilization.
    pub origin_requests_per_second: f64,
    /// Requests per second one active visitor makes.
    pub requests_per_visitor_second: f64,
    /// Suggested `room.max_active_users`.
    pub max_active_users: u64,
    /// Suggested `room.new_users_per_minute`.
    pub new_users_per_minute: u64,
    /// Suggested `origin.max_in_flight`.
    pub origin_max_in_flight: u64,
    /// Minutes until the whole crowd is admitted, if it all came at once and stayed.
    pub crowd_minutes: f64,
    /// The average wait in that case (half of it), minutes.
    pub mean_wait_minutes: f64,
    /// What usher's closed-loop gate admits by itself (no rate set): new
    /// visitors per minute with the origin busy at `room.origin_target`.
    pub gate_new_users_per_minute: u64,
    /// Minutes until the whole crowd is in with the gate.
    pub gate_crowd_minutes: f64,
}

/// Why a plan cannot be made.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    /// An input out of range.
    #[error("{0}")]
    Input(&'static str),
}

/// Makes a plan.
pub fn plan(input: PlanInput) -> Result<Plan, PlanError> {
    let i = &input;
    if i.origin_capacity == 0 {
        return Err(PlanError::Input("--origin-capacity must be at least 1"));
    }
    if !(i.origin_latency_ms > 0.0 && i.origin_latency_ms.is_finite()) {
        return Err(PlanError::Input("--origin-latency-ms must be above 0"));
    }
    if !(i.session_minutes > 0.0 && i.session_minutes.is_finite()) {
        return Err(PlanError::Input("--session-minutes must be above 0"));
    }
    if !(i.requests_per_session > 0.0 && i.requests_per_session.is_finite()) {
        return Err(PlanError::Input("--requests-per-session must be above 0"));
    }
    if !(i.utilization > 0.0 && i.utilization <= 1.0) {
        return Err(PlanError::Input("--utilization must be in (0, 1]"));
    }
    // Little's law at the origin: in flight = throughput x latency.
    let in_flight = (i.origin_capacity as f64 * i.utilization).max(1.0);
    let throughput = in_flight / (i.origin_latency_ms / 1000.0);
    let per_visitor = i.requests_per_session / (i.session_minutes * 60.0);
    // Rounded down, with a hair of tolerance for binary fractions (13439.999...).
    let down = |x: f64| (x + 1e-6).floor().max(1.0);
    let active = down(throughput * i.session_minutes * 60.0 / i.requests_per_session);
    // Little's law in the room: active = admission rate x session length.
    let rate = down(active / i.session_minutes);
    let crowd_minutes = i.crowd as f64 / rate;
    // The closed-loop gate fills its own target, whatever the utilization
    // asked for the fixed numbers: rate = throughput at target / requests.
    let gate_throughput = i.origin_capacity as f64 * usher::config::file::DEFAULT_ORIGIN_TARGET
        / (i.origin_latency_ms / 1000.0);
    let gate_rate = down(gate_throughput * 60.0 / i.requests_per_session);
    Ok(Plan {
        gate_new_users_per_minute: gate_rate as u64,
        gate_crowd_minutes: i.crowd as f64 / gate_rate,
        origin_requests_per_second: throughput,
        requests_per_visitor_second: per_visitor,
        max_active_users: active as u64,
        new_users_per_minute: rate as u64,
        origin_max_in_flight: i.origin_capacity,
        crowd_minutes,
        mean_wait_minutes: crowd_minutes / 2.0,
        input,
    })
}

fn minutes(m: f64) -> String {
    if m < 1.0 {
        format!("{:.0} s", m * 60.0)
    } else if m < 120.0 {
        format!("{m:.1} min")
    } else {
        format!("{:.0} h {:.0} min", (m / 60.0).floor(), m % 60.0)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = &self.input;
        writeln!(
            f,
            "With usher's closed-loop gate (the default: set no rate)"
        )?;
        writeln!(f, "  [origin]")?;
        writeln!(f, "  max_in_flight        = {}", self.origin_max_in_flight)?;
        writeln!(
            f,
            "  usher keeps about {:.0} of these busy while people wait: at {} ms that is",
            self.origin_max_in_flight as f64 * usher::config::file::DEFAULT_ORIGIN_TARGET,
            i.origin_latency_ms
        )?;
        writeln!(
            f,
            "  about {}/min new visitors at {} requests each; a crowd of {} is in after {}.",
            self.gate_new_users_per_minute,
            i.requests_per_session,
            i.crowd,
            minutes(self.gate_crowd_minutes)
        )?;
        writeln!(
            f,
            "  It measures instead of assuming: a slower origin or busier visitors are followed."
        )?;
        writeln!(f)?;
        writeln!(f, "Fixed numbers, if you must set them (gate = \"fixed\")")?;
        writeln!(f, "  [room]")?;
        writeln!(f, "  max_active_users     = {}", self.max_active_users)?;
        writeln!(f, "  new_users_per_minute = {}", self.new_users_per_minute)?;
        writeln!(f, "  session_duration     = \"{}m\"", i.session_minutes)?;
        writeln!(f, "  [origin]")?;
        writeln!(f, "  max_in_flight        = {}", self.origin_max_in_flight)?;
        writeln!(f)?;
        writeln!(f, "Expected wait for a crowd of {}", i.crowd)?;
        writeln!(
            f,
            "  everyone in after    {} (if all arrive at once and all wait)",
            minutes(self.crowd_minutes)
        )?;
        writeln!(
            f,
            "  average wait         {}",
            minutes(self.mean_wait_minutes)
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "How (Little's law: items in a system = arrival rate x time inside)"
        )?;
        writeln!(
            f,
            "  1. Origin: in flight = throughput x latency. Filling {:.0}% of {} slots at {} ms:",
            i.utilization * 100.0,
            i.origin_capacity,
            i.origin_latency_ms
        )?;
        writeln!(
            f,
            "     throughput = {:.1} / {:.3} s = {:.0} requests/s",
            i.origin_capacity as f64 * i.utilization,
            i.origin_latency_ms / 1000.0,
            self.origin_requests_per_second
        )?;
        writeln!(
            f,
            "  2. One visitor makes {} requests in {} min = {:.4} requests/s",
            i.requests_per_session, i.session_minutes, self.requests_per_visitor_second
        )?;
        writeln!(
            f,
            "  3. Active users = {:.0} / {:.4} = {}",
            self.origin_requests_per_second,
            self.requests_per_visitor_second,
            self.max_active_users
        )?;
        writeln!(
            f,
            "  4. Room: active = admission rate x session, so rate = {} / {} min = {}/min",
            self.max_active_users, i.session_minutes, self.new_users_per_minute
        )?;
        writeln!(
            f,
            "  5. Line: {} visitors / {}/min = {}; on average half that.",
            i.crowd,
            self.new_users_per_minute,
            minutes(self.crowd_minutes)
        )?;
        writeln!(
            f,
            "Latency is the origin's under load, not idle; check the plan with `usher-sim run`."
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input() -> PlanInput {
        PlanInput {
            origin_capacity: 64,
            origin_latency_ms: 100.0,
            session_minutes: 5.0,
            crowd: 100_000,
            requests_per_session: 10.0,
            utilization: 0.7,
        }
    }

    #[test]
    fn littles_law_both_ways() {
        let p = plan(input()).unwrap();
        // 64 x 0.7 = 44.8 in flight / 0.1 s = 448 requests/s.
        assert!((p.origin_requests_per_second - 448.0).abs() < 1e-9);
        // 10 requests over 300 s: 1/30 request/s per visitor; 448 x 30 = 13,440.
        assert_eq!(p.max_active_users, 13_440);
        assert_eq!(p.new_users_per_minute, 2_688);
        assert!((p.crowd_minutes - 100_000.0 / 2_688.0).abs() < 1e-9);
        assert!((p.mean_wait_minutes * 2.0 - p.crowd_minutes).abs() < 1e-9);
        let text = p.to_string();
        assert!(text.contains("max_active_users     = 13440"), "{text}");
        assert!(text.contains("Little's law"), "{text}");
    }

    #[test]
    fn slower_origin_admits_fewer() {
        let fast = plan(input()).unwrap();
        let slow = plan(PlanInput {
            origin_latency_ms: 400.0,
            ..input()
        })
        .unwrap();
        assert_eq!(slow.max_active_users, fast.max_active_users / 4);
        assert!(slow.crowd_minutes > fast.crowd_minutes * 3.9);
    }

    #[test]
    fn bad_inputs_are_refused() {
        let zero = PlanInput {
            origin_capacity: 0,
            ..input()
        };
        assert!(plan(zero).is_err());
        let nan = PlanInput {
            origin_latency_ms: f64::NAN,
            ..input()
        };
        assert!(plan(nan).is_err());
        let over = PlanInput {
            utilization: 1.5,
            ..input()
        };
        assert!(plan(over).is_err());
        let tiny = plan(PlanInput {
            origin_capacity: 1,
            origin_latency_ms: 60_000.0,
            session_minutes: 60.0,
            requests_per_session: 1000.0,
            ..input()
        })
        .unwrap();
        assert_eq!((tiny.max_active_users, tiny.new_users_per_minute), (1, 1));
    }
}
