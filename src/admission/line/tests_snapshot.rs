//! Snapshot round trips: every ticket keeps its place and fate, damage is
//! detected, and numbering resumes above the reserved mark.

use rand::{rngs::StdRng, SeedableRng};

use super::*;

fn cfg(mode: LineMode) -> LineConfig {
    LineConfig {
        grace_ms: 1_000,
        claim_window_ms: 5_000,
        mode,
    }
}

fn places(line: &mut Line, n: u64, now: u64) -> Vec<Place> {
    (1..=n).map(|k| line.observe(k, now)).collect()
}

#[test]
fn a_restored_line_answers_every_ticket_as_before() {
    for mode in [LineMode::Fifo, LineMode::Random] {
        let mut rng = StdRng::seed_from_u64(3);
        let mut line = Line::new(cfg(mode), 0, true);
        for _ in 0..5000 {
            line.issue(10);
        }
        line.open([9; 32]);
        for k in (1..=5000).step_by(3) {
            line.observe(k, 500);
        }
        line.tick(600, 40, &mut rng);
        let first = line_granted(&mut line, 5000);
        assert!(line.take(first, 700));
        let bytes = line.snapshot();
        let mut back = Line::restore(cfg(mode), &bytes).unwrap();
        let counts = |l: &Line| LineStats {
            memory_bytes: 0,
            ..l.stats()
        };
        assert_eq!(counts(&back), counts(&line), "{mode:?}");
        assert_eq!(places(&mut back, 5001, 800), places(&mut line, 5001, 800));
        let (a, b) = (
            back.tick(900, 30, &mut StdRng::seed_from_u64(1)),
            line.tick(900, 30, &mut StdRng::seed_from_u64(1)),
        );
        assert_eq!(a, b);
        assert_eq!(back.issue(950), line.issue(950));
        assert_eq!(back.snapshot(), line.snapshot());
    }
}

fn line_granted(line: &mut Line, n: u64) -> u64 {
    (1..=n)
        .find(|&k| line.observe(k, 650) == Place::Granted)
        .expect("a grant")
}

#[test]
fn damage_is_detected_never_misread() {
    let mut line = Line::new(cfg(LineMode::Fifo), 0, false);
    for _ in 0..300 {
        line.issue(0);
    }
    let bytes = line.snapshot();
    let c = cfg(LineMode::Fifo);
    assert_eq!(
        Line::restore(c, &bytes[..bytes.len() - 1]).err(),
        Some(SnapshotError::Checksum)
    );
    for i in [4, 9, 40, bytes.len() / 2, bytes.len() - 2] {
        let mut bad = bytes.clone();
        bad[i] ^= 0x10;
        assert!(Line::restore(c, &bad).is_err(), "flip at {i}");
    }
    assert_eq!(Line::restore(c, b"nope").err(), Some(SnapshotError::Magic));
    let mut v2 = bytes.clone();
    v2[4] = 2;
    assert_eq!(Line::restore(c, &v2).err(), Some(SnapshotError::Version(2)));
}

#[test]
fn tickets_after_the_snapshot_keep_their_place_if_they_poll_within_grace() {
    let c = cfg(LineMode::Fifo);
    let mut line = Line::new(c, 0, false);
    for _ in 0..10 {
        line.issue(0);
    }
    let bytes = line.snapshot();
    // 11 and 12 were handed out after the snapshot; 13..=20 were reserved.
    let mut back = Line::restore(c, &bytes).unwrap();
    back.resume_above(20, 1_000);
    assert_eq!(back.issue(5), 21, "never a number twice");
    let mut rng = StdRng::seed_from_u64(0);
    assert_eq!(back.tick(10, 100, &mut rng).granted, 10);
    // the frontier waits below the lost tickets until the hold ends
    assert_eq!(back.stats().frontier, 10);
    assert_eq!(back.observe(12, 20), Place::Waiting { position: 0 });
    assert_eq!(back.tick(1_000, 100, &mut rng).granted, 2, "12 and 21");
    assert_eq!(back.observe(12, 1_001), Place::Granted);
    assert_eq!(back.observe(11, 1_001), Place::Forfeited, "never polled");
}

#[test]
fn an_empty_line_above_the_mark_forfeits_old_tickets_and_never_reuses_them() {
    let mut line = Line::empty_above(cfg(LineMode::Fifo), 0, 1_000_000, false);
    assert_eq!(line.observe(5, 0), Place::Forfeited);
    assert_eq!(line.issue(0), 1_000_001);
    assert_eq!(line.observe(1_000_001, 1), Place::Waiting { position: 0 });
    assert!(line.memory_bytes() < 4096, "{}", line.memory_bytes());
    let mut rng = StdRng::seed_from_u64(0);
    assert_eq!(line.tick(2, 5, &mut rng).granted, 1);
}
