//! The closed-loop gate against a fluid model of a site: visitors inside
//! send requests at a steady pace, the origin serves `capacity` at once at
//! a fixed latency, the rest queue in usher (and are refused past a bound).

use super::*;

/// A site and its crowd, stepped every 250 ms.
struct Site {
    capacity: f64,
    /// Seconds per request at the origin.
    latency: f64,
    /// Requests per second per visitor inside.
    pace: f64,
    /// Seconds a visitor stays.
    stay: f64,
    /// Visitors inside.
    inside: f64,
    /// Visitors granted last tick, arriving this one.
    arriving: f64,
    waiting: f64,
    load: Load,
    /// Longest wait for an origin slot in usher's queue seen, seconds
    /// (the queue drained at the origin's full pace).
    worst: f64,
    now_ms: u64,
    /// Whether the origin slows as it fills, like the demo theater:
    /// service time `latency * (1 + 3 * (in_flight / capacity)^2)`.
    curve: bool,
}

const DT: f64 = 0.25;

impl Site {
    fn new(capacity: u64, latency: f64, pace: f64, stay: f64, waiting: f64) -> Site {
        Site {
            capacity: capacity as f64,
            latency,
            pace,
            stay,
            inside: 0.0,
            arriving: 0.0,
            waiting,
            load: Load {
                capacity,
                ..Load::default()
            },
            worst: 0.0,
            now_ms: 0,
            curve: false,
        }
    }

    /// One tick: the crowd's load on the origin, then the gate's step and
    /// its grants.
    fn tick(&mut self, flow: &mut Flow, target: f64) {
        self.now_ms += (DT * 1000.0) as u64;
        self.inside += self.arriving;
        self.inside -= self.inside * DT / self.stay;
        let offered = self.in_flight();
        let wait = (offered - self.capacity).max(0.0) * self.latency / self.capacity;
        self.worst = self.worst.max(wait);
        let served = offered.min(self.capacity);
        let l = &mut self.load;
        l.at_us += (DT * 1e6) as u64;
        l.busy_us += (served * DT * 1e6) as u64;
        l.in_flight = served.round() as u64;
        l.queued = (offered - self.capacity).max(0.0).ceil() as u64;
        // usher refuses what waited its queue timeout (2 s).
        if wait > 2.0 {
            l.refused += 1;
        }
        let requests = (self.inside * self.pace * DT).round() as u64;
        let answers = Answers {
            requests,
            errors: 0,
            mean_latency_us: (self.latency * 1e6) as u64,
        };
        let used = (self.inside + self.arriving).round() as u64;
        flow.step(
            self.now_ms,
            target,
            self.load,
            answers,
            used,
            self.waiting > 0.0,
        );
        let free = (flow.limit() as f64 - self.inside).max(0.0);
        self.arriving = free.min(self.waiting);
        self.waiting -= self.arriving;
    }

    /// Requests in flight (or queued in usher past capacity): each visitor
    /// inside thinks `1 / pace` seconds, then waits for one answer, so
    /// `n = inside * S(n) / (think + S(n))` (a closed system, as browsers
    /// are), solved by bisection.
    fn in_flight(&self) -> f64 {
        let think = 1.0 / self.pace;
        let service = |n: f64| {
            let fill = (n.min(self.capacity) / self.capacity).powi(2);
            let slow = if self.curve { 1.0 + 3.0 * fill } else { 1.0 };
            // Past capacity the extra requests wait their turn in usher.
            self.latency * slow * (n / self.capacity).max(1.0)
        };
        let (mut lo, mut hi) = (0.0, self.inside.max(0.0));
        for _ in 0..60 {
            let mid = (lo + hi) / 2.0;
            let s = service(mid);
            if self.inside * s / (think + s) > mid {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        lo
    }

    fn busy(&self, flow: &Flow) -> f64 {
        flow.busy().unwrap_or(0.0)
    }
}

#[test]
fn starts_at_the_origin_slot_count() {
    assert_eq!(Flow::new(48).limit(), 48);
    assert_eq!(Flow::new(0).limit(), 1);
}

#[test]
fn fills_the_origin_near_target_without_overshoot() {
    // The opening spike's site: 48 slots at 120 ms, visitors loading a page
    // every 20 s and staying 3 minutes; a crowd far larger than fits.
    let mut site = Site::new(48, 0.12, 0.05, 180.0, 1e9);
    let mut flow = Flow::new(48);
    let mut busy = Vec::new();
    for i in 0..(240 * 4) {
        site.tick(&mut flow, 0.85);
        if i >= 120 * 4 {
            busy.push(site.busy(&flow));
        }
    }
    let mean = busy.iter().sum::<f64>() / busy.len() as f64;
    assert!(
        (0.75..=0.9).contains(&mean),
        "busy share {mean:.3} should settle near 0.85"
    );
    // A brief queue as the crowd's visits settle, well inside usher's
    // queue timeout (2 s by default): nobody refused.
    assert!(
        site.worst < 1.0,
        "requests waited up to {:.2} s for an origin slot",
        site.worst
    );
    assert_eq!(site.load.refused, 0, "nothing refused in usher's queue");
}

#[test]
fn holds_steady_on_an_origin_that_slows_as_it_fills() {
    // The demo theater: past 58% of its slots its throughput falls as it
    // fills, so an overshoot would feed itself. The gate must stay out of
    // saturation.
    let mut site = Site::new(48, 0.02, 0.3, 10.0, 1e9);
    site.curve = true;
    let mut flow = Flow::new(48);
    let mut busy = Vec::new();
    for i in 0..(120 * 4) {
        site.tick(&mut flow, 0.85);
        if i >= 60 * 4 {
            busy.push(site.busy(&flow));
        }
    }
    let mean = busy.iter().sum::<f64>() / busy.len() as f64;
    assert!((0.6..=0.95).contains(&mean), "busy share {mean:.3}");
    assert!(site.worst < 1.0, "waited up to {:.2} s", site.worst);
    assert_eq!(site.load.refused, 0);
}

#[test]
fn reaches_the_target_within_seconds_from_cold() {
    let mut site = Site::new(48, 0.02, 0.3, 10.0, 1e9);
    let mut flow = Flow::new(48);
    let mut reached = None;
    for i in 0..(60 * 4) {
        site.tick(&mut flow, 0.85);
        if reached.is_none() && site.busy(&flow) > 0.7 {
            reached = Some(i as f64 * DT);
        }
    }
    let at = reached.expect("the origin gets busy");
    assert!(at < 15.0, "70% busy only after {at} s");
    assert!(site.worst < 0.5, "waited up to {:.2} s", site.worst);
    assert_eq!(site.load.refused, 0);
}

#[test]
fn backs_off_within_seconds_when_the_origin_slows_five_times() {
    let mut site = Site::new(48, 0.12, 0.05, 180.0, 1e9);
    let mut flow = Flow::new(48);
    for _ in 0..(120 * 4) {
        site.tick(&mut flow, 0.85);
    }
    let before = flow.limit();
    site.latency *= 5.0;
    let mut cut_at = None;
    for i in 0..(10 * 4) {
        site.tick(&mut flow, 0.85);
        if cut_at.is_none() && flow.last_move.is_some_and(Move::is_cut) {
            cut_at = Some(i as f64 * DT);
        }
    }
    let at = cut_at.expect("the gate backs off");
    assert!(at <= 1.0, "backed off only after {at} s");
    assert!(
        (flow.limit() as f64) < 0.5 * before as f64,
        "limit {} not cut well below {before}",
        flow.limit()
    );
    // Admissions stop until enough visitors leave: the limit is under who
    // is inside.
    assert!((flow.limit() as f64) < site.inside);
}

#[test]
fn does_not_wind_up_while_nobody_waits() {
    let mut site = Site::new(48, 0.02, 0.3, 10.0, 20.0);
    let mut flow = Flow::new(48);
    for _ in 0..(300 * 4) {
        site.tick(&mut flow, 0.85);
    }
    assert!(
        flow.limit() as f64 <= site.inside * 1.5 + 48.0 + 1.0,
        "limit {} ran ahead of {} inside",
        flow.limit(),
        site.inside
    );
}

#[test]
fn errors_and_refusals_cut_once_a_second_at_most() {
    let mut flow = Flow::new(100);
    let mut load = Load {
        capacity: 10,
        ..Load::default()
    };
    let ok = Answers {
        requests: 100,
        errors: 0,
        mean_latency_us: 10_000,
    };
    let failing = Answers { errors: 10, ..ok };
    let mut now = 0;
    let mut step = |flow: &mut Flow, load: &mut Load, a: Answers| {
        now += 250;
        load.at_us += 250_000;
        load.busy_us += 250_000 * 5;
        flow.step(now, 0.85, *load, a, 100, true)
    };
    step(&mut flow, &mut load, ok);
    assert_eq!(step(&mut flow, &mut load, failing), Some(Move::Errors));
    assert_eq!(flow.limit(), 70);
    assert_eq!(
        step(&mut flow, &mut load, failing),
        None,
        "one cut a second"
    );
    for _ in 0..3 {
        step(&mut flow, &mut load, failing);
    }
    assert_eq!(flow.limit(), 49, "a second later, cut again");
    for _ in 0..4 {
        step(&mut flow, &mut load, ok);
    }
    assert_eq!(flow.limit(), 49, "no growth while calm");
    load.refused += 1;
    assert_eq!(step(&mut flow, &mut load, ok), Some(Move::Refused));
    assert_eq!(flow.limit(), 34);
    // Calm: no growth for two seconds after the last cut.
    let calm = flow.limit();
    for _ in 0..7 {
        step(&mut flow, &mut load, ok);
    }
    assert_eq!(flow.limit(), calm);
    step(&mut flow, &mut load, ok);
    step(&mut flow, &mut load, ok);
    assert!(flow.limit() > calm, "grows again once calm");
}
