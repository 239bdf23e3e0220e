//! Visitors claiming vouchers from several usher nodes (the Redis
//! failover tests): each gets a pass, then claims until a final answer (a
//! code or sold out), moving to the next node after a failure.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, Request};

use super::http::{send, HttpClient};

/// What a visitor ended with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Issued(String),
    SoldOut,
    GaveUp(String),
}

/// One visitor: a pass, then claims until an answer that is final (a code
/// or sold out), moving to the next node after a failure.
pub async fn visitor(
    c: HttpClient,
    bases: Arc<Vec<String>>,
    i: usize,
    issued: Arc<AtomicUsize>,
) -> Outcome {
    // they come over three seconds, so the primary dies in the middle
    tokio::time::sleep(Duration::from_millis(i as u64 * 10)).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut at = i % bases.len();
    let mut pass: Option<String> = None;
    let mut last = String::new();
    while Instant::now() < deadline {
        let base = &bases[at];
        if pass.is_none() {
            match send(&c, Request::get(format!("{base}/__usher/status"))).await {
                // the room itself says the stock is gone: no pass needed
                Ok(r) if r.json["state"] == "sold_out" => return Outcome::SoldOut,
                Ok(r) => {
                    pass = r.cookie("usher_pass");
                    last = format!("{} {}", r.status, r.json);
                }
                Err(e) => last = e,
            }
        }
        if let Some(p) = &pass {
            let r = send(
                &c,
                Request::post(format!("{base}/__usher/voucher"))
                    .header(header::COOKIE, p)
                    .header("x-user", format!("v{i}")),
            )
            .await;
            match r {
                Ok(r) if r.status == 200 => {
                    issued.fetch_add(1, Ordering::SeqCst);
                    return Outcome::Issued(r.json["code"].as_str().unwrap().to_string());
                }
                Ok(r) if r.status == 410 => return Outcome::SoldOut,
                Ok(r) => last = format!("{} {}", r.status, r.json),
                Err(e) => last = e,
            }
        }
        at = (at + 1) % bases.len();
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    Outcome::GaveUp(last)
}

/// The verdict on a claim run: everyone got a final answer, exactly
/// `stock` distinct codes of `pool` went out, the rest were told sold out.
/// Returns each issued visitor's code, by visitor number.
pub fn exactly_the_stock(
    outcomes: &[Outcome],
    pool: &[String],
    stock: usize,
) -> std::collections::HashMap<usize, String> {
    let gave_up: Vec<_> = outcomes
        .iter()
        .enumerate()
        .filter(|(_, o)| matches!(o, Outcome::GaveUp(_)))
        .collect();
    assert!(
        gave_up.is_empty(),
        "visitors without an answer: {gave_up:?}"
    );
    let codes: std::collections::HashMap<usize, String> = outcomes
        .iter()
        .enumerate()
        .filter_map(|(i, o)| match o {
            Outcome::Issued(c) => Some((i, c.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(codes.len(), stock, "exactly the stock handed out");
    let distinct: std::collections::HashSet<&String> = codes.values().collect();
    assert_eq!(distinct.len(), stock, "no code twice");
    assert!(
        codes.values().all(|c| pool.contains(c)),
        "codes of the pool"
    );
    assert_eq!(
        outcomes.iter().filter(|o| **o == Outcome::SoldOut).count(),
        outcomes.len() - stock,
        "everyone else told sold out"
    );
    codes
}
