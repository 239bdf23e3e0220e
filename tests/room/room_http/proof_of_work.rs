//! Over the per-address ticket limit: the proof-of-work challenge, on the
//! local line and on the shared (Redis) one.

use std::time::Duration;

use crate::support::redis;

use super::harness::*;

const POW_ROOM: &str = "event = \"pow\"\nkeys_file = \"test.keys\"\nmax_active_users = 1\nnew_users_per_minute = 1\nburst = 1\n[room.limits]\ntickets_per_minute_per_ip = 1\nrequests_per_second_per_ip = 0\nticket_proof_bits = 8";

/// Uses up the address's ticket allowance (burst 5); returns the first
/// challenge.
async fn spend_allowance(u: &Usher) -> (String, u32) {
    for _ in 0..20 {
        let a = u.send(json_get(u, "/", None, None), "").await;
        assert_eq!(a.status, 200, "{}", a.body);
        if let Some(c) = challenge_of(&a) {
            assert!(
                ticket_of(&a).is_none(),
                "a challenge comes without a ticket"
            );
            assert!(a.retry_after.is_none());
            assert_eq!(a.state.as_deref(), Some("queued"));
            return c;
        }
    }
    panic!("no challenge after 20 newcomers from one address");
}

/// Over the per-address ticket limit a newcomer gets a challenge; a
/// solution gets the ticket; a wrong, replayed, expired or forged one gets
/// a fresh challenge and no ticket. The holding page carries the
/// challenge for its script, and the cookie works like the header.
#[tokio::test]
async fn over_the_ticket_limit_a_solved_challenge_gets_the_ticket() {
    use usher::tokens::proof;
    let u = start(POW_ROOM).await;
    let (token, bits) = spend_allowance(&u).await;
    assert_eq!(bits, 8);
    let page = u.get("/", None).await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("data-pow=\"\""), "the page carries it");
    assert!(page.body.contains("data-bits=\"8\""));
    assert!(ticket_of(&page).is_none());

    let nonce = proof::solve(&token, bits);
    let solution = format!("{token}.{nonce}");
    let a = u.send(json_get(&u, "/", None, Some(&solution)), "").await;
    let ticket = ticket_of(&a).unwrap_or_else(|| panic!("solved: a ticket ({})", a.body));
    assert!(challenge_of(&a).is_none());
    let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
    assert!(v["position"].as_u64().is_some(), "{}", a.body);
    assert!(!ticket.is_empty());

    // Replayed: refused, a fresh challenge instead.
    let a = u.send(json_get(&u, "/", None, Some(&solution)), "").await;
    assert!(ticket_of(&a).is_none(), "a solution is good once");
    let (fresh, _) = challenge_of(&a).expect("a fresh challenge");
    assert_ne!(fresh, token);

    // Wrong nonce.
    let wrong = (0..)
        .find(|n| !proof::solves(&fresh, &n.to_string(), bits))
        .unwrap();
    let a = u
        .send(
            json_get(&u, "/", None, Some(&format!("{fresh}.{wrong}"))),
            "",
        )
        .await;
    assert!(
        ticket_of(&a).is_none() && challenge_of(&a).is_some(),
        "wrong nonce"
    );

    // Expired (sealed by the room's own key two minutes and more ago) and
    // forged (another key), each solved properly.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ours = usher::tokens::Keyring::parse(TEST_KEYS).unwrap();
    let theirs =
        usher::tokens::Keyring::parse("k1:ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=\n").unwrap();
    let event = usher::tokens::event_id("pow");
    for (what, keys, issued_at) in [
        ("expired", &ours, now - 130),
        ("forged", &theirs, now),
        ("sound, as a control", &ours, now),
    ] {
        let t = keys.seal_challenge(&usher::tokens::Challenge {
            event,
            issued_at,
            id: 12_345 + issued_at,
        });
        let s = format!("{t}.{}", proof::solve(&t, bits));
        // Through the cookie this time, as the page's script sends it.
        let a = u
            .send(json_get(&u, "/", Some(&format!("usher_pow={s}")), None), "")
            .await;
        assert_eq!(a.status, 200);
        if what.starts_with("sound") {
            assert!(ticket_of(&a).is_some(), "{what}: {}", a.body);
        } else {
            assert!(ticket_of(&a).is_none(), "{what}: no ticket");
            assert!(challenge_of(&a).is_some(), "{what}: a fresh challenge");
        }
    }
    let m = u.metrics().await;
    assert_eq!(
        metric(&m, "usher_proof_of_work_total{result=\"solved\"}"),
        2.0
    );
    assert_eq!(
        metric(&m, "usher_proof_of_work_total{result=\"rejected\"}"),
        4.0
    );
    assert!(metric(&m, "usher_proof_of_work_total{result=\"issued\"}") >= 6.0);
    u.stop().await;
}

/// One machine cannot farm places cheaply: over the limit, N tickets cost
/// N solved challenges, and without solutions no ticket comes at all.
#[tokio::test]
async fn over_the_ticket_limit_each_ticket_costs_one_solution() {
    use usher::tokens::proof;
    let u = start(POW_ROOM).await;
    spend_allowance(&u).await;
    for _ in 0..30 {
        let a = u.send(json_get(&u, "/", None, None), "").await;
        assert!(ticket_of(&a).is_none() && challenge_of(&a).is_some());
    }
    let (mut tickets, mut solved) = (0, 0);
    for _ in 0..10 {
        let a = u.send(json_get(&u, "/", None, None), "").await;
        let (token, bits) = challenge_of(&a).expect("a challenge");
        let s = format!("{token}.{}", proof::solve(&token, bits));
        solved += 1;
        let a = u.send(json_get(&u, "/", None, Some(&s)), "").await;
        tickets += usize::from(ticket_of(&a).is_some());
    }
    assert_eq!((tickets, solved), (10, 10), "one solution, one ticket");
    let m = u.metrics().await;
    assert_eq!(
        metric(&m, "usher_proof_of_work_total{result=\"solved\"}"),
        10.0
    );
    assert_eq!(
        metric(&m, "usher_proof_of_work_total{result=\"rejected\"}"),
        0.0
    );
    u.stop().await;
}

/// The shared line (Redis) answers over the limits as the local one does:
/// the same check runs on both paths.
#[tokio::test]
async fn over_the_limits_the_redis_line_answers_the_same() {
    use usher::tokens::proof;
    let Some(server) = redis::RedisServer::start(None) else {
        eprintln!("redis-server not installed: skipped");
        return;
    };
    let u = start(&format!(
        "{}\n[store]\nbackend = \"redis\"\nurl = \"{}\"\nnode_id = \"a\"",
        POW_ROOM.replace(
            "requests_per_second_per_ip = 0",
            "requests_per_second_per_ip = 3"
        ),
        server.url()
    ))
    .await;
    let mut challenge = None;
    let mut waited = 0;
    for _ in 0..40 {
        let a = u.send(json_get(&u, "/", None, None), "").await;
        assert_eq!(a.status, 200, "never an error page: {}", a.body);
        if a.retry_after.is_some() {
            waited += 1;
            assert!(ticket_of(&a).is_none() && challenge_of(&a).is_none());
        } else if let Some(c) = challenge_of(&a) {
            challenge = Some(c);
            break;
        }
    }
    let (token, bits) = challenge.expect("a challenge once the tickets are spent");
    let s = format!("{token}.{}", proof::solve(&token, bits));
    // Past the request limit's burst (6): wait as told, then bring the solution.
    let ticket = loop {
        let a = u.send(json_get(&u, "/", None, Some(&s)), "").await;
        assert_eq!(a.status, 200);
        match &a.retry_after {
            Some(n) => {
                waited += 1;
                tokio::time::sleep(Duration::from_secs(n.parse().unwrap())).await;
            }
            None => break ticket_of(&a).unwrap_or_else(|| panic!("a ticket: {}", a.body)),
        }
    };
    assert!(ticket.starts_with("usher_ticket="));
    assert!(waited > 0, "the request limit was reached too");
    let a = loop {
        let a = u.send(json_get(&u, "/", None, Some(&s)), "").await;
        match &a.retry_after {
            Some(n) => tokio::time::sleep(Duration::from_secs(n.parse().unwrap())).await,
            None => break a,
        }
    };
    assert!(
        ticket_of(&a).is_none() && challenge_of(&a).is_some(),
        "replayed"
    );
    u.stop().await;
    drop(server);
}
