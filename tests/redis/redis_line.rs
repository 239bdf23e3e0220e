//! The shared line in Redis (`usher::store::redis_line`) against a real
//! redis-server: three nodes, one global FIFO order, the active limit held
//! across nodes, one ticking node at a time, and bounded failures when
//! Redis stops. Skipped with a note when redis-server is not installed.

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::support::redis;
use redis::RedisServer;
use usher::store::redis_line::{RedisLine, RedisLineConfig, RedisPlace, SharedGate};

const CFG: RedisLineConfig = RedisLineConfig {
    grace_ms: 10_000,
    claim_window_ms: 5_000,
    lease_ms: 1_000,
    heartbeat_ms: 2_000,
};

/// The shared gate allowing `n` grants per tick (a rate far above the
/// ticks' pace, a burst of `n`); 0 grants nothing.
fn gate(n: u32) -> SharedGate {
    SharedGate {
        per_minute: if n == 0 { 0 } else { 6_000_000 },
        burst: n,
    }
}

fn node(url: &str, event: &str, name: &str) -> RedisLine {
    let con = usher::store::redis_conn::connect_url(url, Duration::from_millis(500)).unwrap();
    RedisLine::new(con, event, name, CFG)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_one_fifo_order_and_the_active_limit_holds() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let nodes: Vec<RedisLine> = ["a", "b", "c"]
        .iter()
        .map(|n| node(&redis.url(), "show", n))
        .collect();
    const MAX_ACTIVE: u64 = 5;
    const VISITORS: u64 = 60;
    let mut now = 1_000_000u64;
    // visitors arrive on the nodes in turn; numbers are one global sequence
    let mut tickets = Vec::new();
    for i in 0..VISITORS {
        let n = nodes[(i % 3) as usize].issue(now).await.unwrap();
        tickets.push(n);
    }
    assert_eq!(tickets, (1..=VISITORS).collect::<Vec<_>>());
    // every 7th visitor walks away and never polls again
    let gone = |n: u64| n % 7 == 0;
    let mut admitted = Vec::new();
    let mut inside: HashMap<u64, u64> = HashMap::new(); // pass id -> leaves at
    let mut tickers = HashMap::new();
    for round in 0..400u64 {
        now += 250;
        // the ticking node: all try, one holds the lease
        for (i, n) in nodes.iter().enumerate() {
            let t = n.tick(now, MAX_ACTIVE, gate(2)).await.unwrap();
            if t.holder {
                *tickers.entry(i).or_insert(0) += 1;
                assert!(t.active + t.pending <= MAX_ACTIVE, "round {round}: {t:?}");
            }
        }
        // visitors inside leave after 2 s
        for (id, _) in inside.clone().iter().filter(|(_, at)| **at <= now) {
            nodes[(id % 3) as usize].release_many(&[*id]).await.unwrap();
            inside.remove(id);
        }
        // everyone still waiting polls a node of the round's choice
        // (the abandoned still count while their grace runs)
        let (mut ahead, mut last) = (0, None);
        for &n in &tickets {
            if admitted.contains(&n) {
                continue;
            }
            if gone(n) {
                ahead += 1;
                continue;
            }
            let via = &nodes[((n + round) % 3) as usize];
            match via.observe(n, now).await.unwrap() {
                RedisPlace::Waiting { position } => {
                    assert!(
                        position <= ahead,
                        "ticket {n}: position {position} > {ahead} ahead"
                    );
                    assert!(
                        last < Some(position),
                        "ticket {n}: positions grow in ticket order"
                    );
                    last = Some(position);
                    ahead += 1;
                }
                RedisPlace::Granted => {
                    assert!(via.take(n, n, now + 60_000).await.unwrap());
                    assert!(!via.take(n, n, now + 60_000).await.unwrap(), "once");
                    admitted.push(n);
                    inside.insert(n, now + 2_000);
                    assert!(inside.len() as u64 <= MAX_ACTIVE);
                }
                other => panic!("ticket {n}: {other:?}"),
            }
        }
        if admitted.len() as u64 == VISITORS - VISITORS / 7 {
            break;
        }
    }
    let expected: Vec<u64> = tickets.iter().copied().filter(|n| !gone(*n)).collect();
    assert_eq!(
        admitted, expected,
        "one global FIFO order, abandoned places skipped"
    );
    assert_eq!(
        tickers.len(),
        1,
        "one node ticked while it held the lease: {tickers:?}"
    );
    assert_eq!(
        nodes[1].observe(7, now).await.unwrap(),
        RedisPlace::Forfeited
    );
    assert_eq!(
        nodes[2].observe(1_000, now).await.unwrap(),
        RedisPlace::Unknown
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_ticking_node_is_replaced_after_its_lease() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let a = node(&redis.url(), "lease", "a");
    let b = node(&redis.url(), "lease", "b");
    let now = 5_000_000;
    assert!(a.tick(now, 10, gate(1)).await.unwrap().holder);
    assert!(
        !b.tick(now + 10, 10, gate(1)).await.unwrap().holder,
        "a holds the lease"
    );
    // a dies; its lease (1 s, in Redis time) runs out
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    assert!(
        b.tick(now + 1_200, 10, gate(1)).await.unwrap().holder,
        "b takes over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stopped_fails_fast_and_recovers_by_itself() {
    let Some(mut redis) = RedisServer::start(None) else {
        return;
    };
    let port = redis.port;
    let a = node(&redis.url(), "fault", "a");
    assert_eq!(a.issue(1_000).await.unwrap(), 1);
    redis.stop();
    let t = Instant::now();
    assert!(a.issue(1_000).await.is_err());
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "bounded: {:?}",
        t.elapsed()
    );
    // a new, empty server on the same port: the handle reconnects by itself
    let _again = RedisServer::start(Some(port)).unwrap();
    let mut ok = None;
    for _ in 0..50 {
        if let Ok(n) = a.issue(1_000).await {
            ok = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // the new server starts from zero, but number 1 was handed out: the
    // node's floor resumes numbering above it (never a number twice)
    assert_eq!(
        ok,
        Some(2),
        "reconnected, numbering above what was handed out"
    );
    assert_eq!(a.repairs(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_paused_with_sigstop_times_out_instead_of_hanging() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let a = node(&redis.url(), "pause", "a");
    assert_eq!(a.issue(1_000).await.unwrap(), 1);
    let pid = redis.child.id().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let t = Instant::now();
    let r = a.observe(1, 1_000).await;
    let took = t.elapsed();
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    assert!(r.is_err(), "{r:?}");
    assert!(took < Duration::from_secs(3), "bounded: {took:?}");
    let mut back = None;
    for _ in 0..50 {
        if let Ok(p) = a.observe(1, 1_000).await {
            back = Some(p);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(back, Some(RedisPlace::Waiting { position: 0 }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tick_is_a_heartbeat_and_brings_the_shared_figures() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let nodes: Vec<RedisLine> = ["a", "b", "c"]
        .iter()
        .map(|n| node(&redis.url(), "beat", n))
        .collect();
    let t0 = 7_000_000;
    for _ in 0..5 {
        nodes[1].issue(t0).await.unwrap();
    }
    let first = nodes[0].tick(t0, 10, gate(2)).await.unwrap();
    assert!(first.holder);
    assert_eq!((first.granted, first.admitted, first.waiting), (2, 2, 3));
    let b = nodes[1].tick(t0 + 10, 10, gate(2)).await.unwrap();
    let c = nodes[2].tick(t0 + 20, 10, gate(2)).await.unwrap();
    assert!(!b.holder && !c.holder);
    assert_eq!(c.nodes, 3, "three heartbeats");
    assert_eq!(
        (c.granted, c.admitted, c.waiting, c.pending),
        (0, 2, 3, 2),
        "the others see the holder's figures"
    );
    // c stops ticking: after the heartbeat ttl it no longer counts
    nodes[1].tick(t0 + 1_500, 10, gate(0)).await.unwrap();
    let later = nodes[0].tick(t0 + 2_500, 10, gate(0)).await.unwrap();
    assert_eq!(later.nodes, 2, "{later:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_an_outage_the_frontier_waits_a_grace_for_the_unseen() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    // Steady ticking: a ticket not seen for two windows is skipped.
    let a = node(&redis.url(), "steady", "a");
    let t0 = 20_000_000;
    let (n1, n2) = (a.issue(t0).await.unwrap(), a.issue(t0).await.unwrap());
    let mut now = t0;
    while now < t0 + 25_000 {
        a.observe(n2, now).await.unwrap();
        assert_eq!(a.tick(now, 10, gate(0)).await.unwrap().granted, 0);
        now += 1_000;
    }
    let t = a.tick(now, 10, gate(10)).await.unwrap();
    assert_eq!((t.granted, t.skipped), (1, 1), "{t:?}");
    assert_eq!(
        a.observe(n1, now).await.unwrap(),
        RedisPlace::Forfeited,
        "away too long"
    );

    // The same after a 25 s gap in ticking (Redis unreachable): nobody
    // could poll, so the unseen ticket gets one more grace.
    let b = node(&redis.url(), "outage", "b");
    let (n1, n2) = (b.issue(t0).await.unwrap(), b.issue(t0).await.unwrap());
    assert_eq!(b.tick(t0, 10, gate(0)).await.unwrap().granted, 0);
    let back = t0 + 25_000;
    b.observe(n2, back).await.unwrap();
    let t = b.tick(back, 10, gate(10)).await.unwrap();
    assert_eq!((t.granted, t.skipped), (0, 0), "waits for {n1}: {t:?}");
    assert_eq!(
        b.observe(n1, back + 500).await.unwrap(),
        RedisPlace::Waiting { position: 0 }
    );
    let t = b.tick(back + 600, 10, gate(10)).await.unwrap();
    assert_eq!(t.granted, 2, "both, in order: {t:?}");
    assert_eq!(
        b.observe(n1, back + 700).await.unwrap(),
        RedisPlace::Granted
    );
    // One grace later an unseen place is skipped again.
    let n3 = b.issue(back + 700).await.unwrap();
    let n4 = b.issue(back + 700).await.unwrap();
    let mut now = back + 1_000;
    while now < back + 25_000 {
        b.observe(n4, now).await.unwrap();
        b.tick(now, 10, gate(0)).await.unwrap();
        now += 1_000;
    }
    let t = b.tick(now, 10, gate(10)).await.unwrap();
    assert_eq!((t.granted, t.skipped), (1, 1), "{n3} skipped: {t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomers_enter_an_empty_line_directly_through_one_shared_gate() {
    use usher::store::redis_line::{Direct, Entry};
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let nodes: Vec<RedisLine> = ["a", "b", "c"]
        .iter()
        .map(|n| node(&redis.url(), "direct", n))
        .collect();
    let slow = SharedGate {
        per_minute: 60, // one a second
        burst: 2,
    };
    let direct = |pass_id, until| Direct {
        max_active: 3,
        gate: slow,
        pass_id,
        until,
    };
    let t0 = 30_000_000;
    let far = t0 + 600_000;
    // the burst of 2 is shared: a and b get in, c takes a ticket
    assert_eq!(
        nodes[0].enter(t0, Some(direct(1, far))).await.unwrap(),
        Entry::Admitted
    );
    assert_eq!(
        nodes[1].enter(t0, Some(direct(2, far))).await.unwrap(),
        Entry::Admitted
    );
    assert_eq!(
        nodes[2].enter(t0, Some(direct(3, far))).await.unwrap(),
        Entry::Ticket(1)
    );
    // someone waits: the next newcomer queues behind, whatever the gate
    let later = t0 + 5_000;
    assert_eq!(
        nodes[0].enter(later, Some(direct(4, far))).await.unwrap(),
        Entry::Ticket(2)
    );
    // the tick grants from the same gate: the two waiting, one a second
    let t = nodes[0].tick(later, 3, slow).await.unwrap();
    assert_eq!((t.granted, t.active), (1, 2), "room for one: {t:?}");
    // the line is empty again but the capacity (2 active + 1 pending) is full
    assert_eq!(
        nodes[1].observe(1, later).await.unwrap(),
        RedisPlace::Granted
    );
    assert_eq!(
        nodes[1].enter(later, Some(direct(5, far))).await.unwrap(),
        Entry::Ticket(3)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_outlives_an_outage_longer_than_its_claim_window() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let a = node(&redis.url(), "grant-gap", "a");
    let t0 = 40_000_000;
    let n = a.issue(t0).await.unwrap();
    assert_eq!(a.tick(t0, 10, gate(1)).await.unwrap().granted, 1);
    // 25 s without a tick (Redis unreachable): the 5 s claim window passed
    // while nobody could take the pass; it is kept for one more grace
    let back = t0 + 25_000;
    a.tick(back, 10, gate(1)).await.unwrap();
    assert_eq!(a.observe(n, back + 100).await.unwrap(), RedisPlace::Granted);
    assert!(a.take(n, 7, back + 600_000).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prequeue_is_drawn_once_and_goes_first_in_rank_order() {
    use usher::admission::line::shuffled_ranks;
    use usher::store::redis_line::{Direct, Entry};
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let nodes: Vec<RedisLine> = ["a", "b", "c"]
        .iter()
        .map(|n| node(&redis.url(), "opening", n))
        .collect();
    let t0 = 50_000_000;
    let opens = t0 + 60_000;
    for n in &nodes {
        n.set_opens_at(Some(opens));
    }
    // twelve arrive before the opening, on every node; #5 leaves
    let direct = Direct {
        max_active: 100,
        gate: gate(100),
        pass_id: 1,
        until: opens + 600_000,
    };
    for i in 0..12u64 {
        let e = nodes[(i % 3) as usize]
            .enter(t0 + i, Some(direct))
            .await
            .unwrap();
        assert_eq!(
            e,
            Entry::Ticket(i + 1),
            "no direct admission before the opening"
        );
    }
    let t = nodes[0].tick(t0 + 100, 100, gate(100)).await.unwrap();
    assert_eq!((t.granted, t.draw), (0, 0), "nothing before the opening");
    assert_eq!(
        nodes[1].observe(3, t0 + 200).await.unwrap(),
        RedisPlace::Prequeue
    );
    // polls keep the others live through the wait
    let mut now = t0 + 1_000;
    while now < opens {
        for n in (1..=12).filter(|n| *n != 5) {
            nodes[(n % 3) as usize].observe(n, now).await.unwrap();
        }
        nodes[0].tick(now, 100, gate(0)).await.unwrap();
        now += 5_000;
    }
    // the opening tick fixes the twelve; the holder draws their ranks
    let t = nodes[0].tick(opens, 100, gate(0)).await.unwrap();
    assert_eq!((t.draw, t.drawing), (12, true));
    let late = nodes[2].enter(opens + 1, Some(direct)).await.unwrap();
    assert_eq!(
        late,
        Entry::Ticket(13),
        "after the opening: behind the draw"
    );
    assert_eq!(
        nodes[1].observe(13, opens + 2).await.unwrap(),
        RedisPlace::Prequeue
    );
    let ranks = shuffled_ranks(12, [7; 32]);
    assert!(nodes[0].draw(&ranks).await.unwrap());
    assert!(!nodes[1].draw(&ranks).await.unwrap(), "drawn once");
    // a non-holder sees the draw under way; the next tick carries the live
    // into rank order (a chunk a tick) and ends it
    assert!(
        nodes[2]
            .tick(opens + 4, 100, gate(0))
            .await
            .unwrap()
            .drawing
    );
    let t = nodes[0].tick(opens + 5, 100, gate(0)).await.unwrap();
    assert!(t.holder && !t.drawing && t.draw == 0, "{t:?}");
    // positions in rank order among the live; #5 (gone) counts for nobody
    let rank = |n: u64| u64::from(ranks[n as usize - 1]);
    for n in (1..=12).filter(|n| *n != 5) {
        let ahead = (1..=12).filter(|m| *m != 5 && rank(*m) < rank(n)).count() as u64;
        assert_eq!(
            nodes[(n % 3) as usize]
                .observe(n, opens + 10)
                .await
                .unwrap(),
            RedisPlace::Waiting { position: ahead },
            "ticket {n} (rank {})",
            rank(n)
        );
    }
    assert_eq!(
        nodes[0].observe(13, opens + 11).await.unwrap(),
        RedisPlace::Waiting { position: 11 },
        "behind all eleven"
    );
    // grants follow the ranks, #5 skipped, then #13
    let mut order = Vec::new();
    let mut now = opens + 100;
    while order.len() < 12 {
        let t = nodes[1].tick(now, 100, gate(2)).await.unwrap();
        assert!(t.granted <= 2);
        let mut this_tick = Vec::new();
        for n in (1..=13u64).filter(|n| *n != 5 && !order.contains(n)) {
            if nodes[0].observe(n, now + 1).await.unwrap() == RedisPlace::Granted {
                this_tick.push(n);
            }
        }
        // two a tick: their order within the tick is the rank order
        this_tick.sort_by_key(|n| if *n == 13 { 13 } else { rank(*n) });
        order.extend(this_tick);
        now += 1_000;
    }
    let mut want: Vec<u64> = (1..=12).filter(|n| *n != 5).collect();
    want.sort_by_key(|n| rank(*n));
    want.push(13);
    assert_eq!(order, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lottery_draws_among_the_live_once_each_and_hands_over_to_fifo() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let nodes: Vec<RedisLine> = ["a", "b"]
        .iter()
        .map(|n| node(&redis.url(), "lottery", n))
        .collect();
    for n in &nodes {
        n.set_lottery(true);
    }
    let t0 = 60_000_000;
    for i in 0..40 {
        nodes[i % 2].issue(t0).await.unwrap();
    }
    // every fifth walks away; the others keep polling
    let stays = |n: u64| n % 5 != 0;
    let mut now = t0;
    while now < t0 + 25_000 {
        now += 5_000;
        for n in (1..=40).filter(|n| stays(*n)) {
            let p = nodes[(n % 2) as usize].observe(n, now).await.unwrap();
            assert_eq!(p, RedisPlace::InDraw, "no position in a lottery");
        }
    }
    let mut order = Vec::new();
    let mut handed_over = false;
    while order.len() < 32 {
        now += 1_000;
        if order.len() >= 16 && !handed_over {
            // a live switch to fifo: the rest in ticket order, nobody twice
            nodes.iter().for_each(|n| n.set_lottery(false));
            handed_over = true;
        }
        let t = nodes[0].tick(now, 100, gate(4)).await.unwrap();
        assert!(t.granted <= 4);
        let mut this_tick = Vec::new();
        for n in (1..=40).filter(|n| stays(*n) && !order.contains(n)) {
            match nodes[1].observe(n, now + 1).await.unwrap() {
                RedisPlace::Granted => {
                    assert!(nodes[0].take(n, n, now + 600_000).await.unwrap());
                    this_tick.push(n)
                }
                RedisPlace::InDraw | RedisPlace::Waiting { .. } => {}
                other => panic!("ticket {n}: {other:?}"),
            }
        }
        assert_eq!(this_tick.len() as u64, t.granted, "{t:?}");
        order.extend(this_tick);
        // taken as granted: the active set counts each exactly once
        assert_eq!(t.active + t.pending, order.len() as u64, "{t:?}");
        assert!(now < t0 + 200_000, "stuck at {order:?}");
    }
    let lottery = &order[..16];
    assert!(
        lottery.windows(2).any(|w| w[0] > w[1]),
        "drawn, not in ticket order: {lottery:?}"
    );
    let fifo = &order[16..];
    assert!(fifo.windows(2).all(|w| w[0] < w[1]), "{fifo:?}");
    assert!(order.iter().all(|n| stays(*n)), "only the live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_not_taken_within_the_handoff_gives_its_slot_back() {
    let Some(redis) = RedisServer::start(None) else {
        return;
    };
    let a = node(&redis.url(), "handoff", "a");
    a.set_handoff(1_000);
    let t0 = 1_000_000u64;
    for _ in 0..3 {
        a.issue(t0).await.unwrap();
    }
    // room for one: ticket 1 is granted and sits untaken
    let t = a.tick(t0, 1, gate(10)).await.unwrap();
    assert_eq!((t.granted, t.pending), (1, 1), "{t:?}");
    // within the hand-off window it holds the only slot
    for n in [2, 3] {
        a.observe(n, t0 + 500).await.unwrap();
    }
    let t = a.tick(t0 + 500, 1, gate(10)).await.unwrap();
    assert_eq!(t.granted, 0, "the fresh grant holds the slot: {t:?}");
    // a hard cap counts every pending grant, stale or not
    a.set_hard_cap(1);
    let t = a.tick(t0 + 1_200, 1, gate(10)).await.unwrap();
    assert_eq!(t.granted, 0, "the cap holds: {t:?}");
    a.set_hard_cap(0);
    // past it (but well inside the 5 s claim window) the slot goes on
    let t = a.tick(t0 + 1_500, 1, gate(10)).await.unwrap();
    assert_eq!(t.granted, 1, "the stale grant gave its slot back: {t:?}");
    assert_eq!(a.observe(2, t0 + 1_500).await.unwrap(), RedisPlace::Granted);
    // and its owner may still take it until the claim window ends
    assert!(a.take(1, 7, t0 + 60_000).await.unwrap());
    // without a hand-off window, grants hold their slot for the whole claim window
    a.set_handoff(0);
    let t = a.tick(t0 + 2_000, 2, gate(10)).await.unwrap();
    assert_eq!(t.granted, 0, "1 taken + 1 pending fill 2: {t:?}");
}
