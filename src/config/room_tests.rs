//! Tests of `[room]`'s validation.

use super::*;

#[test]
fn rfc3339_offsets() {
    let z = parse_rfc3339_offset("2026-12-01T00:00:00Z").unwrap();
    let kst = parse_rfc3339_offset("2026-12-01T09:00:00+09:00").unwrap();
    assert_eq!(z, kst);
    let west = parse_rfc3339_offset("2026-11-30T19:00:00-05:00").unwrap();
    assert_eq!(z, west);
    assert!(parse_rfc3339_offset("2026-12-01 09:00").is_none());
    assert!(parse_rfc3339_offset("tomorrow").is_none());
}

fn check(raw: RawRoom) -> (RoomConfig, Vec<String>) {
    let mut p = Problems::default();
    let cfg = room(&raw, Path::new("."), &mut p);
    (cfg, p.0.into_iter().map(|(k, _)| k).collect())
}

#[test]
fn the_gate_is_closed_loop_unless_a_rate_is_fixed() {
    let (cfg, p) = check(RawRoom::default());
    assert!(p.is_empty(), "{p:?}");
    let cl = cfg.closed_loop.expect("no rate: closed-loop");
    assert_eq!(
        (cl.target, cl.max_active, cl.per_minute),
        (0.85, None, None)
    );

    let (cfg, _) = check(RawRoom {
        max_active_users: Some(500),
        ..RawRoom::default()
    });
    let cl = cfg.closed_loop.expect("a cap alone is a ceiling");
    assert_eq!(cl.max_active, Some(500));

    let (cfg, _) = check(RawRoom {
        new_users_per_minute: Some(120),
        ..RawRoom::default()
    });
    assert!(cfg.closed_loop.is_none(), "a fixed rate: the fixed gate");
    assert_eq!(cfg.new_users_per_minute, 120);

    let (cfg, _) = check(RawRoom {
        new_users_per_minute: Some(120),
        gate: Some("closed-loop".into()),
        ..RawRoom::default()
    });
    assert_eq!(cfg.closed_loop.and_then(|c| c.per_minute), Some(120));

    let (cfg, _) = check(RawRoom {
        gate: Some("fixed".into()),
        ..RawRoom::default()
    });
    assert!(cfg.closed_loop.is_none());
    assert_eq!(cfg.max_active_users, DEFAULT_MAX_ACTIVE_USERS);
}

#[test]
fn gate_mistakes_are_named() {
    let (_, p) = check(RawRoom {
        gate: Some("auto".into()),
        origin_target: 1.5,
        ..RawRoom::default()
    });
    assert_eq!(p, ["room.gate", "room.origin_target"]);
    let (_, p) = check(RawRoom {
        gate: Some("closed-loop".into()),
        adaptive: Some(RawAdaptive {
            enabled: true,
            ..RawAdaptive::default()
        }),
        ..RawRoom::default()
    });
    assert_eq!(p, ["room.gate"], "two controllers of one gate");
}
