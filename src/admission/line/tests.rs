//! Behaviour tests with injected time.

use rand::{rngs::StdRng, SeedableRng};

use super::*;

const GRACE: u64 = 1_000;
const CLAIM: u64 = 5_000;

fn cfg(mode: LineMode) -> LineConfig {
    LineConfig {
        grace_ms: GRACE,
        claim_window_ms: CLAIM,
        mode,
    }
}

fn rng() -> StdRng {
    StdRng::seed_from_u64(7)
}

fn open_line(n: u64) -> Line {
    let mut line = Line::new(cfg(LineMode::Fifo), 0, false);
    for _ in 0..n {
        line.issue(0);
    }
    line
}

#[test]
fn fifo_grants_in_order_and_reports_positions() {
    let mut line = open_line(10);
    assert_eq!(line.observe(1, 10), Place::Waiting { position: 0 });
    assert_eq!(line.observe(10, 10), Place::Waiting { position: 9 });
    let out = line.tick(20, 3, &mut rng());
    assert_eq!(
        out,
        TickOutcome {
            granted: 3,
            skipped: 0
        }
    );
    for n in 1..=3 {
        assert_eq!(line.observe(n, 30), Place::Granted);
    }
    assert_eq!(line.observe(4, 30), Place::Waiting { position: 0 });
    assert_eq!(line.observe(10, 30), Place::Waiting { position: 6 });
    assert_eq!(line.stats().frontier, 3);
    assert_eq!(line.waiting(), 7);
    assert_eq!(line.pending(), 3);
    let out = line.tick(40, 100, &mut rng());
    assert_eq!(out.granted, 7);
    assert_eq!(line.waiting(), 0);
    assert_eq!(line.observe(11, 50), Place::Unknown);
    assert_eq!(line.observe(0, 50), Place::Unknown);
    assert_eq!(line.observe(u64::MAX, 50), Place::Unknown);
}

#[test]
fn tick_grants_at_most_budget() {
    let mut line = open_line(5);
    assert_eq!(line.tick(1, 0, &mut rng()).granted, 0);
    assert_eq!(line.stats().frontier, 0);
    assert_eq!(line.tick(2, 2, &mut rng()).granted, 2);
    assert_eq!(line.tick(3, 10, &mut rng()).granted, 3);
    assert_eq!(line.tick(4, 10, &mut rng()).granted, 0);
    assert_eq!(line.stats().granted_total, 5);
}

#[test]
fn abandoned_places_are_skipped_for_free() {
    let mut line = open_line(10);
    // Even numbers keep polling; odd ones left at 0.
    for t in [600, 1_200, 1_800, 2_400] {
        for n in (2..=10).step_by(2) {
            line.observe(n, t);
        }
    }
    assert_eq!(line.waiting(), 5);
    let out = line.tick(2_400, 3, &mut rng());
    assert_eq!(
        out,
        TickOutcome {
            granted: 3,
            skipped: 3
        }
    );
    assert_eq!(line.observe(2, 2_400), Place::Granted);
    assert_eq!(line.observe(6, 2_400), Place::Granted);
    assert_eq!(line.observe(8, 2_400), Place::Waiting { position: 0 });
    assert_eq!(line.observe(1, 2_400), Place::Forfeited);
    assert_eq!(line.observe(5, 2_400), Place::Forfeited);
    // Ticket 7 was not passed yet: coming back keeps the place.
    assert_eq!(line.observe(7, 2_400), Place::Waiting { position: 0 });
    assert_eq!(line.observe(8, 2_400), Place::Waiting { position: 1 });
    assert_eq!(line.stats().skipped_total, 3);
}

/// A line whose ticket 1 was last seen at `seen`; ticket 2 keeps polling.
fn seen_once_at(seen: u64) -> Line {
    let mut line = Line::new(cfg(LineMode::Fifo), 0, false);
    line.issue(0);
    line.issue(0);
    line.observe(1, seen);
    line
}

#[test]
fn grace_is_honoured_and_then_the_place_is_forfeited() {
    for seen in [0, 1, 499, 500, 999, 1_000, 1_001, 1_999, 7_345] {
        // Polled again just within grace: keeps the place.
        let mut line = seen_once_at(seen);
        assert_eq!(
            line.observe(1, seen + GRACE - 1),
            Place::Waiting { position: 0 },
            "seen at {seen}"
        );
        // Not polled, but the frontier arrives at seen + grace: granted.
        let mut line = seen_once_at(seen);
        line.observe(2, seen + GRACE);
        let out = line.tick(seen + GRACE, 1, &mut rng());
        assert_eq!(
            out,
            TickOutcome {
                granted: 1,
                skipped: 0
            },
            "seen at {seen}"
        );
        assert_eq!(line.observe(1, seen + GRACE), Place::Granted);
        // Gone for grace plus one rotation: skipped, then forfeited.
        let mut line = seen_once_at(seen);
        let late = seen + 2 * GRACE;
        line.observe(2, late);
        let out = line.tick(late, 1, &mut rng());
        assert_eq!(
            out,
            TickOutcome {
                granted: 1,
                skipped: 1
            },
            "seen at {seen}"
        );
        assert_eq!(line.observe(1, late), Place::Forfeited);
        assert_eq!(line.observe(2, late), Place::Granted);
    }
}

#[test]
fn unclaimed_grant_expires_and_returns_the_slot() {
    let mut line = open_line(3);
    line.tick(100, 2, &mut rng());
    assert_eq!(line.pending(), 2);
    assert_eq!(line.observe(1, 100 + CLAIM - 1), Place::Granted);
    assert!(line.take(2, 100 + CLAIM - 1));
    assert_eq!(line.pending(), 1);
    line.tick(100 + CLAIM, 0, &mut rng());
    assert_eq!(line.pending(), 0);
    assert_eq!(line.observe(1, 100 + CLAIM), Place::Forfeited);
    assert!(!line.take(1, 100 + CLAIM));
    assert_eq!(line.observe(2, 100 + CLAIM), Place::Taken);
    let stats = line.stats();
    assert_eq!((stats.expired_total, stats.taken_total), (1, 1));
}

#[test]
fn expiry_applies_without_a_tick() {
    let mut line = open_line(1);
    line.tick(0, 1, &mut rng());
    assert!(!line.take(1, CLAIM));
    assert_eq!(line.pending(), 0);
}

#[test]
fn a_pass_is_taken_once() {
    let mut line = open_line(2);
    assert!(!line.take(1, 0), "not granted yet");
    line.tick(1, 1, &mut rng());
    assert!(line.take(1, 2));
    assert!(!line.take(1, 3));
    assert!(!line.take(2, 3));
    assert!(!line.take(0, 3));
    assert!(!line.take(99, 3));
    assert_eq!(line.pending(), 0);
    assert_eq!(line.observe(1, 4), Place::Taken);
}

#[test]
fn random_mode_draws_only_live_waiting_tickets() {
    let mut line = Line::new(cfg(LineMode::Random), 0, false);
    for _ in 0..200 {
        line.issue(0);
    }
    for t in [1_000, 2_000] {
        for n in (3..=200).step_by(3) {
            line.observe(n, t);
        }
    }
    assert_eq!(line.waiting(), 66);
    assert_eq!(line.observe(3, 2_000), Place::InDraw { waiting: 66 });
    let mut rng = rng();
    let mut granted = 0;
    for _ in 0..10 {
        granted += line.tick(2_000, 5, &mut rng).granted;
    }
    assert_eq!(granted, 50);
    assert_eq!(line.waiting(), 16);
    // Peek at the bits: a poll would revive the absent tickets.
    let winners: Vec<u64> = (1..=200)
        .filter(|&n| line.bits.slot(n) == Some(Slot::Granted))
        .collect();
    assert_eq!(winners.len(), 50);
    assert!(winners.iter().all(|n| n % 3 == 0), "{winners:?}");
    // The frontier stops before the first live waiting ticket.
    let first_waiting = (3..=200)
        .step_by(3)
        .find(|n| !winners.contains(n))
        .unwrap_or(201);
    assert_eq!(line.stats().frontier, first_waiting - 1);
    // Drawing more than are waiting grants only those.
    assert_eq!(line.tick(2_000, 1_000, &mut rng).granted, 16);
}

#[test]
fn mode_switch_keeps_earlier_grants() {
    let mut line = Line::new(cfg(LineMode::Random), 0, false);
    for _ in 0..50 {
        line.issue(0);
    }
    let mut rng = rng();
    line.tick(0, 10, &mut rng);
    line.set_config(cfg(LineMode::Fifo));
    let out = line.tick(10, 5, &mut rng);
    assert_eq!(out.granted, 5);
    assert_eq!(line.pending(), 15);
    line.tick(CLAIM, 0, &mut rng);
    assert_eq!(line.pending(), 5);
    line.tick(CLAIM + 10, 0, &mut rng);
    assert_eq!(line.pending(), 0);
    assert_eq!(line.stats().expired_total, 15);
}

fn prequeue_order(seed: [u8; 32], before: u64, after: u64) -> (Vec<u64>, String) {
    let mut line = Line::new(cfg(LineMode::Fifo), 0, true);
    for _ in 0..before {
        line.issue(0);
    }
    assert_eq!(
        line.tick(0, 100, &mut rng()).granted,
        0,
        "nothing before opening"
    );
    assert_eq!(line.observe(1, 0), Place::InDraw { waiting: before });
    let hash = line.open(seed);
    assert_eq!(line.open([0xff; 32]), hash, "open is idempotent");
    for _ in 0..after {
        line.issue(0);
    }
    let mut order = Vec::new();
    while order.len() < (before + after) as usize {
        assert_eq!(line.tick(0, 1, &mut rng()).granted, 1);
        let granted = (1..=before + after)
            .find(|&n| line.observe(n, 0) == Place::Granted && !order.contains(&n));
        order.push(granted.expect("one new grant per tick"));
    }
    (order, hash)
}

#[test]
fn prequeue_is_shuffled_once_and_deterministically() {
    let (a, hash) = prequeue_order([1; 32], 40, 5);
    assert_eq!(hash, seed_hash(&[1; 32]));
    assert_eq!(hash.len(), 64);
    assert_eq!(
        seed_hash(&[0; 32]),
        "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925"
    );
    let (b, _) = prequeue_order([1; 32], 40, 5);
    let (c, _) = prequeue_order([2; 32], 40, 5);
    assert_eq!(a, b, "same seed, same order");
    assert_ne!(a[..40], c[..40], "another seed, another order");
    assert_ne!(a[..40], (1..=40).collect::<Vec<_>>()[..], "shuffled");
    let mut pre = a[..40].to_vec();
    pre.sort_unstable();
    assert_eq!(pre, (1..=40).collect::<Vec<_>>(), "a permutation");
    assert_eq!(
        a[40..],
        [41, 42, 43, 44, 45],
        "post-opening tickets last, in order"
    );
}

#[test]
fn prequeue_liveness_follows_the_shuffle() {
    let mut line = Line::new(cfg(LineMode::Fifo), 0, true);
    for _ in 0..100 {
        line.issue(0);
    }
    // Only ticket 7 stays; the rest leave before opening.
    line.observe(7, 1_000);
    line.observe(7, 2_000);
    line.open([9; 32]);
    assert_eq!(line.observe(7, 2_000), Place::Waiting { position: 0 });
    assert_eq!(line.waiting(), 1);
    let first = line.tick(2_000, 1, &mut rng());
    assert_eq!(first.granted, 1);
    assert_eq!(line.observe(7, 2_000), Place::Granted);
    let rest = line.tick(2_000, 1, &mut rng());
    assert_eq!(first.skipped + rest.skipped, 99);
    assert_eq!(line.stats().frontier, 100);
}

#[test]
fn open_without_prequeue_only_records_the_hash() {
    let mut line = open_line(3);
    assert_eq!(line.open([5; 32]), seed_hash(&[5; 32]));
    assert_eq!(line.open([6; 32]), seed_hash(&[5; 32]));
    line.tick(0, 3, &mut rng());
    assert_eq!(line.stats().frontier, 3);
    assert_eq!(line.stats().prequeue, 0);
}

#[test]
fn time_going_backwards_is_harmless() {
    let mut line = open_line(2);
    line.observe(1, 10_000);
    assert_eq!(line.observe(2, 5), Place::Waiting { position: 1 });
    assert_eq!(line.tick(3, 2, &mut rng()).granted, 2);
}
