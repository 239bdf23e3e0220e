//! Scenario parsing, checking and scaling.

use super::tests_support::SMALL;
use super::*;

#[test]
fn parses_and_scales() {
    let s = Scenario::parse(SMALL, "t").unwrap();
    assert_eq!(s.refresh_real(), Duration::from_secs(1));
    assert_eq!(s.rate_real_per_minute(), 600);
    assert_eq!(s.origin_latency_real_ms(), 10);
    assert_eq!(s.real(60.0), Duration::from_secs(6));
    assert_eq!(s.sim(Duration::from_secs(2)), 20.0);
    assert_eq!(s.origin_max_in_flight(), 8);
    assert!(s.voucher.enabled && s.voucher.path == "/voucher/claim");
}

#[test]
fn every_mistake_is_reported_with_its_key() {
    let bad = SMALL
        .replace("visitors = 100", "visitors = 0")
        .replace("claim_window_seconds = 60", "claim_window_seconds = 20")
        .replace("sigma = 1.0", "sigma = 9.0");
    let Err(ScenarioError::Invalid { problems, .. }) = Scenario::parse(&bad, "t") else {
        panic!("accepted")
    };
    let joined = problems.join("\n");
    assert!(joined.contains("visitors:"), "{joined}");
    assert!(joined.contains("usher.claim_window_seconds"), "{joined}");
    assert!(joined.contains("patience.sigma"), "{joined}");
}

#[test]
fn unknown_keys_are_refused() {
    let bad = SMALL.replace("[origin]", "[origin]\ncapacty = 3");
    assert!(matches!(
        Scenario::parse(&bad, "t"),
        Err(ScenarioError::Parse { .. })
    ));
    let bad = SMALL.replace("sigma = 1.0", "sigma = 1.0\nmean_seconds = 3");
    assert!(Scenario::parse(&bad, "t").is_err());
}
