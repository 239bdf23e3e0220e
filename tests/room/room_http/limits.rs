//! Per-address limits without proof of work: visitors over a limit get a
//! holding answer with Retry-After, never an error page, and keep their place.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::harness::*;

/// `ticket_proof_bits = 0`: a newcomer over the per-address ticket limit
/// gets the holding page with Retry-After and no ticket, never a 429.
#[tokio::test]
async fn over_the_ticket_limit_without_proof_of_work_visitors_wait() {
    let u = start("max_active_users = 1\nnew_users_per_minute = 60\nburst = 1\n[room.limits]\ntickets_per_minute_per_ip = 20\nrequests_per_second_per_ip = 0\nticket_proof_bits = 0").await;
    let mut limited = None;
    for i in 0..40 {
        let a = u.get("/", None).await;
        assert_eq!(a.status, 200, "never an error page");
        if a.retry_after.is_some() {
            limited = Some((i, a));
            break;
        }
        assert!(a.origin || a.cookies.iter().any(|c| c.starts_with("usher_ticket=")));
    }
    let (i, a) = limited.expect("one address cannot farm places");
    assert!(i >= 5, "the burst is allowed ({i})");
    assert_eq!(a.state.as_deref(), Some("queued"));
    assert!(a.cookies.is_empty(), "no ticket: {:?}", a.cookies);
    assert!(
        a.body.contains("data-pow=\"\""),
        "no challenge when bits = 0"
    );
    u.stop().await;
}

/// Many visitors behind one address (a carrier's CGNAT) over its request
/// limit: 200 holding answers with Retry-After, never 429 or 5xx, no
/// cookie set or cleared, and each keeps their place (the next poll after
/// the wait shows the same position or a better one). An admitted visitor
/// on the same address is not held: the pass is checked first.
#[tokio::test]
async fn over_the_request_limit_visitors_wait_and_keep_their_place() {
    let u = start("max_active_users = 1\nnew_users_per_minute = 1\nburst = 1\nrefresh = \"1s\"\n[room.limits]\ntickets_per_minute_per_ip = 100000\nrequests_per_second_per_ip = 5").await;
    let inside = u.get("/movies/1", None).await;
    assert!(inside.origin, "the first visitor goes straight in");
    let pass = jar(&inside.cookies);
    // Four more take a place each, and see it.
    let mut places = Vec::new();
    for _ in 0..4 {
        let a = u.send(json_get(&u, "/", None, None), "").await;
        let ticket = ticket_of(&a).expect("a ticket");
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        places.push((ticket, v["position"].as_u64().expect("a position")));
    }
    // The address's allowance (burst 10) is spent: everyone is held.
    let hits = u.hits.load(Ordering::SeqCst);
    let mut held = 0;
    for round in 0..6 {
        for (ticket, _) in &places {
            let a = u
                .send(json_get(&u, "/__usher/status", Some(ticket), None), "")
                .await;
            assert_eq!(a.status, 200, "round {round}: {}", a.body);
            assert!(
                a.cookies.is_empty(),
                "nothing set or cleared: {:?}",
                a.cookies
            );
            if let Some(after) = &a.retry_after {
                held += 1;
                assert_eq!(after, "1", "one poll interval");
                assert_eq!(a.state.as_deref(), Some("queued"));
                let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
                assert_eq!(v["state"], "queued");
                assert_eq!(v["refresh_seconds"], 1, "the page's own poll retries");
                assert!(v["position"].is_null(), "the place is not looked at");
            }
        }
        let page = u.get("/", None).await;
        assert_eq!(page.status, 200);
        if page.retry_after.is_some() {
            assert!(
                page.body.contains("<progress"),
                "the holding page, not an error"
            );
            assert!(ticket_of(&page).is_none());
        }
    }
    assert!(held > 10, "the limit was reached ({held})");
    assert_eq!(
        u.hits.load(Ordering::SeqCst),
        hits,
        "nothing reached the origin"
    );
    // An admitted visitor is governed by the per-pass limit, not the address's.
    let again = u.get("/movies/2", Some(&pass)).await;
    assert!(
        again.origin,
        "a pass goes through: {} {:?}",
        again.status, again.retry_after
    );
    // After the wait, everyone still has their place.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    for (ticket, first) in &places {
        let a = u
            .send(json_get(&u, "/__usher/status", Some(ticket), None), "")
            .await;
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        let now = v["position"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}", a.body));
        assert!(now <= *first, "{now} after {first}");
    }
    let m = u.metrics().await;
    assert!(metric(&m, "usher_rate_limited_total{scope=\"request\"}") >= f64::from(held));
    u.stop().await;
}
