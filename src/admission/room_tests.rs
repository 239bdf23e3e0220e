//! The room's decisions with injected time (tokio's paused clock drives the
//! line, the gate and the room's wall clock alike).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};

use super::room::{Room, Verdict, PASS_COOKIE, TICKET_COOKIE};
use crate::config::room::RoomConfig;
use crate::config::Config;
use crate::holding::RoomState;
use crate::metrics::Metrics;

fn config(room: &str) -> RoomConfig {
    let text = "[origin]\nurl = \"http://127.0.0.1:9\"\n[room]\nrefresh = \"1s\"\nticket_grace = \"10s\"\nclaim_window = \"5s\"\n\
         [room.limits]\ntickets_per_minute_per_ip = 100000\nrequests_per_second_per_ip = 0\n";
    // Later keys in [room] must come before [room.limits]: splice them in.
    let (keys, tables) = match room.find("\n[") {
        Some(i) => room.split_at(i),
        None => (room, ""),
    };
    let text = text.replace("[room]\n", &format!("[room]\n{keys}\n")) + tables;
    Config::parse(&text, "test", std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"))
        .room
        .expect("room section")
}

fn room(cfg: &RoomConfig) -> (Room, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let prepared = Room::prepare(Some(cfg), None).expect("prepare");
    (Room::new(Some(cfg), prepared, metrics.clone()), metrics)
}

/// A browser: keeps the cookies usher sets.
#[derive(Default, Clone)]
struct Visitor {
    jar: HashMap<String, String>,
}

#[derive(Debug, PartialEq)]
enum Seen {
    In,
    Wait(RoomState, Option<u64>),
    Limited,
}

impl Visitor {
    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        if !self.jar.is_empty() {
            let c: Vec<String> = self.jar.iter().map(|(k, v)| format!("{k}={v}")).collect();
            h.insert(
                http::header::COOKIE,
                HeaderValue::from_str(&c.join("; ")).unwrap(),
            );
        }
        h
    }

    fn keep(&mut self, cookies: &[HeaderValue]) {
        for c in cookies {
            let text = c.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
            if text.contains("Max-Age=0") {
                self.jar.remove(k);
            } else {
                self.jar.insert(k.to_string(), v.to_string());
            }
        }
    }

    async fn visit(&mut self, room: &Room, cfg: &RoomConfig) -> Seen {
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        match room.decide(cfg, &self.headers(), ip, false).await {
            Verdict::Admit { cookies, .. } => {
                self.keep(&cookies);
                Seen::In
            }
            Verdict::Hold(h) => {
                self.keep(&h.cookies);
                Seen::Wait(h.state, h.position)
            }
            Verdict::Limited { .. } => Seen::Limited,
        }
    }
}

async fn advance(room: &Room, cfg: &RoomConfig, by: Duration) {
    tokio::time::advance(by).await;
    room.tick(cfg).await;
}

#[tokio::test(start_paused = true)]
async fn capacity_and_rate_are_exact() {
    let cfg = config(
        "max_active_users = 2\nnew_users_per_minute = 60\nburst = 1\nsession_duration = \"1m\"",
    );
    let (room, metrics) = room(&cfg);
    let mut a = Visitor::default();
    let mut b = Visitor::default();
    let mut c = Visitor::default();
    assert_eq!(
        a.visit(&room, &cfg).await,
        Seen::In,
        "nobody waits, capacity free, burst of one"
    );
    assert_eq!(
        b.visit(&room, &cfg).await,
        Seen::Wait(RoomState::Queued, Some(0)),
        "the rate is spent"
    );
    assert_eq!(
        c.visit(&room, &cfg).await,
        Seen::Wait(RoomState::Queued, Some(1))
    );
    // 999 ms: still no new cell at 60/min
    advance(&room, &cfg, Duration::from_millis(999)).await;
    assert_eq!(
        b.visit(&room, &cfg).await,
        Seen::Wait(RoomState::Queued, Some(0))
    );
    advance(&room, &cfg, Duration::from_millis(1)).await;
    assert_eq!(
        b.visit(&room, &cfg).await,
        Seen::In,
        "one admission per second"
    );
    assert_eq!(
        c.visit(&room, &cfg).await,
        Seen::Wait(RoomState::Queued, Some(0))
    );
    // capacity: a and b are active, so c waits however long the rate allows
    for _ in 0..10 {
        advance(&room, &cfg, Duration::from_secs(1)).await;
        assert_eq!(
            c.visit(&room, &cfg).await,
            Seen::Wait(RoomState::Queued, Some(0))
        );
    }
    assert_eq!(metrics.room.active_users.get(), 2);
    // passes keep working without touching the line
    assert_eq!(a.visit(&room, &cfg).await, Seen::In);
    // the slot frees when a's pass is released
    let Verdict::Admit { pass_id, .. } = room
        .decide(&cfg, &a.headers(), "192.0.2.1".parse().unwrap(), false)
        .await
    else {
        panic!("a is admitted")
    };
    room.release(pass_id);
    advance(&room, &cfg, Duration::from_secs(1)).await;
    assert_eq!(c.visit(&room, &cfg).await, Seen::In);
    assert_eq!(metrics.room.admitted_line.get(), 2);
    assert_eq!(metrics.room.admitted_direct.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn line_is_fifo_and_sessions_slide_then_expire() {
    let cfg = config(
        "max_active_users = 1000\nnew_users_per_minute = 60\nburst = 1\nsession_duration = \"30s\"",
    );
    let (room, _) = room(&cfg);
    let mut first = Visitor::default();
    assert_eq!(first.visit(&room, &cfg).await, Seen::In);
    let mut line: Vec<Visitor> = (0..8).map(|_| Visitor::default()).collect();
    for (i, v) in line.iter_mut().enumerate() {
        assert_eq!(
            v.visit(&room, &cfg).await,
            Seen::Wait(RoomState::Queued, Some(i as u64))
        );
    }
    let mut order = Vec::new();
    for _ in 0..12 {
        advance(&room, &cfg, Duration::from_secs(1)).await;
        for (i, v) in line.iter_mut().enumerate() {
            if v.jar.contains_key(TICKET_COOKIE) && v.visit(&room, &cfg).await == Seen::In {
                order.push(i);
            }
        }
    }
    assert_eq!(
        order,
        (0..8).collect::<Vec<_>>(),
        "admitted one a second, in ticket order"
    );
    // first keeps visiting every 5 s for a minute: the pass slides
    for _ in 0..12 {
        advance(&room, &cfg, Duration::from_secs(5)).await;
        assert_eq!(first.visit(&room, &cfg).await, Seen::In);
    }
    let ip: IpAddr = "192.0.2.1".parse().unwrap();
    let pass_id = async |v: &Visitor| match room.decide(&cfg, &v.headers(), ip, false).await {
        Verdict::Admit { pass_id, .. } => pass_id,
        other => panic!("{other:?}"),
    };
    let id = pass_id(&first).await;
    assert_eq!(
        room.status(&cfg).active,
        1,
        "the others' sessions lapsed while first stayed"
    );
    // ...and lapses after the session (plus at most one refresh step) without
    // a request: the slot frees, and the same browser comes back as a newcomer
    advance(&room, &cfg, Duration::from_secs(40)).await;
    assert_eq!(room.status(&cfg).active, 0, "every session lapsed");
    assert_ne!(pass_id(&first).await, id, "a new pass, not the old one");
}

#[tokio::test(start_paused = true)]
async fn abandoned_places_are_skipped_and_grace_is_honoured() {
    let cfg =
        config("max_active_users = 1000\nnew_users_per_minute = 60\nburst = 1\nmode = \"paused\"");
    let (room, _) = room(&cfg);
    let (mut a, mut b, mut c) = (Visitor::default(), Visitor::default(), Visitor::default());
    for v in [&mut a, &mut b, &mut c] {
        assert!(matches!(
            v.visit(&room, &cfg).await,
            Seen::Wait(RoomState::Paused, _)
        ));
    }
    // a leaves; b and c keep polling through a long pause
    for _ in 0..25 {
        advance(&room, &cfg, Duration::from_secs(1)).await;
        b.visit(&room, &cfg).await;
        c.visit(&room, &cfg).await;
    }
    assert_eq!(
        b.visit(&room, &cfg).await,
        Seen::Wait(RoomState::Paused, Some(0)),
        "a's place no longer counts"
    );
    let resumed = config("max_active_users = 1000\nnew_users_per_minute = 60\nburst = 1");
    room.apply(
        Some(&resumed),
        Room::prepare(Some(&resumed), Some(&room)).unwrap(),
    );
    advance(&room, &resumed, Duration::from_secs(1)).await;
    assert_eq!(
        b.visit(&room, &resumed).await,
        Seen::In,
        "b goes first: a's place was skipped at no cost"
    );
    // a comes back after more than the grace: a new place at the back
    let before = a.jar.get(TICKET_COOKIE).cloned();
    assert_eq!(
        a.visit(&room, &resumed).await,
        Seen::Wait(RoomState::Queued, Some(1))
    );
    assert_ne!(a.jar.get(TICKET_COOKIE), before.as_ref(), "a new ticket");
    // c, who stayed, is next; a visitor away for less than the grace keeps the place
    advance(&room, &resumed, Duration::from_secs(8)).await;
    assert_eq!(c.visit(&room, &resumed).await, Seen::In);
}

#[tokio::test(start_paused = true)]
async fn bad_tokens_count_as_absent_by_reason() {
    let cfg = config("max_active_users = 1\nnew_users_per_minute = 60\nburst = 1");
    let (room, metrics) = room(&cfg);
    let mut inside = Visitor::default();
    assert_eq!(inside.visit(&room, &cfg).await, Seen::In);
    let pass = inside.jar[PASS_COOKIE].clone();
    let rejects = |kind: &str, reason: &str| {
        metrics
            .room
            .token_rejects
            .with_label_values(&[kind, reason])
            .get()
    };

    let mut forged = Visitor::default();
    let mut bad = pass.clone().into_bytes();
    let last = bad.len() - 5; // inside the tag, clear of base64 padding bits
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    forged
        .jar
        .insert(PASS_COOKIE.into(), String::from_utf8(bad).unwrap());
    assert_eq!(
        forged.visit(&room, &cfg).await,
        Seen::Wait(RoomState::Queued, Some(0)),
        "forged: a newcomer"
    );
    assert_eq!(rejects("pass", "bad_signature"), 1);

    let mut truncated = Visitor::default();
    truncated
        .jar
        .insert(PASS_COOKIE.into(), pass[..pass.len() / 2].to_string());
    assert!(matches!(truncated.visit(&room, &cfg).await, Seen::Wait(..)));
    assert_eq!(
        Reject::ALL
            .iter()
            .map(|r| rejects("pass", r.label()))
            .sum::<u64>(),
        2
    );

    // a pass from another event (same keys) is refused as such
    let other = config("event = \"other\"\nmax_active_users = 5");
    let (other_room, _) = (
        Room::new(
            Some(&other),
            Room::prepare(Some(&other), Some(&room)).unwrap(),
            Arc::new(Metrics::new()),
        ),
        (),
    );
    let mut elsewhere = Visitor::default();
    assert_eq!(elsewhere.visit(&other_room, &other).await, Seen::In);
    let mut stranger = Visitor::default();
    stranger
        .jar
        .insert(PASS_COOKIE.into(), elsewhere.jar[PASS_COOKIE].clone());
    assert!(matches!(stranger.visit(&room, &cfg).await, Seen::Wait(..)));
    let all: Vec<(&str, u64)> = Reject::ALL
        .iter()
        .map(|r| (r.label(), rejects("pass", r.label())))
        .collect();
    assert_eq!(rejects("pass", "other_event"), 1, "{all:?}");

    // an expired pass
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(matches!(inside.visit(&room, &cfg).await, Seen::Wait(..)));
    assert_eq!(rejects("pass", "expired"), 1);

    // a ticket from a key the room never had
    let mut foreign = Visitor::default();
    let (third, _) = self::room(&cfg);
    foreign.visit(&third, &cfg).await;
    let mut carrier = Visitor::default();
    let ticket = foreign
        .jar
        .get(TICKET_COOKIE)
        .or(foreign.jar.get(PASS_COOKIE))
        .unwrap()
        .clone();
    carrier.jar.insert(TICKET_COOKIE.into(), ticket);
    carrier.visit(&room, &cfg).await;
    assert!(rejects("ticket", "unknown_key") + rejects("ticket", "wrong_kind") >= 1);
}

use crate::tokens::Reject;

#[tokio::test(start_paused = true)]
async fn prequeue_is_shuffled_once_and_later_arrivals_queue_behind() {
    let opens = std::time::SystemTime::now() + Duration::from_secs(60);
    let opens_text = humantime::format_rfc3339_seconds(opens).to_string();
    let cfg = config(&format!(
        "max_active_users = 1000\nnew_users_per_minute = 6000\nburst = 1\nopens_at = \"{opens_text}\""
    ));
    let (room, _) = room(&cfg);
    room.tick(&cfg).await;
    let mut early: Vec<Visitor> = (0..40).map(|_| Visitor::default()).collect();
    for v in early.iter_mut() {
        assert_eq!(
            v.visit(&room, &cfg).await,
            Seen::Wait(RoomState::Prequeue, None)
        );
    }
    // keep polling until the opening
    for _ in 0..62 {
        advance(&room, &cfg, Duration::from_secs(1)).await;
        for v in early.iter_mut() {
            v.visit(&room, &cfg).await;
        }
    }
    let status = room.status(&cfg);
    assert!(status.open);
    assert_eq!(status.prequeue_seed_sha256.unwrap().len(), 64);
    let mut late = Visitor::default();
    assert!(matches!(
        late.visit(&room, &cfg).await,
        Seen::Wait(RoomState::Queued, _)
    ));
    // positions now form a permutation of the pre-queue, the late one after all
    let mut positions: Vec<u64> = Vec::new();
    for v in early.iter_mut() {
        match v.visit(&room, &cfg).await {
            Seen::Wait(RoomState::Queued, Some(p)) => positions.push(p),
            Seen::In => positions.push(u64::MAX),
            other => panic!("{other:?}"),
        }
    }
    let admitted = positions.iter().filter(|p| **p == u64::MAX).count();
    let mut waiting: Vec<u64> = positions
        .iter()
        .copied()
        .filter(|p| *p != u64::MAX)
        .collect();
    waiting.sort_unstable();
    assert_eq!(waiting, (0..waiting.len() as u64).collect::<Vec<_>>());
    assert_eq!(
        late.visit(&room, &cfg).await,
        Seen::Wait(RoomState::Queued, Some(waiting.len() as u64))
    );
    let in_arrival_order = positions.windows(2).all(|w| w[0] <= w[1]);
    assert!(
        !in_arrival_order,
        "shuffled, not in arrival order (chance 1/40! otherwise); admitted {admitted}"
    );
}

#[tokio::test(start_paused = true)]
async fn adaptive_gate_follows_origin_health() {
    let cfg = config(
        "max_active_users = 1000\nnew_users_per_minute = 600\nburst = 1\n\
         [room.adaptive]\nenabled = true\ntarget_latency = \"200ms\"\nfloor = 60\nceiling = 1200\ninterval = \"5s\"\nincrease = 60\ndecrease = 0.5",
    );
    let (room, metrics) = room(&cfg);
    let rate = |room: &Room| room.settings(&cfg).new_users_per_minute;
    room.tick(&cfg).await;
    assert_eq!(rate(&room), 600);
    // a slow origin: the rate is halved at the next interval, not before
    for _ in 0..50 {
        room.health.record(Duration::from_millis(400), false);
    }
    advance(&room, &cfg, Duration::from_secs(4)).await;
    assert_eq!(rate(&room), 600);
    advance(&room, &cfg, Duration::from_secs(1)).await;
    assert_eq!(rate(&room), 300);
    assert_eq!(
        metrics
            .room
            .adaptive_changes
            .with_label_values(&["latency"])
            .get(),
        1
    );
    assert_eq!(metrics.room.adaptive_rate.get(), 300);
    // failing origin: cut again
    for _ in 0..10 {
        room.health.record(Duration::from_millis(10), true);
    }
    advance(&room, &cfg, Duration::from_secs(5)).await;
    assert_eq!(rate(&room), 150);
    // healthy and people waiting: grows by the step
    let mut v = Visitor::default();
    v.visit(&room, &cfg).await;
    let mut w = Visitor::default();
    w.visit(&room, &cfg).await;
    for _ in 0..10 {
        room.health.record(Duration::from_millis(50), false);
    }
    tokio::time::advance(Duration::from_secs(5)).await;
    w.visit(&room, &cfg).await;
    room.tick(&cfg).await;
    assert_eq!(rate(&room), 210);
    assert_eq!(
        metrics
            .room
            .adaptive_changes
            .with_label_values(&["healthy"])
            .get(),
        1
    );
    // an operator override wins over the controller
    room.set_overrides(
        &cfg,
        super::room::Overrides {
            new_users_per_minute: Some(999),
            ..Default::default()
        },
    )
    .unwrap();
    assert_eq!(rate(&room), 999);
}
